//! Targets of a job: `static_configs` and `file_sd_configs` (re-read when a
//! file changes or is due), each address turned into a [`Target`] by target
//! relabelling (Prometheus's `PopulateLabels`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use reqwest::Url;

use super::config::{ScrapeJobConfig, StaticConfig};
use super::kubernetes_sd::{self, SdStoreRef};
use crate::model::{Labels, has_label, set_label, sort_labels};
use csoc_common::labels::valid_label_name;
use csoc_common::relabel::relabel;

/// One target after relabelling.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Target {
    /// The URL scraped.
    pub(super) url: String,
    /// Its labels (`job`, `instance`, group labels...), sorted, without `__` labels.
    pub(super) labels: Labels,
}

impl Target {
    pub(super) fn key(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.url.hash(&mut h);
        self.labels.hash(&mut h);
        h.finish()
    }
}

/// Builds a target from an address and its group's labels (Prometheus's
/// `PopulateLabels`): `Ok(None)` when relabelling drops it.
pub(super) fn populate_target(
    job: &ScrapeJobConfig,
    default_interval: Duration,
    address: &str,
    group_labels: &BTreeMap<String, String>,
    meta: &[(String, String)],
) -> Result<Option<Target>, String> {
    let mut l: Labels = meta.to_vec();
    for (k, v) in group_labels {
        l.push((k.clone(), v.clone()));
    }
    sort_labels(&mut l);
    set_label(&mut l, "__address__", address);
    let defaults = [
        ("job", job.job_name.clone()),
        ("__scheme__", job.scheme.clone()),
        ("__metrics_path__", job.metrics_path.clone()),
        (
            "__scrape_interval__",
            csoc_common::duration::format_duration(job.interval(default_interval)),
        ),
        (
            "__scrape_timeout__",
            csoc_common::duration::format_duration(job.timeout(default_interval)),
        ),
    ];
    for (k, v) in defaults {
        if !has_label(&l, k) {
            set_label(&mut l, k, &v);
        }
    }
    for (k, vs) in &job.params {
        let name = format!("__param_{k}");
        if let Some(v) = vs.first()
            && !has_label(&l, &name)
        {
            set_label(&mut l, &name, v);
        }
    }
    if !relabel(&mut l, &job.relabel_configs) {
        return Ok(None);
    }
    let get = |n: &str| l.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
    let addr = get("__address__");
    if addr.is_empty() {
        return Err("no __address__ label after relabelling".into());
    }
    if addr.contains('/') {
        return Err(format!("{addr:?} is not a valid address"));
    }
    let scheme = get("__scheme__");
    let path = get("__metrics_path__");
    let mut url = Url::parse(&format!("{scheme}://{addr}{path}")).map_err(|e| format!("{scheme}://{addr}{path}: {e}"))?;
    // Query: the job's params, each overridden by a __param_ label.
    let mut params: Vec<(String, String)> = Vec::new();
    for (k, vs) in &job.params {
        let over = l.iter().find(|(n, _)| n.strip_prefix("__param_") == Some(k.as_str()));
        // As Prometheus: the label replaces the first value only.
        for (n, v) in vs.iter().enumerate() {
            let v = match over {
                Some((_, o)) if n == 0 => o,
                _ => v,
            };
            params.push((k.clone(), v.clone()));
        }
    }
    for (n, v) in &l {
        if let Some(k) = n.strip_prefix("__param_")
            && !job.params.contains_key(k)
        {
            params.push((k.to_string(), v.clone()));
        }
    }
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params.iter());
    }
    if !has_label(&l, "instance") {
        set_label(&mut l, "instance", &addr);
    }
    l.retain(|(k, v)| !k.starts_with("__") && !v.is_empty());
    Ok(Some(Target {
        url: url.to_string(),
        labels: l,
    }))
}

/// Reads one file_sd file: a list of `{targets, labels}` groups.
pub(super) fn read_file_sd(path: &std::path::Path) -> Result<Vec<StaticConfig>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let groups: Vec<StaticConfig> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {}", path.display(), crate::config::yaml_error(&e)))?
    };
    for g in &groups {
        for l in g.labels.keys() {
            if !valid_label_name(l) {
                return Err(format!("{}: {l:?} is not a valid label name", path.display()));
            }
        }
    }
    Ok(groups)
}

/// What is known of one file_sd file.
struct SdFile {
    modified: Option<SystemTime>,
    len: u64,
    read_at: Instant,
    groups: Vec<StaticConfig>,
}

/// One kubernetes_sd_config of a job: its watched store and the targets
/// built at the store's last generation.
struct KubeSd {
    role: String,
    store: SdStoreRef,
    built_at: Option<u64>,
    targets: Vec<Target>,
}

/// Service discovery state of one job.
#[derive(Default)]
pub(super) struct Discovery {
    files: HashMap<PathBuf, SdFile>,
    kube: Vec<KubeSd>,
}

impl Discovery {
    /// Adds a kubernetes_sd_config of `role`; returns the store its watchers
    /// fill.
    pub(super) fn add_kubernetes(&mut self, role: String) -> SdStoreRef {
        let store = SdStoreRef::default();
        self.kube.push(KubeSd {
            role,
            store: store.clone(),
            built_at: None,
            targets: Vec::new(),
        });
        store
    }

    /// Targets of `job` now, re-reading changed or due files.
    pub(super) fn targets(&mut self, job: &ScrapeJobConfig, default_interval: Duration, source: &str) -> Vec<Target> {
        let mut out = Vec::new();
        let mut add = |addr: &str, labels: &BTreeMap<String, String>, meta: &[(String, String)]| match populate_target(
            job,
            default_interval,
            addr,
            labels,
            meta,
        ) {
            Ok(Some(t)) => out.push(t),
            Ok(None) => {}
            Err(e) => tracing::warn!(source, job = %job.job_name, target = addr, error = %e, "target skipped"),
        };
        for g in &job.static_configs {
            for t in &g.targets {
                add(t, &g.labels, &[]);
            }
        }
        let mut present = HashSet::new();
        for sd in &job.file_sd_configs {
            for pat in &sd.files {
                let Ok(paths) = glob::glob(pat) else { continue };
                for p in paths.flatten() {
                    present.insert(p.clone());
                    let md = std::fs::metadata(&p).ok();
                    let modified = md.as_ref().and_then(|m| m.modified().ok());
                    let len = md.as_ref().map_or(0, |m| m.len());
                    let stale = match self.files.get(&p) {
                        None => true,
                        Some(f) => f.modified != modified || f.len != len || f.read_at.elapsed() >= sd.refresh_interval,
                    };
                    if stale {
                        match read_file_sd(&p) {
                            Ok(groups) => {
                                self.files.insert(
                                    p.clone(),
                                    SdFile {
                                        modified,
                                        len,
                                        read_at: Instant::now(),
                                        groups,
                                    },
                                );
                            }
                            Err(e) => {
                                // Keep what the file said last time.
                                tracing::warn!(source, job = %job.job_name, error = %e, "cannot read a file_sd file");
                                if let Some(f) = self.files.get_mut(&p) {
                                    f.modified = modified;
                                    f.len = len;
                                    f.read_at = Instant::now();
                                }
                            }
                        }
                    }
                    if let Some(f) = self.files.get(&p) {
                        let meta = [("__meta_filepath".to_string(), p.display().to_string())];
                        for g in &f.groups {
                            for t in &g.targets {
                                add(t, &g.labels, &meta);
                            }
                        }
                    }
                }
            }
        }
        self.files.retain(|p, _| present.contains(p));
        for k in &mut self.kube {
            let (generation, raw) = {
                let g = kubernetes_sd::lock(&k.store);
                if k.built_at == Some(g.generation) {
                    (None, Vec::new())
                } else {
                    (Some(g.generation), g.targets(&k.role))
                }
            };
            if let Some(generation) = generation {
                k.targets.clear();
                for mut t in raw {
                    let addr = t.remove("__address__").unwrap_or_default();
                    let meta: Vec<(String, String)> = t.into_iter().collect();
                    match populate_target(job, default_interval, &addr, &BTreeMap::new(), &meta) {
                        Ok(Some(t)) => k.targets.push(t),
                        Ok(None) => {}
                        Err(e) => tracing::debug!(source, job = %job.job_name, target = %addr, error = %e, "kubernetes_sd target skipped"),
                    }
                }
                k.built_at = Some(generation);
            }
            out.extend(k.targets.iter().cloned());
        }
        out
    }
}
