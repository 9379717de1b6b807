//! Alert state saved in the data directory (`rules-state.json`) after every
//! group evaluation and read at start, so that a restart neither forgets a
//! firing alert nor pages it again as new: the alert keeps its start time,
//! its last send and its `for` progress.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::group::{Alert, Group};

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    groups: Vec<SavedGroup>,
}

#[derive(Serialize, Deserialize)]
struct SavedGroup {
    file: String,
    name: String,
    rules: Vec<SavedRule>,
}

#[derive(Serialize, Deserialize)]
struct SavedRule {
    name: String,
    alerts: Vec<SavedAlert>,
}

/// An alert with its value as text (JSON has no NaN or Inf).
#[derive(Serialize, Deserialize)]
struct SavedAlert {
    #[serde(flatten)]
    alert: Alert,
    value_text: String,
}

/// Saved alerts: (file, group) → rule name → alerts.
pub type SavedAlerts = HashMap<(String, String), HashMap<String, Vec<Alert>>>;

/// Reads the state file; a missing file is an empty state.
pub fn load(path: &Path) -> Result<SavedAlerts, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SavedAlerts::new()),
        Err(e) => return Err(e.to_string()),
    };
    let saved: Saved = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if saved.version != VERSION {
        return Err(format!("{}: unknown version {}", path.display(), saved.version));
    }
    let mut out = SavedAlerts::new();
    for g in saved.groups {
        let rules = out.entry((g.file, g.name)).or_default();
        for r in g.rules {
            let alerts = r
                .alerts
                .into_iter()
                .map(|mut s| {
                    s.alert.value = s.value_text.parse().unwrap_or(f64::NAN);
                    s.alert
                })
                .collect::<Vec<_>>();
            rules.entry(r.name).or_default().extend(alerts);
        }
    }
    Ok(out)
}

/// Writes every group's alerts, atomically (temporary file, fsync, rename),
/// unless they are byte for byte what `last` holds (the previous write);
/// `last` is updated after a write.
pub fn save(path: &Path, groups: &[Arc<Group>], last: &mut Vec<u8>) -> std::io::Result<()> {
    let mut saved = Saved {
        version: VERSION,
        groups: Vec::new(),
    };
    for g in groups {
        let mut rules: Vec<SavedRule> = g
            .alerts_by_rule()
            .into_iter()
            .map(|(name, alerts)| SavedRule {
                name,
                alerts: alerts
                    .into_iter()
                    .map(|mut a| {
                        let value_text = crate::promql::fmt_float(a.value);
                        a.value = 0.0;
                        SavedAlert { alert: a, value_text }
                    })
                    .collect(),
            })
            .collect();
        if rules.is_empty() {
            continue;
        }
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        saved.groups.push(SavedGroup {
            file: g.spec.file.clone(),
            name: g.spec.name.clone(),
            rules,
        });
    }
    let body = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
    if body == *last {
        return Ok(());
    }
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    *last = body;
    Ok(())
}
