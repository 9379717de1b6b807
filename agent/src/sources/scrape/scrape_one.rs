//! One scrape of one target: the HTTP request (auth, `Accept`, timeout),
//! parsing, the target's labels on each sample, metric relabelling and
//! `sample_limit`.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use super::Job;
use super::discovery::Target;
use crate::model::{Labels, Sample, has_label, set_label};
use csoc_common::error::error_chain;
use csoc_common::exposition::{Format, parse_bytes};
use csoc_common::relabel::relabel;

/// The `Accept` header Prometheus (2.x) sends.
pub(super) const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The result of one scrape.
pub(super) struct Scraped {
    /// Samples after target labels and metric relabelling (timestamps set).
    pub(super) samples: Vec<Sample>,
    /// Metadata of the exposed families.
    pub(super) metadata: Vec<crate::model::Metadata>,
    /// Samples in the exposition.
    pub(super) scraped: usize,
    /// Per sample, the hash of its labels when it is tracked for staleness
    /// (`None`: it has its own timestamp).
    pub(super) tracked: Vec<Option<u64>>,
}

/// Attaches the target's labels to an exposed sample's (Prometheus's
/// `mutateSampleLabels`).
pub(super) fn merge_target_labels(labels: &mut Labels, target: &Labels, honor: bool) {
    if honor {
        for (k, v) in target {
            if !has_label(labels, k) {
                set_label(labels, k, v);
            }
        }
    } else {
        let mut conflicts: Vec<(String, String)> = Vec::new();
        for (k, v) in target {
            if let Ok(i) = labels.binary_search_by(|(n, _)| n.as_str().cmp(k))
                && !labels[i].1.is_empty()
            {
                conflicts.push((k.clone(), labels[i].1.clone()));
            }
            set_label(labels, k, v);
        }
        conflicts.sort_by_key(|(k, _)| k.len());
        for (k, v) in conflicts {
            let mut name = format!("exported_{k}");
            while has_label(labels, &name) {
                name = format!("exported_{name}");
            }
            set_label(labels, &name, &v);
        }
    }
    labels.retain(|(_, v)| !v.is_empty());
}

/// One scrape of `target`: fetch, parse, label, relabel, limit.
pub(super) async fn scrape_once(job: &Job, target: &Target, ts: i64) -> Result<Scraped, String> {
    let mut req = job
        .client
        .get(&target.url)
        .header(reqwest::header::ACCEPT, ACCEPT)
        .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", job.timeout.as_secs_f64()));
    if let Some(p) = &job.cfg.bearer_token_file {
        let tok = std::fs::read_to_string(p).map_err(|e| format!("bearer_token_file {}: {e}", p.display()))?;
        req = req.bearer_auth(tok.trim());
    }
    if let Some(b) = &job.cfg.basic_auth {
        let pw = match &b.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("password_file {}: {e}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => b.password.clone(),
        };
        req = req.basic_auth(&b.username, pw);
    }
    let fetch = async {
        let resp = req.send().await.map_err(|e| format!("{}: {}", target.url, error_chain(&e)))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("{}: server returned HTTP status {}", target.url, resp.status()));
        }
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.bytes().await.map_err(|e| format!("{}: {}", target.url, error_chain(&e)))?;
        Ok((ct, body))
    };
    let (ct, body) = match tokio::time::timeout(job.timeout, fetch).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("{}: scrape timed out after {:?}", target.url, job.timeout)),
    };
    let exp = parse_bytes(&body, Format::from_content_type(&ct)).map_err(|e| format!("{}: {e}", target.url))?;
    let scraped = exp.samples.len();
    let mut samples = Vec::with_capacity(scraped);
    let mut tracked = Vec::with_capacity(scraped);
    let mut seen: HashSet<u64> = HashSet::with_capacity(scraped);
    for s in exp.samples {
        let mut labels = s.labels;
        merge_target_labels(&mut labels, &target.labels, job.cfg.honor_labels);
        if !relabel(&mut labels, &job.cfg.metric_relabel_configs) || !has_label(&labels, "__name__") {
            continue;
        }
        // A series twice in one exposition: the first wins (Prometheus
        // reports the rest as duplicates).
        let mut h = std::collections::hash_map::DefaultHasher::new();
        labels.hash(&mut h);
        let hash = h.finish();
        if !seen.insert(hash) {
            continue;
        }
        let timestamp_ms = match s.timestamp_ms {
            Some(t) if job.cfg.honor_timestamps => {
                tracked.push(None);
                t
            }
            _ => {
                tracked.push(Some(hash));
                ts
            }
        };
        samples.push(Sample {
            labels,
            timestamp_ms,
            value: s.value,
        });
    }
    if job.cfg.sample_limit > 0 && samples.len() > job.cfg.sample_limit {
        return Err(format!(
            "{}: sample_limit exceeded ({} samples, limit {})",
            target.url,
            samples.len(),
            job.cfg.sample_limit
        ));
    }
    Ok(Scraped {
        samples,
        metadata: exp.metadata,
        scraped,
        tracked,
    })
}
