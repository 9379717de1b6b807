//! Packs: compacted blocks stored together (schema 3).
//!
//! A compacted block is 0.5–6 KB. Stored one per `chunks` row, SQLite fits
//! a few per 4 KiB page and the rest of the page stays empty: on the
//! storage benchmark a fifth of the file was such slack, even right after
//! a VACUUM. So compaction writes its blocks end to end into `packs` rows
//! of about [`PACK_BYTES`], one window per pack, and each `chunks` row
//! keeps only a reference to its block (and the pack's id in its `pack`
//! column, for garbage collection). A pack row is mostly overflow pages,
//! which SQLite fills completely.
//!
//! A reference is the `data` of its chunk row:
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
//! A pack is deleted ([`collect`]) once no chunk row refers to it:
//! retention deletes a window's chunks together, so its packs go with them.
//! A block rewritten by a later compaction (late samples for its window)
//! stays in its pack, unreferenced, until the pack's other blocks go too.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, Transaction, params};

use super::sqlite;
use crate::varint::{put_uvarint, read_uvarint};

/// First byte of a chunk row's `data` that refers to a block in a pack.
pub const REF_FORMAT: u8 = 0x02;

/// A pack is written once its blocks reach this size (or at the end of a
/// compaction pass): large enough that the partly filled page at its start
/// costs little, small enough to be written in one piece.
pub const PACK_BYTES: usize = 32 * 1024;

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

/// Collects a compaction pass's blocks into packs, one open pack per
/// window, and writes each pack with its chunk rows.
#[derive(Default)]
pub struct Packer {
    open: BTreeMap<i64, (Vec<u8>, Vec<Member>)>,
}

impl Packer {
    /// Adds a compacted (level 1) block of `window`; writes the window's
    /// pack, and the chunk rows referring to it, once it is full.
    pub fn add(&mut self, tx: &Transaction<'_>, window: i64, series_id: i64, mint: i64, maxt: i64, block: &[u8]) -> rusqlite::Result<()> {
        let (buf, members) = self.open.entry(window).or_default();
        members.push((series_id, mint, maxt, buf.len() as u64, block.len() as u64));
        buf.extend_from_slice(block);
        if buf.len() >= PACK_BYTES {
            let (buf, members) = self.open.remove(&window).unwrap_or_default();
            write_pack(tx, &buf, &members)?;
        }
        Ok(())
    }

    /// Writes every pack still open.
    pub fn finish(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        for (_, (buf, members)) in std::mem::take(&mut self.open) {
            write_pack(tx, &buf, &members)?;
        }
        Ok(())
    }
}

fn write_pack(tx: &Transaction<'_>, buf: &[u8], members: &[Member]) -> rusqlite::Result<()> {
    if members.is_empty() {
        return Ok(());
    }
    tx.prepare_cached(sqlite::INSERT_PACK)?.execute(params![buf])?;
    let pack = tx.last_insert_rowid();
    let mut ins = tx.prepare_cached(sqlite::INSERT_CHUNK_PACKED)?;
    let mut data = Vec::with_capacity(16);
    for &(series_id, mint, maxt, offset, len) in members {
        data.clear();
        BlockRef { pack, offset, len }.encode(&mut data);
        ins.execute(params![series_id, mint, maxt, &data, pack])?;
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
        // Window 0 fills one pack and starts another; window 1 has its own.
        let big = vec![7u8; PACK_BYTES - 10];
        p.add(&tx, 0, 1, 10, 20, &big).expect("add");
        p.add(&tx, 1, 2, 30, 40, b"window one").expect("add");
        p.add(&tx, 0, 3, 10, 20, b"fills the first pack").expect("add");
        p.add(&tx, 0, 4, 10, 20, b"second pack").expect("add");
        p.finish(&tx).expect("finish");
        tx.commit().expect("commit");
        let rows: Vec<(i64, Vec<u8>, i64)> = conn
            .prepare("SELECT series_id, data, pack FROM chunks ORDER BY series_id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let read = |data: &[u8]| {
            let r = BlockRef::parse(data).expect("a reference").expect("parses");
            (r.pack, r.read(&conn).expect("read"))
        };
        let got: Vec<(i64, Vec<u8>)> = rows.iter().map(|(_, data, _)| read(data)).collect();
        assert_eq!(got[0].1, big);
        assert_eq!(got[1].1, b"window one");
        assert_eq!(got[2].1, b"fills the first pack");
        assert_eq!(got[3].1, b"second pack");
        assert_eq!(got[0].0, got[2].0, "one pack until it is full");
        assert_ne!(got[0].0, got[3].0);
        assert_ne!(got[0].0, got[1].0, "windows do not share packs");
        for (_, data, pack) in &rows {
            assert_eq!(read(data).0, *pack, "the pack column names the same pack");
        }
        // A block outside its pack is an error, not a panic.
        let bad = BlockRef {
            pack: got[1].0,
            offset: 5,
            len: 100,
        };
        assert!(bad.read(&conn).expect_err("outside").contains("outside"));
        // Packs go once nothing refers to them.
        let all: BTreeSet<i64> = got.iter().map(|g| g.0).collect();
        let tx = conn.transaction().expect("tx");
        tx.execute("DELETE FROM chunks WHERE series_id IN (1, 2)", []).expect("delete");
        assert_eq!(
            collect(&tx, &all).expect("collect"),
            1,
            "window 1's pack; the first still holds series 3"
        );
        tx.execute("DELETE FROM chunks WHERE series_id = 3", []).expect("delete");
        assert_eq!(collect(&tx, &all).expect("collect"), 1);
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
        let pack: i64 = tx.query_row("SELECT pack FROM chunks", [], |r| r.get(0)).expect("pack");
        assert!(pack > *all.iter().max().expect("max"), "{pack} reused an id");
    }
}
