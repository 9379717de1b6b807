//! Grouping and timing of the built-in receivers, with Alertmanager's
//! semantics:
//! - an alert matching the receiver's matchers joins the group of its
//!   `group_by` labels;
//! - a new group is flushed after `group_wait`, then checked every
//!   `group_interval`;
//! - a flush notifies when an alert started firing since the last
//!   notification, when one resolved (if the receiver sends resolutions) or
//!   when the last notification is older than `repeat_interval`
//!   (Alertmanager's dedup stage); otherwise it sends nothing;
//! - what was last sent per group (the notification log) is kept in a file,
//!   so a restart does not page again for what was already paged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::integrations::{self, Integration, Message};
use super::{Alert, NotifyMetrics, ReceiverConfig, now_ms};
use crate::tsdb::Matcher;

/// Parses PromQL-style label matchers (`severity="critical"`,
/// `commons=~"prod-.*"`, `team!="x"`).
pub fn parse_matchers(ms: &[String]) -> Result<Vec<Matcher>, String> {
    if ms.is_empty() {
        return Ok(Vec::new());
    }
    let text = format!("{{{}}}", ms.join(","));
    let expr = crate::promql::guard::parse(&text).map_err(|e| format!("matchers {ms:?}: {e}"))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!("matchers {ms:?}: not label matchers"));
    };
    let sets = crate::promql::matchers_of(&vs).map_err(|e| format!("matchers {ms:?}: {e}"))?;
    match sets.into_iter().next() {
        Some(set) => Ok(set),
        None => Ok(Vec::new()),
    }
}

/// One entry of the notification log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    /// Fingerprints of the alerts firing at the last notification.
    pub firing: BTreeSet<String>,
    /// Fingerprints of the alerts resolved at the last notification.
    pub resolved: BTreeSet<String>,
    /// When it was sent (ms).
    pub at: i64,
}

/// What every receiver last sent for each group, saved in a file.
pub struct NotificationLog {
    path: PathBuf,
    entries: Mutex<HashMap<String, LogEntry>>,
}

/// Entries older than this are forgotten (Alertmanager keeps 120h).
const LOG_RETENTION_MS: i64 = 120 * 3600 * 1000;

impl NotificationLog {
    /// Reads the log file (missing or unreadable: empty, with a warning).
    pub fn open(path: PathBuf) -> Self {
        let entries = match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str::<HashMap<String, LogEntry>>(&t).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "cannot parse the notification log; starting empty");
                HashMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the notification log; starting empty");
                HashMap::new()
            }
        };
        NotificationLog {
            path,
            entries: Mutex::new(entries),
        }
    }

    /// A log kept in memory only (a notifier without receivers).
    pub fn in_memory() -> Self {
        NotificationLog {
            path: PathBuf::new(),
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LogEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of a receiver's group.
    pub fn get(&self, key: &str) -> Option<LogEntry> {
        self.lock().get(key).cloned()
    }

    /// Records a notification and saves the log.
    ///
    /// The file is written while the entries stay locked: receivers flush
    /// concurrently, and two saves of different snapshots racing on the
    /// one temp file could leave an older snapshot (missing the other
    /// receivers' entries) as the file, so a restart would page again.
    pub fn put(&self, key: String, e: LogEntry) {
        let mut m = self.lock();
        let now = now_ms();
        m.retain(|_, v| now - v.at < LOG_RETENTION_MS);
        m.insert(key, e);
        if self.path.as_os_str().is_empty() {
            return;
        }
        let res = serde_json::to_vec(&*m).map_err(std::io::Error::other).and_then(|b| {
            let tmp = self.path.with_extension("json.tmp");
            std::fs::write(&tmp, b)?;
            std::fs::rename(&tmp, &self.path)
        });
        drop(m);
        if let Err(e) = res {
            tracing::error!(path = %self.path.display(), error = %e, "saving the notification log failed");
        }
    }
}

/// Alertmanager's dedup decision.
pub fn needs_update(
    entry: Option<&LogEntry>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    send_resolved: bool,
    repeat_ms: i64,
    now: i64,
) -> bool {
    let Some(e) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&e.firing) {
        return true;
    }
    if firing.is_empty() {
        return !e.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&e.resolved) {
        return true;
    }
    e.at + repeat_ms <= now
}

struct AggrGroup {
    labels: BTreeMap<String, String>,
    alerts: BTreeMap<String, Alert>,
    next_flush: Instant,
}

/// A running receiver.
pub struct ReceiverHandle {
    name: String,
    matchers: Vec<Matcher>,
    tx: mpsc::Sender<Vec<Alert>>,
    metrics: NotifyMetrics,
}

impl ReceiverHandle {
    /// Starts the receiver's task.
    pub fn start(
        cfg: ReceiverConfig,
        client: reqwest::Client,
        external_url: String,
        log: Arc<NotificationLog>,
        muter: Arc<super::inhibit::Muter>,
        metrics: NotifyMetrics,
        shutdown: CancellationToken,
    ) -> Result<Self, super::NotifyError> {
        let matchers = parse_matchers(&cfg.matchers).map_err(super::NotifyError::Receiver)?;
        let (tx, rx) = mpsc::channel(1024);
        let integration = Integration::from_config(&cfg, client, external_url);
        let name = cfg.name.clone();
        let worker = Worker {
            cfg,
            integration,
            log,
            muter,
            metrics: metrics.clone(),
            groups: BTreeMap::new(),
        };
        tokio::spawn(worker.run(rx, shutdown));
        Ok(ReceiverHandle {
            name,
            matchers,
            tx,
            metrics,
        })
    }

    /// Hands over the alerts this receiver matches; never blocks (a full
    /// queue drops and counts).
    pub fn push(&self, alerts: &[Alert]) {
        let mine: Vec<Alert> = alerts
            .iter()
            .filter(|a| {
                let l: Vec<(String, String)> = a.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                self.matchers.iter().all(|m| m.matches(&l))
            })
            .cloned()
            .collect();
        if mine.is_empty() {
            return;
        }
        let n = mine.len() as u64;
        if self.tx.try_send(mine).is_err() {
            self.metrics
                .dropped
                .get_or_create(&vec![("receiver".into(), self.name.clone())])
                .inc_by(n);
            tracing::warn!(receiver = %self.name, alerts = n, "receiver queue full; alerts dropped");
        }
    }
}

struct Worker {
    cfg: ReceiverConfig,
    integration: Integration,
    log: Arc<NotificationLog>,
    muter: Arc<super::inhibit::Muter>,
    metrics: NotifyMetrics,
    groups: BTreeMap<String, AggrGroup>,
}

/// The labels an alert is grouped by.
pub fn group_labels(group_by: &[String], labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    if group_by.iter().any(|g| g == "...") {
        return labels.clone();
    }
    group_by
        .iter()
        .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
        .collect()
}

/// Alertmanager-style group key: `{}:{a="x", b="y"}` prefixed by the receiver.
pub fn group_key(receiver: &str, labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{receiver}:{{{}}}", inner.join(", "))
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Vec<Alert>>, shutdown: CancellationToken) {
        loop {
            let next = self.groups.values().map(|g| g.next_flush).min();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                batch = rx.recv() => match batch {
                    Some(alerts) => self.add(alerts),
                    None => return,
                },
                _ = sleep => self.flush_due(&shutdown).await,
            }
        }
    }

    fn add(&mut self, alerts: Vec<Alert>) {
        let now = Instant::now();
        for a in alerts {
            let labels = group_labels(&self.cfg.group_by, &a.labels);
            let key = group_key(&self.cfg.name, &labels);
            let g = self.groups.entry(key).or_insert_with(|| AggrGroup {
                labels,
                alerts: BTreeMap::new(),
                next_flush: now + self.cfg.group_wait,
            });
            g.alerts.insert(a.fingerprint(), a);
        }
    }

    async fn flush_due(&mut self, shutdown: &CancellationToken) {
        let now = Instant::now();
        let due: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.flush(&key, shutdown).await;
        }
    }

    async fn flush(&mut self, key: &str, shutdown: &CancellationToken) {
        let Some(g) = self.groups.get_mut(key) else {
            return;
        };
        g.next_flush = Instant::now() + self.cfg.group_interval;
        let now = now_ms();
        let all: Vec<Alert> = g.alerts.values().cloned().collect();
        let group_labels = g.labels.clone();
        // The mute stage: silenced and inhibited alerts are not notified;
        // with all of them muted, nothing is sent and nothing is logged.
        let status = self.muter.status_of(&all, now);
        let snapshot: Vec<Alert> = all.into_iter().zip(status).filter(|(_, s)| !s.muted()).map(|(a, _)| a).collect();
        if snapshot.is_empty() {
            return;
        }
        let firing: BTreeSet<String> = snapshot.iter().filter(|a| !a.resolved(now)).map(Alert::fingerprint).collect();
        let resolved: BTreeSet<String> = snapshot.iter().filter(|a| a.resolved(now)).map(Alert::fingerprint).collect();
        let send_resolved = self.cfg.sends_resolved();
        let entry = self.log.get(key);
        let mut delivered = true;
        if needs_update(
            entry.as_ref(),
            &firing,
            &resolved,
            send_resolved,
            self.cfg.repeat_interval.as_millis() as i64,
            now,
        ) {
            let alerts: Vec<Alert> = snapshot.iter().filter(|a| send_resolved || !a.resolved(now)).cloned().collect();
            if !alerts.is_empty() {
                let msg = Message {
                    receiver: &self.cfg.name,
                    group_key: key,
                    group_labels: &group_labels,
                    alerts: &alerts,
                    now_ms: now,
                };
                // Retries stop before the group's next check.
                let deadline = Instant::now() + self.cfg.group_interval.min(Duration::from_secs(120));
                delivered = integrations::send_with_retries(&self.integration, &msg, deadline, &self.metrics, shutdown).await;
            }
            if delivered {
                self.log.put(
                    key.to_string(),
                    LogEntry {
                        firing: firing.clone(),
                        resolved: resolved.clone(),
                        at: now,
                    },
                );
            }
        }
        // Resolved alerts that were notified (or need not be) leave the
        // group; an empty group is dropped.
        if delivered && let Some(g) = self.groups.get_mut(key) {
            g.alerts.retain(|fp, a| !(resolved.contains(fp) && a.resolved(now)));
            if g.alerts.is_empty() {
                self.groups.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(xs: &[&str]) -> BTreeSet<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dedup_follows_alertmanager() {
        let e = LogEntry {
            firing: set(&["a"]),
            resolved: set(&[]),
            at: 1000,
        };
        let repeat = 10_000;
        // First notification only with something firing.
        assert!(needs_update(None, &set(&["a"]), &set(&[]), true, repeat, 0));
        assert!(!needs_update(None, &set(&[]), &set(&["a"]), true, repeat, 0));
        // Same firing set: only after repeat_interval.
        assert!(!needs_update(Some(&e), &set(&["a"]), &set(&[]), true, repeat, 2000));
        assert!(needs_update(Some(&e), &set(&["a"]), &set(&[]), true, repeat, 11_000));
        // A new firing alert.
        assert!(needs_update(Some(&e), &set(&["a", "b"]), &set(&[]), true, repeat, 2000));
        // All resolved: notify (clears the log) regardless of send_resolved.
        assert!(needs_update(Some(&e), &set(&[]), &set(&["a"]), false, repeat, 2000));
        // One of two resolved: only with send_resolved.
        let e2 = LogEntry {
            firing: set(&["a", "b"]),
            ..e.clone()
        };
        assert!(needs_update(Some(&e2), &set(&["a"]), &set(&["b"]), true, repeat, 2000));
        assert!(!needs_update(Some(&e2), &set(&["a"]), &set(&["b"]), false, repeat, 2000));
    }

    #[test]
    fn matchers_and_groups() {
        let m = parse_matchers(&["severity=\"critical\"".into(), "commons=~\"prod-.*\"".into()]).expect("valid");
        let l = |c: &str| {
            vec![
                ("commons".to_string(), c.to_string()),
                ("severity".to_string(), "critical".to_string()),
            ]
        };
        assert!(m.iter().all(|x| x.matches(&l("prod-a"))));
        assert!(!m.iter().all(|x| x.matches(&l("test-a"))));
        assert!(parse_matchers(&["severity=".into()]).is_err());
        let labels: BTreeMap<String, String> = [("alertname", "X"), ("commons", "a"), ("service", "fence")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let g = group_labels(&["alertname".into(), "commons".into(), "nosuch".into()], &labels);
        assert_eq!(group_key("r", &g), "r:{alertname=\"X\", commons=\"a\"}");
        assert_eq!(group_labels(&["...".into()], &labels), labels);
    }

    #[test]
    fn the_log_survives_a_reopen() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("n.json");
        let log = NotificationLog::open(p.clone());
        let e = LogEntry {
            firing: set(&["a"]),
            resolved: set(&[]),
            at: now_ms(),
        };
        log.put("k".into(), e.clone());
        assert_eq!(NotificationLog::open(p).get("k"), Some(e));
    }

    /// Receivers flush at the same moment: the file keeps every one's
    /// entry (CI once restarted between two racing saves and paged again).
    #[test]
    fn concurrent_puts_all_reach_the_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("n.json");
        for round in 0..20 {
            let _ = std::fs::remove_file(&p);
            let log = Arc::new(NotificationLog::open(p.clone()));
            let threads: Vec<_> = (0..8)
                .map(|i| {
                    let log = log.clone();
                    std::thread::spawn(move || {
                        let e = LogEntry {
                            firing: set(&["a"]),
                            resolved: set(&[]),
                            at: now_ms(),
                        };
                        log.put(format!("receiver-{i}"), e);
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("thread");
            }
            let reopened = NotificationLog::open(p.clone());
            for i in 0..8 {
                assert!(
                    reopened.get(&format!("receiver-{i}")).is_some(),
                    "round {round}: receiver-{i} missing"
                );
            }
        }
    }
}
