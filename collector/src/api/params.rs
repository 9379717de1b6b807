//! Request parameters as Prometheus reads them: the query string, plus the
//! form body of a POST (`application/x-www-form-urlencoded`); repeated keys
//! (`match[]`) kept in order.

use axum::extract::{FromRequest, Request};
use axum::http::{Method, header};

use super::ApiError;

/// All parameters of a request.
#[derive(Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

/// Largest form body read (bytes).
const MAX_FORM: usize = 8 << 20;

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
            out.extend(form_urlencoded::parse(&body).into_owned());
        }
        Ok(Params(out))
    }
}

impl Params {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A required parameter.
    pub fn required(&self, key: &str) -> Result<String, ApiError> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(ApiError::BadData(format!("invalid parameter \"{key}\": missing"))),
        }
    }

    /// A time parameter (RFC 3339 or Unix seconds), in ms.
    pub fn time(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => parse_time(v)
                .map(Some)
                .ok_or_else(|| ApiError::BadData(format!("invalid parameter \"{key}\": cannot parse {v:?} to a valid timestamp"))),
        }
    }

    /// A time parameter defaulting to now.
    pub fn time_or_now(&self, key: &str) -> Result<i64, ApiError> {
        Ok(self.time(key)?.unwrap_or_else(csoc_agent::util::now_ms))
    }

    /// A duration parameter (Prometheus duration or float seconds), in ms.
    pub fn duration(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => {
                if let Ok(f) = v.parse::<f64>()
                    && f.is_finite()
                {
                    return Ok(Some((f * 1000.0).round() as i64));
                }
                csoc_agent::util::parse_duration(v)
                    .map(|d| Some(d.as_millis() as i64))
                    .map_err(|_| ApiError::BadData(format!("invalid parameter \"{key}\": cannot parse {v:?} to a valid duration")))
            }
        }
    }

    /// The `limit` parameter (0 or absent: no limit).
    pub fn limit(&self) -> Result<Option<usize>, ApiError> {
        match self.get("limit") {
            None | Some("") => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(0) => Ok(None),
                Ok(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(ApiError::BadData(format!(
                    "invalid parameter \"limit\": {v:?} is not a positive integer"
                ))),
            },
        }
    }
}

/// Parses a Prometheus API time: Unix seconds (fractions allowed) or RFC
/// 3339 (`2026-11-21T10:00:00Z`, `2026-11-21T10:00:00.5+02:00`). Returns ms.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>() {
        return f.is_finite().then(|| (f * 1000.0).round() as i64);
    }
    // Split off a numeric UTC offset, which humantime does not read.
    let (base, offset_secs) = if let Some(b) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        (b, 0i64)
    } else if s.len() > 6 && (s.as_bytes()[s.len() - 6] == b'+' || s.as_bytes()[s.len() - 6] == b'-') && s.as_bytes()[s.len() - 3] == b':' {
        let (b, off) = s.split_at(s.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let h: i64 = off[1..3].parse().ok()?;
        let m: i64 = off[4..6].parse().ok()?;
        (b, sign * (h * 3600 + m * 60))
    } else {
        return None;
    };
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(ms - offset_secs * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20.250Z"), Some(1_700_000_000_250));
        assert_eq!(parse_time("2023-11-15T00:13:20+02:00"), Some(1_700_000_000_000));
        assert_eq!(parse_time("yesterday"), None);
    }
}
