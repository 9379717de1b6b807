//! Prometheus's `alerting:` block: `alertmanagers` (each with `scheme`,
//! `path_prefix`, `timeout`, `api_version`, `static_configs`,
//! `basic_auth`, `authorization`, `tls_config`, `relabel_configs`,
//! `follow_redirects`, `enable_http2`), resolved to the Alertmanagers
//! alerts are sent to, as Prometheus resolves them: each target's labels
//! `__address__`, `__scheme__` and `__alerts_path__` (plus the group's
//! `labels`) go through `relabel_configs`; a target dropped there is listed
//! under `droppedAlertmanagers` of `/api/v1/alertmanagers`.
//!
//! Service discovery other than `static_configs`, OAuth 2, SigV4, proxies,
//! `alert_relabel_configs` and API v1 are refused with the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use csoc_common::httpconf::{Authorization, BasicAuth, TlsConfig, unsupported};
use csoc_common::labels::Labels;
use csoc_common::relabel::RelabelConfig;
use serde::Deserialize;

/// `alerting:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// The Alertmanager groups.
    #[serde(default)]
    pub alertmanagers: Vec<AlertmanagerConfig>,
    /// Refused: not supported (see `validate`).
    #[serde(default)]
    pub alert_relabel_configs: Vec<RelabelConfig>,
}

/// A static group of Alertmanager addresses.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AmStaticConfig {
    /// `host:port` addresses.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Labels of the group's targets (seen by `relabel_configs`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_scheme() -> String {
    "http".into()
}
fn default_prefix() -> String {
    "/".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn yes() -> bool {
    true
}

/// One `alertmanagers:` entry (Prometheus's `<alertmanager_config>`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// `http` (default) or `https`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// Prefix of the push path (default `/`: `/api/v2/alerts`).
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Timeout of one push (default 10s).
    #[serde(default = "default_timeout", deserialize_with = "csoc_common::duration::de_duration")]
    pub timeout: Duration,
    /// Only `v2` (the default).
    #[serde(default)]
    pub api_version: Option<String>,
    /// The Alertmanagers.
    #[serde(default)]
    pub static_configs: Vec<AmStaticConfig>,
    /// Relabelling of the targets (`__address__`, `__scheme__`,
    /// `__alerts_path__`); a dropped target is not sent to.
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    /// Basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// `Authorization` header.
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// TLS.
    #[serde(default)]
    pub tls_config: Option<TlsConfig>,
    /// Follow redirects (default true).
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// false: HTTP/1.1 only.
    #[serde(default = "yes")]
    pub enable_http2: bool,
    #[serde(default)]
    #[doc(hidden)]
    pub oauth2: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub sigv4: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub proxy_url: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub no_proxy: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub proxy_from_environment: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub proxy_connect_header: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub bearer_token: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub bearer_token_file: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub alert_relabel_configs: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub dns_sd_configs: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub file_sd_configs: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub kubernetes_sd_configs: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub consul_sd_configs: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub http_sd_configs: Option<serde_yaml_ng::Value>,
}

/// An Alertmanager alerts are sent to, with how to reach it.
#[derive(Clone, PartialEq)]
pub struct AmTarget {
    /// The alerts endpoint (`.../api/v2/alerts`).
    pub url: String,
    /// Timeout of one push.
    pub timeout: Duration,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// Authorization header.
    pub authorization: Option<Authorization>,
    /// TLS.
    pub tls: Option<TlsConfig>,
    /// Follow redirects.
    pub follow_redirects: bool,
    /// HTTP/2 allowed.
    pub enable_http2: bool,
}

impl std::fmt::Debug for AmTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmTarget")
            .field("url", &csoc_common::url::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl AmTarget {
    /// A flat `alertmanagers: [URL]` entry or `--alertmanager URL`.
    pub fn from_url(base: &str) -> Result<AmTarget, String> {
        Ok(AmTarget {
            url: super::alertmanager::alerts_endpoint(base)?,
            timeout: default_timeout(),
            basic_auth: None,
            authorization: None,
            tls: None,
            follow_redirects: true,
            enable_http2: true,
        })
    }

    /// The HTTP client for this target (reads the credential files).
    pub fn client(&self) -> Result<reqwest::Client, String> {
        let mut b = reqwest::Client::builder()
            .timeout(self.timeout)
            .user_agent(concat!("csoc-collector/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = &self.tls {
            b = t.apply(b)?;
        }
        if !self.follow_redirects {
            b = b.redirect(reqwest::redirect::Policy::none());
        }
        if !self.enable_http2 {
            b = b.http1_only();
        }
        let mut headers = reqwest::header::HeaderMap::new();
        let auth = if let Some(a) = &self.authorization {
            Some(a.header_value()?)
        } else if let Some(b) = &self.basic_auth {
            let (u, p) = b.resolve()?;
            Some(format!("Basic {}", base64_encode(format!("{u}:{p}").as_bytes())))
        } else {
            None
        };
        if let Some(a) = auth {
            let mut v =
                reqwest::header::HeaderValue::from_str(&a).map_err(|_| "the credentials are not a valid header value".to_string())?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        b.default_headers(headers)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))
    }
}

/// Standard base64 with padding (basic auth).
fn base64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The Alertmanagers resolved: those sent to and those dropped by
/// relabelling (URLs, for `/api/v1/alertmanagers`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// Sent to.
    pub active: Vec<AmTarget>,
    /// Dropped by `relabel_configs` (their alerts URL as it would have been).
    pub dropped: Vec<String>,
}

impl AlertingConfig {
    /// Checks everything that can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        self.resolve(&[]).map(|_| ())
    }

    /// The Alertmanagers of this block, after the flat `urls` (the older
    /// `alertmanagers: [URL]` and `--alertmanager`).
    pub fn resolve(&self, urls: &[String]) -> Result<Resolved, String> {
        let mut out = Resolved::default();
        for (i, u) in urls.iter().enumerate() {
            out.active
                .push(AmTarget::from_url(u).map_err(|e| format!("alertmanagers[{i}]: {e}"))?);
        }
        if !self.alert_relabel_configs.is_empty() {
            return Err(
                "alerting.alert_relabel_configs: not supported; set labels in the rules or external_labels (alerts are sent as the rules label them)"
                    .into(),
            );
        }
        for (i, am) in self.alertmanagers.iter().enumerate() {
            let at = format!("alerting.alertmanagers[{i}]");
            am.check().map_err(|e| format!("{at}.{e}"))?;
            for (j, sc) in am.static_configs.iter().enumerate() {
                for t in &sc.targets {
                    let mut labels: Labels = sc.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    csoc_common::labels::set_label(&mut labels, "__address__", t);
                    csoc_common::labels::set_label(&mut labels, "__scheme__", &am.scheme);
                    let path = format!("{}/api/v2/alerts", am.path_prefix.trim_end_matches('/'));
                    csoc_common::labels::set_label(&mut labels, "__alerts_path__", &path);
                    let before = url_of(&labels);
                    if !csoc_common::relabel::relabel(&mut labels, &am.relabel_configs) {
                        out.dropped.push(before);
                        continue;
                    }
                    let url = url_of(&labels);
                    let u = reqwest::Url::parse(&url)
                        .map_err(|e| format!("{at}.static_configs[{j}]: target {t:?} gives the URL {url:?}: {e}"))?;
                    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                        return Err(format!(
                            "{at}.static_configs[{j}]: target {t:?} gives the URL {url:?}, not http(s)://host"
                        ));
                    }
                    out.active.push(AmTarget {
                        url,
                        timeout: am.timeout,
                        basic_auth: am.basic_auth.clone(),
                        authorization: am.authorization.clone(),
                        tls: am.tls_config.clone(),
                        follow_redirects: am.follow_redirects,
                        enable_http2: am.enable_http2,
                    });
                }
            }
        }
        Ok(out)
    }
}

fn url_of(labels: &Labels) -> String {
    let get = |n: &str| labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()).unwrap_or("");
    let path = get("__alerts_path__");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    format!("{}://{}{}", get("__scheme__"), get("__address__"), path)
}

impl AlertmanagerConfig {
    fn check(&self) -> Result<(), String> {
        unsupported(
            "",
            &[
                ("oauth2", self.oauth2.is_some()),
                ("sigv4", self.sigv4.is_some()),
                ("proxy_url", self.proxy_url.is_some()),
                ("no_proxy", self.no_proxy.is_some()),
                ("proxy_from_environment", self.proxy_from_environment.is_some()),
                ("proxy_connect_header", self.proxy_connect_header.is_some()),
                ("bearer_token", self.bearer_token.is_some()),
                ("bearer_token_file", self.bearer_token_file.is_some()),
                ("dns_sd_configs", self.dns_sd_configs.is_some()),
                ("file_sd_configs", self.file_sd_configs.is_some()),
                ("kubernetes_sd_configs", self.kubernetes_sd_configs.is_some()),
                ("consul_sd_configs", self.consul_sd_configs.is_some()),
                ("http_sd_configs", self.http_sd_configs.is_some()),
            ],
        )
        .map_err(|e| e.trim_start_matches('.').to_string())?;
        if self.alert_relabel_configs.is_some() {
            return Err("alert_relabel_configs: not supported; set labels in the rules or external_labels".into());
        }
        if let Some(v) = &self.api_version
            && v != "v2"
        {
            return Err(format!("api_version: {v:?} is not supported: only Alertmanager API v2 is spoken"));
        }
        if !matches!(self.scheme.as_str(), "http" | "https") {
            return Err(format!("scheme: {:?} must be http or https", self.scheme));
        }
        if !self.path_prefix.starts_with('/') {
            return Err(format!("path_prefix: {:?} must start with /", self.path_prefix));
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be more than 0s".into());
        }
        if self.basic_auth.is_some() && self.authorization.is_some() {
            return Err("set basic_auth or authorization, not both".into());
        }
        if let Some(b) = &self.basic_auth {
            b.validate()?;
        }
        if let Some(a) = &self.authorization {
            a.validate()?;
        }
        if let Some(t) = &self.tls_config {
            t.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> AlertingConfig {
        serde_yaml_ng::from_str(y).unwrap_or_else(|e| panic!("{e}\n{y}"))
    }

    #[test]
    fn prometheus_block_resolves_with_relabelling() {
        let a = parse(
            r#"
alertmanagers:
  - scheme: https
    path_prefix: /am/
    timeout: 5s
    api_version: v2
    static_configs:
      - targets: ["am-0:9093", "am-1:9093"]
        labels: {zone: a}
    relabel_configs:
      - source_labels: [__address__]
        regex: am-1:.*
        action: drop
    authorization: {credentials: abc}
    tls_config: {insecure_skip_verify: true}
"#,
        );
        let r = a.resolve(&["http://flat:9093".into()]).expect("valid");
        let urls: Vec<&str> = r.active.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["http://flat:9093/api/v2/alerts", "https://am-0:9093/am/api/v2/alerts"]);
        assert_eq!(r.dropped, ["https://am-1:9093/am/api/v2/alerts"]);
        assert_eq!(r.active[1].timeout, Duration::from_secs(5));
        r.active[1].client().expect("client");
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        for (y, want) in [
            ("alertmanagers: [{api_version: v1}]", "api_version"),
            ("alertmanagers: [{dns_sd_configs: [{names: [x]}]}]", "dns_sd_configs"),
            ("alertmanagers: [{oauth2: {client_id: x}}]", "oauth2"),
            ("alertmanagers: [{scheme: ftp}]", "scheme"),
            ("alertmanagers: [{tls_config: {server_name: x}}]", "server_name"),
            (
                "alert_relabel_configs: [{action: drop, source_labels: [a], regex: b}]",
                "alert_relabel_configs",
            ),
        ] {
            let e = parse(y).validate().expect_err(y);
            assert!(e.contains(want), "{y}: {e}");
        }
        assert!(serde_yaml_ng::from_str::<AlertingConfig>("alertmanagers: [{bogus: 1}]").is_err());
    }

    #[test]
    fn base64_like_go() {
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64_encode(b"a"), "YQ==");
        assert_eq!(base64_encode(b"ab"), "YWI=");
    }
}
