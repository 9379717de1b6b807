//! The receivers' wire formats and delivery:
//! - webhook: Alertmanager's webhook payload (version "4"), so existing
//!   webhook receivers work unchanged;
//! - Slack: an incoming-webhook message with one attachment per
//!   notification (title `[FIRING:2] Name (commons)`, one line per alert);
//! - PagerDuty: Events API v2 `trigger` while anything fires and `resolve`
//!   when all resolved, with a dedup key stable for the group, so
//!   PagerDuty folds repeats into one incident.
//!
//! Delivery retries with exponential backoff (1s doubling to 30s) on
//! connection errors, 5xx and 429, until the deadline; other 4xx are not
//! retried. Secrets (Slack URLs, routing keys, tokens) never reach logs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value as Json, json};
use sha2::Digest;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::alertmanager::without_url;
use super::{Alert, NotifyMetrics, ReceiverConfig, rfc3339};
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
    fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().filter(|a| !a.resolved(self.now_ms))
    }

    fn status(&self) -> &'static str {
        if self.firing().next().is_some() { "firing" } else { "resolved" }
    }

    fn common(&self, f: impl Fn(&Alert) -> &BTreeMap<String, String>) -> BTreeMap<String, String> {
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
    fn title(&self) -> String {
        let n = self.firing().count();
        let head = if n > 0 { format!("[FIRING:{n}]") } else { "[RESOLVED]".to_string() };
        let values: Vec<&str> = self.group_labels.values().map(String::as_str).collect();
        format!("{head} {}", values.join(" "))
    }
}

/// Alertmanager's webhook payload.
pub fn webhook_payload(m: &Message<'_>, external_url: &str, max_alerts: usize) -> Json {
    let take = if max_alerts == 0 {
        m.alerts.len()
    } else {
        max_alerts.min(m.alerts.len())
    };
    let alerts: Vec<Json> = m.alerts[..take]
        .iter()
        .map(|a| {
            let resolved = a.resolved(m.now_ms);
            json!({
                "status": if resolved { "resolved" } else { "firing" },
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "endsAt": if resolved { rfc3339(a.ends_at) } else { "0001-01-01T00:00:00Z".to_string() },
                "generatorURL": a.generator_url,
                "fingerprint": a.fingerprint(),
            })
        })
        .collect();
    json!({
        "receiver": m.receiver,
        "status": m.status(),
        "alerts": alerts,
        "groupLabels": m.group_labels,
        "commonLabels": m.common(|a| &a.labels),
        "commonAnnotations": m.common(|a| &a.annotations),
        "externalURL": external_url,
        "version": "4",
        "groupKey": m.group_key,
        "truncatedAlerts": m.alerts.len() - take,
    })
}

/// A Slack incoming-webhook message.
pub fn slack_payload(m: &Message<'_>, channel: Option<&str>, username: Option<&str>) -> Json {
    let mut lines = Vec::new();
    for a in m.alerts {
        let state = if a.resolved(m.now_ms) { "resolved" } else { "firing" };
        let summary = a
            .annotations
            .get("summary")
            .cloned()
            .unwrap_or_else(|| a.labels.get("alertname").cloned().unwrap_or_default());
        let mut line = format!("• *{summary}* ({state})");
        if let Some(d) = a.annotations.get("description") {
            line.push_str(&format!("\n  {d}"));
        }
        if let Some(r) = a.annotations.get("runbook_url") {
            line.push_str(&format!("\n  runbook: {r}"));
        }
        lines.push(line);
    }
    let title = m.title();
    let mut body = json!({
        "text": title,
        "attachments": [{
            "color": if m.status() == "firing" { "danger" } else { "good" },
            "title": title,
            "fallback": title,
            "text": lines.join("\n"),
            "mrkdwn_in": ["text"],
        }],
    });
    if let Some(c) = channel {
        body["channel"] = json!(c);
    }
    if let Some(u) = username {
        body["username"] = json!(u);
    }
    body
}

/// The PagerDuty dedup key of a group: stable across notifications and
/// restarts.
pub fn pagerduty_dedup_key(receiver: &str, group_key: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("{receiver}\u{0}{group_key}").as_bytes()))
}

/// A PagerDuty Events API v2 event.
pub fn pagerduty_payload(m: &Message<'_>, routing_key: &str, external_url: &str) -> Json {
    let firing = m.status() == "firing";
    let severity = m
        .common(|a| &a.labels)
        .get("severity")
        .map(|s| s.to_lowercase())
        .filter(|s| ["critical", "error", "warning", "info"].contains(&s.as_str()))
        .unwrap_or_else(|| "error".into());
    let mut summary = m.title();
    if let Some(s) = m.common(|a| &a.annotations).get("summary") {
        summary = format!("{summary}: {s}");
    }
    if summary.len() > 1024 {
        let mut cut = 1021;
        while !summary.is_char_boundary(cut) {
            cut -= 1;
        }
        summary.truncate(cut);
        summary.push_str("...");
    }
    let details: Vec<Json> = m
        .alerts
        .iter()
        .map(|a| json!({"labels": a.labels, "annotations": a.annotations, "startsAt": rfc3339(a.starts_at)}))
        .collect();
    let mut ev = json!({
        "routing_key": routing_key,
        "event_action": if firing { "trigger" } else { "resolve" },
        "dedup_key": pagerduty_dedup_key(m.receiver, m.group_key),
        "client": "csoc-watch",
        "client_url": external_url,
    });
    if firing {
        ev["payload"] = json!({
            "summary": summary,
            "source": m.group_labels.get("commons").cloned().unwrap_or_else(|| "csoc-watch".into()),
            "severity": severity,
            "custom_details": {
                "num_firing": m.firing().count(),
                "num_resolved": m.alerts.len() - m.firing().count(),
                "alerts": details,
            },
        });
    }
    ev
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

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, resolved: bool) -> Alert {
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

    fn msg<'a>(alerts: &'a [Alert], gl: &'a BTreeMap<String, String>) -> Message<'a> {
        Message {
            receiver: "r",
            group_key: "r:{commons=\"a\"}",
            group_labels: gl,
            alerts,
            now_ms: 10_000,
        }
    }

    #[test]
    fn webhook_payload_has_alertmanagers_shape() {
        let gl: BTreeMap<String, String> = [("commons".to_string(), "a".to_string())].into();
        let alerts = [alert("X", false), alert("Y", true)];
        let p = webhook_payload(&msg(&alerts, &gl), "http://csoc", 1);
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["receiver"], "r");
        assert_eq!(p["groupKey"], "r:{commons=\"a\"}");
        assert_eq!(p["truncatedAlerts"], 1);
        assert_eq!(p["alerts"].as_array().map(Vec::len), Some(1));
        assert_eq!(p["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(p["commonLabels"]["severity"], "critical");
        assert!(p["commonLabels"].get("alertname").is_none(), "alertname differs");
        let resolved = [alert("Y", true)];
        let p = webhook_payload(&msg(&resolved, &gl), "http://csoc", 0);
        assert_eq!(p["status"], "resolved");
        assert_eq!(p["alerts"][0]["status"], "resolved");
        assert_eq!(p["alerts"][0]["endsAt"], "1970-01-01T00:00:05.000Z");
    }

    #[test]
    fn pagerduty_triggers_then_resolves_with_one_key() {
        let gl: BTreeMap<String, String> = [("commons".to_string(), "a".to_string())].into();
        let firing = [alert("X", false)];
        let p = pagerduty_payload(&msg(&firing, &gl), "key", "http://csoc");
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["payload"]["severity"], "critical");
        assert_eq!(p["payload"]["source"], "a");
        assert!(
            p["payload"]["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("[FIRING:1] a: X happened"))
        );
        let resolved = [alert("X", true)];
        let q = pagerduty_payload(&msg(&resolved, &gl), "key", "http://csoc");
        assert_eq!(q["event_action"], "resolve");
        assert_eq!(p["dedup_key"], q["dedup_key"]);
        assert!(q.get("payload").is_none());
    }

    #[test]
    fn slack_message_lists_alerts() {
        let gl: BTreeMap<String, String> = [("alertname".to_string(), "X".to_string())].into();
        let alerts = [alert("X", false)];
        let p = slack_payload(&msg(&alerts, &gl), Some("#oncall"), None);
        assert_eq!(p["channel"], "#oncall");
        assert_eq!(p["attachments"][0]["title"], "[FIRING:1] X");
        assert_eq!(p["attachments"][0]["color"], "danger");
        assert!(p["attachments"][0]["text"].as_str().is_some_and(|t| t.contains("X happened")));
    }
}
