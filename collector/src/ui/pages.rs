//! The console's other pages: commons, alerts (with silences), Explore,
//! rules, agents, system, and the public status page.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::fleet::{Cell, CellState, WAITING_BAD};
use super::{
    Viewer, ago, blocking, error_page, esc, explore_link, fmt_num, fmt_secs, html, instant, label, layout, pq, range, urlq, viewer,
};
use crate::api::access::Access;
use crate::api::{AppState, Params};
use crate::config::valid_commons;
use crate::notify::rfc3339;
use crate::rules::file::RuleKind;
use crate::rules::group::AlertState;

/// A chart drawn by the page's script with uPlot from a range query.
fn chart(title: &str, q: &str, range: &str, unit: &str) -> String {
    format!(
        "<figure class=\"chart\" data-query=\"{}\" data-range=\"{}\" data-unit=\"{}\"><figcaption>{} <a href=\"{}\">Open in Explore</a></figcaption><div class=\"plot\" role=\"img\" aria-label=\"{}\"></div></figure>",
        esc(q),
        esc(range),
        esc(unit),
        esc(title),
        esc(&explore_link(q, range)),
        esc(title),
    )
}

/// `GET /commons/{name}`.
pub async fn commons(
    State(st): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if !valid_commons(&name) {
        return error_page(StatusCode::NOT_FOUND, "no such commons");
    }
    if let Some(c) = access.scope()
        && c != name
    {
        return error_page(StatusCode::NOT_FOUND, "no such commons");
    }
    let st2 = st.clone();
    let a2 = access.clone();
    let n2 = name.clone();
    let body = match blocking(move || commons_body(&st2, &a2, &n2, csoc_common::time::now_ms())).await {
        Ok(Some(b)) => b,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, "no data for that commons"),
        Err(r) => return r,
    };
    let v = viewer(&st, &access, &headers);
    html(StatusCode::OK, layout(&format!("Commons {name}"), "", &v, &body))
}

/// The 24-hour strip: one mark per 15 minutes.
const STRIP_STEP_MS: i64 = 15 * 60 * 1000;

fn commons_body(st: &AppState, access: &Access, name: &str, now: i64) -> Option<String> {
    let c = pq(name);
    let mut cells: BTreeMap<String, Cell> = BTreeMap::new();
    let per_service: [(&str, super::fleet::CellSetter); 4] = [
        ("gen3_service_up", |c, v, _| c.up = Some(v)),
        ("gen3_probe_duration_seconds", |c, v, _| c.latency = Some(v)),
        ("gen3_probe_http_status_code", |c, v, _| c.code = Some(v)),
        ("gen3_service_info", |c, _, l| c.version = label(l, "version").to_string()),
    ];
    for (m, set) in per_service {
        for (l, v) in instant(st, access, &format!("{m}{{commons={c}}}"), now) {
            let s = label(&l, "service");
            if !s.is_empty() {
                set(cells.entry(s.to_string()).or_default(), v, &l);
            }
        }
    }
    let agents = st.agents.list(Some(name));
    if cells.is_empty() && agents.is_empty() && instant(st, access, &format!("count({{commons={c}}})"), now).is_empty() {
        return None;
    }
    // Each service's state over 24 hours.
    let start = now - 24 * 3600 * 1000;
    let strips = range(
        st,
        access,
        &format!("min by (service) (gen3_service_up{{commons={c}}})"),
        start,
        now,
        STRIP_STEP_MS,
    );
    let mut strip_of: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for s in strips {
        let svc = label(&s.labels, "service").to_string();
        strip_of.entry(svc).or_default().extend(s.samples.iter().map(|(t, v)| (*t, *v)));
    }
    let backs = super::backends::backends(st, access, &format!("commons={c}"), now)
        .remove(name)
        .unwrap_or_default();
    let mut o = String::new();
    let _ = write!(o, "<h1>Commons {}</h1>", esc(name));
    o.push_str("<section><h2>Services</h2><div class=\"scroll\" tabindex=\"0\"><table class=\"list services\"><thead><tr><th scope=\"col\">Service</th><th scope=\"col\">State</th><th scope=\"col\">Version</th><th scope=\"col\">Probe</th><th scope=\"col\">Status code</th><th scope=\"col\">Backends</th><th scope=\"col\">Last 24 hours</th></tr></thead><tbody>");
    for (svc, cell) in &cells {
        let state = cell.state();
        let _ = write!(
            o,
            "<tr data-service=\"{}\" data-state=\"{}\"><th scope=\"row\">{}</th><td><span class=\"c {}\"><b aria-hidden=\"true\">{}</b> {}</span></td><td>{}</td><td>{}</td><td class=\"code\">{}</td><td class=\"backends\">{}</td><td><div class=\"strip\" role=\"img\" aria-label=\"{} over 24 hours: {}\">",
            esc(svc),
            state.as_str(),
            esc(svc),
            state.as_str(),
            match state {
                CellState::Up => "✓",
                CellState::Down => "✗",
                CellState::Slow => "◔",
                CellState::NoData => "–",
            },
            state.as_str(),
            esc(if cell.version.is_empty() { "–" } else { &cell.version }),
            cell.latency.map(fmt_secs).unwrap_or_else(|| "–".into()),
            cell.code.map(|c| format!("{c:.0}")).unwrap_or_else(|| "–".into()),
            {
                let b = super::backends::spans_for(&backs, svc);
                if b.is_empty() { "–".to_string() } else { b }
            },
            esc(svc),
            {
                let pts = strip_of.get(svc);
                let down = pts.map(|p| p.values().filter(|v| **v < 1.0).count()).unwrap_or(0);
                format!("{down} of 96 quarter-hours with a failed probe")
            }
        );
        let pts = strip_of.get(svc);
        let mut t = start - start.rem_euclid(STRIP_STEP_MS) + STRIP_STEP_MS;
        while t <= now {
            let (cls, word) = match pts.and_then(|p| p.range(t - STRIP_STEP_MS + 1..=t).next_back().map(|(_, v)| *v)) {
                Some(v) if v >= 1.0 => ("up", "up"),
                Some(_) => ("down", "down"),
                None => ("nodata", "no data"),
            };
            let _ = write!(o, "<i class=\"{cls}\" title=\"{} {word}\"></i>", rfc3339(t));
            t += STRIP_STEP_MS;
        }
        o.push_str("</div></td></tr>");
    }
    if cells.is_empty() {
        o.push_str("<tr><td colspan=\"7\">No probe data (no <code>gen3_status</code> source).</td></tr>");
    }
    o.push_str("</tbody></table></div></section>");

    // Backends: every one the commons reports, used by a service or not.
    o.push_str("<section><h2>Backends</h2>");
    if backs.is_empty() {
        o.push_str("<p>No backend reported (no <code>elasticsearch</code>, <code>postgres</code> source, no Argo CD Application).</p>");
    } else {
        o.push_str("<table class=\"list backends\"><thead><tr><th scope=\"col\">Backend</th><th scope=\"col\">Name</th><th scope=\"col\">State</th><th scope=\"col\">Used by</th></tr></thead><tbody>");
        for b in &backs {
            let users: Vec<&str> = cells.keys().map(String::as_str).filter(|s| b.serves(s)).collect();
            let _ = write!(
                o,
                "<tr data-backend=\"{}\" data-backend-name=\"{}\" data-backend-state=\"{}\"><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
                b.kind,
                esc(&b.name),
                esc(&b.state),
                match b.kind {
                    "elasticsearch" => "Elasticsearch",
                    "postgres" => "PostgreSQL",
                    _ => "Argo CD application",
                },
                esc(&b.name),
                b.span(),
                if users.is_empty() {
                    "–".to_string()
                } else {
                    esc(&users.join(", "))
                }
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");

    // Agents.
    o.push_str("<section><h2>Agents</h2><table class=\"list\"><thead><tr><th scope=\"col\">Agent</th><th scope=\"col\">State</th><th scope=\"col\">Version</th><th scope=\"col\">Last seen</th><th scope=\"col\">Host</th></tr></thead><tbody>");
    for a in &agents {
        let _ = write!(
            o,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.agent),
            if a.streams > 0 { "● connected" } else { "○ disconnected" },
            esc(&a.version),
            ago(now, a.last_seen_ms),
            esc(&a.hostname)
        );
    }
    if agents.is_empty() {
        o.push_str("<tr><td colspan=\"5\">No agent.</td></tr>");
    }
    o.push_str("</tbody></table></section>");

    // Kubernetes.
    let bad_deploy = instant(
        st,
        access,
        &format!("kube_deployment_status_replicas_unavailable{{commons={c}}} > 0"),
        now,
    );
    let waiting = instant(
        st,
        access,
        &format!("kube_pod_container_status_waiting_reason{{commons={c},reason=~\"{WAITING_BAD}\"}} > 0"),
        now,
    );
    let events = instant(
        st,
        access,
        &format!("sum by (namespace, reason, kind, name) (increase(kube_events_total{{commons={c},type=\"Warning\"}}[1h])) > 0"),
        now,
    );
    o.push_str("<section><h2>Kubernetes</h2>");
    if bad_deploy.is_empty() && waiting.is_empty() && events.is_empty() {
        o.push_str("<p>No unhealthy workload and no Warning event in the last hour (or no Kubernetes source).</p>");
    } else {
        o.push_str("<table class=\"list\"><thead><tr><th scope=\"col\">Workload</th><th scope=\"col\">Problem</th></tr></thead><tbody>");
        for (l, v) in &bad_deploy {
            let _ = write!(
                o,
                "<tr><th scope=\"row\">deployment {}</th><td>{v:.0} replicas unavailable</td></tr>",
                esc(label(l, "deployment"))
            );
        }
        for (l, _) in &waiting {
            let _ = write!(
                o,
                "<tr><th scope=\"row\">pod {} / {}</th><td>waiting: {}</td></tr>",
                esc(label(l, "pod")),
                esc(label(l, "container")),
                esc(label(l, "reason"))
            );
        }
        for (l, v) in &events {
            let _ = write!(
                o,
                "<tr><th scope=\"row\">{} {}</th><td>Warning {} ×{v:.0} in the last hour</td></tr>",
                esc(label(l, "kind")),
                esc(label(l, "name")),
                esc(label(l, "reason"))
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");

    // Charts.
    o.push_str("<section><h2>Probes and traffic</h2><div class=\"charts\">");
    o.push_str(&chart(
        "Probe status codes",
        &format!("gen3_probe_http_status_code{{commons={c}}}"),
        "6h",
        "",
    ));
    o.push_str(&chart(
        "5xx per second by service and code",
        &format!("sum by (service, code) (rate(gen3_http_requests_total{{commons={c},code=~\"5..\"}}[5m]))"),
        "6h",
        "/s",
    ));
    o.push_str(&chart(
        "Probe latency p50 / p95 / p99",
        &format!(
            "label_replace(quantile(0.5, gen3_probe_duration_seconds{{commons={c}}}), \"q\", \"p50\", \"\", \"\") or label_replace(quantile(0.95, gen3_probe_duration_seconds{{commons={c}}}), \"q\", \"p95\", \"\", \"\") or label_replace(quantile(0.99, gen3_probe_duration_seconds{{commons={c}}}), \"q\", \"p99\", \"\", \"\")"
        ),
        "6h",
        "s",
    ));
    o.push_str(&chart(
        "Requests per second",
        &format!("sum by (service) (rate(gen3_http_requests_total{{commons={c}}}[5m]))"),
        "6h",
        "/s",
    ));
    o.push_str("</div></section><section><h2>Hosts</h2><div class=\"charts\">");
    o.push_str(&chart(
        "CPU busy",
        &format!("1 - avg by (instance) (rate(node_cpu_seconds_total{{commons={c},mode=\"idle\"}}[5m]))"),
        "6h",
        "%",
    ));
    o.push_str(&chart(
        "Memory used",
        &format!("1 - node_memory_MemAvailable_bytes{{commons={c}}} / node_memory_MemTotal_bytes{{commons={c}}}"),
        "6h",
        "%",
    ));
    o.push_str(&chart(
        "Disk used",
        &format!(
            "1 - node_filesystem_avail_bytes{{commons={c},fstype!~\"tmpfs|overlay|squashfs\"}} / node_filesystem_size_bytes{{commons={c},fstype!~\"tmpfs|overlay|squashfs\"}}"
        ),
        "6h",
        "%",
    ));
    o.push_str("</div></section><section><h2>Usage</h2><div class=\"charts\">");
    o.push_str(&chart("indexd files", &format!("gen3_indexd_files{{commons={c}}}"), "7d", ""));
    o.push_str(&chart("indexd bytes", &format!("gen3_indexd_size_bytes{{commons={c}}}"), "7d", "B"));
    o.push_str(&chart(
        "Logins per hour by identity provider",
        &format!("sum by (idp) (increase(gen3_logins_total{{commons={c}}}[1h]))"),
        "24h",
        "",
    ));
    o.push_str(&chart(
        "Downloads per hour",
        &format!("sum(increase(gen3_downloads_total{{commons={c}}}[1h]))"),
        "24h",
        "",
    ));
    o.push_str(&chart("Active users", &format!("gen3_active_users{{commons={c}}}"), "24h", ""));
    o.push_str(
        "</div></section><script src=\"/ui/static/uPlot.iife.min.js\"></script><link rel=\"stylesheet\" href=\"/ui/static/uPlot.min.css\">",
    );
    Some(o)
}

/// One alert row of the alerts page.
struct Row {
    labels: crate::tsdb::Labels,
    annotations: BTreeMap<String, String>,
    state: &'static str,
    since: i64,
    silenced_by: Vec<String>,
    inhibited: bool,
}

fn link_or_text(u: &str) -> String {
    if u.starts_with("https://") || u.starts_with("http://") {
        format!("<a href=\"{}\" rel=\"noreferrer\">runbook</a>", esc(u))
    } else {
        format!("runbook: {}", esc(u))
    }
}

/// `GET /alerts` (`?commons=C` filters).
pub async fn alerts(State(st): State<AppState>, Extension(access): Extension<Access>, headers: HeaderMap, p: Params) -> Response {
    let now = csoc_common::time::now_ms();
    let only = p.get("commons").map(str::to_string).filter(|c| !c.is_empty());
    let mut rows: Vec<Row> = Vec::new();
    for g in st.rules.groups() {
        let state = g.state();
        for r in &state.rules {
            for a in r.active.values() {
                if a.state == AlertState::Inactive || !access.sees(&a.labels) {
                    continue;
                }
                if let Some(c) = &only
                    && label(&a.labels, "commons") != c
                {
                    continue;
                }
                let mute = st.muter.status_of_labels(&a.labels, now);
                let state = match a.state {
                    AlertState::Pending => "pending",
                    _ if !mute.silenced_by.is_empty() => "silenced",
                    _ => "firing",
                };
                rows.push(Row {
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    state,
                    since: a.active_at,
                    silenced_by: mute.silenced_by,
                    inhibited: !mute.inhibited_by.is_empty(),
                });
            }
        }
    }
    let v = viewer(&st, &access, &headers);
    let body = alerts_body(&st, &v, rows, now, only.as_deref());
    html(StatusCode::OK, layout("Alerts", "/alerts", &v, &body))
}

fn alerts_body(st: &AppState, v: &Viewer<'_>, mut rows: Vec<Row>, now: i64, only: Option<&str>) -> String {
    rows.sort_by(|a, b| {
        let k = |r: &Row| (label(&r.labels, "alertname").to_string(), r.state != "firing", r.labels.clone());
        k(a).cmp(&k(b))
    });
    let mut o = String::from("<h1>Alerts</h1>");
    if let Some(c) = only {
        let _ = write!(o, "<p>Commons {} only. <a href=\"/alerts\">All alerts</a></p>", esc(c));
    }
    let firing = rows.iter().filter(|r| r.state == "firing").count();
    let pending = rows.iter().filter(|r| r.state == "pending").count();
    let silenced = rows.iter().filter(|r| r.state == "silenced").count();
    let _ = write!(
        o,
        "<p class=\"summary\"><span class=\"{}\"><b>{firing}</b> firing</span><span><b>{pending}</b> pending</span><span><b>{silenced}</b> silenced</span></p>",
        if firing > 0 { "bad" } else { "" }
    );
    let mut groups: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        groups.entry(label(&r.labels, "alertname").to_string()).or_default().push(r);
    }
    if groups.is_empty() {
        o.push_str("<p>No alert is firing or pending.</p>");
    }
    for (name, rs) in &groups {
        let _ = write!(
            o,
            "<section class=\"agroup\"><h2>{} <span class=\"count\">{}</span></h2><div class=\"scroll\"><table class=\"list alerts\"><thead><tr><th scope=\"col\">State</th><th scope=\"col\">Labels</th><th scope=\"col\">Details</th><th scope=\"col\">Since</th><th scope=\"col\"><span class=\"sr\">Actions</span></th></tr></thead><tbody>",
            esc(name),
            rs.len()
        );
        for r in rs {
            let icon = match r.state {
                "firing" => "▲",
                "pending" => "◔",
                _ => "⊘",
            };
            let mut labels = String::new();
            for (k, val) in r.labels.iter().filter(|(k, _)| k != "alertname") {
                let _ = write!(labels, "<span class=\"lbl\">{}=<b>{}</b></span> ", esc(k), esc(val));
            }
            let mut details = String::new();
            for key in ["summary", "description"] {
                if let Some(t) = r.annotations.get(key) {
                    let _ = write!(details, "<div>{}</div>", esc(t));
                }
            }
            if let Some(u) = r.annotations.get("runbook_url") {
                let _ = write!(details, "<div>{}</div>", link_or_text(u));
            }
            if r.inhibited {
                details.push_str("<div>inhibited (another alert covers it)</div>");
            }
            if !r.silenced_by.is_empty() {
                let _ = write!(details, "<div>silenced by {}</div>", esc(&r.silenced_by.join(", ")));
            }
            let matchers: Vec<String> = ["alertname", "commons", "service"]
                .iter()
                .filter_map(|k| {
                    let v = label(&r.labels, k);
                    (!v.is_empty()).then(|| format!("{k}={}", pq(v)))
                })
                .collect();
            let action = if v.may_write() && r.state != "silenced" {
                format!(
                    "<button type=\"button\" class=\"silence-this\" data-matchers=\"{}\">Silence…</button>",
                    esc(&matchers.join("\n"))
                )
            } else {
                String::new()
            };
            let _ = write!(
                o,
                "<tr data-alertname=\"{}\" data-state=\"{}\"><td class=\"st {}\"><span aria-hidden=\"true\">{icon}</span> {}</td><td>{labels}</td><td>{details}</td><td><time title=\"{}\">{}</time></td><td>{action}</td></tr>",
                esc(name),
                r.state,
                r.state,
                r.state,
                rfc3339(r.since),
                ago(now, r.since),
            );
        }
        o.push_str("</tbody></table></div></section>");
    }
    // Silences.
    o.push_str("<section id=\"silences\"><h2>Silences</h2>");
    if v.may_write() {
        let author = v.access.principal.as_ref().map(|p| p.name.clone()).unwrap_or_default();
        let scope_hint = v
            .access
            .scope()
            .map(|c| {
                format!(
                    "<p class=\"hint\">Your token is limited to commons {0}: include <code>commons=\"{0}\"</code>.</p>",
                    esc(c)
                )
            })
            .unwrap_or_default();
        let _ = write!(
            o,
            "<form id=\"silence-form\" class=\"silence\">{scope_hint}<label for=\"sf-matchers\">Matchers, one per line (<code>name=\"value\"</code>, <code>!=</code>, <code>=~</code>, <code>!~</code>)</label>\
<textarea id=\"sf-matchers\" name=\"matchers\" rows=\"3\" required></textarea>\
<div class=\"row\"><span><label for=\"sf-duration\">Duration</label><input id=\"sf-duration\" name=\"duration\" value=\"2h\" required pattern=\"[0-9]+[mhdw]\"></span>\
<span><label for=\"sf-author\">Author</label><input id=\"sf-author\" name=\"author\" value=\"{}\" required></span></div>\
<label for=\"sf-comment\">Comment</label><input id=\"sf-comment\" name=\"comment\" required>\
<button type=\"submit\">Create silence</button><p id=\"sf-msg\" role=\"status\"></p></form>",
            esc(&author)
        );
    } else {
        o.push_str("<p class=\"hint\">Creating or expiring silences needs a token with role write or admin.</p>");
    }
    o.push_str("<div class=\"scroll\"><table class=\"list\" id=\"silence-list\"><thead><tr><th scope=\"col\">State</th><th scope=\"col\">Matchers</th><th scope=\"col\">Ends</th><th scope=\"col\">Author</th><th scope=\"col\">Comment</th><th scope=\"col\"><span class=\"sr\">Actions</span></th></tr></thead><tbody>");
    let mut any = false;
    for s in st.muter.silences().list(now) {
        if !crate::api::amv2::scope_allows(v.access, &s.matchers) {
            continue;
        }
        any = true;
        let state = s.state(now).as_str();
        let ms: Vec<String> = s.matchers.iter().map(|m| esc(&m.display())).collect();
        let expire = if v.may_write() && state != "expired" {
            format!(
                "<button type=\"button\" class=\"expire\" data-id=\"{}\">Expire</button>",
                esc(&s.id)
            )
        } else {
            String::new()
        };
        let _ = write!(
            o,
            "<tr data-silence=\"{}\" data-state=\"{state}\"><td>{state}</td><td><code>{}</code></td><td><time title=\"{}\">{}</time></td><td>{}</td><td>{}</td><td>{expire}</td></tr>",
            esc(&s.id),
            ms.join("<br>"),
            rfc3339(s.ends_at),
            rfc3339(s.ends_at).replace('T', " ").trim_end_matches('Z').get(..16).unwrap_or(""),
            esc(&s.created_by),
            esc(&s.comment)
        );
    }
    if !any {
        o.push_str("<tr><td colspan=\"6\">No silence.</td></tr>");
    }
    o.push_str("</tbody></table></div></section>");
    o
}

/// `GET /explore` (`q`, `range`, `step`, `tab` kept in the URL).
pub async fn explore(State(st): State<AppState>, Extension(access): Extension<Access>, headers: HeaderMap, p: Params) -> Response {
    let q = p.get("q").unwrap_or("");
    let rng = p.get("range").unwrap_or("1h");
    let step = p.get("step").unwrap_or("");
    let mut ranges = String::new();
    for r in ["5m", "15m", "1h", "3h", "6h", "12h", "24h", "2d", "7d", "30d"] {
        let sel = if r == rng { " selected" } else { "" };
        let _ = write!(ranges, "<option{sel}>{r}</option>");
    }
    let body = format!(
        "<h1>Explore</h1><form id=\"explore\" method=\"get\" action=\"/explore\" autocomplete=\"off\">\
<label for=\"q\">PromQL query</label><div class=\"qwrap\"><textarea id=\"q\" name=\"q\" rows=\"2\" spellcheck=\"false\" role=\"combobox\" aria-autocomplete=\"list\" aria-expanded=\"false\" aria-controls=\"suggest\">{}</textarea>\
<ul id=\"suggest\" role=\"listbox\" hidden></ul></div>\
<div class=\"row\"><span><label for=\"range\">Range</label><select id=\"range\" name=\"range\">{ranges}</select></span>\
<span><label for=\"step\">Step (s, blank: auto)</label><input id=\"step\" name=\"step\" value=\"{}\" inputmode=\"numeric\" size=\"6\"></span>\
<button type=\"submit\">Run</button></div></form>\
<p id=\"x-msg\" role=\"status\"></p>\
<section><h2>Graph</h2><div id=\"graph\" class=\"plot big\" role=\"img\" aria-label=\"Graph of the query\"></div><p class=\"hint\">Drag to zoom, double-click to reset; values show on hover.</p></section>\
<section><h2>Table</h2><div class=\"scroll\"><table class=\"list\" id=\"x-table\"><thead><tr><th scope=\"col\">Series</th><th scope=\"col\">Value</th></tr></thead><tbody></tbody></table></div></section>\
<script src=\"/ui/static/uPlot.iife.min.js\"></script><link rel=\"stylesheet\" href=\"/ui/static/uPlot.min.css\">",
        esc(q),
        esc(step)
    );
    let v = viewer(&st, &access, &headers);
    html(StatusCode::OK, layout("Explore", "/explore", &v, &body))
}

/// `GET /rules`: groups with last evaluation, duration and errors.
pub async fn rules(State(st): State<AppState>, Extension(access): Extension<Access>, headers: HeaderMap) -> Response {
    let now = csoc_common::time::now_ms();
    let mut o = String::from("<h1>Rules</h1>");
    let groups = st.rules.groups();
    if groups.is_empty() {
        o.push_str("<p>No rule file loaded (<code>--rules</code> or <code>rule_files</code>).</p>");
    }
    for g in groups {
        let s = g.state();
        let _ = write!(
            o,
            "<section class=\"rgroup\"><h2>{} <span class=\"hint\">{} · every {}s · last evaluation {} · took {}</span></h2><div class=\"scroll\"><table class=\"list\"><thead><tr><th scope=\"col\">Rule</th><th scope=\"col\">State</th><th scope=\"col\">Health</th><th scope=\"col\">Last evaluation</th><th scope=\"col\">Duration</th><th scope=\"col\">Error</th></tr></thead><tbody>",
            esc(&g.spec.name),
            esc(&g.spec.file),
            g.interval.as_secs(),
            ago(now, s.last_eval),
            fmt_secs(s.eval_duration.as_secs_f64()),
        );
        for r in &s.rules {
            let (kind, state) = match &r.spec.kind {
                RuleKind::Alert { .. } => {
                    let visible: Vec<_> = r.active.values().filter(|a| access.sees(&a.labels)).collect();
                    let st = if visible.iter().any(|a| a.state == AlertState::Firing) {
                        "firing"
                    } else if visible.iter().any(|a| a.state == AlertState::Pending) {
                        "pending"
                    } else {
                        "inactive"
                    };
                    ("alert", st)
                }
                _ => ("record", "–"),
            };
            let health = r.health.as_str();
            let _ = write!(
                o,
                "<tr><th scope=\"row\"><span class=\"hint\">{kind}</span> <a href=\"{}\">{}</a></th><td>{state}</td><td class=\"{}\">{}{health}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&explore_link(&r.spec.expr_text, "1h")),
                esc(&r.spec.name),
                if health == "err" { "bad" } else { "" },
                if health == "err" {
                    "✗ "
                } else if health == "ok" {
                    "✓ "
                } else {
                    ""
                },
                ago(now, r.last_eval),
                fmt_secs(r.eval_duration.as_secs_f64()),
                esc(&r.last_error)
            );
        }
        o.push_str("</tbody></table></div></section>");
    }
    let v = viewer(&st, &access, &headers);
    html(StatusCode::OK, layout("Rules", "/rules", &v, &o))
}

/// `GET /agents`.
pub async fn agents(State(st): State<AppState>, Extension(access): Extension<Access>, headers: HeaderMap) -> Response {
    let now = csoc_common::time::now_ms();
    let mut o = String::from(
        "<h1>Agents</h1><div class=\"scroll\"><table class=\"list\"><thead><tr><th scope=\"col\">Commons</th><th scope=\"col\">Agent</th><th scope=\"col\">State</th><th scope=\"col\">Version</th><th scope=\"col\">Host</th><th scope=\"col\">First seen</th><th scope=\"col\">Last seen</th></tr></thead><tbody>",
    );
    let list = st.agents.list(access.scope());
    for a in &list {
        let _ = write!(
            o,
            "<tr data-commons=\"{}\"><td><a href=\"/commons/{}\">{}</a></td><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.commons),
            urlq(&a.commons),
            esc(&a.commons),
            esc(&a.agent),
            if a.streams > 0 { "● connected" } else { "○ disconnected" },
            esc(&a.version),
            esc(&a.hostname),
            ago(now, a.first_seen_ms),
            ago(now, a.last_seen_ms),
        );
    }
    if list.is_empty() {
        o.push_str("<tr><td colspan=\"7\">No agent has connected.</td></tr>");
    }
    o.push_str("</tbody></table></div>");
    let v = viewer(&st, &access, &headers);
    html(StatusCode::OK, layout("Agents", "/agents", &v, &o))
}

/// `GET /system`: remote write, storage, build and flags.
pub async fn system(State(st): State<AppState>, Extension(access): Extension<Access>, headers: HeaderMap) -> Response {
    let now = csoc_common::time::now_ms();
    let scoped = access.scope().is_some();
    let st2 = st.clone();
    let a2 = access.clone();
    let data = blocking(move || {
        let rw = if scoped {
            Vec::new()
        } else {
            instant(&st2, &a2, "csoc_collector_remote_storage_samples_pending", now)
        };
        let storage = (!scoped).then(|| (st2.tsdb_admin.index_stats(5), st2.tsdb_admin.storage_stats().ok()));
        let size = if scoped {
            Vec::new()
        } else {
            instant(
                &st2,
                &a2,
                "csoc_collector_tsdb_size_bytes or csoc_collector_storage_size_bytes",
                now,
            )
        };
        (rw, storage, size)
    })
    .await;
    let (rw, storage, size) = match data {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut o = String::from("<h1>System</h1>");
    let _ = write!(
        o,
        "<section><h2>Build</h2><dl class=\"kv\"><dt>Version</dt><dd>{}</dd><dt>Started</dt><dd>{}</dd></dl></section>",
        env!("CARGO_PKG_VERSION"),
        rfc3339(
            st.status
                .start_time
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        )
    );
    if scoped {
        o.push_str("<p class=\"hint\">Storage and remote write cover every commons: not shown to a commons-scoped token.</p>");
    } else {
        o.push_str("<section><h2>Remote write</h2>");
        if rw.is_empty() {
            o.push_str("<p>No remote-write target.</p>");
        } else {
            o.push_str(
                "<table class=\"list\"><thead><tr><th scope=\"col\">Queue</th><th scope=\"col\">Samples pending</th></tr></thead><tbody>",
            );
            for (l, v) in &rw {
                let name: Vec<String> = l
                    .iter()
                    .filter(|(k, _)| k != "__name__" && k != "job" && k != "instance")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let _ = write!(
                    o,
                    "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                    esc(&name.join(", ")),
                    fmt_num(*v)
                );
            }
            o.push_str("</tbody></table>");
        }
        o.push_str("</section>");
        if let Some((ix, ss)) = storage {
            let _ = write!(
                o,
                "<section><h2>Storage</h2><dl class=\"kv\"><dt>Series</dt><dd>{}</dd><dt>Label pairs</dt><dd>{}</dd><dt>Chunks</dt><dd>{}</dd><dt>Oldest sample</dt><dd>{}</dd><dt>Newest sample</dt><dd>{}</dd><dt>Size</dt><dd>{}</dd><dt>Retention</dt><dd>{}</dd></dl></section>",
                ix.num_series,
                ix.num_label_pairs,
                ss.as_ref().map(|s| s.chunks.to_string()).unwrap_or_else(|| "–".into()),
                ss.as_ref().and_then(|s| s.min_time).map(rfc3339).unwrap_or_else(|| "–".into()),
                ss.as_ref().and_then(|s| s.max_time).map(rfc3339).unwrap_or_else(|| "–".into()),
                size.first()
                    .map(|(_, v)| format!("{} B", fmt_num(*v)))
                    .unwrap_or_else(|| "–".into()),
                esc(&st.status.storage_retention),
            );
        }
    }
    o.push_str("<section><h2>Flags</h2><table class=\"list\"><tbody>");
    for (k, val) in &st.status.flags {
        let _ = write!(o, "<tr><th scope=\"row\">{}</th><td><code>{}</code></td></tr>", esc(k), esc(val));
    }
    o.push_str("</tbody></table></section>");
    let v = viewer(&st, &access, &headers);
    html(StatusCode::OK, layout("System", "/system", &v, &o))
}

/// `GET /status`: the public status page (only with `public_status`):
/// commons × service up or down, uptime over 24 hours and 30 days.
pub async fn public_status(State(st): State<AppState>) -> Response {
    if !st.console.public_status {
        return error_page(StatusCode::NOT_FOUND, "the public status page is off (--web.public-status)");
    }
    let now = csoc_common::time::now_ms();
    let st2 = st.clone();
    let data = blocking(move || {
        let open = Access::default();
        let up = instant(&st2, &open, "gen3_service_up", now);
        let d1 = instant(&st2, &open, "avg_over_time(gen3_service_up[24h])", now);
        let d30 = instant(&st2, &open, "avg_over_time(gen3_service_up[30d])", now);
        (up, d1, d30)
    })
    .await;
    let (up, d1, d30) = match data {
        Ok(d) => d,
        Err(r) => return r,
    };
    type Key = (String, String);
    let key = |l: &crate::tsdb::Labels| -> Key { (label(l, "commons").to_string(), label(l, "service").to_string()) };
    /// Now, 24 hours, 30 days.
    type Uptime = (Option<f64>, Option<f64>, Option<f64>);
    let mut rows: BTreeMap<Key, Uptime> = BTreeMap::new();
    for (l, v) in &up {
        rows.entry(key(l)).or_default().0 = Some(*v);
    }
    for (l, v) in &d1 {
        rows.entry(key(l)).or_default().1 = Some(*v);
    }
    for (l, v) in &d30 {
        rows.entry(key(l)).or_default().2 = Some(*v);
    }
    let pct = |v: Option<f64>| v.map(|x| format!("{:.2}%", x * 100.0)).unwrap_or_else(|| "–".into());
    let mut o = String::from(
        "<h1>Service status</h1><div class=\"scroll\"><table class=\"list\"><thead><tr><th scope=\"col\">Commons</th><th scope=\"col\">Service</th><th scope=\"col\">Now</th><th scope=\"col\">Uptime 24 h</th><th scope=\"col\">Uptime 30 d</th></tr></thead><tbody>",
    );
    for ((c, s), (now_v, a, b)) in &rows {
        if c.is_empty() || s.is_empty() {
            continue;
        }
        let (cls, word) = match now_v {
            Some(v) if *v >= 1.0 => ("up", "✓ up"),
            Some(_) => ("down", "✗ down"),
            None => ("nodata", "– no data"),
        };
        let _ = write!(
            o,
            "<tr data-commons=\"{}\" data-service=\"{}\" data-state=\"{}\"><td>{}</td><th scope=\"row\">{}</th><td><span class=\"c {cls}\">{word}</span></td><td>{}</td><td>{}</td></tr>",
            esc(c),
            esc(s),
            if cls == "nodata" { "nodata" } else { cls },
            esc(c),
            esc(s),
            pct(*a),
            pct(*b)
        );
    }
    o.push_str("</tbody></table></div>");
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Status</title><link rel=\"stylesheet\" href=\"/ui/static/console.css\"></head><body><main id=\"main\">{o}<p class=\"hint\">Updated {}</p></main></body></html>",
        rfc3339(now)
    );
    html(StatusCode::OK, page)
}
