//! Exact resume over `pods/log?timestamps=true` streams.
//!
//! The kubelet prefixes every line with its RFC 3339 (nanosecond) timestamp.
//! For each followed stream (pod, container) a [`Cursor`] keeps the newest
//! timestamp counted and how many lines carrying exactly that timestamp were
//! counted. On a (re)connection the stream is asked from
//! `sinceTime = cursor truncated to the second` (the API server accepts whole
//! seconds only; kube-rs would round to the nearest second, which may be
//! later, so the truncation is done here), and a [`Gate`] skips every line
//! older than the cursor and the first `n` lines at the cursor's timestamp;
//! from the first line past that point, everything counts. The cursor is saved
//! with the counters it describes, so after an agent restart, a cut stream or
//! an API server restart, no line is skipped and none is counted twice.
//!
//! What this cannot see: lines a container wrote after the last read and
//! before it was restarted while the stream was down (the API serves only
//! the current instance without `previous=true`), lines in log files the
//! kubelet has already rotated away, and (in theory) a line whose timestamp
//! is older than one already counted, delivered after a reconnection. The
//! kubelet's timestamps are taken in order per container, so the last case
//! only arises for stdout and stderr lines written in the same nanoseconds.

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

const NS_PER_S: i128 = 1_000_000_000;

/// Nanoseconds since the Unix epoch of an RFC 3339 timestamp.
pub fn parse_ts(s: &str) -> Option<i128> {
    s.parse::<Timestamp>().ok().map(|t| t.as_nanosecond())
}

/// RFC 3339 text of `ns` (nanosecond precision when needed, UTC).
pub fn format_ts(ns: i128) -> String {
    Timestamp::from_nanosecond(ns).map(|t| t.to_string()).unwrap_or_default()
}

/// `sinceTime` for a cursor at `ns`: that instant truncated to the second.
pub fn since_time(ns: i128) -> Option<Timestamp> {
    Timestamp::from_nanosecond(ns.div_euclid(NS_PER_S) * NS_PER_S).ok()
}

/// Splits a `timestamps=true` line into its timestamp and content. None when
/// the line has no parseable timestamp.
pub fn split_line(line: &[u8]) -> Option<(i128, &[u8])> {
    let sp = line.iter().take(64).position(|&b| b == b' ')?;
    let ts = std::str::from_utf8(&line[..sp]).ok()?;
    Some((parse_ts(ts)?, &line[sp + 1..]))
}

/// Where a stream's counting stands (saved in the source's state file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "SavedCursor", try_from = "SavedCursor")]
pub struct Cursor {
    /// Timestamp (ns since the epoch) of the newest line counted.
    pub ts: Option<i128>,
    /// Lines counted that carry exactly `ts`.
    pub n: u64,
    /// The stream has ended for good (its pod finished and was drained).
    pub done: bool,
}

/// The cursor as written to the state file (timestamp as RFC 3339 text).
#[derive(Serialize, Deserialize)]
struct SavedCursor {
    #[serde(default)]
    ts: String,
    #[serde(default)]
    n: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    done: bool,
}

impl From<Cursor> for SavedCursor {
    fn from(c: Cursor) -> Self {
        SavedCursor {
            ts: c.ts.map(format_ts).unwrap_or_default(),
            n: c.n,
            done: c.done,
        }
    }
}

impl TryFrom<SavedCursor> for Cursor {
    type Error = String;
    fn try_from(s: SavedCursor) -> Result<Self, String> {
        let ts = if s.ts.is_empty() {
            None
        } else {
            Some(parse_ts(&s.ts).ok_or_else(|| format!("bad cursor timestamp {:?}", s.ts))?)
        };
        Ok(Cursor { ts, n: s.n, done: s.done })
    }
}

impl Cursor {
    /// A cursor that counts only lines newer than `ns` (start at the end).
    pub fn at(ns: i128) -> Self {
        Cursor {
            ts: Some(ns),
            n: 0,
            done: false,
        }
    }

    /// `sinceTime` for the next connection (None: from the beginning).
    pub fn since_time(&self) -> Option<Timestamp> {
        self.ts.and_then(since_time)
    }

    /// Records that a line stamped `ns` was counted. The cursor never goes
    /// back: an older line (out of order) is counted but leaves it as is.
    pub fn record(&mut self, ns: i128) {
        match self.ts {
            Some(t) if t == ns => self.n += 1,
            Some(t) if t > ns => {}
            _ => {
                self.ts = Some(ns);
                self.n = 1;
            }
        }
    }
}

/// Decides, for one connection, which lines were already counted.
#[derive(Debug, Clone)]
pub struct Gate {
    saved: Option<(i128, u64)>,
    seen_at: u64,
    open: bool,
}

impl Gate {
    /// A gate for a connection made at `cursor`.
    pub fn new(cursor: &Cursor) -> Self {
        Gate {
            saved: cursor.ts.map(|t| (t, cursor.n)),
            seen_at: 0,
            open: cursor.ts.is_none(),
        }
    }

    /// Whether a line stamped `ns` is new (to be counted). Once a new line is
    /// seen every later line is new.
    pub fn admit(&mut self, ns: i128) -> bool {
        if self.open {
            return true;
        }
        let Some((t, n)) = self.saved else {
            self.open = true;
            return true;
        };
        if ns < t {
            return false;
        }
        if ns == t {
            self.seen_at += 1;
            if self.seen_at <= n {
                return false;
            }
        }
        self.open = true;
        true
    }

    /// Whether the gate has let a line through (the connection is past the
    /// saved point).
    pub fn is_open(&self) -> bool {
        self.open
    }
}
