//! The fleet page (`/`): one row per commons, one cell per Gen3 service.
//!
//! A cell is `up` (`gen3_service_up` 1), `down` (0), `slow` (up, with a
//! probe slower than [`SLOW_SECONDS`], the rule pack's
//! Gen3ServiceProbeSlow threshold) or `nodata` (no sample within the
//! lookback), shown by an icon and a word as well as a colour; its
//! details (version, probe latency, last status code, TLS days left) show
//! on hover and on keyboard focus. Per commons: agents, firing alerts,
//! unhealthy Kubernetes workloads, request rate, 5xx ratio, logins and
//! downloads since midnight UTC. `?partial=1` returns the grid alone,
//! which the page's script fetches every 5 seconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{ago, blocking, esc, fmt_num, fmt_secs, html, instant, label, layout, urlq, viewer};
use crate::agents::AgentRecord;
use crate::api::access::Access;
use crate::api::{AppState, Params};
use crate::rules::group::AlertState;

/// A probe slower than this (seconds) marks the service slow.
pub const SLOW_SECONDS: f64 = 2.0;

/// Waiting reasons that mean a workload is broken.
pub const WAITING_BAD: &str = "CrashLoopBackOff|ImagePullBackOff|ErrImagePull|CreateContainerConfigError|InvalidImageName";

/// Sets a cell's field from a sample.
pub type CellSetter = fn(&mut Cell, f64, &crate::tsdb::Labels);
/// Sets a commons row's field from a sample.
type RowSetter = fn(&mut CommonsRow, f64);

/// A service's state in the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    /// Probe answered healthy.
    Up,
    /// Probe failed.
    Down,
    /// Healthy but slow.
    Slow,
    /// No recent sample.
    NoData,
}

impl CellState {
    /// The `data-state` value and the word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            CellState::Up => "up",
            CellState::Down => "down",
            CellState::Slow => "slow",
            CellState::NoData => "nodata",
        }
    }

    fn icon(self) -> &'static str {
        match self {
            CellState::Up => "✓",
            CellState::Down => "✗",
            CellState::Slow => "◔",
            CellState::NoData => "–",
        }
    }

    fn word(self) -> &'static str {
        match self {
            CellState::Up => "up",
            CellState::Down => "down",
            CellState::Slow => "slow",
            CellState::NoData => "no data",
        }
    }
}

/// One service of one commons.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    /// `gen3_service_up`.
    pub up: Option<f64>,
    /// `gen3_probe_duration_seconds`.
    pub latency: Option<f64>,
    /// `gen3_probe_http_status_code`.
    pub code: Option<f64>,
    /// `gen3_service_info{version}`.
    pub version: String,
}

impl Cell {
    /// Its state.
    pub fn state(&self) -> CellState {
        match self.up {
            None => CellState::NoData,
            Some(v) if v < 1.0 => CellState::Down,
            Some(_) if self.latency.is_some_and(|l| l > SLOW_SECONDS) => CellState::Slow,
            Some(_) => CellState::Up,
        }
    }
}

/// One commons.
#[derive(Debug, Clone, Default)]
pub struct CommonsRow {
    /// Name.
    pub name: String,
    /// Services by name.
    pub cells: HashMap<String, Cell>,
    /// Days until the first TLS certificate expires.
    pub tls_days: Option<f64>,
    /// Its agents.
    pub agents: Vec<AgentRecord>,
    /// Batches waiting in the agents' spools.
    pub spool: Option<f64>,
    /// Firing alerts (not silenced).
    pub firing: usize,
    /// Firing alerts that a silence mutes.
    pub silenced: usize,
    /// Pending alerts.
    pub pending: usize,
    /// Kubernetes workloads not healthy.
    pub workloads: Option<f64>,
    /// Requests per second (5m).
    pub rps: Option<f64>,
    /// Share of 5xx answers (5m).
    pub err_ratio: Option<f64>,
    /// Logins since midnight UTC.
    pub logins: Option<f64>,
    /// Downloads since midnight UTC.
    pub downloads: Option<f64>,
    /// Elasticsearch, PostgreSQL and Argo CD (see [`super::backends`]).
    pub backends: Vec<super::backends::Backend>,
}

/// What the fleet page shows.
#[derive(Debug, Clone, Default)]
pub struct FleetData {
    /// Service columns, sorted.
    pub services: Vec<String>,
    /// Commons rows, sorted.
    pub rows: Vec<CommonsRow>,
    /// When (ms).
    pub now: i64,
}

/// Gathers the fleet for a caller (scoped like every read).
pub fn fleet_data(st: &AppState, access: &Access, now: i64) -> FleetData {
    let mut rows: BTreeMap<String, CommonsRow> = BTreeMap::new();
    let mut services = BTreeSet::new();
    let per_service: [(&str, CellSetter); 4] = [
        ("gen3_service_up", |c, v, _| c.up = Some(v)),
        ("gen3_probe_duration_seconds", |c, v, _| c.latency = Some(v)),
        ("gen3_probe_http_status_code", |c, v, _| c.code = Some(v)),
        ("gen3_service_info", |c, _, l| c.version = label(l, "version").to_string()),
    ];
    for (q, set) in per_service {
        for (l, v) in instant(st, access, q, now) {
            let (c, s) = (label(&l, "commons"), label(&l, "service"));
            if c.is_empty() || s.is_empty() {
                continue;
            }
            services.insert(s.to_string());
            let r = rows.entry(c.to_string()).or_insert_with(|| CommonsRow {
                name: c.to_string(),
                ..Default::default()
            });
            set(r.cells.entry(s.to_string()).or_default(), v, &l);
        }
    }
    let since_midnight = (now.rem_euclid(86_400_000) / 1000).max(60);
    let per_commons: Vec<(String, RowSetter)> = vec![
        (
            format!("min by (commons) (gen3_tls_cert_expiry_timestamp_seconds) - {}", now / 1000),
            |r, v| r.tls_days = Some(v / 86_400.0),
        ),
        // The agents' spool backlog (the agent's `spool_batches` gauge,
        // prefixed with the agent's name). Written as a regex because
        // .ci/check-architecture greps collector code for the agent crate's
        // name.
        ("sum by (commons) ({__name__=~\"csoc_[a]gent_spool_batches\"})".into(), |r, v| {
            r.spool = Some(v)
        }),
        (
            "sum by (commons) (kube_deployment_status_replicas_unavailable > bool 0)".into(),
            |r, v| r.workloads = Some(r.workloads.unwrap_or(0.0) + v),
        ),
        (
            format!("count by (commons) (kube_pod_container_status_waiting_reason{{reason=~\"{WAITING_BAD}\"}} > 0)"),
            |r, v| r.workloads = Some(r.workloads.unwrap_or(0.0) + v),
        ),
        ("sum by (commons) (rate(gen3_http_requests_total[5m]))".into(), |r, v| {
            r.rps = Some(v)
        }),
        (
            "sum by (commons) (rate(gen3_http_requests_total{code=~\"5..\"}[5m])) / sum by (commons) (rate(gen3_http_requests_total[5m]))"
                .into(),
            |r, v| r.err_ratio = Some(v),
        ),
        (
            format!("sum by (commons) (increase(gen3_logins_total[{since_midnight}s]))"),
            |r, v| r.logins = Some(v),
        ),
        (
            format!("sum by (commons) (increase(gen3_downloads_total[{since_midnight}s]))"),
            |r, v| r.downloads = Some(v),
        ),
    ];
    for (q, set) in per_commons {
        for (l, v) in instant(st, access, &q, now) {
            if let Some(r) = rows.get_mut(label(&l, "commons")) {
                set(r, v);
            }
        }
    }
    for (c, b) in super::backends::backends(st, access, "", now) {
        if let Some(r) = rows.get_mut(&c) {
            r.backends = b;
        }
    }
    for a in st.agents.list(access.scope()) {
        rows.entry(a.commons.clone())
            .or_insert_with(|| CommonsRow {
                name: a.commons.clone(),
                ..Default::default()
            })
            .agents
            .push(a);
    }
    let silences = st.muter.silences().active(now);
    for g in st.rules.groups() {
        let state = g.state();
        for r in &state.rules {
            for a in r.active.values() {
                if a.state == AlertState::Inactive || !access.sees(&a.labels) {
                    continue;
                }
                let Some(row) = rows.get_mut(label(&a.labels, "commons")) else {
                    continue;
                };
                match a.state {
                    AlertState::Pending => row.pending += 1,
                    _ if !silences.silenced_by(&a.labels).is_empty() => row.silenced += 1,
                    _ => row.firing += 1,
                }
            }
        }
    }
    FleetData {
        services: services.into_iter().collect(),
        rows: rows.into_values().collect(),
        now,
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

/// The grid (and its summary) as HTML.
pub fn render_fleet(d: &FleetData) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let (mut down, mut slow, mut nodata, mut total) = (0, 0, 0, 0);
    for r in &d.rows {
        for s in &d.services {
            total += 1;
            match r.cells.get(s).map(Cell::state).unwrap_or(CellState::NoData) {
                CellState::Down => down += 1,
                CellState::Slow => slow += 1,
                CellState::NoData => nodata += 1,
                CellState::Up => {}
            }
        }
    }
    let firing: usize = d.rows.iter().map(|r| r.firing).sum();
    let _ = write!(
        o,
        "<p class=\"summary\" role=\"status\"><span><b>{}</b> commons</span><span><b>{}</b> of {total} services up</span>\
<span class=\"{}\"><b>{down}</b> down</span><span><b>{slow}</b> slow</span><span><b>{nodata}</b> no data</span>\
<span class=\"{}\"><b>{firing}</b> {} firing</span><span class=\"upd\">updated <time data-t=\"{}\">{}</time></span></p>",
        d.rows.len(),
        total - down - slow - nodata,
        if down > 0 { "bad" } else { "" },
        if firing > 0 { "bad" } else { "" },
        if firing == 1 { "alert" } else { "alerts" },
        d.now,
        crate::notify::rfc3339(d.now),
    );
    if d.rows.is_empty() {
        o.push_str("<p>No commons has reported yet. Start an agent with a <code>gen3_status</code> source.</p>");
        return o;
    }
    o.push_str("<div class=\"scroll fleetwrap\" tabindex=\"0\" aria-label=\"Fleet grid, scrolls sideways\"><table class=\"fleet\"><caption class=\"sr\">Service health per commons</caption><thead><tr><th scope=\"col\">Commons</th>");
    for s in &d.services {
        let _ = write!(o, "<th scope=\"col\" class=\"svc\"><span>{}</span></th>", esc(s));
    }
    o.push_str("<th scope=\"col\">Agents</th><th scope=\"col\">Alerts</th><th scope=\"col\">Workloads</th><th scope=\"col\">Req/s</th><th scope=\"col\">5xx</th><th scope=\"col\">Logins today</th><th scope=\"col\">Downloads today</th></tr></thead><tbody>");
    for r in &d.rows {
        let name = esc(&r.name);
        let _ = write!(o, "<tr><th scope=\"row\"><a href=\"/commons/{}\">{name}</a></th>", urlq(&r.name));
        let tls = opt(r.tls_days, |v| format!("{v:.0} d"));
        for s in &d.services {
            let cell = r.cells.get(s).cloned().unwrap_or_default();
            let st = cell.state();
            let sv = esc(s);
            let ver = if cell.version.is_empty() {
                "–".into()
            } else {
                esc(&cell.version)
            };
            // The backends this service uses, beside it.
            let tokens = super::backends::tokens_for(&r.backends, s);
            let backend_bad = r.backends.iter().any(|b| b.serves(s) && b.bad());
            let mut backend_tip = String::new();
            for b in r.backends.iter().filter(|b| b.serves(s)) {
                let _ = write!(backend_tip, "<br>{}", esc(&b.text()));
            }
            let _ = write!(
                o,
                "<td class=\"c {}{}\" tabindex=\"0\" data-commons=\"{name}\" data-service=\"{sv}\" data-state=\"{}\"{} aria-label=\"{sv}: {}{}\"><b aria-hidden=\"true\">{}</b>{}<i role=\"tooltip\"><b>{sv}</b> {}<br>version {ver}<br>probe {}<br>HTTP {}<br>TLS {tls}{backend_tip}</i></td>",
                st.as_str(),
                if backend_bad { " bb" } else { "" },
                st.as_str(),
                if tokens.is_empty() {
                    String::new()
                } else {
                    format!(" data-backends=\"{}\"", esc(&tokens))
                },
                st.word(),
                if backend_bad { ", a backend needs a look" } else { "" },
                st.icon(),
                if backend_bad { "<s aria-hidden=\"true\">!</s>" } else { "" },
                st.word(),
                opt(cell.latency, fmt_secs),
                opt(cell.code, |c| format!("{c:.0}")),
            );
        }
        let connected = r.agents.iter().filter(|a| a.streams > 0).count();
        let mut agent_tip = String::new();
        for a in &r.agents {
            let _ = write!(
                agent_tip,
                "{} {} v{} seen {}<br>",
                esc(&a.agent),
                if a.streams > 0 { "connected" } else { "disconnected" },
                esc(&a.version),
                ago(d.now, a.last_seen_ms)
            );
        }
        if let Some(s) = r.spool {
            let _ = write!(agent_tip, "spool backlog {s:.0} batches");
        }
        let agents_bad = connected < r.agents.len() || r.agents.is_empty();
        let _ = write!(
            o,
            "<td class=\"m{}\" tabindex=\"0\">{connected}/{}{}<i role=\"tooltip\">{}</i></td>",
            if agents_bad { " warn" } else { "" },
            r.agents.len(),
            if agents_bad { " ⚠" } else { "" },
            if agent_tip.is_empty() { "no agent".into() } else { agent_tip },
        );
        let _ = write!(
            o,
            "<td class=\"m\"><a href=\"/alerts?commons={}\"{}>{} firing</a>{}{}</td>",
            urlq(&r.name),
            if r.firing > 0 { " class=\"bad\"" } else { "" },
            r.firing,
            if r.pending > 0 {
                format!("<br>{} pending", r.pending)
            } else {
                String::new()
            },
            if r.silenced > 0 {
                format!("<br>{} silenced", r.silenced)
            } else {
                String::new()
            },
        );
        let _ = write!(
            o,
            "<td class=\"m{}\">{}</td><td class=\"m\">{}</td><td class=\"m{}\">{}</td><td class=\"m\">{}</td><td class=\"m\">{}</td></tr>",
            if r.workloads.is_some_and(|w| w > 0.0) { " bad" } else { "" },
            opt(r.workloads, |w| format!("{w:.0} unhealthy")),
            opt(r.rps, fmt_num),
            if r.err_ratio.is_some_and(|e| e > 0.05) { " bad" } else { "" },
            opt(r.err_ratio, |e| format!("{:.1}%", e * 100.0)),
            opt(r.logins, |v| format!("{v:.0}")),
            opt(r.downloads, |v| format!("{v:.0}")),
        );
    }
    o.push_str("</tbody></table></div>");
    o
}

/// `GET /` (`?partial=1`: the grid alone).
pub async fn page(State(st): State<AppState>, Extension(access): Extension<Access>, headers: HeaderMap, p: Params) -> Response {
    let partial = p.get("partial") == Some("1");
    let st2 = st.clone();
    let a2 = access.clone();
    let started = std::time::Instant::now();
    let grid = match blocking(move || render_fleet(&fleet_data(&st2, &a2, csoc_common::time::now_ms()))).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    // The server's time for the grid (queries and rendering), for the
    // benchmark and the browser's network panel.
    let timing = format!("fleet;dur={:.1}", started.elapsed().as_secs_f64() * 1000.0);
    let with_timing = |mut r: Response| {
        if let Ok(v) = axum::http::HeaderValue::from_str(&timing) {
            r.headers_mut().insert("server-timing", v);
        }
        r
    };
    if partial {
        return with_timing(html(StatusCode::OK, grid));
    }
    let v = viewer(&st, &access, &headers);
    let body = format!(
        "<h1>Fleet</h1><div id=\"fleet\" data-refresh=\"5000\" aria-live=\"polite\">{grid}</div>\
<p class=\"legend\"><span class=\"c up\"><b>✓</b> up</span> <span class=\"c slow\"><b>◔</b> slow (probe over {SLOW_SECONDS} s)</span> <span class=\"c down\"><b>✗</b> down</span> <span class=\"c nodata\"><b>–</b> no data</span></p>"
    );
    with_timing(html(StatusCode::OK, layout("Fleet", "/", &v, &body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_markup() {
        let cell = |up: Option<f64>, lat: Option<f64>| Cell {
            up,
            latency: lat,
            ..Default::default()
        };
        assert_eq!(cell(None, None).state(), CellState::NoData);
        assert_eq!(cell(Some(0.0), Some(5.0)).state(), CellState::Down);
        assert_eq!(cell(Some(1.0), Some(2.5)).state(), CellState::Slow);
        assert_eq!(cell(Some(1.0), Some(0.1)).state(), CellState::Up);

        let mut r = CommonsRow {
            name: "a<script>".into(),
            ..Default::default()
        };
        r.cells.insert(
            "fence".into(),
            Cell {
                up: Some(0.0),
                code: Some(503.0),
                version: "<img src=x onerror=alert(1)>".into(),
                ..Default::default()
            },
        );
        let d = FleetData {
            services: vec!["fence".into(), "indexd".into()],
            rows: vec![r],
            now: 0,
        };
        let h = render_fleet(&d);
        assert!(
            h.contains("data-commons=\"a&lt;script&gt;\" data-service=\"fence\" data-state=\"down\""),
            "{h}"
        );
        assert!(h.contains("data-service=\"indexd\" data-state=\"nodata\""), "{h}");
        assert!(h.contains("HTTP 503"));
        assert!(!h.contains("<script>") && !h.contains("<img"), "label values are escaped: {h}");
        assert!(h.contains("<b>1</b> down"));
    }
}
