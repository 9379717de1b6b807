//! The expiry of the certificate the commons' `base_url` presents.

use std::time::Duration;

use super::probe::BODY_LIMIT;
use crate::sources::gen3_http::fetch;

/// Where the certificate of `base_url` is read when no probe brought it.
pub(super) struct CertProbe {
    pub(super) client: reqwest::Client,
    /// `base_url` + `/_status`.
    pub(super) url: String,
    /// The `host` label.
    pub(super) host: String,
}

impl CertProbe {
    /// The certificate's `notAfter` (seconds since the epoch) and when it was
    /// read (ms): from `probed`, the certificate a verified probe's connection
    /// brought, else from a non-verifying request of its own.
    pub(super) async fn expiry(&self, probed: Option<Vec<u8>>, timeout: Duration) -> Result<(i64, i64), String> {
        let der = match probed {
            Some(d) => Ok((d, csoc_common::time::now_ms())),
            None => {
                let r = fetch(&self.client, &self.url, timeout, BODY_LIMIT).await;
                match (r.cert, r.error) {
                    (Some(d), _) => Ok((d, r.ts_ms)),
                    (None, Some((_, e))) => Err(e),
                    (None, None) => Err("the connection presented no certificate".to_string()),
                }
            }
        };
        der.and_then(|(d, ts)| cert_not_after(&d).map(|t| (t, ts)))
    }
}

/// The `notAfter` of a DER certificate, in seconds since the epoch.
fn cert_not_after(der: &[u8]) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("cannot parse the certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}
