//! Packs: compacted blocks stored together (schema 3).
//!
//! A compacted block is 0.5–6 KB. Stored one per `chunks` row, SQLite fits
//! a few per 4 KiB page and the rest of the page stays empty: on the
//! storage benchmark a fifth of the file was such slack, even right after
//! a VACUUM. So compaction writes its blocks end to end into `packs` rows
//! of about [`PACK_BYTES`], one window per pack. Since schema 4 the block
//! directory (blockdir.rs) says where each block is; in schema 3 each block
//! had a `chunks` row with the reference as its `data` (and the pack's id
//! in its `pack` column, for garbage collection), which is still read. A
//! pack row is mostly overflow pages, which SQLite fills completely.
//!
//! A reference (a directory entry, or the `data` of a schema-3 chunk row):
//!
//! ```text
//! 0x02 │ pack: uvarint │ offset: uvarint │ len: uvarint
//! ```
//!
//! Its first byte is neither a block's (`0x20..=0x3f`) nor an `XorChunk`'s
//! (`0x01`). Readers fetch the `len` bytes at `offset` of the pack's BLOB
//! with SQLite's incremental BLOB I/O, which reads only the pages holding
//! them. Pack ids come from `AUTOINCREMENT` and packs are never changed,
//! so a reference names the same bytes for the life of the database: the
//! decoded-chunk cache keys on the reference itself.
//!
//! A pack is deleted once no directory entry (blockdir.rs counts them in
//! `pack_refs`) and no schema-3 chunk row ([`collect`]) refers to it. A
//! block rewritten by a later compaction (late samples for its window)
//! stays in its pack, unreferenced, until the pack's other blocks go too.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, Transaction, params};

use super::blockdir::Entry;
use super::sqlite;
use crate::varint::{put_uvarint, read_uvarint};

/// First byte of a chunk row's `data` that refers to a block in a pack.
pub const REF_FORMAT: u8 = 0x02;

/// The usual size of a pack: packs are between half and 1.5 times this
/// (or smaller at the end of a compaction pass). Large enough that the
/// part of the row in the table's leaf page costs little; a reader of a
/// block follows the pack's overflow pages from its start, which SQLite
/// does through the pointer map (auto-vacuum) without reading them. At
/// 32 KiB the leaf parts left 180 KB of 22.7 MB empty on the storage
/// benchmark's 24 hours; a simulation of the packer over that run's blocks
/// gave about 15 KB at 64 KiB.
pub const PACK_BYTES: usize = 64 * 1024;

/// Where a block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// The `packs` row.
    pub pack: i64,
    /// Byte offset of the block in the pack.
    pub offset: u64,
    /// Length of the block.
    pub len: u64,
}

impl BlockRef {
    /// Appends the reference's encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(REF_FORMAT);
        put_uvarint(out, self.pack as u64);
        put_uvarint(out, self.offset);
        put_uvarint(out, self.len);
    }

    /// `Some` when `data` is a reference: the reference, or an error when it
    /// does not parse. `None` when `data` is a block itself.
    pub fn parse(data: &[u8]) -> Option<Result<BlockRef, &'static str>> {
        if data.first() != Some(&REF_FORMAT) {
            return None;
        }
        let mut pos = 1;
        let mut field = |what| read_uvarint(data, &mut pos).map_err(|_| what);
        let r = (|| {
            let pack = field("pack id")?;
            let offset = field("offset")?;
            let len = field("length")?;
            let pack = i64::try_from(pack).map_err(|_| "pack id")?;
            Ok(BlockRef { pack, offset, len })
        })();
        Some(r.and_then(|r| if pos == data.len() { Ok(r) } else { Err("trailing bytes") }))
    }

    /// Reads the block's bytes.
    pub fn read(&self, conn: &Connection) -> Result<Vec<u8>, String> {
        let blob = conn
            .blob_open(rusqlite::MAIN_DB, "packs", "data", self.pack, true)
            .map_err(|e| format!("pack {}: {e}", self.pack))?;
        let end = self.offset.checked_add(self.len).filter(|&e| e <= blob.len() as u64);
        if end.is_none() {
            return Err(format!(
                "pack {}: block at {}+{} is outside its {} bytes",
                self.pack,
                self.offset,
                self.len,
                blob.len()
            ));
        }
        let mut buf = vec![0u8; self.len as usize];
        blob.read_at_exact(&mut buf, self.offset as usize)
            .map_err(|e| format!("pack {}: {e}", self.pack))?;
        Ok(buf)
    }
}

/// The block of a chunk row's `data`: the data itself, or the block it
/// refers to, read from its pack.
pub fn block_of<'a>(conn: &Connection, data: &'a [u8]) -> Result<Cow<'a, [u8]>, String> {
    match BlockRef::parse(data) {
        None => Ok(Cow::Borrowed(data)),
        Some(r) => {
            let r = r.map_err(|e| format!("invalid pack reference ({e})"))?;
            r.read(conn).map(Cow::Owned)
        }
    }
}

/// A compacted block waiting for its pack: (series, mint, maxt, offset, len).
type Member = (i64, i64, i64, u64, u64);

/// Bytes of a page (SQLite's default, which the storage keeps).
const PAGE: u64 = 4096;

/// Bytes a `packs` row of `len` data bytes costs SQLite beyond its data
/// pages: the part it keeps in the table's leaf page, plus what stays empty
/// of its last overflow page. SQLite sizes the leaf part from the row's
/// size (`btreeParseCellAdjustSizeForOverflow`; for a 4 KiB page: the whole
/// row up to 4,061 bytes, else 489 plus the remainder modulo 4,092, which
/// fills the overflow pages exactly, or just 489 when that would not fit,
/// which leaves the last overflow page partly empty). Leaf parts share
/// pages, so small ones cost little; large ones leave their pages partly
/// empty.
pub fn leaf_bytes(len: u64) -> u64 {
    let usable = PAGE;
    let max_local = usable - 35;
    let min_local = (usable - 12) * 32 / 255 - 23;
    // The record: header size, the id column (NULL: the row id), the blob's
    // serial type (a varint), then the blob.
    let serial = 2 * len + 12;
    let serial_bytes = (64 - serial.leading_zeros() as u64).div_ceil(7).max(1);
    let payload = 2 + serial_bytes + len;
    if payload <= max_local {
        return payload;
    }
    let surplus = min_local + (payload - min_local) % (usable - 4);
    if surplus <= max_local {
        surplus
    } else {
        let tail = (payload - min_local) % (usable - 4);
        min_local + (usable - 4 - tail)
    }
}

/// Collects a compaction pass's blocks into packs, one open pack per
/// window, and writes each pack once it is full. [`Packer::take_written`]
/// gives the directory entries of the blocks written.
///
/// A pack is written once 1.5 × [`PACK_BYTES`] wait, with the blocks
/// ([`choose`]) whose row leaves the fewest bytes in the table's leaf page
/// ([`leaf_bytes`]): leaf parts of 0.5–4 KB at random fitted about five
/// to a page with a sixth of it empty (400 KB of 22 MB on the storage
/// benchmark's 24 hours), small ones fill their pages.
#[derive(Default)]
pub struct Packer {
    open: BTreeMap<i64, (Vec<u8>, Vec<Member>)>,
    written: Vec<(i64, Entry)>,
}

impl Packer {
    /// Adds a compacted block of `window`; writes packs of the window once
    /// enough blocks wait.
    pub fn add(&mut self, tx: &Transaction<'_>, window: i64, series_id: i64, mint: i64, maxt: i64, block: &[u8]) -> rusqlite::Result<()> {
        let (buf, members) = self.open.entry(window).or_default();
        members.push((series_id, mint, maxt, buf.len() as u64, block.len() as u64));
        buf.extend_from_slice(block);
        if buf.len() >= PACK_BYTES * 3 / 2 {
            let pick = choose(members);
            let (mut out, mut chosen) = (Vec::with_capacity(buf.len()), Vec::with_capacity(pick.len()));
            let (mut rest_buf, mut rest) = (Vec::with_capacity(buf.len()), Vec::new());
            let mut next = pick.iter().peekable();
            for (i, m) in members.iter().enumerate() {
                let bytes = &buf[m.3 as usize..(m.3 + m.4) as usize];
                if next.next_if(|&&j| j == i).is_some() {
                    chosen.push((m.0, m.1, m.2, out.len() as u64, m.4));
                    out.extend_from_slice(bytes);
                } else {
                    rest.push((m.0, m.1, m.2, rest_buf.len() as u64, m.4));
                    rest_buf.extend_from_slice(bytes);
                }
            }
            write_pack(tx, window, &out, &chosen, &mut self.written)?;
            *buf = rest_buf;
            *members = rest;
        }
        Ok(())
    }

    /// Writes every pack still open.
    pub fn finish(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        for (window, (buf, members)) in std::mem::take(&mut self.open) {
            write_pack(tx, window, &buf, &members, &mut self.written)?;
        }
        Ok(())
    }

    /// The blocks written so far, with their windows.
    pub fn take_written(&mut self) -> Vec<(i64, Entry)> {
        std::mem::take(&mut self.written)
    }
}

/// Which of `members` (indexes, ascending; at least one) go into the pack
/// to write: of the sets of a prefix plus at most two later blocks that
/// come to between ½ and 1.5 times [`PACK_BYTES`], the one whose row costs
/// the fewest bytes beyond its data ([`leaf_bytes`]); with about twenty
/// blocks waiting, a couple of hundred sets, so the best is usually within
/// a few dozen bytes of the least SQLite allows. (Blocks of a pack may be in
/// any order: each entry has its offset.)
fn choose(members: &[Member]) -> Vec<usize> {
    let range = (PACK_BYTES / 2) as u64..=(PACK_BYTES * 3 / 2) as u64;
    let n = members.len();
    let len = |i: usize| members[i].4;
    // (cost, then the larger total first; the prefix; up to two more)
    type Choice = ((u64, std::cmp::Reverse<u64>), usize, Option<usize>, Option<usize>);
    let mut best: Option<Choice> = None;
    let mut consider = |total: u64, p: usize, j: Option<usize>, k: Option<usize>| {
        if range.contains(&total) {
            let cost = (leaf_bytes(total), std::cmp::Reverse(total));
            if best.as_ref().is_none_or(|b| cost < b.0) {
                best = Some((cost, p, j, k));
            }
        }
    };
    let mut base = 0;
    for p in 0..=n {
        if p > 0 {
            base += len(p - 1);
        }
        consider(base, p, None, None);
        // (Pairs from the next few dozen blocks: small blocks give many
        // prefixes to choose from anyway.)
        let near = n.min(p + 24);
        for j in p..near {
            consider(base + len(j), p, Some(j), None);
            for k in j + 1..near {
                consider(base + len(j) + len(k), p, Some(j), Some(k));
            }
        }
    }
    match best {
        Some((_, p, j, k)) => {
            let mut v: Vec<usize> = (0..p).chain(j).chain(k).collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        None => (0..n).collect(),
    }
}

fn write_pack(tx: &Transaction<'_>, window: i64, buf: &[u8], members: &[Member], written: &mut Vec<(i64, Entry)>) -> rusqlite::Result<()> {
    if members.is_empty() {
        return Ok(());
    }
    tx.prepare_cached(sqlite::INSERT_PACK)?.execute(params![buf])?;
    let pack = tx.last_insert_rowid();
    for &(series, mint, maxt, offset, len) in members {
        written.push((
            window,
            Entry {
                series,
                mint,
                maxt,
                at: BlockRef { pack, offset, len },
            },
        ));
    }
    Ok(())
}

/// Deletes those of `packs` that no chunk row refers to any more; returns
/// how many.
pub fn collect(tx: &Connection, packs: &BTreeSet<i64>) -> rusqlite::Result<usize> {
    let mut del = tx.prepare_cached(sqlite::DELETE_PACK_IF_UNUSED)?;
    let mut n = 0;
    for &p in packs {
        n += del.execute(params![p])?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_bad_ones_are_named() {
        let r = BlockRef {
            pack: 300,
            offset: 70_000,
            len: 1234,
        };
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(BlockRef::parse(&b), Some(Ok(r)));
        assert_eq!(BlockRef::parse(&[0x21, 0]), None, "a block is not a reference");
        assert_eq!(BlockRef::parse(&[REF_FORMAT, 1, 2]), Some(Err("length")));
        let mut long = b.clone();
        long.push(0);
        assert_eq!(BlockRef::parse(&long), Some(Err("trailing bytes")));
    }

    #[test]
    fn blocks_are_read_back_from_their_pack_and_unused_packs_are_collected() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut conn = sqlite::open_writer(&d.path().join("p.db")).expect("open");
        let tx = conn.transaction().expect("tx");
        let mut p = Packer::default();
        // Window 0: 1/2 + 1/4 + 1 pack go over 1.5 packs: some of them are
        // written, the rest waits for the end. Window 1 has its own pack.
        let (a, b, c) = (PACK_BYTES / 2, PACK_BYTES / 4, PACK_BYTES);
        p.add(&tx, 0, 1, 10, 20, &vec![7u8; a]).expect("add");
        p.add(&tx, 1, 2, 30, 40, b"window one").expect("add");
        p.add(&tx, 0, 3, 10, 20, &vec![8u8; b]).expect("add");
        p.add(&tx, 0, 4, 10, 20, &vec![9u8; c]).expect("add");
        p.add(&tx, 0, 5, 10, 20, b"second pack").expect("add");
        p.finish(&tx).expect("finish");
        let mut written = p.take_written();
        written.sort_by_key(|(_, e)| e.series);
        let got: Vec<(i64, i64, Vec<u8>)> = written
            .iter()
            .map(|(w, e)| (*w, e.at.pack, e.at.read(&tx).expect("read")))
            .collect();
        assert_eq!(got[0].2, vec![7u8; a]);
        assert_eq!(got[1].2, b"window one");
        assert_eq!(got[2].2, vec![8u8; b]);
        assert_eq!(got[3].2, vec![9u8; c]);
        assert_eq!(got[4].2, b"second pack");
        // Window 0's blocks went into two packs: one written when they
        // went over 1.5 packs, the rest at the end.
        let zero: BTreeSet<i64> = [0, 2, 3, 4].iter().map(|&i| got[i].1).collect();
        assert_eq!(zero.len(), 2, "{got:?}");
        assert!(!zero.contains(&got[1].1), "windows do not share packs");
        assert_eq!((got[1].0, got[3].0), (1, 0), "each block's window");
        // Schema 3's chunk rows that refer to packs: a pack goes once none does.
        let mut data = Vec::new();
        for (_, e) in &written {
            data.clear();
            e.at.encode(&mut data);
            tx.execute(sqlite::INSERT_CHUNK_PACKED, params![e.series, e.mint, e.maxt, &data, e.at.pack])
                .expect("chunk row");
        }
        let all: BTreeSet<i64> = got.iter().map(|g| g.1).collect();
        tx.execute("DELETE FROM chunks WHERE series_id = 2", []).expect("delete");
        assert_eq!(collect(&tx, &all).expect("collect"), 1, "window 1's pack");
        tx.execute("DELETE FROM chunks WHERE series_id IN (1, 3, 4)", []).expect("delete");
        assert_eq!(
            collect(&tx, &all).expect("collect"),
            1,
            "one of window 0's: the other still holds series 5"
        );
        tx.commit().expect("commit");
        let left: i64 = conn.query_row("SELECT count(*) FROM packs", [], |r| r.get(0)).expect("count");
        assert_eq!(left, 1);
        // Ids are never handed out again (AUTOINCREMENT).
        let tx = conn.transaction().expect("tx");
        tx.execute("DELETE FROM chunks", []).expect("delete");
        collect(&tx, &all).expect("collect");
        let mut p = Packer::default();
        p.add(&tx, 0, 5, 10, 20, b"new").expect("add");
        p.finish(&tx).expect("finish");
        let pack = p.take_written()[0].1.at.pack;
        assert!(pack > *all.iter().max().expect("max"), "{pack} reused an id");
    }

    /// The leaf part follows SQLite's rule; the packer cuts where it is small.
    #[test]
    fn packs_are_cut_where_their_leaf_part_is_small() {
        assert_eq!(leaf_bytes(100), 104, "a small row stays in its leaf page");
        let d = tempfile::tempdir().expect("tempdir");
        let mut conn = sqlite::open_writer(&d.path().join("p.db")).expect("open");
        // Rows whose sizes the rule gives small and large leaf parts: the
        // pages SQLite uses agree with the rule.
        let small: Vec<u64> = (30_000..40_000u64).filter(|&n| leaf_bytes(n) < 600).take(40).collect();
        let large: Vec<u64> = (30_000..40_000u64).filter(|&n| leaf_bytes(n) > 3000).take(40).collect();
        // Bytes of pages beyond the data.
        let slack = |conn: &mut Connection, sizes: &[u64]| -> i64 {
            conn.execute_batch("DELETE FROM packs; VACUUM").expect("reset");
            let before: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).expect("pages");
            let tx = conn.transaction().expect("tx");
            for &n in sizes {
                tx.execute(sqlite::INSERT_PACK, params![vec![1u8; n as usize]]).expect("insert");
            }
            tx.commit().expect("commit");
            let after: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).expect("pages");
            (after - before) * 4096 - sizes.iter().sum::<u64>() as i64
        };
        let (a, b) = (slack(&mut conn, &small), slack(&mut conn, &large));
        assert!(2 * a < b, "slack with small leaf parts: {a} bytes, with large: {b}");
        // The choice: in range, and no prefix in range costs less.
        let mut members = Vec::new();
        let mut off = 0u64;
        for i in 0..40u64 {
            let len = 1000 + (i * 7919) % 1500;
            members.push((i as i64, 0, 0, off, len));
            off += len;
        }
        let pick = choose(&members);
        let total: u64 = pick.iter().map(|&i| members[i].4).sum();
        let range = (PACK_BYTES / 2) as u64..=(PACK_BYTES * 3 / 2) as u64;
        assert!(range.contains(&total), "{total}");
        assert!(pick.windows(2).all(|w| w[0] < w[1]), "{pick:?}");
        let end = |i: usize| members[i].3 + members[i].4;
        for i in (0..members.len()).filter(|&i| range.contains(&end(i))) {
            assert!(leaf_bytes(end(i)) >= leaf_bytes(total), "prefix {i} costs less");
        }
        assert!(leaf_bytes(total) < 600, "{} bytes", leaf_bytes(total));
        // One block larger than a pack goes alone.
        assert_eq!(choose(&[(1, 0, 0, 0, 100_000)]), vec![0]);
    }
}
