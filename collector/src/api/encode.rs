//! Query results written straight to JSON text, in Prometheus's shapes and
//! number formats (timestamps as seconds with up to millisecond precision,
//! values as strings with Go's shortest formatting), without building a
//! `serde_json::Value` tree first: a 24 h range query holds tens of
//! thousands of points.

use std::fmt::Write;

use crate::promql::Value;
use crate::tsdb::Labels;

/// Appends a JSON string literal.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Seconds with the milliseconds, if any, as Prometheus writes them.
fn push_ts(out: &mut String, t: i64) {
    let (neg, a) = (t < 0, t.unsigned_abs());
    if neg {
        out.push('-');
    }
    out.push_str(itoa::Buffer::new().format(a / 1000));
    let ms = a % 1000;
    if ms != 0 {
        out.push('.');
        // Three digits without their trailing zeros.
        let digits = [ms / 100, ms / 10 % 10, ms % 10];
        let n = if ms % 100 == 0 {
            1
        } else if ms % 10 == 0 {
            2
        } else {
            3
        };
        for d in &digits[..n] {
            out.push(char::from(b'0' + *d as u8));
        }
    }
}

fn push_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    push_ts(out, t);
    out.push_str(",\"");
    csoc_common::gofmt::push_f(out, v);
    out.push_str("\"]");
}

fn push_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, k);
        out.push(':');
        push_str(out, v);
    }
    out.push('}');
}

/// The whole success body of a query: `{"status":"success","data":…}` plus
/// `warnings` / `infos` when there are any.
pub fn query_body(v: &Value, warnings: &[String], infos: &[String]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"status\":\"success\",\"data\":{\"resultType\":");
    match v {
        Value::Scalar(t, x) => {
            out.push_str("\"scalar\",\"result\":");
            push_point(&mut out, *t, *x);
        }
        Value::String(t, s) => {
            out.push_str("\"string\",\"result\":[");
            push_ts(&mut out, *t);
            out.push(',');
            push_str(&mut out, s);
            out.push(']');
        }
        Value::Vector(vs) => {
            out.push_str("\"vector\",\"result\":[");
            for (i, s) in vs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                push_labels(&mut out, &s.labels);
                out.push_str(",\"value\":");
                push_point(&mut out, s.t, s.v);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(ms) => {
            out.reserve(ms.iter().map(|s| s.samples.len() * 24).sum());
            out.push_str("\"matrix\",\"result\":[");
            for (i, s) in ms.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                push_labels(&mut out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, (t, x)) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    push_point(&mut out, *t, *x);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
    for (name, list) in [("warnings", warnings), ("infos", infos)] {
        if list.is_empty() {
            continue;
        }
        let _ = write!(out, ",\"{name}\":[");
        for (i, w) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_str(&mut out, w);
        }
        out.push(']');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::InstantSample;
    use crate::tsdb::Series;
    use std::sync::Arc;

    #[test]
    fn same_json_as_the_tree_encoder_and_prometheus_numbers() {
        let labels: Arc<Labels> = Arc::new(vec![("__name__".into(), "up".into()), ("job".into(), "a \"q\"\n\u{1}".into())]);
        let m = Value::Matrix(vec![Series {
            labels: labels.clone(),
            samples: vec![(1_000, 1.0), (1_500, f64::NAN), (-2_250, f64::INFINITY), (0, 0.1)],
        }]);
        let body = query_body(&m, &["w".into()], &[]);
        let parsed: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(parsed["data"]["resultType"], "matrix");
        assert_eq!(parsed["data"]["result"][0]["metric"]["job"], "a \"q\"\n\u{1}");
        assert_eq!(parsed["warnings"][0], "w");
        assert!(parsed.get("infos").is_none());
        assert!(body.contains("[1,\"1\"],[1.5,\"NaN\"],[-2.25,\"+Inf\"],[0,\"0.1\"]"), "{body}");
        let v = Value::Vector(vec![InstantSample {
            labels,
            t: 1_795_302_067_500,
            v: 2.5,
        }]);
        let body = query_body(&v, &[], &[]);
        assert!(body.contains("\"value\":[1795302067.5,\"2.5\"]"), "{body}");
        let s = query_body(&Value::Scalar(10, 3.0), &[], &[]);
        assert_eq!(
            s,
            "{\"status\":\"success\",\"data\":{\"resultType\":\"scalar\",\"result\":[0.01,\"3\"]}}"
        );
    }

    #[test]
    fn timestamps_are_seconds_with_their_milliseconds() {
        for (t, want) in [
            (0, "0"),
            (1_000, "1"),
            (1_500, "1.5"),
            (1_050, "1.05"),
            (1_007, "1.007"),
            (-2_250, "-2.25"),
            (-999, "-0.999"),
            (1_795_302_067_500, "1795302067.5"),
            (i64::MIN, "-9223372036854775.808"),
        ] {
            let mut out = String::new();
            push_ts(&mut out, t);
            assert_eq!(out, want);
        }
    }
}
