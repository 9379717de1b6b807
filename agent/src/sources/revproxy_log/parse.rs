//! One access-log line → one [`Record`]: CRI prefix, nginx `\xHH` escapes,
//! the JSON fields the metrics need, and the spec's derived values (service
//! label, login idp, download).

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

/// The fields of a revproxy `json` log record that the source uses.
#[derive(Debug, Deserialize)]
pub struct Record<'a> {
    /// Marker, `nginx`.
    #[serde(borrow)]
    pub gen3log: Cow<'a, str>,
    /// `$time_iso8601` (response finished).
    #[serde(borrow)]
    pub date_access: Cow<'a, str>,
    /// `uid:<sub>,<username>` or `uid:null,…`.
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    /// Response body bytes.
    pub network_bytes_write: u64,
    /// `$request_time`, seconds.
    pub response_secs: f64,
    /// Final status.
    pub http_status_code: u16,
    /// `$request_uri`, path and query before rewrites.
    #[serde(borrow)]
    pub http_request: Cow<'a, str>,
    /// Method.
    #[serde(borrow)]
    pub http_verb: Cow<'a, str>,
    /// `$upstream`; empty when revproxy answered itself.
    #[serde(borrow)]
    pub http_upstream: Cow<'a, str>,
    /// `$proxy_service`.
    #[serde(borrow)]
    pub proxy_service: Cow<'a, str>,
    /// `session` cookie (else `$request_id`): ties a login start to its
    /// callback.
    #[serde(borrow, default)]
    pub session_id: Cow<'a, str>,
}

/// Why a line is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Not JSON, truncated JSON, JSON without the revproxy fields, empty.
    Malformed,
}

/// Decodes nginx's default `\xHH` escapes into JSON: `"` and `\` become
/// JSON escapes, control bytes `\u00HH`, other bytes raw (then read as
/// UTF-8, invalid sequences replaced). Without a backslash the line is
/// returned as is.
pub fn unescape_nginx(line: &[u8]) -> Cow<'_, [u8]> {
    if !line.contains(&b'\\') {
        return Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if b == b'\\'
            && i + 3 < line.len()
            && line[i + 1] == b'x'
            && let (Some(h), Some(l)) = (hex(line[i + 2]), hex(line[i + 3]))
        {
            let v = h << 4 | l;
            match v {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0..=0x1f => out.extend_from_slice(format!("\\u{v:04x}").as_bytes()),
                _ => out.push(v),
            }
            i += 4;
            continue;
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses one log line (without its newline) into a record. `buf` holds
/// the decoded text when the line had escapes.
pub fn parse_line<'a>(line: &'a [u8], buf: &'a mut Vec<u8>) -> Result<Record<'a>, Bad> {
    let line = trim_ascii(line);
    if line.first() != Some(&b'{') {
        return Err(Bad::Malformed);
    }
    let text: &'a [u8] = match unescape_nginx(line) {
        Cow::Borrowed(b) => b,
        Cow::Owned(v) => {
            // Invalid UTF-8 (raw bytes of a Latin-1 URI) is replaced.
            *buf = match String::from_utf8(v) {
                Ok(s) => s.into_bytes(),
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned().into_bytes(),
            };
            buf.as_slice()
        }
    };
    let rec: Record<'a> = serde_json::from_slice(text).map_err(|_| Bad::Malformed)?;
    if rec.gen3log != "nginx" {
        return Err(Bad::Malformed);
    }
    Ok(rec)
}

fn trim_ascii(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., last] = b
        && (*last == b'\r' || *last == b' ')
    {
        b = rest;
    }
    b
}

/// One line of a kubelet CRI log file: `<RFC3339Nano> <stream> <P|F> <content>`.
#[derive(Debug, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// False for a `P` (partial) chunk continued by the next line.
    pub full: bool,
    /// The container's output.
    pub content: &'a [u8],
}

/// Splits a CRI log line; None when the line does not have the CRI form.
pub fn split_cri(line: &[u8]) -> Option<CriLine<'_>> {
    // Timestamp: starts with a digit, no spaces.
    if !line.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let sp = line.iter().position(|&b| b == b' ')?;
    let ts = &line[..sp];
    if ts.len() < 20 || ts.get(4) != Some(&b'-') || ts.get(10) != Some(&b'T') {
        return None;
    }
    let rest = &line[sp + 1..];
    let rest = rest.strip_prefix(b"stdout ").or_else(|| rest.strip_prefix(b"stderr "))?;
    let (full, content) = match rest {
        [b'F', b' ', c @ ..] => (true, c),
        [b'P', b' ', c @ ..] => (false, c),
        [b'F'] => (true, &[][..]),
        [b'P'] => (false, &[][..]),
        _ => return None,
    };
    Some(CriLine { full, content })
}

/// The `service` label: `proxy_service`, except that a `noproxy` record
/// revproxy did forward is named after its upstream host's first DNS label
/// without `-service` (`http://sheepdog-service.ns.svc…` → `sheepdog`).
pub fn service_label<'a>(proxy_service: &'a str, upstream: &'a str) -> &'a str {
    if proxy_service != "noproxy" || upstream.is_empty() {
        return proxy_service;
    }
    let host = upstream.split_once("://").map_or(upstream, |(_, h)| h);
    let end = host.find(['.', ':', '/', '?']).unwrap_or(host.len());
    let label = &host[..end];
    let label = label.strip_suffix("-service").unwrap_or(label);
    if label.is_empty() { proxy_service } else { label }
}

static LOGIN_CALLBACK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^/user/login/(ras/callback|[^/?]+/login)/?(\?|$)").expect("static regex"));
static DOWNLOAD_PRESIGNED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^/user/data/download/[^?]+").expect("static regex"));
static DRS_ACCESS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^/ga4gh/drs/v1/objects/([^?]+/access(/[^/?]*)?|access)/?(\?|$)").expect("static regex"));

/// The idp of a successful login callback (`GET /user/login/<idp>/login`
/// or `/user/login/ras/callback` answered 3xx), as fence's metric names it
/// (`shib` → `itrust`).
pub fn login_idp<'a>(verb: &str, uri: &'a str, status: u16) -> Option<&'a str> {
    if verb != "GET" || !(300..400).contains(&status) || !uri.starts_with("/user/login/") {
        return None;
    }
    let c = LOGIN_CALLBACK.captures(uri)?;
    let seg = c.get(1)?.as_str();
    let idp = seg.split('/').next().unwrap_or(seg);
    Some(if idp == "shib" { "itrust" } else { idp })
}

/// Whether the request obtained a signed download URL: `GET
/// /user/data/download/<guid>` (category download_presigned) or a DRS
/// access request (drs_access), answered 2xx/3xx.
pub fn is_download(verb: &str, uri: &str, status: u16) -> bool {
    if !(200..400).contains(&status) {
        return false;
    }
    if verb == "GET" && uri.starts_with("/user/data/download/") {
        return DOWNLOAD_PRESIGNED.is_match(uri);
    }
    (verb == "GET" || verb == "POST") && uri.starts_with("/ga4gh/drs/v1/objects/") && DRS_ACCESS.is_match(uri)
}

/// Which kind of signed download URL a request obtained, as Gen3's
/// dashboards split them (fence's `drs` label): `drs` for a DRS access
/// request, `presigned` for `GET /user/data/download/<guid>`; `None` if the
/// request did not obtain one (see [`is_download`]).
pub fn download_kind(verb: &str, uri: &str, status: u16) -> Option<&'static str> {
    if !is_download(verb, uri, status) {
        None
    } else if uri.starts_with("/ga4gh/") {
        Some("drs")
    } else {
        Some("presigned")
    }
}

static UPLOAD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^/user/data/(upload(/[^?]+)?|multipart/upload/?)(\?|$)").expect("static regex"));

/// Whether the request obtained a signed upload URL from fence, answered
/// 2xx: `POST /user/data/upload` (new record and its URL), `GET
/// /user/data/upload/<guid>` (URL for an existing record) and `POST
/// /user/data/multipart/upload` (URL of one part). Multipart `init` and
/// `complete` issue no URL and are not counted.
pub fn is_upload(verb: &str, uri: &str, status: u16) -> bool {
    (200..300).contains(&status) && (verb == "GET" || verb == "POST") && uri.starts_with("/user/data/") && UPLOAD.is_match(uri)
}

static LOGIN_START: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^/user/login/[^/?]+/?(\?|$)").expect("static regex"));

/// Longest label value kept from a query parameter (longer: cut).
const MAX_PARAM: usize = 128;

/// The upstream idp (`idp=`) and institution (`shib_idp=`) query
/// parameters of a login start (`GET /user/login/<idp>?…`), percent-decoded
/// and cut at 128 bytes; empty when absent. `None` when the request is not a
/// login start or carries neither parameter.
pub fn login_start_params(verb: &str, uri: &str) -> Option<(String, String)> {
    if verb != "GET" || !uri.starts_with("/user/login/") || !LOGIN_START.is_match(uri) {
        return None;
    }
    let (_, query) = uri.split_once('?')?;
    let (mut idp, mut shib) = (String::new(), String::new());
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "idp" => idp = percent_decode(v),
            "shib_idp" => shib = percent_decode(v),
            _ => {}
        }
    }
    if idp.is_empty() && shib.is_empty() {
        None
    } else {
        Some((idp, shib))
    }
}

/// `application/x-www-form-urlencoded` value → text (`+` is a space;
/// invalid escapes kept as written, invalid UTF-8 replaced), at most
/// [`MAX_PARAM`] bytes on a character boundary.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            x => out.push(x),
        }
        i += 1;
    }
    let mut s = String::from_utf8_lossy(&out).into_owned();
    if s.len() > MAX_PARAM {
        let mut end = MAX_PARAM;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// `2026-08-21T14:00:17+00:00` (or with `Z`, fractional seconds) → Unix
/// seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse::<i64>().ok() };
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        rest = &r[n..];
    }
    let off = match rest {
        "Z" | "" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(rest.len().checked_sub(2)?..)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // `mo` and `d` are in 1..=12 and 1..=31 (checked above).
    Some(csoc_common::calendar::days_from_civil(y, mo as u32, d as u32) * 86400 + h * 3600 + mi * 60 + se - off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revproxy_parse_helpers() {
        assert_eq!(parse_time("1970-01-01T00:00:00+00:00"), Some(0));
        assert_eq!(parse_time("2026-08-21T14:00:17+00:00"), Some(1_787_320_817));
        assert_eq!(parse_time("2026-08-21T16:00:17+02:00"), Some(1_787_320_817));
        assert_eq!(parse_time("2026-08-21T14:00:17.5Z"), Some(1_787_320_817));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(service_label("noproxy", "http://sheepdog-service.ns.svc.cluster.local"), "sheepdog");
        assert_eq!(
            service_label("noproxy", "http://peregrine-service.ns.svc.cluster.local/_version"),
            "peregrine"
        );
        assert_eq!(service_label("noproxy", "http://argo-wrapper-service:8000"), "argo-wrapper");
        assert_eq!(service_label("noproxy", ""), "noproxy");
        assert_eq!(service_label("fence", "http://fence-service.ns"), "fence");
        assert_eq!(login_idp("GET", "/user/login/google/login?code=x", 302), Some("google"));
        assert_eq!(login_idp("GET", "/user/login/ras/callback?code=x", 302), Some("ras"));
        assert_eq!(login_idp("GET", "/user/login/shib/login", 302), Some("itrust"));
        assert_eq!(login_idp("GET", "/user/login/google/login?code=x", 401), None);
        assert_eq!(login_idp("GET", "/user/login/google?redirect=/", 302), None);
        assert!(is_download("GET", "/user/data/download/dg.1/abc", 200));
        assert!(is_download("GET", "/ga4gh/drs/v1/objects/dg.1/abc/access/s3", 200));
        assert!(is_download("POST", "/ga4gh/drs/v1/objects/access", 200));
        assert!(!is_download("GET", "/ga4gh/drs/v1/objects/dg.1/abc", 200));
        assert!(!is_download("GET", "/user/data/download/dg.1/abc", 403));
        assert_eq!(download_kind("GET", "/user/data/download/dg.1/abc", 302), Some("presigned"));
        assert_eq!(download_kind("GET", "/ga4gh/drs/v1/objects/dg.1/abc/access/s3", 200), Some("drs"));
        assert_eq!(download_kind("POST", "/ga4gh/drs/v1/objects/access", 200), Some("drs"));
        assert_eq!(download_kind("GET", "/ga4gh/drs/v1/objects/dg.1/abc", 200), None);
        assert!(is_upload("POST", "/user/data/upload", 201));
        assert!(is_upload("GET", "/user/data/upload/dg.1/abc?protocol=s3", 200));
        assert!(is_upload("POST", "/user/data/multipart/upload", 200));
        assert!(!is_upload("POST", "/user/data/multipart/init", 201));
        assert!(!is_upload("POST", "/user/data/upload", 403));
        assert_eq!(
            login_start_params(
                "GET",
                "/user/login/fence?redirect=https%3A%2F%2Fx%2F&idp=shibboleth&shib_idp=urn%3Amace%3Aincommon%3Auchicago.edu"
            ),
            Some(("shibboleth".into(), "urn:mace:incommon:uchicago.edu".into()))
        );
        assert_eq!(
            login_start_params("GET", "/user/login/shib?shib_idp=a+b%zz%4"),
            Some((String::new(), "a b%zz%4".into()))
        );
        assert_eq!(login_start_params("GET", "/user/login/google?redirect=/"), None);
        assert_eq!(login_start_params("GET", "/user/login/fence/login?idp=x"), None);
        let long = format!("/user/login/fence?shib_idp={}", "é".repeat(100));
        let (_, s) = login_start_params("GET", &long).expect("params");
        assert!(s.len() <= 128 && s.starts_with('é'));
        let line = br#"{"gen3log": "nginx", "date_access": "2026-08-21T14:00:17+00:00", "user_id": "u", "network_bytes_write": 1, "response_secs": 0.5, "http_status_code": 200, "http_request": "/a?q=r\xC3\xA9\x22\x5C", "http_verb": "GET", "http_upstream": "", "proxy_service": "portal", "message": "x" }"#;
        let mut buf = Vec::new();
        let r = parse_line(line, &mut buf).expect("record");
        assert_eq!(r.http_request, "/a?q=ré\"\\");
        let mut buf = Vec::new();
        assert_eq!(parse_line(b"{\"level\":\"info\"}", &mut buf).err(), Some(Bad::Malformed));
        assert_eq!(parse_line(b"", &mut buf).err(), Some(Bad::Malformed));
        assert_eq!(
            split_cri(b"2026-08-21T14:00:17.045474364Z stdout P {\"a\""),
            Some(CriLine {
                full: false,
                content: b"{\"a\""
            })
        );
        assert_eq!(split_cri(b"{\"a\": 1}"), None);
    }
}
