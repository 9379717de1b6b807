//! A fake Kubernetes API server for tests and benchmarks.
//!
//! No real API server can run on the test machines, so this one speaks what
//! kube-rs (`Api::list`, `Api::watch`, `kube::runtime::watcher` and
//! reflectors, `Api::log_stream`) and kubectl (`get -o json`, `get --watch`,
//! `logs -f`) use, in the real wire format:
//!
//! - discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/GROUP`,
//!   `/apis/GROUP/VERSION` (plain `APIVersions`, `APIGroupList`,
//!   `APIResourceList`; the aggregated `apidiscovery.k8s.io/v2` form is not
//!   offered, and clients fall back to the plain one as they do with
//!   servers before 1.26); `/openapi/*` answers 404;
//! - core/v1 pods, events, services, endpoints, persistentvolumeclaims,
//!   nodes, namespaces; apps/v1 deployments, statefulsets, daemonsets,
//!   replicasets; batch/v1 jobs, cronjobs; discovery.k8s.io/v1
//!   endpointslices: get, list and watch, namespaced
//!   (`/api/v1/namespaces/NS/pods`) and across namespaces (`/api/v1/pods`);
//! - metrics.k8s.io/v1beta1 pods and nodes: get and list
//!   ([`FakeKube::set_pod_metrics`], [`FakeKube::disable_metrics_api`]);
//! - argoproj.io/v1alpha1 applications (Argo CD's CRD) once
//!   [`FakeKube::install_argocd_crd`] is called: list, watch, get;
//! - `pods/log` with `container`, `follow`, `timestamps`, `sinceTime`,
//!   `sinceSeconds`, `tailLines`, `limitBytes`.
//!
//! **List**: objects in etcd key order (`namespace/name`); `limit` and
//! `continue` paging, each page read at the first page's resourceVersion
//! (a consistent snapshot, rebuilt from the history; a continue token older
//! than the history answers 410 `Expired`); `resourceVersion` with
//! `resourceVersionMatch` `NotOlderThan` or `Exact` (410 when the version
//! has been compacted away, 504 `ResourceVersionTooLarge` for a version from
//! the future), `labelSelector`, `fieldSelector` (`metadata.name`,
//! `metadata.namespace` and the type's own field labels; others 400). List
//! items have no `kind`/`apiVersion`, as from the real server.
//!
//! **Watch** (`watch=true` or `watch=1`): a chunked stream of
//! newline-delimited `{"type": ..., "object": ...}` events. From
//! `resourceVersion=N`: every change after N from the history; from `0` or
//! none: a synthetic ADDED per object, then changes; with
//! `sendInitialEvents=true` (needs `allowWatchBookmarks=true` and
//! `resourceVersionMatch=NotOlderThan`, as on the real server) the ADDED
//! events end with a BOOKMARK annotated `k8s.io/initial-events-end`.
//! `allowWatchBookmarks=true` adds a BOOKMARK every
//! [`Options::bookmark_interval`] (the real server: about a minute).
//! `timeoutSeconds` ends the stream cleanly. An object that stops matching
//! the selectors is sent as DELETED. A watch from a resourceVersion older
//! than the history gets HTTP 200 and one ERROR event carrying a Status
//! with code 410, reason `Expired`, then the stream ends.
//!
//! **Faults**: [`FakeKube::forbid`] (403 with the real message and
//! details), [`FakeKube::cut_watches`] (connections dropped mid-stream, so
//! clients must resume from their last resourceVersion),
//! [`FakeKube::compact`] (history forgotten: resuming needs a relist).
//!
//! Every error is a `metav1.Status` object. Requests need
//! `Authorization: Bearer <token>` (401 otherwise), except `/version` and the
//! health paths. One port answers HTTPS (a certificate for 127.0.0.1 from a
//! CA generated at start; [`FakeKube::write_kubeconfig`] points there,
//! because kubectl sends a kubeconfig's token only over TLS) and plain HTTP
//! ([`FakeKube::url`]). See `tests/FAKE_KUBE.md` for the differences from a
//! real API server. The fake only reads: other methods answer 405. It holds at
//! most [`Options::history`] changes (then older watchers get 410) and
//! [`Options::log_lines`] lines per container.
//!
//! ```no_run
//! use csoc_tests::fakekube::{FakeKube, objects};
//! let kube = FakeKube::start()?;
//! kube.apply(objects::pod("gen3", "fence-7d9f-abcde", "fence", "Running"));
//! kube.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"), "gen3")?;
//! # anyhow::Ok(())
//! ```

pub mod objects;
mod resources;
mod selectors;
mod server;
mod state;
mod table;
#[cfg(test)]
mod tests;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

pub use state::{ApplyError, Request, parse_rfc3339, rfc3339, rfc3339_nanos};

use server::Shared;
use state::{State, Usage};

/// Settings of a fake server; [`Options::default`] suits tests.
#[derive(Debug, Clone)]
pub struct Options {
    /// Period of BOOKMARK events on watches that allow them (default 1s;
    /// the real apiserver sends one about every minute).
    pub bookmark_interval: Duration,
    /// Changes kept for watches and consistent paging (default 10,000); a
    /// watch from before the oldest kept change gets 410 Gone.
    pub history: usize,
    /// Lines kept per container log (default 100,000).
    pub log_lines: usize,
    /// The bearer token required (default: a random one).
    pub token: Option<String>,
    /// The user named in 403 messages (default
    /// `system:serviceaccount:gen3:csoc-agent`).
    pub user: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            bookmark_interval: Duration::from_secs(1),
            history: 10_000,
            log_lines: 100_000,
            token: None,
            user: "system:serviceaccount:gen3:csoc-agent".into(),
        }
    }
}

/// A running fake API server on 127.0.0.1 (its own thread and tokio
/// runtime, so sync tests can use it). Dropping it stops the server and
/// ends every stream.
pub struct FakeKube {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKube").field("addr", &self.addr).finish_non_exhaustive()
    }
}

fn random_token() -> String {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::process::id());
    let b = RandomState::new().hash_one(SystemTime::now());
    format!("fake-{a:016x}{b:016x}")
}

impl FakeKube {
    /// Starts a fake on a free port of 127.0.0.1 with default options.
    pub fn start() -> anyhow::Result<FakeKube> {
        Self::start_with(Options::default())
    }

    /// Starts a fake on a free port of 127.0.0.1.
    pub fn start_with(opts: Options) -> anyhow::Result<FakeKube> {
        Self::start_on("127.0.0.1:0".parse()?, opts)
    }

    /// Starts a fake on `addr` (a loopback address: the fake has no real
    /// authentication).
    pub fn start_on(addr: SocketAddr, opts: Options) -> anyhow::Result<FakeKube> {
        anyhow::ensure!(addr.ip().is_loopback(), "the fake API server listens on loopback only, not {addr}");
        let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(opts.history, opts.log_lines)),
            rv_tx: watch::Sender::new(1),
            cut_tx: watch::Sender::new(0),
            cut_logs_tx: watch::Sender::new(0),
            token: opts.token.unwrap_or_else(random_token),
            user: opts.user,
            bookmark_interval: opts.bookmark_interval,
            addr: addr.to_string(),
        });
        let certs = tls::Certs::generate().context("generating the fake API server's certificates")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-kube")
            .enable_all()
            .build()
            .context("building the fake API server's runtime")?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let app = server::router(shared.clone());
        let thread = std::thread::Builder::new().name("fake-kube".into()).spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener).and_then(|l| tls::DualListener::new(l, certs.server)) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime cancels the open streams' tasks.
            rt.shutdown_timeout(Duration::from_secs(1));
        })?;
        ready_rx.recv().context("the fake API server's thread ended before serving")??;
        Ok(FakeKube {
            shared,
            addr,
            ca_pem: certs.ca_pem,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`: plain HTTP, for quick requests (with
    /// `Authorization: Bearer <token>`). kubectl sends no credentials to a
    /// plain-HTTP server: give it [`FakeKube::write_kubeconfig`]'s file.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:PORT`: the same server over TLS, with a
    /// certificate for `127.0.0.1` and `localhost` signed by
    /// [`FakeKube::ca_pem`].
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token it requires (401 Unauthorized without it).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Writes a kubeconfig (mode 0600: it holds the token) whose current
    /// context points at this server over HTTPS ([`FakeKube::https_url`],
    /// the CA as `certificate-authority-data`) with its token and
    /// `namespace`, as a cloud provider's kubeconfig does. HTTPS because
    /// client-go (kubectl) sends a kubeconfig's token only to a TLS server.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> anyhow::Result<()> {
        use base64::Engine as _;
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: csoc-fake\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: csoc-fake\n  context:\n    cluster: csoc-fake\n    user: csoc-fake\n    namespace: {}\ncurrent-context: csoc-fake\npreferences: {{}}\nusers:\n- name: csoc-fake\n  user:\n    token: {}\n",
            self.https_url(),
            base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes()),
            serde_json::to_string(namespace)?,
            serde_json::to_string(self.token())?,
        );
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("writing {}", path.display()))?;
            f.write_all(text.as_bytes())?;
        }
        Ok(())
    }

    fn notify(&self, rv: u64) {
        self.shared.rv_tx.send_replace(rv);
    }

    /// Creates or replaces an object by (kind, namespace, name), as the
    /// apiserver stores it: `uid` and `creationTimestamp` set on creation and
    /// kept on replacement, `resourceVersion` from the global counter,
    /// `generation` counting spec changes for workloads, `namespace`
    /// defaulting to `default`. Watchers get ADDED or MODIFIED; an identical
    /// object changes nothing. Returns the stored object.
    pub fn try_apply(&self, obj: Value) -> Result<Value, ApplyError> {
        let (stored, rv) = {
            let mut st = self.shared.lock();
            let (stored, changed) = st.apply(obj)?;
            (stored, changed.then_some(st.rv))
        };
        if let Some(rv) = rv {
            self.notify(rv);
        }
        Ok((*stored).clone())
    }

    /// [`FakeKube::try_apply`], panicking on an object the fake cannot
    /// store (no kind, name, or a kind it does not serve): a bug in the test.
    pub fn apply(&self, obj: Value) -> Value {
        match self.try_apply(obj) {
            Ok(v) => v,
            Err(e) => panic!("FakeKube::apply: {e}"),
        }
    }

    /// Deletes an object (`kind` as `Pod`, `pods` or `pod`; `namespace`
    /// ignored for cluster-scoped kinds): watchers get DELETED with its last
    /// state at a new resourceVersion. A pod's log followers get what is
    /// left and their streams end. `false` when there was no such object.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let Some(res) = resources::by_name(kind) else {
            return false;
        };
        let (deleted, rv) = {
            let mut st = self.shared.lock();
            (st.delete(res, namespace.unwrap_or("default"), name), st.rv)
        };
        if deleted {
            self.notify(rv);
        }
        deleted
    }

    /// The stored object (`kind` as `Pod`, `pods` or `pod`).
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = resources::by_name(kind)?;
        let ns = if resources::RESOURCES[res].namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        self.shared.lock().objects[res].get(&state::key(ns, name)).map(|o| (**o).clone())
    }

    /// Every stored object of a kind, in key order (all namespaces when
    /// `namespace` is `None`).
    pub fn list(&self, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(res) = resources::by_name(kind) else {
            return Vec::new();
        };
        self.shared.lock().objects[res]
            .values()
            .filter(|o| namespace.is_none_or(|n| o["metadata"]["namespace"].as_str() == Some(n)))
            .map(|o| (**o).clone())
            .collect()
    }

    /// The current (last) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Every request for `resource` (plural, `pods/log`, or
    /// `plural.group`) now answers 403 Forbidden with the real apiserver's
    /// Status. A plain plural matches in every group (`pods` also forbids
    /// `pods.metrics.k8s.io`); a subresource must be named (`pods/log`).
    pub fn forbid(&self, resource: &str) {
        self.shared.lock().forbidden.insert(resource.to_string());
    }

    /// Undoes [`FakeKube::forbid`].
    pub fn allow(&self, resource: &str) {
        self.shared.lock().forbidden.remove(resource);
    }

    /// Appends a line to a container's log, stamped now.
    pub fn log(&self, namespace: &str, pod: &str, container: &str, line: &str) {
        self.shared.lock().append_log(namespace, pod, container, SystemTime::now(), line);
    }

    /// Appends a line stamped `time` (RFC 3339, e.g.
    /// `2025-09-24T10:00:00.123456789Z`); panics on a malformed time (a bug
    /// in the test).
    pub fn log_at(&self, namespace: &str, pod: &str, container: &str, time: &str, line: &str) {
        let t = match parse_rfc3339(time) {
            Ok(t) => t,
            Err(e) => panic!("FakeKube::log_at: {e}"),
        };
        self.shared.lock().append_log(namespace, pod, container, t, line);
    }

    /// Ends every open watch abruptly (the connection drops without the
    /// final chunk, as when a load balancer cuts it); clients must resume
    /// from their last resourceVersion.
    pub fn cut_watches(&self) {
        self.shared.cut_tx.send_modify(|g| *g += 1);
    }

    /// Ends every open `pods/log` stream abruptly.
    pub fn cut_log_streams(&self) {
        self.shared.cut_logs_tx.send_modify(|g| *g += 1);
    }

    /// Forgets the change history, as etcd compaction plus a watch-cache
    /// re-initialisation do: the resourceVersion moves on, open watches end
    /// (as [`FakeKube::cut_watches`]), and a watch or exact list from any
    /// earlier resourceVersion (or a continue token) answers 410 Gone with
    /// reason `Expired`, so clients must relist.
    pub fn compact(&self) {
        let rv = {
            let mut st = self.shared.lock();
            st.compact();
            st.rv
        };
        self.cut_watches();
        self.notify(rv);
    }

    /// Every request answered so far (the last 100,000), oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Sets a pod's usage in metrics.k8s.io/v1beta1: (container, cpu,
    /// memory) as quantities. metrics-server reports CPU in nanocores
    /// (`"12345678n"`) and memory in kibibytes (`"65536Ki"`); any quantity
    /// is served as given.
    pub fn set_pod_metrics(&self, namespace: &str, pod: &str, containers: &[(&str, &str, &str)]) {
        let usage = containers
            .iter()
            .map(|(c, cpu, mem)| Usage {
                container: c.to_string(),
                cpu: cpu.to_string(),
                memory: mem.to_string(),
            })
            .collect();
        self.shared
            .lock()
            .pod_metrics
            .insert((namespace.to_string(), pod.to_string()), usage);
    }

    /// Sets a node's usage in metrics.k8s.io/v1beta1.
    pub fn set_node_metrics(&self, node: &str, cpu: &str, memory: &str) {
        self.shared
            .lock()
            .node_metrics
            .insert(node.to_string(), (cpu.to_string(), memory.to_string()));
    }

    /// metrics.k8s.io is no longer served: absent from `/apis`, its paths
    /// answer 404 (as in a cluster without metrics-server).
    pub fn disable_metrics_api(&self) {
        self.shared.lock().metrics_api = false;
    }

    /// Serves metrics.k8s.io again.
    pub fn enable_metrics_api(&self) {
        self.shared.lock().metrics_api = true;
    }

    /// Installs Argo CD's CRDs: argoproj.io/v1alpha1 `applications` is
    /// listed in discovery and served (list, watch, get) at
    /// `/apis/argoproj.io/v1alpha1/namespaces/NS/applications`. Off by
    /// default, as in a cluster without Argo CD: its paths answer 404.
    /// Applications can be applied either way (the store does not check).
    pub fn install_argocd_crd(&self) {
        self.shared.lock().argocd_crd = true;
    }

    /// Removes Argo CD's CRDs again (paths 404, open watches keep going
    /// until cut).
    pub fn uninstall_argocd_crd(&self) {
        self.shared.lock().argocd_crd = false;
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
