//! A throw-away PostgreSQL server for the `postgres` source's tests:
//! Debian's `postgresql` package (initdb, postgres, psql), a cluster in a
//! temporary directory on a free 127.0.0.1 port, password (SCRAM)
//! authentication, stopped (fast shutdown) on drop.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (CI), the
//! server runs as `nobody` (uid/gid 65534) — the test directory is opened
//! for it to traverse and the data directory given to it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// The superuser's password of the test clusters.
pub const SUPERUSER_PASSWORD: &str = "csoc-test-superuser";

/// The directory of `initdb`/`postgres`: on PATH, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian does not put them on PATH).
/// `None` with a message when absent; a panic under `CSOC_REQUIRE_INTEROP=1`.
pub fn bindir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| d.join("initdb").is_file() && d.join("postgres").is_file()));
    let found = on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, b)| b)
    });
    if found.is_none() {
        let msg =
            "PostgreSQL (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin (Debian/Ubuntu: apt-get install postgresql)";
        if std::env::var("CSOC_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("{msg}, and CSOC_REQUIRE_INTEROP=1 forbids skipping");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// `cmd` as the server's user (nobody when running as root).
fn as_server_user(cmd: &mut Command) -> &mut Command {
    if is_root() {
        cmd.uid(65534).gid(65534).env("HOME", "/tmp");
    }
    cmd
}

/// Runs `cmd` to completion within `timeout`; fails with its output.
fn run_bounded(mut cmd: Command, what: &str, timeout: Duration, log: &Path) -> anyhow::Result<String> {
    let out = log.with_extension("out");
    let f = std::fs::File::create(&out)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    ensure!(status.success(), "{what}: {status}\n{text}");
    Ok(text)
}

/// A running test cluster.
pub struct Postgres {
    child: Child,
    bin: PathBuf,
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl Postgres {
    /// Creates a cluster in `<dir>/pg` (superuser `postgres`, password
    /// [`SUPERUSER_PASSWORD`], `max_connections` 20) and starts it on a free
    /// port with `settings` (`name=value`, passed as `-c`); waits until it
    /// accepts connections.
    pub fn start(bin: &Path, dir: &Path, settings: &[&str]) -> anyhow::Result<Postgres> {
        use std::os::unix::fs::PermissionsExt;
        let root = dir.join("pg");
        let data = root.join("data");
        std::fs::create_dir_all(&root)?;
        let pwfile = root.join("superuser-password");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD)?;
        if is_root() {
            // nobody must reach <dir>/pg: open the path to it for traversal.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
            std::os::unix::fs::chown(&root, Some(65534), Some(65534))?;
            std::os::unix::fs::chown(&pwfile, Some(65534), Some(65534))?;
        }
        let log = dir.join("postgres.log");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        as_server_user(&mut initdb);
        run_bounded(initdb, "initdb", Duration::from_secs(120), &dir.join("initdb.log"))?;
        let port = crate::free_port();
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D").arg(&data).args(["-p", &port.to_string(), "-k"]).arg(&root).args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=20",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "fsync=off",
        ]);
        for s in settings {
            cmd.args(["-c", s]);
        }
        as_server_user(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .context("starting postgres")?;
        let mut pg = Postgres {
            child,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if pg.psql("postgres", "SELECT 1").map(|o| o.trim() == "1").unwrap_or(false) {
                return Ok(pg);
            }
            if let Some(st) = pg.child.try_wait()? {
                bail!("postgres exited ({st}):\n{}", pg.log_text());
            }
            if Instant::now() > deadline {
                bail!("postgres did not accept connections within 60s:\n{}", pg.log_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `sql` as the superuser in database `db` through psql (unaligned,
    /// tuples only); returns its output.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let psql = if self.bin.join("psql").is_file() {
            self.bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let mut cmd = Command::new(psql);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env("PGCONNECT_TIMEOUT", "5");
        run_bounded(cmd, &format!("psql {sql:?}"), Duration::from_secs(30), &self.dir.join("psql.log"))
    }

    /// A psql session in `db` fed `sql` on its standard input and kept
    /// open (e.g. to hold a transaction) until the returned child is
    /// killed or its stdin closed.
    pub fn psql_session(&self, db: &str, sql: &str) -> anyhow::Result<Child> {
        use std::io::Write;
        let psql = if self.bin.join("psql").is_file() {
            self.bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let mut child = Command::new(psql)
            .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", db])
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting psql")?;
        let stdin = child.stdin.as_mut().context("psql stdin")?;
        stdin.write_all(sql.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(child)
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fast shutdown (SIGINT), then SIGKILL after 20 s.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- postgres log ----\n{}", self.log_text());
        }
    }
}
