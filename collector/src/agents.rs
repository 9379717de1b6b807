//! The agent registry: every agent the collector knows, by (commons, agent
//! name), with its host name, version, first and last contact and whether
//! a stream of it is open now. It is what `GET /api/v1/agents` lists and
//! what `csoc_collector_agent_last_seen_timestamp_seconds{commons,agent}`
//! exports (the series `CsocAgentSilent` pages on).
//!
//! **Forgetting.** An agent with no open stream whose last contact is older
//! than `agent_forget_after` (default 7d; 0 = never) is dropped by a sweep
//! that runs every quarter of that setting (at least every second, at most
//! every minute), and `DELETE /api/v1/admin/agents/{commons}/{agent}` drops
//! one at once. A dropped agent is no longer listed, its
//! `csoc_collector_agent_*` series leave `/metrics` (the self-scrape then
//! writes staleness markers for them, so alerts on them end at the next
//! evaluation), and the hooks given to [`AgentRegistry::on_forget`] free
//! what other components keep per agent (the ingest limiter's state). An
//! agent that connects again is a new entry.
//!
//! Invariant: an entry with an open stream is never dropped (the sweep skips
//! it and the admin call refuses it), so an open stream always has its
//! entry.
//!
//! **Durability.** The registry is saved in `<data_dir>/agents.json`
//! (atomically: temporary file, fsync, rename) at every sweep when it
//! changed, at once after a removal or a forgetting, and at shutdown. At
//! start the file says which agents exist; their last contact is raised to
//! what storage holds of the self-scraped last-seen series (newer than the
//! file if the collector crashed between saves). Without the file (a data
//! directory from before the registry), the agents are those whose last-seen
//! series storage holds within `agent_forget_after` (or the retention, when
//! agents are never forgotten). A forgotten or removed agent therefore stays
//! forgotten across restarts. A file that cannot be read or parsed is
//! reported and replaced at the next save by what storage says.
//!
//! ```json
//! {"version":1,"agents":[{"commons":"alpha","agent":"alpha-agent","hostname":"alpha-agent-6d9f-x2x4q",
//!   "version":"0.1.0","first_seen_ms":1735689600000,"last_seen_ms":1735693200000}]}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use csoc_common::labels::Labels;
use csoc_common::time::now_ms;

/// The registry's file in the data directory.
pub const STATE_FILE: &str = "agents.json";

/// Default of `agent_forget_after`.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(7 * 86_400);

const VERSION: u32 = 1;

/// Errors of the registry's file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentsError {
    /// The file exists but cannot be read.
    #[error("reading the agent registry {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a registry this collector understands.
    #[error("the agent registry {path} is not valid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing the file failed.
    #[error("saving the agent registry {path}: {source}")]
    Save {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One known agent, as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Its commons (from its credentials).
    pub commons: String,
    /// Its name (`Hello.agent_name`, else its host name).
    pub agent: String,
    /// The host (pod) it last connected from.
    #[serde(default)]
    pub hostname: String,
    /// Its software version at its last connection.
    #[serde(default)]
    pub version: String,
    /// First contact, ms since the epoch.
    pub first_seen_ms: i64,
    /// Last message received, ms since the epoch.
    pub last_seen_ms: i64,
    /// Streams of this agent open now (not saved).
    #[serde(skip)]
    pub streams: usize,
    /// Central config: what the agent said of it (not saved).
    #[serde(skip)]
    pub config: AgentConfigState,
}

/// What an agent last said about its central config and its spool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentConfigState {
    /// The central config version it runs (0: none, or not known yet).
    pub running_version: u64,
    /// SHA-256 of the config it runs ("" none).
    pub running_sha256: String,
    /// The version of its last answer to a push.
    pub answered_version: u64,
    /// `applied`, `rejected`, `pending` (pushed, no answer yet) or ""
    /// (nothing pushed on its current stream).
    pub status: String,
    /// Why it rejected the last push.
    pub error: String,
    /// Batches in its spool not yet acknowledged (from Hello and heartbeats).
    pub spool_batches: u64,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    agents: Vec<AgentRecord>,
}

/// What [`AgentRegistry::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Removed.
    Removed,
    /// No such agent.
    Unknown,
    /// Not removed: it has this many streams open (it would be back with
    /// its next message).
    Connected(usize),
}

/// Frees what another component keeps about an agent (commons, agent).
pub type ForgetHook = Box<dyn Fn(&str, &str) + Send + Sync>;

/// commons → agent → record.
type Agents = BTreeMap<String, BTreeMap<String, AgentRecord>>;

/// The registry, shared by ingest (contacts), the API (list, remove) and
/// its own sweep task.
pub struct AgentRegistry {
    agents: Mutex<Agents>,
    last_seen: Family<Labels, Gauge<f64, AtomicU64>>,
    forget_after_ms: i64,
    path: Option<PathBuf>,
    hooks: RwLock<Vec<ForgetHook>>,
    /// The last body written (serialises saves; skips unchanged ones).
    saved: Mutex<Vec<u8>>,
    /// `--agent-config-dir`, when given.
    config_store: std::sync::OnceLock<Arc<crate::agent_config::AgentConfigStore>>,
    /// `csoc_collector_agent_config_status{commons,agent,status}`.
    config_status: Family<Labels, Gauge>,
}

impl std::fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRegistry")
            .field("forget_after_ms", &self.forget_after_ms)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn labels(commons: &str, agent: &str) -> Labels {
    vec![
        ("commons".to_string(), commons.to_string()),
        ("agent".to_string(), agent.to_string()),
    ]
}

fn status_labels(commons: &str, agent: &str, status: &str) -> Labels {
    let mut l = labels(commons, agent);
    l.push(("status".to_string(), status.to_string()));
    l
}

fn ms_of(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl AgentRegistry {
    /// An empty registry kept in memory only, exporting last contacts in
    /// `last_seen`; agents silent for longer than `forget_after` (zero:
    /// never) are forgotten by [`sweep`](Self::sweep).
    pub fn new(forget_after: Duration, last_seen: Family<Labels, Gauge<f64, AtomicU64>>) -> Self {
        AgentRegistry {
            agents: Mutex::default(),
            last_seen,
            forget_after_ms: ms_of(forget_after),
            path: None,
            hooks: RwLock::default(),
            saved: Mutex::default(),
            config_store: std::sync::OnceLock::new(),
            config_status: Family::default(),
        }
    }

    /// Exports each agent's central config status in `family`
    /// (`csoc_collector_agent_config_status`: 1 for the current status).
    pub fn with_config_status(mut self, family: Family<Labels, Gauge>) -> Self {
        self.config_status = family;
        self
    }

    /// Sets the central config store (`--agent-config-dir`); once.
    pub fn set_config_store(&self, store: Arc<crate::agent_config::AgentConfigStore>) {
        let _ = self.config_store.set(store);
    }

    /// The central config store, if the collector has one.
    pub fn config_store(&self) -> Option<&Arc<crate::agent_config::AgentConfigStore>> {
        self.config_store.get()
    }

    /// Records what an agent said (or what was pushed to it) about its
    /// central config; `f` edits its state. Updates the status metric.
    pub fn update_config(&self, commons: &str, agent: &str, f: impl FnOnce(&mut AgentConfigState)) {
        let mut agents = self.lock();
        let r = entry(&mut agents, commons, agent, now_ms());
        let old = r.config.status.clone();
        f(&mut r.config);
        let new = r.config.status.clone();
        drop(agents);
        if old != new {
            if !old.is_empty() {
                self.config_status.remove(&status_labels(commons, agent, &old));
            }
            if !new.is_empty() {
                self.config_status.get_or_create(&status_labels(commons, agent, &new)).set(1);
            }
        }
    }

    /// Saves to `path` (see the module doc).
    pub fn with_file(mut self, path: PathBuf) -> Self {
        self.path = Some(path);
        self
    }

    /// `agent_forget_after` in ms (0: never).
    pub fn forget_after_ms(&self) -> i64 {
        self.forget_after_ms
    }

    fn lock(&self) -> MutexGuard<'_, Agents> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `hook` with (commons, agent) for every agent forgotten or
    /// removed from now on.
    pub fn on_forget(&self, hook: ForgetHook) {
        self.hooks.write().unwrap_or_else(|p| p.into_inner()).push(hook);
    }

    /// Reads the file (when there is one). `Ok(false)`: no file.
    pub fn load(&self) -> Result<bool, AgentsError> {
        let Some(path) = &self.path else { return Ok(false) };
        let body = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(AgentsError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        let invalid = |message: String| AgentsError::Invalid {
            path: path.clone(),
            message,
        };
        let saved: Saved = serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
        if saved.version != VERSION {
            return Err(invalid(format!(
                "unknown version {} (this collector writes {VERSION})",
                saved.version
            )));
        }
        let mut agents = self.lock();
        for r in saved.agents {
            self.gauge(&r.commons, &r.agent, r.last_seen_ms);
            agents.entry(r.commons.clone()).or_default().insert(r.agent.clone(), r);
        }
        drop(agents);
        *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = body;
        Ok(true)
    }

    /// Start-up: the file, then storage's last-seen series (see the module
    /// doc). `from_storage(mint_ms)` gives the latest last-seen value, in
    /// Unix seconds, of each (commons, agent) with samples since `mint_ms`.
    /// `seed_window` bounds what storage is asked for when there is no file.
    /// Returns the number of agents known; agents already past
    /// `agent_forget_after` are forgotten at once.
    pub fn restore(&self, now: i64, seed_window: Duration, from_storage: impl FnOnce(i64) -> HashMap<(String, String), f64>) -> usize {
        let had_file = match self.load() {
            Ok(had) => had,
            Err(e) => {
                tracing::error!(error = %e, "the agent registry file is unusable: the agents are read back from storage, so agents removed earlier may be listed again (remove them again)");
                false
            }
        };
        // With the file, only what happened since its last save (a minute at
        // most, unless the collector crashed) is newer in storage.
        let window = if had_file { 3_600_000 } else { ms_of(seed_window) };
        let seen = from_storage(now.saturating_sub(window));
        {
            let mut agents = self.lock();
            for ((c, a), secs) in seen {
                let ms = (secs * 1000.0).round() as i64;
                if had_file {
                    if let Some(r) = agents.get_mut(&c).and_then(|m| m.get_mut(&a))
                        && r.last_seen_ms < ms
                    {
                        r.last_seen_ms = ms;
                        self.gauge(&c, &a, ms);
                    }
                } else {
                    self.gauge(&c, &a, ms);
                    let r = AgentRecord {
                        commons: c.clone(),
                        agent: a.clone(),
                        hostname: String::new(),
                        version: String::new(),
                        first_seen_ms: ms,
                        last_seen_ms: ms,
                        streams: 0,
                        config: AgentConfigState::default(),
                    };
                    agents.entry(c).or_default().insert(a, r);
                }
            }
        }
        self.sweep(now);
        self.lock().values().map(BTreeMap::len).sum()
    }

    fn gauge(&self, commons: &str, agent: &str, ms: i64) {
        self.last_seen.get_or_create(&labels(commons, agent)).set(ms as f64 / 1000.0);
    }

    /// A stream of the agent opened (after its Hello).
    pub fn connected(&self, commons: &str, agent: &str, hostname: &str, version: &str) {
        let now = now_ms();
        let mut agents = self.lock();
        let r = entry(&mut agents, commons, agent, now);
        r.streams += 1;
        r.last_seen_ms = r.last_seen_ms.max(now);
        r.hostname = printable(hostname);
        r.version = printable(version);
        drop(agents);
        self.gauge(commons, agent, now);
    }

    /// A stream of the agent closed.
    pub fn disconnected(&self, commons: &str, agent: &str) {
        let mut agents = self.lock();
        if let Some(r) = agents.get_mut(commons).and_then(|m| m.get_mut(agent)) {
            r.streams = r.streams.saturating_sub(1);
        }
    }

    /// A message from the agent now.
    pub fn seen(&self, commons: &str, agent: &str) {
        self.seen_at(commons, agent, now_ms());
    }

    /// A message from the agent at `now` (ms).
    pub fn seen_at(&self, commons: &str, agent: &str, now: i64) {
        let mut agents = self.lock();
        let r = entry(&mut agents, commons, agent, now);
        r.last_seen_ms = r.last_seen_ms.max(now);
        drop(agents);
        self.gauge(commons, agent, now);
    }

    /// The agents `scope` may see (all without one), by commons and name.
    pub fn list(&self, scope: Option<&str>) -> Vec<AgentRecord> {
        let agents = self.lock();
        agents
            .iter()
            .filter(|(c, _)| scope.is_none_or(|s| s == c.as_str()))
            .flat_map(|(_, m)| m.values().cloned())
            .collect()
    }

    /// When an agent last seen at `last_seen_ms`, with no stream open, will
    /// be forgotten (None: never).
    pub fn forget_at(&self, r: &AgentRecord) -> Option<i64> {
        (self.forget_after_ms > 0 && r.streams == 0).then(|| r.last_seen_ms.saturating_add(self.forget_after_ms))
    }

    /// Drops one agent now and saves the registry (`Connected`: refused).
    pub fn remove(&self, commons: &str, agent: &str) -> Result<Removal, AgentsError> {
        let mut agents = self.lock();
        let Some(m) = agents.get_mut(commons) else {
            return Ok(Removal::Unknown);
        };
        match m.get(agent) {
            None => return Ok(Removal::Unknown),
            Some(r) if r.streams > 0 => return Ok(Removal::Connected(r.streams)),
            Some(_) => {}
        }
        m.remove(agent);
        if m.is_empty() {
            agents.remove(commons);
        }
        drop(agents);
        self.dropped(commons, agent);
        self.save()?;
        Ok(Removal::Removed)
    }

    /// Forgets every agent without an open stream silent for longer than
    /// `agent_forget_after` at `now` (ms); returns them.
    pub fn sweep(&self, now: i64) -> Vec<(String, String)> {
        if self.forget_after_ms == 0 {
            return Vec::new();
        }
        let cutoff = now.saturating_sub(self.forget_after_ms);
        let mut gone = Vec::new();
        {
            let mut agents = self.lock();
            for (c, m) in agents.iter_mut() {
                m.retain(|a, r| {
                    let keep = r.streams > 0 || r.last_seen_ms >= cutoff;
                    if !keep {
                        tracing::info!(commons = %c, agent = %a, last_seen = %crate::notify::rfc3339(r.last_seen_ms), "forgot an agent silent for longer than agent_forget_after");
                        gone.push((c.clone(), a.clone()));
                    }
                    keep
                });
            }
            agents.retain(|_, m| !m.is_empty());
        }
        for (c, a) in &gone {
            self.dropped(c, a);
        }
        if !gone.is_empty()
            && let Err(e) = self.save()
        {
            tracing::error!(error = %e, "the forgotten agents may come back after a restart");
        }
        gone
    }

    fn dropped(&self, commons: &str, agent: &str) {
        self.last_seen.remove(&labels(commons, agent));
        for st in ["applied", "rejected", "pending"] {
            self.config_status.remove(&status_labels(commons, agent, st));
        }
        if let Some(s) = self.config_store() {
            s.forget(commons, agent);
        }
        for h in self.hooks.read().unwrap_or_else(|p| p.into_inner()).iter() {
            h(commons, agent);
        }
    }

    /// Writes the file if there is one and it changed.
    pub fn save(&self) -> Result<(), AgentsError> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut last = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        let saved = Saved {
            version: VERSION,
            agents: self.list(None),
        };
        let body = serde_json::to_vec(&saved).map_err(|e| AgentsError::Save {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        if body == *last {
            return Ok(());
        }
        write_atomic(path, &body).map_err(|source| AgentsError::Save {
            path: path.clone(),
            source,
        })?;
        *last = body;
        Ok(())
    }

    /// How often [`run`](Self::run) sweeps and saves.
    pub fn sweep_interval(&self) -> Duration {
        let quarter = Duration::from_millis(u64::try_from(self.forget_after_ms / 4).unwrap_or(0));
        if quarter.is_zero() {
            Duration::from_secs(60)
        } else {
            quarter.clamp(Duration::from_secs(1), Duration::from_secs(60))
        }
    }

    /// Sweeps and saves every [`sweep_interval`](Self::sweep_interval)
    /// until `stop`, then saves a last time.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.sweep_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.sweep(now_ms());
            if let Err(e) = self.save() {
                tracing::warn!(error = %e, "the agent registry will be saved again at the next sweep");
            }
        }
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "the agents' last contacts of the last minute are lost");
        }
    }
}

/// What an agent says of itself, as listed: printable, at most 256 characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(256).collect()
}

/// The entry of (commons, agent), created at `now` if new. (Two small
/// allocations per message: batches and heartbeats come at most a few times
/// a second per agent.)
fn entry<'a>(agents: &'a mut Agents, commons: &str, agent: &str, now: i64) -> &'a mut AgentRecord {
    agents
        .entry(commons.to_string())
        .or_default()
        .entry(agent.to_string())
        .or_insert_with(|| AgentRecord {
            commons: commons.to_string(),
            agent: agent.to_string(),
            hostname: String::new(),
            version: String::new(),
            first_seen_ms: now,
            last_seen_ms: now,
            streams: 0,
            config: AgentConfigState::default(),
        })
}

fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests;
