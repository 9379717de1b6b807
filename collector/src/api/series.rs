//! Series and metadata: `series`, `labels`, `label/<name>/values`,
//! `metadata`.
//!
//! `start`/`end` narrow the answer to series with data in the range, at
//! chunk granularity, as Prometheus does at block granularity (its API
//! documents that such answers may include a little more than the range).
//! Absent, the range is unbounded (series whose data retention deleted
//! are still left out). `limit` cuts the sorted answer and adds Prometheus's
//! "results truncated due to limit" warning.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value as Json, json};

use super::access::Access;
use super::{ApiError, AppState, Params, TRUNCATED, blocking, labels_json, match_sets, optional_range, respond, success};
use crate::tsdb::{Labels, Matcher, TsdbError};

/// Labels of the series matching any of `sets` (every series when `sets`
/// is empty) with data in `[start, end]`, sorted and deduplicated.
fn series_in_range(st: &AppState, sets: &[Vec<Matcher>], start: i64, end: i64) -> Result<Vec<Arc<Labels>>, ApiError> {
    let q = st.storage.querier(start, end);
    let mut all: Vec<Arc<Labels>> = Vec::new();
    if sets.is_empty() {
        all = q.series(&[])?;
    } else {
        for set in sets {
            all.extend(q.series(set)?);
        }
        all.sort();
        all.dedup();
    }
    Ok(all)
}

/// The sorted union of `f` over `sets` (`f(&[])`, every series, when
/// `sets` is empty).
fn union_over(sets: &[Vec<Matcher>], f: impl Fn(&[Matcher]) -> Result<Vec<String>, TsdbError>) -> Result<Vec<String>, ApiError> {
    if sets.is_empty() {
        return Ok(f(&[])?);
    }
    let mut all = BTreeSet::new();
    for set in sets {
        all.extend(f(set)?);
    }
    Ok(all.into_iter().collect())
}

fn limited<T>(mut v: Vec<T>, limit: Option<usize>) -> (Vec<T>, Vec<String>) {
    match limit {
        Some(n) if v.len() > n => {
            v.truncate(n);
            (v, vec![TRUNCATED.to_string()])
        }
        _ => (v, Vec::new()),
    }
}

/// `GET|POST /api/v1/series`: `match[]` (required), `start`, `end`, `limit`.
pub async fn series(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    if p.all("match[]").next().is_none() {
        return Err(ApiError::BadData("no match[] parameter provided".into()));
    }
    let limit = p.limit()?;
    let (start, end) = optional_range(&p)?;
    let sets = access.restrict(match_sets(&p)?);
    let all = blocking(move || series_in_range(&st, &sets, start, end)).await?;
    let (out, warnings) = limited(all, limit);
    Ok(respond(Json::Array(out.iter().map(|l| labels_json(l)).collect()), &warnings, &[]))
}

/// `GET|POST /api/v1/labels`: `match[]`, `start`, `end`, `limit`.
pub async fn labels(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    let limit = p.limit()?;
    let (start, end) = optional_range(&p)?;
    let sets = access.restrict(match_sets(&p)?);
    let names = blocking(move || {
        let q = st.storage.querier(start, end);
        union_over(&sets, |set| q.label_names(set))
    })
    .await?;
    let (out, warnings) = limited(names, limit);
    Ok(respond(json!(out), &warnings, &[]))
}

/// `GET /api/v1/label/<name>/values`: `match[]`, `start`, `end`, `limit`.
pub async fn label_values(
    State(st): State<AppState>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    if !(name == "__name__" || csoc_common::labels::valid_label_name(&name)) {
        return Err(ApiError::BadData(format!("invalid label name: {name:?}")));
    }
    let limit = p.limit()?;
    let (start, end) = optional_range(&p)?;
    let mut sets = match_sets(&p)?;
    if sets.is_empty() {
        // Only series that have the label: a missing label never matches
        // a regex that needs a character.
        sets.push(vec![Matcher::regex(&name, ".+", false)?]);
    }
    let sets = access.restrict(sets);
    let values = blocking(move || {
        let q = st.storage.querier(start, end);
        union_over(&sets, |set| q.label_values(&name, set))
    })
    .await?;
    let (out, warnings) = limited(values, limit);
    Ok(respond(json!(out), &warnings, &[]))
}

/// `GET /api/v1/metadata`: `metric`, `limit` (families), `limit_per_metric`
/// (entries per family); negative limits mean none, as in Prometheus.
pub async fn metadata(State(st): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let limit = p.signed_limit("limit")?;
    let per_metric = p.signed_limit("limit_per_metric")?.filter(|n| *n > 0);
    let metric = p.non_empty("metric");
    let mut out = serde_json::Map::new();
    for (name, entries) in st.metadata.query(metric, limit, per_metric) {
        out.insert(name, serde_json::to_value(entries).unwrap_or(Json::Null));
    }
    Ok(success(Json::Object(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_warn_only_when_they_cut() {
        assert_eq!(limited(vec![1, 2, 3], None), (vec![1, 2, 3], vec![]));
        assert_eq!(limited(vec![1, 2, 3], Some(3)), (vec![1, 2, 3], vec![]));
        assert_eq!(limited(vec![1, 2, 3], Some(2)), (vec![1, 2], vec![TRUNCATED.to_string()]));
    }
}
