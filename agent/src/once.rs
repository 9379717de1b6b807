//! `csoc-agent --once --print`: one round of every enabled source, stamped
//! by the pipeline (external labels, default `instance`) exactly as they
//! would be sent, printed to stdout in the Prometheus text exposition format
//! 0.0.4 — no collector connection, no spool. For operators debugging a
//! configuration.
//!
//! Output: families sorted by name, each with `# HELP` and `# TYPE` when the
//! source declared its metadata (`untyped` otherwise), series sorted by
//! label set, label values and HELP text escaped as the format says, each
//! sample with its timestamp in milliseconds.
//!
//! Exit status: 0 when every source completed its round, even if it found
//! services down (that is data: `gen3_service_up 0`). 1 when a source failed
//! entirely: no round within the time limit, or a round without a single
//! sample (e.g. every gen3_usage endpoint unavailable); what was collected
//! is still printed and stderr names the source. Logs (with each failed
//! endpoint or probe) go to stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::metrics::AgentMetrics;
use crate::model::{Frame, Metadata, MetricKind};
use crate::pipeline::Pipeline;
use crate::sources::SourceContext;

/// What one round of every source gave.
pub struct OnceResult {
    /// The stamped frames, one per source that completed its round.
    pub frames: Vec<Frame>,
    /// One line per source that failed entirely.
    pub failures: Vec<String>,
}

/// The time limit of the round: enough for the slowest source's requests
/// (twice its timeout) and a margin.
fn deadline(cfg: &AgentConfig) -> Duration {
    let status = crate::sources::gen3_status::effective_timeout(
        cfg.sources.gen3_status.timeout,
        cfg.sources.gen3_status.interval.unwrap_or(cfg.interval),
    );
    let usage = cfg.sources.gen3_usage.effective_timeout();
    status.max(usage) * 2 + Duration::from_secs(10)
}

/// Runs one round of every enabled source of `cfg` and stamps the frames.
pub async fn collect_once(cfg: &AgentConfig) -> anyhow::Result<OnceResult> {
    cfg.validate()?;
    let sources = crate::build_sources(cfg)?;
    let agent_name = cfg.agent_name.clone().unwrap_or_else(crate::config::hostname);
    let pipeline = Pipeline::new(cfg, &agent_name);
    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = AgentMetrics::new(&mut reg);
    let limit = deadline(cfg);
    let mut tasks = Vec::new();
    for (name, src) in sources {
        let (tx, mut rx) = mpsc::channel::<Frame>(4);
        let stop = CancellationToken::new();
        let cx = SourceContext {
            name: name.clone(),
            shutdown: stop.clone(),
            out: tx,
            interval: cfg.interval,
            metrics: metrics.source.clone(),
        };
        let run = tokio::spawn(src.run(cx));
        tasks.push(async move {
            let first = tokio::time::timeout(limit, rx.recv()).await;
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
            (name, first)
        });
    }
    let mut out = OnceResult {
        frames: Vec::new(),
        failures: Vec::new(),
    };
    let results = csoc_common::task::join_all(tasks).await.into_iter().flatten();
    for (name, first) in results {
        match first {
            Ok(Some(mut f)) => {
                if f.samples.is_empty() {
                    out.failures
                        .push(format!("source {name}: no sample in its round (see the log above)"));
                }
                pipeline.stamp(&mut f);
                out.frames.push(f);
            }
            Ok(None) => out.failures.push(format!("source {name}: stopped without a round")),
            Err(_) => out.failures.push(format!("source {name}: no round within {limit:?}")),
        }
    }
    Ok(out)
}

/// Escapes HELP text (`\`, newline).
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The series of one family: label pairs (without `__name__`) → (value, ms).
type Family<'a> = BTreeMap<Vec<(&'a str, &'a str)>, (f64, i64)>;

/// The frames in the Prometheus text exposition format 0.0.4.
pub fn exposition(frames: &[Frame]) -> String {
    let mut meta: BTreeMap<&str, &Metadata> = BTreeMap::new();
    for f in frames {
        for m in &f.metadata {
            meta.entry(m.name.as_str()).or_insert(m);
        }
    }
    // name → (label pairs without __name__ → (value, ts)); the last sample of a series wins.
    let mut fams: BTreeMap<&str, Family<'_>> = BTreeMap::new();
    for f in frames {
        for s in &f.samples {
            let name = s.labels.iter().find(|(k, _)| k == "__name__").map_or("", |(_, v)| v.as_str());
            let labels: Vec<(&str, &str)> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "__name__")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            fams.entry(name).or_default().insert(labels, (s.value, s.timestamp_ms));
        }
    }
    let mut out = String::new();
    for (name, series) in fams {
        if name.is_empty() {
            continue;
        }
        match meta.get(name) {
            Some(m) => {
                if !m.help.is_empty() {
                    let _ = writeln!(out, "# HELP {name} {}", escape_help(&m.help));
                }
                let t = match m.kind {
                    MetricKind::Counter => "counter",
                    MetricKind::Gauge => "gauge",
                    MetricKind::Histogram => "histogram",
                    MetricKind::Summary => "summary",
                    // Not in the 0.0.4 text format.
                    MetricKind::GaugeHistogram | MetricKind::Info | MetricKind::StateSet | MetricKind::Unknown => "untyped",
                };
                let _ = writeln!(out, "# TYPE {name} {t}");
            }
            None => {
                let _ = writeln!(out, "# TYPE {name} untyped");
            }
        }
        for (labels, (v, ts)) in series {
            out.push_str(name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, lv)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    csoc_common::exposition::escape_label_value(lv, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            let _ = writeln!(out, " {} {ts}", csoc_common::gofmt::format_f(v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_sorted_escaped_with_metadata() {
        let mut f = Frame::new("t");
        f.meta("b_total", MetricKind::Counter, "Line one\nback\\slash", "");
        f.push("b_total", &[("z", "1")], 5, 2.0);
        f.push("a", &[("v", "quote\" nl\n bs\\")], 7, f64::NAN);
        f.push("b_total", &[("y", "1")], 5, 0.5);
        let p = Pipeline {
            external_labels: vec![("environment".into(), "prod".into())],
            instance: "agent-1".into(),
            relabel: Vec::new(),
        };
        p.stamp(&mut f);
        let text = exposition(&[f]);
        let want = "# TYPE a untyped\n\
a{environment=\"prod\",instance=\"agent-1\",v=\"quote\\\" nl\\n bs\\\\\"} NaN 7\n\
# HELP b_total Line one\\nback\\\\slash\n\
# TYPE b_total counter\n\
b_total{environment=\"prod\",instance=\"agent-1\",y=\"1\"} 0.5 5\n\
b_total{environment=\"prod\",instance=\"agent-1\",z=\"1\"} 2 5\n";
        assert_eq!(text, want);
    }
}
