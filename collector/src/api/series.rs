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
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::ser::{SerializeMap, SerializeSeq};
use serde_json::json;

use super::access::Access;
use super::{ApiError, AppState, Params, TRUNCATED, blocking, match_sets, optional_range, respond};
use crate::tsdb::{Labels, Matcher, Querier, TsdbError};

/// The commons a refusal is counted under: the caller's scope, "" when
/// unscoped.
fn scope_of(access: &Access) -> String {
    access.scope().unwrap_or("").to_string()
}

/// The `match[]` sets of a request (not yet restricted to the caller's
/// scope), refused with a 400 naming `max_match_sets` when there are more
/// selectors than it allows: counted before anything is parsed, and again
/// after `or` split selectors into sets.
pub(super) fn limited_match_sets(st: &AppState, access: &Access, p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let max = st.limits.load().max_match_sets;
    let refuse = |n: usize, what: &str| {
        st.limit_metrics.rejected("max_match_sets", &scope_of(access));
        ApiError::BadData(format!(
            "{n} {what} in one request: more than the limit max_match_sets ({max}) allows"
        ))
    };
    let n = p.all("match[]").count();
    if n > max {
        return Err(refuse(n, "match[] selectors"));
    }
    let sets = match_sets(p)?;
    if sets.len() > max {
        return Err(refuse(
            sets.len(),
            "matcher sets (match[] selectors, `or` alternatives counted apart)",
        ));
    }
    Ok(sets)
}

/// Why [`select_series`] gave up.
pub(super) enum SelectError {
    /// The storage failed.
    Storage(TsdbError),
    /// More than `max_series_per_request` series.
    TooMany,
}

impl From<TsdbError> for SelectError {
    fn from(e: TsdbError) -> Self {
        SelectError::Storage(e)
    }
}

/// The labels of the series matching any of `sets` (every series when
/// `sets` is empty), deduplicated and sorted. Gives up with
/// [`SelectError::TooMany`] as soon as one set, or the union so far, passes
/// `max` series: the sets are read one after the other and each is merged
/// into the union before the next is read. The union holds the storage's
/// shared label sets (`Arc`s), never copies, so the peak is one set's list
/// plus the union, both at most `max` entries past which it stops (a
/// single set is listed by the storage in full before it can be counted).
pub(super) fn select_series(q: &dyn Querier, sets: &[Vec<Matcher>], max: usize) -> Result<BTreeSet<Arc<Labels>>, SelectError> {
    let mut all = BTreeSet::new();
    let no_set = [Vec::new()];
    let sets = if sets.is_empty() { &no_set[..] } else { sets };
    for set in sets {
        let found = q.series(set)?;
        if found.len() > max {
            return Err(SelectError::TooMany);
        }
        all.extend(found);
        if all.len() > max {
            return Err(SelectError::TooMany);
        }
    }
    Ok(all)
}

/// The refusal of a request that selects too many series, counted.
pub(super) fn too_many_series(st: &AppState, access: &Access) -> String {
    st.limit_metrics.rejected("max_series_per_request", &scope_of(access));
    format!(
        "the request selects more than {} series, the limit max_series_per_request: narrow the match[] selectors or the time range",
        st.limits.load().max_series_per_request
    )
}

/// [`select_series`] over `[start, end]` with the request's limit, errors
/// as the API answers them (422 for the limit).
fn series_in_range(st: &AppState, access: &Access, sets: &[Vec<Matcher>], start: i64, end: i64) -> Result<BTreeSet<Arc<Labels>>, ApiError> {
    let q = st.storage.querier(start, end);
    select_series(q.as_ref(), sets, st.limits.load().max_series_per_request).map_err(|e| match e {
        SelectError::Storage(e) => ApiError::from(e),
        SelectError::TooMany => ApiError::Execution(too_many_series(st, access)),
    })
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

/// Label sets as JSON objects, serialised straight into the body.
struct LabelsJson<'a>(&'a Labels);

impl serde::Serialize for LabelsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A list serialised from an iterator, once.
struct SeqOf<I>(std::cell::Cell<Option<I>>);

impl<I: Iterator<Item = T>, T: serde::Serialize> serde::Serialize for SeqOf<I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        if let Some(it) = self.0.take() {
            for x in it {
                seq.serialize_element(&x)?;
            }
        }
        seq.end()
    }
}

/// A success body written straight to JSON text (no `Value` tree: a
/// series answer may hold `max_series_per_request` label sets).
fn json_body(data: &impl serde::Serialize, warnings: &[String]) -> Result<Response, ApiError> {
    #[derive(serde::Serialize)]
    struct Body<'a, D> {
        status: &'static str,
        data: &'a D,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        warnings: &'a [String],
    }
    let body = serde_json::to_vec(&Body {
        status: "success",
        data,
        warnings,
    })
    .map_err(|e| ApiError::Internal(format!("encoding the answer: {e}")))?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET|POST /api/v1/series`: `match[]` (required), `start`, `end`, `limit`.
pub async fn series(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    if p.all("match[]").next().is_none() {
        return Err(ApiError::BadData("no match[] parameter provided".into()));
    }
    let limit = p.limit()?;
    let (start, end) = optional_range(&p)?;
    let sets = access.restrict(limited_match_sets(&st, &access, &p)?);
    blocking(move || {
        let all = series_in_range(&st, &access, &sets, start, end)?;
        let n = all.len();
        let take = limit.unwrap_or(usize::MAX);
        let warnings = if n > take { vec![TRUNCATED.to_string()] } else { Vec::new() };
        let list = SeqOf(std::cell::Cell::new(Some(all.iter().take(take).map(|l| LabelsJson(l)))));
        json_body(&list, &warnings)
    })
    .await
}

/// `GET|POST /api/v1/labels`: `match[]`, `start`, `end`, `limit`.
pub async fn labels(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    let limit = p.limit()?;
    let (start, end) = optional_range(&p)?;
    let sets = access.restrict(limited_match_sets(&st, &access, &p)?);
    let names = blocking(move || {
        let all = series_in_range(&st, &access, &sets, start, end)?;
        let names: BTreeSet<&str> = all.iter().flat_map(|l| l.iter().map(|(k, _)| k.as_str())).collect();
        Ok(names.into_iter().map(str::to_string).collect::<Vec<_>>())
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
    let mut sets = limited_match_sets(&st, &access, &p)?;
    if sets.is_empty() {
        // Only series that have the label: a missing label never matches
        // a regex that needs a character.
        sets.push(vec![Matcher::regex(&name, ".+", false)?]);
    }
    let sets = access.restrict(sets);
    let values = blocking(move || {
        let all = series_in_range(&st, &access, &sets, start, end)?;
        let values: BTreeSet<&str> = all
            .iter()
            .filter_map(|l| l.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str()))
            .collect();
        Ok(values.into_iter().map(str::to_string).collect::<Vec<_>>())
    })
    .await?;
    let (out, warnings) = limited(values, limit);
    Ok(respond(json!(out), &warnings, &[]))
}

/// `GET /api/v1/metadata`: `metric`, `limit` (families), `limit_per_metric`
/// (entries per family); negative limits mean none, as in Prometheus. A
/// token scoped to a commons reads that commons' families only.
pub async fn metadata(State(st): State<AppState>, Extension(access): Extension<Access>, p: Params) -> Result<Response, ApiError> {
    let limit = p.signed_limit("limit")?;
    let per_metric = p.signed_limit("limit_per_metric")?.filter(|n| *n > 0);
    let metric = p.non_empty("metric").map(str::to_string);
    blocking(move || {
        let found = st.metadata.query_scoped(access.scope(), metric.as_deref(), limit, per_metric);
        struct Families<'a>(&'a [(String, Vec<crate::metadata::Metadata>)]);
        impl serde::Serialize for Families<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
        json_body(&Families(&found), &[])
    })
    .await
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

    #[test]
    fn selection_stops_past_the_series_limit_and_dedupes_across_sets() {
        use crate::tsdb::{Queryable, Series};
        let s = |job: &str| Series {
            labels: Arc::new(csoc_common::labels::from_pairs(&[("__name__", "up"), ("job", job)])),
            samples: vec![(1000, 1.0)],
        };
        let store = crate::promql::MemStore::from_series(vec![s("a"), s("b"), s("c")]);
        let q = store.querier(0, 2000);
        let up = vec![Matcher::equal("__name__", "up")];
        let a = vec![Matcher::equal("job", "a")];
        // The same series through two sets counts once.
        let got = select_series(q.as_ref(), &[up.clone(), a.clone()], 3).ok().map(|s| s.len());
        assert_eq!(got, Some(3));
        assert!(matches!(
            select_series(q.as_ref(), std::slice::from_ref(&up), 2),
            Err(SelectError::TooMany)
        ));
        assert!(matches!(select_series(q.as_ref(), &[a.clone(), up], 2), Err(SelectError::TooMany)));
        assert_eq!(select_series(q.as_ref(), &[], 3).ok().map(|s| s.len()), Some(3));
        assert_eq!(select_series(q.as_ref(), &[a], 1).ok().map(|s| s.len()), Some(1));
    }
}
