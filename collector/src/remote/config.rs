//! `remote_write:` entries of the collector's config, and `--remote-write URL`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use csoc_common::duration::de_duration;
use csoc_common::relabel::RelabelConfig;
use csoc_common::url::redact_url;
use serde::Deserialize;

/// One remote-write target.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver's push endpoint, e.g. `http://vm:8428/api/v1/write`.
    pub url: String,
    /// Name in metrics, logs and the position file (default: the URL's
    /// host and port).
    #[serde(default)]
    pub name: Option<String>,
    /// Extra HTTP headers, e.g. `X-Scope-OrgID` for a Mimir tenant.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// HTTP basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// `Authorization: Bearer` token.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// File holding the bearer token (read at start).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// TLS to the receiver.
    #[serde(default)]
    pub tls: Option<RemoteTls>,
    /// Concurrent senders; a series always goes to the same one.
    #[serde(default = "default_shards")]
    pub shards: usize,
    /// Samples per request at most.
    #[serde(default = "default_max_samples")]
    pub max_samples_per_send: usize,
    /// Timeout of one request.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// First retry delay.
    #[serde(default = "default_min_backoff", deserialize_with = "de_duration")]
    pub min_backoff: Duration,
    /// Longest retry delay (the delay doubles up to it).
    #[serde(default = "default_max_backoff", deserialize_with = "de_duration")]
    pub max_backoff: Duration,
    /// Retry on 429 Too Many Requests (else it is a failure like other 4xx).
    #[serde(default = "yes")]
    pub retry_on_http_429: bool,
    /// Bytes of our WAL kept for this remote while it cannot be reached;
    /// past that the oldest unsent records are given up (and counted).
    #[serde(default = "default_max_backlog", deserialize_with = "csoc_common::duration::de_bytes")]
    pub max_backlog: u64,
    /// Also send samples older than the newest already sent for their
    /// series (late or out-of-order writes). Off by default: Prometheus,
    /// Thanos Receive and Mimir without an out-of-order window refuse a
    /// whole request for one such sample. Turn on for VictoriaMetrics or a
    /// Mimir with `out_of_order_time_window`.
    #[serde(default)]
    pub send_out_of_order_samples: bool,
    /// Relabelling applied to each series before it is sent (after the
    /// external labels are added); a dropped series is not sent.
    #[serde(default)]
    pub write_relabel_configs: Vec<RelabelConfig>,
}

/// Basic authentication; the password inline or from a file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the password (read at start; a final newline is removed).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// TLS settings towards a receiver.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteTls {
    /// PEM CA bundle to trust (instead of the built-in web roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (with `key_file`) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_shards() -> usize {
    4
}
fn default_max_samples() -> usize {
    2000
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_min_backoff() -> Duration {
    Duration::from_millis(30)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(5)
}
fn yes() -> bool {
    true
}
fn default_max_backlog() -> u64 {
    1 << 30
}

/// Headers the sender sets itself.
const RESERVED_HEADERS: [&str; 6] = [
    "authorization",
    "content-encoding",
    "content-type",
    "content-length",
    "user-agent",
    "x-prometheus-remote-write-version",
];

impl std::fmt::Debug for RemoteWriteConfig {
    // Credentials (in the URL, headers, auth) stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWriteConfig")
            .field("url", &redact_url(&self.url))
            .field("name", &self.name)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("basic_auth", &self.basic_auth.as_ref().map(|b| &b.username))
            .field("bearer_token", &(self.bearer_token.is_some() || self.bearer_token_file.is_some()))
            .field("tls", &self.tls)
            .field("shards", &self.shards)
            .field("max_samples_per_send", &self.max_samples_per_send)
            .finish()
    }
}

impl RemoteWriteConfig {
    /// A target with every default (`--remote-write URL`).
    pub fn with_url(url: &str) -> Self {
        RemoteWriteConfig {
            url: url.to_string(),
            name: None,
            headers: BTreeMap::new(),
            basic_auth: None,
            bearer_token: None,
            bearer_token_file: None,
            tls: None,
            shards: default_shards(),
            max_samples_per_send: default_max_samples(),
            timeout: default_timeout(),
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
            retry_on_http_429: true,
            max_backlog: default_max_backlog(),
            send_out_of_order_samples: false,
            write_relabel_configs: Vec::new(),
        }
    }

    /// The name, or `host:port` of the URL (characters a name may not
    /// have, as in an IPv6 address, become `_`).
    pub fn effective_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0))))
            .map(|n| {
                n.chars()
                    .map(|c| if c.is_ascii_alphanumeric() || "-_.:".contains(c) { c } else { '_' })
                    .collect()
            })
            .unwrap_or_else(|| "remote".into())
    }

    /// Checks everything that can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        let u = reqwest::Url::parse(&self.url).map_err(|e| format!("url {:?}: {e}", redact_url(&self.url)))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(format!("url {:?} must be http:// or https:// with a host", redact_url(&self.url)));
        }
        let name = self.effective_name();
        if name.is_empty() || name.len() > 100 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
            return Err(format!("name {name:?}: use 1-100 letters, digits, '-', '_', '.' or ':'"));
        }
        if !(1..=64).contains(&self.shards) {
            return Err(format!("shards {} must be between 1 and 64", self.shards));
        }
        if !(1..=100_000).contains(&self.max_samples_per_send) {
            return Err(format!(
                "max_samples_per_send {} must be between 1 and 100000",
                self.max_samples_per_send
            ));
        }
        if self.timeout.is_zero() {
            return Err("timeout must be more than 0s".into());
        }
        if self.min_backoff.is_zero() || self.min_backoff > self.max_backoff {
            return Err("min_backoff must be more than 0s and at most max_backoff".into());
        }
        for (k, v) in &self.headers {
            if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "headers: {k:?} is set by the sender itself (use basic_auth or bearer_token for Authorization)"
                ));
            }
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("headers: {k:?} is not a valid header name"))?;
            reqwest::header::HeaderValue::from_str(v).map_err(|_| format!("headers: the value of {k:?} is not a valid header value"))?;
        }
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            return Err("set bearer_token or bearer_token_file, not both".into());
        }
        if let Some(b) = &self.basic_auth {
            if self.bearer_token.is_some() || self.bearer_token_file.is_some() {
                return Err("set basic_auth or a bearer token, not both".into());
            }
            if b.password.is_some() && b.password_file.is_some() {
                return Err("basic_auth: set password or password_file, not both".into());
            }
        }
        if let Some(t) = &self.tls
            && t.cert_file.is_some() != t.key_file.is_some()
        {
            return Err("tls: cert_file and key_file go together".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_validates_and_hides_secrets() {
        let yaml = r#"
url: https://user:pw@mimir.example.org/api/v1/push?x=secret
headers: {X-Scope-OrgID: csoc}
basic_auth: {username: csoc, password: hunter2}
shards: 2
max_backlog: 64MiB
min_backoff: 10ms
write_relabel_configs:
  - source_labels: [__name__]
    regex: scrape_.*
    action: drop
"#;
        let c: RemoteWriteConfig = serde_yaml_ng::from_str(yaml).expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.effective_name(), "mimir.example.org:443");
        assert_eq!(c.max_backlog, 64 << 20);
        assert_eq!(c.min_backoff, Duration::from_millis(10));
        assert_eq!(c.max_backoff, Duration::from_secs(5));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("pw") && !dbg.contains("secret"), "{dbg}");
        assert_eq!(redact_url(&c.url), "https://mimir.example.org/api/v1/push");

        let bad = [
            ("url: ftp://x/y", "http"),
            ("url: http://x/\nheaders: {Authorization: x}", "set by the sender"),
            ("url: http://x/\nshards: 0", "shards"),
            ("url: http://x/\nbearer_token: a\nbearer_token_file: /b", "not both"),
            (
                "url: http://x/\nbasic_auth: {username: u, password: p, password_file: /f}",
                "not both",
            ),
            ("url: http://x/\nmin_backoff: 10s", "min_backoff"),
            ("url: http://x/\nname: 'a/b'", "name"),
            ("url: http://x/\ntls: {cert_file: /c}", "go together"),
        ];
        for (y, want) in bad {
            let c: RemoteWriteConfig = serde_yaml_ng::from_str(y).expect(y);
            let e = c.validate().expect_err(y);
            assert!(e.contains(want), "{y}: {e}");
        }
        assert!(serde_yaml_ng::from_str::<RemoteWriteConfig>("url: http://x/\nbogus: 1").is_err());
        let v6 = RemoteWriteConfig::with_url("http://[::1]:9090/api/v1/write");
        assert_eq!(v6.effective_name(), "_::1_:9090");
        v6.validate().expect("an IPv6 URL gets a valid default name");
    }
}
