//! Notifications: alerts handed to the [`Notifier`] (an [`AlertSink`]) go to
//! - Alertmanagers (`--alertmanager URL`, repeatable), through the API v2,
//!   each with its own queue (Prometheus's notifier: batches of up to 256,
//!   oldest dropped past 10,000 queued, resends driven by the rules);
//! - built-in receivers for teams without an Alertmanager (`receivers:` in
//!   the config file): webhook (Alertmanager's webhook JSON), Slack incoming
//!   webhook, PagerDuty Events API v2. Each has label matchers, `group_by`,
//!   `group_wait`, `group_interval`, `repeat_interval` with Alertmanager's
//!   meaning, retries with backoff, and runs in its own task so one failing
//!   receiver never delays the others. What each receiver last sent per
//!   group is kept in `notify-state.json`, so a restart does not page again.
//!
//! Files:
//! - `mod.rs`: [`ReceiverConfig`], [`NotifyConfig`], [`NotifyMetrics`] and
//!   the [`Notifier`] that fans alerts out;
//! - `alertmanager.rs`: the Alertmanager API v2 queue;
//! - `dispatch.rs`: a receiver's task: matching, grouping, timing and the
//!   notification log;
//! - `silence.rs`: silences (Alertmanager's semantics), kept in
//!   `silences.json`;
//! - `inhibit.rs`: `inhibit_rules` and the [`Muter`](inhibit::Muter)
//!   that the receivers consult before notifying (silenced and inhibited
//!   alerts are not notified; alerts still go to external Alertmanagers,
//!   which apply their own silences);
//! - `integrations.rs`: delivery shared by the receivers (the
//!   [`Message`](integrations::Message) to send, retries with backoff);
//! - one file per receiver backend, with its config and payload:
//!   `webhook.rs`, `slack.rs`, `pagerduty.rs`.

pub mod alertmanager;
pub mod am_config;
pub mod dispatch;
pub mod inhibit;
pub mod integrations;
mod pagerduty;
pub mod silence;
mod slack;
mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use csoc_common::duration::de_duration;
use csoc_common::labels::Labels;
use csoc_common::time::now_ms;

pub use crate::alert::Alert;
use crate::alert::AlertSink;
pub use pagerduty::PagerDutyConfig;
pub use slack::SlackConfig;
pub use webhook::WebhookConfig;

/// One built-in receiver: which alerts, how they are grouped and timed,
/// and where they go (exactly one of `webhook`, `slack`, `pagerduty`).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Name (in metrics, logs and payloads).
    pub name: String,
    /// Label matchers the alert must all satisfy, PromQL style:
    /// `severity="critical"`, `commons=~"prod-.*"`. None = every alert.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Labels that split alerts into notifications (default: alertname
    /// and commons); `["..."]` groups by every label.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// Wait before the first notification of a new group (default 30s).
    #[serde(default = "default_group_wait", deserialize_with = "de_duration")]
    pub group_wait: Duration,
    /// Wait before notifying about changes to a group (default 5m).
    #[serde(default = "default_group_interval", deserialize_with = "de_duration")]
    pub group_interval: Duration,
    /// Wait before repeating an unchanged notification (default 4h).
    #[serde(default = "default_repeat_interval", deserialize_with = "de_duration")]
    pub repeat_interval: Duration,
    /// Also notify when alerts resolve (default: true for webhook and
    /// PagerDuty, false for Slack, as Alertmanager).
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// Webhook target.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Slack target.
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    /// PagerDuty target.
    #[serde(default)]
    pub pagerduty: Option<PagerDutyConfig>,
}

impl std::fmt::Debug for ReceiverConfig {
    // Secrets (Slack URLs, routing keys, tokens) stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverConfig")
            .field("name", &self.name)
            .field("matchers", &self.matchers)
            .field("group_by", &self.group_by)
            .field("integration", &self.integration_name())
            .finish()
    }
}

fn default_group_by() -> Vec<String> {
    vec!["alertname".into(), "commons".into()]
}
fn default_group_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_group_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}

impl ReceiverConfig {
    /// `webhook`, `slack` or `pagerduty`.
    pub fn integration_name(&self) -> &'static str {
        if self.slack.is_some() {
            "slack"
        } else if self.pagerduty.is_some() {
            "pagerduty"
        } else {
            "webhook"
        }
    }

    /// Whether resolutions are sent.
    pub fn sends_resolved(&self) -> bool {
        self.send_resolved.unwrap_or(self.slack.is_none())
    }

    /// Checks the receiver; the error names the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name must be set".into());
        }
        let n = [self.webhook.is_some(), self.slack.is_some(), self.pagerduty.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if n != 1 {
            return Err(format!("receiver {:?}: give exactly one of webhook, slack or pagerduty", self.name));
        }
        let url = self
            .webhook
            .as_ref()
            .map(|w| w.url.as_str())
            .or(self.slack.as_ref().map(|s| s.api_url.as_str()))
            .or(self.pagerduty.as_ref().map(|p| p.url.as_str()))
            .unwrap_or_default();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("receiver {:?}: the URL must start with http:// or https://", self.name));
        }
        if let Some(p) = &self.pagerduty
            && p.routing_key.trim().is_empty()
        {
            return Err(format!("receiver {:?}: pagerduty.routing_key must be set", self.name));
        }
        if self.group_interval.is_zero() || self.repeat_interval.is_zero() {
            return Err(format!(
                "receiver {:?}: group_interval and repeat_interval must be positive",
                self.name
            ));
        }
        dispatch::parse_matchers(&self.matchers).map_err(|e| format!("receiver {:?}: {e}", self.name))?;
        for l in &self.group_by {
            if l != "..." && !csoc_common::labels::valid_label_name(l) {
                return Err(format!("receiver {:?}: group_by: invalid label name {l:?}", self.name));
            }
        }
        Ok(())
    }
}

/// Notification metrics.
#[derive(Clone)]
pub struct NotifyMetrics {
    /// Notifications delivered, by receiver and integration.
    pub sent: Family<Labels, Counter>,
    /// Notifications that failed after all retries.
    pub failed: Family<Labels, Counter>,
    /// Delivery attempts that will be retried.
    pub retries: Family<Labels, Counter>,
    /// Alerts sent to each Alertmanager.
    pub am_sent: Family<Labels, Counter>,
    /// Alerts whose sending to an Alertmanager failed.
    pub am_errors: Family<Labels, Counter>,
    /// Alerts dropped because a queue was full.
    pub dropped: Family<Labels, Counter>,
    /// Alerts waiting per Alertmanager.
    pub am_queue: Family<Labels, Gauge>,
}

impl NotifyMetrics {
    /// Registers under the given (collector) registry.
    pub fn new(reg: &mut Registry) -> Self {
        let m = NotifyMetrics {
            sent: Family::default(),
            failed: Family::default(),
            retries: Family::default(),
            am_sent: Family::default(),
            am_errors: Family::default(),
            dropped: Family::default(),
            am_queue: Family::default(),
        };
        reg.register(
            "notifications_sent",
            "Notifications delivered, by receiver and integration",
            m.sent.clone(),
        );
        reg.register(
            "notifications_failed",
            "Notifications that failed after all retries, by receiver and integration",
            m.failed.clone(),
        );
        reg.register(
            "notification_retries",
            "Notification attempts retried, by receiver",
            m.retries.clone(),
        );
        reg.register("alertmanager_alerts_sent", "Alerts sent to each Alertmanager", m.am_sent.clone());
        reg.register(
            "alertmanager_alerts_errors",
            "Alerts whose sending to an Alertmanager failed",
            m.am_errors.clone(),
        );
        reg.register(
            "notifications_dropped",
            "Alerts dropped because a queue was full",
            m.dropped.clone(),
        );
        reg.register(
            "alertmanager_queue_length",
            "Alerts waiting to be sent, per Alertmanager",
            m.am_queue.clone(),
        );
        m
    }
}

/// Why the notifier cannot start; nothing is sent until the configuration
/// is fixed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// An `--alertmanager` URL that is not an http(s) URL (credentials
    /// redacted from the message).
    #[error("{0}")]
    Alertmanager(String),
    /// A receiver's configuration is invalid.
    #[error("receivers: {0}")]
    Receiver(String),
    /// The HTTP client could not be built (TLS roots).
    #[error("building the notification HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// An inhibition rule is invalid.
    #[error("{0}")]
    Inhibit(String),
}

/// Settings of the notifier.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The Alertmanagers (flat URLs and the `alerting:` block, resolved).
    pub alertmanagers: am_config::Resolved,
    /// Built-in receivers.
    pub receivers: Vec<ReceiverConfig>,
    /// The collector's external URL (in payloads).
    pub external_url: String,
    /// Where receivers keep what they last sent.
    pub state_path: PathBuf,
    /// Where silences are kept (`None`: in memory only).
    pub silences_path: Option<PathBuf>,
    /// Inhibition rules.
    pub inhibit_rules: Vec<inhibit::InhibitRuleConfig>,
}

/// The Alertmanager queues of one configuration.
struct AmSet {
    resolved: am_config::Resolved,
    queues: Vec<Arc<alertmanager::AmQueue>>,
    stop: CancellationToken,
}

/// The receivers of one configuration.
struct ReceiverSet {
    cfgs: Vec<ReceiverConfig>,
    handles: Vec<dispatch::ReceiverHandle>,
    stop: CancellationToken,
}

/// Hands alerts to every Alertmanager and receiver; [`Notifier::reconfigure`]
/// replaces either set while alerts flow (a reload).
pub struct Notifier {
    ams: std::sync::RwLock<AmSet>,
    receivers: std::sync::RwLock<ReceiverSet>,
    muter: Arc<inhibit::Muter>,
    log: Arc<dispatch::NotificationLog>,
    client: reqwest::Client,
    external_url: String,
    metrics: NotifyMetrics,
    shutdown: CancellationToken,
}

impl Notifier {
    /// A notifier that sends nowhere (no Alertmanager, no receiver).
    pub fn none() -> Arc<Self> {
        let shutdown = CancellationToken::new();
        Arc::new(Notifier {
            ams: std::sync::RwLock::new(AmSet {
                resolved: Default::default(),
                queues: Vec::new(),
                stop: shutdown.clone(),
            }),
            receivers: std::sync::RwLock::new(ReceiverSet {
                cfgs: Vec::new(),
                handles: Vec::new(),
                stop: shutdown.clone(),
            }),
            muter: Arc::new(inhibit::Muter::empty()),
            log: Arc::new(dispatch::NotificationLog::in_memory()),
            client: reqwest::Client::new(),
            external_url: String::new(),
            metrics: NotifyMetrics::new(&mut Registry::default()),
            shutdown,
        })
    }

    /// Silences, inhibition and the alerts received (`/api/v2`, the console).
    pub fn muter(&self) -> &Arc<inhibit::Muter> {
        &self.muter
    }

    /// Starts one task per Alertmanager and per receiver.
    pub fn start(cfg: &NotifyConfig, metrics: NotifyMetrics, shutdown: CancellationToken) -> Result<Arc<Self>, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("csoc-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(NotifyError::Client)?;
        let log = Arc::new(dispatch::NotificationLog::open(cfg.state_path.clone()));
        let silences = Arc::new(match &cfg.silences_path {
            Some(p) => silence::Silences::open(p),
            None => silence::Silences::in_memory(),
        });
        let muter = Arc::new(inhibit::Muter::new(silences, &cfg.inhibit_rules).map_err(NotifyError::Inhibit)?);
        let n = Notifier {
            ams: std::sync::RwLock::new(AmSet {
                resolved: Default::default(),
                queues: Vec::new(),
                stop: shutdown.child_token(),
            }),
            receivers: std::sync::RwLock::new(ReceiverSet {
                cfgs: Vec::new(),
                handles: Vec::new(),
                stop: shutdown.child_token(),
            }),
            muter,
            log,
            client,
            external_url: cfg.external_url.clone(),
            metrics,
            shutdown,
        };
        n.reconfigure(&cfg.alertmanagers, &cfg.receivers)?;
        let (a, r) = n.counts();
        if a > 0 || r > 0 {
            tracing::info!(alertmanagers = a, receivers = r, "notifier started");
        }
        Ok(Arc::new(n))
    }

    /// (Alertmanagers, receivers) now.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.ams.read().unwrap_or_else(|p| p.into_inner()).queues.len(),
            self.receivers.read().unwrap_or_else(|p| p.into_inner()).handles.len(),
        )
    }

    /// The Alertmanagers now: active and dropped alerts URLs.
    pub fn alertmanagers(&self) -> (Vec<String>, Vec<String>) {
        let s = self.ams.read().unwrap_or_else(|p| p.into_inner());
        (
            s.resolved.active.iter().map(|t| t.url.clone()).collect(),
            s.resolved.dropped.clone(),
        )
    }

    /// Replaces the Alertmanagers and the receivers that changed; all of
    /// them are built before anything is replaced, so an invalid one
    /// changes nothing. Alerts queued for a replaced destination are given
    /// up; the alerts firing now are handed to the new destinations at
    /// once (and the rules re-send them every resend delay). Returns
    /// whether (Alertmanagers, receivers) changed.
    pub fn reconfigure(&self, ams: &am_config::Resolved, receivers: &[ReceiverConfig]) -> Result<(bool, bool), NotifyError> {
        let am_changed = self.ams.read().unwrap_or_else(|p| p.into_inner()).resolved != *ams;
        let rx_changed = self.receivers.read().unwrap_or_else(|p| p.into_inner()).cfgs != receivers;
        let new_ams = if am_changed {
            let stop = self.shutdown.child_token();
            let mut queues = Vec::new();
            for t in &ams.active {
                match alertmanager::AmQueue::start(t, self.metrics.clone(), stop.clone()) {
                    Ok(q) => queues.push(q),
                    Err(e) => {
                        stop.cancel();
                        return Err(e);
                    }
                }
            }
            Some(AmSet {
                resolved: ams.clone(),
                queues,
                stop,
            })
        } else {
            None
        };
        let new_rx = if rx_changed {
            let stop = self.shutdown.child_token();
            let mut handles = Vec::new();
            let built = (|| {
                for r in receivers {
                    r.validate().map_err(NotifyError::Receiver)?;
                    handles.push(dispatch::ReceiverHandle::start(
                        r.clone(),
                        self.client.clone(),
                        self.external_url.clone(),
                        self.log.clone(),
                        self.muter.clone(),
                        self.metrics.clone(),
                        stop.clone(),
                    )?);
                }
                Ok::<_, NotifyError>(())
            })();
            if let Err(e) = built {
                stop.cancel();
                if let Some(a) = &new_ams {
                    a.stop.cancel();
                }
                return Err(e);
            }
            Some(ReceiverSet {
                cfgs: receivers.to_vec(),
                handles,
                stop,
            })
        } else {
            None
        };
        // The alerts firing now go to the new destinations at once, not
        // at the rules' next resend.
        let firing: Vec<Alert> = self.muter.alerts(now_ms()).into_iter().map(|s| s.alert).collect();
        if !firing.is_empty() {
            for q in new_ams.iter().flat_map(|a| a.queues.iter()) {
                q.push(&firing);
            }
            for r in new_rx.iter().flat_map(|r| r.handles.iter()) {
                r.push(&firing);
            }
        }
        if let Some(a) = new_ams {
            let old = std::mem::replace(&mut *self.ams.write().unwrap_or_else(|p| p.into_inner()), a);
            old.stop.cancel();
        }
        if let Some(r) = new_rx {
            let old = std::mem::replace(&mut *self.receivers.write().unwrap_or_else(|p| p.into_inner()), r);
            old.stop.cancel();
        }
        Ok((am_changed, rx_changed))
    }
}

impl AlertSink for Notifier {
    /// Queues alerts for every destination; never blocks.
    fn send(&self, alerts: Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        self.muter.observe(&alerts, now_ms());
        for am in &self.ams.read().unwrap_or_else(|p| p.into_inner()).queues {
            am.push(&alerts);
        }
        for r in &self.receivers.read().unwrap_or_else(|p| p.into_inner()).handles {
            r.push(&alerts);
        }
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    let t = if ms >= 0 {
        std::time::UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        std::time::UNIX_EPOCH
    };
    humantime::format_rfc3339_millis(t).to_string()
}
