//! The `postgres` source: the state of each Gen3 service's PostgreSQL
//! database, under postgres_exporter's names (prometheus-community), one
//! read-only connection per configured database.
//!
//! | metric | type | from |
//! |---|---|---|
//! | `pg_up` | gauge | 1 when the round's query succeeded, 0 when the database cannot be reached, refuses the connection or the query failed |
//! | `pg_stat_database_numbackends` | gauge | `pg_stat_database.numbackends`: connections to this database |
//! | `pg_stat_database_xact_commit` | counter | `pg_stat_database.xact_commit` |
//! | `pg_stat_database_xact_rollback` | counter | `pg_stat_database.xact_rollback` |
//! | `pg_stat_database_deadlocks` | counter | `pg_stat_database.deadlocks` |
//! | `pg_settings_max_connections` | gauge | the server's `max_connections` |
//! | `pg_database_size_bytes` | gauge | `pg_database_size()` of this database |
//! | `pg_replication_is_replica` | gauge | 1 on a standby (`pg_is_in_recovery()`), else 0 |
//! | `pg_replication_lag_seconds` | gauge | on a standby, seconds since the last replayed transaction's commit (`now() - pg_last_xact_replay_timestamp()`, at least 0); 0 on a primary — postgres_exporter's `pg_replication` query |
//! | `pg_long_running_transactions_oldest_timestamp_seconds` | gauge | the age in seconds of the oldest open transaction in this database (`clock_timestamp() - xact_start` of non-idle sessions, autovacuum and the agent's own session left out), 0 without one: postgres_exporter's name for it (an age, despite "timestamp") |
//!
//! Every series carries `database` (the configured name) and `job`
//! (`postgres` by default); `instance` and external labels come from the
//! pipeline. The counters keep postgres_exporter's names (no `_total`).
//!
//! **Cost.** One round is one prepared statement per database (a single
//! row joining `pg_stat_database`, `pg_settings`, `pg_database_size`,
//! the recovery functions and `pg_stat_activity`), on a connection kept
//! open between rounds: see BENCHMARKS.md for its measured cost.
//!
//! **Read-only.** Each connection starts with `-c
//! default_transaction_read_only=on` (added to the DSN's `options`), a
//! `statement_timeout` of the source's timeout and `application_name
//! csoc-agent`. The role needs only CONNECT on the database; give it
//! `pg_monitor` so that it sees other roles' transactions in
//! `pg_stat_activity` (without it the oldest-transaction age only covers
//! its own sessions).
//!
//! **TLS.** Connections are plain TCP (or a Unix socket): `sslmode=disable`
//! or `prefer` (which, as libpq does when the client offers no TLS, goes on
//! without it); a DSN with `sslmode=require` is refused at startup.
//!
//! **Failures.** A database that cannot be reached or refuses the
//! connection reports `pg_up 0` (its other series get a staleness marker) while the others go on;
//! the reason is logged once when it starts (and again if it changes), its
//! end once, and every failed round is counted in
//! `csoc_agent_source_errors_total{source="postgres",kind}`: `auth`
//! (password or role refused, SQLSTATE 28P01/28000), `missing_database`
//! (3D000), `too_many_connections` (53300), `connect` (refused, unreachable,
//! connection lost), `timeout`, `query` (the statement failed),
//! `password_file` (unreadable). A lost connection is re-established at the
//! next round. Errors name the database as `user@host:port/dbname`, never
//! with the password; the DSN itself is never logged.

mod config;
#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use super::{BoxFuture, Source, SourceContext};
use crate::config::ConfigError;
use crate::model::{Frame, MetricKind};

pub use config::{DEFAULT_TIMEOUT, PostgresConfig, PostgresDatabase, redacted};
use config::{describe, parse_dsn};

/// The statement of one round (one row, every value float8 but the flag).
pub(crate) const QUERY: &str = "SELECT \
  d.numbackends::float8, d.xact_commit::float8, d.xact_rollback::float8, d.deadlocks::float8, \
  current_setting('max_connections')::float8, \
  pg_database_size(d.datid)::float8, \
  pg_is_in_recovery(), \
  (CASE WHEN NOT pg_is_in_recovery() THEN 0 \
        ELSE GREATEST(0, EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))) END)::float8, \
  COALESCE((SELECT MAX(EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)) FROM pg_stat_activity a \
            WHERE a.datid = d.datid AND a.state IS DISTINCT FROM 'idle' AND a.query NOT LIKE 'autovacuum:%' \
              AND a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid()), 0)::float8 \
FROM pg_stat_database d WHERE d.datname = current_database()";

/// One configured database and its connection.
struct Database {
    name: String,
    config: tokio_postgres::Config,
    password_file: Option<std::path::PathBuf>,
    /// `user@host:port/dbname` (for logs).
    place: String,
    conn: Option<(Client, Statement)>,
    /// The kind of the ongoing failure (logged once).
    failing: Option<&'static str>,
}

/// A failed round of one database.
#[derive(Debug, Clone, PartialEq)]
pub struct PgError {
    /// The error kind (see the module docs).
    pub kind: &'static str,
    /// What happened (no password).
    pub message: String,
}

/// The values of one successful round.
#[derive(Debug, Clone, PartialEq)]
pub struct PgStats {
    numbackends: f64,
    xact_commit: f64,
    xact_rollback: f64,
    deadlocks: f64,
    max_connections: f64,
    size_bytes: f64,
    is_replica: bool,
    lag_seconds: f64,
    oldest_xact_seconds: f64,
}

/// The kind of a tokio-postgres error.
fn classify(e: &tokio_postgres::Error) -> &'static str {
    if let Some(code) = e.code() {
        if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            return "auth";
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return "missing_database";
        }
        if *code == SqlState::TOO_MANY_CONNECTIONS {
            return "too_many_connections";
        }
        if *code == SqlState::QUERY_CANCELED {
            return "timeout";
        }
        if code.code().starts_with("57P") || code.code().starts_with("08") {
            // admin_shutdown, crash_shutdown, cannot_connect_now; connection exceptions.
            return "connect";
        }
        return "query";
    }
    // I/O: refused, unreachable, reset, closed.
    "connect"
}

/// Errors building the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The postgres source.
pub struct PostgresSource {
    databases: Vec<Database>,
    interval: Duration,
    timeout: Duration,
    job: String,
}

impl PostgresSource {
    /// Validates the config (`default_interval`: the agent's) and builds the
    /// source (no connection yet).
    pub fn new(cfg: &PostgresConfig, default_interval: Duration) -> Result<Self, PostgresError> {
        cfg.validate(default_interval)?;
        let timeout = cfg.effective_timeout(default_interval);
        let mut databases = Vec::new();
        for d in &cfg.databases {
            // Validated above: parses.
            let mut c = parse_dsn(&d.dsn).map_err(|m| crate::sources::gen3_http::invalid(format!("{}.databases", config::FIELD), m))?;
            let ro = format!(
                "-c default_transaction_read_only=on -c statement_timeout={}",
                timeout.as_millis().max(1)
            );
            let options = match c.get_options() {
                Some(o) if !o.trim().is_empty() => format!("{o} {ro}"),
                _ => ro,
            };
            c.options(options);
            if c.get_application_name().is_none() {
                c.application_name("csoc-agent");
            }
            c.connect_timeout(timeout);
            databases.push(Database {
                name: d.name.clone(),
                place: describe(&c),
                config: c,
                password_file: d.password_file.clone(),
                conn: None,
                failing: None,
            });
        }
        Ok(PostgresSource {
            databases,
            interval: cfg.effective_interval(default_interval),
            timeout,
            job: cfg.job.clone(),
        })
    }
}

impl Database {
    /// Connects (reading the password file), prepares the statement.
    async fn connect(&mut self, timeout: Duration) -> Result<(), PgError> {
        let mut c = self.config.clone();
        if let Some(p) = &self.password_file {
            let pw = std::fs::read_to_string(p).map_err(|e| PgError {
                kind: "password_file",
                message: format!("cannot read the password file {}: {e}", p.display()),
            })?;
            c.password(pw.trim());
        }
        let place = self.place.clone();
        let fut = async move {
            let (client, connection) = c.connect(NoTls).await?;
            tokio::spawn(async move {
                // Ends when the connection is lost or the client dropped;
                // the next query then fails and the round reconnects.
                let _ = connection.await;
            });
            let stmt = client.prepare(QUERY).await?;
            Ok::<_, tokio_postgres::Error>((client, stmt))
        };
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(PgError {
                kind: "timeout",
                message: format!("{place}: no connection within {timeout:?}"),
            }),
            Ok(Err(e)) => Err(PgError {
                kind: classify(&e),
                message: format!("{place}: {}", csoc_common::error::error_chain(&e)),
            }),
            Ok(Ok(cs)) => {
                self.conn = Some(cs);
                Ok(())
            }
        }
    }

    /// One round: (re)connects if needed and runs the statement. A
    /// connection found lost (terminated, server restarted) is
    /// re-established and the statement retried once, in the same round.
    async fn poll(&mut self, timeout: Duration) -> Result<PgStats, PgError> {
        let mut fresh = false;
        if self.conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            self.conn = None;
            self.connect(timeout).await?;
            fresh = true;
        }
        match self.query(timeout).await {
            Err(e) if !fresh && e.kind == "connect" => {
                tracing::debug!(database = %self.name, error = %e.message, "PostgreSQL connection lost; reconnecting");
                self.conn = None;
                self.connect(timeout).await?;
                self.query(timeout).await
            }
            r => r,
        }
    }

    /// Runs the statement on the open connection.
    async fn query(&mut self, timeout: Duration) -> Result<PgStats, PgError> {
        let Some((client, stmt)) = &self.conn else {
            return Err(PgError {
                kind: "connect",
                message: format!("{}: not connected", self.place),
            });
        };
        let res = tokio::time::timeout(timeout, client.query_one(stmt, &[])).await;
        let row = match res {
            Err(_) => {
                // The statement_timeout should have fired first: the
                // connection is in an unknown state, start afresh.
                self.conn = None;
                return Err(PgError {
                    kind: "timeout",
                    message: format!("{}: no answer within {timeout:?}", self.place),
                });
            }
            Ok(Err(e)) => {
                let kind = classify(&e);
                let message = format!("{}: {}", self.place, csoc_common::error::error_chain(&e));
                if client.is_closed() || kind != "query" {
                    self.conn = None;
                }
                return Err(PgError { kind, message });
            }
            Ok(Ok(row)) => row,
        };
        let get = |i: usize| -> Result<f64, PgError> {
            row.try_get::<_, Option<f64>>(i).map(|v| v.unwrap_or(0.0)).map_err(|e| PgError {
                kind: "query",
                message: format!("{}: column {i}: {e}", self.place),
            })
        };
        Ok(PgStats {
            numbackends: get(0)?,
            xact_commit: get(1)?,
            xact_rollback: get(2)?,
            deadlocks: get(3)?,
            max_connections: get(4)?,
            size_bytes: get(5)?,
            is_replica: row.try_get::<_, bool>(6).map_err(|e| PgError {
                kind: "query",
                message: format!("{}: column 6: {e}", self.place),
            })?,
            lag_seconds: get(7)?,
            oldest_xact_seconds: get(8)?,
        })
    }
}

/// The families' metadata.
fn declare(frame: &mut Frame) {
    use MetricKind::{Counter, Gauge};
    for (name, kind, help, unit) in [
        ("pg_up", Gauge, "Whether the last query of the database was successful.", ""),
        (
            "pg_stat_database_numbackends",
            Gauge,
            "Number of backends currently connected to this database.",
            "",
        ),
        (
            "pg_stat_database_xact_commit",
            Counter,
            "Number of transactions in this database that have been committed.",
            "",
        ),
        (
            "pg_stat_database_xact_rollback",
            Counter,
            "Number of transactions in this database that have been rolled back.",
            "",
        ),
        (
            "pg_stat_database_deadlocks",
            Counter,
            "Number of deadlocks detected in this database.",
            "",
        ),
        ("pg_settings_max_connections", Gauge, "Server parameter max_connections.", ""),
        ("pg_database_size_bytes", Gauge, "Disk space used by the database.", "bytes"),
        ("pg_replication_is_replica", Gauge, "Indicates if the server is a replica.", ""),
        (
            "pg_replication_lag_seconds",
            Gauge,
            "Replication lag behind the primary in seconds (0 on a primary).",
            "seconds",
        ),
        (
            "pg_long_running_transactions_oldest_timestamp_seconds",
            Gauge,
            "The age in seconds of the oldest open transaction in the database.",
            "seconds",
        ),
    ] {
        frame.meta(name, kind, help, unit);
    }
}

/// Adds one database's round to `frame`.
fn push_round(frame: &mut Frame, job: &str, name: &str, res: &Result<PgStats, PgError>, ts: i64) {
    let l = [("job", job), ("database", name)];
    match res {
        Err(_) => frame.push("pg_up", &l, ts, 0.0),
        Ok(s) => {
            frame.push("pg_up", &l, ts, 1.0);
            frame.push("pg_stat_database_numbackends", &l, ts, s.numbackends);
            frame.push("pg_stat_database_xact_commit", &l, ts, s.xact_commit);
            frame.push("pg_stat_database_xact_rollback", &l, ts, s.xact_rollback);
            frame.push("pg_stat_database_deadlocks", &l, ts, s.deadlocks);
            frame.push("pg_settings_max_connections", &l, ts, s.max_connections);
            frame.push("pg_database_size_bytes", &l, ts, s.size_bytes);
            frame.push("pg_replication_is_replica", &l, ts, if s.is_replica { 1.0 } else { 0.0 });
            frame.push("pg_replication_lag_seconds", &l, ts, s.lag_seconds);
            frame.push(
                "pg_long_running_transactions_oldest_timestamp_seconds",
                &l,
                ts,
                s.oldest_xact_seconds,
            );
        }
    }
}

impl PostgresSource {
    /// One round over every database (concurrently); returns the frame and
    /// each database's error.
    pub async fn collect(&mut self, source: &str) -> (Frame, Vec<(String, Result<(), PgError>)>) {
        let timeout = self.timeout;
        let results = futures::future::join_all(self.databases.iter_mut().map(|d| async move {
            let r = d.poll(timeout).await;
            (r, csoc_common::time::now_ms())
        }))
        .await;
        let mut frame = Frame::new(source);
        declare(&mut frame);
        let mut out = Vec::new();
        for (d, (r, ts)) in self.databases.iter().zip(results) {
            push_round(&mut frame, &self.job, &d.name, &r, ts);
            out.push((d.name.clone(), r.map(|_| ())));
        }
        (frame, out)
    }
}

impl Source for PostgresSource {
    fn run(mut self: Box<Self>, cx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            tracing::info!(
                source = %cx.name,
                databases = ?self.databases.iter().map(|d| format!("{}={}", d.name, d.place)).collect::<Vec<_>>(),
                interval = ?self.interval,
                timeout = ?self.timeout,
                "postgres polling"
            );
            let mut vanished = super::vanished::Vanished::default();
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let (mut frame, results) = tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    r = self.collect(&cx.name) => r,
                };
                for (d, (_, r)) in self.databases.iter_mut().zip(results) {
                    match r {
                        Err(e) => {
                            cx.error(e.kind);
                            if d.failing != Some(e.kind) {
                                tracing::warn!(source = %cx.name, database = %d.name, kind = e.kind, error = %e.message, "PostgreSQL database unavailable");
                            }
                            d.failing = Some(e.kind);
                        }
                        Ok(()) => {
                            if d.failing.take().is_some() {
                                tracing::info!(source = %cx.name, database = %d.name, "PostgreSQL database available again");
                            }
                        }
                    }
                }
                vanished.mark(&mut frame, csoc_common::time::now_ms());
                if !cx.emit(frame).await {
                    break;
                }
            }
        })
    }
}
