//! Sample values as text.

/// A sample value as Prometheus writes it in its JSON API and the agent in
/// its text output (Go's `strconv.FormatFloat(v, 'f', -1, 64)` for finite
/// values; `NaN`, `+Inf`, `-Inf`).
pub fn fmt_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}
