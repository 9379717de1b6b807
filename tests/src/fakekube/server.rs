//! The HTTP side: routing of the apiserver's paths, authentication,
//! RBAC-like refusals, list (paging, resourceVersion semantics, selectors),
//! watch streams, get, `pods/log` and the metrics API. Every error is a
//! `metav1.Status` object, as the apiserver sends.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::resources::{self, RESOURCES, ResourceType};
use super::selectors::{FieldSelector, LabelSelector};
use super::state::{ChangeKind, LogStream, Request, State, parse_rfc3339, rfc3339, rfc3339_nanos};
use super::table;

/// What the server threads share with the `FakeKube` handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// The resourceVersion after the last change; watchers wake on it.
    pub rv_tx: watch::Sender<u64>,
    /// Bumped to end every open watch abruptly.
    pub cut_tx: watch::Sender<u64>,
    /// Bumped to end every open log stream abruptly.
    pub cut_logs_tx: watch::Sender<u64>,
    /// The bearer token required.
    pub token: String,
    /// The user named in 403 messages.
    pub user: String,
    /// Period of BOOKMARK events.
    pub bookmark_interval: Duration,
    /// `host:port` (for `/api`'s serverAddressByClientCIDRs).
    pub addr: String,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Chunk = Result<Bytes, std::io::Error>;

/// An error answer, boxed (a `Response` is large).
type Fail = Box<Response>;

/// One watch event to send: type, object, and the resourceVersion to put
/// in a copy of the object (for objects that left the selection).
type Outgoing = (&'static str, Arc<Value>, Option<u64>);

/// A `metav1.Status` failure.
pub(crate) fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Response {
    json_response(code, &status_object(code.as_u16(), reason, message, details))
}

pub(crate) fn status_object(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut v = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    });
    if let Some(d) = details {
        v["details"] = d;
    }
    v["code"] = json!(code);
    v
}

fn not_found_path() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn bad_request(message: &str) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn invalid(what: &str, message: &str) -> Response {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!("{what}.meta.k8s.io \"\" is invalid: {message}"),
        None,
    )
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    bytes_response(code, "application/json", body)
}

fn bytes_response(code: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    r
}

fn stream_response(content_type: &'static str, rx: mpsc::Receiver<Chunk>) -> Response {
    let mut r = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    r
}

/// The decoded query parameters, in order.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                Ok(x) => {
                    out.push(x);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub fn parse(q: &str) -> Query {
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    /// A boolean as Go's `strconv.ParseBool` reads it (absent or invalid:
    /// false).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
    }
}

/// The single handler: every path goes through here.
pub(crate) async fn handle(AxState(s): AxState<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let raw_query = uri.query().unwrap_or("").to_string();
    let q = Query::parse(&raw_query);
    let watch = q.flag("watch");
    s.lock().record(Request {
        method: method.to_string(),
        path: path.clone(),
        query: raw_query,
        watch,
    });
    let segs: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz"] => return bytes_response(StatusCode::OK, "text/plain; charset=utf-8", b"ok".to_vec()),
        ["version"] => return json_response(StatusCode::OK, &version()),
        _ => {}
    }
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == s.token);
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized", None);
    }
    if method != Method::GET && method != Method::HEAD {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        );
    }
    let optional = {
        let st = s.lock();
        resources::Optional {
            metrics: st.metrics_api,
            argocd: st.argocd_crd,
        }
    };
    let as_table = table::wants_table(&headers);
    match segs.as_slice() {
        ["api"] => json_response(StatusCode::OK, &resources::api_versions(&s.addr)),
        ["api", "v1"] => json_response(StatusCode::OK, &resources::api_resource_list("", "v1")),
        ["apis"] => json_response(StatusCode::OK, &resources::api_group_list(optional)),
        ["apis", g] => match resources::api_group(g, optional) {
            Some(doc) => json_response(StatusCode::OK, &doc),
            None => not_found_path(),
        },
        ["apis", g, v] if resources::group_served(g, v, optional) => json_response(StatusCode::OK, &resources::api_resource_list(g, v)),
        ["api", "v1", rest @ ..] => resource(&s, "", "v1", rest, &q, watch, as_table).await,
        ["apis", g, v, rest @ ..] if resources::group_served(g, v, optional) => resource(&s, g, v, rest, &q, watch, as_table).await,
        _ => not_found_path(),
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0-csoc-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The 403 a real apiserver sends when RBAC denies `verb` on a resource.
fn forbidden(s: &Shared, r: &ResourceType, sub: Option<&str>, verb: &str, ns: Option<&str>, name: Option<&str>) -> Response {
    let resource = match sub {
        Some(sub) => format!("{}/{sub}", r.plural),
        None => r.plural.to_string(),
    };
    // The subject is the group-qualified resource (`cronjobs.batch`).
    let qualified = if r.group.is_empty() {
        r.plural.to_string()
    } else {
        format!("{}.{}", r.plural, r.group)
    };
    let subject = match name {
        Some(n) => format!("{qualified} \"{n}\""),
        None => qualified,
    };
    let scope = match ns {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let message = format!(
        "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
        s.user, r.group
    );
    let mut details = serde_json::Map::new();
    if let Some(n) = name {
        details.insert("name".into(), json!(n));
    }
    if !r.group.is_empty() {
        details.insert("group".into(), json!(r.group));
    }
    details.insert("kind".into(), json!(r.plural));
    status(StatusCode::FORBIDDEN, "Forbidden", &message, Some(Value::Object(details)))
}

fn is_forbidden(st: &State, r: &ResourceType, sub: Option<&str>) -> bool {
    let resource = match sub {
        Some(sub) => format!("{}/{sub}", r.plural),
        None => r.plural.to_string(),
    };
    st.forbidden.iter().any(|f| match f.split_once('.') {
        Some((res, group)) => res == resource && group == r.group,
        None => *f == resource,
    })
}

fn not_found_object(r: &ResourceType, name: &str) -> Response {
    let mut details = serde_json::Map::new();
    details.insert("name".into(), json!(name));
    if !r.group.is_empty() {
        details.insert("group".into(), json!(r.group));
    }
    details.insert("kind".into(), json!(r.plural));
    let what = if r.group.is_empty() {
        r.plural.to_string()
    } else {
        format!("{}.{}", r.plural, r.group)
    };
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{what} \"{name}\" not found"),
        Some(Value::Object(details)),
    )
}

/// `[namespaces/NS/]PLURAL[/NAME[/SUB]]` under a group version.
async fn resource(s: &Arc<Shared>, group: &str, version: &str, rest: &[&str], q: &Query, watch: bool, as_table: bool) -> Response {
    let (ns, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => (Some(*ns), *plural, tail.first().copied(), tail.get(1).copied()),
        [plural] => (None, *plural, None, None),
        [plural, name] => (None, *plural, Some(*name), None),
        [plural, name, sub] => (None, *plural, Some(*name), Some(*sub)),
        _ => return not_found_path(),
    };
    let Some(res) = resources::find(group, version, plural) else {
        return not_found_path();
    };
    let r = &RESOURCES[res];
    if (!r.namespaced && ns.is_some()) || (r.namespaced && ns.is_none() && name.is_some()) {
        return not_found_path();
    }
    if let Some(sub) = sub {
        let known = (sub == "log" && r.kind == "Pod") || (sub == "status" && !r.metrics);
        if !known {
            return not_found_path();
        }
    }
    let verb = match (name, watch) {
        (_, true) => "watch",
        (Some(_), false) => "get",
        (None, false) => "list",
    };
    if is_forbidden(&s.lock(), r, sub) {
        return forbidden(s, r, sub, verb, ns, name);
    }
    if r.metrics {
        if watch {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Some(json!({"kind": r.plural})),
            );
        }
        return metrics(s, res, ns, name, q);
    }
    match (name, sub) {
        (None, _) if watch => start_watch(s, res, ns, None, q, as_table),
        (None, _) => list(s, res, ns, q, as_table),
        (Some(n), None) if watch => start_watch(s, res, ns, Some(n), q, as_table),
        (Some(n), Some("log")) => pod_log(s, ns.unwrap_or_default(), n, q),
        (Some(n), _) => {
            let obj = s.lock().objects[res].get(&super::state::key(ns.unwrap_or_default(), n)).cloned();
            match obj {
                Some(o) if as_table => json_response(StatusCode::OK, &table::table(r, &[o], None, None)),
                Some(o) => json_response(StatusCode::OK, &o),
                None => not_found_object(r, n),
            }
        }
    }
}

/// A list item as the apiserver writes it: without `kind` and `apiVersion`.
struct Item<'a>(&'a Value);

impl Serialize for Item<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let mut map = ser.serialize_map(None)?;
                for (k, v) in m.iter().filter(|(k, _)| *k != "kind" && *k != "apiVersion") {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            other => other.serialize(ser),
        }
    }
}

#[derive(Serialize)]
struct ListOut<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
    metadata: Value,
    items: Vec<Item<'a>>,
}

/// The continue token: base64 of the apiserver's JSON (`v`, `rv`, `start`).
fn encode_continue(rv: u64, start: &str) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string();
    base64::engine::general_purpose::URL_SAFE.encode(raw)
}

fn decode_continue(token: &str) -> Option<(u64, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    if v["v"] != "meta.k8s.io/v1" {
        return None;
    }
    Some((v["rv"].as_u64()?, v["start"].as_str()?.to_string()))
}

fn parse_rv(s: &str) -> Result<u64, Fail> {
    s.parse::<u64>().map_err(|_| {
        Box::new(bad_request(&format!(
            "invalid resource version: strconv.ParseUint: parsing {s:?}: invalid syntax"
        )))
    })
}

fn too_large(asked: u64, current: u64) -> Response {
    status(
        StatusCode::GATEWAY_TIMEOUT,
        "Timeout",
        &format!("Too large resource version: {asked}, current: {current}"),
        Some(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        })),
    )
}

fn selectors(q: &Query, r: &ResourceType) -> Result<(LabelSelector, FieldSelector), Fail> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(|e| Box::new(bad_request(&e.0)))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), r).map_err(|e| Box::new(bad_request(&e.0)))?;
    Ok((labels, fields))
}

/// Which state a list reads, from `resourceVersion`, `resourceVersionMatch`,
/// `limit` and `continue` (the semantics table of the API concepts page).
fn list_rv(st: &State, q: &Query, continue_rv: Option<u64>) -> Result<u64, Fail> {
    if let Some(rv) = continue_rv {
        if rv < st.oldest {
            return Err(Box::new(status(
                StatusCode::GONE,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                None,
            )));
        }
        return Ok(rv);
    }
    let rv = q.get("resourceVersion").filter(|v| !v.is_empty());
    let rvm = q.get("resourceVersionMatch").filter(|v| !v.is_empty());
    let limited = q.get("limit").and_then(|l| l.parse::<i64>().ok()).is_some_and(|l| l > 0);
    let exact = |n: u64| {
        if n < st.oldest {
            Err(Box::new(status(
                StatusCode::GONE,
                "Expired",
                &format!("too old resource version: {n} ({})", st.oldest),
                None,
            )))
        } else if n > st.rv {
            Err(Box::new(too_large(n, st.rv)))
        } else {
            Ok(n)
        }
    };
    let not_older = |n: u64| if n > st.rv { Err(Box::new(too_large(n, st.rv))) } else { Ok(st.rv) };
    match (rv, rvm) {
        (None, None) | (Some("0"), None | Some("NotOlderThan")) => Ok(st.rv),
        (None, Some(_)) => Err(Box::new(invalid(
            "ListOptions",
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ))),
        (Some("0"), Some("Exact")) => Err(Box::new(invalid(
            "ListOptions",
            "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        ))),
        (Some(n), Some("Exact")) => exact(parse_rv(n)?),
        (Some(n), Some("NotOlderThan")) => not_older(parse_rv(n)?),
        (Some(n), None) if limited => exact(parse_rv(n)?),
        (Some(n), None) => not_older(parse_rv(n)?),
        (Some(_), Some(other)) => Err(Box::new(invalid(
            "ListOptions",
            &format!("resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\", \"\""),
        ))),
    }
}

fn list(s: &Shared, res: usize, ns: Option<&str>, q: &Query, as_table: bool) -> Response {
    let r = &RESOURCES[res];
    let (labels, fields) = match selectors(q, r) {
        Ok(x) => x,
        Err(e) => return *e,
    };
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        None => None,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(_) => None,
            Err(_) => return bad_request(&format!("strconv.ParseInt: parsing {l:?}: invalid syntax")),
        },
    };
    let cont = match q.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            if q.get("resourceVersion").is_some_and(|v| !v.is_empty() && v != "0") {
                return bad_request("specifying resource version is not allowed when using continue");
            }
            match decode_continue(c) {
                Some(x) => Some(x),
                None => return bad_request("continue key is not valid: illegal base64 data at input byte 0"),
            }
        }
    };
    let (at, items, more) = {
        let st = s.lock();
        let at = match list_rv(&st, q, cont.as_ref().map(|c| c.0)) {
            Ok(at) => at,
            Err(e) => return *e,
        };
        let snapshot;
        let map = if at == st.rv {
            &st.objects[res]
        } else {
            snapshot = st.snapshot(res, at);
            &snapshot
        };
        let prefix = ns.map(|n| format!("{n}/"));
        let start = match &cont {
            Some((_, k)) => k.clone(),
            None => prefix.clone().unwrap_or_default(),
        };
        let mut items = Vec::new();
        let mut more: Option<(String, usize)> = None;
        let mut iter = map.range(start..);
        for (k, o) in iter.by_ref() {
            if let Some(p) = &prefix
                && !k.starts_with(p.as_str())
            {
                break;
            }
            if !labels.matches(o) || !fields.matches(o) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                // One more matching object exists: page here.
                let last = items.last().map(|(k, _): &(String, Arc<Value>)| k.clone()).unwrap_or_default();
                let remaining = 1 + iter
                    .take_while(|(k, _)| prefix.as_ref().is_none_or(|p| k.starts_with(p.as_str())))
                    .filter(|(_, o)| labels.matches(o) && fields.matches(o))
                    .count();
                more = Some((last, remaining));
                break;
            }
            items.push((k.clone(), o.clone()));
        }
        (at, items, more)
    };
    let mut metadata = json!({"resourceVersion": at.to_string()});
    if let Some((last, remaining)) = &more {
        metadata["continue"] = json!(encode_continue(at, &format!("{last}\u{0}")));
        if labels.is_empty() && fields.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let objs: Vec<Arc<Value>> = items.into_iter().map(|(_, o)| o).collect();
    if as_table {
        let cont = metadata.get("continue").cloned();
        return json_response(StatusCode::OK, &table::table(r, &objs, Some(at), cont));
    }
    let out = ListOut {
        kind: r.list_kind(),
        api_version: r.api_version(),
        metadata,
        items: objs.iter().map(|o| Item(o)).collect(),
    };
    let mut body = serde_json::to_vec(&out).unwrap_or_default();
    body.push(b'\n');
    bytes_response(StatusCode::OK, "application/json", body)
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// Synthetic ADDED events for the current state, then changes.
    Now,
    /// Changes after this resourceVersion.
    From(u64),
}

#[derive(Debug)]
struct WatchSpec {
    res: usize,
    namespace: Option<String>,
    name: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    start: Start,
    send_initial_events: bool,
    bookmarks: bool,
    timeout: Option<Duration>,
    /// Objects as one-row Tables (kubectl's human output).
    table: bool,
}

impl WatchSpec {
    /// The event line for an object (a one-row Table when asked).
    fn line(&self, kind: &str, o: &Arc<Value>) -> Bytes {
        if self.table {
            event_line(kind, &table::table(&RESOURCES[self.res], std::slice::from_ref(o), None, None))
        } else {
            event_line(kind, o)
        }
    }

    fn matches(&self, o: &Value) -> bool {
        let meta = &o["metadata"];
        self.namespace.as_deref().is_none_or(|n| meta["namespace"].as_str() == Some(n))
            && self.name.as_deref().is_none_or(|n| meta["name"].as_str() == Some(n))
            && self.labels.matches(o)
            && self.fields.matches(o)
    }
}

fn start_watch(s: &Arc<Shared>, res: usize, ns: Option<&str>, name: Option<&str>, q: &Query, table: bool) -> Response {
    let r = &RESOURCES[res];
    let (labels, fields) = match selectors(q, r) {
        Ok(x) => x,
        Err(e) => return *e,
    };
    let send_initial_events = q.flag("sendInitialEvents");
    let bookmarks = q.flag("allowWatchBookmarks");
    let rvm = q.get("resourceVersionMatch").filter(|v| !v.is_empty());
    if send_initial_events {
        if rvm != Some("NotOlderThan") {
            return invalid(
                "ListOptions",
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            );
        }
        if !bookmarks {
            return invalid(
                "ListOptions",
                "allowWatchBookmarks: Required value: sendInitialEvents requires setting allowWatchBookmarks to true",
            );
        }
    } else if rvm.is_some() {
        return invalid(
            "ListOptions",
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        );
    }
    let timeout = match q.get("timeoutSeconds").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => match t.parse::<u64>() {
            Ok(n) => Some(Duration::from_secs(n)),
            Err(_) => return bad_request(&format!("strconv.ParseInt: parsing {t:?}: invalid syntax")),
        },
    };
    let start = match q.get("resourceVersion").filter(|v| !v.is_empty() && *v != "0") {
        _ if send_initial_events => Start::Now,
        None => Start::Now,
        Some(v) => match parse_rv(v) {
            Ok(n) => {
                let current = s.lock().rv;
                if n > current {
                    return too_large(n, current);
                }
                Start::From(n)
            }
            Err(e) => return *e,
        },
    };
    let spec = WatchSpec {
        res,
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        labels,
        fields,
        start,
        send_initial_events,
        bookmarks,
        timeout,
        table,
    };
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run_watch(s.clone(), spec, tx));
    stream_response("application/json", rx)
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    #[derive(Serialize)]
    struct Ev<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: &'a Value,
    }
    let mut b = serde_json::to_vec(&Ev { kind, object }).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn bookmark(r: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": meta}),
    )
}

fn expired_event(asked: u64, oldest: u64) -> Bytes {
    event_line(
        "ERROR",
        &status_object(410, "Expired", &format!("too old resource version: {asked} ({oldest})"), None),
    )
}

/// The events after `cursor` that this watcher sees, and the new cursor;
/// `Err(oldest)` when `cursor` has fallen out of the history.
fn drain(s: &Shared, w: &WatchSpec, cursor: &mut u64) -> Result<Vec<Outgoing>, u64> {
    let st = s.lock();
    if *cursor < st.oldest {
        return Err(st.oldest);
    }
    let from = st.history.partition_point(|c| c.rv <= *cursor);
    let mut out = Vec::new();
    for c in st.history.range(from..) {
        if c.res != w.res || w.namespace.as_deref().is_some_and(|n| n != c.namespace) {
            continue;
        }
        let before = c.prev.as_ref().is_some_and(|p| w.matches(p));
        match c.kind {
            ChangeKind::Deleted => {
                if before {
                    out.push(("DELETED", c.object.clone(), None));
                }
            }
            ChangeKind::Added | ChangeKind::Modified => match (before, w.matches(&c.object)) {
                (true, true) => out.push(("MODIFIED", c.object.clone(), None)),
                (false, true) => out.push(("ADDED", c.object.clone(), None)),
                // It stopped matching: the watcher sees it go, as its
                // last matching state at this change's resourceVersion.
                (true, false) => {
                    if let Some(p) = &c.prev {
                        out.push(("DELETED", p.clone(), Some(c.rv)));
                    }
                }
                (false, false) => {}
            },
        }
    }
    *cursor = st.rv;
    Ok(out)
}

async fn run_watch(s: Arc<Shared>, w: WatchSpec, tx: mpsc::Sender<Chunk>) {
    let r = &RESOURCES[w.res];
    let mut rv_rx = s.rv_tx.subscribe();
    let mut cut_rx = s.cut_tx.subscribe();
    let start = {
        let st = s.lock();
        match w.start {
            Start::Now => Ok((
                st.rv,
                st.objects[w.res].values().filter(|o| w.matches(o)).cloned().collect::<Vec<_>>(),
            )),
            Start::From(n) if n < st.oldest => Err((n, st.oldest)),
            Start::From(n) => Ok((n, Vec::new())),
        }
    };
    let (mut cursor, initial) = match start {
        Ok(x) => x,
        Err((n, oldest)) => {
            let _ = tx.send(Ok(expired_event(n, oldest))).await;
            return;
        }
    };
    for o in initial {
        if tx.send(Ok(w.line("ADDED", &o))).await.is_err() {
            return;
        }
    }
    if w.send_initial_events && tx.send(Ok(bookmark(r, cursor, true))).await.is_err() {
        return;
    }
    let deadline = w.timeout.map(|t| Instant::now() + t);
    let period = s.bookmark_interval.max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    let mut bookmark_due = false;
    loop {
        match drain(&s, &w, &mut cursor) {
            Err(oldest) => {
                let _ = tx.send(Ok(expired_event(cursor, oldest))).await;
                return;
            }
            Ok(events) => {
                for (kind, obj, rv) in events {
                    let line = match rv {
                        Some(rv) => {
                            let mut o = (*obj).clone();
                            o["metadata"]["resourceVersion"] = json!(rv.to_string());
                            w.line(kind, &Arc::new(o))
                        }
                        None => w.line(kind, &obj),
                    };
                    if tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
            }
        }
        if bookmark_due {
            bookmark_due = false;
            if tx.send(Ok(bookmark(r, cursor, false))).await.is_err() {
                return;
            }
        }
        tokio::select! {
            biased;
            _ = cut_rx.changed() => {
                // An error from the body makes hyper drop the connection
                // without the last chunk, as a cut connection looks.
                let _ = tx.send(Err(std::io::Error::other("watch cut by the fake apiserver"))).await;
                return;
            }
            changed = rv_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick(), if w.bookmarks => bookmark_due = true,
            _ = sleep_until(deadline), if deadline.is_some() => return,
            _ = tx.closed() => return,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The names of a pod's containers and init containers.
fn container_names(pod: &Value) -> (Vec<String>, Vec<String>) {
    let names = |k: &str| -> Vec<String> {
        pod["spec"][k]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    (names("containers"), names("initContainers"))
}

fn int_param(q: &Query, k: &str) -> Result<Option<i64>, Fail> {
    match q.get(k).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Box::new(bad_request(&format!("strconv.ParseInt: parsing {v:?}: invalid syntax")))),
    }
}

/// `GET .../pods/NAME/log`.
fn pod_log(s: &Arc<Shared>, ns: &str, pod: &str, q: &Query) -> Response {
    let follow = q.flag("follow");
    let timestamps = q.flag("timestamps");
    let (tail, limit, since_seconds) = match (int_param(q, "tailLines"), int_param(q, "limitBytes"), int_param(q, "sinceSeconds")) {
        (Ok(t), Ok(l), Ok(ss)) => (t, l, ss),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return *e,
    };
    let since_time = q.get("sinceTime").filter(|v| !v.is_empty());
    let mut errs = Vec::new();
    if tail.is_some_and(|t| t < 0) {
        errs.push("tailLines: Invalid value: must be greater than or equal to 0");
    }
    if limit.is_some_and(|l| l < 1) {
        errs.push("limitBytes: Invalid value: must be greater than 0");
    }
    if since_seconds.is_some_and(|x| x < 1) {
        errs.push("sinceSeconds: Invalid value: must be greater than 0");
    }
    if since_seconds.is_some() && since_time.is_some() {
        errs.push("sinceSeconds: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified");
    }
    if !errs.is_empty() {
        return invalid("PodLogOptions", &format!("[{}]", errs.join(", ")));
    }
    // The apiserver passes sinceTime on to the kubelet with second
    // precision: lines from the start of that second on.
    let since = match (since_time, since_seconds) {
        (Some(t), _) => match parse_rfc3339(t) {
            Ok(t) => {
                let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            }
            Err(e) => return bad_request(&e),
        },
        (None, Some(n)) => SystemTime::now().checked_sub(Duration::from_secs(n.unsigned_abs())),
        (None, None) => None,
    };
    let stream = {
        let mut st = s.lock();
        let Some(p) = st.objects[resources::POD].get(&super::state::key(ns, pod)).cloned() else {
            return not_found_object(&RESOURCES[resources::POD], pod);
        };
        let (containers, init) = container_names(&p);
        let container = match q.get("container").filter(|c| !c.is_empty()) {
            Some(c) if containers.iter().chain(init.iter()).any(|n| n == c) => c.to_string(),
            Some(c) => return bad_request(&format!("container {c} is not valid for pod {pod}")),
            None if containers.len() == 1 => containers[0].clone(),
            None if containers.is_empty() => {
                return bad_request(&format!("a container name must be specified for pod {pod}"));
            }
            None => {
                let mut m = format!(
                    "a container name must be specified for pod {pod}, choose one of: [{}]",
                    containers.join(" ")
                );
                if !init.is_empty() {
                    m.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
                }
                return bad_request(&m);
            }
        };
        st.log_stream(ns, pod, &container)
    };
    let (tx, rx) = mpsc::channel(256);
    let opts = LogOpts {
        follow,
        timestamps,
        since,
        tail: tail.map(|t| t as u64),
        limit: limit.map(|l| l as u64),
    };
    tokio::spawn(run_log(s.clone(), stream, opts, tx));
    stream_response("text/plain", rx)
}

#[derive(Debug)]
struct LogOpts {
    follow: bool,
    timestamps: bool,
    since: Option<SystemTime>,
    tail: Option<u64>,
    limit: Option<u64>,
}

async fn run_log(s: Arc<Shared>, stream: Arc<LogStream>, o: LogOpts, tx: mpsc::Sender<Chunk>) {
    let mut notify = stream.notify.subscribe();
    let mut cut = s.cut_logs_tx.subscribe();
    let mut cursor: Option<u64> = None;
    let mut sent: u64 = 0;
    loop {
        let (chunk, closed) = {
            let Ok(b) = stream.buf.lock() else { return };
            let end = b.first + b.lines.len() as u64;
            let from = match cursor {
                Some(c) => c.max(b.first),
                None => {
                    let mut from = b.first;
                    if let Some(t) = o.tail {
                        from = from.max(end.saturating_sub(t));
                    }
                    from
                }
            };
            let mut out = Vec::new();
            for (t, line) in b.lines.iter().skip((from - b.first) as usize) {
                if o.since.is_some_and(|since| *t < since) {
                    continue;
                }
                if o.timestamps {
                    out.extend_from_slice(rfc3339_nanos(*t).as_bytes());
                    out.push(b' ');
                }
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            cursor = Some(end);
            (out, b.closed)
        };
        let mut chunk = chunk;
        let mut done = false;
        if let Some(limit) = o.limit
            && sent + chunk.len() as u64 >= limit
        {
            chunk.truncate((limit - sent) as usize);
            done = true;
        }
        sent += chunk.len() as u64;
        if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
            return;
        }
        if done || !o.follow || closed {
            return;
        }
        tokio::select! {
            biased;
            _ = cut.changed() => {
                let _ = tx.send(Err(std::io::Error::other("log stream cut by the fake apiserver"))).await;
                return;
            }
            changed = notify.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

/// `metrics.k8s.io/v1beta1` pods and nodes (get and list).
fn metrics(s: &Shared, res: usize, ns: Option<&str>, name: Option<&str>, q: &Query) -> Response {
    let r = &RESOURCES[res];
    let labels = match LabelSelector::parse(q.get("labelSelector").unwrap_or("")) {
        Ok(l) => l,
        Err(e) => return bad_request(&e.0),
    };
    let now = SystemTime::now();
    let stamp = rfc3339(now);
    let items: Vec<Value> = {
        let st = s.lock();
        if r.plural == "pods" {
            st.pod_metrics
                .iter()
                .filter(|((n, p), _)| ns.is_none_or(|x| x == n) && name.is_none_or(|x| x == p))
                .map(|((n, p), usage)| {
                    let labels = st.objects[resources::POD]
                        .get(&super::state::key(n, p))
                        .map(|pod| pod["metadata"]["labels"].clone())
                        .unwrap_or(Value::Null);
                    let mut meta = json!({"name": p, "namespace": n, "creationTimestamp": stamp});
                    if labels.is_object() {
                        meta["labels"] = labels;
                    }
                    let containers: Vec<Value> = usage
                        .iter()
                        .map(|u| json!({"name": u.container, "usage": {"cpu": u.cpu, "memory": u.memory}}))
                        .collect();
                    json!({
                        "kind": r.kind, "apiVersion": r.api_version(), "metadata": meta,
                        "timestamp": stamp, "window": "15s", "containers": containers,
                    })
                })
                .collect()
        } else {
            st.node_metrics
                .iter()
                .filter(|(n, _)| name.is_none_or(|x| x == *n))
                .map(|(n, (cpu, mem))| {
                    let labels = st.objects[resources::NODE]
                        .get(n)
                        .map(|node| node["metadata"]["labels"].clone())
                        .unwrap_or(Value::Null);
                    let mut meta = json!({"name": n, "creationTimestamp": stamp});
                    if labels.is_object() {
                        meta["labels"] = labels;
                    }
                    json!({
                        "kind": r.kind, "apiVersion": r.api_version(), "metadata": meta,
                        "timestamp": stamp, "window": "20s", "usage": {"cpu": cpu, "memory": mem},
                    })
                })
                .collect()
        }
    };
    let items: Vec<Value> = items.into_iter().filter(|i| labels.matches(i)).collect();
    match name {
        Some(n) => match items.into_iter().next() {
            Some(i) => json_response(StatusCode::OK, &i),
            None => not_found_object(r, n),
        },
        None => {
            let out = ListOut {
                kind: r.list_kind(),
                api_version: r.api_version(),
                metadata: json!({}),
                items: items.iter().map(Item).collect(),
            };
            let mut body = serde_json::to_vec(&out).unwrap_or_default();
            body.push(b'\n');
            bytes_response(StatusCode::OK, "application/json", body)
        }
    }
}

/// Answers every request (the router's fallback).
pub(crate) fn router(s: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(s)
}
