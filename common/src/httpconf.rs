//! Prometheus's HTTP client settings (`basic_auth`, `authorization`,
//! `tls_config`), as its `remote_write`, `alertmanagers` and scrape configs
//! spell them, shared by the collector's remote write and Alertmanager
//! clients.
//!
//! What Prometheus accepts and we do not (OAuth 2, SigV4, Azure AD, Google
//! IAM, proxies, `server_name`) is refused by [`unsupported`] with the
//! field's name and why, never silently ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// HTTP basic authentication; the password inline or from a file.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// File holding the user name (Prometheus's `username_file`).
    #[serde(default)]
    pub username_file: Option<PathBuf>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the password (a final newline is removed).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// Checks the settings without reading files.
    pub fn validate(&self) -> Result<(), String> {
        if self.password.is_some() && self.password_file.is_some() {
            return Err("basic_auth: set password or password_file, not both".into());
        }
        if !self.username.is_empty() && self.username_file.is_some() {
            return Err("basic_auth: set username or username_file, not both".into());
        }
        Ok(())
    }

    /// The user name and password, files read.
    pub fn resolve(&self) -> Result<(String, String), String> {
        let user = match &self.username_file {
            Some(f) => read_secret(f).map_err(|e| format!("basic_auth.username_file: {e}"))?,
            None => self.username.clone(),
        };
        let pass = match (&self.password, &self.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => read_secret(f).map_err(|e| format!("basic_auth.password_file: {e}"))?,
            (None, None) => String::new(),
        };
        Ok((user, pass))
    }
}

/// `authorization:`: an `Authorization: <type> <credentials>` header.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme (default `Bearer`).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The credentials.
    #[serde(default)]
    pub credentials: Option<String>,
    /// File holding the credentials (a final newline is removed).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("type", &self.scheme())
            .finish_non_exhaustive()
    }
}

impl Authorization {
    /// The scheme, `Bearer` unless set.
    pub fn scheme(&self) -> &str {
        self.kind.as_deref().unwrap_or("Bearer")
    }

    /// Checks the settings without reading files.
    pub fn validate(&self) -> Result<(), String> {
        if self.credentials.is_some() && self.credentials_file.is_some() {
            return Err("authorization: set credentials or credentials_file, not both".into());
        }
        if self.scheme().eq_ignore_ascii_case("basic") {
            return Err("authorization: type Basic is refused (as Prometheus does); use basic_auth".into());
        }
        if self.scheme().is_empty() || !self.scheme().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!(
                "authorization: type {:?} is not an HTTP authentication scheme",
                self.scheme()
            ));
        }
        Ok(())
    }

    /// The header value, files read.
    pub fn header_value(&self) -> Result<String, String> {
        let creds = match (&self.credentials, &self.credentials_file) {
            (Some(c), _) => c.clone(),
            (None, Some(f)) => read_secret(f).map_err(|e| format!("authorization.credentials_file: {e}"))?,
            (None, None) => String::new(),
        };
        Ok(format!("{} {creds}", self.scheme()))
    }
}

/// `tls_config:` as Prometheus spells it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM CA bundle to trust instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The same, inline PEM.
    #[serde(default)]
    pub ca: Option<String>,
    /// PEM client certificate (with a key) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The same, inline PEM.
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The same, inline PEM (shown as `<secret>`).
    #[serde(default)]
    pub key: Option<String>,
    /// Refused: see [`TlsConfig::validate`].
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accept any server certificate (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// `TLS12` or `TLS13`.
    #[serde(default)]
    pub min_version: Option<String>,
    /// `TLS12` or `TLS13`.
    #[serde(default)]
    pub max_version: Option<String>,
}

fn tls_version(field: &str, v: &str) -> Result<reqwest::tls::Version, String> {
    match v {
        "TLS12" => Ok(reqwest::tls::Version::TLS_1_2),
        "TLS13" => Ok(reqwest::tls::Version::TLS_1_3),
        "TLS10" | "TLS11" => Err(format!(
            "tls_config.{field}: {v} is not supported (the TLS library speaks TLS 1.2 and 1.3 only); use TLS12 or TLS13"
        )),
        _ => Err(format!("tls_config.{field}: {v:?} is not one of TLS12, TLS13")),
    }
}

impl TlsConfig {
    /// Checks the settings without reading files.
    pub fn validate(&self) -> Result<(), String> {
        if self.server_name.is_some() {
            return Err(
                "tls_config.server_name is not supported: the certificate is verified against the URL's host name; use that name in the URL"
                    .into(),
            );
        }
        if self.ca.is_some() && self.ca_file.is_some() {
            return Err("tls_config: set ca or ca_file, not both".into());
        }
        if self.cert.is_some() && self.cert_file.is_some() {
            return Err("tls_config: set cert or cert_file, not both".into());
        }
        if self.key.is_some() && self.key_file.is_some() {
            return Err("tls_config: set key or key_file, not both".into());
        }
        let has_cert = self.cert.is_some() || self.cert_file.is_some();
        let has_key = self.key.is_some() || self.key_file.is_some();
        if has_cert != has_key {
            return Err("tls_config: a client certificate and its key go together".into());
        }
        if let Some(v) = &self.min_version {
            tls_version("min_version", v)?;
        }
        if let Some(v) = &self.max_version {
            tls_version("max_version", v)?;
        }
        Ok(())
    }

    /// Applies the settings to a client builder (reads the files).
    pub fn apply(&self, mut b: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, String> {
        self.validate()?;
        let ca_pem = match (&self.ca, &self.ca_file) {
            (Some(p), _) => Some(p.as_bytes().to_vec()),
            (None, Some(f)) => Some(std::fs::read(f).map_err(|e| format!("tls_config.ca_file {}: {e}", f.display()))?),
            _ => None,
        };
        if let Some(pem) = ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("tls_config ca: {e}"))?;
            if roots.is_empty() {
                return Err("tls_config ca: no PEM certificate".into());
            }
            for c in roots {
                b = b.add_root_certificate(c);
            }
            b = b.tls_built_in_root_certs(false);
        }
        let read = |inline: &Option<String>, file: &Option<PathBuf>, what: &str| -> Result<Option<Vec<u8>>, String> {
            match (inline, file) {
                (Some(p), _) => Ok(Some(p.as_bytes().to_vec())),
                (None, Some(f)) => std::fs::read(f)
                    .map(Some)
                    .map_err(|e| format!("tls_config.{what}_file {}: {e}", f.display())),
                _ => Ok(None),
            }
        };
        if let (Some(mut cert), Some(key)) = (read(&self.cert, &self.cert_file, "cert")?, read(&self.key, &self.key_file, "key")?) {
            cert.push(b'\n');
            cert.extend(key);
            b = b.identity(reqwest::Identity::from_pem(&cert).map_err(|e| format!("tls_config: not a PEM certificate and key: {e}"))?);
        }
        if self.insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(v) = &self.min_version {
            b = b.min_tls_version(tls_version("min_version", v)?);
        }
        if let Some(v) = &self.max_version {
            b = b.max_tls_version(tls_version("max_version", v)?);
        }
        Ok(b)
    }
}

/// Reads a secret file, without its final newline.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(s.strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&s)
        .to_string())
}

/// Prometheus HTTP client fields we do not support, and why; `present`
/// says which were given. The first one given is refused.
pub fn unsupported(block: &str, present: &[(&str, bool)]) -> Result<(), String> {
    for (name, given) in present {
        if *given {
            let why = match *name {
                "oauth2" => "OAuth 2 client credentials are not supported; use authorization (credentials_file) or basic_auth",
                "sigv4" => "AWS SigV4 signing is not supported; put a SigV4 proxy in front of the receiver",
                "azuread" => "Azure AD authentication is not supported",
                "google_iam" => "Google IAM authentication is not supported",
                "proxy_url" | "no_proxy" | "proxy_from_environment" | "proxy_connect_header" => {
                    "proxies are not supported: the collector connects directly"
                }
                "follow_redirects" => "redirects are never followed here (a receiver that redirects is a misconfiguration)",
                "enable_http2" => "the HTTP version is negotiated (HTTP/1.1 or HTTP/2 with TLS ALPN); it cannot be forced",
                "send_exemplars" | "send_native_histograms" => "the collector stores neither exemplars nor native histograms",
                "protobuf_message" => "only remote write 1.0 (prometheus.WriteRequest) is sent",
                "round_robin_dns" => "the receiver's name is resolved by the HTTP client; round-robin over its addresses is not supported",
                "api_version" => "only Alertmanager API v2 is spoken",
                "dns_sd_configs" | "file_sd_configs" | "kubernetes_sd_configs" | "consul_sd_configs" | "http_sd_configs" => {
                    "only static_configs discover Alertmanagers here"
                }
                "bearer_token" | "bearer_token_file" => "use authorization (credentials or credentials_file), as Prometheus 2.26+ does",
                _ => "not supported",
            };
            return Err(format!("{block}.{name}: {why}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_and_tls_are_checked() {
        let a: Authorization = serde_yaml_ng::from_str("credentials: abc").expect("parse");
        assert_eq!(a.header_value().expect("value"), "Bearer abc");
        let a: Authorization = serde_yaml_ng::from_str("{type: Basic, credentials: abc}").expect("parse");
        assert!(a.validate().expect_err("basic").contains("basic_auth"));
        let t: TlsConfig = serde_yaml_ng::from_str("{server_name: x}").expect("parse");
        assert!(t.validate().expect_err("server_name").contains("server_name"));
        let t: TlsConfig = serde_yaml_ng::from_str("{cert_file: /c}").expect("parse");
        assert!(t.validate().expect_err("cert").contains("go together"));
        let t: TlsConfig = serde_yaml_ng::from_str("{min_version: TLS10}").expect("parse");
        assert!(t.validate().expect_err("tls10").contains("TLS12"));
        let t: TlsConfig = serde_yaml_ng::from_str("{min_version: TLS13, insecure_skip_verify: true}").expect("parse");
        t.validate().expect("valid");
        assert!(serde_yaml_ng::from_str::<TlsConfig>("{bogus: 1}").is_err());
        let e = unsupported("remote_write[0]", &[("oauth2", false), ("sigv4", true)]).expect_err("sigv4");
        assert!(e.starts_with("remote_write[0].sigv4: "), "{e}");
    }
}
