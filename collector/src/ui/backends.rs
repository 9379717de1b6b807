//! The backends behind the services, for the fleet and commons pages:
//! Elasticsearch/OpenSearch (`elasticsearch_cluster_health_status{color}`),
//! PostgreSQL (`pg_up{database}`, connections in use against
//! `pg_settings_max_connections`) and Argo CD Applications
//! (`argocd_app_info{name,health_status,sync_status}`), as the agent's
//! `elasticsearch`, `postgres` and `kubernetes` sources report them.
//!
//! A backend shows beside the service that uses it: guppy ↔ every
//! Elasticsearch cluster of its commons (guppy's store); a service ↔ the
//! database whose configured NAME is the service's name (`pg_up{database="fence"}`
//! beside fence); a service ↔ the Argo CD Application of the same name.
//! HTML hooks: `data-backend` (`elasticsearch`, `postgres`, `argocd`),
//! `data-backend-name`, `data-backend-state` (`green|yellow|red`,
//! `up|down`, or the Application's health: `Healthy`, `Degraded`, …).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{esc, instant, label};
use crate::api::AppState;
use crate::api::access::Access;

/// One backend of one commons.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// `elasticsearch`, `postgres` or `argocd`.
    pub kind: &'static str,
    /// Cluster, configured database NAME, or Application name.
    pub name: String,
    /// `green|yellow|red`, `up|down`, or the Application's health.
    pub state: String,
    /// More: connections in use, the sync status.
    pub detail: String,
}

impl Backend {
    /// Whether it needs a look (red, yellow, unreachable, not Healthy or
    /// not Synced).
    pub fn bad(&self) -> bool {
        match self.kind {
            "elasticsearch" => self.state != "green",
            "postgres" => self.state != "up",
            _ => self.state != "Healthy" || self.detail != "Synced",
        }
    }

    /// What the page shows: `Elasticsearch red`, `PostgreSQL up (43% of
    /// connections)`, `Argo CD Healthy, Synced`.
    pub fn text(&self) -> String {
        let kind = match self.kind {
            "elasticsearch" => "Elasticsearch",
            "postgres" => "PostgreSQL",
            _ => "Argo CD",
        };
        match (self.kind, self.detail.is_empty()) {
            (_, true) => format!("{kind} {}", self.state),
            ("argocd", false) => format!("{kind} {}, {}", self.state, self.detail),
            _ => format!("{kind} {} ({})", self.state, self.detail),
        }
    }

    /// A `<span>` with the data hooks.
    pub fn span(&self) -> String {
        format!(
            "<span class=\"be {}\" data-backend=\"{}\" data-backend-name=\"{}\" data-backend-state=\"{}\">{}</span>",
            if self.bad() { "bad" } else { "ok" },
            self.kind,
            esc(&self.name),
            esc(&self.state),
            esc(&self.text())
        )
    }

    /// Whether `service` uses it.
    pub fn serves(&self, service: &str) -> bool {
        match self.kind {
            "elasticsearch" => service == "guppy",
            _ => self.name == service,
        }
    }
}

/// The backends of every commons the caller sees (`selector`: extra
/// matchers for the queries, e.g. `commons="alpha"`, or empty).
pub fn backends(st: &AppState, access: &Access, selector: &str, now: i64) -> BTreeMap<String, Vec<Backend>> {
    let mut out: BTreeMap<String, Vec<Backend>> = BTreeMap::new();
    let sel = |extra: &str| -> String {
        match (selector.is_empty(), extra.is_empty()) {
            (true, _) => format!("{{{extra}}}"),
            (false, true) => format!("{{{selector}}}"),
            (false, false) => format!("{{{selector},{extra}}}"),
        }
    };
    let q = format!(
        "max by (commons, cluster, color) (elasticsearch_cluster_health_status{} == 1)",
        sel("")
    );
    for (l, _) in instant(st, access, &q, now) {
        let cluster = label(&l, "cluster");
        out.entry(label(&l, "commons").to_string()).or_default().push(Backend {
            kind: "elasticsearch",
            name: if cluster.is_empty() {
                "elasticsearch".into()
            } else {
                cluster.into()
            },
            state: label(&l, "color").to_string(),
            detail: String::new(),
        });
    }
    let used: BTreeMap<(String, String), f64> = instant(
        st,
        access,
        &format!(
            "sum by (commons, database) (pg_stat_database_numbackends{s}) / on (commons, database) max by (commons, database) (pg_settings_max_connections{s})",
            s = sel("")
        ),
        now,
    )
    .into_iter()
    .map(|(l, v)| ((label(&l, "commons").to_string(), label(&l, "database").to_string()), v))
    .collect();
    for (l, v) in instant(st, access, &format!("min by (commons, database) (pg_up{})", sel("")), now) {
        let (c, db) = (label(&l, "commons").to_string(), label(&l, "database").to_string());
        let detail = used
            .get(&(c.clone(), db.clone()))
            .filter(|u| u.is_finite() && v >= 1.0)
            .map(|u| format!("{:.0}% of connections", u * 100.0))
            .unwrap_or_default();
        out.entry(c).or_default().push(Backend {
            kind: "postgres",
            name: db,
            state: if v >= 1.0 { "up" } else { "down" }.into(),
            detail,
        });
    }
    let q = format!(
        "max by (commons, name, health_status, sync_status) (argocd_app_info{} == 1)",
        sel("")
    );
    for (l, _) in instant(st, access, &q, now) {
        out.entry(label(&l, "commons").to_string()).or_default().push(Backend {
            kind: "argocd",
            name: label(&l, "name").to_string(),
            state: label(&l, "health_status").to_string(),
            detail: label(&l, "sync_status").to_string(),
        });
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    }
    out
}

/// The backends `service` uses, as spans separated by `<br>` (empty when
/// none is known).
pub fn spans_for(backs: &[Backend], service: &str) -> String {
    let mut o = String::new();
    for b in backs.iter().filter(|b| b.serves(service)) {
        if !o.is_empty() {
            o.push_str("<br>");
        }
        o.push_str(&b.span());
    }
    o
}

/// The `data-backends` value of a fleet cell: `kind:name=state` tokens of
/// the backends `service` uses, space-separated.
pub fn tokens_for(backs: &[Backend], service: &str) -> String {
    let mut o = String::new();
    for b in backs.iter().filter(|b| b.serves(service)) {
        if !o.is_empty() {
            o.push(' ');
        }
        let _ = write!(o, "{}:{}={}", b.kind, b.name, b.state);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(kind: &'static str, name: &str, state: &str, detail: &str) -> Backend {
        Backend {
            kind,
            name: name.into(),
            state: state.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn backends_pair_with_the_services_that_use_them() {
        let v = vec![
            b("elasticsearch", "gen3-es", "red", ""),
            b("postgres", "fence", "down", ""),
            b("postgres", "indexd", "up", "43% of connections"),
            b("argocd", "fence", "Degraded", "OutOfSync"),
        ];
        assert_eq!(tokens_for(&v, "guppy"), "elasticsearch:gen3-es=red");
        assert_eq!(tokens_for(&v, "fence"), "postgres:fence=down argocd:fence=Degraded");
        assert_eq!(tokens_for(&v, "portal"), "");
        let s = spans_for(&v, "indexd");
        assert!(
            s.contains("data-backend=\"postgres\" data-backend-name=\"indexd\" data-backend-state=\"up\""),
            "{s}"
        );
        assert!(
            s.contains("PostgreSQL up (43% of connections)") && s.contains("class=\"be ok\""),
            "{s}"
        );
        assert!(v[0].bad() && v[1].bad() && !v[2].bad() && v[3].bad());
        assert!(!b("argocd", "x", "Healthy", "Synced").bad());
        assert_eq!(v[3].text(), "Argo CD Degraded, OutOfSync");
        let evil = b("postgres", "<x>", "up", "");
        assert!(evil.span().contains("&lt;x&gt;") && !evil.span().contains("<x>"));
    }
}
