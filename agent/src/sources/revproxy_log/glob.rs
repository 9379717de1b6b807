//! A glob `path` (an agent run as a DaemonSet over the kubelet's files, e.g.
//! `/var/log/pods/gen3_revproxy-*/revproxy/*.log`): every matching file is
//! followed by its own [`Tailer`] (offset, identity, rotation, truncation)
//! and all of them count into one set of [`Counters`], so every replica and
//! every rollout adds to the same series.
//!
//! - The pattern is expanded at every poll: new files are read from their
//!   beginning (with `start_at: end` and no state, only the files present at
//!   the first poll start at their end).
//! - A file no longer matched (its pod deleted, the directory removed) is
//!   read to the end of what its open handle still holds, then forgotten.
//! - The state keeps one entry per file (path, dev/inode, first bytes,
//!   offset) next to the shared counters; on start each file resumes from
//!   its entry, as the single-file mode does.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use super::stats::Counters;
use super::tail::{FileState, State, TailOptions, Tailer};

/// Follows every file matching a glob pattern.
pub struct GlobTailer {
    pattern: String,
    opts: TailOptions,
    tailers: BTreeMap<PathBuf, Tailer>,
    /// Saved per-file states not yet matched to a file.
    saved: BTreeMap<PathBuf, FileState>,
    /// The counters of every file.
    pub counters: Counters,
    /// True when the last poll reached the end of every file.
    pub caught_up: bool,
    /// No usable state: files of the first poll obey `start_at_end`.
    fresh: bool,
    first_poll: bool,
}

/// Whether `path` is a glob pattern (has `*`, `?` or `[`).
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

impl GlobTailer {
    /// A follower of `opts.path` (a pattern), resuming `state` when it was
    /// saved for the same pattern.
    pub fn new(opts: TailOptions, state: Option<State>) -> Self {
        let pattern = opts.path.to_string_lossy().into_owned();
        let (counters, saved, fresh) = match state {
            Some(s) if s.path == opts.path => (s.counters, s.files.into_iter().map(|f| (f.path.clone(), f)).collect(), false),
            _ => (Counters::default(), BTreeMap::new(), true),
        };
        GlobTailer {
            pattern,
            opts,
            tailers: BTreeMap::new(),
            saved,
            counters,
            caught_up: false,
            fresh,
            first_poll: true,
        }
    }

    fn open(&mut self, path: PathBuf) {
        let mut o = self.opts.clone();
        o.path = path.clone();
        o.start_at_end = self.opts.start_at_end && self.fresh && self.first_poll;
        let st = self.saved.remove(&path).map(|f| f.into_state());
        let mut t = Tailer::new(o, st);
        // What the tailer counted while resuming (a truncation seen at start)
        // goes to the shared counters.
        let own = std::mem::take(&mut t.counters);
        for (k, n) in own.files {
            *self.counters.files.entry(k).or_default() += n;
        }
        self.tailers.insert(path, t);
    }

    /// Expands the pattern, reads every file's new lines, finishes vanished
    /// files. Returns the bytes consumed; the first error is returned after
    /// every file was polled.
    pub fn poll(&mut self) -> io::Result<u64> {
        let paths = glob::glob(&self.pattern).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut present = std::collections::BTreeSet::new();
        for p in paths.flatten() {
            if p.is_file() {
                present.insert(p);
            }
        }
        for p in &present {
            if !self.tailers.contains_key(p) {
                self.open(p.clone());
            }
        }
        self.first_poll = false;
        // Saved entries of files that no longer exist are dropped.
        self.saved.retain(|p, _| present.contains(p));
        let mut consumed = 0;
        let mut first_err = None;
        let mut caught_up = true;
        let mut finished = Vec::new();
        for (p, t) in self.tailers.iter_mut() {
            std::mem::swap(&mut t.counters, &mut self.counters);
            let r = t.poll();
            std::mem::swap(&mut t.counters, &mut self.counters);
            match r {
                Ok(n) => consumed += n,
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(io::Error::new(e.kind(), format!("{}: {e}", p.display())));
                    }
                }
            }
            caught_up &= t.caught_up;
            if !present.contains(p) && t.caught_up {
                finished.push(p.clone());
            }
        }
        for p in finished {
            self.tailers.remove(&p);
        }
        self.caught_up = caught_up;
        match first_err {
            Some(e) => Err(e),
            None => Ok(consumed),
        }
    }

    /// The files being followed.
    pub fn files(&self) -> Vec<PathBuf> {
        self.tailers.keys().cloned().collect()
    }

    /// The state to save: the pattern, every file's position, the counters.
    pub fn state(&mut self) -> State {
        let mut files: Vec<FileState> = self.tailers.values_mut().map(|t| FileState::from_state(t.state())).collect();
        // Not yet seen again (a file matched at the last run, absent now but
        // maybe back): kept until a poll shows it is gone.
        files.extend(self.saved.values().cloned());
        self.counters.settle();
        let st = State {
            version: 1,
            path: self.opts.path.clone(),
            counters: self.counters.clone(),
            files,
            ..Default::default()
        };
        self.counters.users.seen = Vec::new();
        st
    }
}
