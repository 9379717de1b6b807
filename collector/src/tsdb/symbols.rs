//! The symbol table of series rows (schema 3).
//!
//! Every distinct label name and value is stored once, in `symbols(id,
//! text)`, and a series row's `labels` is a BLOB of symbol ids:
//!
//! ```text
//! n: uvarint │ n × (name: uvarint │ value: uvarint)     -- ids of `symbols` rows
//! ```
//!
//! The pairs are in the series' label order (sorted by name). A fleet's
//! series share most of their strings (metric names, `job`, `commons`,
//! `instance` and device names repeat across thousands of series), so a
//! row takes about 10 bytes where its JSON text took about 125: on the
//! storage benchmark's 10,140 node_exporter series, 1.4 MB of series rows
//! became 0.15 MB, a tenth of a byte per sample at 6 hours of data.
//!
//! Rows written before schema 3 hold JSON text (`[[name,value],...]`) and
//! are still read as such: a row's SQLite type tells the two apart.
//!
//! Symbols are never deleted (series are not either). The writer keeps the
//! map from text to id in memory; the symbols a failed transaction added
//! are taken out of it again ([`Symbols::rollback`]), so no committed row
//! refers to a symbol that is not in the table.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Statement, params};

use super::{Labels, TsdbError, sqlite};
use crate::varint::{put_uvarint, read_uvarint};

/// The writer's map from symbol text to id.
#[derive(Debug, Default)]
pub struct Symbols {
    ids: HashMap<Arc<str>, u64>,
    next: u64,
    /// Symbols added since the last commit or rollback.
    pending: Vec<Arc<str>>,
}

/// Every symbol of a database by id, for decoding series rows at open.
pub type SymbolTexts = HashMap<u64, Arc<str>>;

impl Symbols {
    /// Reads the `symbols` table: the writer's map, and the texts by id.
    pub fn load(conn: &Connection) -> Result<(Symbols, SymbolTexts), TsdbError> {
        let mut texts = SymbolTexts::new();
        let mut ids = HashMap::new();
        let mut next = 1u64;
        let mut stmt = conn.prepare(sqlite::SELECT_ALL_SYMBOLS)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let text: String = row.get(1)?;
            let id = u64::try_from(id).map_err(|_| TsdbError::Corrupt(format!("symbol id {id} is negative")))?;
            let text: Arc<str> = text.into();
            next = next.max(id.saturating_add(1));
            ids.insert(text.clone(), id);
            texts.insert(id, text);
        }
        Ok((
            Symbols {
                ids,
                next,
                pending: Vec::new(),
            },
            texts,
        ))
    }

    /// Appends the row encoding of `labels` to `out`, adding symbols that
    /// are new with `insert` (the prepared [`sqlite::INSERT_SYMBOL`] of the
    /// transaction the series row is written in).
    pub fn encode_row(&mut self, labels: &Labels, insert: &mut Statement<'_>, out: &mut Vec<u8>) -> rusqlite::Result<()> {
        put_uvarint(out, labels.len() as u64);
        for (name, value) in labels {
            let n = self.intern(name, insert)?;
            put_uvarint(out, n);
            let v = self.intern(value, insert)?;
            put_uvarint(out, v);
        }
        Ok(())
    }

    fn intern(&mut self, text: &str, insert: &mut Statement<'_>) -> rusqlite::Result<u64> {
        if let Some(&id) = self.ids.get(text) {
            return Ok(id);
        }
        let id = self.next;
        insert.execute(params![id as i64, text])?;
        self.next += 1;
        let text: Arc<str> = text.into();
        self.ids.insert(text.clone(), id);
        self.pending.push(text);
        Ok(id)
    }

    /// The transaction that added the pending symbols committed.
    pub fn commit(&mut self) {
        self.pending.clear();
    }

    /// The transaction that added the pending symbols rolled back: forget
    /// them (their ids are handed out again).
    pub fn rollback(&mut self) {
        for text in self.pending.drain(..) {
            if let Some(id) = self.ids.remove(&text) {
                self.next = self.next.min(id);
            }
        }
    }

    /// Number of symbols known.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Decodes a series row's `labels` column: symbol ids (schema 3) or JSON
/// text (earlier rows). `None` when it is neither, or names a symbol that
/// does not exist.
pub fn decode_row(value: ValueRef<'_>, texts: &SymbolTexts) -> Option<Labels> {
    match value {
        ValueRef::Text(t) => super::decode_labels(std::str::from_utf8(t).ok()?),
        ValueRef::Blob(b) => {
            let mut pos = 0;
            let n = read_uvarint(b, &mut pos).ok()?;
            // Each pair takes at least two bytes.
            if n > (b.len() as u64) / 2 {
                return None;
            }
            let mut labels = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let name = texts.get(&read_uvarint(b, &mut pos).ok()?)?;
                let value = texts.get(&read_uvarint(b, &mut pos).ok()?)?;
                labels.push((name.to_string(), value.to_string()));
            }
            (pos == b.len()).then_some(labels)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let d = tempfile::tempdir().expect("tempdir");
        let conn = sqlite::open_writer(&d.path().join("s.db")).expect("open");
        (d, conn)
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn row(conn: &Connection, id: i64) -> (Option<Labels>, usize) {
        let (_, texts) = Symbols::load(conn).expect("load");
        conn.query_row("SELECT labels, length(labels) FROM series WHERE id = ?1", [id], |r| {
            Ok((decode_row(r.get_ref(0)?, &texts), r.get::<_, i64>(1)? as usize))
        })
        .expect("row")
    }

    #[test]
    fn rows_share_symbols_and_decode_after_a_reload() {
        let (_d, mut conn) = db();
        let a = labels(&[("__name__", "node_cpu_seconds_total"), ("cpu", "0"), ("mode", "idle")]);
        let b = labels(&[("__name__", "node_cpu_seconds_total"), ("cpu", "1"), ("mode", "idle")]);
        let (mut syms, _) = Symbols::load(&conn).expect("load");
        let tx = conn.transaction().expect("tx");
        {
            let mut ins = tx.prepare(sqlite::INSERT_SYMBOL).expect("prepare");
            for (id, l) in [(1, &a), (2, &b)] {
                let mut buf = Vec::new();
                syms.encode_row(l, &mut ins, &mut buf).expect("encode");
                tx.execute(sqlite::INSERT_SERIES, params![id, buf]).expect("series");
            }
        }
        tx.commit().expect("commit");
        syms.commit();
        assert_eq!(syms.len(), 7, "six strings of a, and b's \"1\"");
        let (la, len_a) = row(&conn, 1);
        assert_eq!(la.as_ref(), Some(&a));
        assert_eq!(len_a, 7, "a count and six one-byte ids");
        assert_eq!(row(&conn, 2).0.as_ref(), Some(&b));
        // A reloaded table continues after the highest id.
        let (again, texts) = Symbols::load(&conn).expect("reload");
        assert_eq!(again.next, 8);
        assert_eq!(texts.len(), 7);
    }

    #[test]
    fn json_rows_from_before_schema_3_still_decode() {
        let (_d, conn) = db();
        let l = labels(&[("__name__", "up"), ("job", "x")]);
        conn.execute(sqlite::INSERT_SERIES, params![1, super::super::encode_labels(&l)])
            .expect("insert");
        assert_eq!(row(&conn, 1).0, Some(l));
    }

    #[test]
    fn a_rolled_back_transaction_leaves_no_symbol_behind() {
        let (_d, mut conn) = db();
        let (mut syms, _) = Symbols::load(&conn).expect("load");
        {
            let tx = conn.transaction().expect("tx");
            let mut ins = tx.prepare(sqlite::INSERT_SYMBOL).expect("prepare");
            let mut buf = Vec::new();
            syms.encode_row(&labels(&[("__name__", "lost")]), &mut ins, &mut buf)
                .expect("encode");
            // Dropped without commit: rolled back.
        }
        syms.rollback();
        assert_eq!(syms.len(), 0);
        let tx = conn.transaction().expect("tx");
        {
            let mut ins = tx.prepare(sqlite::INSERT_SYMBOL).expect("prepare");
            let mut buf = Vec::new();
            syms.encode_row(&labels(&[("__name__", "kept")]), &mut ins, &mut buf)
                .expect("encode");
            tx.execute(sqlite::INSERT_SERIES, params![1, buf]).expect("series");
        }
        tx.commit().expect("commit");
        syms.commit();
        assert_eq!(row(&conn, 1).0, Some(labels(&[("__name__", "kept")])));
        let (_, texts) = Symbols::load(&conn).expect("reload");
        assert!(texts.values().all(|t| &**t != "lost"), "{texts:?}");
    }

    #[test]
    fn corrupt_rows_are_refused() {
        let texts: SymbolTexts = [(1, Arc::<str>::from("a"))].into_iter().collect();
        for bad in [
            &[][..],                       // no count
            &[1, 1][..],                   // a pair cut short
            &[1, 1, 2][..],                // unknown symbol
            &[1, 1, 1, 0][..],             // trailing byte
            &[0xff, 0xff, 0xff, 0x7f][..], // a count far beyond the row
        ] {
            assert_eq!(decode_row(ValueRef::Blob(bad), &texts), None, "{bad:?}");
        }
        assert_eq!(decode_row(ValueRef::Blob(&[1, 1, 1]), &texts), Some(labels(&[("a", "a")])));
        assert_eq!(decode_row(ValueRef::Integer(3), &texts), None);
    }
}
