//! TLS to the collector (`tls:` in the config, `--tls-*` flags).
//!
//! An `https://` collector URL makes the shipper speak TLS. The collector's
//! certificate is verified against `ca_file` when one is given (only that
//! CA), else against the Mozilla roots (webpki-roots); its name must match
//! `server_name`, or the URL's host. With `cert_file` and `key_file` the
//! agent presents a client certificate (mutual TLS); the collector maps its
//! names to this agent's commons, and a token becomes optional.
//!
//! [`classify`] turns a handshake failure, wherever tonic reports it (on
//! connect for the collector's certificate; on the first call for ours,
//! since in TLS 1.3 the server judges the client certificate after the
//! client's side of the handshake is done), into a sentence that says which
//! side's certificate is wrong.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{AlertDescription, DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::config::ConfigError;
use csoc_common::config::invalid;
use csoc_common::tls::{parse_certs, parse_key, provider, read_file};

/// `tls:` of the agent's config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA certificate(s), PEM, that the collector's certificate must chain
    /// to (default: the Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// This agent's client certificate chain, PEM (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file`, PEM.
    pub key_file: Option<PathBuf>,
    /// The name the collector's certificate must be issued for (default:
    /// the host of the collector URL).
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none() && self.server_name.is_none()
    }
}

/// How the collector's certificate is trusted.
#[derive(Clone)]
enum Trust {
    /// The Mozilla roots.
    WebPki,
    /// Only the CA certificates of `ca_file` (PEM).
    Ca(Certificate),
    /// Exactly this certificate, whatever its names or issuer: the
    /// collector's in-process agent (`--local-agent`) pins the certificate
    /// its own collector serves.
    Pinned(CertificateDer<'static>),
}

/// The shipper's TLS settings, files read and checked.
#[derive(Clone)]
pub struct ClientTls {
    trust: Trust,
    identity: Option<Identity>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let trust = match self.trust {
            Trust::WebPki => "webpki-roots",
            Trust::Ca(_) => "ca_file",
            Trust::Pinned(_) => "pinned",
        };
        f.debug_struct("ClientTls")
            .field("trust", &trust)
            .field("client_cert", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Reads and checks the files of `cfg` (`--check-config` runs this).
    pub fn from_config(cfg: &TlsConfig) -> Result<ClientTls, ConfigError> {
        let trust = match &cfg.ca_file {
            Some(p) => {
                let pem = read_file("tls.ca_file", p)?;
                parse_certs("tls.ca_file", p, &pem)?;
                Trust::Ca(Certificate::from_pem(pem))
            }
            None => Trust::WebPki,
        };
        let identity = match (&cfg.cert_file, &cfg.key_file) {
            (None, None) => None,
            (Some(_), None) => return Err(invalid("tls.key_file", "is required with tls.cert_file (--tls-key)")),
            (None, Some(_)) => return Err(invalid("tls.cert_file", "is required with tls.key_file (--tls-cert)")),
            (Some(cp), Some(kp)) => {
                let cert_pem = read_file("tls.cert_file", cp)?;
                let certs = parse_certs("tls.cert_file", cp, &cert_pem)?;
                let key_pem = read_file("tls.key_file", kp)?;
                let key = parse_key("tls.key_file", kp, &key_pem)?;
                let signing = provider()
                    .key_provider
                    .load_private_key(key)
                    .map_err(|e| invalid("tls.key_file", format!("{}: unusable private key: {e}", kp.display())))?;
                rustls::sign::CertifiedKey::new(certs, signing).keys_match().map_err(|e| {
                    invalid(
                        "tls.key_file",
                        format!(
                            "the key in {} does not belong to the first certificate of {}: {e}",
                            kp.display(),
                            cp.display()
                        ),
                    )
                })?;
                Some(Identity::from_pem(cert_pem, key_pem))
            }
        };
        if let Some(n) = &cfg.server_name
            && ServerName::try_from(n.as_str()).is_err()
        {
            return Err(invalid("tls.server_name", format!("{n:?} is not a DNS name or IP address")));
        }
        Ok(ClientTls {
            trust,
            identity,
            server_name: cfg.server_name.clone(),
        })
    }

    /// Trusts exactly `cert` (see [`Trust::Pinned`]), no client certificate.
    pub fn pinned(cert: CertificateDer<'static>) -> ClientTls {
        ClientTls {
            trust: Trust::Pinned(cert),
            identity: None,
            server_name: None,
        }
    }

    /// Whether a client certificate is configured.
    pub fn has_client_cert(&self) -> bool {
        self.identity.is_some()
    }

    /// `endpoint` with these TLS settings.
    pub fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
        let mut tc = ClientTlsConfig::new().timeout(std::time::Duration::from_secs(10));
        if let Some(n) = &self.server_name {
            tc = tc.domain_name(n.clone());
        }
        if let Some(id) = &self.identity {
            tc = tc.identity(id.clone());
        }
        match &self.trust {
            Trust::WebPki => endpoint.tls_config(tc.with_webpki_roots()),
            Trust::Ca(c) => endpoint.tls_config(tc.ca_certificate(c.clone())),
            Trust::Pinned(cert) => endpoint.tls_config_with_verifier(
                tc,
                Arc::new(PinnedCert {
                    cert: cert.clone(),
                    provider: provider(),
                }),
            ),
        }
    }
}

/// Accepts exactly one certificate (and checks the handshake signatures
/// made with its key).
#[derive(Debug)]
struct PinnedCert {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS failure, by whose certificate is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// We do not trust the collector's certificate.
    ServerUntrusted(String),
    /// The collector refused our client certificate (or wants one).
    ClientCertRefused(String),
    /// Any other TLS error.
    Other(String),
}

/// The first rustls error in `err`'s chain, looking inside `io::Error`s
/// (whose `source()` skips the error they wrap).
fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && let Some(r) = find_rustls(inner)
        {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

/// A certificate error in words (rustls's own names in parentheses).
fn describe(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    let what = match e {
        E::UnknownIssuer => "it is not issued by a CA this agent trusts",
        E::NotValidForName | E::NotValidForNameContext { .. } => "it is not issued for the collector's name",
        E::Expired | E::ExpiredContext { .. } => "it has expired",
        E::NotValidYet | E::NotValidYetContext { .. } => "it is not valid yet",
        E::BadSignature => "its signature is invalid",
        E::Revoked => "it is revoked",
        _ => "it failed verification",
    };
    format!("{what} ({e})")
}

/// The alert named in "received fatal alert: NAME" somewhere in `err`'s
/// chain: h2 keeps only the text of an I/O error, so an alert that arrives
/// on an HTTP/2 connection (the collector refusing our certificate after
/// the handshake) reaches us as text, not as a `rustls::Error`.
fn alert_in_text(err: &(dyn std::error::Error + 'static)) -> Option<AlertDescription> {
    const MARK: &str = "received fatal alert: ";
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if let Some(i) = text.find(MARK) {
            let name: String = text[i + MARK.len()..].chars().take_while(char::is_ascii_alphanumeric).collect();
            let known = [
                AlertDescription::BadCertificate,
                AlertDescription::UnsupportedCertificate,
                AlertDescription::CertificateRevoked,
                AlertDescription::CertificateExpired,
                AlertDescription::CertificateUnknown,
                AlertDescription::UnknownCA,
                AlertDescription::AccessDenied,
                AlertDescription::CertificateRequired,
                AlertDescription::DecryptError,
                AlertDescription::HandshakeFailure,
            ];
            return known.into_iter().find(|a| format!("{a:?}") == name);
        }
        cur = e.source();
    }
    None
}

/// Whether `err` (anything tonic returned) is a TLS failure, and whose.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let from_text;
    let r = match find_rustls(err) {
        Some(r) => r,
        None => {
            from_text = rustls::Error::AlertReceived(alert_in_text(err)?);
            &from_text
        }
    };
    Some(match r {
        rustls::Error::InvalidCertificate(e) => TlsFailure::ServerUntrusted(format!(
            "{}; give the CA that issued it with --tls-ca (tls.ca_file), and with --tls-server-name (tls.server_name) the name it was issued for when the URL's host differs",
            describe(e)
        )),
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => TlsFailure::ClientCertRefused(
            "the collector requires a client certificate: give one with --tls-cert and --tls-key (tls.cert_file, tls.key_file)".into(),
        ),
        rustls::Error::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied),
        ) => TlsFailure::ClientCertRefused(format!(
            "TLS alert {a:?}; the certificate (--tls-cert) must be issued by the CA the collector has as its client CA, be valid now and allow client authentication"
        )),
        rustls::Error::InvalidMessage(_) => TlsFailure::Other(format!(
            "{r}; is the collector serving TLS on this port? (use an http:// URL if it does not)"
        )),
        other => TlsFailure::Other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_are_found_through_io_errors_and_named() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let wrapped = std::io::Error::other(io);
        match classify(&wrapped) {
            Some(TlsFailure::ServerUntrusted(m)) => {
                assert!(m.contains("not issued by a CA this agent trusts") && m.contains("--tls-ca"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let alert = std::io::Error::other(rustls::Error::AlertReceived(AlertDescription::UnknownCA));
        assert!(matches!(classify(&alert), Some(TlsFailure::ClientCertRefused(_))));
        // As h2 reports it: text only.
        let text = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: CertificateExpired".to_string(),
        );
        match classify(&text) {
            Some(TlsFailure::ClientCertRefused(m)) => assert!(m.contains("CertificateExpired"), "{m}"),
            other => panic!("{other:?}"),
        }
        let plain = std::io::Error::other("connection refused");
        assert_eq!(classify(&plain), None);
    }

    #[test]
    fn config_files_are_checked_and_named() {
        let d = tempfile::tempdir().expect("tempdir");
        let missing = TlsConfig {
            ca_file: Some(d.path().join("nope.pem")),
            ..Default::default()
        };
        let e = ClientTls::from_config(&missing).expect_err("missing").to_string();
        assert!(e.contains("tls.ca_file") && e.contains("nope.pem"), "{e}");
        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let e = ClientTls::from_config(&TlsConfig {
            ca_file: Some(junk.clone()),
            ..Default::default()
        })
        .expect_err("junk")
        .to_string();
        assert!(e.contains("tls.ca_file") && e.contains("no PEM certificate"), "{e}");
        let e = ClientTls::from_config(&TlsConfig {
            cert_file: Some(junk.clone()),
            ..Default::default()
        })
        .expect_err("no key")
        .to_string();
        assert!(e.contains("tls.key_file"), "{e}");

        let ca = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["agent.alpha.example".into()])
            .expect("params")
            .self_signed(&ca)
            .expect("cert");
        let other_key = rcgen::KeyPair::generate().expect("key");
        let cp = d.path().join("agent.crt");
        let kp = d.path().join("agent.key");
        let okp = d.path().join("other.key");
        std::fs::write(&cp, cert.pem()).expect("write");
        std::fs::write(&kp, ca.serialize_pem()).expect("write");
        std::fs::write(&okp, other_key.serialize_pem()).expect("write");
        let good = TlsConfig {
            cert_file: Some(cp.clone()),
            key_file: Some(kp),
            ca_file: Some(cp.clone()),
            server_name: Some("collector.example".into()),
        };
        assert!(ClientTls::from_config(&good).expect("valid").has_client_cert());
        let e = ClientTls::from_config(&TlsConfig {
            key_file: Some(okp),
            ..good.clone()
        })
        .expect_err("mismatched key")
        .to_string();
        assert!(e.contains("does not belong"), "{e}");
        let e = ClientTls::from_config(&TlsConfig {
            key_file: Some(cp),
            ..good
        })
        .expect_err("a cert is no key")
        .to_string();
        assert!(e.contains("tls.key_file") && e.contains("no PEM private key"), "{e}");
    }
}
