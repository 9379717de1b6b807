//! One scrape of one target: the HTTP request (auth, `Accept`, timeout),
//! parsing, the target's labels on each sample, metric relabelling and
//! `sample_limit`.

use std::collections::HashSet;

use super::Job;
use super::discovery::Target;
use crate::model::{Labels, Sample, has_label, set_label};
use csoc_common::error::error_chain;
use csoc_common::exposition::{Format, parse_bytes};
use csoc_common::relabel::relabel;

/// The `Accept` header Prometheus (2.x) sends.
pub(super) const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn body_too_large(url: &str, limit: u64) -> String {
    format!("{url}: the response body exceeds body_size_limit ({limit} bytes)")
}

/// Decompresses a gzip body, refusing to produce more than `limit` bytes.
pub(super) fn gunzip_bounded(gz: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip body: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("the decompressed response body exceeds body_size_limit ({limit} bytes)"));
    }
    Ok(out)
}

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
        let (user, pw) = b.resolve()?;
        req = req.basic_auth(user, Some(pw));
    }
    if let Some(a) = &job.cfg.authorization {
        req = req.header(reqwest::header::AUTHORIZATION, a.header_value()?);
    }
    if job.cfg.enable_compression {
        req = req.header(reqwest::header::ACCEPT_ENCODING, "gzip");
    }
    let limit = match job.cfg.body_size_limit {
        0 => super::config::MAX_BODY_DEFAULT,
        n => n,
    };
    let fetch = async {
        let mut resp = req.send().await.map_err(|e| format!("{}: {}", target.url, error_chain(&e)))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("{}: server returned HTTP status {}", target.url, resp.status()));
        }
        let header = |h: reqwest::header::HeaderName| resp.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let ct = header(reqwest::header::CONTENT_TYPE);
        let encoding = header(reqwest::header::CONTENT_ENCODING);
        // Read no more than the limit (compressed bodies are smaller).
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{}: {}", target.url, error_chain(&e)))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(body_too_large(&target.url, limit));
            }
            body.extend_from_slice(&chunk);
        }
        let body = match encoding.trim() {
            "" | "identity" => body,
            "gzip" | "x-gzip" => gunzip_bounded(&body, limit).map_err(|e| format!("{}: {e}", target.url))?,
            other => return Err(format!("{}: unsupported Content-Encoding {other:?}", target.url)),
        };
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
    let mut hasher = csoc_common::labels::LabelsHasher::default();
    for s in exp.samples {
        let mut labels = s.labels;
        merge_target_labels(&mut labels, &target.labels, job.cfg.honor_labels);
        if !relabel(&mut labels, &job.cfg.metric_relabel_configs) || !has_label(&labels, "__name__") {
            continue;
        }
        // A series twice in one exposition: the first wins (Prometheus
        // reports the rest as duplicates).
        let hash = hasher.labels(&labels);
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
