//! Request parameters as Prometheus reads them: the query string, plus the
//! form body of a POST (`application/x-www-form-urlencoded`); repeated keys
//! (`match[]`) kept in order. Parsing follows Prometheus's API: times as
//! RFC 3339 or Unix seconds with fractions, durations as Prometheus
//! duration strings or float seconds, `limit` as a non-negative integer
//! (0: none), and errors name the parameter (`invalid parameter "start":
//! ...`).

use axum::extract::{FromRequest, Request};
use axum::http::{Method, header};

use super::ApiError;

/// All parameters of a request.
#[derive(Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

/// Largest form body read (bytes).
const MAX_FORM: usize = 8 << 20;

/// Prometheus's lowest and highest API times (what its clients send for
/// "unbounded"), as formatted by Go.
const MIN_TIME_FORMATTED: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_FORMATTED: &str = "292277025-08-18T07:12:54.999999999Z";

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let mut out: Vec<(String, String)> = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if req.method() == Method::POST && is_form {
            let body = axum::body::to_bytes(req.into_body(), MAX_FORM)
                .await
                .map_err(|e| ApiError::BadData(format!("reading the form body: {e}")))?;
            // Go's ParseForm puts the body's values before the URL's.
            let mut form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
            form.append(&mut out);
            out = form;
        }
        Ok(Params(out))
    }
}

fn invalid(key: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::BadData(format!("invalid parameter \"{key}\": {msg}"))
}

impl Params {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The first value of `key` unless absent or empty (Go's `FormValue`
    /// does not tell them apart).
    pub fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// Every value of `key`.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A required parameter.
    pub fn required(&self, key: &str) -> Result<String, ApiError> {
        match self.non_empty(key) {
            Some(v) => Ok(v.to_string()),
            None => Err(invalid(key, "missing")),
        }
    }

    /// A time parameter (RFC 3339 or Unix seconds), in ms.
    pub fn time(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(v) => parse_time(v)
                .map(Some)
                .ok_or_else(|| invalid(key, format_args!("cannot parse {v:?} to a valid timestamp"))),
        }
    }

    /// A required time parameter.
    pub fn required_time(&self, key: &str) -> Result<i64, ApiError> {
        self.time(key)?.ok_or_else(|| invalid(key, "missing"))
    }

    /// A time parameter defaulting to now.
    pub fn time_or_now(&self, key: &str) -> Result<i64, ApiError> {
        Ok(self.time(key)?.unwrap_or_else(csoc_common::time::now_ms))
    }

    /// A duration parameter (Prometheus duration or float seconds), in ms.
    pub fn duration(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(v) => parse_duration(v).map(Some).map_err(|e| invalid(key, e)),
        }
    }

    /// The `limit` parameter as Prometheus 3 reads it for series, labels,
    /// label values and queries: a non-negative integer, 0 or absent
    /// meaning no limit.
    pub fn limit(&self) -> Result<Option<usize>, ApiError> {
        match self.non_empty("limit") {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(0) => Ok(None),
                Ok(n) if n > 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
                Ok(_) => Err(invalid("limit", "limit must be non-negative")),
                Err(_) => Err(invalid("limit", format_args!("cannot parse {v:?}: not an integer"))),
            },
        }
    }

    /// An integer parameter where a negative value means "no limit" (as
    /// `limit` and `limit_per_metric` of `/api/v1/metadata`).
    pub fn signed_limit(&self, key: &str) -> Result<Option<usize>, ApiError> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n < 0 => Ok(None),
                Ok(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
                Err(_) => Err(ApiError::BadData(format!("{key} must be a number"))),
            },
        }
    }
}

/// Parses a Prometheus API time: Unix seconds (fractions allowed, rounded
/// to ms) or RFC 3339 (`2026-11-21T10:00:00Z`, `2026-11-21T10:00:00.5+02:00`).
/// Returns ms.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = (f * 1000.0).round();
        return (ms.is_finite() && ms.abs() < 9.2e18).then_some(ms as i64);
    }
    match s {
        MIN_TIME_FORMATTED => return Some(i64::MIN),
        MAX_TIME_FORMATTED => return Some(i64::MAX),
        _ => {}
    }
    // Split off a numeric UTC offset, which humantime does not read.
    let b = s.as_bytes();
    let (base, offset_secs) = if let Some(rest) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        (rest, 0i64)
    } else if s.len() > 6 && matches!(b[s.len() - 6], b'+' | b'-') && b[s.len() - 3] == b':' {
        let (rest, off) = s.split_at(s.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let h: i64 = off.get(1..3)?.parse().ok()?;
        let m: i64 = off.get(4..6)?.parse().ok()?;
        (rest, sign * (h * 3600 + m * 60))
    } else {
        return None;
    };
    // RFC 3339 needs the `T` (or a space) and seconds; humantime's weak
    // parser would also take less.
    if base.len() < 19 || !matches!(base.as_bytes()[10], b'T' | b't' | b' ') {
        return None;
    }
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    let ms = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).ok()?,
        Err(e) => -i64::try_from(e.duration().as_millis()).ok()?,
    };
    Some(ms - offset_secs * 1000)
}

/// Parses a Prometheus API duration: float seconds (`15`, `0.5`) or a
/// Prometheus duration string (`5m`, `1h30m`, `100ms`). Returns ms; the
/// error says why (without the parameter name).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = (f * 1000.0).round();
        if !ms.is_finite() || ms.abs() > 9.2e18 {
            return Err(format!("cannot parse {s:?} to a valid duration. It overflows int64"));
        }
        return Ok(ms as i64);
    }
    prometheus_duration_ms(s).ok_or_else(|| format!("cannot parse {s:?} to a valid duration"))
}

/// A Prometheus duration string (`1y2w3d4h5m6s7ms`: units in this order,
/// each at most once, integers), in ms.
fn prometheus_duration_ms(s: &str) -> Option<i64> {
    csoc_common::duration::parse_duration_ms(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use csoc_common::duration::{format_bytes as fmt_bytes, format_duration_ms as fmt_duration};

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn err(r: Result<impl std::fmt::Debug, ApiError>) -> String {
        match r {
            Err(ApiError::BadData(m)) => m,
            other => panic!("expected bad_data, got {other:?}"),
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500));
        assert_eq!(parse_time("1700000000.1234"), Some(1_700_000_000_123));
        assert_eq!(parse_time("-1.5"), Some(-1_500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20.250Z"), Some(1_700_000_000_250));
        assert_eq!(parse_time("2023-11-14T22:13:20.123456789Z"), Some(1_700_000_000_123));
        assert_eq!(parse_time("2023-11-15T00:13:20+02:00"), Some(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T20:13:20-02:00"), Some(1_700_000_000_000));
        assert_eq!(parse_time(MIN_TIME_FORMATTED), Some(i64::MIN));
        assert_eq!(parse_time(MAX_TIME_FORMATTED), Some(i64::MAX));
        for bad in [
            "yesterday",
            "",
            "NaN",
            "inf",
            "1e300",
            "2023-11-14",
            "2023-11-14T22:13Z",
            "2023-11-14T22:13:20+2",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn time_params_name_the_parameter() {
        let q = p(&[("start", "soon"), ("end", ""), ("time", "1.5")]);
        assert_eq!(
            err(q.time("start")),
            r#"invalid parameter "start": cannot parse "soon" to a valid timestamp"#
        );
        assert_eq!(q.time("end").ok(), Some(None), "empty is absent, as Go's FormValue");
        assert_eq!(q.time("time").ok(), Some(Some(1_500)));
        assert_eq!(err(q.required_time("end")), r#"invalid parameter "end": missing"#);
        assert_eq!(err(q.required("query")), r#"invalid parameter "query": missing"#);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("-2"), Ok(-2_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("100ms"), Ok(100));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400_000));
        assert!(parse_duration("1e300").is_err_and(|e| e.contains("overflows")));
        assert_eq!(
            parse_duration("1y2w3d4h5m6s7ms"),
            Ok(((((365 + 14 + 3) * 24 + 4) * 60 + 5) * 60 + 6) * 1000 + 7)
        );
        for bad in ["", "5 minutes", "m5", "1.5m", "NaN", "5m1h", "5m5m", "99999999999999999999y"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let q = p(&[("step", "often")]);
        assert_eq!(
            err(q.duration("step")),
            r#"invalid parameter "step": cannot parse "often" to a valid duration"#
        );
    }

    #[test]
    fn limits() {
        assert_eq!(p(&[]).limit().ok(), Some(None));
        assert_eq!(p(&[("limit", "0")]).limit().ok(), Some(None));
        assert_eq!(p(&[("limit", "5")]).limit().ok(), Some(Some(5)));
        assert_eq!(
            err(p(&[("limit", "-1")]).limit()),
            r#"invalid parameter "limit": limit must be non-negative"#
        );
        assert!(err(p(&[("limit", "x")]).limit()).starts_with(r#"invalid parameter "limit""#));
        assert_eq!(p(&[("limit", "-1")]).signed_limit("limit").ok(), Some(None));
        assert_eq!(p(&[("limit", "0")]).signed_limit("limit").ok(), Some(Some(0)));
        assert_eq!(
            err(p(&[("limit_per_metric", "x")]).signed_limit("limit_per_metric")),
            "limit_per_metric must be a number"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_duration(0), "0s");
        assert_eq!(fmt_duration(15 * 86_400_000), "15d");
        assert_eq!(fmt_duration(14 * 86_400_000), "2w");
        assert_eq!(fmt_duration(90 * 86_400_000), "90d");
        assert_eq!(fmt_duration(5_400_000), "1h30m");
        assert_eq!(fmt_duration(300_000), "5m");
        assert_eq!(fmt_duration(1_500), "1s500ms");
        assert_eq!(fmt_bytes(10 << 30), "10GiB");
        assert_eq!(fmt_bytes(512 << 20), "512MiB");
        assert_eq!(fmt_bytes(1000), "1000B");
    }
}
