//! TLS for the collector: gRPC ingest with optional mutual TLS
//! (`grpc_tls`, `agent_certs`) and the HTTP API (`http_tls`).
//!
//! **gRPC.** With `grpc_tls.cert_file`/`key_file` the ingest port speaks
//! TLS only. With `client_ca_file`, rustls asks every agent for a client
//! certificate and verifies one that is presented against that CA (chain,
//! validity period, `clientAuth` extended key usage): a certificate from
//! another CA, an expired one or one not made for client authentication
//! fails the handshake. The verified leaf's names map it to a commons
//! (`agent_certs`, see [`names`]). `client_auth` says whether a certificate
//! is needed:
//! - `optional` (default): an agent authenticates with a verified, mapped
//!   certificate, or a token, or both (then they must map to the same
//!   commons).
//! - `require`: every agent must present a verified, mapped certificate (a
//!   token may come with it and must then agree). The check is made when the
//!   stream opens rather than in the handshake, so that an agent without a
//!   certificate gets a clear `UNAUTHENTICATED` message instead of a bare
//!   TLS alert, and so that the collector's own `--local-agent`
//!   (in-process, with an internal random token) keeps working.
//!
//! **HTTP.** With `http_tls.cert_file`/`key_file` the HTTP API, `/metrics`,
//! `/federate` and the remote-write receiver are served over HTTPS only.
//!
//! **Rotation.** The certificate, key and client CA files of both
//! listeners are re-read when they change (see [`reload`]): cert-manager's
//! renewals and Kubernetes Secret volume updates take effect without a
//! restart, and a broken new file keeps the previous certificate in
//! service.
//!
//! Handshakes run in [`accept`]'s loop, concurrently and with a time limit;
//! a failed handshake is logged with the peer address (and, for a refused
//! client certificate, the certificate's names).

pub mod accept;
pub mod names;
pub mod reload;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use serde::Deserialize;

use crate::config::{CollectorConfig, ConfigError};
pub use names::{AgentCert, CertLookup, CertMap, CertNames};
pub use reload::{Reloader, ServerTls, TlsMetrics};

/// Whether agents must present a client certificate (`grpc_tls.client_auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A verified certificate or a token (or both, agreeing).
    #[default]
    Optional,
    /// A verified, mapped certificate on every stream.
    Require,
}

/// `grpc_tls`: TLS on the gRPC ingest port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcTlsConfig {
    /// The collector's certificate chain, PEM (leaf first).
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that issue agent client certificates. Without
    /// it, no client certificate is asked for.
    pub client_ca_file: Option<PathBuf>,
    /// `optional` (default) or `require`.
    pub client_auth: ClientAuth,
}

/// `http_tls`: HTTPS on the HTTP API port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTlsConfig {
    /// The collector's certificate chain, PEM (leaf first).
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM.
    pub key_file: Option<PathBuf>,
}

fn invalid(field: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message,
    }
}

pub use csoc_common::tls::{provider, read_certs, read_key};

/// A certificate chain and its key, checked to belong together.
fn read_identity(
    section: &str,
    cert_file: Option<&PathBuf>,
    key_file: Option<&PathBuf>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConfigError> {
    let cert_field = format!("{section}.cert_file");
    let key_field = format!("{section}.key_file");
    let (cert_file, key_file) = match (cert_file, key_file) {
        (Some(c), Some(k)) => (c, k),
        (None, _) => {
            return Err(invalid(
                &cert_field,
                "is required when TLS is configured (the certificate chain, PEM)".into(),
            ));
        }
        (_, None) => {
            return Err(invalid(
                &key_field,
                "is required when TLS is configured (the private key, PEM)".into(),
            ));
        }
    };
    let certs = read_certs(&cert_field, cert_file)?;
    let key = read_key(&key_field, key_file)?;
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| invalid(&key_field, format!("{}: unusable private key: {e}", key_file.display())))?;
    let ck = rustls::sign::CertifiedKey::new(certs.clone(), signing);
    if let Err(e) = ck.keys_match() {
        return Err(invalid(
            &key_field,
            format!(
                "the key in {} does not belong to the first certificate of {}: {e}",
                key_file.display(),
                cert_file.display()
            ),
        ));
    }
    Ok((certs, key))
}

/// The gRPC server's TLS configuration, built.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    /// For the accept loop (ALPN `h2`).
    pub server: Arc<ServerConfig>,
    /// The collector's leaf certificate (the local agent pins it).
    pub leaf: CertificateDer<'static>,
    /// Whether client certificates are asked for (a client CA is set).
    pub client_certs: bool,
    /// `client_auth: require`.
    pub require: bool,
}

impl GrpcTls {
    /// What agents must present, for the startup log.
    pub fn client_certs_mode(&self) -> &'static str {
        match (self.client_certs, self.require) {
            (false, _) => "not asked for",
            (true, false) => "optional (a certificate or a token)",
            (true, true) => "required",
        }
    }
}

/// Builds the gRPC server configuration: reads and checks every file.
pub fn grpc_server(cfg: &GrpcTlsConfig) -> Result<GrpcTls, ConfigError> {
    let (certs, key) = read_identity("grpc_tls", cfg.cert_file.as_ref(), cfg.key_file.as_ref())?;
    let leaf = certs[0].clone();
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("grpc_tls", e.to_string()))?;
    let builder = match &cfg.client_ca_file {
        None => {
            if cfg.client_auth == ClientAuth::Require {
                return Err(invalid(
                    "grpc_tls.client_auth",
                    "\"require\" needs grpc_tls.client_ca_file (--grpc-tls-client-ca), the CA that issues agent certificates".into(),
                ));
            }
            builder.with_no_client_auth()
        }
        Some(p) => {
            let field = "grpc_tls.client_ca_file";
            let mut roots = RootCertStore::empty();
            for c in read_certs(field, p)? {
                roots
                    .add(c)
                    .map_err(|e| invalid(field, format!("{}: not usable as a CA certificate: {e}", p.display())))?;
            }
            // Certificates are optional in the handshake (see the module
            // doc); a presented one is always verified.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| invalid(field, format!("{}: {e}", p.display())))?;
            builder.with_client_cert_verifier(Arc::new(NotingVerifier { inner: verifier }))
        }
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid("grpc_tls.cert_file", e.to_string()))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(GrpcTls {
        server: Arc::new(server),
        leaf,
        client_certs: cfg.client_ca_file.is_some(),
        require: cfg.client_auth == ClientAuth::Require,
    })
}

/// Builds the HTTP server configuration (ALPN `http/1.1`).
pub fn http_server(cfg: &HttpTlsConfig) -> Result<Arc<ServerConfig>, ConfigError> {
    http_server_and_leaf(cfg).map(|(s, _)| s)
}

/// [`http_server`], and the leaf certificate it presents.
fn http_server_and_leaf(cfg: &HttpTlsConfig) -> Result<(Arc<ServerConfig>, CertificateDer<'static>), ConfigError> {
    let (certs, key) = read_identity("http_tls", cfg.cert_file.as_ref(), cfg.key_file.as_ref())?;
    let leaf = certs[0].clone();
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("http_tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("http_tls.cert_file", e.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(server), leaf))
}

impl CollectorConfig {
    /// Checks `grpc_tls`, `http_tls` and `agent_certs`, reading and parsing
    /// every file they name.
    pub fn validate_tls(&self) -> Result<(), ConfigError> {
        let map = CertMap::new(&self.agent_certs)?;
        match &self.grpc_tls {
            Some(t) => {
                grpc_server(t)?;
                if t.client_ca_file.is_none() && !map.is_empty() {
                    return Err(invalid(
                        "agent_certs",
                        "mapping certificates to commons needs grpc_tls.client_ca_file (--grpc-tls-client-ca), the CA that issues agent certificates".into(),
                    ));
                }
            }
            None if !map.is_empty() => {
                return Err(invalid(
                    "agent_certs",
                    "client certificates need TLS on the gRPC port: set grpc_tls (--grpc-tls-cert, --grpc-tls-key, --grpc-tls-client-ca)"
                        .into(),
                ));
            }
            None => {}
        }
        if let Some(t) = &self.http_tls {
            http_server(t)?;
        }
        Ok(())
    }
}

tokio::task_local! {
    /// The names of a client certificate the verifier refused during the
    /// handshake running in this task (read by the accept loop's log line).
    pub(crate) static REFUSED_CERT: RefCell<Option<String>>;
}

/// The webpki client verifier, noting the names of a certificate it refuses
/// in [`REFUSED_CERT`].
#[derive(Debug)]
struct NotingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for NotingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let res = self.inner.verify_client_cert(end_entity, intermediates, now);
        if res.is_err() {
            let names = match CertNames::from_der(end_entity) {
                Ok(n) => n.to_string(),
                Err(e) => e,
            };
            let _ = REFUSED_CERT.try_with(|slot| *slot.borrow_mut() = Some(names));
        }
        res
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How the ingest authenticates streams beyond tokens: the certificate map,
/// whether a certificate is required, and the in-process agent's token
/// (exempt from `require`).
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// `agent_certs`.
    pub certs: CertMap,
    /// `client_auth: require`.
    pub require_cert: bool,
    /// SHA-256 of the local agent's internal token.
    pub internal_token: Option<[u8; 32]>,
}

impl PeerPolicy {
    /// Whether `token` is the in-process agent's (constant time).
    pub fn is_internal_token(&self, token: &str) -> bool {
        match &self.internal_token {
            Some(d) => {
                let t = crate::auth::digest(token);
                t.iter().zip(d).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests;
