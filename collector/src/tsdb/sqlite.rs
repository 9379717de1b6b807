//! The SQLite schema and every SQL statement of the storage.
//!
//! ```sql
//! meta(key PRIMARY KEY, value)              -- schema_version; wal_last_id (ids never repeat);
//!                                           -- wal_replay_from (rows below: for remote write only)
//! series(id INTEGER PRIMARY KEY, labels)    -- labels: BLOB of symbol ids (symbols.rs), or
//!                                           -- JSON text [[name,value],...] in rows written
//!                                           -- before schema 3; sorted by name; unique by
//!                                           -- construction (the in-memory index is consulted
//!                                           -- before a series is created)
//! symbols(id INTEGER PRIMARY KEY, text)     -- every label name and value of a series row, once
//! (no postings table: the label index is in memory, rebuilt from
//!  `series` at start; databases that have the old, never-read
//!  `postings` table have it dropped at open)
//! chunks(id INTEGER PRIMARY KEY, series_id, level, mint, maxt, data BLOB, pack)
//!                                           -- data: chunkenc block, or a reference to one in
//!                                           -- pack `pack` (pack.rs; pack NULL otherwise);
//!                                           -- id = persistence order, later ids win on equal
//!                                           -- timestamps; level 0 = a closed head chunk,
//!                                           -- 1 = compacted (compact.rs; schema 3 only)
//!   INDEX chunks_by_series(series_id, maxt)
//!   INDEX chunks_by_level(level, maxt)      -- retention, compaction candidates
//!   INDEX chunks_by_pack(pack) WHERE pack IS NOT NULL
//! packs(id INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB)
//!                                           -- compacted blocks end to end (pack.rs); ids
//!                                           -- never reused, rows never changed
//! blockdir(grp, window, n, mint, maxt, entries) PRIMARY KEY (grp, window), WITHOUT ROWID
//!                                           -- where each compacted block is (schema 4,
//!                                           -- blockdir.rs); level-1 chunk rows are from
//!                                           -- schema 3 databases
//! pack_refs(pack INTEGER PRIMARY KEY, refs) -- directory entries naming each pack
//! wal(id INTEGER PRIMARY KEY, data BLOB)    -- record.rs records, one per group commit; ids only
//!                                           -- grow (remote write saves positions in them)
//! agent_seq(commons, agent, epoch, seq, updated_ms, samples, PRIMARY KEY(commons, agent, epoch))
//!                                           -- samples: applied by this identity, ever (the
//!                                           -- exactly-once ledger: updated with the data)
//! ```
//! One database file in WAL journal mode with `synchronous=FULL` (a commit
//! is durable when it returns) and `auto_vacuum=INCREMENTAL`
//! (retention and flush give space back to the file system).

use rusqlite::{Connection, OpenFlags, params};

use super::TsdbError;

/// Version of the schema this code writes.
pub const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, labels TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS symbols (id INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    level INTEGER NOT NULL DEFAULT 0,
    mint INTEGER NOT NULL,
    maxt INTEGER NOT NULL,
    data BLOB NOT NULL,
    pack INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_by_series ON chunks(series_id, maxt);
CREATE INDEX IF NOT EXISTS chunks_by_level ON chunks(level, maxt);
CREATE TABLE IF NOT EXISTS packs (id INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blockdir (
    grp INTEGER NOT NULL,
    window INTEGER NOT NULL,
    n INTEGER NOT NULL,
    mint INTEGER NOT NULL,
    maxt INTEGER NOT NULL,
    entries BLOB NOT NULL,
    PRIMARY KEY (grp, window)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pack_refs (pack INTEGER PRIMARY KEY, refs INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS wal (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS agent_seq (
    commons TEXT NOT NULL,
    agent TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    samples INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (commons, agent, epoch)
);
";

/// Bytes SQLite's WAL file is cut back to when a checkpoint resets it.
pub const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Opens the database for writing and creates or checks the schema.
pub fn open_writer(path: &std::path::Path) -> Result<Connection, TsdbError> {
    let conn = Connection::open(path)?;
    // Must precede the first table; a no-op on an existing database. (The
    // default 4 KiB pages are kept: 16 KiB pages measured 18 % more bytes
    // per sample, as compaction leaves more partly-filled pages.)
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // SQLite's WAL file keeps the size of its largest transaction until a
    // checkpoint resets it; then it is cut back to this many bytes.
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let version: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .ok();
    match version.as_deref() {
        None => {
            let has_samples: bool = conn
                .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'samples'", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n > 0)
                .unwrap_or(false);
            if has_samples {
                return Err(TsdbError::Schema(format!(
                    "{} was written by csoc-collector 0.1's first storage (schema 1), which this version does not read; move it aside to start afresh",
                    path.display()
                )));
            }
            conn.execute_batch(SCHEMA)?;
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )?;
        }
        Some(v) if v == SCHEMA_VERSION.to_string() || v == "2" || v == "3" => {
            conn.execute_batch(SCHEMA)?;
            // Earlier versions wrote every series' labels a second time, as
            // postings rows nothing read (the index is built from `series`):
            // a third of the cost of creating a series, and disk. The pages
            // go to the free list, given back by the next flush.
            conn.execute_batch("DROP TABLE IF EXISTS postings")?;
            // Databases from before the samples ledger: add its column.
            let has_ledger: bool = conn
                .query_row(
                    "SELECT count(*) FROM pragma_table_info('agent_seq') WHERE name = 'samples'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n > 0)?;
            if !has_ledger {
                conn.execute_batch("ALTER TABLE agent_seq ADD COLUMN samples INTEGER NOT NULL DEFAULT 0")?;
            }
            // Schema 3 stores compacted blocks in packs: the column that
            // names a chunk's pack.
            let has_pack: bool = conn
                .query_row("SELECT count(*) FROM pragma_table_info('chunks') WHERE name = 'pack'", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n > 0)?;
            if !has_pack {
                conn.execute_batch("ALTER TABLE chunks ADD COLUMN pack INTEGER")?;
            }
            if v == "2" || v == "3" {
                // Schema 3 adds the symbols table (created above) and writes
                // new series rows as symbol ids, and packs compacted blocks;
                // schema 4 lists compacted blocks in the block directory
                // (blockdir.rs) instead of chunk rows. Rows of the older
                // schemas (JSON series rows, inline blocks, level-1 chunk
                // rows) are still read, and compacted anew when late
                // samples come for their window. The version is raised so
                // that an older collector refuses the file instead of
                // missing the directory's blocks.
                conn.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                    params![SCHEMA_VERSION.to_string()],
                )?;
            }
        }
        Some(v) => {
            return Err(TsdbError::Schema(format!(
                "{} has schema version {v}; this collector reads versions 2 to {SCHEMA_VERSION}",
                path.display()
            )));
        }
    }
    conn.execute_batch(INDEXES_AFTER_UPGRADE)?;
    Ok(conn)
}

/// Indexes on columns that an upgrade may have just added.
const INDEXES_AFTER_UPGRADE: &str = "CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks(pack) WHERE pack IS NOT NULL;";

/// Returns every free page to the file system. `PRAGMA incremental_vacuum`
/// frees one page per step, so it must be stepped to the end.
pub fn incremental_vacuum(conn: &Connection) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Opens a read-only connection.
pub fn open_reader(path: &std::path::Path) -> Result<Connection, TsdbError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// Every series: (id, labels: symbol ids or JSON text).
pub const SELECT_ALL_SERIES: &str = "SELECT id, labels FROM series ORDER BY id";
/// Every symbol: (id, text).
pub const SELECT_ALL_SYMBOLS: &str = "SELECT id, text FROM symbols";
/// Adds a symbol with a given id.
pub const INSERT_SYMBOL: &str = "INSERT INTO symbols(id, text) VALUES (?1, ?2)";
/// Adds a series with a given id.
pub const INSERT_SERIES: &str = "INSERT INTO series(id, labels) VALUES (?1, ?2)";
/// Highest series id.
pub const MAX_SERIES_ID: &str = "SELECT coalesce(max(id), 0) FROM series";
/// Adds a persisted chunk.
pub const INSERT_CHUNK: &str = "INSERT INTO chunks(series_id, mint, maxt, data) VALUES (?1, ?2, ?3, ?4)";
/// A series' chunks overlapping [?2, ?3] and its directory rows of group ?4
/// in windows [?5, ?6] with entries overlapping [?2, ?3], in one statement
/// (one snapshot): (0, chunk id, data) and (1, window, entries).
///
/// In index order, not by id: `ORDER BY id` made SQLite sort the rows,
/// blobs included, in a temporary B-tree for every series (a quarter of an
/// instant query's time went to that sorter's allocations and copies). The
/// reader orders a series' few chunks by id, and blocks by window, itself.
pub const SELECT_CHUNKS_AND_DIR: &str = "SELECT 0, id, data FROM chunks WHERE series_id = ?1 AND maxt >= ?2 AND mint <= ?3
    UNION ALL
    SELECT 1, window, entries FROM blockdir WHERE grp = ?4 AND window >= ?5 AND window <= ?6 AND maxt >= ?2 AND mint <= ?3";
/// Whether a series has a chunk overlapping [mint, maxt].
pub const SERIES_HAS_CHUNK_IN: &str = "SELECT 1 FROM chunks WHERE series_id = ?1 AND maxt >= ?2 AND mint <= ?3 LIMIT 1";
/// Number of persisted chunks and their time bounds.
pub const CHUNK_STATS: &str = "SELECT count(*), min(mint), max(maxt) FROM chunks";
/// Adds a WAL record.
pub const INSERT_WAL: &str = "INSERT INTO wal(id, data) VALUES (?1, ?2)";
/// WAL records in (?1, ?2], in order, at most ?3.
pub const SELECT_WAL_AFTER: &str = "SELECT id, data FROM wal WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3";
/// The highest WAL id ever written (kept when a checkpoint empties the WAL).
pub const SELECT_WAL_LAST_ID: &str = "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'wal_last_id'";
/// The first WAL id the head needs at start (rows below it are only kept
/// for remote write: their samples are in persisted chunks).
pub const SELECT_WAL_REPLAY_FROM: &str = "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'wal_replay_from'";
/// Records where replay starts.
pub const UPSERT_WAL_REPLAY_FROM: &str = "INSERT INTO meta(key, value) VALUES ('wal_replay_from', ?1)
    ON CONFLICT(key) DO UPDATE SET value = excluded.value";
/// Records the highest WAL id ever written.
pub const UPSERT_WAL_LAST_ID: &str = "INSERT INTO meta(key, value) VALUES ('wal_last_id', ?1)
    ON CONFLICT(key) DO UPDATE SET value = excluded.value";
/// WAL records from a row on, in order.
pub const SELECT_WAL_FROM: &str = "SELECT id, data FROM wal WHERE id >= ?1 ORDER BY id LIMIT 256";
/// Number of WAL records.
pub const COUNT_WAL: &str = "SELECT count(*), coalesce(max(id), 0) FROM wal";
/// Bytes of the WAL records.
pub const WAL_BYTES: &str = "SELECT coalesce(sum(length(data)), 0) FROM wal";
/// Drops WAL records below a row.
pub const TRUNCATE_WAL_BELOW: &str = "DELETE FROM wal WHERE id < ?1";
/// Drops WAL records from a row on (a torn tail).
pub const TRUNCATE_WAL_FROM: &str = "DELETE FROM wal WHERE id >= ?1";
/// The applied seq of an agent identity.
pub const SELECT_AGENT_SEQ: &str = "SELECT seq FROM agent_seq WHERE commons = ?1 AND agent = ?2 AND epoch = ?3";
/// Records an applied seq.
pub const UPSERT_AGENT_SEQ: &str = "INSERT INTO agent_seq(commons, agent, epoch, seq, updated_ms, samples) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT(commons, agent, epoch) DO UPDATE SET seq = excluded.seq, updated_ms = excluded.updated_ms,
    samples = agent_seq.samples + excluded.samples";
/// Every agent identity's ledger.
pub const SELECT_AGENT_LEDGER: &str = "SELECT commons, agent, epoch, seq, samples FROM agent_seq ORDER BY commons, agent, epoch";
/// Deletes chunks that end before a time (retention by age).
pub const DELETE_CHUNKS_BEFORE: &str = "DELETE FROM chunks WHERE level IN (0, 1) AND maxt < ?1";
/// The packs of the chunks that end before a time.
pub const PACKS_OF_CHUNKS_BEFORE: &str = "SELECT DISTINCT pack FROM chunks WHERE level IN (0, 1) AND maxt < ?1 AND pack IS NOT NULL";
/// The oldest chunks (retention by size): (id, data, pack, maxt).
pub const OLDEST_CHUNKS: &str = "SELECT id, data, pack, maxt FROM chunks WHERE level IN (0, 1) ORDER BY maxt LIMIT ?1";
/// Adds a pack.
pub const INSERT_PACK: &str = "INSERT INTO packs(data) VALUES (?1)";
/// Adds a compacted chunk whose block is in a pack (`data` is the
/// reference), as schema 3 wrote them (tests of reading such rows).
#[cfg(test)]
pub const INSERT_CHUNK_PACKED: &str = "INSERT INTO chunks(series_id, level, mint, maxt, data, pack) VALUES (?1, 1, ?2, ?3, ?4, ?5)";
/// Deletes a pack that no chunk refers to.
pub const DELETE_PACK_IF_UNUSED: &str = "DELETE FROM packs WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM chunks WHERE pack = ?1)
    AND NOT EXISTS (SELECT 1 FROM pack_refs WHERE pack = ?1 AND refs > 0)";
/// Compaction candidates: (series, window start) with level-0 chunks that
/// start before a time. ?2 is the window length.
pub const COMPACT_CANDIDATES: &str = "SELECT DISTINCT series_id, mint - (((mint % ?2) + ?2) % ?2) FROM chunks
    WHERE level = 0 AND mint < ?1 LIMIT ?3";
/// Chunks of a series starting in [start, end), in persistence order: (id, data, pack).
pub const CHUNKS_IN_WINDOW: &str = "SELECT id, data, pack FROM chunks WHERE series_id = ?1 AND mint >= ?2 AND mint < ?3 ORDER BY id";
/// Deletes one chunk.
pub const DELETE_CHUNK: &str = "DELETE FROM chunks WHERE id = ?1";
/// Deletes a pack no directory entry names any more (unless a schema-3
/// chunk row still does).
pub const DELETE_PACK: &str = "DELETE FROM packs WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM chunks WHERE pack = ?1)";
/// Directory rows of a group in windows [?2, ?3] with entries overlapping
/// [?4, ?5], in window order: (window, entries).
pub const SELECT_DIR_ROWS: &str = "SELECT window, entries FROM blockdir
    WHERE grp = ?1 AND window >= ?2 AND window <= ?3 AND maxt >= ?4 AND mint <= ?5 ORDER BY window";
/// One directory row's entries.
pub const SELECT_DIR_ROW: &str = "SELECT entries FROM blockdir WHERE grp = ?1 AND window = ?2";
/// Writes a directory row.
pub const UPSERT_DIR_ROW: &str = "INSERT OR REPLACE INTO blockdir(grp, window, n, mint, maxt, entries) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// Deletes a directory row.
pub const DELETE_DIR_ROW: &str = "DELETE FROM blockdir WHERE grp = ?1 AND window = ?2";
/// Directory rows with an entry that starts before a time: (grp, window).
pub const DIR_ROWS_STARTING_BEFORE: &str = "SELECT grp, window FROM blockdir WHERE mint < ?1";
/// The oldest directory rows: (grp, window, entries).
pub const OLDEST_DIR_ROWS: &str = "SELECT grp, window, entries FROM blockdir ORDER BY mint LIMIT ?1";
/// Number of directory entries and their time bounds.
pub const DIR_STATS: &str = "SELECT coalesce(sum(n), 0), min(mint), max(maxt) FROM blockdir";
/// Adds to a pack's reference count; returns the new count.
pub const ADD_PACK_REFS: &str = "INSERT INTO pack_refs(pack, refs) VALUES (?1, ?2)
    ON CONFLICT(pack) DO UPDATE SET refs = refs + excluded.refs RETURNING refs";
/// Forgets a pack's reference count.
pub const DELETE_PACK_REFS: &str = "DELETE FROM pack_refs WHERE pack = ?1";
