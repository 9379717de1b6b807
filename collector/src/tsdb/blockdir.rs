//! The block directory (schema 4): where every compacted block is.
//!
//! Until schema 3 each compacted block had a `chunks` row of its own (id,
//! series, level, bounds, a reference into its pack) and three index
//! entries: about 80 bytes a block, 1.65 MB of a 24 MB database on the
//! storage benchmark's 24 hours. The directory keeps the same facts in one
//! row per group of [`GROUP`] consecutive series ids and window, delta-coded,
//! about 7 bytes a block:
//!
//! ```text
//! blockdir(grp, window, n, mint, maxt, entries)  PRIMARY KEY (grp, window), WITHOUT ROWID
//!   grp     series id div GROUP
//!   window  start of the compaction window (ms, compact.rs)
//!   n       number of entries; mint, maxt: bounds over them
//!   entries n × entry, sorted by (series, mint); each field against the
//!           entry before (the first against series grp·GROUP, pack 0,
//!           offset 0, mint and maxt = window):
//!     series − previous series: uvarint
//!     pack − previous pack: varint
//!     offset: varint, offset − end of the previous block when in the same pack,
//!             else the offset itself
//!     len: uvarint
//!     mint − previous mint: varint
//!     maxt − previous maxt: varint
//! pack_refs(pack INTEGER PRIMARY KEY, refs)   -- entries that name the pack
//! ```
//!
//! A reader finds a series' blocks with one seek (its group's rows of the
//! windows that can hold its range are adjacent in the primary key) and
//! decodes the few hundred bytes of the row. A block's reference is the
//! same [`BlockRef`] a schema-3 chunk row holds, so the decoded-chunk cache
//! keys on the same bytes.
//!
//! A pack is deleted when its count in `pack_refs` drops to 0: every change
//! to a row goes through [`Editor`], which counts the entries per pack
//! before and after. Schema-3 chunk rows that refer to packs are still
//! read, compacted and collected as before (`pack::collect`).
//!
//! Readers order a series' directory blocks before its `chunks` rows (a
//! chunk row of a window is written after the window's last compaction,
//! which merged every chunk row it had), and by window among themselves.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::compact::{WINDOW_MS, window_start};
use super::pack::BlockRef;
use super::sqlite;
use crate::varint::{put_uvarint, read_uvarint, unzigzag, zigzag};

/// Series ids per directory row.
pub const GROUP: i64 = 64;

/// One compacted block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The series.
    pub series: i64,
    /// Its first sample's timestamp.
    pub mint: i64,
    /// Its last sample's timestamp.
    pub maxt: i64,
    /// Where the block is.
    pub at: BlockRef,
}

/// The directory group of a series id.
pub fn group_of(series: i64) -> i64 {
    series.div_euclid(GROUP)
}

/// Appends the encoding of `entries` (sorted by series, then mint; every
/// series in `grp`) of a row of `window`.
pub fn encode(grp: i64, window: i64, entries: &[Entry], out: &mut Vec<u8>) {
    let (mut series, mut pack, mut end, mut mint, mut maxt) = (grp.wrapping_mul(GROUP), 0i64, 0u64, window, window);
    for e in entries {
        put_uvarint(out, e.series.wrapping_sub(series) as u64);
        put_uvarint(out, zigzag(e.at.pack.wrapping_sub(pack)));
        if e.at.pack == pack {
            put_uvarint(out, zigzag(e.at.offset.wrapping_sub(end) as i64));
        } else {
            put_uvarint(out, e.at.offset);
        }
        put_uvarint(out, e.at.len);
        put_uvarint(out, zigzag(e.mint.wrapping_sub(mint)));
        put_uvarint(out, zigzag(e.maxt.wrapping_sub(maxt)));
        (series, pack, end, mint, maxt) = (e.series, e.at.pack, e.at.offset.wrapping_add(e.at.len), e.mint, e.maxt);
    }
}

/// Reads a row's entries one at a time.
struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    grp: i64,
    window: i64,
    prev: Entry,
}

impl<'a> Decoder<'a> {
    fn new(grp: i64, window: i64, data: &'a [u8]) -> Self {
        Decoder {
            data,
            pos: 0,
            grp,
            window,
            prev: Entry {
                series: grp.wrapping_mul(GROUP),
                mint: window,
                maxt: window,
                at: BlockRef {
                    pack: 0,
                    offset: 0,
                    len: 0,
                },
            },
        }
    }

    fn field(&mut self, what: &str) -> Result<u64, String> {
        let at = self.pos;
        read_uvarint(self.data, &mut self.pos)
            .map_err(|_| format!("block directory row ({}, {}): bad {what} at byte {at}", self.grp, self.window))
    }

    /// The next entry, `None` at the end of the row.
    fn next_entry(&mut self) -> Option<Result<Entry, String>> {
        if self.pos >= self.data.len() {
            return None;
        }
        Some((|| {
            let p = self.prev;
            let series = p.series.wrapping_add(self.field("series")? as i64);
            let pack_delta = unzigzag(self.field("pack")?);
            let pack = p.at.pack.wrapping_add(pack_delta);
            let offset = self.field("offset")?;
            let end = p.at.offset.wrapping_add(p.at.len);
            let offset = if pack_delta == 0 {
                end.wrapping_add(unzigzag(offset) as u64)
            } else {
                offset
            };
            let len = self.field("length")?;
            let mint = p.mint.wrapping_add(unzigzag(self.field("mint")?));
            let maxt = p.maxt.wrapping_add(unzigzag(self.field("maxt")?));
            self.prev = Entry {
                series,
                mint,
                maxt,
                at: BlockRef { pack, offset, len },
            };
            Ok(self.prev)
        })())
    }
}

/// Decodes a row's entries into `out` (appended to). Corrupt bytes give an
/// error naming the row, never a panic.
pub fn decode(grp: i64, window: i64, data: &[u8], out: &mut Vec<Entry>) -> Result<(), String> {
    let mut d = Decoder::new(grp, window, data);
    while let Some(e) = d.next_entry() {
        out.push(e?);
    }
    Ok(())
}

fn corrupt(e: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, e.into())
}

/// The windows whose blocks can hold samples in `[mint, maxt]`: a block of
/// a window starts in it and ends at most one window later.
pub fn windows_for(mint: i64, maxt: i64) -> (i64, i64) {
    (window_start(mint).saturating_sub(WINDOW_MS), window_start(maxt))
}

/// Calls `f` with the entries of `series` in row (grp, window) that
/// overlap `[mint, maxt]`, in the order their samples were written.
pub fn find(grp: i64, window: i64, data: &[u8], series: i64, mint: i64, maxt: i64, mut f: impl FnMut(&Entry)) -> Result<(), String> {
    // Entries are sorted by series: stop after this one's.
    let mut d = Decoder::new(grp, window, data);
    while let Some(e) = d.next_entry() {
        let e = e?;
        if e.series > series {
            break;
        }
        if e.series == series && e.maxt >= mint && e.mint <= maxt {
            f(&e);
        }
    }
    Ok(())
}

/// Calls `f` with the blocks of `series` that may hold samples in
/// `[mint, maxt]`, in the order their samples were written (by window,
/// then by mint).
pub fn blocks_of(conn: &Connection, series: i64, mint: i64, maxt: i64, mut f: impl FnMut(&Entry)) -> Result<(), String> {
    let grp = group_of(series);
    let (lo, hi) = windows_for(mint, maxt);
    let mut st = conn.prepare_cached(sqlite::SELECT_DIR_ROWS).map_err(|e| e.to_string())?;
    let mut rows = st.query(params![grp, lo, hi, mint, maxt]).map_err(|e| e.to_string())?;
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let window: i64 = row.get(0).map_err(|e| e.to_string())?;
        let data = row.get_ref(1).and_then(|v| Ok(v.as_blob()?)).map_err(|e| e.to_string())?;
        find(grp, window, data, series, mint, maxt, &mut f)?;
    }
    Ok(())
}

/// The entries of `series` in `window`.
pub fn entries_of(conn: &Connection, series: i64, window: i64) -> rusqlite::Result<Vec<Entry>> {
    let grp = group_of(series);
    let data: Option<Vec<u8>> = conn
        .prepare_cached(sqlite::SELECT_DIR_ROW)?
        .query_row(params![grp, window], |r| r.get(0))
        .optional()?;
    let mut out = Vec::new();
    if let Some(data) = data {
        decode(grp, window, &data, &mut out).map_err(corrupt)?;
        out.retain(|e| e.series == series);
    }
    Ok(out)
}

/// Changes directory rows and keeps `pack_refs` in step: [`Editor::finish`]
/// applies the reference counts and deletes the packs nothing refers to.
#[derive(Debug, Default)]
pub struct Editor {
    /// Change of each pack's reference count.
    deltas: BTreeMap<i64, i64>,
    /// Entries removed.
    pub removed: usize,
}

impl Editor {
    /// Loads row (grp, window), lets `f` change its entries, and writes it
    /// back (sorted), or deletes it when `f` leaves it empty.
    pub fn edit(&mut self, tx: &Transaction<'_>, grp: i64, window: i64, f: impl FnOnce(&mut Vec<Entry>)) -> rusqlite::Result<()> {
        let data: Option<Vec<u8>> = tx
            .prepare_cached(sqlite::SELECT_DIR_ROW)?
            .query_row(params![grp, window], |r| r.get(0))
            .optional()?;
        let mut entries = Vec::new();
        if let Some(data) = &data {
            decode(grp, window, data, &mut entries).map_err(corrupt)?;
        }
        let before = entries.clone();
        f(&mut entries);
        entries.retain(|e| group_of(e.series) == grp);
        entries.sort_by_key(|e| (e.series, e.mint, e.at.pack, e.at.offset));
        if entries == before {
            // Unchanged (retention looks at the rows of the oldest day every
            // few minutes): nothing to write.
            return Ok(());
        }
        for e in &before {
            *self.deltas.entry(e.at.pack).or_default() -= 1;
        }
        for e in &entries {
            *self.deltas.entry(e.at.pack).or_default() += 1;
        }
        self.removed += before.len().saturating_sub(entries.len());
        if entries.is_empty() {
            if data.is_some() {
                tx.prepare_cached(sqlite::DELETE_DIR_ROW)?.execute(params![grp, window])?;
            }
            return Ok(());
        }
        let mut buf = Vec::with_capacity(entries.len() * 8);
        encode(grp, window, &entries, &mut buf);
        let mint = entries.iter().map(|e| e.mint).min().unwrap_or(window);
        let maxt = entries.iter().map(|e| e.maxt).max().unwrap_or(window);
        tx.prepare_cached(sqlite::UPSERT_DIR_ROW)?
            .execute(params![grp, window, entries.len() as i64, mint, maxt, buf])?;
        Ok(())
    }

    /// Applies the reference counts; deletes the packs left without
    /// references. Returns how many packs went.
    pub fn finish(self, tx: &Transaction<'_>) -> rusqlite::Result<usize> {
        let mut add = tx.prepare_cached(sqlite::ADD_PACK_REFS)?;
        let mut gone = 0;
        for (pack, delta) in self.deltas {
            if delta == 0 {
                continue;
            }
            let refs: i64 = add.query_row(params![pack, delta], |r| r.get(0))?;
            if refs <= 0 {
                tx.prepare_cached(sqlite::DELETE_PACK_REFS)?.execute(params![pack])?;
                gone += tx.prepare_cached(sqlite::DELETE_PACK)?.execute(params![pack])?;
            }
        }
        Ok(gone)
    }
}

/// Drops the entries that end before `cutoff` (retention by age); returns
/// how many.
pub fn delete_before(tx: &Transaction<'_>, cutoff: i64) -> rusqlite::Result<usize> {
    let rows: Vec<(i64, i64)> = tx
        .prepare_cached(sqlite::DIR_ROWS_STARTING_BEFORE)?
        .query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut ed = Editor::default();
    for (grp, window) in rows {
        ed.edit(tx, grp, window, |v| v.retain(|e| e.maxt >= cutoff))?;
    }
    let n = ed.removed;
    ed.finish(tx)?;
    Ok(n)
}

/// The oldest entries (by `maxt`) of the `rows` oldest rows, for retention
/// by size: (window, entry).
pub fn oldest(conn: &Connection, rows: usize) -> rusqlite::Result<Vec<(i64, Entry)>> {
    let mut out = Vec::new();
    let mut st = conn.prepare_cached(sqlite::OLDEST_DIR_ROWS)?;
    let mut q = st.query(params![rows as i64])?;
    let mut buf = Vec::new();
    while let Some(r) = q.next()? {
        let (grp, window): (i64, i64) = (r.get(0)?, r.get(1)?);
        let data = r.get_ref(2)?.as_blob()?;
        buf.clear();
        decode(grp, window, data, &mut buf).map_err(corrupt)?;
        out.extend(buf.iter().map(|e| (window, *e)));
    }
    out.sort_by_key(|(_, e)| e.maxt);
    Ok(out)
}

/// Checks `pack_refs` against the entries (for tests): every count equals
/// the entries that name the pack, and every named pack exists.
#[cfg(test)]
pub fn check(conn: &Connection) -> Result<(), String> {
    let e = |e: rusqlite::Error| e.to_string();
    let mut counted: BTreeMap<i64, i64> = BTreeMap::new();
    let mut st = conn.prepare("SELECT grp, window, entries FROM blockdir").map_err(e)?;
    let mut rows = st.query([]).map_err(e)?;
    let mut buf = Vec::new();
    while let Some(r) = rows.next().map_err(e)? {
        let (grp, window): (i64, i64) = (r.get(0).map_err(e)?, r.get(1).map_err(e)?);
        let data = r.get_ref(2).and_then(|v| Ok(v.as_blob()?)).map_err(e)?;
        buf.clear();
        decode(grp, window, data, &mut buf)?;
        for x in &buf {
            *counted.entry(x.at.pack).or_default() += 1;
        }
    }
    let stored: BTreeMap<i64, i64> = conn
        .prepare("SELECT pack, refs FROM pack_refs")
        .map_err(e)?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    if counted != stored {
        return Err(format!("pack_refs {stored:?} but the entries name {counted:?}"));
    }
    for p in counted.keys() {
        let exists: bool = conn
            .query_row("SELECT count(*) FROM packs WHERE id = ?1", params![p], |r| r.get::<_, i64>(0))
            .map_err(e)?
            > 0;
        if !exists {
            return Err(format!("pack {p} is named but gone"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(series: i64, pack: i64, offset: u64, len: u64, mint: i64, maxt: i64) -> Entry {
        Entry {
            series,
            mint,
            maxt,
            at: BlockRef { pack, offset, len },
        }
    }

    #[test]
    fn rows_round_trip_and_take_a_few_bytes_an_entry() {
        let w = 20_000 * WINDOW_MS;
        let mut v = Vec::new();
        let mut off = 0;
        for s in 64..128 {
            let len = 900 + (s as u64 * 37) % 3000;
            v.push(entry(s, 7 + (s - 64) / 20, off, len, w + s % 5, w + WINDOW_MS - 15_000 + s % 5));
            off = if (s - 63) % 20 == 0 { 0 } else { off + len };
        }
        // A series with two blocks; a block in an older pack; extremes.
        v.push(entry(127, 3, 5, 10, w + WINDOW_MS + 1, w + WINDOW_MS + 9));
        v.sort_by_key(|e| (e.series, e.mint));
        let mut b = Vec::new();
        encode(1, w, &v, &mut b);
        assert!(b.len() <= v.len() * 9, "{} bytes for {} entries", b.len(), v.len());
        let mut back = Vec::new();
        decode(1, w, &b, &mut back).expect("decode");
        assert_eq!(back, v);
        let odd = vec![entry(0, i64::MAX, u64::MAX, u64::MAX, i64::MIN, i64::MAX), entry(63, 1, 0, 0, 0, 0)];
        let mut b = Vec::new();
        encode(0, 0, &odd, &mut b);
        let mut back = Vec::new();
        decode(0, 0, &b, &mut back).expect("decode");
        assert_eq!(back, odd);
    }

    #[test]
    fn truncated_rows_are_errors() {
        let v = vec![entry(3, 9, 100, 2000, 5, 90_000_000)];
        let mut b = Vec::new();
        encode(0, 0, &v, &mut b);
        for cut in 1..b.len() {
            let mut out = Vec::new();
            assert!(decode(0, 0, &b[..cut], &mut out).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn edits_keep_reference_counts_and_collect_packs() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut conn = sqlite::open_writer(&d.path().join("d.db")).expect("open");
        let tx = conn.transaction().expect("tx");
        for _ in 0..2 {
            tx.execute(sqlite::INSERT_PACK, params![vec![0u8; 64]]).expect("pack");
        }
        let mut ed = Editor::default();
        ed.edit(&tx, 0, 0, |v| {
            v.push(entry(2, 1, 0, 10, 0, 5));
            v.push(entry(1, 1, 10, 10, 0, 5));
            v.push(entry(3, 2, 0, 10, 0, 9));
        })
        .expect("edit");
        ed.finish(&tx).expect("finish");
        check(&tx).expect("consistent");
        let mut got = Vec::new();
        blocks_of(&tx, 2, 0, 100, |e| got.push(*e)).expect("read");
        assert_eq!(got, vec![entry(2, 1, 0, 10, 0, 5)]);
        assert_eq!(entries_of(&tx, 3, 0).expect("entries"), vec![entry(3, 2, 0, 10, 0, 9)]);
        // An edit that changes nothing writes nothing.
        let changes = tx.total_changes();
        let mut ed = Editor::default();
        ed.edit(&tx, 0, 0, |v| v.retain(|e| e.maxt >= 0)).expect("edit");
        ed.finish(&tx).expect("finish");
        assert_eq!(tx.total_changes(), changes);
        // Retention drops the blocks that end before 6: pack 1 goes.
        assert_eq!(delete_before(&tx, 6).expect("retention"), 2);
        check(&tx).expect("consistent");
        let packs: Vec<i64> = tx
            .prepare("SELECT id FROM packs")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(packs, vec![2]);
        // The last entry goes: so do its row and its pack.
        let mut ed = Editor::default();
        ed.edit(&tx, 0, 0, |v| v.clear()).expect("edit");
        assert_eq!(ed.finish(&tx).expect("finish"), 1);
        let rows: i64 = tx.query_row("SELECT count(*) FROM blockdir", [], |r| r.get(0)).expect("rows");
        assert_eq!(rows, 0);
        check(&tx).expect("consistent");
    }
}
