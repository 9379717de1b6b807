//! Argo CD Applications (`applications.argoproj.io/v1alpha1`, a custom
//! resource read as a [`DynamicObject`]) under Argo CD's own metric
//! `argocd_app_info` (argo-cd controller/metrics/metrics.go), so that its
//! dashboards and rules work on what the agent reports:
//!
//! `argocd_app_info{namespace,name,project,autosync_enabled,repo,dest_server,dest_namespace,sync_status,health_status,operation} 1`
//!
//! Label values as Argo CD computes them: `project` is `spec.project`
//! (`default` when empty), `autosync_enabled` whether
//! `spec.syncPolicy.automated` is set, `repo` the (first) source's
//! `repoURL`, lower-cased and without a `.git` suffix (Argo CD's
//! `NormalizeGitURL` for https URLs), `sync_status` and `health_status` from
//! `status.sync.status` and `status.health.status` (`Unknown` when unset),
//! `operation` `delete` while the Application is being deleted, `sync` while
//! a sync operation is requested, else empty (left out). One series per
//! Application; when a status changes, the old series gets a staleness
//! marker and a new one starts, as with Argo CD's own exporter.
//!
//! Where: the Applications of `sources.kubernetes.argocd.namespaces`
//! (default `[argocd]`) whose `spec.destination.namespace` is one of the
//! commons' namespaces (`sources.kubernetes.namespaces`), so that an agent
//! in a cluster shared by several commons reports only its own commons'
//! Applications (`argocd.all_destinations: true` reports all). A cluster
//! without Argo CD answers 404 (CRD not installed): logged once, retried
//! every `forbidden_retry`, nothing reported; 403 as every other kind.

use std::sync::{Arc, Mutex};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::Event;
use serde_json::Value;

use super::state::{Out, Store, Summary};
use super::watch::{Handler, lock};
use crate::model::MetricKind::Gauge;

/// `applications.argoproj.io/v1alpha1`.
pub(super) fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"), "applications")
}

/// An Application's summary: the label values of its `argocd_app_info`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct AppSummary {
    pub(super) name: String,
    pub(super) project: String,
    pub(super) autosync: bool,
    pub(super) repo: String,
    pub(super) dest_server: String,
    pub(super) dest_namespace: String,
    pub(super) sync_status: String,
    pub(super) health_status: String,
    pub(super) operation: &'static str,
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `NormalizeGitURL` for the usual https form: lower case, no trailing `/`
/// or `.git`.
fn normalize_repo(url: &str) -> String {
    let u = url.trim().to_lowercase();
    let u = u.trim_end_matches('/');
    u.strip_suffix(".git").unwrap_or(u).to_string()
}

impl Summary for AppSummary {
    type Object = DynamicObject;

    fn from_object(o: &DynamicObject) -> Self {
        let spec = &o.data["spec"];
        let status = &o.data["status"];
        // GetSource: `source`, else the first of `sources`.
        let source = if spec["source"].is_object() {
            &spec["source"]
        } else {
            &spec["sources"][0]
        };
        let or_unknown = |s: &str| if s.is_empty() { "Unknown".to_string() } else { s.to_string() };
        let project = text(&spec["project"]);
        AppSummary {
            name: o.metadata.name.clone().unwrap_or_default(),
            project: if project.is_empty() { "default".into() } else { project.into() },
            autosync: spec["syncPolicy"]["automated"].is_object(),
            repo: normalize_repo(text(&source["repoURL"])),
            dest_server: text(&spec["destination"]["server"]).to_string(),
            dest_namespace: text(&spec["destination"]["namespace"]).to_string(),
            sync_status: or_unknown(text(&status["sync"]["status"])),
            health_status: or_unknown(text(&status["health"]["status"])),
            operation: if o.metadata.deletion_timestamp.is_some() {
                "delete"
            } else if o.data["operation"]["sync"].is_object() {
                "sync"
            } else {
                ""
            },
        }
    }

    fn meta(out: &mut Out<'_>) {
        out.meta("argocd_app_info", Gauge, "Information about application.");
    }

    fn render(&self, namespace: &str, out: &mut Out<'_>) {
        out.push(
            "argocd_app_info",
            &[
                ("namespace", namespace),
                ("name", &self.name),
                ("project", &self.project),
                ("autosync_enabled", if self.autosync { "true" } else { "false" }),
                ("repo", &self.repo),
                ("dest_server", &self.dest_server),
                ("dest_namespace", &self.dest_namespace),
                ("sync_status", &self.sync_status),
                ("health_status", &self.health_status),
                ("operation", self.operation),
            ],
            1.0,
        );
    }
}

/// The Application store of one Argo CD namespace, seen from its watch:
/// Applications deploying elsewhere than `destinations` (the commons'
/// namespaces; `None`: anywhere) are not kept.
pub(super) struct AppHandle {
    pub(super) store: Arc<Mutex<Store<AppSummary>>>,
    pub(super) destinations: Option<Arc<[String]>>,
}

impl AppHandle {
    fn wanted(&self, o: &DynamicObject) -> bool {
        let dest = text(&o.data["spec"]["destination"]["namespace"]);
        self.destinations.as_ref().is_none_or(|d| d.iter().any(|n| n == dest))
    }
}

impl Handler<DynamicObject> for AppHandle {
    fn event(&self, ev: Event<DynamicObject>) {
        let ev = match ev {
            Event::InitApply(o) if !self.wanted(&o) => return,
            // Retargeted elsewhere: forget it.
            Event::Apply(o) if !self.wanted(&o) => Event::Delete(o),
            ev => ev,
        };
        lock(&self.store).apply(ev);
    }
    fn forbidden(&self) {
        lock(&self.store).forbidden();
    }
    fn failed(&self) {
        lock(&self.store).failed();
    }
    fn not_served(&self) {
        lock(&self.store).not_served();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Frame;

    fn app(name: &str, dest: &str, health: Option<&str>, sync: Option<&str>) -> DynamicObject {
        let mut v = serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name, "namespace": "argocd"},
            "spec": {
                "source": {"repoURL": "https://GitHub.com/uc-cdis/gen3-helm.git", "path": "helm/fence"},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": dest},
            },
            "status": {},
        });
        if let Some(h) = health {
            v["status"]["health"] = serde_json::json!({"status": h});
        }
        if let Some(s) = sync {
            v["status"]["sync"] = serde_json::json!({"status": s});
        }
        serde_json::from_value(v).expect("application")
    }

    fn labels(f: &Frame) -> Vec<Vec<(String, String)>> {
        f.samples.iter().filter(|s| s.value == 1.0).map(|s| s.labels.clone()).collect()
    }

    #[test]
    fn argocd_app_info_labels_follow_argocd() {
        let s = AppSummary::from_object(&app("fence", "gen3", Some("Degraded"), Some("OutOfSync")));
        let mut f = Frame::new("kubernetes");
        s.render(
            "argocd",
            &mut Out {
                frame: &mut f,
                ts: 1,
                job: "kubernetes",
            },
        );
        let l = &labels(&f)[0];
        let get = |k: &str| l.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        assert_eq!(get("__name__"), Some("argocd_app_info"));
        assert_eq!(get("namespace"), Some("argocd"));
        assert_eq!(get("name"), Some("fence"));
        assert_eq!(get("project"), Some("default"), "empty project is default");
        assert_eq!(get("autosync_enabled"), Some("false"));
        assert_eq!(get("repo"), Some("https://github.com/uc-cdis/gen3-helm"));
        assert_eq!(get("dest_namespace"), Some("gen3"));
        assert_eq!(get("health_status"), Some("Degraded"));
        assert_eq!(get("sync_status"), Some("OutOfSync"));
        assert_eq!(get("operation"), None, "empty: left out");
        let u = AppSummary::from_object(&app("x", "gen3", None, None));
        assert_eq!((u.health_status.as_str(), u.sync_status.as_str()), ("Unknown", "Unknown"));
    }

    #[test]
    fn argocd_apps_of_other_namespaces_are_not_kept() {
        let store = Arc::new(Mutex::new(Store::<AppSummary>::new("argocd")));
        let h = AppHandle {
            store: store.clone(),
            destinations: Some(Arc::from(vec!["gen3".to_string()])),
        };
        h.event(Event::Init);
        h.event(Event::InitApply(app("fence", "gen3", Some("Healthy"), Some("Synced"))));
        h.event(Event::InitApply(app(
            "other-commons-fence",
            "gen3-b",
            Some("Healthy"),
            Some("Synced"),
        )));
        h.event(Event::InitDone);
        assert_eq!(lock(&store).len(), 1);
        assert!(lock(&store).get("fence").is_some());
        // Retargeted to another commons: dropped.
        h.event(Event::Apply(app("fence", "gen3-b", Some("Healthy"), Some("Synced"))));
        assert_eq!(lock(&store).len(), 0);
        // Not served (CRD removed): nothing known, settled, not forbidden.
        h.event(Event::Apply(app("guppy", "gen3", Some("Healthy"), Some("Synced"))));
        h.not_served();
        let st = lock(&store);
        assert_eq!(st.len(), 0);
        assert!(st.progress.settled && !st.progress.forbidden);
    }
}
