//! Silences, with Alertmanager's semantics:
//! - a silence has matchers (equality, regex, and their negations: `=`,
//!   `!=`, `=~`, `!~`, regexes anchored at both ends), a start, an end, an
//!   author and a comment;
//! - it is `pending` before its start, `active` from its start until its
//!   end, `expired` after; an alert is silenced while an active silence's
//!   matchers all match its labels (a missing label matches as "");
//! - updating a silence keeps its ID when only its end, comment or author
//!   change (or anything, while pending); otherwise the old one is expired
//!   and a new one created (Alertmanager's `canUpdate`);
//! - expiring a pending silence ends it at once, an active one ends now;
//! - expired silences are kept for [`RETENTION_MS`] (Alertmanager's
//!   `--data.retention`, 120h), then dropped.
//!
//! Silences are saved to a JSON file on every change (written to a
//! temporary file, then renamed), so that they survive a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::tsdb::{Labels, Matcher};

/// Expired silences are forgotten after this long (120h).
pub const RETENTION_MS: i64 = 120 * 3600 * 1000;

/// Longest comment or author kept (bytes).
const MAX_TEXT: usize = 4096;
/// At most this many matchers per silence.
const MAX_MATCHERS: usize = 64;
/// At most this many silences kept (active, pending and expired).
pub const MAX_SILENCES: usize = 10_000;

/// One matcher of a silence, as Alertmanager's API v2 has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceMatcher {
    /// Label name.
    pub name: String,
    /// Value, or regex when `is_regex`.
    pub value: String,
    /// `=~`/`!~` rather than `=`/`!=`.
    #[serde(rename = "isRegex")]
    pub is_regex: bool,
    /// `=`/`=~` rather than `!=`/`!~` (default true, as in the API).
    #[serde(rename = "isEqual", default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl SilenceMatcher {
    /// The operator as written in PromQL (`=`, `!=`, `=~`, `!~`).
    pub fn op(&self) -> &'static str {
        match (self.is_regex, self.is_equal) {
            (false, true) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (true, false) => "!~",
        }
    }

    /// `name="value"` with the operator.
    pub fn display(&self) -> String {
        format!("{}{}{:?}", self.name, self.op(), self.value)
    }

    /// Compiles it (regexes anchored at both ends).
    pub fn compile(&self) -> Result<Matcher, String> {
        if !csoc_common::labels::valid_label_name(&self.name) {
            return Err(format!("invalid label name {:?}", self.name));
        }
        if self.is_regex {
            Matcher::regex(&self.name, &self.value, !self.is_equal).map_err(|e| format!("matcher {}: {e}", self.display()))
        } else if self.is_equal {
            Ok(Matcher::equal(&self.name, &self.value))
        } else {
            Ok(Matcher {
                name: self.name.clone(),
                op: crate::tsdb::MatchOp::NotEqual,
                value: self.value.clone(),
            })
        }
    }
}

/// Parses one matcher as Alertmanager and amtool write them:
/// `name="value"`, `name=value`, `name!=value`, `name=~"re"`, `name!~re`.
pub fn parse_matcher(s: &str) -> Result<SilenceMatcher, String> {
    let s = s.trim();
    let at = s
        .find(['=', '!'])
        .ok_or_else(|| format!("matcher {s:?}: expected name=value, name!=value, name=~regex or name!~regex"))?;
    let (name, rest) = s.split_at(at);
    let (is_regex, is_equal, value) = if let Some(v) = rest.strip_prefix("=~") {
        (true, true, v)
    } else if let Some(v) = rest.strip_prefix("!~") {
        (true, false, v)
    } else if let Some(v) = rest.strip_prefix("!=") {
        (false, false, v)
    } else if let Some(v) = rest.strip_prefix('=') {
        (false, true, v)
    } else {
        return Err(format!("matcher {s:?}: expected =, !=, =~ or !~ after the label name"));
    };
    let name = name.trim();
    let value = value.trim();
    let value = if value.starts_with('"') {
        serde_json::from_str::<String>(value).map_err(|_| format!("matcher {s:?}: badly quoted value"))?
    } else {
        value.to_string()
    };
    let m = SilenceMatcher {
        name: name.to_string(),
        value,
        is_regex,
        is_equal,
    };
    m.compile()?;
    Ok(m)
}

/// Where a silence is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceState {
    /// Starts later.
    Pending,
    /// In force.
    Active,
    /// Ended.
    Expired,
}

impl SilenceState {
    /// `pending`, `active` or `expired`, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }
}

/// A silence. Times are ms since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// ID (a random UUID).
    pub id: String,
    /// All must match for an alert to be silenced.
    pub matchers: Vec<SilenceMatcher>,
    /// Start.
    pub starts_at: i64,
    /// End.
    pub ends_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Author.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// Its state at `now`.
    pub fn state(&self, now: i64) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Whether its matchers all match `labels` (sorted by name).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers
            .iter()
            .all(|m| m.compile().map(|c| c.matches(labels)).unwrap_or(false))
    }
}

/// A new silence or a change to one, as posted to the API.
#[derive(Debug, Clone)]
pub struct SilenceRequest {
    /// The silence to change; `None` creates one.
    pub id: Option<String>,
    /// Matchers.
    pub matchers: Vec<SilenceMatcher>,
    /// Start (a start in the past means now).
    pub starts_at: i64,
    /// End.
    pub ends_at: i64,
    /// Author.
    pub created_by: String,
    /// Comment.
    pub comment: String,
}

/// Why a silence was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum SilenceError {
    /// The request is invalid (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// No silence with this ID.
    #[error("silence {0} not found")]
    NotFound(String),
    /// Expiring a silence that already expired.
    #[error("silence {0} already expired")]
    AlreadyExpired(String),
    /// The store is full.
    #[error("too many silences (at most {MAX_SILENCES})")]
    Full,
}

/// Checks a request as Alertmanager's `validateSilence` does.
fn validate(req: &SilenceRequest, now: i64) -> Result<(), SilenceError> {
    let inv = |m: String| Err(SilenceError::Invalid(m));
    if req.matchers.is_empty() {
        return inv("at least one matcher is required".into());
    }
    if req.matchers.len() > MAX_MATCHERS {
        return inv(format!("at most {MAX_MATCHERS} matchers"));
    }
    let mut all_match_empty = true;
    for m in &req.matchers {
        let c = m.compile().map_err(SilenceError::Invalid)?;
        if !c.matches(&Labels::new()) {
            all_match_empty = false;
        }
    }
    if all_match_empty {
        return inv("at least one matcher must not match the empty string".into());
    }
    if req.ends_at <= req.starts_at {
        return inv("end time must be after start time".into());
    }
    if req.ends_at <= now {
        return inv("end time can't be in the past".into());
    }
    if req.created_by.trim().is_empty() {
        return inv("createdBy must be set".into());
    }
    if req.comment.trim().is_empty() {
        return inv("comment must be set".into());
    }
    if req.created_by.len() > MAX_TEXT || req.comment.len() > MAX_TEXT {
        return inv(format!("createdBy and comment are limited to {MAX_TEXT} bytes"));
    }
    Ok(())
}

/// Whether `prev` can take the change in place (Alertmanager's
/// `canUpdate`): same matchers; a pending silence may change anything
/// else; an active one keeps its start and may not end in the past; an
/// expired one never changes.
fn can_update(prev: &Silence, req: &SilenceRequest, now: i64) -> bool {
    if prev.matchers != req.matchers {
        return false;
    }
    match prev.state(now) {
        SilenceState::Pending => req.starts_at >= now,
        SilenceState::Active => req.starts_at == prev.starts_at && req.ends_at >= now,
        SilenceState::Expired => false,
    }
}

/// A random (version 4) UUID.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: time and a counter still give unique IDs.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let t = csoc_common::time::now_ms() as u64;
        b[..8].copy_from_slice(&t.to_be_bytes());
        b[8..].copy_from_slice(&N.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_be_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The silences, kept in a file.
pub struct Silences {
    path: Option<PathBuf>,
    items: Mutex<Vec<Silence>>,
}

impl Silences {
    /// Silences kept only in memory (tests).
    pub fn in_memory() -> Self {
        Silences {
            path: None,
            items: Mutex::new(Vec::new()),
        }
    }

    /// Reads the silences file. A missing file is an empty store; one that
    /// cannot be parsed is renamed to `<file>.corrupt` (logged) and the
    /// store starts empty rather than refusing to start.
    pub fn open(path: &Path) -> Self {
        let items = match std::fs::read_to_string(path) {
            Ok(t) => match serde_json::from_str::<Vec<Silence>>(&t) {
                Ok(v) => v,
                Err(e) => {
                    let aside = path.with_extension("json.corrupt");
                    tracing::error!(path = %path.display(), error = %e, aside = %aside.display(),
                        "cannot parse the silences file; set aside, starting with no silences");
                    let _ = std::fs::rename(path, aside);
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the silences file; starting with no silences");
                Vec::new()
            }
        };
        Silences {
            path: Some(path.to_path_buf()),
            items: Mutex::new(items),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Silence>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, items: &[Silence]) {
        let Some(path) = &self.path else {
            return;
        };
        let res = serde_json::to_vec(items).map_err(std::io::Error::other).and_then(|b| {
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, b)?;
            std::fs::rename(&tmp, path)
        });
        if let Err(e) = res {
            tracing::error!(path = %path.display(), error = %e, "saving the silences failed");
        }
    }

    /// Every silence (expired ones within the retention), newest first.
    pub fn list(&self, now: i64) -> Vec<Silence> {
        let mut v: Vec<Silence> = self.lock().iter().filter(|s| s.ends_at + RETENTION_MS > now).cloned().collect();
        v.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// One silence.
    pub fn get(&self, id: &str) -> Option<Silence> {
        self.lock().iter().find(|s| s.id == id).cloned()
    }

    /// Creates or changes a silence; returns its ID (a new one when the
    /// change could not be made in place).
    pub fn set(&self, mut req: SilenceRequest, now: i64) -> Result<String, SilenceError> {
        if req.starts_at < now {
            req.starts_at = now;
        }
        let mut items = self.lock();
        let mut expire_prev = None;
        if let Some(id) = &req.id {
            let Some(i) = items.iter().position(|s| &s.id == id) else {
                return Err(SilenceError::NotFound(id.clone()));
            };
            // An active silence keeps its start when updated.
            if items[i].state(now) == SilenceState::Active && req.matchers == items[i].matchers {
                req.starts_at = items[i].starts_at;
            }
            validate(&req, now)?;
            if can_update(&items[i], &req, now) {
                let s = &mut items[i];
                s.starts_at = req.starts_at;
                s.ends_at = req.ends_at;
                s.created_by = req.created_by;
                s.comment = req.comment;
                s.updated_at = now;
                let id = s.id.clone();
                self.save(&items);
                return Ok(id);
            }
            expire_prev = Some(i);
        } else {
            validate(&req, now)?;
        }
        items.retain(|s| s.ends_at + RETENTION_MS > now);
        if items.len() >= MAX_SILENCES {
            return Err(SilenceError::Full);
        }
        if let Some(prev_id) = expire_prev.and_then(|_| req.id.clone())
            && let Some(p) = items.iter_mut().find(|s| s.id == prev_id)
        {
            expire(p, now);
        }
        let id = new_id();
        items.push(Silence {
            id: id.clone(),
            matchers: req.matchers,
            starts_at: req.starts_at,
            ends_at: req.ends_at,
            updated_at: now,
            created_by: req.created_by,
            comment: req.comment,
        });
        self.save(&items);
        Ok(id)
    }

    /// Expires a silence now.
    pub fn expire(&self, id: &str, now: i64) -> Result<(), SilenceError> {
        let mut items = self.lock();
        let Some(s) = items.iter_mut().find(|s| s.id == id) else {
            return Err(SilenceError::NotFound(id.to_string()));
        };
        if s.state(now) == SilenceState::Expired {
            return Err(SilenceError::AlreadyExpired(id.to_string()));
        }
        expire(s, now);
        self.save(&items);
        Ok(())
    }

    /// IDs of the active silences that match `labels` (sorted by name).
    pub fn silenced_by(&self, labels: &Labels, now: i64) -> Vec<String> {
        self.active(now).silenced_by(labels)
    }

    /// The silences active at `now`, compiled, to check many alerts.
    pub fn active(&self, now: i64) -> ActiveSilences {
        ActiveSilences(
            self.lock()
                .iter()
                .filter(|s| s.state(now) == SilenceState::Active)
                .filter_map(|s| {
                    let ms: Result<Vec<Matcher>, String> = s.matchers.iter().map(SilenceMatcher::compile).collect();
                    ms.ok().map(|ms| (s.id.clone(), ms))
                })
                .collect(),
        )
    }
}

/// Active silences with their compiled matchers.
pub struct ActiveSilences(Vec<(String, Vec<Matcher>)>);

impl ActiveSilences {
    /// IDs of those that match `labels` (sorted by name).
    pub fn silenced_by(&self, labels: &Labels) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, ms)| ms.iter().all(|m| m.matches(labels)))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

fn expire(s: &mut Silence, now: i64) {
    if s.state(now) == SilenceState::Pending {
        s.starts_at = now;
    }
    s.ends_at = now;
    s.updated_at = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(p: &[(&str, &str)]) -> Labels {
        let mut l: Labels = p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        l.sort();
        l
    }

    fn req(ms: &[&str], start: i64, end: i64) -> SilenceRequest {
        SilenceRequest {
            id: None,
            matchers: ms.iter().map(|m| parse_matcher(m).expect("matcher")).collect(),
            starts_at: start,
            ends_at: end,
            created_by: "ops".into(),
            comment: "maintenance".into(),
        }
    }

    #[test]
    fn matchers_parse_as_amtool_writes_them() {
        let m = parse_matcher("alertname=Gen3ServiceDown").expect("plain");
        assert_eq!(
            (m.name.as_str(), m.value.as_str(), m.is_regex, m.is_equal),
            ("alertname", "Gen3ServiceDown", false, true)
        );
        let m = parse_matcher(r#"commons=~"prod-.*""#).expect("regex");
        assert_eq!((m.value.as_str(), m.is_regex, m.is_equal), ("prod-.*", true, true));
        let m = parse_matcher("service!~fence|indexd").expect("neg regex");
        assert_eq!(m.op(), "!~");
        let m = parse_matcher(r#" team != "a \"b\"" "#).expect("neg");
        assert_eq!((m.name.as_str(), m.value.as_str(), m.op()), ("team", "a \"b\"", "!="));
        assert!(parse_matcher("novalue").is_err());
        assert!(parse_matcher("1bad=x").is_err());
        assert!(parse_matcher("a=~(").is_err());
    }

    #[test]
    fn equality_regex_and_negative_matchers_silence_like_alertmanager() {
        let s = Silences::in_memory();
        let id = s
            .set(
                req(
                    &["alertname=Down", "commons=~prod-.*", "service!=fence", "env!~test|dev"],
                    1000,
                    5000,
                ),
                1000,
            )
            .expect("created");
        let hit = labels(&[("alertname", "Down"), ("commons", "prod-a"), ("service", "indexd")]);
        assert_eq!(s.silenced_by(&hit, 2000), vec![id.clone()]);
        // Regex is anchored: "xprod-a" does not match prod-.*.
        assert!(
            s.silenced_by(&labels(&[("alertname", "Down"), ("commons", "xprod-a")]), 2000)
                .is_empty()
        );
        assert!(
            s.silenced_by(&labels(&[("alertname", "Down"), ("commons", "prod-a"), ("service", "fence")]), 2000)
                .is_empty()
        );
        assert!(
            s.silenced_by(&labels(&[("alertname", "Down"), ("commons", "prod-a"), ("env", "dev")]), 2000)
                .is_empty()
        );
        // Not yet, and no longer.
        assert!(s.silenced_by(&hit, 999).is_empty());
        assert!(s.silenced_by(&hit, 5000).is_empty());
    }

    #[test]
    fn states_updates_and_expiry() {
        let s = Silences::in_memory();
        // Pending: starts later.
        let id = s.set(req(&["alertname=Down"], 10_000, 20_000), 1000).expect("created");
        assert_eq!(s.get(&id).map(|x| x.state(1000)), Some(SilenceState::Pending));
        let hit = labels(&[("alertname", "Down")]);
        assert!(s.silenced_by(&hit, 1000).is_empty());
        assert_eq!(s.silenced_by(&hit, 10_000), vec![id.clone()]);
        // Active, end extended in place: same ID.
        let mut r = req(&["alertname=Down"], 10_000, 30_000);
        r.id = Some(id.clone());
        assert_eq!(s.set(r, 12_000).expect("updated"), id);
        assert_eq!(s.get(&id).map(|x| x.ends_at), Some(30_000));
        // Matchers changed: the old one expires, a new one is made.
        let mut r = req(&["alertname=Other"], 12_000, 30_000);
        r.id = Some(id.clone());
        let id2 = s.set(r, 13_000).expect("replaced");
        assert_ne!(id2, id);
        assert_eq!(s.get(&id).map(|x| x.state(13_000)), Some(SilenceState::Expired));
        // Expire.
        s.expire(&id2, 14_000).expect("expired");
        assert_eq!(s.expire(&id2, 15_000), Err(SilenceError::AlreadyExpired(id2.clone())));
        assert_eq!(s.expire("nosuch", 15_000), Err(SilenceError::NotFound("nosuch".into())));
        assert!(s.silenced_by(&labels(&[("alertname", "Other")]), 14_000).is_empty());
        // Updating an unknown ID.
        let mut r = req(&["alertname=Down"], 0, 90_000);
        r.id = Some("nosuch".into());
        assert!(matches!(s.set(r, 15_000), Err(SilenceError::NotFound(_))));
        // Expired silences are dropped after the retention.
        assert_eq!(s.list(15_000).len(), 2);
        assert!(s.list(14_000 + RETENTION_MS + 1).is_empty());
    }

    #[test]
    fn invalid_silences_are_refused_with_a_reason() {
        let s = Silences::in_memory();
        let msg = |r: SilenceRequest| match s.set(r, 1000) {
            Err(SilenceError::Invalid(m)) => m,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert!(msg(req(&[], 1000, 2000)).contains("at least one matcher"));
        assert!(msg(req(&["a=~.*"], 1000, 2000)).contains("empty string"));
        assert!(msg(req(&["a=b"], 1000, 500)).contains("after start"));
        // A start in the past means now: an end before now is refused.
        assert!(msg(req(&["a=b"], 0, 900)).contains("after start"));
        let mut r = req(&["a=b"], 1000, 2000);
        r.comment = " ".into();
        assert!(msg(r).contains("comment"));
    }

    #[test]
    fn silences_survive_a_restart_and_a_corrupt_file_is_set_aside() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("silences.json");
        let s = Silences::open(&p);
        let id = s.set(req(&["alertname=Down"], 1000, 9_000_000_000_000), 1000).expect("created");
        let again = Silences::open(&p);
        assert_eq!(again.get(&id), s.get(&id));
        std::fs::write(&p, b"{not json").expect("write");
        let broken = Silences::open(&p);
        assert!(broken.list(1000).is_empty());
        assert!(d.path().join("silences.json.corrupt").exists());
    }

    #[test]
    fn ids_are_uuids() {
        let a = new_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, new_id());
    }
}
