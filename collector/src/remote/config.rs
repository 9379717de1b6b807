//! `remote_write:` entries of the collector's config, and `--remote-write URL`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use csoc_common::duration::de_duration;
use csoc_common::relabel::RelabelConfig;
use csoc_common::url::redact_url;
use serde::Deserialize;

pub use csoc_common::httpconf::{Authorization, BasicAuth, TlsConfig};

/// One remote-write target.
#[derive(Clone, Deserialize, PartialEq)]
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
    /// HTTP basic authentication (`password` or `password_file`).
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Prometheus's `authorization` (`type`, default `Bearer`;
    /// `credentials` or `credentials_file`).
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// `Authorization: Bearer` token.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// File holding the bearer token (read at start).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// TLS to the receiver (`tls` or Prometheus's `tls_config`: `ca_file`,
    /// `cert_file`, `key_file`, inline `ca`/`cert`/`key`,
    /// `insecure_skip_verify`, `min_version`, `max_version`).
    #[serde(default, alias = "tls_config")]
    pub tls: Option<TlsConfig>,
    /// Prometheus's `queue_config`; its fields map onto the ones below
    /// (see [`QueueConfig`]).
    #[serde(default)]
    pub queue_config: Option<QueueConfig>,
    /// Prometheus's `metadata_config`: only `send: false` is accepted
    /// (metric metadata is not sent by remote write here).
    #[serde(default)]
    pub metadata_config: Option<MetadataConfig>,
    /// Follow HTTP redirects (Prometheus's default: true).
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// false: HTTP/1.1 only. true (the default): HTTP/2 when the receiver
    /// offers it over TLS.
    #[serde(default = "yes")]
    pub enable_http2: bool,
    /// Refused when true: no exemplars are stored.
    #[serde(default)]
    pub send_exemplars: bool,
    /// Refused when true: no native histograms are stored.
    #[serde(default)]
    pub send_native_histograms: bool,
    /// Prometheus fields refused with their reason (see
    /// `csoc_common::httpconf::unsupported`).
    #[serde(default)]
    pub oauth2: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub sigv4: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub azuread: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    #[doc(hidden)]
    pub google_iam: Option<serde_yaml_ng::Value>,
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
    pub protobuf_message: Option<String>,
    #[serde(default)]
    #[doc(hidden)]
    pub round_robin_dns: Option<serde_yaml_ng::Value>,
    /// Concurrent senders; a series always goes to the same one.
    #[serde(default = "default_shards")]
    pub shards: usize,
    /// Samples per request at most.
    #[serde(default = "default_max_samples")]
    pub max_samples_per_send: usize,
    /// Timeout of one request (alias Prometheus's `remote_timeout`).
    #[serde(default = "default_timeout", deserialize_with = "de_duration", alias = "remote_timeout")]
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

/// Prometheus's `queue_config`. The queue here is the collector's WAL
/// itself (bounded by `max_backlog`), so:
/// - `max_shards` sets `shards` (the senders are not resharded, so
///   `min_shards` must not exceed it and is otherwise unused);
/// - `max_samples_per_send`, `min_backoff`, `max_backoff` and
///   `retry_on_http_429` set the fields of the same names;
/// - `capacity` bounds nothing here (the WAL is the buffer) and is accepted
///   for pasted configs;
/// - `batch_send_deadline`: batches are sent as soon as they are read from
///   the WAL, so never later than any deadline; accepted;
/// - `sample_age_limit` other than 0 is refused (not implemented).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Accepted; see above.
    #[serde(default)]
    pub capacity: Option<u64>,
    /// Sets `shards`.
    #[serde(default)]
    pub max_shards: Option<usize>,
    /// At most `max_shards`; otherwise unused.
    #[serde(default)]
    pub min_shards: Option<usize>,
    /// Sets `max_samples_per_send`.
    #[serde(default)]
    pub max_samples_per_send: Option<usize>,
    /// Accepted; see above.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub batch_send_deadline: Option<Duration>,
    /// Sets `min_backoff`.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub min_backoff: Option<Duration>,
    /// Sets `max_backoff`.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_backoff: Option<Duration>,
    /// Sets `retry_on_http_429`.
    #[serde(default)]
    pub retry_on_http_429: Option<bool>,
    /// Only 0 (no limit) is accepted.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub sample_age_limit: Option<Duration>,
}

/// Prometheus's `metadata_config`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// Must be false: metadata is not sent.
    #[serde(default = "yes")]
    pub send: bool,
    /// Accepted with `send: false`.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub send_interval: Option<Duration>,
    /// Accepted with `send: false`.
    #[serde(default)]
    pub max_samples_per_send: Option<usize>,
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| csoc_common::duration::parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
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
            .field(
                "bearer_token",
                &(self.bearer_token.is_some() || self.bearer_token_file.is_some() || self.authorization.is_some()),
            )
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
            authorization: None,
            bearer_token: None,
            bearer_token_file: None,
            tls: None,
            queue_config: None,
            metadata_config: None,
            follow_redirects: true,
            enable_http2: true,
            send_exemplars: false,
            send_native_histograms: false,
            oauth2: None,
            sigv4: None,
            azuread: None,
            google_iam: None,
            proxy_url: None,
            no_proxy: None,
            proxy_from_environment: None,
            proxy_connect_header: None,
            protobuf_message: None,
            round_robin_dns: None,
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

    /// This target with `queue_config`'s fields applied over the
    /// collector's own (`shards`, `max_samples_per_send`, backoffs, 429).
    pub fn effective(&self) -> RemoteWriteConfig {
        let mut c = self.clone();
        if let Some(q) = &self.queue_config {
            if let Some(v) = q.max_shards {
                c.shards = v;
            }
            if let Some(v) = q.max_samples_per_send {
                c.max_samples_per_send = v;
            }
            if let Some(v) = q.min_backoff {
                c.min_backoff = v;
            }
            if let Some(v) = q.max_backoff {
                c.max_backoff = v;
            }
            if let Some(v) = q.retry_on_http_429 {
                c.retry_on_http_429 = v;
            }
        }
        c
    }

    /// Checks everything that can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_config.is_some() {
            let mut e = self.effective();
            e.queue_config = None;
            e.validate().map_err(|m| format!("{m} (with queue_config applied)"))?;
        }
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
        csoc_common::httpconf::unsupported(
            "remote_write",
            &[
                ("oauth2", self.oauth2.is_some()),
                ("sigv4", self.sigv4.is_some()),
                ("azuread", self.azuread.is_some()),
                ("google_iam", self.google_iam.is_some()),
                ("proxy_url", self.proxy_url.is_some()),
                ("no_proxy", self.no_proxy.is_some()),
                ("proxy_from_environment", self.proxy_from_environment.is_some()),
                ("proxy_connect_header", self.proxy_connect_header.is_some()),
                ("send_exemplars", self.send_exemplars),
                ("send_native_histograms", self.send_native_histograms),
                (
                    "protobuf_message",
                    self.protobuf_message.as_deref().is_some_and(|m| m != "prometheus.WriteRequest"),
                ),
                ("round_robin_dns", self.round_robin_dns.is_some()),
            ],
        )
        .map_err(|e| e.trim_start_matches("remote_write.").to_string())?;
        let auths = [
            self.bearer_token.is_some() || self.bearer_token_file.is_some(),
            self.basic_auth.is_some(),
            self.authorization.is_some(),
        ];
        if auths.iter().filter(|x| **x).count() > 1 {
            return Err("set one of basic_auth, authorization or a bearer token, not several".into());
        }
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            return Err("set bearer_token or bearer_token_file, not both".into());
        }
        if let Some(b) = &self.basic_auth {
            b.validate()?;
        }
        if let Some(a) = &self.authorization {
            a.validate()?;
        }
        if let Some(t) = &self.tls {
            t.validate()?;
        }
        if let Some(q) = &self.queue_config {
            if q.sample_age_limit.is_some_and(|d| !d.is_zero()) {
                return Err(
                    "queue_config.sample_age_limit: not supported (only 0, no limit): samples are sent however old, from the WAL".into(),
                );
            }
            if let (Some(min), Some(max)) = (q.min_shards, q.max_shards)
                && min > max
            {
                return Err(format!("queue_config.min_shards {min} is above max_shards {max}"));
            }
        }
        if let Some(m) = &self.metadata_config
            && m.send
        {
            return Err(
                "metadata_config.send: metric metadata is not sent by remote write here; set send: false (the receiver still gets every sample)"
                    .into(),
            );
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
