//! The shared backend: PostgreSQL, so that several colony replicas behind
//! one address share agents, fleet taps and results. Two connections: one
//! for writes (transactions need it to themselves), one for reads. A
//! connection that broke (the server restarted) is opened again on the next
//! call.

use super::{Backend, Result, Row, Value};
use std::collections::HashMap;
use tokio::sync::Mutex;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

pub struct Postgres {
    url: String,
    write: Mutex<Option<Conn>>,
    read: Mutex<Option<Conn>>,
}

/// A connection and the statements prepared on it (one round trip saved
/// per call; the ingest's multi-row INSERTs come in few shapes).
struct Conn {
    client: Client,
    prepared: HashMap<String, Statement>,
}

/// Prepared statements kept per connection at most.
const PREPARED: usize = 256;

impl Conn {
    async fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        if self.prepared.len() >= PREPARED {
            self.prepared.clear();
        }
        self.prepared.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

async fn open(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %coral_proto::error_chain(&err), "postgres connection ended");
        }
    });
    Ok(client)
}

/// The values as parameters: i64 for BIGINT, String for TEXT, bytes for BYTEA.
fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    const NULL: Option<i64> = None;
    values
        .iter()
        .map(|v| match v {
            Value::Null => &NULL as &(dyn ToSql + Sync),
            Value::Int(i) => i as &(dyn ToSql + Sync),
            Value::Text(s) => s as &(dyn ToSql + Sync),
            Value::Blob(b) => b as &(dyn ToSql + Sync),
        })
        .collect()
}

fn row(r: &tokio_postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(r.len());
    for (i, column) in r.columns().iter().enumerate() {
        let t = column.type_();
        let v = if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *t == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob)
        } else {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl Postgres {
    pub async fn connect(url: &str) -> Result<Postgres> {
        let conn = |client| Conn {
            client,
            prepared: HashMap::new(),
        };
        let write = conn(open(url).await?);
        let read = conn(open(url).await?);
        Ok(Postgres {
            url: url.to_string(),
            write: Mutex::new(Some(write)),
            read: Mutex::new(Some(read)),
        })
    }

    /// The connection in `slot`, opened again if it broke.
    async fn conn<'a>(
        &self,
        slot: &'a Mutex<Option<Conn>>,
    ) -> Result<tokio::sync::MappedMutexGuard<'a, Conn>> {
        let mut guard = slot.lock().await;
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = Some(Conn {
                client: open(&self.url).await?,
                prepared: HashMap::new(),
            });
        }
        Ok(tokio::sync::MutexGuard::map(guard, |c| {
            c.as_mut().expect("connected above")
        }))
    }
}

#[tonic::async_trait]
impl Backend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn script(&self, sql: &str) -> Result<()> {
        let sql = sql.replace("BLOB", "BYTEA");
        let conn = self.conn(&self.write).await?;
        // Two replicas starting together may race to create the schema:
        // one transaction-level advisory lock makes it one at a time.
        conn.client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(7242); {sql} COMMIT;"
            ))
            .await?;
        Ok(())
    }

    async fn execute(&self, sql: &str, values: Vec<Value>) -> Result<u64> {
        let mut conn = self.conn(&self.write).await?;
        let stmt = conn.statement(sql).await?;
        Ok(conn.client.execute(&stmt, &params(&values)).await?)
    }

    async fn transaction(&self, statements: Vec<(String, Vec<Value>)>) -> Result<u64> {
        let mut conn = self.conn(&self.write).await?;
        let mut prepared = Vec::with_capacity(statements.len());
        for (sql, _) in &statements {
            prepared.push(conn.statement(sql).await?);
        }
        let tx = conn.client.transaction().await?;
        let mut changed = 0;
        for (stmt, (_, values)) in prepared.iter().zip(&statements) {
            changed += tx.execute(stmt, &params(values)).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn query(&self, sql: &str, values: Vec<Value>) -> Result<Vec<Row>> {
        let mut conn = self.conn(&self.read).await?;
        let stmt = conn.statement(sql).await?;
        conn.client
            .query(&stmt, &params(&values))
            .await?
            .iter()
            .map(row)
            .collect()
    }
}
