//! The `/metrics` answer both binaries serve: a prometheus-client registry,
//! in the format the client asks for, as Prometheus's own `/metrics` does:
//! OpenMetrics text when the `Accept` header names
//! `application/openmetrics-text` (what Prometheus and the agent's scrape
//! send), else the Prometheus text format 0.0.4 (what curl, `promtool check
//! metrics` and older scrapers read).

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::registry::Registry;

/// Content type of prometheus-client's text encoding.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes `registry` as the body of a `/metrics` response, in OpenMetrics
/// when `headers`' `Accept` asks for it, else in the text format 0.0.4.
pub fn metrics_response(registry: &Registry, headers: &HeaderMap) -> axum::response::Response {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}")).into_response();
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response()
    } else {
        ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], openmetrics_to_text(&body)).into_response()
    }
}

/// Rewrites prometheus-client's OpenMetrics output as the Prometheus text
/// format 0.0.4: a counter family `x` (samples `x_total`) is named
/// `x_total`, an info family `x` (samples `x_info`) becomes the gauge
/// `x_info`, `unknown` becomes `untyped`, and `# UNIT` and `# EOF` go.
/// Samples are unchanged (prometheus-client writes no timestamps or
/// exemplars on these registries).
pub fn openmetrics_to_text(om: &str) -> String {
    let lines: Vec<&str> = om.lines().collect();
    let mut out = String::with_capacity(om.len());
    for (i, line) in lines.iter().enumerate() {
        if *line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // prometheus-client writes a family's HELP, then its TYPE.
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = lines
                .get(i + 1)
                .and_then(|l| l.strip_prefix("# TYPE "))
                .and_then(|r| r.split_once(' '))
                .filter(|(n, _)| *n == name)
                .map_or("untyped", |(_, k)| k);
            out.push_str(&format!("# HELP {} {help}\n", text_family(name, kind).0));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = text_family(name, kind);
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// An OpenMetrics family's name and type in the text format 0.0.4.
fn text_family<'a>(name: &str, kind: &'a str) -> (String, &'a str) {
    match kind {
        "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
        "info" => (format!("{name}_info"), "gauge"),
        "unknown" | "stateset" => (name.to_string(), "untyped"),
        "gaugehistogram" => (name.to_string(), "histogram"),
        k => (name.to_string(), k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_text_0_0_4() {
        let om = "# HELP process_cpu_seconds Total CPU.\n# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total 0.5\n\
                  # HELP csoc_x_build Build.\n# TYPE csoc_x_build info\ncsoc_x_build_info{version=\"1\"} 1\n\
                  # HELP s_bytes Size.\n# TYPE s_bytes gauge\n# UNIT s_bytes bytes\ns_bytes 5\n\
                  # HELP h_seconds Lat.\n# TYPE h_seconds histogram\nh_seconds_sum 1.0\nh_seconds_count 1\nh_seconds_bucket{le=\"+Inf\"} 1\n\
                  # TYPE u unknown\nu 1\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP process_cpu_seconds_total Total CPU.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 0.5\n\
             # HELP csoc_x_build_info Build.\n# TYPE csoc_x_build_info gauge\ncsoc_x_build_info{version=\"1\"} 1\n\
             # HELP s_bytes Size.\n# TYPE s_bytes gauge\ns_bytes 5\n\
             # HELP h_seconds Lat.\n# TYPE h_seconds histogram\nh_seconds_sum 1.0\nh_seconds_count 1\nh_seconds_bucket{le=\"+Inf\"} 1\n\
             # TYPE u untyped\nu 1\n"
        );
    }

    #[test]
    fn accept_chooses_the_format() {
        let mut reg = Registry::default();
        let c: prometheus_client::metrics::counter::Counter = Default::default();
        reg.register("c", "A counter", c);
        let ct = |accept: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(a) = accept {
                h.insert(header::ACCEPT, a.parse().expect("header"));
            }
            let r = metrics_response(&reg, &h);
            r.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(ct(None), TEXT_CONTENT_TYPE);
        assert_eq!(ct(Some("*/*")), TEXT_CONTENT_TYPE);
        assert_eq!(
            ct(Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")),
            OPENMETRICS_CONTENT_TYPE
        );
    }
}
