//! The source's counters (cumulative since its state began), the distinct
//! user windows, and their conversion to a [`Frame`].

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::parse::{self, Record};
use crate::model::{Frame, MetricKind};

/// Upper bounds of the latency histogram, in milliseconds (Prometheus's
/// default buckets plus 30 s, 60 s and 300 s for websockets and the 400 s
/// `proxy_read_timeout`).
pub const BUCKETS_MS: [u64; 14] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000];
const BUCKET_LABELS: [&str; 15] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "300", "+Inf",
];

/// Methods kept as `method` label values; anything else is `other`.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE", "other",
];

/// Label value for a service beyond `max_services`, an idp beyond
/// `MAX_IDPS`.
pub const OVERFLOW: &str = "other";
const MAX_IDPS: usize = 32;
/// Distinct (idp, upstream_idp, institution) keys of `gen3_logins_total`
/// with an institution; more become institution `other`.
const MAX_INSTITUTIONS: usize = 32;
/// Login starts remembered until their callback (by session).
const MAX_PENDING_LOGINS: usize = 4096;
/// Separates idp, upstream idp and institution in a `logins` key.
const SEP: char = '\u{1f}';

/// Windows of `gen3_active_users`, seconds.
pub const WINDOWS: [(&str, i64); 3] = [("5m", 300), ("1h", 3600), ("1d", 86_400)];

/// Per-service counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceStats {
    /// (status, method index) → requests.
    pub requests: BTreeMap<String, u64>,
    /// Histogram bucket counts (not cumulative), last = +Inf.
    pub buckets: Vec<u64>,
    /// Sum of durations in milliseconds (nginx logs ms resolution: exact).
    pub sum_ms: u64,
    /// Response body bytes.
    pub bytes: u64,
    #[serde(skip)]
    fast: HashMap<(u16, u8), u64>,
}

impl ServiceStats {
    fn fold(&mut self) {
        for ((code, m), n) in self.fast.drain() {
            *self.requests.entry(format!("{code} {}", METHODS[m as usize])).or_default() += n;
        }
    }

    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Everything counted, as saved in the state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    /// By service label.
    pub services: BTreeMap<String, ServiceStats>,
    /// Successful login callbacks by idp; a login that started with fence's
    /// `idp`/`shib_idp` parameters is keyed `idp␟upstream_idp␟institution`
    /// (␟ = U+001F).
    pub logins: BTreeMap<String, u64>,
    /// Signed download URLs issued (all kinds; kept for older state files).
    pub downloads: u64,
    /// Signed download URLs issued by kind (`drs`, `presigned`).
    #[serde(default)]
    pub downloads_by_kind: BTreeMap<String, u64>,
    /// Signed upload URLs issued.
    #[serde(default)]
    pub uploads: u64,
    /// Login starts with `idp`/`shib_idp` parameters by session id, waiting
    /// for their callback (not saved: a login straddling a restart counts
    /// without institution).
    #[serde(skip)]
    pub pending_logins: HashMap<String, (String, String)>,
    /// Lines by result: ok, malformed, too_long.
    pub lines: BTreeMap<String, u64>,
    /// Rotations and truncations seen: rotated, truncated.
    pub files: BTreeMap<String, u64>,
    /// Distinct users: FNV-1a hash of user_id → last log time (Unix s).
    pub users: UserWindow,
}

/// Distinct authenticated users by last-seen log time, at most `cap`
/// entries: when full, entries older than the largest window go first, then
/// the least recently seen. Memory ≈ 40 bytes per entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UserWindow {
    /// (hash, last seen).
    pub seen: Vec<(u64, i64)>,
    /// Newest record time.
    pub newest: i64,
    #[serde(skip)]
    map: HashMap<u64, i64>,
    #[serde(skip)]
    loaded: bool,
}

impl UserWindow {
    fn ensure(&mut self) {
        if !self.loaded {
            self.map = self.seen.drain(..).collect();
            self.loaded = true;
        }
    }

    /// Records `user` seen at `t`.
    pub fn see(&mut self, user: &str, t: i64, cap: usize) {
        self.ensure();
        let h = fnv1a(user.as_bytes());
        self.newest = self.newest.max(t);
        let e = self.map.entry(h).or_insert(t);
        *e = (*e).max(t);
        if self.map.len() > cap {
            self.evict(cap);
        }
    }

    fn evict(&mut self, cap: usize) {
        let horizon = self.newest - WINDOWS[2].1;
        self.map.retain(|_, t| *t > horizon);
        if self.map.len() > cap {
            // Drop the least recently seen tenth (amortised).
            let mut ts: Vec<i64> = self.map.values().copied().collect();
            let idx = (self.map.len() - cap * 9 / 10).saturating_sub(1).min(ts.len() - 1);
            ts.select_nth_unstable(idx);
            let cut = ts[idx];
            self.map.retain(|_, t| *t > cut);
        }
    }

    /// Distinct users seen in `(end - window, end]`.
    pub fn count(&mut self, end: i64, window: i64) -> usize {
        self.ensure();
        self.map.values().filter(|&&t| t > end - window && t <= end).count()
    }

    fn prepare_save(&mut self) {
        self.ensure();
        let horizon = self.newest - WINDOWS[2].1;
        self.map.retain(|_, t| *t > horizon);
        self.seen = self.map.iter().map(|(h, t)| (*h, *t)).collect();
        self.seen.sort_unstable();
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Limits on label values.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Distinct `service` values; more become `other`.
    pub max_services: usize,
    /// Tracked distinct users.
    pub max_users: usize,
}

impl Counters {
    /// Counts one line's result.
    pub fn line(&mut self, result: &str) {
        if let Some(n) = self.lines.get_mut(result) {
            *n += 1;
        } else {
            self.lines.insert(result.to_string(), 1);
        }
    }

    /// Counts one record.
    pub fn record(&mut self, r: &Record<'_>, lim: Limits) {
        let svc = parse::service_label(&r.proxy_service, &r.http_upstream);
        let svc = if self.services.contains_key(svc) || self.services.len() < lim.max_services {
            svc
        } else {
            OVERFLOW
        };
        if !self.services.contains_key(svc) {
            self.services.insert(
                svc.to_string(),
                ServiceStats {
                    buckets: vec![0; BUCKETS_MS.len() + 1],
                    ..Default::default()
                },
            );
        }
        let Some(s) = self.services.get_mut(svc) else { return };
        let m = METHODS.iter().position(|m| *m == r.http_verb).unwrap_or(METHODS.len() - 1) as u8;
        *s.fast.entry((r.http_status_code, m)).or_default() += 1;
        let ms = if r.response_secs.is_finite() && r.response_secs > 0.0 {
            (r.response_secs * 1000.0).round() as u64
        } else {
            0
        };
        let b = BUCKETS_MS.iter().position(|&le| ms <= le).unwrap_or(BUCKETS_MS.len());
        if s.buckets.len() != BUCKETS_MS.len() + 1 {
            s.buckets.resize(BUCKETS_MS.len() + 1, 0);
        }
        s.buckets[b] += 1;
        s.sum_ms = s.sum_ms.saturating_add(ms);
        s.bytes = s.bytes.saturating_add(r.network_bytes_write);
        if r.http_request.starts_with("/user/login/") {
            let sid = r.session_id.as_ref();
            if let Some(p) = parse::login_start_params(&r.http_verb, &r.http_request) {
                if self.pending_logins.len() >= MAX_PENDING_LOGINS && !self.pending_logins.contains_key(sid) {
                    // Abandoned starts pile up here; forgetting them only
                    // drops the institution of logins in flight.
                    self.pending_logins.clear();
                }
                self.pending_logins.insert(sid.to_string(), p);
            } else if let Some(idp) = parse::login_idp(&r.http_verb, &r.http_request, r.http_status_code) {
                let started = self.pending_logins.remove(sid);
                self.login(idp, started);
            } else {
                // A failed callback or a start without parameters ends
                // (replaces) the session's attempt.
                self.pending_logins.remove(sid);
            }
        }
        if let Some(kind) = parse::download_kind(&r.http_verb, &r.http_request, r.http_status_code) {
            self.downloads += 1;
            *self.downloads_by_kind.entry(kind.to_string()).or_default() += 1;
        }
        if parse::is_upload(&r.http_verb, &r.http_request, r.http_status_code) {
            self.uploads += 1;
        }
        if !r.user_id.starts_with("uid:null")
            && let Some(t) = parse::parse_time(&r.date_access)
        {
            self.users.see(&r.user_id, t, lim.max_users);
        }
    }

    /// Counts one successful login of `idp`, with the `(upstream_idp,
    /// institution)` its start carried. Bounded: 32 idps (then `other`),
    /// 32 keys with an institution (then upstream and institution `other`).
    fn login(&mut self, idp: &str, started: Option<(String, String)>) {
        let idp = if self.logins.keys().any(|k| k.split(SEP).next() == Some(idp)) || self.idps() < MAX_IDPS {
            idp
        } else {
            OVERFLOW
        };
        let key = match started {
            None => idp.to_string(),
            Some((up, inst)) => {
                let key = format!("{idp}{SEP}{up}{SEP}{inst}");
                let n = self.logins.keys().filter(|k| k.contains(SEP)).count();
                if self.logins.contains_key(&key) || n < MAX_INSTITUTIONS {
                    key
                } else {
                    format!("{idp}{SEP}{OVERFLOW}{SEP}{OVERFLOW}")
                }
            }
        };
        *self.logins.entry(key).or_default() += 1;
    }

    /// Distinct idps counted.
    fn idps(&self) -> usize {
        let mut v: Vec<&str> = self.logins.keys().filter_map(|k| k.split(SEP).next()).collect();
        v.dedup();
        v.len()
    }

    /// Successful logins by idp alone (the institution keys summed).
    pub fn logins_by_idp(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (k, n) in &self.logins {
            *m.entry(k.split(SEP).next().unwrap_or(k).to_string()).or_default() += n;
        }
        m
    }

    /// Folds the fast per-line maps into the saved form.
    pub fn settle(&mut self) {
        for s in self.services.values_mut() {
            s.fold();
        }
        self.users.prepare_save();
    }

    /// Requests by (service, code, method).
    pub fn requests(&mut self) -> Vec<(String, String, String, u64)> {
        self.settle();
        let mut v = Vec::new();
        for (svc, s) in &self.services {
            for (k, n) in &s.requests {
                let (code, method) = k.split_once(' ').unwrap_or((k.as_str(), "other"));
                v.push((svc.clone(), code.to_string(), method.to_string(), *n));
            }
        }
        v
    }

    /// The frame: every series at `ts` (ms); active users end at
    /// `users_end` (Unix s).
    pub fn frame(&mut self, source: &str, job: &str, ts: i64, users_end: i64) -> Frame {
        self.settle();
        let mut f = Frame::new(source);
        f.meta(
            "gen3_http_requests_total",
            MetricKind::Counter,
            "Requests through revproxy, from its access log.",
            "",
        );
        f.meta(
            "gen3_http_request_duration_seconds",
            MetricKind::Histogram,
            "Histogram of revproxy request durations ($request_time).",
            "seconds",
        );
        f.meta(
            "gen3_http_response_bytes_total",
            MetricKind::Counter,
            "Response body bytes sent by revproxy.",
            "bytes",
        );
        f.meta(
            "gen3_logins_total",
            MetricKind::Counter,
            "Successful login callbacks (3xx) by idp; upstream_idp and institution from fence's idp and shib_idp parameters of the login start.",
            "",
        );
        f.meta(
            "gen3_downloads_total",
            MetricKind::Counter,
            "Signed download URLs issued, by kind (drs: GA4GH DRS access; presigned: /user/data/download).",
            "",
        );
        f.meta(
            "gen3_uploads_total",
            MetricKind::Counter,
            "Signed upload URLs issued (/user/data/upload, multipart part URLs).",
            "",
        );
        f.meta(
            "gen3_active_users",
            MetricKind::Gauge,
            "Distinct authenticated users in the window.",
            "",
        );
        f.meta(
            "gen3_revproxy_log_lines_total",
            MetricKind::Counter,
            "Access log lines read, by result (ok, malformed, too_long).",
            "",
        );
        f.meta(
            "gen3_revproxy_log_file_changes_total",
            MetricKind::Counter,
            "Rotations and truncations of the access log seen.",
            "",
        );
        for (svc, s) in &self.services {
            let sv = svc.as_str();
            for (k, n) in &s.requests {
                let (code, method) = k.split_once(' ').unwrap_or((k.as_str(), "other"));
                f.push(
                    "gen3_http_requests_total",
                    &[("job", job), ("service", sv), ("code", code), ("method", method)],
                    ts,
                    *n as f64,
                );
            }
            let mut cum = 0;
            for (i, le) in BUCKET_LABELS.iter().enumerate() {
                cum += s.buckets.get(i).copied().unwrap_or(0);
                f.push(
                    "gen3_http_request_duration_seconds_bucket",
                    &[("job", job), ("service", sv), ("le", le)],
                    ts,
                    cum as f64,
                );
            }
            f.push(
                "gen3_http_request_duration_seconds_sum",
                &[("job", job), ("service", sv)],
                ts,
                s.sum_ms as f64 / 1000.0,
            );
            f.push(
                "gen3_http_request_duration_seconds_count",
                &[("job", job), ("service", sv)],
                ts,
                s.count() as f64,
            );
            f.push(
                "gen3_http_response_bytes_total",
                &[("job", job), ("service", sv)],
                ts,
                s.bytes as f64,
            );
        }
        for (key, n) in &self.logins {
            let mut parts = key.split(SEP);
            let idp = parts.next().unwrap_or(key);
            match (parts.next(), parts.next()) {
                (Some(up), Some(inst)) => {
                    let mut l = vec![("job", job), ("idp", idp)];
                    if !up.is_empty() {
                        l.push(("upstream_idp", up));
                    }
                    if !inst.is_empty() {
                        l.push(("institution", inst));
                    }
                    f.push("gen3_logins_total", &l, ts, *n as f64);
                }
                _ => f.push("gen3_logins_total", &[("job", job), ("idp", idp)], ts, *n as f64),
            }
        }
        for kind in ["drs", "presigned"] {
            let n = self.downloads_by_kind.get(kind).copied().unwrap_or(0);
            f.push("gen3_downloads_total", &[("job", job), ("kind", kind)], ts, n as f64);
        }
        f.push("gen3_uploads_total", &[("job", job)], ts, self.uploads as f64);
        for (w, secs) in WINDOWS {
            let n = self.users.count(users_end, secs);
            f.push("gen3_active_users", &[("job", job), ("window", w)], ts, n as f64);
        }
        for r in ["ok", "malformed", "too_long"] {
            let n = self.lines.get(r).copied().unwrap_or(0);
            f.push("gen3_revproxy_log_lines_total", &[("job", job), ("result", r)], ts, n as f64);
        }
        for k in ["rotated", "truncated"] {
            let n = self.files.get(k).copied().unwrap_or(0);
            f.push("gen3_revproxy_log_file_changes_total", &[("job", job), ("kind", k)], ts, n as f64);
        }
        f
    }
}
