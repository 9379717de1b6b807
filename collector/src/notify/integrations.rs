//! Delivery shared by the built-in receivers: an [`Integration`] (where one
//! receiver sends) turns a [`Message`] (a group's alerts at one flush) into
//! its backend's payload (built in `webhook.rs`, `slack.rs`, `pagerduty.rs`)
//! and POSTs it.
//!
//! Delivery retries with exponential backoff (1s doubling to 30s) on
//! connection errors, 5xx and 429, until the deadline; other 4xx are not
//! retried. Secrets (Slack URLs, routing keys, tokens) never reach logs.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::alertmanager::without_url;
use super::pagerduty::pagerduty_payload;
use super::slack::slack_payload;
use super::webhook::webhook_payload;
use super::{Alert, NotifyMetrics, ReceiverConfig};
use csoc_common::url::redact_url;

/// Where one receiver sends.
pub struct Integration {
    receiver: String,
    kind: Kind,
    client: reqwest::Client,
    external_url: String,
}

enum Kind {
    Webhook {
        url: String,
        bearer: Option<String>,
        max_alerts: usize,
    },
    Slack {
        url: String,
        channel: Option<String>,
        username: Option<String>,
    },
    PagerDuty {
        url: String,
        routing_key: String,
    },
}

/// One notification: a group's alerts at one flush.
pub struct Message<'a> {
    /// The receiver's name.
    pub receiver: &'a str,
    /// The group's key.
    pub group_key: &'a str,
    /// The group's labels.
    pub group_labels: &'a BTreeMap<String, String>,
    /// Its alerts (firing and, if sent, resolved).
    pub alerts: &'a [Alert],
    /// Now (ms).
    pub now_ms: i64,
}

impl Message<'_> {
    pub(super) fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().filter(|a| !a.resolved(self.now_ms))
    }

    pub(super) fn status(&self) -> &'static str {
        if self.firing().next().is_some() { "firing" } else { "resolved" }
    }

    pub(super) fn common(&self, f: impl Fn(&Alert) -> &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut it = self.alerts.iter();
        let Some(first) = it.next() else {
            return BTreeMap::new();
        };
        let mut common = f(first).clone();
        for a in it {
            let m = f(a);
            common.retain(|k, v| m.get(k) == Some(v));
        }
        common
    }

    /// `[FIRING:2] Name (label values)` as Alertmanager's default title.
    pub(super) fn title(&self) -> String {
        let n = self.firing().count();
        let head = if n > 0 { format!("[FIRING:{n}]") } else { "[RESOLVED]".to_string() };
        let values: Vec<&str> = self.group_labels.values().map(String::as_str).collect();
        format!("{head} {}", values.join(" "))
    }
}

/// Why a delivery attempt failed.
#[derive(Debug)]
pub struct SendError {
    /// Worth retrying (connection error, 5xx, 429).
    pub retryable: bool,
    /// What happened (no secrets).
    pub message: String,
}

impl Integration {
    /// Builds the integration of a (validated) receiver.
    pub fn from_config(cfg: &ReceiverConfig, client: reqwest::Client, external_url: String) -> Self {
        let kind = if let Some(s) = &cfg.slack {
            Kind::Slack {
                url: s.api_url.clone(),
                channel: s.channel.clone(),
                username: s.username.clone(),
            }
        } else if let Some(p) = &cfg.pagerduty {
            Kind::PagerDuty {
                url: p.url.clone(),
                routing_key: p.routing_key.clone(),
            }
        } else {
            let w = cfg.webhook.clone();
            Kind::Webhook {
                url: w.as_ref().map(|w| w.url.clone()).unwrap_or_default(),
                bearer: w.as_ref().and_then(|w| w.bearer_token.clone()),
                max_alerts: w.as_ref().map(|w| w.max_alerts).unwrap_or(0),
            }
        };
        Integration {
            receiver: cfg.name.clone(),
            kind,
            client,
            external_url,
        }
    }

    /// `webhook`, `slack` or `pagerduty`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Webhook { .. } => "webhook",
            Kind::Slack { .. } => "slack",
            Kind::PagerDuty { .. } => "pagerduty",
        }
    }

    /// One delivery attempt.
    pub async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let (url, body, bearer) = match &self.kind {
            Kind::Webhook { url, bearer, max_alerts } => (url, webhook_payload(m, &self.external_url, *max_alerts), bearer.as_ref()),
            Kind::Slack { url, channel, username } => (url, slack_payload(m, channel.as_deref(), username.as_deref()), None),
            Kind::PagerDuty { url, routing_key } => (url, pagerduty_payload(m, routing_key, &self.external_url), None),
        };
        let mut req = self.client.post(url.as_str()).json(&body);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status();
                let text: String = r.text().await.unwrap_or_default().chars().take(200).collect();
                Err(SendError {
                    retryable: status.is_server_error() || status.as_u16() == 429,
                    message: format!("{} answered {status}: {text}", self.safe_url(url)),
                })
            }
            Err(e) => Err(SendError {
                retryable: true,
                message: without_url(&e),
            }),
        }
    }

    fn safe_url(&self, url: &str) -> String {
        match self.kind {
            // The whole Slack URL is the secret.
            Kind::Slack { .. } => "Slack".into(),
            _ => redact_url(url),
        }
    }
}

/// Delivers with retries until success, a non-retryable error, the
/// deadline or shutdown; counts the outcome. Returns whether it arrived.
pub async fn send_with_retries(
    integ: &Integration,
    m: &Message<'_>,
    deadline: Instant,
    metrics: &NotifyMetrics,
    shutdown: &CancellationToken,
) -> bool {
    let labels = vec![
        ("receiver".to_string(), integ.receiver.clone()),
        ("integration".to_string(), integ.name().to_string()),
    ];
    let mut delay = Duration::from_secs(1);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match integ.send(m).await {
            Ok(()) => {
                metrics.sent.get_or_create(&labels).inc();
                tracing::info!(receiver = %integ.receiver, integration = integ.name(), group = %m.group_key, alerts = m.alerts.len(), attempt, "notification sent");
                return true;
            }
            Err(e) => {
                let give_up = !e.retryable || Instant::now() + delay > deadline || shutdown.is_cancelled();
                if give_up {
                    metrics.failed.get_or_create(&labels).inc();
                    tracing::error!(receiver = %integ.receiver, integration = integ.name(), group = %m.group_key, attempt, error = %e.message, "notification failed");
                    return false;
                }
                metrics.retries.get_or_create(&labels).inc();
                tracing::warn!(receiver = %integ.receiver, integration = integ.name(), attempt, error = %e.message, retry_in = ?delay, "notification failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// What the payload tests of every backend build on.
#[cfg(test)]
pub(super) mod fixtures {
    use super::*;

    pub(in crate::notify) fn alert(name: &str, resolved: bool) -> Alert {
        Alert {
            labels: [("alertname", name), ("commons", "a"), ("severity", "critical")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("summary".to_string(), format!("{name} happened"))].into(),
            starts_at: 1_000,
            ends_at: if resolved { 5_000 } else { 100_000 },
            generator_url: "http://c/graph".into(),
        }
    }

    pub(in crate::notify) fn msg<'a>(alerts: &'a [Alert], gl: &'a BTreeMap<String, String>) -> Message<'a> {
        Message {
            receiver: "r",
            group_key: "r:{commons=\"a\"}",
            group_labels: gl,
            alerts,
            now_ms: 10_000,
        }
    }
}
