//! The `host` source: the machine's CPU, memory, load, filesystems, disks and
//! network, under node_exporter's metric names, units and labels, so that the
//! community's node dashboards work unchanged.
//!
//! On Linux the values are read from procfs (`/proc/stat`, `/proc/meminfo`,
//! `/proc/loadavg`, `/proc/self/mounts` + statvfs, `/proc/diskstats`,
//! `/proc/net/dev`), exactly as node_exporter reads them. DESIGN.md named
//! sysinfo for this source; sysinfo does not expose per-mode CPU seconds,
//! Buffers/Cached, free-versus-available blocks or disk operation counts,
//! which node_exporter's names require, and reading procfs directly also
//! keeps the agent's memory small.
//!
//! | metric | labels | from |
//! |---|---|---|
//! | `node_cpu_seconds_total` | cpu, mode | /proc/stat ÷ USER_HZ |
//! | `node_memory_<Field>_bytes` | | /proc/meminfo × 1024 |
//! | `node_load1`, `node_load5`, `node_load15` | | /proc/loadavg |
//! | `node_filesystem_{size,avail,free}_bytes`, `node_filesystem_{files,files_free}` | device, fstype, mountpoint | statvfs |
//! | `node_disk_{read,written}_bytes_total`, `node_disk_{reads,writes}_completed_total`, `node_disk_io_time_seconds_total` | device | /proc/diskstats |
//! | `node_network_{receive,transmit}_{bytes,packets,errs,drop}_total` | device | /proc/net/dev |
//! | `node_boot_time_seconds`, `node_time_seconds` | | /proc/stat btime, clock |
//!
//! Uptime is `node_time_seconds - node_boot_time_seconds`, as in
//! node_exporter's dashboards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::{BoxFuture, Source, SourceContext};
use crate::model::{Frame, MetricKind};

/// Configuration of the `host` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Collect host metrics at all (default true).
    pub enabled: bool,
    /// Where procfs is mounted (default `/proc`; `/host/proc` when the agent
    /// runs in a container with the host's procfs mounted there).
    pub procfs_path: PathBuf,
    /// Mount points to ignore (regex, anchored). node_exporter's default.
    pub mount_points_exclude: String,
    /// Filesystem types to ignore (regex, anchored). node_exporter's default.
    pub fs_types_exclude: String,
    /// Disk devices to ignore (regex, anchored): partitions and RAM disks,
    /// node_exporter's default.
    pub disk_devices_exclude: String,
    /// Network devices to ignore (regex, anchored). Empty: none.
    pub network_devices_exclude: String,
    /// Value of the `job` label (default `node`, as node_exporter's usual job).
    pub job: String,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            enabled: true,
            procfs_path: PathBuf::from("/proc"),
            mount_points_exclude: "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)".into(),
            fs_types_exclude: "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$".into(),
            disk_devices_exclude: r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$".into(),
            network_devices_exclude: String::new(),
            job: "node".into(),
        }
    }
}

/// Errors of the host source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// A procfs file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A config regex is invalid.
    #[error("host source: invalid {field} regex: {source}")]
    Regex {
        /// Which field.
        field: &'static str,
        /// The cause.
        #[source]
        source: regex::Error,
    },
}

/// The host source, with its compiled filters.
pub struct HostSource {
    proc: PathBuf,
    job: String,
    mount_exclude: Regex,
    fs_exclude: Regex,
    disk_exclude: Regex,
    net_exclude: Option<Regex>,
    clk_tck: f64,
}

fn compile(field: &'static str, re: &str) -> Result<Regex, HostError> {
    Regex::new(re).map_err(|source| HostError::Regex { field, source })
}

impl HostSource {
    /// Validates the config and builds the source.
    pub fn new(cfg: &HostConfig) -> Result<Self, HostError> {
        Ok(HostSource {
            proc: cfg.procfs_path.clone(),
            job: cfg.job.clone(),
            mount_exclude: compile("mount_points_exclude", &cfg.mount_points_exclude)?,
            fs_exclude: compile("fs_types_exclude", &cfg.fs_types_exclude)?,
            disk_exclude: compile("disk_devices_exclude", &cfg.disk_devices_exclude)?,
            net_exclude: if cfg.network_devices_exclude.is_empty() {
                None
            } else {
                Some(compile("network_devices_exclude", &cfg.network_devices_exclude)?)
            },
            clk_tck: clock_ticks(),
        })
    }

    fn read(&self, rel: &str) -> Result<String, HostError> {
        let path = self.proc.join(rel);
        std::fs::read_to_string(&path).map_err(|source| HostError::Read { path, source })
    }

    /// Collects one frame at time `ts` (ms). A part that fails (say, no
    /// /proc/diskstats in a container) is skipped and reported in `errors`;
    /// the other parts are still collected.
    pub fn collect(&self, ts: i64) -> (Frame, Vec<HostError>) {
        let mut f = Frame::new("host");
        let mut errors = Vec::new();
        let job = self.job.as_str();
        match self.read("stat") {
            Ok(s) => parse_stat(&s, self.clk_tck, ts, job, &mut f),
            Err(e) => errors.push(e),
        }
        match self.read("meminfo") {
            Ok(s) => parse_meminfo(&s, ts, job, &mut f),
            Err(e) => errors.push(e),
        }
        match self.read("loadavg") {
            Ok(s) => parse_loadavg(&s, ts, job, &mut f),
            Err(e) => errors.push(e),
        }
        match self.read("self/mounts").or_else(|_| self.read("mounts")) {
            Ok(s) => self.filesystems(&s, ts, &mut f),
            Err(e) => errors.push(e),
        }
        match self.read("diskstats") {
            Ok(s) => parse_diskstats(&s, &self.disk_exclude, ts, job, &mut f),
            Err(e) => errors.push(e),
        }
        match self.read("net/dev") {
            Ok(s) => parse_netdev(&s, self.net_exclude.as_ref(), ts, job, &mut f),
            Err(e) => errors.push(e),
        }
        f.meta(
            "node_time_seconds",
            MetricKind::Gauge,
            "System time in seconds since epoch (1970).",
            "seconds",
        );
        f.push("node_time_seconds", &[("job", job)], ts, ts as f64 / 1000.0);
        (f, errors)
    }

    fn filesystems(&self, mounts: &str, ts: i64, f: &mut Frame) {
        let job = self.job.as_str();
        let mut seen = std::collections::HashSet::new();
        let mut rows = Vec::new();
        for line in mounts.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(dev), Some(mp), Some(fstype)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let mp = unescape_mount(mp);
            if self.fs_exclude.is_match(fstype) || self.mount_exclude.is_match(&mp) {
                continue;
            }
            // The last mount on a mount point hides earlier ones.
            rows.retain(|(_, m, _): &(String, String, String)| *m != mp);
            rows.push((dev.to_string(), mp, fstype.to_string()));
        }
        f.meta(
            "node_filesystem_size_bytes",
            MetricKind::Gauge,
            "Filesystem size in bytes.",
            "bytes",
        );
        f.meta(
            "node_filesystem_avail_bytes",
            MetricKind::Gauge,
            "Filesystem space available to non-root users in bytes.",
            "bytes",
        );
        f.meta(
            "node_filesystem_free_bytes",
            MetricKind::Gauge,
            "Filesystem free space in bytes.",
            "bytes",
        );
        f.meta("node_filesystem_files", MetricKind::Gauge, "Filesystem total file nodes.", "");
        f.meta(
            "node_filesystem_files_free",
            MetricKind::Gauge,
            "Filesystem total free file nodes.",
            "",
        );
        for (dev, mp, fstype) in rows {
            if !seen.insert(mp.clone()) {
                continue;
            }
            let Some(st) = statvfs(Path::new(&mp)) else {
                continue;
            };
            let l = [
                ("device", dev.as_str()),
                ("fstype", fstype.as_str()),
                ("mountpoint", mp.as_str()),
                ("job", job),
            ];
            f.push("node_filesystem_size_bytes", &l, ts, st.size);
            f.push("node_filesystem_avail_bytes", &l, ts, st.avail);
            f.push("node_filesystem_free_bytes", &l, ts, st.free);
            f.push("node_filesystem_files", &l, ts, st.files);
            f.push("node_filesystem_files_free", &l, ts, st.files_free);
        }
    }
}

impl Source for HostSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            let this = std::sync::Arc::new(*self);
            let mut tick = tokio::time::interval(cx.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let ts = csoc_common::time::now_ms();
                let src = this.clone();
                // statvfs on a hung network mount can block: collect off the
                // async threads and give up after one interval.
                let job = tokio::task::spawn_blocking(move || src.collect(ts));
                let timeout = cx.interval.max(Duration::from_secs(1));
                let (frame, errors) = match tokio::time::timeout(timeout, job).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        tracing::error!(source = %cx.name, error = %e, "host collection panicked");
                        cx.error("panic");
                        continue;
                    }
                    Err(_) => {
                        tracing::warn!(source = %cx.name, timeout = ?timeout, "host collection timed out (a hung mount?)");
                        cx.error("timeout");
                        continue;
                    }
                };
                for e in &errors {
                    tracing::debug!(source = %cx.name, error = %e, "host collection: part skipped");
                    cx.error("read");
                }
                if !cx.emit(frame).await {
                    break;
                }
            }
        })
    }
}

fn clock_ticks() -> f64 {
    let t = rustix::param::clock_ticks_per_second();
    if t == 0 { 100.0 } else { t as f64 }
}

struct FsStat {
    size: f64,
    avail: f64,
    free: f64,
    files: f64,
    files_free: f64,
}

fn statvfs(p: &Path) -> Option<FsStat> {
    let s = rustix::fs::statvfs(p).ok()?;
    let bs = if s.f_frsize > 0 { s.f_frsize } else { s.f_bsize } as f64;
    Some(FsStat {
        size: s.f_blocks as f64 * bs,
        avail: s.f_bavail as f64 * bs,
        free: s.f_bfree as f64 * bs,
        files: s.f_files as f64,
        files_free: s.f_ffree as f64,
    })
}

/// Mount points in /proc/mounts escape space, tab, newline and backslash as
/// three-digit octal (`\040`).
fn unescape_mount(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const CPU_MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];

fn parse_stat(s: &str, clk_tck: f64, ts: i64, job: &str, f: &mut Frame) {
    f.meta(
        "node_cpu_seconds_total",
        MetricKind::Counter,
        "Seconds the CPUs spent in each mode.",
        "seconds",
    );
    f.meta(
        "node_boot_time_seconds",
        MetricKind::Gauge,
        "Node boot time, in unixtime.",
        "seconds",
    );
    for line in s.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(key) = it.next() else { continue };
        if let Some(cpu) = key.strip_prefix("cpu") {
            // The aggregate "cpu" line is not exported by node_exporter.
            if cpu.is_empty() || !cpu.bytes().all(|c| c.is_ascii_digit()) {
                continue;
            }
            for (mode, v) in CPU_MODES.iter().zip(it) {
                let Ok(ticks) = v.parse::<f64>() else { continue };
                f.push(
                    "node_cpu_seconds_total",
                    &[("cpu", cpu), ("mode", mode), ("job", job)],
                    ts,
                    ticks / clk_tck,
                );
            }
        } else if key == "btime"
            && let Some(Ok(bt)) = it.next().map(|v| v.parse::<f64>())
        {
            f.push("node_boot_time_seconds", &[("job", job)], ts, bt);
        }
    }
}

fn parse_meminfo(s: &str, ts: i64, job: &str, f: &mut Frame) {
    for line in s.lines() {
        let Some((key, rest)) = line.split_once(':') else { continue };
        let mut it = rest.split_ascii_whitespace();
        let Some(Ok(mut v)) = it.next().map(|v| v.parse::<f64>()) else {
            continue;
        };
        if it.next() == Some("kB") {
            v *= 1024.0;
        }
        // node_exporter turns "Active(anon)" into "Active_anon".
        let key = key.replace('(', "_").replace(')', "");
        let name = format!("node_memory_{key}_bytes");
        let help = format!("Memory information field {key}_bytes.");
        f.meta(&name, MetricKind::Gauge, &help, "bytes");
        f.push(&name, &[("job", job)], ts, v);
    }
}

fn parse_loadavg(s: &str, ts: i64, job: &str, f: &mut Frame) {
    let mut it = s.split_ascii_whitespace();
    for (name, help) in [
        ("node_load1", "1m load average."),
        ("node_load5", "5m load average."),
        ("node_load15", "15m load average."),
    ] {
        if let Some(Ok(v)) = it.next().map(|v| v.parse::<f64>()) {
            f.meta(name, MetricKind::Gauge, help, "");
            f.push(name, &[("job", job)], ts, v);
        }
    }
}

fn parse_diskstats(s: &str, exclude: &Regex, ts: i64, job: &str, f: &mut Frame) {
    const SECTOR: f64 = 512.0;
    let metas = [
        (
            "node_disk_reads_completed_total",
            "The total number of reads completed successfully.",
            "",
        ),
        (
            "node_disk_read_bytes_total",
            "The total number of bytes read successfully.",
            "bytes",
        ),
        (
            "node_disk_writes_completed_total",
            "The total number of writes completed successfully.",
            "",
        ),
        (
            "node_disk_written_bytes_total",
            "The total number of bytes written successfully.",
            "bytes",
        ),
        ("node_disk_io_time_seconds_total", "Total seconds spent doing I/Os.", "seconds"),
    ];
    for (n, h, u) in metas {
        f.meta(n, MetricKind::Counter, h, u);
    }
    for line in s.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.len() < 14 {
            continue;
        }
        let dev = fields[2];
        if exclude.is_match(dev) {
            continue;
        }
        let num = |i: usize| fields[i].parse::<f64>().unwrap_or(0.0);
        let l = [("device", dev), ("job", job)];
        f.push("node_disk_reads_completed_total", &l, ts, num(3));
        f.push("node_disk_read_bytes_total", &l, ts, num(5) * SECTOR);
        f.push("node_disk_writes_completed_total", &l, ts, num(7));
        f.push("node_disk_written_bytes_total", &l, ts, num(9) * SECTOR);
        f.push("node_disk_io_time_seconds_total", &l, ts, num(12) / 1000.0);
    }
}

fn parse_netdev(s: &str, exclude: Option<&Regex>, ts: i64, job: &str, f: &mut Frame) {
    // Column order of /proc/net/dev after "iface:".
    const COLS: [(usize, &str); 8] = [
        (0, "receive_bytes"),
        (1, "receive_packets"),
        (2, "receive_errs"),
        (3, "receive_drop"),
        (8, "transmit_bytes"),
        (9, "transmit_packets"),
        (10, "transmit_errs"),
        (11, "transmit_drop"),
    ];
    for (_, stat) in COLS {
        let name = format!("node_network_{stat}_total");
        let unit = if stat.ends_with("bytes") { "bytes" } else { "" };
        f.meta(&name, MetricKind::Counter, &format!("Network device statistic {stat}."), unit);
    }
    for line in s.lines().skip(2) {
        let Some((dev, rest)) = line.split_once(':') else { continue };
        let dev = dev.trim();
        if exclude.is_some_and(|re| re.is_match(dev)) {
            continue;
        }
        let vals: Vec<f64> = rest.split_ascii_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
        if vals.len() < 16 {
            continue;
        }
        for (i, stat) in COLS {
            let name = format!("node_network_{stat}_total");
            f.push(&name, &[("device", dev), ("job", job)], ts, vals[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(f: &Frame, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        f.samples
            .iter()
            .find(|s| {
                s.labels.iter().any(|(k, v)| k == "__name__" && v == name)
                    && labels.iter().all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .map(|s| s.value)
    }

    fn fake_proc() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let w = |p: &str, s: &str| {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, s).expect("write");
        };
        w(
            "stat",
            "cpu  100 0 50 1000 5 0 1 0 0 0\ncpu0 60 0 30 500 2 0 1 0 0 0\ncpu1 40 0 20 500 3 0 0 2 0 0\nintr 1 2\nbtime 1700000000\n",
        );
        w(
            "meminfo",
            "MemTotal:       16318852 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\nBuffers:           10 kB\nCached:            20 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\nActive(anon):      30 kB\nHugePages_Total:       0\n",
        );
        w("loadavg", "0.52 0.58 0.59 2/345 12345\n");
        w(
            "self/mounts",
            "/dev/vda / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\ntmpfs /tmp\\040dir tmpfs rw 0 0\n",
        );
        w(
            "diskstats",
            "   8       0 vda 100 0 2000 10 50 0 4000 20 0 1500 30 0 0 0 0\n   8       1 vda1 1 0 2 0 0 0 0 0 0 0 0 0 0 0 0\n   7       0 loop0 1 0 2 0 0 0 0 0 0 0 0 0 0 0 0\n",
        );
        w(
            "net/dev",
            "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n  eth0: 1000 10 1 2 0 0 0 0 2000 20 3 4 0 0 0 0\n    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n",
        );
        d
    }

    #[test]
    fn parses_procfs_like_node_exporter() {
        let d = fake_proc();
        let cfg = HostConfig {
            procfs_path: d.path().to_path_buf(),
            ..Default::default()
        };
        let src = HostSource::new(&cfg).expect("valid config");
        let (f, errors) = src.collect(1_700_000_000_000);
        assert!(errors.is_empty(), "{errors:?}");
        let tck = clock_ticks();
        assert_eq!(
            find(&f, "node_cpu_seconds_total", &[("cpu", "0"), ("mode", "user")]),
            Some(60.0 / tck)
        );
        assert_eq!(
            find(&f, "node_cpu_seconds_total", &[("cpu", "1"), ("mode", "steal")]),
            Some(2.0 / tck)
        );
        assert_eq!(find(&f, "node_cpu_seconds_total", &[("cpu", ""), ("mode", "user")]), None);
        assert_eq!(f.samples.iter().filter(|s| s.labels[0].1 == "node_cpu_seconds_total").count(), 16);
        assert_eq!(find(&f, "node_memory_MemTotal_bytes", &[]), Some(16318852.0 * 1024.0));
        assert_eq!(find(&f, "node_memory_Active_anon_bytes", &[]), Some(30.0 * 1024.0));
        assert_eq!(find(&f, "node_memory_HugePages_Total_bytes", &[]), Some(0.0));
        assert_eq!(find(&f, "node_load15", &[]), Some(0.59));
        assert_eq!(find(&f, "node_boot_time_seconds", &[]), Some(1.7e9));
        assert_eq!(find(&f, "node_time_seconds", &[]), Some(1.7e9));
        assert_eq!(find(&f, "node_disk_read_bytes_total", &[("device", "vda")]), Some(2000.0 * 512.0));
        assert_eq!(find(&f, "node_disk_writes_completed_total", &[("device", "vda")]), Some(50.0));
        assert_eq!(find(&f, "node_disk_io_time_seconds_total", &[("device", "vda")]), Some(1.5));
        assert_eq!(
            find(&f, "node_disk_reads_completed_total", &[("device", "vda1")]),
            None,
            "partitions excluded"
        );
        assert_eq!(find(&f, "node_disk_reads_completed_total", &[("device", "loop0")]), None);
        assert_eq!(find(&f, "node_network_transmit_errs_total", &[("device", "eth0")]), Some(3.0));
        assert_eq!(find(&f, "node_network_receive_drop_total", &[("device", "eth0")]), Some(2.0));
        assert_eq!(find(&f, "node_network_receive_bytes_total", &[("device", "lo")]), Some(5.0));
        // Every sample carries job="node", and every family has metadata.
        for s in &f.samples {
            assert!(s.labels.iter().any(|(k, v)| k == "job" && v == "node"));
            let name = &s.labels[0].1;
            assert!(f.metadata.iter().any(|m| &m.name == name), "no metadata for {name}");
        }
    }

    #[test]
    fn filesystems_of_the_real_root_and_mount_filters() {
        let d = fake_proc();
        let cfg = HostConfig {
            procfs_path: d.path().to_path_buf(),
            ..Default::default()
        };
        let src = HostSource::new(&cfg).expect("valid config");
        let (f, _) = src.collect(0);
        let size = find(
            &f,
            "node_filesystem_size_bytes",
            &[("mountpoint", "/"), ("fstype", "ext4"), ("device", "/dev/vda")],
        );
        assert!(size.is_some_and(|v| v > 0.0), "root filesystem size: {size:?}");
        let avail = find(&f, "node_filesystem_avail_bytes", &[("mountpoint", "/")]).expect("avail");
        let free = find(&f, "node_filesystem_free_bytes", &[("mountpoint", "/")]).expect("free");
        assert!(avail <= free && free <= size.unwrap_or(0.0));
        assert_eq!(find(&f, "node_filesystem_size_bytes", &[("mountpoint", "/proc")]), None);
        assert_eq!(unescape_mount("/tmp\\040dir"), "/tmp dir");
    }

    #[test]
    fn missing_files_are_reported_not_fatal() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("loadavg"), "1 2 3 1/1 1\n").expect("write");
        let cfg = HostConfig {
            procfs_path: d.path().to_path_buf(),
            ..Default::default()
        };
        let (f, errors) = HostSource::new(&cfg).expect("valid").collect(0);
        assert_eq!(find(&f, "node_load5", &[]), Some(2.0));
        assert_eq!(errors.len(), 5);
        assert!(errors[0].to_string().contains("stat"), "{}", errors[0]);
    }

    #[test]
    fn bad_regex_is_a_config_error() {
        let cfg = HostConfig {
            fs_types_exclude: "(".into(),
            ..Default::default()
        };
        let err = HostSource::new(&cfg).err().expect("error");
        assert!(err.to_string().contains("fs_types_exclude"), "{err}");
    }

    #[tokio::test]
    async fn source_compliance_on_this_host() {
        let src = HostSource::new(&HostConfig::default()).expect("valid");
        let frame = crate::sources::test_util::run_and_assert_source_compliance(Box::new(src), "host").await;
        // The real MemTotal of this machine, as the kernel reports it.
        let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
        let kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("MemTotal");
        assert_eq!(find(&frame, "node_memory_MemTotal_bytes", &[]), Some(kb * 1024.0));
    }
}
