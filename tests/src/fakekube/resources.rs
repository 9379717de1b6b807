//! The resource types the fake serves, and the discovery documents built from
//! them (`/api`, `/api/v1`, `/apis`, `/apis/GROUP`, `/apis/GROUP/VERSION`).
//!
//! Only the verbs the fake implements are advertised (`get`, `list`,
//! `watch`), so a client reading discovery never tries a write that would
//! answer 405.

use serde_json::{Value, json};

/// One resource type (a plural under a group version).
#[derive(Debug)]
pub(crate) struct ResourceType {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// Version within the group.
    pub version: &'static str,
    /// Plural, lower case: the name in URLs and in RBAC.
    pub plural: &'static str,
    /// Singular, lower case.
    pub singular: &'static str,
    /// Kind of one object.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl's short names.
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Field selectors accepted besides `metadata.name` and
    /// `metadata.namespace`: (field label, JSON path in the object).
    pub fields: &'static [(&'static str, &'static [&'static str])],
    /// Whether the type is served by the metrics API (computed on request,
    /// not stored; get and list only).
    pub metrics: bool,
}

impl ResourceType {
    /// `v1` or `GROUP/VERSION`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind of a list of these objects.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const POD_FIELDS: &[(&str, &[&str])] = &[
    ("spec.nodeName", &["spec", "nodeName"]),
    ("spec.restartPolicy", &["spec", "restartPolicy"]),
    ("spec.schedulerName", &["spec", "schedulerName"]),
    ("spec.serviceAccountName", &["spec", "serviceAccountName"]),
    ("spec.hostNetwork", &["spec", "hostNetwork"]),
    ("status.phase", &["status", "phase"]),
    ("status.podIP", &["status", "podIP"]),
    ("status.nominatedNodeName", &["status", "nominatedNodeName"]),
];

const EVENT_FIELDS: &[(&str, &[&str])] = &[
    ("involvedObject.kind", &["involvedObject", "kind"]),
    ("involvedObject.namespace", &["involvedObject", "namespace"]),
    ("involvedObject.name", &["involvedObject", "name"]),
    ("involvedObject.uid", &["involvedObject", "uid"]),
    ("involvedObject.apiVersion", &["involvedObject", "apiVersion"]),
    ("involvedObject.resourceVersion", &["involvedObject", "resourceVersion"]),
    ("involvedObject.fieldPath", &["involvedObject", "fieldPath"]),
    ("reason", &["reason"]),
    ("reportingComponent", &["reportingComponent"]),
    ("source", &["source", "component"]),
    ("type", &["type"]),
];

const fn core(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> ResourceType {
    ResourceType {
        group: "",
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        categories: &[],
        fields: &[],
        metrics: false,
    }
}

const fn grouped(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short_names: &'static [&'static str],
) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced: true,
        short_names,
        categories: &["all"],
        fields: &[],
        metrics: false,
    }
}

/// Every resource type served. Indexes into this table identify a type in
/// the store.
pub(crate) static RESOURCES: &[ResourceType] = &[
    ResourceType {
        categories: &["all"],
        fields: POD_FIELDS,
        ..core("pods", "pod", "Pod", true, &["po"])
    },
    ResourceType {
        fields: EVENT_FIELDS,
        ..core("events", "event", "Event", true, &["ev"])
    },
    ResourceType {
        categories: &["all"],
        ..core("services", "service", "Service", true, &["svc"])
    },
    core("endpoints", "endpoints", "Endpoints", true, &["ep"]),
    core(
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
    ),
    ResourceType {
        fields: &[("spec.unschedulable", &["spec", "unschedulable"])],
        ..core("nodes", "node", "Node", false, &["no"])
    },
    ResourceType {
        fields: &[("status.phase", &["status", "phase"])],
        ..core("namespaces", "namespace", "Namespace", false, &["ns"])
    },
    grouped("apps", "deployments", "deployment", "Deployment", &["deploy"]),
    grouped("apps", "statefulsets", "statefulset", "StatefulSet", &["sts"]),
    grouped("apps", "daemonsets", "daemonset", "DaemonSet", &["ds"]),
    grouped("apps", "replicasets", "replicaset", "ReplicaSet", &["rs"]),
    ResourceType {
        fields: &[("status.successful", &["status", "succeeded"])],
        ..grouped("batch", "jobs", "job", "Job", &[])
    },
    grouped("batch", "cronjobs", "cronjob", "CronJob", &["cj"]),
    ResourceType {
        categories: &[],
        ..grouped("discovery.k8s.io", "endpointslices", "endpointslice", "EndpointSlice", &[])
    },
    ResourceType {
        group: "metrics.k8s.io",
        version: "v1beta1",
        plural: "pods",
        singular: "",
        kind: "PodMetrics",
        namespaced: true,
        short_names: &[],
        categories: &[],
        fields: &[],
        metrics: true,
    },
    ResourceType {
        group: "metrics.k8s.io",
        version: "v1beta1",
        plural: "nodes",
        singular: "",
        kind: "NodeMetrics",
        namespaced: false,
        short_names: &[],
        categories: &[],
        fields: &[],
        metrics: true,
    },
    // A custom resource: served only while its CRD is "installed"
    // (`FakeKube::install_argocd_crd`), as a CRD's group is.
    ResourceType {
        group: "argoproj.io",
        version: "v1alpha1",
        plural: "applications",
        singular: "application",
        kind: "Application",
        namespaced: true,
        short_names: &["app", "apps"],
        categories: &["argoproj"],
        fields: &[],
        metrics: false,
    },
];

/// Index of core v1 pods in `RESOURCES`.
pub(crate) const POD: usize = 0;
/// Index of core v1 nodes in `RESOURCES`.
pub(crate) const NODE: usize = 5;

/// The groups other than core, in the order `/apis` lists them.
pub(crate) const GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("batch", "v1"),
    ("discovery.k8s.io", "v1"),
    ("metrics.k8s.io", "v1beta1"),
    ("argoproj.io", "v1alpha1"),
];

/// Which optional groups are served now: metrics.k8s.io (metrics-server)
/// and argoproj.io (Argo CD's CRDs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Optional {
    pub metrics: bool,
    pub argocd: bool,
}

impl Optional {
    /// Whether `group` is served.
    pub fn serves(&self, group: &str) -> bool {
        match group {
            "metrics.k8s.io" => self.metrics,
            "argoproj.io" => self.argocd,
            _ => true,
        }
    }
}

/// The index of the type with this group, version and plural.
pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The index of the stored (non-metrics) type of an object with this
/// `apiVersion` and `kind`.
pub(crate) fn by_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| !r.metrics && r.api_version() == api_version && r.kind == kind)
}

/// The index of the stored type named by `name`: its kind (`Pod`), its
/// plural (`pods`) or its singular (`pod`), case-insensitively.
pub(crate) fn by_name(name: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| {
        !r.metrics && (r.kind.eq_ignore_ascii_case(name) || r.plural.eq_ignore_ascii_case(name) || r.singular.eq_ignore_ascii_case(name))
    })
}

/// Whether a group version is served (`opt`: which optional groups are on).
pub(crate) fn group_served(group: &str, version: &str, opt: Optional) -> bool {
    GROUPS.iter().any(|(g, v)| *g == group && *v == version && opt.serves(g))
}

/// `/api`: the core group's versions.
pub(crate) fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

fn group_doc(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis`: the named groups (without the optional ones that are off).
pub(crate) fn api_group_list(opt: Optional) -> Value {
    let groups: Vec<Value> = GROUPS.iter().filter(|(g, _)| opt.serves(g)).map(|(g, v)| group_doc(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP`.
pub(crate) fn api_group(group: &str, opt: Optional) -> Option<Value> {
    let (g, v) = GROUPS.iter().find(|(g, _)| *g == group && opt.serves(g))?;
    let mut doc = group_doc(g, v);
    if let Some(o) = doc.as_object_mut() {
        let mut with_kind = serde_json::Map::new();
        with_kind.insert("kind".into(), json!("APIGroup"));
        with_kind.insert("apiVersion".into(), json!("v1"));
        with_kind.extend(std::mem::take(o));
        *o = with_kind;
    }
    Some(doc)
}

/// `/api/v1` or `/apis/GROUP/VERSION`: the resources of a group version,
/// with their `status` and `log` subresources where the real API has them.
pub(crate) fn api_resource_list(group: &str, version: &str) -> Value {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let verbs: &[&str] = if r.metrics { &["get", "list"] } else { &["get", "list", "watch"] };
        let mut doc = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs,
        });
        if !r.short_names.is_empty() {
            doc["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            doc["categories"] = json!(r.categories);
        }
        resources.push(doc);
        let has_status = !r.metrics && !matches!(r.kind, "Event" | "Endpoints" | "EndpointSlice");
        if r.kind == "Pod" {
            resources.push(json!({
                "name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"],
            }));
        }
        if has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get"],
            }));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}
