//! PEM and CA reading for every TLS setting of both binaries: client and
//! server certificates, private keys, CA bundles, with errors that name the
//! config field and the file.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;
use crate::error::error_chain;

fn invalid(field: &str, message: String) -> ConfigError {
    crate::config::invalid(field, message)
}

/// Reads a file named by config field `field`.
pub fn read_file(field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))
}

/// The PEM certificates of a file, each checked to be X.509.
pub fn parse_certs(field: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let mut certs = Vec::new();
    for (i, c) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let c = c.map_err(|e| invalid(field, format!("{}: PEM certificate #{}: {e}", path.display(), i + 1)))?;
        x509_parser::parse_x509_certificate(&c)
            .map_err(|e| invalid(field, format!("{}: certificate #{} is not valid X.509: {e}", path.display(), i + 1)))?;
        certs.push(c);
    }
    if certs.is_empty() {
        return Err(invalid(
            field,
            format!("{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file", path.display()),
        ));
    }
    Ok(certs)
}

/// The PEM private key of a file.
pub fn parse_key(field: &str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => invalid(
            field,
            format!(
                "{}: no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY) in the file",
                path.display()
            ),
        ),
        e => invalid(field, format!("{}: {e}", path.display())),
    })
}

/// Reads the PEM certificates of `path` (`field` names it in errors); each
/// must be valid X.509.
pub fn read_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    parse_certs(field, path, &read_file(field, path)?)
}

/// Reads the PEM private key of `path`.
pub fn read_key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    parse_key(field, path, &read_file(field, path)?)
}

/// The crypto provider of every TLS configuration (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a `ca_file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The file cannot be read.
    #[error("{0}")]
    Read(std::io::Error),
    /// It holds no usable certificate.
    #[error("{0}")]
    Pem(String),
}

/// Reads the PEM certificates of a `ca_file`.
pub fn read_ca_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, CaError> {
    let pem = std::fs::read(path).map_err(CaError::Read)?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| CaError::Pem(error_chain(&e)))?;
    if roots.is_empty() {
        return Err(CaError::Pem("no PEM certificate in the file".into()));
    }
    Ok(roots)
}
