//! The colony's durable state: agents, fleet taps and their members, every
//! record pulled, and what was lost.
//!
//! [`Store`] is what the rest of the colony uses. It has two
//! implementations, [`SqliteStore`] (embedded, one file, the default) and
//! [`PostgresStore`] (shared by colony replicas), and both are the one
//! [`SqlStore`] over a [`Backend`]: the schema ([`SCHEMA`]) and every query
//! are written once, here, in the SQL both databases speak (`$N`
//! parameters, `ON CONFLICT ... DO NOTHING`, row-value comparisons); a
//! backend only runs statements and converts values.
//!
//! Records are stored as the agent sent them (the encoded
//! `coral.agent.v1.Record`) next to the columns queries filter on: tap,
//! agent, node, collector, kind, seq, time, final. Their key is (agent,
//! collector, seq): a record pulled twice (after a reconnect, or by two
//! replicas) is stored once, and the highest stored seq of a collector is
//! the cursor its pull resumes from.

mod postgres;
mod sqlite;

pub use postgres::Postgres;
pub use sqlite::Sqlite;

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The embedded store used when `--store` is not given.
pub const DEFAULT_STORE: &str = "sqlite:///var/lib/coral/colony.db";

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The `--store` URL is not one the colony knows.
    #[error("{0:?}: expected sqlite:///path/file.db, a path, or postgres://user@host:port/db")]
    Url(String),
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no, or the connection failed.
    #[error("postgres: {}", coral_proto::error_chain(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// Preparing the database file's directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A stored value is not what the schema says (a corrupt row).
    #[error("column {column}: {reason}")]
    Decode {
        column: &'static str,
        reason: String,
    },
    /// A blocking database call did not return (its thread panicked).
    #[error("database worker: {0}")]
    Worker(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One value bound to or read from a statement. Integers are 64-bit
/// signed in both databases (`BIGINT`); booleans are stored as 0 and 1.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        // seq and nanosecond times stay far below 2^63.
        Value::Int(v as i64)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(v.into())
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

/// A result row: its values by column position.
#[derive(Debug)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn int(&self, i: usize, column: &'static str) -> Result<i64> {
        match self.0.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            Some(Value::Null) => Ok(0),
            other => Err(StoreError::Decode {
                column,
                reason: format!("expected an integer, got {other:?}"),
            }),
        }
    }
    fn u64(&self, i: usize, column: &'static str) -> Result<u64> {
        Ok(self.int(i, column)?.max(0) as u64)
    }
    fn text(&self, i: usize, column: &'static str) -> Result<String> {
        match self.0.get(i) {
            Some(Value::Text(v)) => Ok(v.clone()),
            Some(Value::Null) => Ok(String::new()),
            other => Err(StoreError::Decode {
                column,
                reason: format!("expected text, got {other:?}"),
            }),
        }
    }
    fn blob(&self, i: usize, column: &'static str) -> Result<Vec<u8>> {
        match self.0.get(i) {
            Some(Value::Blob(v)) => Ok(v.clone()),
            Some(Value::Null) => Ok(Vec::new()),
            other => Err(StoreError::Decode {
                column,
                reason: format!("expected bytes, got {other:?}"),
            }),
        }
    }
}

/// A database the SQL below runs on.
#[tonic::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn name(&self) -> &'static str;
    /// Runs statements separated by `;` (the schema). `BLOB` in them is the
    /// backend's byte-string type.
    async fn script(&self, sql: &str) -> Result<()>;
    /// Runs one statement; the rows it changed.
    async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64>;
    /// Runs several statements in one transaction; the rows they changed.
    async fn transaction(&self, statements: Vec<(String, Vec<Value>)>) -> Result<u64>;
    /// Runs one query.
    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>>;
}

/// The schema, in both databases' SQL. Created on first start.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    labels TEXT NOT NULL,
    address TEXT NOT NULL,
    source BIGINT NOT NULL,
    registered_unix_nano BIGINT NOT NULL,
    last_seen_unix_nano BIGINT NOT NULL,
    capabilities BLOB NOT NULL,
    replaced_by TEXT NOT NULL,
    error TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_taps (
    tap_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    spec BLOB NOT NULL,
    selector BLOB NOT NULL,
    created_unix_nano BIGINT NOT NULL,
    deadline_unix_nano BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    tap_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    node TEXT NOT NULL,
    address TEXT NOT NULL,
    status BIGINT NOT NULL,
    collector_id TEXT NOT NULL,
    collector_state BIGINT NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (tap_id, agent_id)
);
CREATE TABLE IF NOT EXISTS records (
    agent_id TEXT NOT NULL,
    collector_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    tap_id TEXT NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    time_unix_nano BIGINT NOT NULL,
    is_final BIGINT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (agent_id, collector_id, seq)
);
CREATE INDEX IF NOT EXISTS records_by_tap ON records (tap_id, time_unix_nano);
CREATE INDEX IF NOT EXISTS records_by_kind ON records (kind, time_unix_nano);
CREATE TABLE IF NOT EXISTS losses (
    tap_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    node TEXT NOT NULL,
    collector_id TEXT NOT NULL,
    from_seq BIGINT NOT NULL,
    count BIGINT NOT NULL,
    reason TEXT NOT NULL,
    time_unix_nano BIGINT NOT NULL,
    PRIMARY KEY (agent_id, collector_id, from_seq)
);
";

/// An agent the colony knows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentRow {
    pub agent_id: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub address: String,
    /// `coral.colony.v1.AgentSource`.
    pub source: i32,
    pub registered_unix_nano: u64,
    pub last_seen_unix_nano: u64,
    /// The encoded `coral.agent.v1.Capabilities` it registered with.
    pub capabilities: Vec<u8>,
    /// The agent that took its place (same node and address), if any.
    pub replaced_by: String,
    /// Static agents: why the last probe failed.
    pub error: String,
}

/// A fleet tap.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TapRow {
    pub tap_id: String,
    pub kind: String,
    /// The encoded `coral.agent.v1.CollectorSpec`.
    pub spec: Vec<u8>,
    /// The encoded `coral.colony.v1.Selector`.
    pub selector: Vec<u8>,
    pub created_unix_nano: u64,
    pub deadline_unix_nano: u64,
}

/// One agent's part in a fleet tap.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberRow {
    pub tap_id: String,
    pub agent_id: String,
    pub node: String,
    pub address: String,
    /// `coral.colony.v1.MemberStatus`.
    pub status: i32,
    pub collector_id: String,
    /// `coral.agent.v1.CollectorState`.
    pub collector_state: i32,
    pub error: String,
}

/// What is stored of one member's records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The highest seq stored (the cursor).
    pub max_seq: u64,
    pub records: u64,
    /// Records known lost (gaps with a count).
    pub lost: u64,
}

/// One record as stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordRow {
    pub tap_id: String,
    pub agent_id: String,
    pub node: String,
    pub collector_id: String,
    pub kind: String,
    pub seq: u64,
    pub time_unix_nano: u64,
    pub is_final: bool,
    /// The encoded `coral.agent.v1.Record`.
    pub record: Vec<u8>,
}

/// Records a member will never have.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossRow {
    pub tap_id: String,
    pub agent_id: String,
    pub node: String,
    pub collector_id: String,
    pub from_seq: u64,
    /// 0: everything from `from_seq` on (the agent died).
    pub count: u64,
    pub reason: String,
    pub time_unix_nano: u64,
}

/// Where a page of records ends: the sort key of its last record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub time_unix_nano: u64,
    pub agent_id: String,
    pub collector_id: String,
    pub seq: u64,
}

impl Cursor {
    /// `time.seq.agent.collector`: agent and collector ids are UUIDs or
    /// names without dots... which is not guaranteed, so they go last and
    /// are split at the first two dots only.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}/{}",
            self.time_unix_nano, self.seq, self.agent_id, self.collector_id
        )
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (time, rest) = s.split_once('.')?;
        let (seq, rest) = rest.split_once('.')?;
        let (agent_id, collector_id) = rest.rsplit_once('/')?;
        Some(Cursor {
            time_unix_nano: time.parse().ok()?,
            seq: seq.parse().ok()?,
            agent_id: agent_id.to_string(),
            collector_id: collector_id.to_string(),
        })
    }
}

/// Which stored records to read, oldest first.
#[derive(Clone, Debug, Default)]
pub struct RecordQuery {
    pub tap_id: Option<String>,
    pub kind: Option<String>,
    pub nodes: Vec<String>,
    pub agent_ids: Vec<String>,
    pub since_unix_nano: u64,
    pub until_unix_nano: u64,
    pub final_only: bool,
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// The colony's durable state.
#[tonic::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`, for logs and the benchmark.
    fn backend(&self) -> &'static str;

    async fn upsert_agent(&self, agent: &AgentRow) -> Result<()>;
    /// Marks every other agent with the same node and address replaced by
    /// `agent_id`; the ids of those agents.
    async fn replace_agents(
        &self,
        agent_id: &str,
        node: &str,
        address: &str,
    ) -> Result<Vec<String>>;
    /// Records that the agent was heard from; false if it is unknown.
    async fn touch_agent(&self, agent_id: &str, now_unix_nano: u64) -> Result<bool>;
    async fn set_agent_error(&self, agent_id: &str, error: &str) -> Result<()>;
    async fn agents(&self) -> Result<Vec<AgentRow>>;
    async fn agent(&self, agent_id: &str) -> Result<Option<AgentRow>>;

    /// A new fleet tap and its members, in one transaction.
    async fn insert_tap(&self, tap: &TapRow, members: &[MemberRow]) -> Result<()>;
    async fn set_deadline(&self, tap_id: &str, deadline_unix_nano: u64) -> Result<()>;
    async fn update_member(&self, member: &MemberRow) -> Result<()>;
    async fn tap(&self, tap_id: &str) -> Result<Option<(TapRow, Vec<MemberRow>)>>;
    async fn taps(&self) -> Result<Vec<(TapRow, Vec<MemberRow>)>>;
    /// Members with `status` in every tap (the colony resumes pulling the
    /// collecting ones when it starts).
    async fn members_with_status(&self, status: i32) -> Result<Vec<MemberRow>>;

    /// Stores records (and losses) in one transaction; a record whose
    /// (agent, collector, seq) is already stored is skipped. The number of
    /// records newly stored.
    async fn insert(&self, records: &[RecordRow], losses: &[LossRow]) -> Result<u64>;
    /// What is stored of one agent's collector.
    async fn stored(&self, agent_id: &str, collector_id: &str) -> Result<Stored>;
    async fn records(&self, query: &RecordQuery) -> Result<Vec<RecordRow>>;
    async fn losses(&self, tap_id: &str) -> Result<Vec<LossRow>>;
    /// Deletes the records of `kind` older than `before`; how many.
    async fn expire(&self, kind: &str, before_unix_nano: u64) -> Result<u64>;
    /// Deletes records older than `before` whose kind is none of `except`.
    async fn expire_others(&self, except: &[String], before_unix_nano: u64) -> Result<u64>;
}

/// The embedded store.
pub type SqliteStore = SqlStore<Sqlite>;
/// The shared store.
pub type PostgresStore = SqlStore<Postgres>;

/// Opens (and creates, on first use) the store a `--store` URL names:
/// `sqlite:///path`, `sqlite://relative/path`, a path, or `postgres://...`
/// (`postgresql://` too).
pub async fn open(url: &str) -> Result<Box<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(
            SqlStore::new(Postgres::connect(url).await?).await?,
        ));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| (!url.contains("://")).then_some(url))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| StoreError::Url(url.to_string()))?;
    Ok(Box::new(SqlStore::new(Sqlite::open(path.as_ref())?).await?))
}

/// The one implementation of [`Store`], over either database.
pub struct SqlStore<B> {
    db: B,
    name: &'static str,
}

impl<B: Backend> SqlStore<B> {
    pub async fn new(db: B) -> Result<Self> {
        db.script(SCHEMA).await?;
        let name = db.name();
        Ok(SqlStore { db, name })
    }
}

const AGENT_COLUMNS: &str = "agent_id, node, labels, address, source, registered_unix_nano, last_seen_unix_nano, capabilities, replaced_by, error";
const TAP_COLUMNS: &str = "tap_id, kind, spec, selector, created_unix_nano, deadline_unix_nano";
const MEMBER_COLUMNS: &str =
    "tap_id, agent_id, node, address, status, collector_id, collector_state, error";
const RECORD_COLUMNS: &str =
    "tap_id, agent_id, node, collector_id, kind, seq, time_unix_nano, is_final, record";
const LOSS_COLUMNS: &str =
    "tap_id, agent_id, node, collector_id, from_seq, count, reason, time_unix_nano";
/// Rows per multi-row INSERT: well under both databases' parameter limits.
const INSERT_ROWS: usize = 200;

/// `$from, $from+1, ... ` for `n` parameters.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn agent_of(r: &Row) -> Result<AgentRow> {
    let labels = r.text(2, "labels")?;
    Ok(AgentRow {
        agent_id: r.text(0, "agent_id")?,
        node: r.text(1, "node")?,
        labels: serde_json::from_str(&labels).map_err(|e| StoreError::Decode {
            column: "labels",
            reason: e.to_string(),
        })?,
        address: r.text(3, "address")?,
        source: r.int(4, "source")? as i32,
        registered_unix_nano: r.u64(5, "registered_unix_nano")?,
        last_seen_unix_nano: r.u64(6, "last_seen_unix_nano")?,
        capabilities: r.blob(7, "capabilities")?,
        replaced_by: r.text(8, "replaced_by")?,
        error: r.text(9, "error")?,
    })
}

fn tap_of(r: &Row) -> Result<TapRow> {
    Ok(TapRow {
        tap_id: r.text(0, "tap_id")?,
        kind: r.text(1, "kind")?,
        spec: r.blob(2, "spec")?,
        selector: r.blob(3, "selector")?,
        created_unix_nano: r.u64(4, "created_unix_nano")?,
        deadline_unix_nano: r.u64(5, "deadline_unix_nano")?,
    })
}

fn member_of(r: &Row) -> Result<MemberRow> {
    Ok(MemberRow {
        tap_id: r.text(0, "tap_id")?,
        agent_id: r.text(1, "agent_id")?,
        node: r.text(2, "node")?,
        address: r.text(3, "address")?,
        status: r.int(4, "status")? as i32,
        collector_id: r.text(5, "collector_id")?,
        collector_state: r.int(6, "collector_state")? as i32,
        error: r.text(7, "error")?,
    })
}

fn record_of(r: &Row) -> Result<RecordRow> {
    Ok(RecordRow {
        tap_id: r.text(0, "tap_id")?,
        agent_id: r.text(1, "agent_id")?,
        node: r.text(2, "node")?,
        collector_id: r.text(3, "collector_id")?,
        kind: r.text(4, "kind")?,
        seq: r.u64(5, "seq")?,
        time_unix_nano: r.u64(6, "time_unix_nano")?,
        is_final: r.int(7, "is_final")? != 0,
        record: r.blob(8, "record")?,
    })
}

fn loss_of(r: &Row) -> Result<LossRow> {
    Ok(LossRow {
        tap_id: r.text(0, "tap_id")?,
        agent_id: r.text(1, "agent_id")?,
        node: r.text(2, "node")?,
        collector_id: r.text(3, "collector_id")?,
        from_seq: r.u64(4, "from_seq")?,
        count: r.u64(5, "count")?,
        reason: r.text(6, "reason")?,
        time_unix_nano: r.u64(7, "time_unix_nano")?,
    })
}

fn member_params(m: &MemberRow) -> Vec<Value> {
    vec![
        m.tap_id.as_str().into(),
        m.agent_id.as_str().into(),
        m.node.as_str().into(),
        m.address.as_str().into(),
        m.status.into(),
        m.collector_id.as_str().into(),
        m.collector_state.into(),
        m.error.as_str().into(),
    ]
}

impl<B> SqlStore<B> {
    /// The SELECT for `q`, with its parameters.
    fn record_select(q: &RecordQuery) -> (String, Vec<Value>) {
        let mut sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE 1 = 1");
        let mut params: Vec<Value> = Vec::new();
        let mut bind = |sql: &mut String, clause: &str, v: Value| {
            params.push(v);
            let _ = write!(
                sql,
                " {}",
                clause.replace('?', &format!("${}", params.len()))
            );
        };
        if let Some(tap) = &q.tap_id {
            bind(&mut sql, "AND tap_id = ?", tap.as_str().into());
        }
        if let Some(kind) = &q.kind {
            bind(&mut sql, "AND kind = ?", kind.as_str().into());
        }
        if q.since_unix_nano > 0 {
            bind(
                &mut sql,
                "AND time_unix_nano >= ?",
                q.since_unix_nano.into(),
            );
        }
        if q.until_unix_nano > 0 {
            bind(&mut sql, "AND time_unix_nano < ?", q.until_unix_nano.into());
        }
        if q.final_only {
            sql.push_str(" AND is_final = 1");
        }
        for (column, values) in [("node", &q.nodes), ("agent_id", &q.agent_ids)] {
            if values.is_empty() {
                continue;
            }
            let _ = write!(sql, " AND {column} IN (");
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                bind(&mut sql, "?", v.as_str().into());
            }
            sql.push(')');
        }
        if let Some(c) = &q.after {
            let first = params.len() + 1;
            let _ = write!(
                sql,
                " AND (time_unix_nano, agent_id, collector_id, seq) > ({})",
                placeholders(first, 4)
            );
            params.extend([
                c.time_unix_nano.into(),
                c.agent_id.as_str().into(),
                c.collector_id.as_str().into(),
                c.seq.into(),
            ]);
        }
        let _ = write!(
            sql,
            " ORDER BY time_unix_nano, agent_id, collector_id, seq LIMIT {}",
            q.limit.max(1)
        );
        (sql, params)
    }
}

#[tonic::async_trait]
impl<B: Backend> Store for SqlStore<B> {
    fn backend(&self) -> &'static str {
        self.name
    }

    async fn upsert_agent(&self, a: &AgentRow) -> Result<()> {
        let labels = serde_json::to_string(&a.labels).unwrap_or_else(|_| "{}".into());
        let sql = format!(
            "INSERT INTO agents ({AGENT_COLUMNS}) VALUES ({}) ON CONFLICT (agent_id) DO UPDATE SET \
             node = excluded.node, labels = excluded.labels, address = excluded.address, \
             source = excluded.source, last_seen_unix_nano = excluded.last_seen_unix_nano, \
             capabilities = excluded.capabilities, replaced_by = excluded.replaced_by, \
             error = excluded.error",
            placeholders(1, 10)
        );
        self.db
            .execute(
                &sql,
                vec![
                    a.agent_id.as_str().into(),
                    a.node.as_str().into(),
                    labels.into(),
                    a.address.as_str().into(),
                    a.source.into(),
                    a.registered_unix_nano.into(),
                    a.last_seen_unix_nano.into(),
                    a.capabilities.clone().into(),
                    a.replaced_by.as_str().into(),
                    a.error.as_str().into(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn replace_agents(
        &self,
        agent_id: &str,
        node: &str,
        address: &str,
    ) -> Result<Vec<String>> {
        let rows = self
            .db
            .query(
                "SELECT agent_id FROM agents WHERE node = $1 AND address = $2 AND agent_id <> $3 AND replaced_by = ''",
                vec![node.into(), address.into(), agent_id.into()],
            )
            .await?;
        let ids = rows
            .iter()
            .map(|r| r.text(0, "agent_id"))
            .collect::<Result<Vec<_>>>()?;
        if !ids.is_empty() {
            self.db
                .execute(
                    "UPDATE agents SET replaced_by = $1 WHERE node = $2 AND address = $3 AND agent_id <> $1 AND replaced_by = ''",
                    vec![agent_id.into(), node.into(), address.into()],
                )
                .await?;
        }
        Ok(ids)
    }

    async fn touch_agent(&self, agent_id: &str, now: u64) -> Result<bool> {
        let n = self
            .db
            .execute(
                "UPDATE agents SET last_seen_unix_nano = $1, error = '' WHERE agent_id = $2",
                vec![now.into(), agent_id.into()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn set_agent_error(&self, agent_id: &str, error: &str) -> Result<()> {
        self.db
            .execute(
                "UPDATE agents SET error = $1 WHERE agent_id = $2",
                vec![error.into(), agent_id.into()],
            )
            .await?;
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<AgentRow>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY node, registered_unix_nano");
        self.db
            .query(&sql, vec![])
            .await?
            .iter()
            .map(agent_of)
            .collect()
    }

    async fn agent(&self, agent_id: &str) -> Result<Option<AgentRow>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE agent_id = $1");
        let rows = self.db.query(&sql, vec![agent_id.into()]).await?;
        rows.first().map(agent_of).transpose()
    }

    async fn insert_tap(&self, t: &TapRow, members: &[MemberRow]) -> Result<()> {
        let mut statements = vec![(
            format!(
                "INSERT INTO fleet_taps ({TAP_COLUMNS}) VALUES ({})",
                placeholders(1, 6)
            ),
            vec![
                t.tap_id.as_str().into(),
                t.kind.as_str().into(),
                t.spec.clone().into(),
                t.selector.clone().into(),
                t.created_unix_nano.into(),
                t.deadline_unix_nano.into(),
            ],
        )];
        let member_sql = format!(
            "INSERT INTO members ({MEMBER_COLUMNS}) VALUES ({})",
            placeholders(1, 8)
        );
        statements.extend(
            members
                .iter()
                .map(|m| (member_sql.clone(), member_params(m))),
        );
        self.db.transaction(statements).await?;
        Ok(())
    }

    async fn set_deadline(&self, tap_id: &str, deadline: u64) -> Result<()> {
        self.db
            .execute(
                "UPDATE fleet_taps SET deadline_unix_nano = $1 WHERE tap_id = $2",
                vec![deadline.into(), tap_id.into()],
            )
            .await?;
        Ok(())
    }

    async fn update_member(&self, m: &MemberRow) -> Result<()> {
        self.db
            .execute(
                "UPDATE members SET node = $3, address = $4, status = $5, collector_id = $6, \
                 collector_state = $7, error = $8 WHERE tap_id = $1 AND agent_id = $2",
                member_params(m),
            )
            .await?;
        Ok(())
    }

    async fn tap(&self, tap_id: &str) -> Result<Option<(TapRow, Vec<MemberRow>)>> {
        let sql = format!("SELECT {TAP_COLUMNS} FROM fleet_taps WHERE tap_id = $1");
        let Some(tap) = self
            .db
            .query(&sql, vec![tap_id.into()])
            .await?
            .first()
            .map(tap_of)
            .transpose()?
        else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {MEMBER_COLUMNS} FROM members WHERE tap_id = $1 ORDER BY node, agent_id"
        );
        let members = self
            .db
            .query(&sql, vec![tap_id.into()])
            .await?
            .iter()
            .map(member_of)
            .collect::<Result<_>>()?;
        Ok(Some((tap, members)))
    }

    async fn taps(&self) -> Result<Vec<(TapRow, Vec<MemberRow>)>> {
        let sql = format!("SELECT {TAP_COLUMNS} FROM fleet_taps ORDER BY created_unix_nano");
        let taps: Vec<TapRow> = self
            .db
            .query(&sql, vec![])
            .await?
            .iter()
            .map(tap_of)
            .collect::<Result<_>>()?;
        let sql = format!("SELECT {MEMBER_COLUMNS} FROM members ORDER BY node, agent_id");
        let mut members: BTreeMap<String, Vec<MemberRow>> = BTreeMap::new();
        for row in self.db.query(&sql, vec![]).await? {
            let m = member_of(&row)?;
            members.entry(m.tap_id.clone()).or_default().push(m);
        }
        Ok(taps
            .into_iter()
            .map(|t| {
                let m = members.remove(&t.tap_id).unwrap_or_default();
                (t, m)
            })
            .collect())
    }

    async fn members_with_status(&self, status: i32) -> Result<Vec<MemberRow>> {
        let sql = format!("SELECT {MEMBER_COLUMNS} FROM members WHERE status = $1");
        self.db
            .query(&sql, vec![status.into()])
            .await?
            .iter()
            .map(member_of)
            .collect()
    }

    async fn insert(&self, records: &[RecordRow], losses: &[LossRow]) -> Result<u64> {
        let mut statements = Vec::new();
        for chunk in records.chunks(INSERT_ROWS) {
            let mut sql = format!("INSERT INTO records ({RECORD_COLUMNS}) VALUES ");
            let mut params = Vec::with_capacity(chunk.len() * 9);
            for (i, r) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(sql, "({})", placeholders(params.len() + 1, 9));
                params.extend([
                    r.tap_id.as_str().into(),
                    r.agent_id.as_str().into(),
                    r.node.as_str().into(),
                    r.collector_id.as_str().into(),
                    r.kind.as_str().into(),
                    r.seq.into(),
                    r.time_unix_nano.into(),
                    r.is_final.into(),
                    r.record.clone().into(),
                ]);
            }
            sql.push_str(" ON CONFLICT (agent_id, collector_id, seq) DO NOTHING");
            statements.push((sql, params));
        }
        let records_statements = statements.len();
        let loss_sql = format!(
            "INSERT INTO losses ({LOSS_COLUMNS}) VALUES ({}) ON CONFLICT (agent_id, collector_id, from_seq) DO NOTHING",
            placeholders(1, 8)
        );
        for l in losses {
            statements.push((
                loss_sql.clone(),
                vec![
                    l.tap_id.as_str().into(),
                    l.agent_id.as_str().into(),
                    l.node.as_str().into(),
                    l.collector_id.as_str().into(),
                    l.from_seq.into(),
                    l.count.into(),
                    l.reason.as_str().into(),
                    l.time_unix_nano.into(),
                ],
            ));
        }
        if statements.is_empty() {
            return Ok(0);
        }
        let changed = self.db.transaction(statements).await?;
        // Losses change rows too; they are few and counted apart.
        Ok(if records_statements == 0 {
            0
        } else {
            changed.saturating_sub(losses.len() as u64)
        })
    }

    async fn stored(&self, agent_id: &str, collector_id: &str) -> Result<Stored> {
        let rows = self
            .db
            .query(
                "SELECT MAX(seq), COUNT(*) FROM records WHERE agent_id = $1 AND collector_id = $2",
                vec![agent_id.into(), collector_id.into()],
            )
            .await?;
        let lost = self
            .db
            .query(
                "SELECT count FROM losses WHERE agent_id = $1 AND collector_id = $2",
                vec![agent_id.into(), collector_id.into()],
            )
            .await?;
        let mut stored = Stored::default();
        if let Some(r) = rows.first() {
            stored.max_seq = r.u64(0, "max(seq)")?;
            stored.records = r.u64(1, "count(*)")?;
        }
        for r in &lost {
            stored.lost += r.u64(0, "count")?;
        }
        Ok(stored)
    }

    async fn records(&self, q: &RecordQuery) -> Result<Vec<RecordRow>> {
        let (sql, params) = Self::record_select(q);
        self.db
            .query(&sql, params)
            .await?
            .iter()
            .map(record_of)
            .collect()
    }

    async fn losses(&self, tap_id: &str) -> Result<Vec<LossRow>> {
        let sql = format!(
            "SELECT {LOSS_COLUMNS} FROM losses WHERE tap_id = $1 ORDER BY time_unix_nano, agent_id"
        );
        self.db
            .query(&sql, vec![tap_id.into()])
            .await?
            .iter()
            .map(loss_of)
            .collect()
    }

    async fn expire(&self, kind: &str, before: u64) -> Result<u64> {
        self.db
            .execute(
                "DELETE FROM records WHERE kind = $1 AND time_unix_nano < $2",
                vec![kind.into(), before.into()],
            )
            .await
    }

    async fn expire_others(&self, except: &[String], before: u64) -> Result<u64> {
        let mut sql = "DELETE FROM records WHERE time_unix_nano < $1".to_string();
        let mut params: Vec<Value> = vec![before.into()];
        if !except.is_empty() {
            let _ = write!(sql, " AND kind NOT IN ({})", placeholders(2, except.len()));
            params.extend(except.iter().map(|k| Value::from(k.as_str())));
        }
        self.db.execute(&sql, params).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            time_unix_nano: 17,
            agent_id: "a.b/c".into(),
            collector_id: "x-y".into(),
            seq: 3,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("nonsense"), None);
    }
}
