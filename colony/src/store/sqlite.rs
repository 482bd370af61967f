//! The embedded backend: one SQLite file (bundled SQLite, no system
//! library), in WAL mode, with one connection for writes and one for reads
//! so queries do not wait for an ingest commit. Calls run on the blocking
//! pool.

use super::{Backend, Result, Row, StoreError, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub struct Sqlite {
    write: Arc<Mutex<Connection>>,
    read: Arc<Mutex<Connection>>,
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

/// `$N` parameters as SQLite's `?N` (its `$name` form would number them by
/// first appearance, not by N).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Int(f as i64),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    // WAL: readers do not block the writer, nor it them; NORMAL sync is
    // durable across a colony crash (not a power cut mid-commit), the usual
    // trade for WAL. A busy timeout rides out the other connection's commit.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl Sqlite {
    /// Opens the file, creating it and its directory if needed.
    pub fn open(path: &Path) -> Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                what: "creating the store's directory",
                path: dir.display().to_string(),
                source,
            })?;
        }
        let write = connection(path)?;
        let read = connection(path)?;
        Ok(Sqlite {
            write: Arc::new(Mutex::new(write)),
            read: Arc::new(Mutex::new(read)),
        })
    }

    async fn with<T: Send + 'static>(
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic under the lock cannot leave a statement half-run:
            // SQLite rolls back an unfinished transaction.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

#[tonic::async_trait]
impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn script(&self, sql: &str) -> Result<()> {
        let sql = sql.to_string();
        Self::with(&self.write, move |c| Ok(c.execute_batch(&sql)?)).await
    }

    async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64> {
        let sql = numbered(sql);
        Self::with(&self.write, move |c| {
            let n = c
                .prepare_cached(&sql)?
                .execute(rusqlite::params_from_iter(params.iter()))?;
            Ok(n as u64)
        })
        .await
    }

    async fn transaction(&self, statements: Vec<(String, Vec<Value>)>) -> Result<u64> {
        Self::with(&self.write, move |c| {
            let tx = c.transaction()?;
            let mut changed = 0;
            for (sql, params) in &statements {
                changed += tx
                    .prepare_cached(&numbered(sql))?
                    .execute(rusqlite::params_from_iter(params.iter()))?
                    as u64;
            }
            tx.commit()?;
            Ok(changed)
        })
        .await
    }

    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>> {
        let sql = numbered(sql);
        Self::with(&self.read, move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let columns = stmt.column_count();
            let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
                (0..columns)
                    .map(|i| r.get_ref(i).map(value))
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map(Row)
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_are_numbered() {
        assert_eq!(
            super::numbered("UPDATE t SET a = $3 WHERE b = $1 AND c = $12"),
            "UPDATE t SET a = ?3 WHERE b = ?1 AND c = ?12"
        );
    }
}
