//! One loop per target: scrapes at the job's interval (offset by a stable
//! jitter), and turns each result into a frame with staleness markers and the
//! report series (`up`, `scrape_duration_seconds`, ...).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Job;
use super::discovery::Target;
use super::scrape_one::{Scraped, scrape_once};
use crate::model::{Frame, Labels, Sample, set_label};
use crate::sources::SourceContext;

/// Names of the report series.
const REPORT: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Staleness marker value.
fn stale_nan() -> f64 {
    f64::from_bits(csoc_proto::STALE_NAN_BITS)
}

/// Stable offset of a target within its interval (spreads the scrapes).
fn offset(key: u64, interval: Duration) -> Duration {
    let n = interval.as_nanos().max(1) as u64;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    // Mixed with the host name, as Prometheus does, so that two agents
    // scraping one target do not scrape it at the same instant.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    crate::config::hostname().hash(&mut h);
    let want = (key ^ h.finish()) % n;
    Duration::from_nanos((want + n - now % n) % n)
}

/// Scrapes one target until the agent stops (`cx.shutdown`) or the target
/// goes away (`removed`: then everything it reported goes stale).
pub(super) async fn target_loop(job: Arc<Job>, target: Target, cx: SourceContext, removed: CancellationToken) {
    let mut state = LoopState::default();
    tokio::select! {
        _ = cx.shutdown.cancelled() => return,
        _ = removed.cancelled() => return,
        _ = tokio::time::sleep(offset(target.key(), job.interval)) => {}
    }
    let mut tick = tokio::time::interval(job.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            _ = removed.cancelled() => {
                let frame = state.target_gone(&target, csoc_common::time::now_ms(), &cx.name);
                let _ = cx.emit(frame).await;
                return;
            }
            _ = tick.tick() => {}
        }
        let ts = csoc_common::time::now_ms();
        let started = Instant::now();
        let res = tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            r = scrape_once(&job, &target, ts) => r,
        };
        let took = started.elapsed();
        if let Err(e) = &res {
            tracing::debug!(source = %cx.name, job = %job.cfg.job_name, error = %e, "scrape failed");
            cx.error(if e.contains("sample_limit") { "sample_limit" } else { "scrape" });
        }
        let frame = state.after_scrape(&target, ts, took, res, &cx.name);
        if !cx.emit(frame).await {
            return;
        }
    }
}

/// What a target loop remembers between scrapes (for staleness).
#[derive(Default)]
pub(super) struct LoopState {
    /// Series of the last successful scrape, by label hash.
    prev: HashMap<u64, Labels>,
    reported: bool,
}

impl LoopState {
    /// The frame of one scrape at `ts`: its samples, staleness markers for
    /// series gone since the last one, and the report series.
    pub(super) fn after_scrape(&mut self, target: &Target, ts: i64, took: Duration, res: Result<Scraped, String>, source: &str) -> Frame {
        let mut f = Frame::new(source);
        let (up, scraped, post, added) = match res {
            Ok(s) => {
                // Labels are cloned only for series new since the last scrape.
                let mut cur = HashMap::with_capacity(s.samples.len());
                let mut added = 0usize;
                for (smp, h) in s.samples.iter().zip(&s.tracked) {
                    let Some(h) = *h else { continue };
                    let labels = match self.prev.remove(&h) {
                        Some(l) => l,
                        None => {
                            added += 1;
                            smp.labels.clone()
                        }
                    };
                    cur.insert(h, labels);
                }
                let post = s.samples.len();
                f.samples = s.samples;
                f.metadata = s.metadata;
                for (_, gone) in self.prev.drain() {
                    f.samples.push(Sample {
                        labels: gone,
                        timestamp_ms: ts,
                        value: stale_nan(),
                    });
                }
                self.prev = cur;
                (1.0, s.scraped, post, added)
            }
            Err(_) => {
                for (_, gone) in self.prev.drain() {
                    f.samples.push(Sample {
                        labels: gone,
                        timestamp_ms: ts,
                        value: stale_nan(),
                    });
                }
                (0.0, 0, 0, 0)
            }
        };
        let values = [up, took.as_secs_f64(), scraped as f64, post as f64, added as f64];
        for (name, v) in REPORT.iter().zip(values) {
            f.samples.push(report_sample(target, name, ts, v));
        }
        self.reported = true;
        f
    }

    /// Staleness markers for everything the target reported (it is gone).
    pub(super) fn target_gone(&mut self, target: &Target, ts: i64, source: &str) -> Frame {
        let mut f = Frame::new(source);
        for (_, gone) in self.prev.drain() {
            f.samples.push(Sample {
                labels: gone,
                timestamp_ms: ts,
                value: stale_nan(),
            });
        }
        if self.reported {
            for name in REPORT {
                f.samples.push(report_sample(target, name, ts, stale_nan()));
            }
        }
        f
    }
}

fn report_sample(target: &Target, name: &str, ts: i64, value: f64) -> Sample {
    let mut labels = target.labels.clone();
    set_label(&mut labels, "__name__", name);
    Sample {
        labels,
        timestamp_ms: ts,
        value,
    }
}
