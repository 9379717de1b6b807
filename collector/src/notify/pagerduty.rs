//! The PagerDuty receiver: Events API v2 `trigger` while anything fires and
//! `resolve` when all resolved, with a dedup key stable for the group, so
//! PagerDuty folds repeats into one incident. The routing key is a secret:
//! it never reaches logs.

use serde::Deserialize;
use serde_json::{Value as Json, json};
use sha2::Digest;

use super::integrations::Message;
use super::rfc3339;

/// PagerDuty Events API v2.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration's routing key (a secret: never logged).
    pub routing_key: String,
    /// Events API endpoint (default https://events.pagerduty.com/v2/enqueue).
    #[serde(default = "default_pd_url")]
    pub url: String,
}

fn default_pd_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

/// The PagerDuty dedup key of a group: stable across notifications and
/// restarts.
fn pagerduty_dedup_key(receiver: &str, group_key: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("{receiver}\u{0}{group_key}").as_bytes()))
}

/// A PagerDuty Events API v2 event.
pub(super) fn pagerduty_payload(m: &Message<'_>, routing_key: &str, external_url: &str) -> Json {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::notify::integrations::fixtures::{alert, msg};

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
}
