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
//! | `node_memory_<Field>_bytes`, `node_memory_<Field>` | | /proc/meminfo: kB lines × 1024 with `_bytes`, unitless lines (`HugePages_Total`) as they are |
//! | `node_uname_info` | sysname, release, version, machine, nodename, domainname | uname(2) |
//! | `node_os_info`, `node_os_version` | node_exporter's os-release labels | `<rootfs>/etc/os-release`, else `<rootfs>/usr/lib/os-release` |
//! | `node_load1`, `node_load5`, `node_load15` | | /proc/loadavg |
//! | `node_filesystem_{size,avail,free}_bytes`, `node_filesystem_{files,files_free}` | device, fstype, mountpoint | statvfs |
//! | `node_disk_{read,written}_bytes_total`, `node_disk_{reads,writes}_completed_total`, `node_disk_io_time_seconds_total` | device | /proc/diskstats |
//! | `node_network_{receive,transmit}_{bytes,packets,errs,drop}_total` | device | /proc/net/dev |
//! | `node_network_up`, `node_network_mtu_bytes`, `node_network_speed_bytes` | device | /sys/class/net/*/{operstate,mtu,speed} |
//! | `node_boot_time_seconds`, `node_time_seconds` | | /proc/stat btime, clock |
//!
//! Uptime is `node_time_seconds - node_boot_time_seconds`, as in
//! node_exporter's dashboards.
//!
//! **In a container (the Helm chart's DaemonSet).** As node_exporter's
//! `--path.procfs`, `--path.sysfs` and `--path.rootfs`, `procfs_path`,
//! `sysfs_path` and `rootfs_path` say where the host's /proc, /sys and / are
//! mounted (`/host/proc`, `/host/sys`, `/host/root`). Filesystems come from
//! the mount table of the host's PID 1 (`<procfs>/1/mounts`, else
//! `<procfs>/self/mounts` when PID 1 is hidden), are measured under
//! `rootfs_path`, and are labelled with their mount points as the host sees
//! them (`/`, `/var/lib/kubelet`), not as the container does. A mount point
//! listed with the rootfs prefix (a container's own table) loses it.
//! Network counters (`<procfs>/net/dev`) are those of the agent's network
//! namespace: the host's only with `hostNetwork`, as for node_exporter.

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
    /// `--path.procfs`, as node_exporter's.
    pub procfs_path: PathBuf,
    /// Where sysfs is mounted (default `/sys`; `/host/sys` in a container
    /// with the host's sysfs mounted there). `--path.sysfs`.
    pub sysfs_path: PathBuf,
    /// Where the host's root filesystem is mounted (default `/`;
    /// `/host/root` in a container with the host's `/` mounted there, with
    /// `mountPropagation: HostToContainer` so that later mounts show).
    /// Filesystems are measured under it and labelled with the host's mount
    /// points. `--path.rootfs`.
    pub rootfs_path: PathBuf,
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
            sysfs_path: PathBuf::from("/sys"),
            rootfs_path: PathBuf::from("/"),
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
    /// A path setting is unusable.
    #[error("host source: {field} {path:?} must be an absolute path")]
    Path {
        /// Which field.
        field: &'static str,
        /// The value.
        path: PathBuf,
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
    sys: PathBuf,
    rootfs: PathBuf,
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
        for (field, path) in [
            ("procfs_path", &cfg.procfs_path),
            ("sysfs_path", &cfg.sysfs_path),
            ("rootfs_path", &cfg.rootfs_path),
        ] {
            if !path.is_absolute() {
                return Err(HostError::Path { field, path: path.clone() });
            }
        }
        Ok(HostSource {
            proc: cfg.procfs_path.clone(),
            sys: cfg.sysfs_path.clone(),
            rootfs: cfg.rootfs_path.clone(),
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
        uname_info(ts, job, &mut f);
        let os_release = ["etc/os-release", "usr/lib/os-release"].iter().find_map(|rel| {
            let p = self.rootfs.join(rel);
            std::fs::read_to_string(&p).ok()
        });
        match os_release {
            Some(s) => os_info(&s, ts, job, &mut f),
            None => errors.push(HostError::Read {
                path: self.rootfs.join("etc/os-release"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "neither etc/os-release nor usr/lib/os-release"),
            }),
        }
        // The host's mount table is PID 1's (node_exporter reads the same);
        // with PID 1 hidden (hidepid, systemd's ProtectProc), our own.
        match self
            .read("1/mounts")
            .or_else(|_| self.read("self/mounts"))
            .or_else(|_| self.read("mounts"))
        {
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
        if let Err(e) = self.netclass(ts, &mut f) {
            errors.push(e);
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
            let mp = self.host_mount_point(unescape_mount(mp));
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
            let Some(st) = statvfs(&self.in_rootfs(&mp)) else {
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

impl HostSource {
    /// A mount point as the host sees it: without the rootfs prefix when the
    /// table is a container's own (`/host/root/var` → `/var`).
    fn host_mount_point(&self, mp: String) -> String {
        if self.rootfs == Path::new("/") {
            return mp;
        }
        match Path::new(&mp).strip_prefix(&self.rootfs) {
            Ok(rest) => format!("/{}", rest.display()),
            Err(_) => mp,
        }
    }

    /// Where the host's mount point `mp` is reached from here.
    fn in_rootfs(&self, mp: &str) -> PathBuf {
        self.rootfs.join(mp.trim_start_matches('/'))
    }

    /// `node_network_{up,mtu_bytes,speed_bytes}` from
    /// `<sysfs>/class/net/<device>/`, as node_exporter's netclass collector.
    /// A device's unreadable attribute (a virtual device has no speed) is
    /// skipped; only an unreadable `class/net` is an error.
    fn netclass(&self, ts: i64, f: &mut Frame) -> Result<(), HostError> {
        let dir = self.sys.join("class/net");
        let entries = std::fs::read_dir(&dir).map_err(|source| HostError::Read { path: dir.clone(), source })?;
        let mut devs: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|d| !self.net_exclude.as_ref().is_some_and(|re| re.is_match(d)))
            .collect();
        devs.sort();
        f.meta(
            "node_network_up",
            MetricKind::Gauge,
            "Value is 1 if operstate is 'up', 0 otherwise.",
            "",
        );
        f.meta(
            "node_network_mtu_bytes",
            MetricKind::Gauge,
            "Network device property: mtu_bytes",
            "bytes",
        );
        f.meta(
            "node_network_speed_bytes",
            MetricKind::Gauge,
            "Network device property: speed_bytes",
            "bytes",
        );
        let job = self.job.as_str();
        for dev in &devs {
            let attr = |name: &str| std::fs::read_to_string(dir.join(dev).join(name)).ok();
            let l = [("device", dev.as_str()), ("job", job)];
            if let Some(state) = attr("operstate") {
                f.push("node_network_up", &l, ts, if state.trim() == "up" { 1.0 } else { 0.0 });
            }
            if let Some(Ok(mtu)) = attr("mtu").map(|v| v.trim().parse::<f64>()) {
                f.push("node_network_mtu_bytes", &l, ts, mtu);
            }
            // Mbit/s; -1 (unknown) is skipped, as node_exporter does.
            if let Some(Ok(speed)) = attr("speed").map(|v| v.trim().parse::<i64>())
                && speed >= 0
            {
                f.push("node_network_speed_bytes", &l, ts, speed as f64 * 1000.0 * 1000.0 / 8.0);
            }
        }
        Ok(())
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

/// node_exporter's meminfo collector: a line with a unit (kB) is × 1024
/// and gets `_bytes`; a line without one (`HugePages_Total: 0`) is a
/// count and keeps its name; `(x)` becomes `_x` (`Active(anon)` →
/// `Active_anon`).
fn parse_meminfo(s: &str, ts: i64, job: &str, f: &mut Frame) {
    for line in s.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(key) = key.strip_suffix(':') else { continue };
        let Ok(mut v) = value.parse::<f64>() else { continue };
        let key = meminfo_key(key);
        let (name, unit) = if parts.next().is_some() {
            v *= 1024.0;
            (format!("node_memory_{key}_bytes"), "bytes")
        } else {
            (format!("node_memory_{key}"), "")
        };
        let help = format!("Memory information field {}.", &name["node_memory_".len()..]);
        f.meta(&name, MetricKind::Gauge, &help, unit);
        f.push(&name, &[("job", job)], ts, v);
    }
}

/// `Active(anon)` → `Active_anon` (node_exporter's `\((.*)\)` → `_$1`).
fn meminfo_key(key: &str) -> String {
    match (key.find('('), key.rfind(')')) {
        (Some(a), Some(b)) if a < b => format!("{}_{}{}", &key[..a], &key[a + 1..b], &key[b + 1..]),
        _ => key.to_string(),
    }
}

/// `node_uname_info`, as node_exporter's uname collector (the uname(2)
/// of the agent's UTS namespace: the host's with `hostPID`/host UTS, as
/// for node_exporter).
fn uname_info(ts: i64, job: &str, f: &mut Frame) {
    let u = rustix::system::uname();
    let s = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
    let (sysname, release, version, machine, nodename, domainname) = (
        s(u.sysname()),
        s(u.release()),
        s(u.version()),
        s(u.machine()),
        s(u.nodename()),
        s(u.domainname()),
    );
    f.meta(
        "node_uname_info",
        MetricKind::Gauge,
        "Labeled system information as provided by the uname system call.",
        "",
    );
    f.push(
        "node_uname_info",
        &[
            ("domainname", domainname.as_str()),
            ("job", job),
            ("machine", machine.as_str()),
            ("nodename", nodename.as_str()),
            ("release", release.as_str()),
            ("sysname", sysname.as_str()),
            ("version", version.as_str()),
        ],
        ts,
        1.0,
    );
}

/// The fields of an os-release file (`KEY=value`, values optionally in
/// single or double quotes, `\` escapes inside double quotes).
fn parse_os_release(s: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for line in s.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim();
        let v = if let Some(inner) = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
            let mut o = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        o.push(n);
                    }
                } else {
                    o.push(c);
                }
            }
            o
        } else if let Some(inner) = v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
            inner.to_string()
        } else {
            v.to_string()
        };
        out.insert(k.trim().to_string(), v);
    }
    out
}

/// `node_os_info` and `node_os_version`, as node_exporter's os collector:
/// from `<rootfs>/etc/os-release`, else `<rootfs>/usr/lib/os-release`.
fn os_info(text: &str, ts: i64, job: &str, f: &mut Frame) {
    let env = parse_os_release(text);
    let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("");
    f.meta(
        "node_os_info",
        MetricKind::Gauge,
        "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
        "",
    );
    f.push(
        "node_os_info",
        &[
            ("build_id", get("BUILD_ID")),
            ("id", get("ID")),
            ("id_like", get("ID_LIKE")),
            ("image_id", get("IMAGE_ID")),
            ("image_version", get("IMAGE_VERSION")),
            ("job", job),
            ("name", get("NAME")),
            ("pretty_name", get("PRETTY_NAME")),
            ("variant", get("VARIANT")),
            ("variant_id", get("VARIANT_ID")),
            ("version", get("VERSION")),
            ("version_codename", get("VERSION_CODENAME")),
            ("version_id", get("VERSION_ID")),
        ],
        ts,
        1.0,
    );
    // The major.minor part of VERSION_ID (node_exporter: ^[0-9]+\.?[0-9]*),
    // only when positive.
    let vid = get("VERSION_ID");
    let end = vid.find(|c: char| !c.is_ascii_digit()).unwrap_or(vid.len());
    let mut num = vid[..end].to_string();
    if end > 0 && vid[end..].starts_with('.') {
        num.push('.');
        num.extend(vid[end + 1..].chars().take_while(char::is_ascii_digit));
    }
    if let Ok(v) = num.parse::<f64>()
        && v > 0.0
    {
        f.meta(
            "node_os_version",
            MetricKind::Gauge,
            "Metric containing the major.minor part of the OS version.",
            "",
        );
        f.push(
            "node_os_version",
            &[("id", get("ID")), ("id_like", get("ID_LIKE")), ("job", job), ("name", get("NAME"))],
            ts,
            v,
        );
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

    /// A sysfs with class/net: eth0 up at 1 Gbit/s, lo of unknown state
    /// and speed.
    fn fake_sys() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (dev, state, mtu, speed) in [("eth0", "up", "9001", "1000"), ("lo", "unknown", "65536", "-1")] {
            let p = d.path().join("class/net").join(dev);
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::write(p.join("operstate"), format!("{state}\n")).expect("write");
            std::fs::write(p.join("mtu"), format!("{mtu}\n")).expect("write");
            std::fs::write(p.join("speed"), format!("{speed}\n")).expect("write");
        }
        d
    }

    #[test]
    fn parses_procfs_like_node_exporter() {
        let d = fake_proc();
        let sys = fake_sys();
        let cfg = HostConfig {
            procfs_path: d.path().to_path_buf(),
            sysfs_path: sys.path().to_path_buf(),
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
        assert_eq!(find(&f, "node_memory_HugePages_Total", &[]), Some(0.0), "no unit: no _bytes");
        assert_eq!(find(&f, "node_memory_HugePages_Total_bytes", &[]), None);
        assert!(find(&f, "node_uname_info", &[("sysname", "Linux")]).is_some() || !cfg!(target_os = "linux"));
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
        assert_eq!(find(&f, "node_network_up", &[("device", "eth0")]), Some(1.0));
        assert_eq!(find(&f, "node_network_up", &[("device", "lo")]), Some(0.0));
        assert_eq!(find(&f, "node_network_mtu_bytes", &[("device", "eth0")]), Some(9001.0));
        assert_eq!(find(&f, "node_network_speed_bytes", &[("device", "eth0")]), Some(125_000_000.0));
        assert_eq!(
            find(&f, "node_network_speed_bytes", &[("device", "lo")]),
            None,
            "speed -1 is unknown"
        );
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
        let sys = fake_sys();
        let cfg = HostConfig {
            procfs_path: d.path().to_path_buf(),
            sysfs_path: sys.path().to_path_buf(),
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
    fn os_release_and_meminfo_names_follow_node_exporter() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME='Debian GNU/Linux'\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n# comment\nHOME_URL=\"https://www.debian.org/\"\n";
        let mut f = Frame::new("host");
        os_info(text, 0, "node", &mut f);
        assert_eq!(
            find(
                &f,
                "node_os_info",
                &[
                    ("id", "debian"),
                    ("id_like", ""),
                    ("name", "Debian GNU/Linux"),
                    ("pretty_name", "Debian GNU/Linux 12 (bookworm)"),
                    ("version_codename", "bookworm"),
                    ("version_id", "12"),
                    ("build_id", ""),
                ]
            ),
            Some(1.0)
        );
        assert_eq!(find(&f, "node_os_version", &[("id", "debian")]), Some(12.0));
        let mut f = Frame::new("host");
        os_info("ID=ubuntu\nVERSION_ID=\"22.04.3\"\n", 0, "node", &mut f);
        assert_eq!(find(&f, "node_os_version", &[("id", "ubuntu")]), Some(22.04));
        let mut f = Frame::new("host");
        os_info("ID=arch\n", 0, "node", &mut f);
        assert_eq!(find(&f, "node_os_version", &[]), None, "no VERSION_ID: no version metric");
        assert_eq!(meminfo_key("Active(anon)"), "Active_anon");
        assert_eq!(meminfo_key("Inactive(file)"), "Inactive_file");
        assert_eq!(meminfo_key("MemTotal"), "MemTotal");
        let mut f = Frame::new("host");
        parse_meminfo(
            "HugePages_Total:       4\nHugepagesize:       2048 kB\nBad line\n",
            0,
            "node",
            &mut f,
        );
        assert_eq!(find(&f, "node_memory_HugePages_Total", &[]), Some(4.0));
        assert_eq!(find(&f, "node_memory_Hugepagesize_bytes", &[]), Some(2048.0 * 1024.0));
        assert_eq!(f.samples.len(), 2);
    }

    #[test]
    fn missing_files_are_reported_not_fatal() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("loadavg"), "1 2 3 1/1 1\n").expect("write");
        let cfg = HostConfig {
            procfs_path: d.path().to_path_buf(),
            sysfs_path: d.path().join("sys"),
            ..Default::default()
        };
        let (f, errors) = HostSource::new(&cfg).expect("valid").collect(0);
        assert_eq!(find(&f, "node_load5", &[]), Some(2.0));
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors[0].to_string().contains("stat"), "{}", errors[0]);
        assert!(errors[5].to_string().contains("class/net"), "{}", errors[5]);
    }

    /// The DaemonSet's view: the host's mount table (PID 1's, not the
    /// container's own), each filesystem measured under rootfs and labelled
    /// with the host's mount point.
    #[test]
    fn filesystems_from_the_hosts_view_under_rootfs() {
        let proc = fake_proc();
        // The container's own table: what must not be reported.
        std::fs::write(
            proc.path().join("self/mounts"),
            "overlay / overlay rw 0 0\n/dev/vda /etc/hosts ext4 rw 0 0\n",
        )
        .expect("write");
        std::fs::create_dir_all(proc.path().join("1")).expect("mkdir");
        std::fs::write(
            proc.path().join("1/mounts"),
            "/dev/vda / ext4 rw 0 0\n/dev/vdb /data ext4 rw 0 0\n/dev/vdc /gone ext4 rw 0 0\nproc /proc proc rw 0 0\n",
        )
        .expect("write");
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("data")).expect("mkdir");
        let cfg = HostConfig {
            procfs_path: proc.path().to_path_buf(),
            sysfs_path: fake_sys().path().to_path_buf(),
            rootfs_path: root.path().to_path_buf(),
            ..Default::default()
        };
        let src = HostSource::new(&cfg).expect("valid");
        let (f, _) = src.collect(0);
        let mounts: std::collections::BTreeSet<String> = f
            .samples
            .iter()
            .filter(|s| s.labels[0].1 == "node_filesystem_size_bytes")
            .filter_map(|s| s.labels.iter().find(|(k, _)| k == "mountpoint").map(|(_, v)| v.clone()))
            .collect();
        // /gone is in the table but not under rootfs: skipped, as a mount
        // point statvfs cannot reach.
        assert_eq!(mounts.into_iter().collect::<Vec<_>>(), ["/", "/data"]);
        let want = statvfs(root.path()).expect("statvfs of the rootfs").size;
        assert_eq!(
            find(&f, "node_filesystem_size_bytes", &[("mountpoint", "/"), ("device", "/dev/vda")]),
            Some(want),
            "/ is measured at rootfs_path"
        );
        assert_eq!(find(&f, "node_filesystem_size_bytes", &[("mountpoint", "/etc/hosts")]), None);
    }

    #[test]
    fn mount_points_lose_the_rootfs_prefix() {
        let cfg = HostConfig {
            rootfs_path: PathBuf::from("/host/root"),
            ..Default::default()
        };
        let src = HostSource::new(&cfg).expect("valid");
        assert_eq!(src.host_mount_point("/host/root/var/lib".into()), "/var/lib");
        assert_eq!(src.host_mount_point("/host/root".into()), "/");
        assert_eq!(src.host_mount_point("/host/rootless".into()), "/host/rootless");
        assert_eq!(src.host_mount_point("/boot".into()), "/boot");
        assert_eq!(src.in_rootfs("/boot"), PathBuf::from("/host/root/boot"));
        assert_eq!(src.in_rootfs("/"), PathBuf::from("/host/root/"));
        let plain = HostSource::new(&HostConfig::default()).expect("valid");
        assert_eq!(plain.host_mount_point("/host/root/x".into()), "/host/root/x");
        assert_eq!(plain.in_rootfs("/boot"), PathBuf::from("/boot"));
    }

    #[test]
    fn node_exporter_path_flags_set_the_paths() {
        use clap::Parser;
        let args = crate::cli::Args::try_parse_from([
            "csoc-agent",
            "--path.procfs",
            "/host/proc",
            "--path.sysfs",
            "/host/sys",
            "--path.rootfs",
            "/host/root",
        ])
        .expect("flags parse");
        let cfg = args.resolve().expect("resolve");
        assert_eq!(cfg.sources.host.procfs_path, PathBuf::from("/host/proc"));
        assert_eq!(cfg.sources.host.sysfs_path, PathBuf::from("/host/sys"));
        assert_eq!(cfg.sources.host.rootfs_path, PathBuf::from("/host/root"));
        let cfg = crate::cli::Args::try_parse_from(["csoc-agent"])
            .expect("parse")
            .resolve()
            .expect("resolve");
        assert_eq!(cfg.sources.host.rootfs_path, PathBuf::from("/"));
    }

    #[test]
    fn relative_paths_are_config_errors() {
        for (field, cfg) in [
            (
                "procfs_path",
                HostConfig {
                    procfs_path: "proc".into(),
                    ..Default::default()
                },
            ),
            (
                "sysfs_path",
                HostConfig {
                    sysfs_path: "host/sys".into(),
                    ..Default::default()
                },
            ),
            (
                "rootfs_path",
                HostConfig {
                    rootfs_path: "".into(),
                    ..Default::default()
                },
            ),
        ] {
            let err = HostSource::new(&cfg).err().expect("error");
            assert!(err.to_string().contains(field), "{err}");
        }
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
