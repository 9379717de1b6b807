//! Small helpers shared by the agent and the collector binaries: parsing of
//! durations and byte sizes in config files and flags, logging set-up,
//! shutdown signals and random numbers.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a duration as Prometheus writes them (`15s`, `1m30s`, `2h`, `15d`,
/// `1w`, `500ms`) and also humantime's longer forms (`1min`, `2 days`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    // Prometheus-style units first: humantime does not know `w`/`y` as short
    // units of weeks/years.
    let mut total = Duration::ZERO;
    let mut rest = t;
    let mut ok = true;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            ok = false;
            break;
        }
        let n: u64 = match rest[..digits].parse() {
            Ok(n) => n,
            Err(_) => {
                ok = false;
                break;
            }
        };
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => {
                ok = false;
                break;
            }
        };
        total += Duration::from_millis(n.saturating_mul(ms));
    }
    if ok {
        return Ok(total);
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration {s:?}: {e} (examples: 15s, 1m, 2h, 15d)"))
}

/// Parses a byte size: a plain number of bytes or a number with one of the
/// units B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of
/// 1024). `10GB` and `256MiB` are both accepted.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (examples: 1048576, 512MiB, 10GB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" | "ki" => 1024.0,
        "mib" | "mi" => 1024.0 * 1024.0,
        "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
        "tib" | "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!("invalid size {s:?}"));
    }
    Ok((n * mult) as u64)
}

/// serde helper: a duration written as a string (`15s`).
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// serde helper: a byte size written as a number or a string (`512MiB`).
pub fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        N(u64),
        S(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::N(n) => Ok(n),
        NumOrStr::S(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber. The level comes from `RUST_LOG`
/// (default `info`). Logs go to stderr.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log reader that went away (closed pipe) must not stop the
        // process: tracing-subscriber would report the failed write with
        // eprintln!, which panics when stderr itself is the broken pipe.
        .log_internal_errors(false)
        .with_target(true);
    let res = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests, --local-agent) keeps the first subscriber.
    let _ = res;
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT, shutting down"),
                    _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot install SIGTERM handler; only SIGINT stops the process");
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("received SIGINT, shutting down");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A random u64 from the operating system's generator.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // Fall back to the clock: only used for jitter and spool epochs,
        // where uniqueness per machine is enough.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return now.as_nanos() as u64 ^ (std::process::id() as u64) << 32;
    }
    u64::from_le_bytes(b)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Exponential backoff with jitter: `base * 2^attempt`, capped at `max`, then
/// a random factor in [0.5, 1.0] so that a fleet of agents does not reconnect
/// in lock-step after a collector restart.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(max);
    let frac = 0.5 + (random_u64() % 1000) as f64 / 2000.0;
    capped.mul_f64(frac)
}

/// A sample value as Prometheus writes it (Go's
/// `strconv.FormatFloat(v, 'f', -1, 64)` for finite values; `NaN`, `+Inf`,
/// `-Inf`): in the text format and in the collector's JSON.
pub fn fmt_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// An error and its causes on one line (`a: b: c`), each cause's message
/// once (libraries often repeat their source's message in their own).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let f = |s: &str, ms: u64| assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        f("15s", 15_000);
        f("1m30s", 90_000);
        f("500ms", 500);
        f("15d", 15 * 86_400_000);
        f("2w", 14 * 86_400_000);
        f("1min", 60_000);
        assert!(parse_duration("").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1.5KiB"), Ok(1536));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for _ in 0..100 {
            let b0 = backoff(0, base, max);
            assert!(b0 >= Duration::from_millis(500) && b0 <= base);
            let b3 = backoff(3, base, max);
            assert!(b3 >= Duration::from_secs(4) && b3 <= Duration::from_secs(8));
            assert!(backoff(30, base, max) <= max);
        }
    }
}
