//! Central agent configuration (`--agent-config-dir DIR`, `agent_config_dir`).
//!
//! ```text
//! DIR/_default.yml          every agent
//! DIR/<commons>.yml         the agents of <commons>
//! DIR/<commons>/<agent>.yml one agent
//! ```
//! Each file is a YAML mapping in the agent config's schema, limited to
//! `interval` and `sources` (see `csoc_common::central`): the collector
//! address, token, TLS, spool, listen address, commons, agent name and the
//! other local-only settings are refused, with the file's line. For an agent
//! the three files are merged in that order (mappings key by key, lists and
//! scalars replaced) and pushed over its stream (`ConfigPush`) when the
//! result differs from what it runs. A file only ever reaches the agents of
//! the commons it names: the commons is the one the agent's credentials map
//! to, never what the agent says.
//!
//! The collector checks each file's YAML syntax, its top-level keys and its
//! size ([`MAX_FILE_BYTES`]); the agent checks the schema (unknown fields,
//! types, regexes, paths) because the schema is the agent's, and agents of
//! several versions may share one directory. An agent's rejection is listed
//! by `GET /api/v1/agents` (`config_status: rejected`, `config_error`).
//!
//! Files are re-read when they change (their modification times and sizes
//! are polled every [`POLL`]), on SIGHUP and on `POST /-/reload`
//! ([`AgentConfigStore::reload`]). A file that does not parse or validate
//! is refused — the error, with file, line and reason, is logged and listed
//! for the agents it applies to (`config_file_errors`) — and its last good
//! version stays in force (none, if it never parsed). A deleted file no
//! longer applies.
//!
//! Versions: an agent's config version is the newest modification time, in
//! ms, of the files and directories it is merged from, or the previous
//! version + 1 when that would not increase it; equal content keeps its
//! version. Whether an agent runs the config is decided by the SHA-256 of
//! the merged body, not by the version.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use serde_yaml_ng::{Mapping, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use csoc_common::central::{MAX_BODY_BYTES, MAX_FILE_BYTES};

/// How often the directory is polled for changes.
pub const POLL: Duration = Duration::from_secs(2);

/// The file every agent gets.
pub const DEFAULT_FILE: &str = "_default.yml";

/// A refused file: which, where, why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileError {
    /// The file, relative to the directory (`alpha.yml`, `alpha/agent-1.yml`).
    pub file: String,
    /// The line, when known.
    pub line: Option<usize>,
    /// Why it was refused.
    pub reason: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{} line {}: {}", self.file, l, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// What a reload found wrong.
#[derive(Debug, thiserror::Error)]
#[error("agent config: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ReloadError(pub Vec<FileError>);

/// The config held for one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its version (never 0).
    pub version: u64,
    /// Hex SHA-256 of `body`.
    pub sha256: String,
    /// The merged YAML ("" when no file applies).
    pub body: String,
}

#[derive(Debug, Clone)]
struct FileEntry {
    /// The last good content (None: it never parsed).
    good: Option<Mapping>,
    /// Modification time of the last good content, ms.
    mtime_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Relative file name → entry.
    files: BTreeMap<String, FileEntry>,
    /// Relative file name → why the current content was refused.
    errors: BTreeMap<String, FileError>,
    /// Directory (relative, "" for the top) → modification time, ms.
    dirs: BTreeMap<String, u64>,
    /// What was seen at the last reload (path, mtime, size).
    fingerprint: Vec<(PathBuf, u64, u64)>,
    /// (commons, agent) → the last (sha256, version) handed out.
    versions: HashMap<(String, String), (String, u64)>,
}

/// The directory's parsed files, shared by ingest (what to push), the API
/// (what to list) and the reload paths.
#[derive(Debug)]
pub struct AgentConfigStore {
    dir: PathBuf,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

fn mtime_ms(m: &std::fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn is_yaml(name: &str) -> bool {
    name.ends_with(".yml") || name.ends_with(".yaml")
}

fn stem(name: &str) -> &str {
    name.strip_suffix(".yml").or_else(|| name.strip_suffix(".yaml")).unwrap_or(name)
}

/// The central files found: (relative name, path, metadata).
type Found = Vec<(String, PathBuf, std::fs::Metadata)>;

/// Every central file under `dir` (relative names) with its metadata, and
/// the directories' modification times.
fn scan(dir: &Path) -> std::io::Result<(Found, BTreeMap<String, u64>)> {
    let mut files = Vec::new();
    let mut dirs = BTreeMap::new();
    dirs.insert(String::new(), mtime_ms(&std::fs::metadata(dir)?));
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let md = std::fs::metadata(e.path())?;
        if md.is_dir() {
            dirs.insert(name.clone(), mtime_ms(&md));
            for f in std::fs::read_dir(e.path())? {
                let f = f?;
                let fname = f.file_name().to_string_lossy().into_owned();
                if fname.starts_with('.') || !is_yaml(&fname) {
                    continue;
                }
                let fmd = std::fs::metadata(f.path())?;
                if fmd.is_file() {
                    files.push((format!("{name}/{fname}"), f.path(), fmd));
                }
            }
        } else if md.is_file() && is_yaml(&name) {
            files.push((name, e.path(), md));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((files, dirs))
}

fn sha256_hex(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

impl AgentConfigStore {
    /// A store for `dir`, read once (errors are kept and listed; the first
    /// read's are returned too, for the start-up log).
    pub fn open(dir: PathBuf) -> (Self, Result<(), ReloadError>) {
        let (changed, _) = watch::channel(0);
        let s = AgentConfigStore {
            dir,
            state: Mutex::default(),
            changed,
        };
        let r = s.reload();
        (s, r)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notified (the value increases) whenever a reload changed anything.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Re-reads the directory. Files that parse replace their previous
    /// content; files that do not keep their last good content and are
    /// returned (and listed) as errors; deleted files are dropped.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let (found, dirs) = match scan(&self.dir) {
            Ok(x) => x,
            Err(e) => {
                let err = FileError {
                    file: self.dir.display().to_string(),
                    line: None,
                    reason: format!("cannot read the agent config directory: {e}"),
                };
                let mut st = self.lock();
                st.errors.insert(String::new(), err.clone());
                return Err(ReloadError(vec![err]));
            }
        };
        let fingerprint: Vec<(PathBuf, u64, u64)> = found.iter().map(|(_, p, m)| (p.clone(), mtime_ms(m), m.len())).collect();
        let mut st = self.lock();
        st.errors.remove("");
        let mut changed = st.dirs != dirs;
        st.dirs = dirs;
        let names: Vec<&String> = found.iter().map(|(n, _, _)| n).collect();
        let before = st.files.len();
        st.files.retain(|n, _| names.contains(&n));
        st.errors.retain(|n, _| names.contains(&n));
        changed |= st.files.len() != before;
        for (name, path, md) in &found {
            let m = mtime_ms(md);
            let prev_fp = st.fingerprint.iter().find(|(p, _, _)| p == path);
            if prev_fp.is_some_and(|(_, pm, pl)| *pm == m && *pl == md.len()) && st.files.contains_key(name) {
                continue;
            }
            let parsed = if md.len() > MAX_FILE_BYTES as u64 {
                Err(csoc_common::central::Problem {
                    line: None,
                    reason: format!("{} bytes, over the limit of {MAX_FILE_BYTES}", md.len()),
                })
            } else {
                match std::fs::read_to_string(path) {
                    Ok(text) => csoc_common::central::parse(&text, MAX_FILE_BYTES),
                    Err(e) => Err(csoc_common::central::Problem {
                        line: None,
                        reason: format!("cannot read: {e}"),
                    }),
                }
            };
            let parsed = parsed.and_then(|m| {
                check_name(name).map_err(|reason| csoc_common::central::Problem { line: None, reason })?;
                Ok(m)
            });
            match parsed {
                Ok(mapping) => {
                    st.errors.remove(name);
                    let e = st.files.entry(name.clone()).or_insert(FileEntry { good: None, mtime_ms: 0 });
                    if e.good.as_ref() != Some(&mapping) {
                        changed = true;
                    }
                    e.good = Some(mapping);
                    e.mtime_ms = m;
                }
                Err(p) => {
                    let err = FileError {
                        file: name.clone(),
                        line: p.line,
                        reason: p.reason,
                    };
                    tracing::error!(dir = %self.dir.display(), "refused an agent config file; its last good version stays in force: {err}");
                    st.errors.insert(name.clone(), err);
                    st.files.entry(name.clone()).or_insert(FileEntry { good: None, mtime_ms: 0 });
                }
            }
        }
        st.fingerprint = fingerprint;
        let errors: Vec<FileError> = st.errors.values().cloned().collect();
        drop(st);
        if changed {
            self.changed.send_modify(|g| *g += 1);
            tracing::info!(dir = %self.dir.display(), "agent config reloaded");
        }
        if errors.is_empty() { Ok(()) } else { Err(ReloadError(errors)) }
    }

    /// Whether the files changed since the last reload (names, times, sizes).
    fn stale(&self) -> bool {
        let Ok((found, dirs)) = scan(&self.dir) else { return true };
        let fp: Vec<(PathBuf, u64, u64)> = found.iter().map(|(_, p, m)| (p.clone(), mtime_ms(m), m.len())).collect();
        let st = self.lock();
        st.fingerprint != fp || st.dirs != dirs
    }

    /// Polls the directory every [`POLL`] and reloads on change, until
    /// `stop`.
    pub async fn watch(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let me = self.clone();
            let res = tokio::task::spawn_blocking(move || if me.stale() { me.reload().map(|_| true) } else { Ok(false) }).await;
            if let Ok(Err(e)) = res {
                tracing::debug!(error = %e, "agent config files changed; some were refused");
            }
        }
    }

    /// The files that apply to (commons, agent), in merge order.
    fn applicable(commons: &str, agent: &str) -> [String; 3] {
        [DEFAULT_FILE.to_string(), format!("{commons}.yml"), format!("{commons}/{agent}.yml")]
    }

    fn matches(name: &str, want: &str) -> bool {
        name == want || (name.ends_with(".yaml") && stem(name) == stem(want))
    }

    /// The refused files that apply to (commons, agent).
    pub fn errors_for(&self, commons: &str, agent: &str) -> Vec<FileError> {
        let want = Self::applicable(commons, agent);
        let st = self.lock();
        st.errors
            .iter()
            .filter(|(n, _)| n.is_empty() || want.iter().any(|w| Self::matches(n, w)))
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The merged config for (commons, agent); an error when the merged
    /// body is over [`MAX_BODY_BYTES`].
    pub fn config_for(&self, commons: &str, agent: &str) -> Result<Held, String> {
        let want = Self::applicable(commons, agent);
        let mut st = self.lock();
        let mut merged = Value::Mapping(Mapping::new());
        let mut newest = st.dirs.get("").copied().unwrap_or(0);
        if let Some(d) = st.dirs.get(commons) {
            newest = newest.max(*d);
        }
        for w in &want {
            for (name, e) in &st.files {
                if !Self::matches(name, w) {
                    continue;
                }
                if let Some(m) = &e.good {
                    csoc_common::central::merge(&mut merged, Value::Mapping(m.clone()));
                    newest = newest.max(e.mtime_ms);
                }
            }
        }
        let empty = matches!(&merged, Value::Mapping(m) if m.is_empty());
        let body = if empty {
            String::new()
        } else {
            serde_yaml_ng::to_string(&merged).map_err(|e| format!("cannot encode the merged config: {e}"))?
        };
        if body.len() > MAX_BODY_BYTES {
            return Err(format!(
                "the merged config for {commons}/{agent} is {} bytes, over the limit of {MAX_BODY_BYTES}; not pushed",
                body.len()
            ));
        }
        let sha = sha256_hex(&body);
        let key = (commons.to_string(), agent.to_string());
        let version = match st.versions.get(&key) {
            Some((s, v)) if *s == sha => *v,
            Some((_, v)) => newest.max(v + 1),
            None => newest.max(1),
        };
        st.versions.insert(key, (sha.clone(), version));
        Ok(Held {
            version,
            sha256: sha,
            body,
        })
    }

    /// Forgets the version kept for an agent (the registry forgot it).
    pub fn forget(&self, commons: &str, agent: &str) {
        self.lock().versions.remove(&(commons.to_string(), agent.to_string()));
    }
}

/// A file name the directory layout allows: `_default.yml`, `<commons>.yml`
/// or `<commons>/<agent>.yml`, names without control characters.
fn check_name(name: &str) -> Result<(), String> {
    if name.chars().any(char::is_control) {
        return Err("the file name contains control characters".into());
    }
    match name.split_once('/') {
        None => Ok(()),
        Some((c, _)) if c.starts_with('_') => Err(format!(
            "directory {c:?}: commons directories are named after the commons (`_` names are reserved)"
        )),
        Some(_) => Ok(()),
    }
}

/// Reloads `store` (if any), logging the outcome; the SIGHUP and
/// `POST /-/reload` paths call this.
pub fn reload_logged(store: Option<&AgentConfigStore>, why: &str) -> Result<(), ReloadError> {
    let Some(s) = store else { return Ok(()) };
    let r = s.reload();
    match &r {
        Ok(()) => tracing::info!(dir = %s.dir().display(), "{why}: agent config re-read"),
        Err(e) => tracing::error!(dir = %s.dir().display(), "{why}: {e}; the refused files' last good versions stay in force"),
    }
    r
}

/// Opens `dir` (when given), hands the store to the registry (ingest pushes
/// from it, the API lists it) and polls it for changes until `stop`.
pub fn start(dir: Option<&PathBuf>, agents: &std::sync::Arc<crate::agents::AgentRegistry>, stop: &CancellationToken) {
    let Some(dir) = dir else { return };
    let (store, first) = AgentConfigStore::open(dir.clone());
    match first {
        Ok(()) => tracing::info!(dir = %dir.display(), "central agent config: pushing to the agents"),
        Err(e) => tracing::error!(dir = %dir.display(), "central agent config: {e}; those files are not pushed until fixed"),
    }
    let store = std::sync::Arc::new(store);
    agents.set_config_store(store.clone());
    tokio::spawn(store.watch(stop.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn files_merge_in_order_and_reach_only_their_commons() {
        let d = tempfile::tempdir().expect("tmp");
        write(
            d.path(),
            "_default.yml",
            "interval: 15s\nsources: {host: {enabled: true, job: node}}\n",
        );
        write(d.path(), "alpha.yml", "interval: 5s\n");
        write(d.path(), "alpha/a1.yml", "sources: {host: {job: special}}\n");
        write(d.path(), "beta.yml", "sources: {scrape: {jobs: []}}\n");
        let (s, r) = AgentConfigStore::open(d.path().to_path_buf());
        r.expect("all valid");
        let a1 = s.config_for("alpha", "a1").expect("a1");
        let v: Value = serde_yaml_ng::from_str(&a1.body).expect("yaml");
        assert_eq!(v["interval"], Value::from("5s"));
        assert_eq!(v["sources"]["host"]["job"], Value::from("special"));
        assert_eq!(v["sources"]["host"]["enabled"], Value::from(true));
        assert!(v["sources"].get("scrape").is_none(), "beta's file never reaches alpha: {}", a1.body);
        let a2 = s.config_for("alpha", "a2").expect("a2");
        assert!(a2.body.contains("job: node") && !a2.body.contains("special"), "{}", a2.body);
        let b = s.config_for("beta", "a1").expect("beta");
        assert!(
            b.body.contains("scrape") && b.body.contains("interval: 15s") && !b.body.contains("interval: 5s"),
            "{}",
            b.body
        );
        // A commons whose name is a prefix of another's gets nothing of it.
        let al = s.config_for("alph", "a1").expect("alph");
        assert!(!al.body.contains("interval: 5s"));
        assert_eq!(
            a1.version,
            s.config_for("alpha", "a1").expect("again").version,
            "same content, same version"
        );
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_version_and_is_listed() {
        let d = tempfile::tempdir().expect("tmp");
        write(d.path(), "_default.yml", "interval: 15s\n");
        let (s, r) = AgentConfigStore::open(d.path().to_path_buf());
        r.expect("valid");
        let before = s.config_for("alpha", "a").expect("held");
        let rx = s.subscribe();
        write(d.path(), "_default.yml", "interval: 15s\ntoken: stolen\n");
        let e = s.reload().expect_err("local-only key");
        assert_eq!(e.0.len(), 1);
        assert_eq!((e.0[0].file.as_str(), e.0[0].line), ("_default.yml", Some(2)));
        assert!(e.0[0].reason.contains("local-only"), "{}", e.0[0]);
        assert_eq!(s.config_for("alpha", "a").expect("held").body, before.body, "last good stays");
        assert_eq!(s.errors_for("alpha", "a").len(), 1);
        assert!(!rx.has_changed().expect("open"), "nothing changed for the agents");
        write(d.path(), "_default.yml", "interval: 30s\n");
        s.reload().expect("fixed");
        assert!(rx.has_changed().expect("open"));
        let after = s.config_for("alpha", "a").expect("held");
        assert!(after.body.contains("30s") && after.version > before.version);
        assert!(s.errors_for("alpha", "a").is_empty());
        // Deleted: nothing applies, and the version still increases.
        std::fs::remove_file(d.path().join("_default.yml")).expect("rm");
        s.reload().expect("empty dir");
        let gone = s.config_for("alpha", "a").expect("held");
        assert_eq!(gone.body, "");
        assert!(gone.version > after.version);
    }

    #[test]
    fn oversized_files_are_refused() {
        let d = tempfile::tempdir().expect("tmp");
        write(d.path(), "alpha.yml", &format!("interval: 15s\n#{}\n", "x".repeat(MAX_FILE_BYTES)));
        let (s, r) = AgentConfigStore::open(d.path().to_path_buf());
        let e = r.expect_err("too big");
        assert!(e.to_string().contains("over the limit"), "{e}");
        assert_eq!(s.config_for("alpha", "a").expect("held").body, "");
    }
}
