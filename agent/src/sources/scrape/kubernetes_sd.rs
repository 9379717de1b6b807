//! `kubernetes_sd_configs`: scrape targets from the Kubernetes API, with
//! Prometheus's roles `pod` and `endpoints` and its exact `__meta_kubernetes_*`
//! labels (prometheus `discovery/kubernetes/{pod,endpoints,kubernetes}.go`), so
//! the usual `prometheus.io/scrape`, `/port` and `/path` relabelling works
//! unchanged and each replica is a target of its own.
//!
//! - `role: pod`: one target per declared container port (`__address__` =
//!   `podIP:port`), one per container without ports (`__address__` = the pod
//!   IP), init containers included; pods without an IP yield nothing. Labels:
//!   `__meta_kubernetes_namespace`, `_pod_name`, `_pod_ip`, `_pod_label_<n>`,
//!   `_pod_labelpresent_<n>`, `_pod_annotation_<n>`,
//!   `_pod_annotationpresent_<n>`, `_pod_container_init`,
//!   `_pod_container_name`, `_pod_container_id`, `_pod_container_image`,
//!   `_pod_container_port_name`, `_pod_container_port_number`,
//!   `_pod_container_port_protocol`, `_pod_ready`, `_pod_phase`,
//!   `_pod_node_name`, `_pod_host_ip`, `_pod_uid`, `_pod_controller_kind`,
//!   `_pod_controller_name`.
//! - `role: endpoints`: one target per address and port of each Endpoints
//!   object (`_endpoints_name`, its labels/annotations, `_endpoint_ready`,
//!   `_endpoint_port_name`, `_endpoint_port_protocol`,
//!   `_endpoint_address_target_kind`/`_name`, `_endpoint_node_name`,
//!   `_endpoint_hostname`), with the Service's labels (`_service_name`,
//!   `_service_label_<n>`, `_service_annotation_<n>`, …) and, for addresses
//!   backed by a pod, the pod's labels and the matching container port; pod
//!   ports no Service port covers become targets of their own.
//! - Label and annotation names are sanitised as Prometheus does (every
//!   character outside `[a-zA-Z0-9_]` becomes `_`).
//!
//! Objects come from kube-runtime watchers (list, then watch from the
//! resourceVersion; relist on 410; backoff on errors; a 403 is logged once,
//! counted as `forbidden` and retried every 5 minutes), per namespace of
//! `namespaces.names` (all namespaces when empty), restricted by `selectors`
//! (label and field selectors per role, sent to the API server). Pods are kept
//! slimmed to the fields the labels need. Every change bumps the store's
//! generation; the scrape loop rebuilds the job's targets when it moved, and
//! removed targets get staleness markers as for file_sd.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerPort, ContainerStatus, Endpoints, Pod, PodCondition, PodSpec, PodStatus, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::watcher;
use serde::Deserialize;
use tokio_stream::StreamExt;

use crate::config::ConfigError;
use crate::sources::SourceContext;
use crate::sources::pod_logs::follow::{WatchErrorKind, classify_watch_error};

const META: &str = "__meta_kubernetes_";

/// Prometheus's `kubernetes_sd_config` (roles `pod` and `endpoints`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSdConfig {
    /// `pod` or `endpoints`.
    pub role: String,
    /// Which namespaces to watch (default: every namespace, which needs
    /// cluster-wide list/watch).
    #[serde(default)]
    pub namespaces: NamespaceDiscovery,
    /// Label and field selectors sent to the API server, per role (`pod`
    /// for role pod; `endpoints`, `service` or `pod` for role endpoints).
    #[serde(default)]
    pub selectors: Vec<SdSelector>,
    /// Kubeconfig file of this discovery (default: the agent's `kubeconfig`,
    /// else in-cluster, then `KUBECONFIG`).
    #[serde(default)]
    pub kubeconfig_file: Option<PathBuf>,
}

/// `namespaces:` of a kubernetes_sd_config.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceDiscovery {
    /// Namespaces to watch.
    #[serde(default)]
    pub names: Vec<String>,
    /// Also the agent's own namespace (read from the service account's
    /// `namespace` file).
    #[serde(default)]
    pub own_namespace: bool,
}

/// One `selectors:` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SdSelector {
    /// The watched kind it applies to: `pod`, `endpoints` or `service`.
    pub role: String,
    /// Label selector (`app=fence,tier!=web`).
    #[serde(default)]
    pub label: String,
    /// Field selector (`status.phase=Running`).
    #[serde(default)]
    pub field: String,
}

/// Where the pod's own namespace is read for `own_namespace`.
pub const OWN_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl KubernetesSdConfig {
    /// Checks the fields; `field` names this config in errors.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let inv = |f: &str, m: String| ConfigError::Invalid {
            field: format!("{field}.{f}"),
            message: m,
        };
        let allowed: &[&str] = match self.role.as_str() {
            "pod" => &["pod"],
            "endpoints" => &["endpoints", "service", "pod"],
            other => {
                return Err(inv(
                    "role",
                    format!(
                        "{other:?} is not supported: pod or endpoints (Prometheus's node, service, endpointslice and ingress roles are not implemented)"
                    ),
                ));
            }
        };
        for n in &self.namespaces.names {
            if !crate::sources::pod_logs::valid_namespace(n) {
                return Err(inv("namespaces.names", format!("{n:?} is not a namespace name")));
            }
        }
        let mut seen = HashSet::new();
        for (i, s) in self.selectors.iter().enumerate() {
            if !allowed.contains(&s.role.as_str()) {
                return Err(inv(
                    &format!("selectors[{i}].role"),
                    format!("{:?} cannot be used with role {}: one of {allowed:?}", s.role, self.role),
                ));
            }
            if !seen.insert(s.role.as_str()) {
                return Err(inv(&format!("selectors[{i}].role"), format!("{:?} is selected twice", s.role)));
            }
            crate::sources::pod_logs::LabelSelector::parse(&s.label).map_err(|e| inv(&format!("selectors[{i}].label"), e))?;
            if !s.field.is_empty() && !s.field.split(',').all(|r| r.contains('=')) {
                return Err(inv(
                    &format!("selectors[{i}].field"),
                    format!("{:?} is not a field selector (name=value, name!=value, comma-separated)", s.field),
                ));
            }
        }
        if let Some(p) = &self.kubeconfig_file
            && p.as_os_str().is_empty()
        {
            return Err(inv("kubeconfig_file", "must not be empty".into()));
        }
        Ok(())
    }

    fn selector(&self, role: &str) -> Option<&SdSelector> {
        self.selectors.iter().find(|s| s.role == role)
    }
}

/// Prometheus's `strutil.SanitizeLabelName`: every character outside
/// `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect()
}

/// A label set under construction.
pub type LabelMap = BTreeMap<String, String>;

fn set(ls: &mut LabelMap, name: &str, v: impl Into<String>) {
    ls.insert(format!("{META}{name}"), v.into());
}

/// `<role>_label_<n>`, `_labelpresent_<n>`, `_annotation_<n>`,
/// `_annotationpresent_<n>` (Prometheus's `addObjectAnnotationsAndLabels`).
fn add_labels_and_annotations(ls: &mut LabelMap, meta: &ObjectMeta, role: &str) {
    for (k, v) in meta.labels.iter().flatten() {
        let n = sanitize_label_name(k);
        set(ls, &format!("{role}_label_{n}"), v.clone());
        set(ls, &format!("{role}_labelpresent_{n}"), "true");
    }
    for (k, v) in meta.annotations.iter().flatten() {
        let n = sanitize_label_name(k);
        set(ls, &format!("{role}_annotation_{n}"), v.clone());
        set(ls, &format!("{role}_annotationpresent_{n}"), "true");
    }
}

/// `<role>_name` plus labels and annotations (`addObjectMetaLabels`).
fn add_object_meta(ls: &mut LabelMap, meta: &ObjectMeta, role: &str) {
    set(ls, &format!("{role}_name"), meta.name.clone().unwrap_or_default());
    add_labels_and_annotations(ls, meta, role);
}

/// `host:port`, with brackets for IPv6 (Go's `net.JoinHostPort`).
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn pod_ready(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.to_lowercase())
        .unwrap_or_else(|| "unknown".into())
}

/// The pod's own labels (Prometheus's `podLabels`; without the namespace).
pub fn pod_labels(pod: &Pod) -> LabelMap {
    let mut ls = LabelMap::new();
    let st = pod.status.as_ref();
    set(&mut ls, "pod_ip", st.and_then(|s| s.pod_ip.clone()).unwrap_or_default());
    set(&mut ls, "pod_ready", pod_ready(pod));
    set(&mut ls, "pod_phase", st.and_then(|s| s.phase.clone()).unwrap_or_default());
    set(
        &mut ls,
        "pod_node_name",
        pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
    );
    set(&mut ls, "pod_host_ip", st.and_then(|s| s.host_ip.clone()).unwrap_or_default());
    set(&mut ls, "pod_uid", pod.metadata.uid.clone().unwrap_or_default());
    add_object_meta(&mut ls, &pod.metadata, "pod");
    if let Some(owner) = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)) {
        if !owner.kind.is_empty() {
            set(&mut ls, "pod_controller_kind", owner.kind.clone());
        }
        if !owner.name.is_empty() {
            set(&mut ls, "pod_controller_name", owner.name.clone());
        }
    }
    ls
}

fn container_id(statuses: Option<&Vec<ContainerStatus>>, name: &str) -> String {
    statuses
        .into_iter()
        .flatten()
        .find(|s| s.name == name)
        .and_then(|s| s.container_id.clone())
        .unwrap_or_default()
}

/// The containers then the init containers, each with whether it is an init
/// container.
fn all_containers(pod: &Pod) -> impl Iterator<Item = (&Container, bool)> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| s.containers.iter().map(|c| (c, false)))
        .chain(spec.into_iter().flat_map(|s| s.init_containers.iter().flatten().map(|c| (c, true))))
}

fn port_labels(t: &mut LabelMap, c: &Container, p: &ContainerPort, protocol: &str, init: bool) {
    set(t, "pod_container_name", c.name.clone());
    set(t, "pod_container_image", c.image.clone().unwrap_or_default());
    set(t, "pod_container_port_name", p.name.clone().unwrap_or_default());
    set(t, "pod_container_port_number", p.container_port.to_string());
    set(t, "pod_container_port_protocol", protocol);
    set(t, "pod_container_init", init.to_string());
}

/// The targets of `role: pod` for one pod, each a complete label set with
/// `__address__` (Prometheus's `buildPod`).
pub fn pod_targets(pod: &Pod) -> Vec<LabelMap> {
    let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()) else {
        return Vec::new();
    };
    let mut group = pod_labels(pod);
    set(&mut group, "namespace", pod.metadata.namespace.clone().unwrap_or_default());
    let st = pod.status.as_ref();
    let mut out = Vec::new();
    for (c, init) in all_containers(pod) {
        let statuses = st.and_then(|s| {
            if init {
                s.init_container_statuses.as_ref()
            } else {
                s.container_statuses.as_ref()
            }
        });
        let cid = container_id(statuses, &c.name);
        let ports = c.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            let mut t = group.clone();
            t.insert("__address__".into(), ip.clone());
            set(&mut t, "pod_container_name", c.name.clone());
            set(&mut t, "pod_container_id", cid.clone());
            set(&mut t, "pod_container_image", c.image.clone().unwrap_or_default());
            set(&mut t, "pod_container_init", init.to_string());
            out.push(t);
            continue;
        }
        for p in ports {
            let mut t = group.clone();
            t.insert("__address__".into(), join_host_port(&ip, p.container_port));
            port_labels(&mut t, c, p, p.protocol.as_deref().unwrap_or_default(), init);
            set(&mut t, "pod_container_id", cid.clone());
            out.push(t);
        }
    }
    out
}

/// The targets of `role: endpoints` for one Endpoints object, given its
/// Service (same namespace and name) and a pod lookup by (namespace, name)
/// (Prometheus's `buildEndpoints`).
pub fn endpoints_targets<'a>(eps: &Endpoints, svc: Option<&Service>, pods: &dyn Fn(&str, &str) -> Option<&'a Pod>) -> Vec<LabelMap> {
    let ns = eps.metadata.namespace.clone().unwrap_or_default();
    let mut group = LabelMap::new();
    set(&mut group, "namespace", ns.clone());
    if let Some(s) = svc {
        set(&mut group, "namespace", s.metadata.namespace.clone().unwrap_or_default());
        add_object_meta(&mut group, &s.metadata, "service");
    }
    add_object_meta(&mut group, &eps.metadata, "endpoints");

    let mut out = Vec::new();
    // Pods seen behind the addresses, with the service ports they serve.
    let mut seen: Vec<(&'a Pod, Vec<i32>)> = Vec::new();
    let mut add = |addr: &k8s_openapi::api::core::v1::EndpointAddress, port: &k8s_openapi::api::core::v1::EndpointPort, ready: &str| {
        let mut t = group.clone();
        t.insert("__address__".into(), join_host_port(&addr.ip, port.port));
        let protocol = port.protocol.clone().unwrap_or_default();
        set(&mut t, "endpoint_port_name", port.name.clone().unwrap_or_default());
        set(&mut t, "endpoint_port_protocol", protocol.clone());
        set(&mut t, "endpoint_ready", ready);
        if let Some(r) = &addr.target_ref {
            set(&mut t, "endpoint_address_target_kind", r.kind.clone().unwrap_or_default());
            set(&mut t, "endpoint_address_target_name", r.name.clone().unwrap_or_default());
        }
        if let Some(n) = &addr.node_name {
            set(&mut t, "endpoint_node_name", n.clone());
        }
        if let Some(h) = addr.hostname.as_deref().filter(|h| !h.is_empty()) {
            set(&mut t, "endpoint_hostname", h);
        }
        let pod = addr
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| pods(r.namespace.as_deref().unwrap_or(&ns), r.name.as_deref().unwrap_or_default()));
        let Some(pod) = pod else {
            out.push(t);
            return;
        };
        match seen.iter_mut().find(|(p, _)| std::ptr::eq(*p, pod)) {
            Some((_, ports)) => ports.push(port.port),
            None => seen.push((pod, vec![port.port])),
        }
        t.extend(pod_labels(pod));
        'found: for (c, init) in all_containers(pod) {
            for cp in c.ports.iter().flatten() {
                if cp.container_port == port.port {
                    port_labels(&mut t, c, cp, &protocol, init);
                    break 'found;
                }
            }
        }
        out.push(t);
    };
    for ss in eps.subsets.iter().flatten() {
        for port in ss.ports.iter().flatten() {
            for a in ss.addresses.iter().flatten() {
                add(a, port, "true");
            }
            for a in ss.not_ready_addresses.iter().flatten() {
                add(a, port, "false");
            }
        }
    }
    for (pod, served) in seen {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()) else {
            continue;
        };
        for (c, init) in all_containers(pod) {
            for cp in c.ports.iter().flatten() {
                if served.contains(&cp.container_port) {
                    continue;
                }
                let mut t = group.clone();
                t.insert("__address__".into(), join_host_port(&ip, cp.container_port));
                port_labels(&mut t, c, cp, cp.protocol.as_deref().unwrap_or_default(), init);
                t.extend(pod_labels(pod));
                out.push(t);
            }
        }
    }
    out
}

/// A pod reduced to what the labels need (the watch keeps thousands).
pub fn slim_pod(p: Pod) -> Pod {
    let m = p.metadata;
    let slim_container = |c: Container| Container {
        name: c.name,
        image: c.image,
        ports: c.ports,
        ..Default::default()
    };
    let slim_status = |s: ContainerStatus| ContainerStatus {
        name: s.name,
        container_id: s.container_id,
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            labels: m.labels,
            annotations: m.annotations,
            owner_references: m.owner_references,
            ..Default::default()
        },
        spec: p.spec.map(|s| PodSpec {
            node_name: s.node_name,
            containers: s.containers.into_iter().map(slim_container).collect(),
            init_containers: s.init_containers.map(|v| v.into_iter().map(slim_container).collect()),
            ..Default::default()
        }),
        status: p.status.map(|s| PodStatus {
            pod_ip: s.pod_ip,
            host_ip: s.host_ip,
            phase: s.phase,
            conditions: s.conditions.map(|cs| {
                cs.into_iter()
                    .filter(|c| c.type_ == "Ready")
                    .map(|c| PodCondition {
                        type_: c.type_,
                        status: c.status,
                        ..Default::default()
                    })
                    .collect()
            }),
            container_statuses: s.container_statuses.map(|v| v.into_iter().map(slim_status).collect()),
            init_container_statuses: s.init_container_statuses.map(|v| v.into_iter().map(slim_status).collect()),
            ..Default::default()
        }),
    }
}

fn strip_meta(mut m: ObjectMeta) -> ObjectMeta {
    m.managed_fields = None;
    m
}

/// The objects one kubernetes_sd_config sees, by `namespace/name`.
#[derive(Default)]
pub struct SdStore {
    /// Pods.
    pub pods: HashMap<String, Pod>,
    /// Endpoints.
    pub endpoints: HashMap<String, Endpoints>,
    /// Services.
    pub services: HashMap<String, Service>,
    /// Bumped on every change.
    pub generation: u64,
}

impl SdStore {
    /// The raw targets (label sets with `__address__`) of `role`.
    pub fn targets(&self, role: &str) -> Vec<LabelMap> {
        match role {
            "pod" => {
                let mut v: Vec<(&String, &Pod)> = self.pods.iter().collect();
                v.sort_by(|a, b| a.0.cmp(b.0));
                v.into_iter().flat_map(|(_, p)| pod_targets(p)).collect()
            }
            "endpoints" => {
                let mut v: Vec<(&String, &Endpoints)> = self.endpoints.iter().collect();
                v.sort_by(|a, b| a.0.cmp(b.0));
                let lookup = |ns: &str, name: &str| self.pods.get(&format!("{ns}/{name}"));
                v.into_iter()
                    .flat_map(|(k, e)| endpoints_targets(e, self.services.get(k), &lookup))
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// The shared store of one discovery.
pub type SdStoreRef = Arc<Mutex<SdStore>>;

/// Locks a store (a poisoned lock is taken over).
pub fn lock(s: &Mutex<SdStore>) -> MutexGuard<'_, SdStore> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn key_of(m: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}

/// Which map of the store a watcher fills.
trait Stored:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + for<'de> Deserialize<'de>
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    fn map(s: &mut SdStore) -> &mut HashMap<String, Self>;
    fn slim(self) -> Self;
}

impl Stored for Pod {
    const KIND: &'static str = "pods";
    fn map(s: &mut SdStore) -> &mut HashMap<String, Self> {
        &mut s.pods
    }
    fn slim(self) -> Self {
        slim_pod(self)
    }
}

impl Stored for Endpoints {
    const KIND: &'static str = "endpoints";
    fn map(s: &mut SdStore) -> &mut HashMap<String, Self> {
        &mut s.endpoints
    }
    fn slim(mut self) -> Self {
        self.metadata = strip_meta(self.metadata);
        self
    }
}

impl Stored for Service {
    const KIND: &'static str = "services";
    fn map(s: &mut SdStore) -> &mut HashMap<String, Self> {
        &mut s.services
    }
    fn slim(self) -> Self {
        Service {
            metadata: strip_meta(self.metadata),
            ..Default::default()
        }
    }
}

/// Watches one kind in one namespace (None: all) into `store`.
async fn watch_kind<K: Stored>(
    client: kube::Client,
    namespace: Option<String>,
    sel: Option<SdSelector>,
    store: SdStoreRef,
    cx: SourceContext,
    job: String,
) {
    let api: Api<K> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut wc = watcher::Config::default();
    if let Some(s) = &sel {
        if !s.label.trim().is_empty() {
            wc = wc.labels(s.label.trim());
        }
        if !s.field.trim().is_empty() {
            wc = wc.fields(s.field.trim());
        }
    }
    let prefix = namespace.as_ref().map(|n| format!("{n}/"));
    let mut events = Box::pin(watcher(api, wc));
    let mut listing: Option<HashSet<String>> = None;
    let mut backoff = Duration::from_secs(1);
    let mut logged_forbidden = false;
    let mut last_err = String::new();
    loop {
        let ev = tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            ev = events.next() => ev,
        };
        let Some(ev) = ev else { return };
        match ev {
            Err(e) => {
                let wait = match classify_watch_error(&e) {
                    WatchErrorKind::Expired => continue,
                    WatchErrorKind::Forbidden => {
                        cx.error("forbidden");
                        if !logged_forbidden {
                            logged_forbidden = true;
                            tracing::warn!(source = %cx.name, job = %job, kind = K::KIND, namespace = ?namespace, error = %e, "kubernetes_sd: listing is forbidden (needs list and watch); retrying every 5m");
                        }
                        Duration::from_secs(300)
                    }
                    WatchErrorKind::Other => {
                        cx.error("kubernetes_sd");
                        let msg = e.to_string();
                        if msg != last_err {
                            tracing::warn!(source = %cx.name, job = %job, kind = K::KIND, namespace = ?namespace, error = %msg, "kubernetes_sd: watch failed; retrying");
                            last_err = msg;
                        }
                        let w = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        w
                    }
                };
                tokio::select! {
                    _ = cx.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Ok(ev) => {
                backoff = Duration::from_secs(1);
                last_err.clear();
                let mut g = lock(&store);
                match ev {
                    watcher::Event::Init => listing = Some(HashSet::new()),
                    watcher::Event::InitApply(o) => {
                        let k = key_of(o.meta());
                        if let Some(l) = listing.as_mut() {
                            l.insert(k.clone());
                        }
                        K::map(&mut g).insert(k, o.slim());
                        g.generation += 1;
                    }
                    watcher::Event::InitDone => {
                        if let Some(present) = listing.take() {
                            K::map(&mut g)
                                .retain(|k, _| prefix.as_ref().is_some_and(|p| !k.starts_with(p.as_str())) || present.contains(k));
                            g.generation += 1;
                        }
                    }
                    watcher::Event::Apply(o) => {
                        K::map(&mut g).insert(key_of(o.meta()), o.slim());
                        g.generation += 1;
                    }
                    watcher::Event::Delete(o) => {
                        K::map(&mut g).remove(&key_of(o.meta()));
                        g.generation += 1;
                    }
                }
            }
        }
    }
}

/// Starts the watchers of `cfg` (pods for role pod; endpoints, services and
/// pods for role endpoints, in each namespace) filling `store`; returns when
/// the source stops.
pub async fn run_discovery(cfg: KubernetesSdConfig, agent_kubeconfig: Option<PathBuf>, store: SdStoreRef, cx: SourceContext, job: String) {
    let kubeconfig = cfg.kubeconfig_file.clone().or(agent_kubeconfig);
    let what = format!("kubernetes_sd of job {job}");
    let Some(client) = crate::k8s::client_with_retry(kubeconfig.as_deref(), &cx, &what).await else {
        return;
    };
    let mut namespaces: Vec<Option<String>> = cfg.namespaces.names.iter().cloned().map(Some).collect();
    if cfg.namespaces.own_namespace {
        match std::fs::read_to_string(OWN_NAMESPACE_FILE) {
            Ok(n) if !n.trim().is_empty() => namespaces.push(Some(n.trim().to_string())),
            _ => {
                cx.error("kubernetes_sd");
                tracing::warn!(source = %cx.name, job = %job, file = OWN_NAMESPACE_FILE, "kubernetes_sd: own_namespace: the service account's namespace file is unreadable");
            }
        }
    }
    namespaces.sort();
    namespaces.dedup();
    if namespaces.is_empty() {
        namespaces.push(None);
    }
    let mut set = tokio::task::JoinSet::new();
    for ns in namespaces {
        let (c, s, x, j) = (client.clone(), store.clone(), cx.clone(), job.clone());
        set.spawn(watch_kind::<Pod>(c, ns.clone(), cfg.selector("pod").cloned(), s, x, j));
        if cfg.role == "endpoints" {
            let (c, s, x, j) = (client.clone(), store.clone(), cx.clone(), job.clone());
            set.spawn(watch_kind::<Endpoints>(c, ns.clone(), cfg.selector("endpoints").cloned(), s, x, j));
            let (c, s, x, j) = (client.clone(), store.clone(), cx.clone(), job.clone());
            set.spawn(watch_kind::<Service>(c, ns.clone(), cfg.selector("service").cloned(), s, x, j));
        }
    }
    while set.join_next().await.is_some() {}
}
