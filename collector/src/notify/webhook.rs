//! The webhook receiver: Alertmanager's webhook payload (version "4"), so
//! existing webhook receivers work unchanged.

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::integrations::Message;
use super::rfc3339;

/// A webhook receiver (Alertmanager's webhook payload, version 4).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// Optional `Authorization: Bearer` token.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// At most this many alerts per message (0 = all); the rest are
    /// counted in `truncatedAlerts`.
    #[serde(default)]
    pub max_alerts: usize,
}

/// Alertmanager's webhook payload.
pub(super) fn webhook_payload(m: &Message<'_>, external_url: &str, max_alerts: usize) -> Json {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::notify::integrations::fixtures::{alert, msg};

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
}
