//! `/federate`, as Prometheus serves it: for each series matching any
//! `match[]` selector, the latest sample within the lookback delta before
//! now (staleness markers skipped), in the text exposition format 0.0.4
//! with timestamps, one `# TYPE <name> untyped` line per metric name,
//! sorted by metric name (then labels). A Prometheus scrapes it with
//! `honor_labels: true` to pull the fleet's series into itself.

use csoc_common::gofmt::format_g;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::series::{SelectError, limited_match_sets, select_series, too_many_series};
use super::{AppState, Params};
use crate::tsdb::Labels;

/// Content type of the text exposition format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn plain(code: StatusCode, msg: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg + "\n").into_response()
}

/// The handler (GET, and POST with a form body). At most
/// `max_match_sets` selectors (400 past it) and `max_series_per_request`
/// series (422): the matching series are counted from the index before any
/// sample is read, then each selector's samples are read and reduced to the
/// latest one per series before the next, deduplicated on the storage's
/// shared label sets.
pub async fn federate(State(st): State<AppState>, Extension(access): Extension<super::access::Access>, p: Params) -> Response {
    let sets = match limited_match_sets(&st, &access, &p) {
        Ok(s) => s,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.message()),
    };
    if sets.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "no match[] parameter provided: /federate needs at least one series selector, e.g. match[]={job=\"node\"}".into(),
        );
    }
    let sets = access.restrict(sets);
    let now = csoc_common::time::now_ms();
    let lookback = st.engine.lookback.as_millis() as i64;
    let res = tokio::task::spawn_blocking(move || -> Result<String, (StatusCode, String)> {
        let failed = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, format!("federation failed: {e}"));
        let q = st.storage.querier(now - lookback + 1, now);
        // Count first: no sample is read for a request past the limit.
        match select_series(q.as_ref(), &sets, st.limits.load().max_series_per_request) {
            Ok(_) => {}
            Err(SelectError::TooMany) => return Err((StatusCode::UNPROCESSABLE_ENTITY, too_many_series(&st, &access))),
            Err(SelectError::Storage(e)) => return Err(failed(e.to_string())),
        }
        let mut latest: BTreeMap<Arc<Labels>, (i64, f64)> = BTreeMap::new();
        for set in &sets {
            for s in q.select(set).map_err(|e| failed(e.to_string()))? {
                if let Some(&(t, v)) = s.samples.last()
                    && !csoc_proto::is_stale_nan(v)
                {
                    latest.insert(s.labels, (t, v));
                }
            }
        }
        Ok(render(latest.into_iter().map(|(l, (t, v))| (l, t, v)).collect()))
    })
    .await;
    match res {
        Ok(Ok(body)) => (StatusCode::OK, [(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], body).into_response(),
        Ok(Err((code, msg))) => plain(code, msg),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("federation task failed: {e}")),
    }
}

fn name_of(l: &Labels) -> &str {
    l.iter().find(|(k, _)| k == "__name__").map(|(_, v)| v.as_str()).unwrap_or("")
}

/// Renders samples (labels, ms, value) as the text format 0.0.4: grouped
/// by metric name, sorted, duplicates (one series matched by two
/// selectors) once; nameless series are skipped, as Prometheus does.
pub fn render(mut samples: Vec<(Arc<Labels>, i64, f64)>) -> String {
    samples.retain(|(l, _, _)| !name_of(l).is_empty());
    samples.sort_by(|a, b| name_of(&a.0).cmp(name_of(&b.0)).then_with(|| a.0.cmp(&b.0)));
    samples.dedup_by(|a, b| a.0 == b.0);
    let mut out = String::with_capacity(samples.len() * 96);
    let mut last: Option<&str> = None;
    for (labels, t, v) in &samples {
        let name = name_of(labels);
        if last != Some(name) {
            let _ = writeln!(out, "# TYPE {name} untyped");
            last = Some(name);
        }
        out.push_str(name);
        let mut first = true;
        for (k, val) in labels.iter().filter(|(k, _)| k != "__name__") {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(val, &mut out);
            out.push('"');
        }
        if !first {
            out.push('}');
        }
        let _ = writeln!(out, " {} {t}", format_g(*v));
    }
    out
}

pub use csoc_common::exposition::escape_label_value;

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Arc<Labels> {
        Arc::new(csoc_common::labels::from_pairs(pairs))
    }

    #[test]
    fn floats_format_like_go() {
        assert_eq!(format_g(1.0), "1");
        assert_eq!(format_g(0.52), "0.52");
        assert_eq!(format_g(-3.25), "-3.25");
        assert_eq!(format_g(123456.0), "123456");
        assert_eq!(format_g(999999.5), "999999.5");
        assert_eq!(format_g(1e6), "1e+06");
        assert_eq!(format_g(16710004736.0), "1.6710004736e+10");
        assert_eq!(format_g(1e21), "1e+21");
        assert_eq!(format_g(1.5e300), "1.5e+300");
        assert_eq!(format_g(0.0001), "0.0001");
        assert_eq!(format_g(0.00001), "1e-05");
        assert_eq!(format_g(-2.5e-7), "-2.5e-07");
        assert_eq!(format_g(f64::MIN_POSITIVE), "2.2250738585072014e-308");
        assert_eq!(format_g(0.0), "0");
        assert_eq!(format_g(-0.0), "-0");
        assert_eq!(format_g(f64::NAN), "NaN");
        assert_eq!(format_g(f64::INFINITY), "+Inf");
        assert_eq!(format_g(f64::NEG_INFINITY), "-Inf");
        for v in [0.1, 1.0 / 3.0, 1e-5, 6.02e23, 12345.678, 9007199254740993.0] {
            assert_eq!(format_g(v).parse::<f64>().ok(), Some(v), "round trip of {v}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label_value("a\\b\"c\nd é", &mut s);
        assert_eq!(s, r#"a\\b\"c\nd é"#);
    }

    #[test]
    fn renders_grouped_sorted_and_deduplicated() {
        let out = render(vec![
            (l(&[("__name__", "up"), ("job", "b")]), 2_000, 0.0),
            (
                l(&[("__name__", "node_load1"), ("path", "C:\\x"), ("q", "say \"hi\"\n")]),
                1_000,
                0.25,
            ),
            (l(&[("__name__", "up"), ("job", "a")]), 1_500, 1.0),
            (l(&[("__name__", "up"), ("job", "a")]), 1_500, 1.0),
            (l(&[("job", "nameless")]), 1_000, 1.0),
            (l(&[("__name__", "bare")]), 3_000, 1e-9),
        ]);
        assert_eq!(
            out,
            "# TYPE bare untyped\n\
             bare 1e-09 3000\n\
             # TYPE node_load1 untyped\n\
             node_load1{path=\"C:\\\\x\",q=\"say \\\"hi\\\"\\n\"} 0.25 1000\n\
             # TYPE up untyped\n\
             up{job=\"a\"} 1 1500\n\
             up{job=\"b\"} 0 2000\n"
        );
        assert_eq!(render(Vec::new()), "");
    }
}
