//! The endpoints: each one's request (in-cluster or through revproxy) and
//! the parsing of its answer into values.

use std::time::Duration;

use serde_json::Value;

use super::Gen3UsageSource;
use crate::sources::gen3_http::{fetch, join};

/// Largest body parsed.
const BODY_LIMIT: usize = 4 << 20;
/// Most discovery pages followed in one round.
const MAX_PAGES: usize = 1000;

/// A parsed value: (metric, extra labels, value).
type Values = Vec<(&'static str, Vec<(String, String)>, f64)>;

type Polled = Result<(Values, i64), (&'static str, String)>;

/// GETs `url` and parses its JSON body.
async fn get_json(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<(Value, i64), (&'static str, String)> {
    let r = fetch(client, url, timeout, BODY_LIMIT).await;
    if let Some(e) = r.error {
        return Err(e);
    }
    let kind = match r.status {
        200..=299 => None,
        401 => Some("unauthorized"),
        403 => Some("forbidden"),
        404 => Some("not_found"),
        _ => Some("http_status"),
    };
    if let Some(k) = kind {
        return Err((k, format!("HTTP {} from {url}", r.status)));
    }
    if r.truncated {
        return Err(("parse", format!("{url}: answer larger than {BODY_LIMIT} bytes")));
    }
    serde_json::from_slice(&r.body)
        .map(|v| (v, r.ts_ms))
        .map_err(|e| ("parse", format!("{url}: not JSON: {e}")))
}

/// A non-negative count from a JSON number.
fn count(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite() && *x >= 0.0)
}

fn missing(url: &str, what: &str) -> (&'static str, String) {
    ("parse", format!("{url}: no {what} in the answer"))
}

/// Parses indexd `/_stats`.
pub(super) fn parse_indexd_stats(v: &Value) -> Option<(f64, f64)> {
    Some((count(&v["fileCount"])?, count(&v["totalFileSize"])?))
}

/// Parses DRS service-info's `drs.objectCount` and `drs.totalObjectSize`.
pub(super) fn parse_drs(v: &Value) -> Option<(f64, f64)> {
    Some((count(&v["drs"]["objectCount"])?, count(&v["drs"]["totalObjectSize"])?))
}

/// Parses peregrine `/datasets`: per project, per node type, a count.
pub(super) fn parse_datasets(v: &Value) -> Option<Vec<(String, String, f64)>> {
    let mut out = Vec::new();
    for (project, nodes) in v.as_object()? {
        for (node, n) in nodes.as_object()? {
            out.push((project.clone(), node.clone(), count(n)?));
        }
    }
    Some(out)
}

impl Gen3UsageSource {
    fn on(&self, endpoint: &str) -> bool {
        !self.disabled.iter().any(|d| d == endpoint)
    }

    pub(super) async fn indexd_stats(&self) -> Option<Polled> {
        let p = self.plan.indexd.as_ref().filter(|_| self.on("indexd_stats"))?;
        let url = join(&p.root, if p.in_cluster { "/_stats" } else { "/index/_stats" });
        Some(get_json(&self.client, &url, self.timeout).await.and_then(|(v, ts)| {
            let (files, size) = parse_indexd_stats(&v).ok_or_else(|| missing(&url, "fileCount and totalFileSize"))?;
            Ok((
                vec![("gen3_indexd_files", vec![], files), ("gen3_indexd_size_bytes", vec![], size)],
                ts,
            ))
        }))
    }

    pub(super) async fn drs(&self) -> Option<Polled> {
        let p = self.plan.indexd.as_ref().filter(|_| self.on("drs_service_info"))?;
        let url = join(&p.root, "/ga4gh/drs/v1/service-info");
        Some(get_json(&self.client, &url, self.timeout).await.and_then(|(v, ts)| {
            let (n, size) = parse_drs(&v).ok_or_else(|| missing(&url, "drs.objectCount and drs.totalObjectSize"))?;
            Ok((vec![("gen3_drs_objects", vec![], n), ("gen3_drs_size_bytes", vec![], size)], ts))
        }))
    }

    pub(super) async fn datasets(&self) -> Option<Polled> {
        let p = self.plan.peregrine.as_ref().filter(|_| self.on("peregrine_datasets"))?;
        let path = if p.in_cluster { "/datasets" } else { "/api/search/datasets" };
        let url = format!("{}?nodes={}", join(&p.root, path), self.nodes.join(","));
        Some(get_json(&self.client, &url, self.timeout).await.and_then(|(v, ts)| {
            let rows = parse_datasets(&v).ok_or_else(|| missing(&url, "{project: {node: count}} object"))?;
            let projects = v.as_object().map_or(0, serde_json::Map::len) as f64;
            let mut out: Values = vec![("gen3_peregrine_projects", vec![], projects)];
            for (project, node, n) in rows {
                out.push((
                    "gen3_peregrine_records",
                    vec![("project".into(), project), ("node".into(), node)],
                    n,
                ));
            }
            Ok((out, ts))
        }))
    }

    pub(super) async fn discovery(&self) -> Option<Polled> {
        let p = self.plan.metadata.as_ref().filter(|_| self.on("mds_discovery"))?;
        let root = join(&p.root, if p.in_cluster { "/metadata" } else { "/mds/metadata" });
        let limit = self.page_size as usize;
        let mut total = 0usize;
        let mut ts = 0;
        for page in 0..MAX_PAGES {
            let url = format!(
                "{root}?_guid_type=discovery_metadata&limit={limit}&offset={}",
                page.saturating_mul(limit)
            );
            let (v, t) = match get_json(&self.client, &url, self.timeout).await {
                Ok(x) => x,
                Err(e) => return Some(Err(e)),
            };
            ts = t;
            // A list of GUIDs, or (with data=True) an object keyed by GUID.
            let n = match &v {
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                _ => return Some(Err(missing(&url, "list of GUIDs"))),
            };
            total += n;
            if n < limit {
                break;
            }
        }
        Some(Ok((vec![("gen3_discovery_studies", vec![], total as f64)], ts)))
    }

    pub(super) async fn aggregate_commons(&self) -> Option<Polled> {
        let p = self.plan.metadata.as_ref().filter(|_| self.on("mds_aggregate_commons"))?;
        let url = join(
            &p.root,
            if p.in_cluster {
                "/aggregate/commons"
            } else {
                "/mds/aggregate/commons"
            },
        );
        Some(get_json(&self.client, &url, self.timeout).await.and_then(|(v, ts)| {
            let n = v["commons"].as_array().ok_or_else(|| missing(&url, "commons list"))?.len();
            Ok((vec![("gen3_mds_aggregate_commons", vec![], n as f64)], ts))
        }))
    }

    pub(super) async fn hatchery(&self) -> Option<Polled> {
        let root = self.plan.hatchery.as_ref().filter(|_| self.on("hatchery_all_costs"))?;
        let url = join(root, "/allCosts");
        Some(get_json(&self.client, &url, self.timeout).await.and_then(|(v, ts)| {
            let n = count(&v["total_pods"])
                .or_else(|| v["pods"].as_array().map(|a| a.len() as f64))
                .ok_or_else(|| missing(&url, "total_pods"))?;
            let mut out = vec![("gen3_hatchery_workspaces", vec![], n)];
            // total_cost: the cost accrued so far by the pods running now
            // (requests × hatchery's prices × time since creation), summed.
            // Absent or not a non-negative number: the cost is not reported.
            if let Some(c) = count(&v["total_cost"]) {
                out.push(("gen3_hatchery_workspace_cost_dollars", vec![], c));
            }
            Ok((out, ts))
        }))
    }
}
