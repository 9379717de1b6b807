//! The alert model between the rules, which produce alerts, and the
//! notifiers, which send them: the [`Alert`] as it leaves the rule manager,
//! its fingerprint, and the [`AlertSink`] the rule manager is given.
//! `rules` and `notify` both depend on this module and never on each other,
//! so that rule evaluation does not know how (or whether) alerts go out
//! (Prometheus's `rules.ManagerOptions.NotifyFunc`).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// An alert as notifiers see it. Times are ms since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Labels (external labels included).
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing.
    pub starts_at: i64,
    /// When it resolved, or until when it is valid if still firing.
    pub ends_at: i64,
    /// Link to the expression.
    pub generator_url: String,
}

impl Alert {
    /// Resolved at `now_ms`.
    pub fn resolved(&self, now_ms: i64) -> bool {
        self.ends_at != 0 && self.ends_at <= now_ms
    }

    /// Stable fingerprint of the labels.
    pub fn fingerprint(&self) -> String {
        let labels: Vec<(String, String)> = self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        fingerprint(&labels)
    }
}

/// FNV-1a, 64 bit: stable across runs and versions (fingerprints, offsets).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A label set's fingerprint (hex), as sent in notifications.
pub fn fingerprint(labels: &[(String, String)]) -> String {
    let mut buf = Vec::new();
    for (k, v) in labels {
        buf.extend_from_slice(k.as_bytes());
        buf.push(0xff);
        buf.extend_from_slice(v.as_bytes());
        buf.push(0xff);
    }
    format!("{:016x}", fnv1a(&buf))
}

/// Where the rule manager hands the alerts of each evaluation: the
/// notifier in the collector, a [`RecordingSink`] in tests. `send` is
/// called from the evaluation thread and must not block.
pub trait AlertSink: Send + Sync {
    /// Takes the alerts to send (firing, or resolved with `ends_at` set).
    fn send(&self, alerts: Vec<Alert>);
}

/// A sink that sends nowhere (no Alertmanager and no receiver).
pub struct NoSink;

impl AlertSink for NoSink {
    fn send(&self, _: Vec<Alert>) {}
}

/// A sink that keeps what it was given, for tests.
#[derive(Default)]
pub struct RecordingSink {
    sent: Mutex<Vec<Vec<Alert>>>,
}

impl RecordingSink {
    /// Every batch sent so far, in order, and forgets them.
    pub fn take(&self) -> Vec<Vec<Alert>> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl AlertSink for RecordingSink {
    fn send(&self, alerts: Vec<Alert>) {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).push(alerts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_separates_names_from_values() {
        let l = |p: &[(&str, &str)]| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let a = fingerprint(&l(&[("alertname", "Down"), ("job", "fence")]));
        assert_eq!(a, fingerprint(&l(&[("alertname", "Down"), ("job", "fence")])));
        assert_eq!(a.len(), 16);
        assert_ne!(a, fingerprint(&l(&[("alertname", "Downjob"), ("", "fence")])));
        // FNV-1a 64 of the empty input is its offset basis.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
