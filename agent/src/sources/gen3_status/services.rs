//! The Gen3 services `gen3_status` knows how to probe (SERVICES.md).

/// A Gen3 service the source knows how to probe (SERVICES.md, tables A and B).
#[derive(Debug, Clone, Copy)]
pub struct BuiltinService {
    /// The chart name, used as the `service` label.
    pub name: &'static str,
    /// Health path through revproxy; `None` when revproxy does not expose it
    /// to anonymous callers.
    pub public_health: Option<&'static str>,
    /// Version path through revproxy.
    pub public_version: Option<&'static str>,
    /// The Kubernetes Service name.
    pub k8s_service: &'static str,
    /// The Service's port.
    pub port: u16,
    /// Health path in-cluster.
    pub health: &'static str,
    /// Version path in-cluster.
    pub version: Option<&'static str>,
    /// Whether a 2xx HTML page is a healthy answer (the portal's).
    pub html_ok: bool,
}

const fn svc(
    name: &'static str,
    public_health: Option<&'static str>,
    public_version: Option<&'static str>,
    k8s_service: &'static str,
    health: &'static str,
    version: Option<&'static str>,
) -> BuiltinService {
    BuiltinService {
        name,
        public_health,
        public_version,
        k8s_service,
        port: 80,
        health,
        version,
        html_ok: false,
    }
}

/// The default service set: every Gen3 service of SERVICES.md with a health
/// endpoint (frontend-framework, argo-wrapper, gen3-analysis and
/// cohort-middleware can be added through `services`).
pub const BUILTIN_SERVICES: &[BuiltinService] = &[
    svc("revproxy", Some("/_status"), None, "revproxy-service", "/_status", None),
    BuiltinService {
        html_ok: true,
        ..svc("portal", Some("/"), None, "portal-service", "/", None)
    },
    svc(
        "fence",
        Some("/user/_status"),
        Some("/user/_version"),
        "fence-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "presigned-url-fence",
        None,
        None,
        "presigned-url-fence-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "indexd",
        Some("/index/_status"),
        Some("/index/_version"),
        "indexd-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "sheepdog",
        Some("/api/_status"),
        Some("/api/_version"),
        "sheepdog-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "peregrine",
        Some("/peregrine/_status"),
        Some("/peregrine/_version"),
        "peregrine-service",
        "/_status",
        Some("/_version"),
    ),
    svc("arborist", None, None, "arborist-service", "/health", None),
    svc(
        "metadata",
        Some("/mds/_status"),
        Some("/mds/version"),
        "metadata-service",
        "/_status",
        Some("/version"),
    ),
    svc(
        "guppy",
        Some("/guppy/_status"),
        Some("/guppy/_version"),
        "guppy-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "audit",
        Some("/audit/_status"),
        Some("/audit/_version"),
        "audit-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "requestor",
        Some("/requestor/_status"),
        Some("/requestor/_version"),
        "requestor-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "manifestservice",
        Some("/manifests/_status"),
        None,
        "manifestservice-service",
        "/_status",
        None,
    ),
    svc(
        "wts",
        Some("/wts/_status"),
        Some("/wts/_version"),
        "workspace-token-service",
        "/_status",
        Some("/_version"),
    ),
    // Public /lw-workspace/ and /job/ need arborist access: in-cluster only.
    svc("hatchery", None, None, "hatchery-service", "/_status", Some("/_version")),
    BuiltinService {
        port: 8877,
        ..svc("ambassador", None, None, "ambassador-admin", "/ambassador/v0/check_alive", None)
    },
    svc("sower", None, None, "sower-service", "/_status", Some("/_version")),
    svc("ssjdispatcher", None, None, "ssjdispatcher-service", "/_status", None),
    svc(
        "gen3-workflow",
        Some("/workflows/_status"),
        Some("/workflows/_version"),
        "gen3-workflow-service",
        "/_status",
        Some("/_version"),
    ),
    svc(
        "gen3-user-data-library",
        Some("/library/_status"),
        Some("/library/_version"),
        "gen3-user-data-library-service",
        "/_status",
        Some("/_version"),
    ),
];
