//! `sources.postgres`: the databases, their DSNs (never logged whole) and
//! the validation.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::sources::gen3_http::{de_opt_duration, invalid};

pub(super) const FIELD: &str = "sources.postgres";

/// Default time limit of connecting and of one collection's query.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Configuration of the `postgres` source (`sources.postgres`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Poll when databases are configured (default true).
    pub enabled: bool,
    /// The databases, each under its own connection; `--postgres-dsn
    /// NAME=DSN` adds one.
    pub databases: Vec<PostgresDatabase>,
    /// Poll interval (default: the agent's `interval`).
    #[serde(deserialize_with = "de_opt_duration")]
    pub interval: Option<Duration>,
    /// Time limit of connecting and of one collection (default 10s, or 80%
    /// of a shorter interval); also the connection's `statement_timeout`.
    #[serde(deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// Value of the `job` label (default `postgres`).
    pub job: String,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            enabled: true,
            databases: Vec::new(),
            interval: None,
            timeout: None,
            job: "postgres".into(),
        }
    }
}

/// One database.
#[derive(Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresDatabase {
    /// The `database` label of its metrics (e.g. `fence`, `indexd`).
    pub name: String,
    /// libpq-style connection string: `host=db port=5432 user=monitor
    /// dbname=fence_db` or `postgresql://monitor@db:5432/fence_db`
    /// (`sslmode` disable or prefer). Better without the password: use
    /// `password_file`.
    pub dsn: String,
    /// File holding the password (surrounding whitespace ignored), read
    /// at every connection; overrides a password in the DSN.
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for PostgresDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresDatabase")
            .field("name", &self.name)
            .field("dsn", &redacted(&self.dsn))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// What a DSN names, without its password: `user@host:port/dbname`, or
/// `<invalid DSN>` when it does not parse.
pub fn redacted(dsn: &str) -> String {
    match tokio_postgres::Config::from_str(dsn) {
        Ok(c) => describe(&c),
        Err(_) => "<invalid DSN>".into(),
    }
}

/// `user@host:port/dbname` of a parsed config (no password).
pub(super) fn describe(c: &tokio_postgres::Config) -> String {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        c.get_user().unwrap_or("?"),
        c.get_dbname().or(c.get_user()).unwrap_or("?")
    )
}

impl PostgresConfig {
    /// Whether the source runs.
    pub fn active(&self) -> bool {
        self.enabled && !self.databases.is_empty()
    }

    /// The interval in force (`default`: the agent's).
    pub fn effective_interval(&self, default: Duration) -> Duration {
        self.interval.unwrap_or(default)
    }

    /// The time limit in force.
    pub fn effective_timeout(&self, default_interval: Duration) -> Duration {
        self.timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.effective_interval(default_interval).mul_f64(0.8)))
    }

    /// Checks every value; errors name the field and never show a password.
    pub fn validate(&self, default_interval: Duration) -> Result<(), ConfigError> {
        let interval = self.effective_interval(default_interval);
        if interval < Duration::from_millis(100) {
            return Err(invalid(
                format!("{FIELD}.interval"),
                format!("{interval:?} is below the minimum of 100ms"),
            ));
        }
        let timeout = self.effective_timeout(default_interval);
        if timeout < Duration::from_millis(10) {
            return Err(invalid(
                format!("{FIELD}.timeout"),
                format!("{timeout:?} is below the minimum of 10ms"),
            ));
        }
        if timeout >= interval {
            return Err(invalid(
                format!("{FIELD}.timeout"),
                format!("{timeout:?} must be shorter than the interval ({interval:?})"),
            ));
        }
        if self.job.trim().is_empty() {
            return Err(invalid(format!("{FIELD}.job"), "must not be empty"));
        }
        for (i, d) in self.databases.iter().enumerate() {
            let f = |k: &str| format!("{FIELD}.databases[{i}].{k}");
            if d.name.trim().is_empty() || d.name.trim() != d.name || d.name.chars().any(char::is_control) {
                return Err(invalid(
                    f("name"),
                    format!("{:?}: a non-empty name without surrounding spaces", d.name),
                ));
            }
            if self.databases[..i].iter().any(|o| o.name == d.name) {
                return Err(invalid(f("name"), format!("{:?} is given twice", d.name)));
            }
            parse_dsn(&d.dsn).map_err(|m| invalid(f("dsn"), format!("database {:?}: {m}", d.name)))?;
            if let Some(p) = &d.password_file
                && p.as_os_str().is_empty()
            {
                return Err(invalid(f("password_file"), "must name a file"));
            }
        }
        Ok(())
    }
}

/// Parses a DSN; the error never quotes it (it may hold a password).
pub(super) fn parse_dsn(dsn: &str) -> Result<tokio_postgres::Config, String> {
    if dsn.trim().is_empty() {
        return Err("the DSN is empty".into());
    }
    let c = tokio_postgres::Config::from_str(dsn.trim()).map_err(|e| format!("the DSN does not parse: {e}"))?;
    if c.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err("sslmode=require is not supported: the agent connects without TLS (sslmode=disable or prefer, which falls back to plain connections); reach the database through the cluster network or a TLS sidecar".into());
    }
    if c.get_hosts().is_empty() {
        return Err("the DSN names no host (host=... or postgresql://HOST/...)".into());
    }
    Ok(c)
}
