//! Alertmanager API v2 client: `POST /api/v2/alerts` with a JSON list of
//! alerts. As Prometheus's notifier: each Alertmanager has its own queue
//! (so a slow one delays no other), batches of at most 256 alerts, the
//! oldest alerts dropped (and counted) past 10,000 queued. A failed batch
//! is retried twice with backoff; after that the rules' resend (every
//! `--rules.alert.resend-delay`, before the alert's `endsAt`) covers it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Alert, NotifyMetrics, rfc3339};
use csoc_common::url::redact_url;

const MAX_QUEUE: usize = 10_000;
const MAX_BATCH: usize = 256;

/// The queue and sender of one Alertmanager.
pub struct AmQueue {
    name: String,
    queue: Mutex<VecDeque<Alert>>,
    wake: Notify,
    metrics: NotifyMetrics,
}

/// The alerts endpoint of an Alertmanager given by its base URL (or by the
/// endpoint itself).
pub fn alerts_endpoint(base: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(base).map_err(|e| format!("alertmanager URL {:?}: {e}", redact_url(base)))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("alertmanager URL {:?}: must be http or https", redact_url(base)));
    }
    let s = base.trim_end_matches('/');
    Ok(if s.ends_with("/api/v2/alerts") {
        s.to_string()
    } else {
        format!("{s}/api/v2/alerts")
    })
}

/// The JSON body Alertmanager's API v2 takes.
pub fn body(alerts: &[Alert]) -> serde_json::Value {
    serde_json::Value::Array(
        alerts
            .iter()
            .map(|a| {
                let mut o = json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at),
                    "generatorURL": a.generator_url,
                });
                if a.ends_at != 0 {
                    o["endsAt"] = json!(rfc3339(a.ends_at));
                }
                o
            })
            .collect(),
    )
}

impl AmQueue {
    /// Starts the sender task.
    pub fn start(
        target: &super::am_config::AmTarget,
        metrics: NotifyMetrics,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, super::NotifyError> {
        let endpoint = target.url.clone();
        let client = target
            .client()
            .map_err(|e| super::NotifyError::Alertmanager(format!("{}: {e}", redact_url(&endpoint))))?;
        let q = Arc::new(AmQueue {
            name: redact_url(&endpoint),
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            metrics,
        });
        tokio::spawn(q.clone().run(endpoint, client, shutdown));
        Ok(q)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Alert>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn label(&self) -> Vec<(String, String)> {
        vec![("alertmanager".into(), self.name.clone())]
    }

    /// Queues alerts; drops the oldest past the queue's capacity.
    pub fn push(&self, alerts: &[Alert]) {
        let len = {
            let mut q = self.lock();
            q.extend(alerts.iter().cloned());
            let over = q.len().saturating_sub(MAX_QUEUE);
            if over > 0 {
                q.drain(..over);
                self.metrics.dropped.get_or_create(&self.label()).inc_by(over as u64);
                tracing::warn!(alertmanager = %self.name, dropped = over, "alert queue full; oldest alerts dropped");
            }
            q.len()
        };
        self.metrics.am_queue.get_or_create(&self.label()).set(len as i64);
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>, endpoint: String, client: reqwest::Client, shutdown: CancellationToken) {
        loop {
            let batch: Vec<Alert> = {
                let mut q = self.lock();
                let n = q.len().min(MAX_BATCH);
                q.drain(..n).collect()
            };
            self.metrics.am_queue.get_or_create(&self.label()).set(self.lock().len() as i64);
            if batch.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wake.notified() => continue,
                }
            }
            let payload = body(&batch);
            let mut delay = Duration::from_millis(500);
            let mut ok = false;
            for attempt in 0..3 {
                match client.post(&endpoint).json(&payload).send().await {
                    Ok(r) if r.status().is_success() => {
                        ok = true;
                        break;
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        tracing::warn!(alertmanager = %self.name, %status, body = %text.chars().take(200).collect::<String>(), attempt, "Alertmanager refused alerts");
                        if status.is_client_error() && status.as_u16() != 429 {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(alertmanager = %self.name, error = %without_url(&e), attempt, "sending alerts to Alertmanager failed");
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay *= 4;
            }
            let counter = if ok { &self.metrics.am_sent } else { &self.metrics.am_errors };
            counter.get_or_create(&self.label()).inc_by(batch.len() as u64);
        }
    }
}

/// A reqwest error without its URL (which may hold credentials).
pub fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), &redact_url(u.as_str()));
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(alerts_endpoint("http://am:9093").as_deref(), Ok("http://am:9093/api/v2/alerts"));
        assert_eq!(alerts_endpoint("http://am:9093/").as_deref(), Ok("http://am:9093/api/v2/alerts"));
        assert_eq!(
            alerts_endpoint("https://am/x/api/v2/alerts").as_deref(),
            Ok("https://am/x/api/v2/alerts")
        );
        assert!(alerts_endpoint("am:9093").is_err());
        assert!(alerts_endpoint("ftp://am").is_err());
    }

    #[test]
    fn body_has_alertmanager_fields() {
        let a = Alert {
            labels: [("alertname".to_string(), "X".to_string())].into(),
            annotations: [("summary".to_string(), "s".to_string())].into(),
            starts_at: 1_700_000_000_000,
            ends_at: 1_700_000_060_500,
            generator_url: "http://c/graph".into(),
        };
        let b = body(&[a]);
        assert_eq!(b[0]["labels"]["alertname"], "X");
        assert_eq!(b[0]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(b[0]["endsAt"], "2023-11-14T22:14:20.500Z");
        assert_eq!(b[0]["generatorURL"], "http://c/graph");
    }
}
