//! Snapshots (`POST /api/v1/admin/tsdb/snapshot`, Prometheus's
//! `DB.Snapshot`): a consistent copy of the database under
//! `<data-dir>/snapshots/<name>/csoc.db`, taken while ingest goes on.
//!
//! The copy is SQLite's `VACUUM INTO` run in one read transaction on a
//! read-only connection: it sees the database as of one commit, never
//! blocks the writer (WAL journal mode), and writes a compact file. The
//! write-ahead log is a table of the same database, so the head (the
//! samples not yet in persisted chunks) is in the copy as its WAL records:
//! a collector started on the copy replays them as after a crash at that
//! commit, and answers the same queries. With `skip_head` the WAL records
//! are left out, as Prometheus leaves out its head block: the copy holds
//! only persisted chunks (recent data missing until the next flush).
//!
//! The copy is written under a temporary name and renamed into place, so
//! a directory named in a response always holds a whole database.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::Connection;

use super::{Tsdb, TsdbError, sqlite};

/// The directory, under the data directory, that holds the snapshots.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// What a snapshot did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SnapshotStats {
    /// The snapshot's name (its directory under `snapshots/`).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Size of the copied database, bytes.
    pub bytes: u64,
    /// Series in the copy.
    pub series: u64,
    /// WAL records in the copy (0 with `skip_head`).
    pub wal_records: u64,
    /// Time taken.
    pub seconds: f64,
}

/// A snapshot name as Prometheus makes them: UTC time and 16 random hex
/// digits (`20261207T041806Z-5e1c0a9b3f2d4c71`).
pub fn snapshot_name(now: std::time::SystemTime) -> String {
    let t = humantime::format_rfc3339_seconds(now).to_string().replace(['-', ':'], "");
    let mut r = [0u8; 8];
    if getrandom::fill(&mut r).is_err() {
        // A clock-derived suffix is still unique enough for names taken
        // by hand; the time prefix keeps them ordered.
        let nanos = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        r = u64::from(nanos).to_be_bytes();
    }
    format!("{t}-{}", hex::encode(r))
}

/// Whether `name` is safe as one path component under `snapshots/`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Tsdb {
    /// The data directory (where `csoc.db` is).
    pub fn data_dir(&self) -> PathBuf {
        self.shared.path.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// Writes a consistent copy of the database to
    /// `<data-dir>/snapshots/<name>/csoc.db` (see the module docs). Blocking:
    /// call it from a blocking task. Fails if the name is unsafe or taken.
    pub fn snapshot_blocking(&self, name: &str, skip_head: bool) -> Result<SnapshotStats, TsdbError> {
        let started = Instant::now();
        if !valid_name(name) {
            return Err(TsdbError::Write(format!(
                "invalid snapshot name {name:?} (letters, digits, '-', '_' and '.' only)"
            )));
        }
        let root = self.data_dir().join(SNAPSHOTS_DIR);
        let dir = root.join(name);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TsdbError::Dir { path, source }
        };
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        if dir.exists() {
            return Err(TsdbError::Write(format!("snapshot {name} already exists")));
        }
        let tmp = root.join(format!(".{name}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let result = (|| {
            let db_path = tmp.join("csoc.db");
            let target = db_path
                .to_str()
                .ok_or_else(|| TsdbError::Write(format!("snapshot path {} is not UTF-8", db_path.display())))?
                .to_string();
            // A connection of its own (not the pool's): VACUUM INTO runs as
            // one read transaction, as long as the copy takes.
            let src = sqlite::open_reader(&self.shared.path)?;
            src.execute("VACUUM INTO ?1", [&target])?;
            drop(src);
            let copy = Connection::open(&db_path)?;
            if skip_head {
                copy.execute("DELETE FROM wal", [])?;
                copy.execute_batch("VACUUM")?;
            }
            let series: i64 = copy.query_row("SELECT count(*) FROM series", [], |r| r.get(0))?;
            let wal: i64 = copy.query_row("SELECT count(*) FROM wal", [], |r| r.get(0))?;
            drop(copy);
            let bytes = std::fs::metadata(&db_path).map_err(io(&db_path))?.len();
            Ok((series, wal, bytes))
        })();
        let (series, wal, bytes) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
        let stats = SnapshotStats {
            name: name.to_string(),
            dir,
            bytes,
            series: series.max(0) as u64,
            wal_records: wal.max(0) as u64,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(name, skip_head, bytes, series = stats.series, wal_records = stats.wal_records, elapsed = ?started.elapsed(), "snapshot written");
        Ok(stats)
    }

    /// [`Tsdb::snapshot_blocking`] in a blocking task.
    pub async fn snapshot(&self, name: String, skip_head: bool) -> Result<SnapshotStats, TsdbError> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.snapshot_blocking(&name, skip_head))
            .await
            .map_err(|e| TsdbError::Write(format!("snapshot task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::registry::Registry;

    use super::super::{CommitOutcome, Labels, Matcher, Queryable, TsdbOptions};
    use super::*;

    fn labels(i: i64) -> Arc<Labels> {
        Arc::new(vec![("__name__".into(), "m".into()), ("i".into(), i.to_string())])
    }

    fn count(db: &Tsdb) -> usize {
        db.querier(i64::MIN, i64::MAX)
            .select(&[Matcher::equal("__name__", "m")])
            .expect("select")
            .iter()
            .map(|s| s.samples.len())
            .sum()
    }

    #[test]
    fn names_look_like_prometheus_and_are_checked() {
        let n = snapshot_name(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_616_000));
        let (t, r) = n.split_once('-').expect("dash");
        assert_eq!(t, "20261207T040000Z");
        assert_eq!(r.len(), 16);
        assert!(valid_name(&n));
        for bad in ["", "..", "a/b", "../x", "a b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_under_ingest_reopens_with_the_same_data() {
        let d = tempfile::tempdir().expect("tempdir");
        let db = Tsdb::open(d.path(), &TsdbOptions::default(), &mut Registry::default()).expect("open");
        // Some persisted, some only in the WAL.
        let mut a = db.appender();
        for t in 0..300 {
            a.append(labels(0), t * 1000, t as f64);
        }
        assert_eq!(a.commit().await.expect("commit").outcome, CommitOutcome::Applied);
        db.flush().await.expect("flush");
        let mut a = db.appender();
        for t in 300..400 {
            a.append(labels(0), t * 1000, t as f64);
        }
        a.commit().await.expect("commit");
        // Ingest goes on while the snapshot is taken.
        let writer = {
            let db = db.clone();
            tokio::spawn(async move {
                for t in 0..50 {
                    let mut a = db.appender();
                    a.append(labels(1), t * 1000, 1.0);
                    a.commit().await.expect("commit during snapshot");
                }
            })
        };
        let s = db.snapshot("full".into(), false).await.expect("snapshot");
        writer.await.expect("writer");
        assert!(s.wal_records > 0, "{s:?}");
        assert!(db.snapshot("full".into(), false).await.is_err(), "a taken name is refused");
        let head = db.snapshot("nohead".into(), true).await.expect("snapshot");
        assert_eq!(head.wal_records, 0);
        assert_eq!(db.data_dir().join("snapshots/full"), s.dir);
        let copy = Tsdb::open(&s.dir, &TsdbOptions::default(), &mut Registry::default()).expect("open copy");
        let n = count(&copy);
        assert!(
            (400..=450).contains(&n),
            "every sample committed before the copy, and nothing torn: {n}"
        );
        let sel = |db: &Tsdb| {
            db.querier(i64::MIN, i64::MAX).select(&[Matcher::equal("i", "0")]).expect("select")[0]
                .samples
                .clone()
        };
        assert_eq!(sel(&copy), sel(&db), "series 0 (persisted and WAL) is the same");
        let conn = sqlite::open_reader(&s.dir.join("csoc.db")).expect("reader");
        let av: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).expect("pragma");
        assert_eq!(av, 2, "the copy keeps incremental auto-vacuum");
        copy.close();
        let nohead = Tsdb::open(&head.dir, &TsdbOptions::default(), &mut Registry::default()).expect("open");
        let got = nohead
            .querier(i64::MIN, i64::MAX)
            .select(&[Matcher::equal("i", "0")])
            .expect("select");
        let n = got[0].samples.len();
        assert!((300..400).contains(&n), "skip_head: persisted chunks only, not the WAL: {n}");
        nohead.close();
        db.close();
    }
}
