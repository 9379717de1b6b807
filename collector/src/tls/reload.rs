//! Certificates and keys re-read when their files change, without a
//! restart (`tls_reload_interval`, default 5s; 0 turns it off).
//!
//! cert-manager renews a certificate by rewriting its Secret; the kubelet
//! then swaps the Secret volume's `..data` symlink to a new directory, so
//! `tls.crt` and `tls.key` change together. Outside Kubernetes, tools
//! replace the files by rename (or rewrite them in place). All three are
//! seen the same way: every `tls_reload_interval` a [`Reloader`] reads each
//! file it watches through its path (following symlinks) and compares the
//! SHA-256 of the contents with those of the files it last loaded. No
//! inotify: a symlink swap in a mounted volume is not reliably reported on
//! the watched path, and reading a few kilobytes every few seconds costs
//! nothing.
//!
//! When the contents differ, the listener's whole TLS configuration is
//! built again from the files, with the same checks as at start (chain and
//! key parse, the key belongs to the certificate, the client CA is usable),
//! and swapped into its [`ServerTls`]: handshakes that begin afterwards use
//! it, connections already open keep theirs. A configuration that does not
//! build is given one more look a second later (a rotation that replaces
//! the certificate and the key by two separate renames is half done for a
//! moment); if the files are still the same and still broken, the error is
//! logged, counted, and the previous certificate stays in service until the
//! files change again.
//!
//! Metrics (`csoc_collector_tls_*`, `listener` is `grpc` or `http`):
//! `tls_reloads_total{listener,result="success|failure"}` and
//! `tls_last_reload_successful{listener}` (1, or 0 while the files on disk
//! cannot be loaded and the previous certificate is served).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{GrpcTls, GrpcTlsConfig, HttpTlsConfig};
use crate::config::ConfigError;

/// How long a configuration that does not build is given to settle before
/// the failure is reported.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A listener's current TLS configuration, swapped by its [`Reloader`]; the
/// accept loop takes [`ServerTls::current`] for every handshake.
#[derive(Debug)]
pub struct ServerTls {
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Starts with `config`.
    pub fn new(config: Arc<ServerConfig>) -> Arc<Self> {
        Arc::new(ServerTls {
            current: RwLock::new(config),
        })
    }

    /// The configuration for a new handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, config: Arc<ServerConfig>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
    }
}

/// Which listener a TLS configuration serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The gRPC ingest (`grpc_tls`).
    Grpc,
    /// The HTTP API (`http_tls`).
    Http,
}

impl Listener {
    /// The `listener` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Grpc => "grpc",
            Listener::Http => "http",
        }
    }
}

type Labels = Vec<(String, String)>;

/// `csoc_collector_tls_*` (see the module doc).
#[derive(Clone, Default)]
pub struct TlsMetrics {
    reloads: Family<Labels, Counter>,
    last_successful: Family<Labels, Gauge>,
}

impl TlsMetrics {
    /// Registers the metrics in `reg` (the `csoc_collector` registry).
    pub fn new(reg: &mut Registry) -> Self {
        let m = TlsMetrics::default();
        let r = reg.sub_registry_with_prefix("tls");
        r.register(
            "reloads",
            "Reloads of a listener's TLS certificate, key or client CA after their files changed, by listener and result (success, failure: the previous certificate stays in service)",
            m.reloads.clone(),
        );
        r.register(
            "last_reload_successful",
            "Whether the listener's TLS files on disk are the ones in service (1), or the last change could not be loaded (0)",
            m.last_successful.clone(),
        );
        m
    }

    fn listener(&self, l: Listener) {
        for result in ["success", "failure"] {
            let _ = self.reloads.get_or_create(&labels(l, Some(result)));
        }
        self.last_successful.get_or_create(&labels(l, None)).set(1);
    }

    fn outcome(&self, l: Listener, ok: bool) {
        self.reloads
            .get_or_create(&labels(l, Some(if ok { "success" } else { "failure" })))
            .inc();
        self.last_successful.get_or_create(&labels(l, None)).set(i64::from(ok));
    }
}

fn labels(l: Listener, result: Option<&str>) -> Labels {
    let mut v = vec![("listener".to_string(), l.as_str().to_string())];
    if let Some(r) = result {
        v.push(("result".into(), r.into()));
    }
    v
}

/// The SHA-256 of each watched file's contents (`None`: unreadable).
type Snapshot = Vec<Option<[u8; 32]>>;

/// Builds a listener's configuration from its files: the server config and
/// the leaf certificate it presents.
type Build = Box<dyn Fn() -> Result<(Arc<ServerConfig>, CertificateDer<'static>), ConfigError> + Send>;

/// What one [`Reloader::poll`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The files are those in service (or those that last failed).
    Unchanged,
    /// The files changed and are now in service.
    Reloaded,
    /// The files changed but do not build; looked at again after [`SETTLE`].
    Settling,
    /// The files changed, did not build twice in a row: logged and counted.
    Failed(String),
}

/// Watches one listener's certificate, key and client CA files (see the
/// module doc).
pub struct Reloader {
    listener: Listener,
    files: Vec<PathBuf>,
    build: Build,
    target: Arc<ServerTls>,
    metrics: TlsMetrics,
    applied: Snapshot,
    suspect: Option<Snapshot>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("listener", &self.listener)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// Builds the gRPC listener's TLS (as [`super::grpc_server`]) and a
    /// reloader of its files.
    pub fn grpc(cfg: &GrpcTlsConfig, metrics: &TlsMetrics) -> Result<(GrpcTls, Arc<ServerTls>, Reloader), ConfigError> {
        let files: Vec<PathBuf> = [&cfg.cert_file, &cfg.key_file, &cfg.client_ca_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let c = cfg.clone();
        let build: Build = Box::new(move || super::grpc_server(&c).map(|t| (t.server, t.leaf)));
        // The snapshot is taken before the files are read: a change in
        // between is seen by the first poll (one reload too many, never one
        // too few).
        let applied = snapshot(&files);
        let tls = super::grpc_server(cfg)?;
        let target = ServerTls::new(tls.server.clone());
        let r = Reloader::with(Listener::Grpc, files, build, target.clone(), metrics, applied);
        Ok((tls, target, r))
    }

    /// Builds the HTTP listener's TLS (as [`super::http_server`]) and a
    /// reloader of its files.
    pub fn http(cfg: &HttpTlsConfig, metrics: &TlsMetrics) -> Result<(Arc<ServerTls>, Reloader), ConfigError> {
        let files: Vec<PathBuf> = [&cfg.cert_file, &cfg.key_file].into_iter().flatten().cloned().collect();
        let c = cfg.clone();
        let build: Build = Box::new(move || super::http_server_and_leaf(&c));
        let applied = snapshot(&files);
        let (server, _) = super::http_server_and_leaf(cfg)?;
        let target = ServerTls::new(server);
        let r = Reloader::with(Listener::Http, files, build, target.clone(), metrics, applied);
        Ok((target, r))
    }

    fn with(
        listener: Listener,
        files: Vec<PathBuf>,
        build: Build,
        target: Arc<ServerTls>,
        metrics: &TlsMetrics,
        applied: Snapshot,
    ) -> Self {
        metrics.listener(listener);
        Reloader {
            listener,
            files,
            build,
            target,
            metrics: metrics.clone(),
            applied,
            suspect: None,
        }
    }

    /// Looks at the files once (blocking I/O: a few small reads).
    pub fn poll(&mut self) -> Poll {
        let now = snapshot(&self.files);
        if now == self.applied {
            self.suspect = None;
            return Poll::Unchanged;
        }
        let l = self.listener.as_str();
        match (self.build)() {
            Ok((server, leaf)) => {
                self.target.replace(server);
                self.applied = now;
                self.suspect = None;
                self.metrics.outcome(self.listener, true);
                tracing::info!(listener = l, certificate = %describe(&leaf), "TLS certificate reloaded: new connections use it");
                Poll::Reloaded
            }
            Err(e) if self.suspect.as_ref() != Some(&now) => {
                // Maybe half-way through a rotation: look again shortly.
                tracing::debug!(listener = l, error = %e, "TLS files changed but do not load yet");
                self.suspect = Some(now);
                Poll::Settling
            }
            Err(e) => {
                self.applied = now;
                self.suspect = None;
                self.metrics.outcome(self.listener, false);
                tracing::error!(
                    listener = l,
                    error = %e,
                    "TLS files changed but cannot be loaded: still serving the previous certificate (fix the files; they are read again when they change)"
                );
                Poll::Failed(e.to_string())
            }
        }
    }

    /// Polls every `interval` (and [`SETTLE`] after a change that does not
    /// build yet) until `stop`.
    pub async fn run(mut self, interval: Duration, stop: CancellationToken) {
        let mut wait = interval;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let polled = tokio::task::spawn_blocking(move || {
                let p = self.poll();
                (self, p)
            })
            .await;
            let Ok((me, p)) = polled else {
                tracing::error!("TLS reload task failed; certificates are no longer re-read");
                return;
            };
            self = me;
            wait = if p == Poll::Settling { SETTLE.min(interval) } else { interval };
        }
    }
}

fn snapshot(files: &[PathBuf]) -> Snapshot {
    files
        .iter()
        .map(|f| std::fs::read(f).ok().map(|b| Sha256::digest(&b).into()))
        .collect()
}

/// `serial 1a:2b:..., CN=..., DNS=..., not after 2026-01-01T00:00:00Z,
/// sha256 ab12...` for the log.
pub fn describe(der: &CertificateDer<'_>) -> String {
    let fp = hex::encode(Sha256::digest(der.as_ref()));
    let names = super::CertNames::from_der(der).map(|n| n.to_string()).unwrap_or_default();
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => {
            let not_after = c
                .validity()
                .not_after
                .to_rfc2822()
                .unwrap_or_else(|_| c.validity().not_after.timestamp().to_string());
            format!("serial {}, {names}, not after {not_after}, sha256 {fp}", c.raw_serial_as_string())
        }
        Err(_) => format!("sha256 {fp}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};
    use std::path::Path;

    /// A self-signed server certificate for 127.0.0.1; (cert PEM, key PEM, DER).
    fn cert(cn: &str) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        let c = p.self_signed(&key).expect("sign");
        (c.pem(), key.serialize_pem(), c.der().to_vec())
    }

    /// Writes `content` to `path` by rename, as cert-manager's tools do.
    fn replace(path: &Path, content: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }

    /// The leaf the configuration in service presents.
    fn served(t: &ServerTls) -> Vec<u8> {
        handshake_leaf(t.current())
    }

    /// A real in-memory TLS handshake against `cfg`: the server's leaf.
    fn handshake_leaf(cfg: Arc<ServerConfig>) -> Vec<u8> {
        #[derive(Debug)]
        struct Any;
        impl rustls::client::danger::ServerCertVerifier for Any {
            fn verify_server_cert(
                &self,
                _: &CertificateDer<'_>,
                _: &[CertificateDer<'_>],
                _: &rustls::pki_types::ServerName<'_>,
                _: &[u8],
                _: rustls::pki_types::UnixTime,
            ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            fn verify_tls12_signature(
                &self,
                _: &[u8],
                _: &CertificateDer<'_>,
                _: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
                Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
            }
            fn verify_tls13_signature(
                &self,
                _: &[u8],
                _: &CertificateDer<'_>,
                _: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
                Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
            }
            fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
                super::super::provider().signature_verification_algorithms.supported_schemes()
            }
        }
        let mut client_cfg = rustls::ClientConfig::builder_with_provider(super::super::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Any))
            .with_no_client_auth();
        client_cfg.alpn_protocols = cfg.alpn_protocols.clone();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let mut client = rustls::ClientConnection::new(Arc::new(client_cfg), name).expect("client");
        let mut server = rustls::ServerConnection::new(cfg).expect("server");
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).expect("client write");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).expect("server read");
            }
            server.process_new_packets().expect("server process");
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).expect("server write");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).expect("client read");
            }
            client.process_new_packets().expect("client process");
            if !client.is_handshaking() {
                break;
            }
        }
        client.peer_certificates().expect("server certificate")[0].to_vec()
    }

    fn reloads(m: &TlsMetrics, result: &str) -> u64 {
        m.reloads.get_or_create(&labels(Listener::Http, Some(result))).get()
    }

    #[test]
    fn a_replaced_certificate_is_served_a_broken_one_is_not_and_each_outcome_is_counted() {
        let d = tempfile::tempdir().expect("tempdir");
        let (crt, key) = (d.path().join("tls.crt"), d.path().join("tls.key"));
        let a = cert("A");
        let b = cert("B");
        std::fs::write(&crt, &a.0).expect("write");
        std::fs::write(&key, &a.1).expect("write");
        let cfg = HttpTlsConfig {
            cert_file: Some(crt.clone()),
            key_file: Some(key.clone()),
        };
        let m = TlsMetrics::default();
        let (target, mut r) = Reloader::http(&cfg, &m).expect("initial");
        assert_eq!(served(&target), a.2);
        assert_eq!(r.poll(), Poll::Unchanged);

        // Certificate and key replaced by two renames: between them the pair
        // does not match; the reloader waits rather than failing.
        replace(&crt, &b.0);
        assert_eq!(r.poll(), Poll::Settling, "a half-done rotation is not a failure yet");
        assert_eq!(served(&target), a.2);
        replace(&key, &b.1);
        assert_eq!(r.poll(), Poll::Reloaded);
        assert_eq!(served(&target), b.2, "new handshakes get B");
        assert_eq!((reloads(&m, "success"), reloads(&m, "failure")), (1, 0));

        // Garbage: after the settle look, a failure, counted once; B stays.
        replace(&crt, "not a certificate\n");
        assert_eq!(r.poll(), Poll::Settling);
        match r.poll() {
            Poll::Failed(e) => assert!(e.contains("http_tls.cert_file") && e.contains("no PEM certificate"), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(r.poll(), Poll::Unchanged, "the same broken files are not reported again");
        assert_eq!(served(&target), b.2, "still B");
        assert_eq!((reloads(&m, "success"), reloads(&m, "failure")), (1, 1));
        assert_eq!(m.last_successful.get_or_create(&labels(Listener::Http, None)).get(), 0);

        // Fixed: back to success.
        replace(&crt, &a.0);
        replace(&key, &a.1);
        assert_eq!(r.poll(), Poll::Reloaded);
        assert_eq!(served(&target), a.2);
        assert_eq!(m.last_successful.get_or_create(&labels(Listener::Http, None)).get(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_kubernetes_secret_volume_data_symlink_swap_is_seen() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().expect("tempdir");
        let vol = d.path();
        // The kubelet's layout: tls.crt -> ..data/tls.crt, ..data -> ..<ts>.
        let write_version = |name: &str, c: &(String, String, Vec<u8>)| {
            let v = vol.join(name);
            std::fs::create_dir(&v).expect("mkdir");
            std::fs::write(v.join("tls.crt"), &c.0).expect("write");
            std::fs::write(v.join("tls.key"), &c.1).expect("write");
        };
        let (a, b) = (cert("A"), cert("B"));
        write_version("..v1", &a);
        symlink("..v1", vol.join("..data")).expect("symlink");
        symlink("..data/tls.crt", vol.join("tls.crt")).expect("symlink");
        symlink("..data/tls.key", vol.join("tls.key")).expect("symlink");
        let cfg = HttpTlsConfig {
            cert_file: Some(vol.join("tls.crt")),
            key_file: Some(vol.join("tls.key")),
        };
        let m = TlsMetrics::default();
        let (target, mut r) = Reloader::http(&cfg, &m).expect("initial");
        assert_eq!(served(&target), a.2);
        write_version("..v2", &b);
        symlink("..v2", vol.join("..data_tmp")).expect("symlink");
        std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).expect("swap");
        assert_eq!(r.poll(), Poll::Reloaded);
        assert_eq!(served(&target), b.2);
    }

    #[test]
    fn describe_names_the_certificate() {
        let a = cert("collector A");
        let s = describe(&CertificateDer::from(a.2));
        assert!(
            s.starts_with("serial ") && s.contains("CN=collector A") && s.contains("sha256 "),
            "{s}"
        );
    }
}
