//! The collector stores its own metrics (what `/metrics` shows) every
//! `self_scrape_interval`, with `job="csoc-collector"` and
//! `instance=<http address>`, as a Prometheus scraping itself would. This
//! is what lets a rule page when an agent falls silent
//! (`csoc_collector_agent_last_seen_timestamp_seconds`) and what the
//! collector's own dashboard reads. At start, each agent's last contact is
//! read back from storage, so an agent that never returns after a restart
//! still pages.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::metrics::IngestMetrics;
use crate::tsdb::{Labels, Matcher, Tsdb};

/// The metric that records each agent's last contact.
pub const LAST_SEEN: &str = "csoc_collector_agent_last_seen_timestamp_seconds";

/// One sample of an exposition: name, labels (as written), value.
pub type ExpoSample = (String, Vec<(String, String)>, f64);

/// Parses the text exposition the collector's registry produces
/// (OpenMetrics text without exemplars): (name, labels, value) per
/// sample. Lines it cannot read are skipped.
pub fn parse_exposition(text: &str) -> Vec<ExpoSample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = parse_line(line) {
            out.push(s);
        }
    }
    out
}

fn parse_line(line: &str) -> Option<ExpoSample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (l, end) = parse_more_labels(r)?;
        labels = l;
        rest = &r[end..];
    }
    let value = rest.split_whitespace().next()?;
    let v = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        x => x.parse().ok()?,
    };
    Some((name, labels, v))
}

/// Reads `k="v",k2="v2"}` (after the `{`); returns the labels and the index after `}`.
fn parse_more_labels(s: &str) -> Option<(Vec<(String, String)>, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        if *b.get(i)? == b'}' {
            return Some((out, i + 1));
        }
        let eq = s[i..].find('=')? + i;
        let name = s[i..eq].trim().to_string();
        if *b.get(eq + 1)? != b'"' {
            return None;
        }
        i = eq + 2;
        let mut value = String::new();
        loop {
            match *b.get(i)? {
                b'\\' => {
                    match *b.get(i + 1)? {
                        b'n' => value.push('\n'),
                        b'"' => value.push('"'),
                        b'\\' => value.push('\\'),
                        other => {
                            value.push('\\');
                            value.push(other as char);
                        }
                    }
                    i += 2;
                }
                b'"' => {
                    i += 1;
                    break;
                }
                _ => {
                    let ch = s[i..].chars().next()?;
                    value.push(ch);
                    i += ch.len_utf8();
                }
            }
        }
        out.push((name, value));
        if b.get(i) == Some(&b',') {
            i += 1;
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Stores one round of the registry's samples at `t`.
pub async fn scrape_once(db: &Tsdb, registry: &Registry, instance: &str, t: i64) -> Result<usize, String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).map_err(|e| e.to_string())?;
    let mut app = db.appender();
    let mut n = 0;
    for (name, labels, v) in parse_exposition(&text) {
        let mut l: Labels = labels;
        l.retain(|(k, _)| k != "job" && k != "instance");
        l.push(("__name__".into(), name));
        l.push(("job".into(), "csoc-collector".into()));
        l.push(("instance".into(), instance.to_string()));
        l.sort();
        app.append(Arc::new(l), t, v);
        n += 1;
    }
    app.commit().await.map_err(|e| e.to_string())?;
    Ok(n)
}

/// Runs the self-scrape until `stop`.
pub async fn run(db: Tsdb, registry: Arc<Registry>, instance: String, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = scrape_once(&db, &registry, &instance, now_ms()).await {
            tracing::warn!(error = %e, "storing the collector's own metrics failed");
        }
    }
}

/// Sets each agent's last contact from what storage holds (the last day),
/// so that agents that do not come back after a restart keep their last
/// contact time and still trip an "agent silent" rule.
pub fn seed_last_seen(db: &Tsdb, ingest: &IngestMetrics) -> usize {
    let now = now_ms();
    let q = db.querier(now - 86_400_000, now);
    let Ok(series) = q.select(&[Matcher::equal("__name__", LAST_SEEN)]) else {
        return 0;
    };
    let mut latest: std::collections::HashMap<(String, String), f64> = std::collections::HashMap::new();
    for s in series {
        let get = |k: &str| s.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (Some(c), Some(a)) = (get("commons"), get("agent")) else {
            continue;
        };
        if let Some(v) = s.samples.iter().rev().map(|p| p.1).find(|v| v.is_finite()) {
            let e = latest.entry((c, a)).or_insert(v);
            *e = e.max(v);
        }
    }
    for ((c, a), v) in &latest {
        let l = vec![("commons".to_string(), c.clone()), ("agent".to_string(), a.clone())];
        let g = ingest.agent_last_seen.get_or_create(&l);
        if g.get() < *v {
            g.set(*v);
        }
    }
    latest.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_registrys_text() {
        let text = "# HELP a A.\n# TYPE a gauge\na 1.5\nb_total{x=\"1\",y=\"q\\\"uo\\\\te\\n\"} 3\nc_bucket{le=\"+Inf\"} 2\nd NaN\nbad{x=} 1\n# EOF\n";
        let got = parse_exposition(text);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], ("a".into(), vec![], 1.5));
        assert_eq!(got[1].0, "b_total");
        assert_eq!(got[1].1, vec![("x".into(), "1".into()), ("y".into(), "q\"uo\\te\n".into())]);
        assert_eq!(got[1].2, 3.0);
        assert_eq!(got[2].1, vec![("le".into(), "+Inf".into())]);
        assert!(got[3].2.is_nan());
    }
}
