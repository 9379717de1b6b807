//! Following the access log file: offsets, rotation, truncation, partial
//! lines, CRI chunks, and the state file.
//!
//! - Offset: the first byte not yet counted. Only complete lines move it: a
//!   last line without its newline, or CRI `P` chunks without their `F`, are
//!   re-read at the next poll. Lines over `max_line_bytes` count as
//!   `too_long` and are skipped to their newline (memory stays below
//!   `max_line_bytes` + one 256 KiB read).
//! - File identity: dev + inode + the first 256 bytes. Each poll stats the
//!   path: another inode means rotation by rename (the old file, still
//!   open, is read to its end, then the new one from 0); a size below the
//!   offset or different first bytes mean truncation (copytruncate, or
//!   truncated and rewritten between polls): read again from 0.
//! - State: offset, identity and all counters in one JSON file, written
//!   atomically (temporary file, fsync, rename) before each frame is sent.
//!   On start the state is used only if it names the same path; if the file
//!   at the path is another one (rotated while the agent was stopped), a
//!   file with the saved inode in the same directory (the renamed, not yet
//!   compressed one) is finished first.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::parse;
use super::stats::{Counters, Limits};

/// Bytes of the file's beginning that identify it (with dev/inode).
const FP_LEN: usize = 256;
/// Read size.
const CHUNK: usize = 256 * 1024;

/// How lines are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Per line: CRI form if the line has the CRI prefix, else plain.
    #[default]
    Auto,
    /// nginx's lines as written (kubectl logs, a file written by nginx).
    Json,
    /// kubelet's CRI log file.
    Cri,
}

/// What is kept on disk between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// The log path the state is for.
    pub path: PathBuf,
    /// Identity of the file being read.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Its first bytes (up to 256), hex.
    pub fingerprint: String,
    /// Offset of the first byte not yet counted.
    pub offset: u64,
    /// Skipping the rest of an over-long line.
    pub skipping: bool,
    /// The counters up to `offset`.
    pub counters: Counters,
    /// Glob mode (`path` is a pattern): the position in each matched file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileState>,
    /// Kubernetes mode: the cursor of each pod's log stream
    /// (`<namespace>/<pod>/<uid>/<container>`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pods: std::collections::BTreeMap<String, crate::sources::pod_logs::Cursor>,
}

/// The position in one file of a glob (its identity and offset).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FileState {
    /// The file.
    pub path: PathBuf,
    /// Device of the file being read.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Its first bytes (up to 256), hex.
    pub fingerprint: String,
    /// Offset of the first byte not yet counted.
    pub offset: u64,
    /// Skipping the rest of an over-long line.
    pub skipping: bool,
}

impl FileState {
    /// The file part of a single-file state.
    pub fn from_state(s: State) -> Self {
        FileState {
            path: s.path,
            dev: s.dev,
            ino: s.ino,
            fingerprint: s.fingerprint,
            offset: s.offset,
            skipping: s.skipping,
        }
    }

    /// A single-file state (without counters) to resume a [`Tailer`].
    pub fn into_state(self) -> State {
        State {
            version: 1,
            path: self.path,
            dev: self.dev,
            ino: self.ino,
            fingerprint: self.fingerprint,
            offset: self.offset,
            skipping: self.skipping,
            ..Default::default()
        }
    }
}

/// Tailer settings.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// The log file.
    pub path: PathBuf,
    /// Line framing.
    pub format: Format,
    /// Longest line (or CRI-reassembled record) kept; longer ones are
    /// counted as too_long and skipped.
    pub max_line_bytes: usize,
    /// Most bytes read per poll.
    pub max_read_bytes: u64,
    /// With no saved state: start at the end of the existing file (true) or
    /// its beginning.
    pub start_at_end: bool,
    /// Label limits.
    pub limits: Limits,
}

/// The open file.
struct Open {
    file: File,
    dev: u64,
    ino: u64,
    fingerprint: Vec<u8>,
}

/// Follows one log file.
pub struct Tailer {
    opts: TailOptions,
    open: Option<Open>,
    /// Offset of the first byte not yet counted in `open`.
    offset: u64,
    skipping: bool,
    /// The counters.
    pub counters: Counters,
    /// True when the last poll reached the end of the current file.
    pub caught_up: bool,
    buf: Vec<u8>,
    cri: Vec<u8>,
    scratch: Vec<u8>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn read_prefix(f: &mut File, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0; n];
    let mut got = 0;
    f.seek(SeekFrom::Start(0))?;
    while got < n {
        let k = f.read(&mut v[got..])?;
        if k == 0 {
            break;
        }
        got += k;
    }
    v.truncate(got);
    Ok(v)
}

fn open_file(path: &Path) -> io::Result<Open> {
    let mut file = File::open(path)?;
    let md = file.metadata()?;
    let fingerprint = read_prefix(&mut file, FP_LEN)?;
    Ok(Open {
        file,
        dev: md.dev(),
        ino: md.ino(),
        fingerprint,
    })
}

impl Tailer {
    /// A tailer resuming from `state` when it matches `opts.path`.
    pub fn new(opts: TailOptions, state: Option<State>) -> Self {
        let mut t = Tailer {
            opts,
            open: None,
            offset: 0,
            skipping: false,
            counters: Counters::default(),
            caught_up: false,
            buf: Vec::new(),
            cri: Vec::new(),
            scratch: Vec::new(),
        };
        match state {
            Some(s) if s.path == t.opts.path => t.resume(s),
            _ => {
                if t.opts.start_at_end
                    && let Ok(o) = open_file(&t.opts.path)
                {
                    t.offset = o.file.metadata().map(|m| m.len()).unwrap_or(0);
                    t.open = Some(o);
                }
            }
        }
        t
    }

    fn resume(&mut self, s: State) {
        self.counters = s.counters;
        let fp = unhex(&s.fingerprint);
        // The file the state was about: at the path, or renamed next to it.
        let same = |o: &mut Open| o.dev == s.dev && o.ino == s.ino && o.fingerprint.starts_with(&fp);
        if let Ok(mut o) = open_file(&self.opts.path) {
            let len = o.file.metadata().map(|m| m.len()).unwrap_or(0);
            if same(&mut o) && len >= s.offset {
                self.offset = s.offset;
                self.skipping = s.skipping;
                self.open = Some(o);
                return;
            }
            if o.dev == s.dev && o.ino == s.ino {
                // Same file, shorter or rewritten: truncated while we were away.
                *self.counters.files.entry("truncated".into()).or_default() += 1;
                self.open = Some(o);
                self.offset = 0;
                return;
            }
        }
        // Rotated while we were away: finish the old file if it is still
        // in the directory under another name (not yet compressed).
        if let Some(dir) = self.opts.path.parent()
            && let Ok(rd) = std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
        {
            for e in rd.flatten() {
                let Ok(md) = e.metadata() else { continue };
                if md.is_file() && md.dev() == s.dev && md.ino() == s.ino && md.len() >= s.offset {
                    if let Ok(mut o) = open_file(&e.path())
                        && same(&mut o)
                    {
                        self.offset = s.offset;
                        self.skipping = s.skipping;
                        self.open = Some(o);
                    }
                    break;
                }
            }
        }
    }

    /// The state to save: counters and offset of everything counted.
    pub fn state(&mut self) -> State {
        self.counters.settle();
        let (dev, ino, fp) = match &self.open {
            Some(o) => (o.dev, o.ino, hex(&o.fingerprint)),
            None => (0, 0, String::new()),
        };
        let st = State {
            version: 1,
            path: self.opts.path.clone(),
            dev,
            ino,
            fingerprint: fp,
            offset: self.offset,
            skipping: self.skipping,
            counters: self.counters.clone(),
            ..Default::default()
        };
        // The saved copy has the user list; the live one keeps its map only.
        self.counters.users.seen = Vec::new();
        st
    }

    /// Reads what is new. Returns the number of bytes consumed.
    pub fn poll(&mut self) -> io::Result<u64> {
        let mut consumed = 0;
        let path_md = std::fs::metadata(&self.opts.path);
        let mut rotated = false;
        match (&self.open, &path_md) {
            (None, Ok(_)) => {
                self.open = Some(open_file(&self.opts.path)?);
                self.offset = 0;
                self.skipping = false;
            }
            (None, Err(e)) => {
                self.caught_up = true;
                return if e.kind() == io::ErrorKind::NotFound {
                    Ok(0)
                } else {
                    Err(io::Error::new(e.kind(), e.to_string()))
                };
            }
            (Some(o), Ok(md)) if md.dev() != o.dev || md.ino() != o.ino => rotated = true,
            _ => {}
        }
        if rotated {
            // Drain the renamed file, then switch to the new one.
            consumed += self.read_open(true)?;
            self.open = Some(open_file(&self.opts.path)?);
            self.offset = 0;
            self.skipping = false;
            *self.counters.files.entry("rotated".into()).or_default() += 1;
        } else if let Some(o) = self.open.as_mut() {
            let len = o.file.metadata()?.len();
            let mut truncated = len < self.offset;
            if !truncated && o.fingerprint.len() < FP_LEN && len as usize > o.fingerprint.len() {
                // Grown: extend the fingerprint (its old part must still match).
                let fp = read_prefix(&mut o.file, FP_LEN)?;
                if fp.starts_with(&o.fingerprint) {
                    o.fingerprint = fp;
                } else {
                    truncated = true;
                }
            } else if !truncated && !o.fingerprint.is_empty() {
                let fp = read_prefix(&mut o.file, o.fingerprint.len())?;
                truncated = fp != o.fingerprint;
            }
            if truncated {
                // copytruncate: start over from the beginning.
                o.fingerprint = read_prefix(&mut o.file, FP_LEN)?;
                self.offset = 0;
                self.skipping = false;
                *self.counters.files.entry("truncated".into()).or_default() += 1;
            }
        }
        consumed += self.read_open(false)?;
        Ok(consumed)
    }

    /// Reads the open file from `offset` to its end (at most
    /// `max_read_bytes`); counts complete lines. `last`: the file will not
    /// grow (rotated away), so a final unterminated line counts too.
    fn read_open(&mut self, last: bool) -> io::Result<u64> {
        let Some(o) = self.open.as_mut() else { return Ok(0) };
        o.file.seek(SeekFrom::Start(self.offset))?;
        let max_line = self.opts.max_line_bytes;
        let budget = if last { u64::MAX } else { self.opts.max_read_bytes };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.cri.clear();
        // Offset of buf[0] in the file; `commit` = first byte not counted.
        let mut base = self.offset;
        let mut commit = self.offset;
        let mut read_total = 0u64;
        let mut chunk = vec![0u8; CHUNK];
        let mut eof = false;
        // Where an unterminated CRI record (P chunks) started.
        let mut cri_start: Option<u64> = None;
        while read_total < budget {
            let n = o.file.read(&mut chunk)?;
            if n == 0 {
                eof = true;
                break;
            }
            read_total += n as u64;
            buf.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
                let end = start + nl;
                let line_off = base + start as u64;
                if self.skipping {
                    self.skipping = false;
                } else {
                    Self::line(
                        &self.opts,
                        &mut self.counters,
                        &mut self.cri,
                        &mut self.scratch,
                        &mut cri_start,
                        line_off,
                        &buf[start..end],
                    );
                }
                start = end + 1;
                if cri_start.is_none() {
                    commit = base + start as u64;
                }
            }
            buf.drain(..start);
            base += start as u64;
            if buf.len() > max_line && !self.skipping {
                // A line longer than allowed: count it, skip to its end.
                self.counters.line("too_long");
                self.skipping = true;
                base += buf.len() as u64;
                buf.clear();
                commit = base;
                cri_start = None;
                self.cri.clear();
            } else if self.skipping {
                base += buf.len() as u64;
                buf.clear();
                commit = base;
            }
        }
        if eof && last && !buf.is_empty() {
            let line = std::mem::take(&mut buf);
            Self::line(
                &self.opts,
                &mut self.counters,
                &mut self.cri,
                &mut self.scratch,
                &mut cri_start,
                base,
                &line,
            );
            base += line.len() as u64;
            commit = base;
        }
        if last && !self.cri.is_empty() {
            // A P chunk never finished in a file that will not grow.
            self.counters.line("malformed");
            self.cri.clear();
        }
        self.caught_up = eof;
        let consumed = commit - self.offset;
        self.offset = commit;
        self.buf = buf;
        Ok(consumed)
    }

    #[allow(clippy::too_many_arguments)]
    fn line(
        opts: &TailOptions,
        c: &mut Counters,
        cri: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        cri_start: &mut Option<u64>,
        off: u64,
        line: &[u8],
    ) {
        let cri_line = match opts.format {
            Format::Json => None,
            Format::Cri | Format::Auto => parse::split_cri(line),
        };
        let content: &[u8] = match cri_line {
            Some(cl) => {
                if !cl.full {
                    if cri.len() + cl.content.len() > opts.max_line_bytes {
                        c.line("too_long");
                        cri.clear();
                        *cri_start = None;
                        return;
                    }
                    if cri_start.is_none() {
                        *cri_start = Some(off);
                    }
                    cri.extend_from_slice(cl.content);
                    return;
                }
                *cri_start = None;
                if cri.is_empty() {
                    cl.content
                } else {
                    cri.extend_from_slice(cl.content);
                    let whole = std::mem::take(cri);
                    Self::record(opts, c, scratch, &whole);
                    *cri = whole;
                    cri.clear();
                    return;
                }
            }
            None if opts.format == Format::Cri => {
                c.line("malformed");
                return;
            }
            None => line,
        };
        Self::record(opts, c, scratch, content);
    }

    fn record(opts: &TailOptions, c: &mut Counters, scratch: &mut Vec<u8>, content: &[u8]) {
        if content.len() > opts.max_line_bytes {
            c.line("too_long");
            return;
        }
        let mut tmp = std::mem::take(scratch);
        match parse::parse_line(content, &mut tmp) {
            Ok(r) => {
                c.record(&r, opts.limits);
                c.line("ok");
            }
            Err(parse::Bad::Malformed) => c.line("malformed"),
        }
        tmp.clear();
        *scratch = tmp;
    }
}

/// Writes `state` to `path` atomically (temporary file, fsync, rename).
pub fn save_state(path: &Path, state: &State) -> io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec(state).map_err(io::Error::other)?;
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a saved state; None when there is none, Err when it is unreadable.
pub fn load_state(path: &Path) -> io::Result<Option<State>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
