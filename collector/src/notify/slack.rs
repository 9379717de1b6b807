//! The Slack receiver: an incoming-webhook message with one attachment per
//! notification (title `[FIRING:2] Name (commons)`, one line per alert).
//! The whole incoming-webhook URL is a secret: it never reaches logs.

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::integrations::Message;

/// A Slack incoming webhook.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming-webhook URL (a secret: never logged).
    pub api_url: String,
    /// Channel override.
    #[serde(default)]
    pub channel: Option<String>,
    /// Username override.
    #[serde(default)]
    pub username: Option<String>,
}

/// A Slack incoming-webhook message.
pub(super) fn slack_payload(m: &Message<'_>, channel: Option<&str>, username: Option<&str>) -> Json {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::notify::integrations::fixtures::{alert, msg};

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
