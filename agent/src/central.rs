//! Central configuration, agent side: what the collector pushes
//! (`ConfigPush`), merged over the local file, validated, applied without a
//! restart and kept in the spool directory as the last good one.
//!
//! **Precedence.** The effective configuration is the local file, with the
//! pushed settings merged over it (mappings key by key, lists and scalars
//! replaced whole), then the command-line flags (which override both, as
//! they override the file). A push may set only `interval` and `sources`;
//! the local-only settings (`collector`, `token`, `token_file`, `tls`,
//! `spool_dir`, `spool_max_bytes`, `http_listen`, `commons_name`,
//! `agent_name`, `kubeconfig`, `external_labels`, `relabel_configs`,
//! `log_format`) are refused in a push and always come from the local file
//! and flags. A reload of the local file (SIGHUP, `POST /-/reload`) applies
//! its `interval` and `sources` at once; changes to its local-only settings
//! are logged and take effect at the next restart.
//!
//! **Paths.** A push may not make the agent read a file the local
//! configuration does not already use: every string under a path-like key
//! of the push (`path`, `paths`, `file`, `files`, `kubeconfig`, `*_file`, `*_files`, `*_dir`,
//! `*_path` but `metrics_path`) must appear under a path-like key of the
//! local file or be given by a path flag (`--revproxy-log`, `--path.*`,
//! `--kubeconfig`, `--token-file`, `--tls-*`). See
//! `csoc_common::central`.
//!
//! **Validation.** A push is refused (the agent answers `rejected` with the
//! reason and keeps running its last good configuration) when its sha256
//! does not match its body, it is over 1 MiB, it sets a local-only key, it
//! introduces a path, it does not deserialize into the agent config's schema
//! (unknown field, wrong type; the error names the field), or it does not
//! validate (an invalid regex, a bad URL...), or a source cannot be built.
//!
//! **Persistence.** The last applied push is kept in the spool directory
//! (`central-config.yml`, the body, and `central-config.json`, its version
//! and sha256). At start the agent runs it merged over its local file, so
//! an agent restarted while the collector is down runs its last good
//! configuration. `--no-central-config` ignores it and refuses pushes.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::config::AgentConfig;
use csoc_common::central::{MAX_BODY_BYTES, foreign_paths, merge, parse, path_values};

/// The pushed body's file in the spool directory.
pub const BODY_FILE: &str = "central-config.yml";
/// Its version and sha256, in the spool directory.
pub const META_FILE: &str = "central-config.json";

/// A central config (as pushed, as kept).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Central {
    /// Its version.
    pub version: u64,
    /// Hex SHA-256 of `body`.
    pub sha256: String,
    /// The YAML.
    #[serde(skip)]
    pub body: String,
}

/// Hex SHA-256 of a body.
pub fn sha256_hex(body: &str) -> String {
    let d = Sha256::digest(body.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the kept config from `spool_dir` (None when there is none).
pub fn load(spool_dir: &Path) -> Result<Option<Central>, String> {
    let meta = spool_dir.join(META_FILE);
    let text = match std::fs::read_to_string(&meta) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", meta.display())),
    };
    let mut c: Central = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", meta.display()))?;
    let body_path = spool_dir.join(BODY_FILE);
    c.body = std::fs::read_to_string(&body_path).map_err(|e| format!("{}: {e}", body_path.display()))?;
    if sha256_hex(&c.body) != c.sha256 {
        return Err(format!("{} does not match the sha256 in {}", body_path.display(), meta.display()));
    }
    Ok(Some(c))
}

fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Keeps `c` in `spool_dir` (body first, then the record naming its hash:
/// a crash between the two leaves a mismatch that [`load`] refuses).
pub fn persist(spool_dir: &Path, c: &Central) -> std::io::Result<()> {
    write_atomic(&spool_dir.join(BODY_FILE), c.body.as_bytes())?;
    let meta = serde_json::to_vec(c).map_err(std::io::Error::other)?;
    write_atomic(&spool_dir.join(META_FILE), &meta)
}

/// The local configuration, as read now.
#[derive(Debug, Clone, Default)]
pub struct LocalConfig {
    /// The local file as YAML (an empty mapping without one).
    pub doc: Value,
    /// The file paths it (and the flags) use.
    pub allowed_paths: Vec<String>,
}

impl LocalConfig {
    /// A local configuration from the file's text and the paths given by
    /// flags.
    pub fn from_text(text: &str, file: &Path, flag_paths: Vec<String>) -> Result<Self, String> {
        let doc: Value = if text.trim().is_empty() {
            Value::Mapping(Mapping::new())
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| format!("{}: {}", file.display(), csoc_common::config::yaml_error(&e)))?
        };
        let mut allowed_paths: Vec<String> = path_values(&doc).into_iter().map(|(_, p)| p).collect();
        allowed_paths.extend(flag_paths);
        Ok(LocalConfig { doc, allowed_paths })
    }
}

/// Where the local configuration comes from (the command line: the file,
/// re-read at each reload, and the flags).
pub trait ConfigLoader: Send + Sync {
    /// Reads the local file now.
    fn local(&self) -> Result<LocalConfig, String>;
    /// Applies the flags to a configuration built from the file and the
    /// push.
    fn finish(&self, cfg: &mut AgentConfig) -> Result<(), String>;
}

/// The effective configuration: the local file, `central` over it, the
/// flags over both; validated.
pub fn effective(loader: &dyn ConfigLoader, central: Option<&Central>) -> Result<AgentConfig, String> {
    let local = loader.local()?;
    let mut doc = local.doc;
    if let Some(c) = central {
        let m = parse(&c.body, MAX_BODY_BYTES).map_err(|p| format!("central config {p}"))?;
        let pushed = Value::Mapping(m);
        if let Some((field, path)) = foreign_paths(&pushed, &local.allowed_paths).first() {
            return Err(format!(
                "central config {field}: {path:?} is not a file the local configuration uses; a pushed config may only name files the agent's local file (or flags) already name"
            ));
        }
        if matches!(doc, Value::Null) {
            doc = Value::Mapping(Mapping::new());
        }
        merge(&mut doc, pushed);
    }
    let empty = match &doc {
        Value::Null => true,
        Value::Mapping(m) => m.is_empty(),
        _ => false,
    };
    let mut cfg: AgentConfig = if empty {
        AgentConfig::default()
    } else {
        serde_path_to_error::deserialize(doc).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            }
        })?
    };
    loader.finish(&mut cfg)?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Keeps the running local-only settings in `new` (a reload of the local
/// file cannot change them without a restart); returns the ones that
/// differed.
pub fn keep_local_only(running: &AgentConfig, new: &mut AgentConfig) -> Vec<&'static str> {
    let mut held = Vec::new();
    macro_rules! keep {
        ($($f:ident),*) => {$(
            if format!("{:?}", running.$f) != format!("{:?}", new.$f) {
                held.push(stringify!($f));
                new.$f = running.$f.clone();
            }
        )*};
    }
    keep!(
        collector,
        token,
        token_file,
        tls,
        spool_dir,
        spool_max_bytes,
        http_listen,
        commons_name,
        agent_name,
        kubeconfig,
        external_labels,
        relabel_configs,
        log_format
    );
    held
}

/// The central config the agent runs now (for Hello): (version, sha256).
pub type Running = Arc<Mutex<(u64, String)>>;

/// A request to the agent's config manager.
#[derive(Debug)]
pub enum Command {
    /// Apply a push; the answer goes back to the collector.
    Push {
        /// What was pushed.
        push: Central,
        /// The outcome: Ok, or the reason it was rejected.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Re-read the local file (SIGHUP, `POST /-/reload`).
    ReloadLocal {
        /// The outcome: a summary, or why the configuration was kept.
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// Sends commands to a running agent's config manager. Clones share it.
#[derive(Debug, Clone)]
pub struct ReloadHandle(pub(crate) mpsc::Sender<Command>);

impl ReloadHandle {
    /// Re-reads the local file and applies it; Err: why the running
    /// configuration was kept.
    pub async fn reload_local(&self) -> Result<String, String> {
        let (reply, rx) = oneshot::channel();
        self.0
            .send(Command::ReloadLocal { reply })
            .await
            .map_err(|_| "the agent is shutting down".to_string())?;
        rx.await.map_err(|_| "the agent is shutting down".to_string())?
    }

    /// Applies a push; Err: why it was rejected.
    pub async fn push(&self, push: Central) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.0
            .send(Command::Push { push, reply })
            .await
            .map_err(|_| "the agent is shutting down".to_string())?;
        rx.await.map_err(|_| "the agent is shutting down".to_string())?
    }
}

/// Checks a push's envelope: size and hash.
pub fn check_push(p: &Central) -> Result<(), String> {
    if p.body.len() > MAX_BODY_BYTES {
        return Err(format!("{} bytes, over the limit of {MAX_BODY_BYTES}", p.body.len()));
    }
    let got = sha256_hex(&p.body);
    if got != p.sha256 {
        return Err(format!("the body's sha256 is {got}, the push says {}", p.sha256));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(String, Vec<String>);
    impl ConfigLoader for Fixed {
        fn local(&self) -> Result<LocalConfig, String> {
            LocalConfig::from_text(&self.0, Path::new("agent.yml"), self.1.clone())
        }
        fn finish(&self, _: &mut AgentConfig) -> Result<(), String> {
            Ok(())
        }
    }

    fn push(body: &str) -> Central {
        Central {
            version: 1,
            sha256: sha256_hex(body),
            body: body.into(),
        }
    }

    #[test]
    fn central_overrides_the_local_file_but_not_its_local_only_settings() {
        let l = Fixed(
            "collector: http://c:9301\ninterval: 15s\nsources:\n  host: {enabled: true, job: node}\n".into(),
            vec![],
        );
        let c = effective(&l, Some(&push("interval: 5s\nsources: {host: {job: central}}\n"))).expect("valid");
        assert_eq!(c.interval, std::time::Duration::from_secs(5));
        assert_eq!(c.sources.host.job, "central");
        assert_eq!(c.collector, "http://c:9301");
        let e = effective(&l, Some(&push("collector: http://evil:9301\n"))).expect_err("local-only");
        assert!(e.contains("local-only"), "{e}");
        let e = effective(&l, Some(&push("sources: {host: {jobb: x}}\n"))).expect_err("unknown field");
        assert!(e.contains("sources.host") && e.contains("jobb"), "{e}");
    }

    #[test]
    fn a_push_cannot_introduce_a_path() {
        let l = Fixed(
            "sources:\n  revproxy_log: {enabled: false, path: /var/log/nginx/access.log}\n".into(),
            vec!["/flag/path.log".into()],
        );
        let e = effective(&l, Some(&push("sources: {revproxy_log: {enabled: true, path: /etc/shadow}}\n"))).expect_err("foreign");
        assert!(e.contains("sources.revproxy_log.path") && e.contains("/etc/shadow"), "{e}");
        let d = tempfile::tempdir().expect("tmp");
        let l = Fixed(
            format!(
                "spool_dir: {}\nsources:\n  revproxy_log: {{enabled: false, path: /var/log/nginx/access.log}}\n",
                d.path().display()
            ),
            vec![],
        );
        effective(
            &l,
            Some(&push("sources: {revproxy_log: {enabled: true, path: /var/log/nginx/access.log}}\n")),
        )
        .expect("a local path");
    }

    #[test]
    fn kept_config_round_trips_and_a_torn_one_is_refused() {
        let d = tempfile::tempdir().expect("tmp");
        assert_eq!(load(d.path()).expect("none"), None);
        let c = push("interval: 5s\n");
        persist(d.path(), &c).expect("persist");
        assert_eq!(load(d.path()).expect("load"), Some(c.clone()));
        std::fs::write(d.path().join(BODY_FILE), "interval: 6s\n").expect("write");
        assert!(load(d.path()).is_err());
        assert!(check_push(&c).is_ok());
        let bad = Central { sha256: "00".into(), ..c };
        assert!(check_push(&bad).expect_err("hash").contains("sha256"));
    }
}
