//! Logging set-up of both binaries (tracing to stderr: text, logfmt or JSON).
//!
//! The level is `--log.level` (Prometheus's flag: `debug`, `info`, `warn`,
//! `error`) when given, else `RUST_LOG` (a full tracing filter), else `info`.

use std::fmt::Write as _;

use serde::Deserialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Log output format (`--log-format`, alias Prometheus's `--log.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// `key=value` lines as Prometheus's `--log.format=logfmt` writes them
    /// (`ts=... level=info caller=... msg="..." key=value`).
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// Log level (`--log.level`, Prometheus's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, debug included.
    Debug,
    /// Informational and up (the default).
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Installs the global tracing subscriber. The level comes from `RUST_LOG`
/// (default `info`). Logs go to stderr.
pub fn init_logging(format: LogFormat) {
    init_logging_with(format, None);
}

/// As [`init_logging`], with `--log.level` (which takes precedence over
/// `RUST_LOG`).
pub fn init_logging_with(format: LogFormat, level: Option<LogLevel>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l.directive()),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and journald get plain text.
        .with_ansi(format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log reader that went away (closed pipe) must not stop the
        // process: tracing-subscriber would report the failed write with
        // eprintln!, which panics when stderr itself is the broken pipe.
        .log_internal_errors(false)
        .with_target(true);
    let res = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Logfmt => builder.event_format(Logfmt).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests, --local-agent) keeps the first subscriber.
    let _ = res;
}

/// The logfmt event format.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &tracing::Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let mut v = LogfmtFields::default();
        event.record(&mut v);
        let mut line = format!(
            "ts={ts} level={} caller={}",
            meta.level().to_string().to_ascii_lowercase(),
            logfmt_value(meta.target())
        );
        if let Some(m) = &v.msg {
            let _ = write!(line, " msg={}", logfmt_value(m));
        }
        line.push_str(&v.rest);
        writeln!(w, "{line}")
    }
}

#[derive(Default)]
struct LogfmtFields {
    msg: Option<String>,
    rest: String,
}

impl Visit for LogfmtFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = Some(value.to_string());
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), logfmt_value(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// A logfmt value: bare when it needs no quoting, else a quoted string.
pub fn logfmt_value(s: &str) -> String {
    if !s.is_empty() && !s.chars().any(|c| c == ' ' || c == '=' || c == '"' || c.is_control()) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_values_are_quoted_when_needed() {
        assert_eq!(logfmt_value("abc"), "abc");
        assert_eq!(logfmt_value(""), "\"\"");
        assert_eq!(logfmt_value("a b"), "\"a b\"");
        assert_eq!(logfmt_value("say \"x\"\n"), "\"say \\\"x\\\"\\n\"");
        assert_eq!(logfmt_value("k=v"), "\"k=v\"");
    }
}
