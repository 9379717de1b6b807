//! Inhibition and the [`Muter`] that decides, at notification time, which
//! alerts are muted by a silence or an inhibition rule.
//!
//! Inhibition with Alertmanager's semantics (`inhibit_rules` in the config
//! file): an alert matching a rule's `target_matchers` is inhibited while
//! an alert matching its `source_matchers` is firing with the same values
//! of the labels in `equal` (a label missing on both sides counts as
//! equal). An alert that matches both sides is not inhibited by a source
//! alert that also matches both (it does not inhibit itself or its peers).
//!
//! The [`Muter`] keeps the alerts the notifier was last given (firing, and
//! resolved for a while) so that sources are known, lists them with their
//! status for `/api/v2/alerts` and the console, and is consulted by each
//! receiver when a group is flushed (Alertmanager's mute stage): muted
//! alerts are not notified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::Alert;
use super::silence::{Silences, parse_matcher};
use crate::tsdb::{Labels, Matcher};

/// One inhibition rule, as Alertmanager's `inhibit_rules` entries.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Matchers the inhibiting (source) alert must all satisfy, as
    /// Alertmanager writes them: `severity="critical"`, `alertname=Gen3CommonsDown`,
    /// `commons=~"prod-.*"`, `team!="x"`.
    #[serde(default)]
    pub source_matchers: Vec<String>,
    /// Matchers the inhibited (target) alert must all satisfy.
    #[serde(default)]
    pub target_matchers: Vec<String>,
    /// Labels whose values must be equal in the source and the target.
    #[serde(default)]
    pub equal: Vec<String>,
}

impl InhibitRuleConfig {
    /// Checks the rule; the message names the problem.
    pub fn validate(&self) -> Result<(), String> {
        self.compile().map(|_| ())
    }

    fn compile(&self) -> Result<InhibitRule, String> {
        if self.source_matchers.is_empty() || self.target_matchers.is_empty() {
            return Err("source_matchers and target_matchers must both be given".into());
        }
        let parse = |field: &str, ms: &[String]| -> Result<Vec<Matcher>, String> {
            ms.iter()
                .map(|m| parse_matcher(m).and_then(|x| x.compile()).map_err(|e| format!("{field}: {e}")))
                .collect()
        };
        for l in &self.equal {
            if !csoc_common::labels::valid_label_name(l) {
                return Err(format!("equal: invalid label name {l:?}"));
            }
        }
        Ok(InhibitRule {
            source: parse("source_matchers", &self.source_matchers)?,
            target: parse("target_matchers", &self.target_matchers)?,
            equal: self.equal.clone(),
        })
    }
}

struct InhibitRule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

fn all(ms: &[Matcher], l: &Labels) -> bool {
    ms.iter().all(|m| m.matches(l))
}

fn value<'a>(l: &'a Labels, name: &str) -> &'a str {
    l.binary_search_by(|(k, _)| k.as_str().cmp(name))
        .map(|i| l[i].1.as_str())
        .unwrap_or("")
}

/// An alert's labels as a sorted label set.
pub fn labels_of(a: &Alert) -> Labels {
    // BTreeMap iterates in name order: already sorted.
    a.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// How long a resolved alert stays known (listed as resolved nowhere, but
/// kept so that a late flush still sees it): 15 minutes.
const RESOLVED_KEEP_MS: i64 = 15 * 60 * 1000;

/// Why an alert is muted, if it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MuteStatus {
    /// IDs of the active silences matching it.
    pub silenced_by: Vec<String>,
    /// Fingerprints of the alerts inhibiting it.
    pub inhibited_by: Vec<String>,
}

impl MuteStatus {
    /// Silenced or inhibited.
    pub fn muted(&self) -> bool {
        !self.silenced_by.is_empty() || !self.inhibited_by.is_empty()
    }
}

struct Known {
    alert: Alert,
    labels: Labels,
    updated_at: i64,
}

/// Silences, inhibition rules and the alerts last given to the notifier.
pub struct Muter {
    silences: Arc<Silences>,
    rules: Vec<InhibitRule>,
    alerts: Mutex<HashMap<String, Known>>,
}

/// One alert with its status, for `/api/v2/alerts` and the console.
#[derive(Debug, Clone)]
pub struct AlertStatus {
    /// The alert.
    pub alert: Alert,
    /// Its fingerprint.
    pub fingerprint: String,
    /// When the notifier last received it (ms).
    pub updated_at: i64,
    /// Silences and inhibitions.
    pub mute: MuteStatus,
}

impl Muter {
    /// A muter over these silences and inhibition rules.
    pub fn new(silences: Arc<Silences>, rules: &[InhibitRuleConfig]) -> Result<Self, String> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| r.compile().map_err(|e| format!("inhibit_rules[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Muter {
            silences,
            rules,
            alerts: Mutex::new(HashMap::new()),
        })
    }

    /// No silences (in memory) and no rules.
    pub fn empty() -> Self {
        Muter {
            silences: Arc::new(Silences::in_memory()),
            rules: Vec::new(),
            alerts: Mutex::new(HashMap::new()),
        }
    }

    /// The silences.
    pub fn silences(&self) -> &Arc<Silences> {
        &self.silences
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.alerts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records alerts handed to the notifier; forgets those resolved long ago.
    pub fn observe(&self, alerts: &[Alert], now: i64) {
        let mut m = self.lock();
        for a in alerts {
            m.insert(
                a.fingerprint(),
                Known {
                    labels: labels_of(a),
                    alert: a.clone(),
                    updated_at: now,
                },
            );
        }
        m.retain(|_, k| !(k.alert.resolved(now) && k.alert.ends_at + RESOLVED_KEEP_MS < now));
    }

    /// The fingerprints of the firing alerts inhibiting an alert with
    /// these labels (and this fingerprint).
    fn inhibited_by(&self, known: &HashMap<String, Known>, labels: &Labels, fp: &str, now: i64) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.rules {
            if !all(&r.target, labels) {
                continue;
            }
            let two_sided = all(&r.source, labels);
            for (sfp, s) in known.iter() {
                if sfp == fp || s.alert.resolved(now) || !all(&r.source, &s.labels) {
                    continue;
                }
                if two_sided && all(&r.target, &s.labels) {
                    continue;
                }
                if r.equal.iter().all(|e| value(&s.labels, e) == value(labels, e)) && !out.contains(sfp) {
                    out.push(sfp.clone());
                }
            }
        }
        out.sort();
        out
    }

    /// Whether each alert is muted at `now` (same order as `alerts`).
    pub fn status_of(&self, alerts: &[Alert], now: i64) -> Vec<MuteStatus> {
        let active = self.silences.active(now);
        let known = self.lock();
        alerts
            .iter()
            .map(|a| {
                let l = labels_of(a);
                MuteStatus {
                    silenced_by: active.silenced_by(&l),
                    inhibited_by: if self.rules.is_empty() {
                        Vec::new()
                    } else {
                        self.inhibited_by(&known, &l, &a.fingerprint(), now)
                    },
                }
            })
            .collect()
    }

    /// The status of one label set (an alert the rules show that the
    /// notifier may not have received yet).
    pub fn status_of_labels(&self, labels: &Labels, now: i64) -> MuteStatus {
        let known = self.lock();
        MuteStatus {
            silenced_by: self.silences.silenced_by(labels, now),
            inhibited_by: self.inhibited_by(&known, labels, &crate::alert::fingerprint(labels), now),
        }
    }

    /// The alerts the notifier knows that are not resolved, with their
    /// status, ordered by fingerprint.
    pub fn alerts(&self, now: i64) -> Vec<AlertStatus> {
        let active = self.silences.active(now);
        let known = self.lock();
        let mut v: Vec<AlertStatus> = known
            .iter()
            .filter(|(_, k)| !k.alert.resolved(now))
            .map(|(fp, k)| AlertStatus {
                alert: k.alert.clone(),
                fingerprint: fp.clone(),
                updated_at: k.updated_at,
                mute: MuteStatus {
                    silenced_by: active.silenced_by(&k.labels),
                    inhibited_by: if self.rules.is_empty() {
                        Vec::new()
                    } else {
                        self.inhibited_by(&known, &k.labels, fp, now)
                    },
                },
            })
            .collect();
        v.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::silence::SilenceRequest;

    fn alert(p: &[(&str, &str)], ends_at: i64) -> Alert {
        Alert {
            labels: p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            annotations: Default::default(),
            starts_at: 0,
            ends_at,
            generator_url: String::new(),
        }
    }

    fn rule(src: &[&str], tgt: &[&str], equal: &[&str]) -> InhibitRuleConfig {
        InhibitRuleConfig {
            source_matchers: src.iter().map(|s| s.to_string()).collect(),
            target_matchers: tgt.iter().map(|s| s.to_string()).collect(),
            equal: equal.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_firing_source_inhibits_targets_with_equal_labels() {
        let m = Muter::new(
            Arc::new(Silences::in_memory()),
            &[rule(
                &["alertname=Gen3CommonsDown"],
                &[r#"severity=~"warning|critical""#],
                &["commons"],
            )],
        )
        .expect("valid rule");
        let src = alert(
            &[("alertname", "Gen3CommonsDown"), ("commons", "a"), ("severity", "critical")],
            10_000,
        );
        let same = alert(
            &[("alertname", "Gen3ServiceDown"), ("commons", "a"), ("severity", "warning")],
            10_000,
        );
        let other = alert(
            &[("alertname", "Gen3ServiceDown"), ("commons", "b"), ("severity", "warning")],
            10_000,
        );
        let info = alert(&[("alertname", "Gen3Slow"), ("commons", "a"), ("severity", "info")], 10_000);
        m.observe(&[src.clone(), same.clone(), other.clone(), info.clone()], 1000);
        let st = m.status_of(&[src.clone(), same.clone(), other.clone(), info.clone()], 1000);
        // The source matches the target matchers too, but does not inhibit itself.
        assert!(!st[0].muted(), "{:?}", st[0]);
        assert_eq!(st[1].inhibited_by, vec![src.fingerprint()]);
        assert!(!st[2].muted(), "another commons is not inhibited");
        assert!(!st[3].muted(), "not a target");
        // Once the source resolves, nothing is inhibited.
        let mut resolved = src.clone();
        resolved.ends_at = 1500;
        m.observe(&[resolved], 1500);
        assert!(!m.status_of(std::slice::from_ref(&same), 2000)[0].muted());
    }

    #[test]
    fn alerts_matching_both_sides_do_not_inhibit_each_other() {
        let m = Muter::new(
            Arc::new(Silences::in_memory()),
            &[rule(&["severity=critical"], &["severity=critical"], &["alertname"])],
        )
        .expect("valid rule");
        let a = alert(&[("alertname", "X"), ("commons", "a"), ("severity", "critical")], 10_000);
        let b = alert(&[("alertname", "X"), ("commons", "b"), ("severity", "critical")], 10_000);
        m.observe(&[a.clone(), b.clone()], 1000);
        assert!(m.status_of(&[a, b], 1000).iter().all(|s| !s.muted()));
    }

    #[test]
    fn silences_mute_and_the_alert_list_says_why() {
        let sil = Arc::new(Silences::in_memory());
        let m = Muter::new(sil.clone(), &[]).expect("no rules");
        let a = alert(&[("alertname", "Down"), ("commons", "a")], 100_000);
        let b = alert(&[("alertname", "Down"), ("commons", "b")], 100_000);
        m.observe(&[a.clone(), b.clone()], 1000);
        let id = sil
            .set(
                SilenceRequest {
                    id: None,
                    matchers: vec![parse_matcher("commons=a").expect("m")],
                    starts_at: 1000,
                    ends_at: 50_000,
                    created_by: "ops".into(),
                    comment: "c".into(),
                },
                1000,
            )
            .expect("silence");
        let list = m.alerts(2000);
        assert_eq!(list.len(), 2);
        let by_commons = |c: &str| list.iter().find(|s| s.alert.labels.get("commons").map(String::as_str) == Some(c));
        assert_eq!(by_commons("a").map(|s| s.mute.silenced_by.clone()), Some(vec![id]));
        assert_eq!(by_commons("b").map(|s| s.mute.muted()), Some(false));
        // After the silence ends, nothing is muted.
        assert!(m.alerts(60_000).iter().all(|s| !s.mute.muted()));
    }

    #[test]
    fn invalid_rules_are_refused() {
        let e = |r: InhibitRuleConfig| Muter::new(Arc::new(Silences::in_memory()), &[r]).err().unwrap_or_default();
        assert!(e(rule(&[], &["a=b"], &[])).contains("inhibit_rules[0]: source_matchers and target_matchers"));
        assert!(e(rule(&["a=~("], &["a=b"], &[])).contains("source_matchers"));
        assert!(e(rule(&["a=b"], &["a=b"], &["1x"])).contains("equal"));
    }
}
