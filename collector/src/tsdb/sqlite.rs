//! The SQLite schema and every SQL statement of the storage.
//!
//! ```sql
//! series(id INTEGER PRIMARY KEY, labels TEXT UNIQUE)   -- labels: JSON [[name,value],...] sorted by name
//! samples(series_id, ts, value, PRIMARY KEY(series_id, ts)) WITHOUT ROWID
//!                                                       -- value: the f64's bits as INTEGER, so that
//!                                                       -- NaN (and the staleness marker) survive:
//!                                                       -- SQLite turns a REAL NaN into NULL
//! agent_seq(commons, agent, epoch, seq, updated_ms, PRIMARY KEY(commons, agent, epoch))
//! meta(key PRIMARY KEY, value)                          -- schema_version
//! ```
//! One database file in WAL mode (`synchronous=FULL`: a commit is durable
//! before it returns, so an Ack never precedes durability).

use rusqlite::{Connection, OpenFlags, params};

use super::TsdbError;

/// Version of the schema this code writes.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, labels TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS samples (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agent_seq (
    commons TEXT NOT NULL,
    agent TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (commons, agent, epoch)
);
";

/// Opens the database for writing and creates or checks the schema.
pub fn open_writer(path: &std::path::Path) -> Result<Connection, TsdbError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(SCHEMA)?;
    let version: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .ok();
    match version {
        None => {
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )?;
        }
        Some(v) if v == SCHEMA_VERSION.to_string() => {}
        Some(v) => {
            return Err(TsdbError::Schema(format!(
                "{} has schema version {v}, this collector understands {SCHEMA_VERSION}",
                path.display()
            )));
        }
    }
    Ok(conn)
}

/// Opens a read-only connection.
pub fn open_reader(path: &std::path::Path) -> Result<Connection, TsdbError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// Every series: (id, labels JSON).
pub const SELECT_ALL_SERIES: &str = "SELECT id, labels FROM series";
/// Adds a series.
pub const INSERT_SERIES: &str = "INSERT INTO series(labels) VALUES (?1)";
/// Adds or replaces a sample (last write wins).
pub const UPSERT_SAMPLE: &str = "INSERT OR REPLACE INTO samples(series_id, ts, value) VALUES (?1, ?2, ?3)";
/// Samples of one series in [mint, maxt], by time.
pub const SELECT_SAMPLES: &str = "SELECT ts, value FROM samples WHERE series_id = ?1 AND ts >= ?2 AND ts <= ?3 ORDER BY ts";
/// The applied seq of an agent identity.
pub const SELECT_AGENT_SEQ: &str = "SELECT seq FROM agent_seq WHERE commons = ?1 AND agent = ?2 AND epoch = ?3";
/// Records an applied seq.
pub const UPSERT_AGENT_SEQ: &str = "INSERT INTO agent_seq(commons, agent, epoch, seq, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT(commons, agent, epoch) DO UPDATE SET seq = excluded.seq, updated_ms = excluded.updated_ms";
