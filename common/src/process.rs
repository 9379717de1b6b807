//! The standard `process_*` metrics of a Prometheus client (as client_golang's
//! process collector writes them), read from `/proc/self` on every scrape:
//!
//! | metric | type | from |
//! |---|---|---|
//! | `process_cpu_seconds_total` | counter | `/proc/self/stat` utime + stime (USER_HZ = 100, as Prometheus's procfs assumes) |
//! | `process_resident_memory_bytes` | gauge | `/proc/self/status` `VmRSS` |
//! | `process_virtual_memory_bytes` | gauge | `/proc/self/status` `VmSize` |
//! | `process_open_fds` | gauge | entries of `/proc/self/fd` |
//! | `process_max_fds` | gauge | `/proc/self/limits` "Max open files" (soft limit) |
//! | `process_start_time_seconds` | gauge | `/proc/stat` `btime` + start time in `/proc/self/stat` |
//!
//! Both binaries register [`ProcessCollector`] on their root registry (not
//! under their `csoc_*` prefix). Where `/proc` is missing (not Linux), the
//! metrics are simply absent.

use std::path::PathBuf;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/<pid>/stat` times (Linux's USER_HZ, 100
/// on every architecture Prometheus's procfs supports).
const USER_HZ: f64 = 100.0;

/// One reading of the process' figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<f64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<f64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<f64>,
    /// Start time, Unix seconds.
    pub start_time_seconds: Option<f64>,
}

/// The `process_*` collector, reading `<proc>/self` on every scrape.
#[derive(Debug, Clone)]
pub struct ProcessCollector {
    proc_root: PathBuf,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector {
            proc_root: PathBuf::from("/proc"),
        }
    }
}

impl ProcessCollector {
    /// Reads from `proc_root` (normally `/proc`) instead.
    pub fn with_proc_root(proc_root: impl Into<PathBuf>) -> Self {
        ProcessCollector {
            proc_root: proc_root.into(),
        }
    }

    /// Reads the current figures (each absent when its file is).
    pub fn read(&self) -> ProcessStats {
        let file = |rel: &str| std::fs::read_to_string(self.proc_root.join(rel)).ok();
        let mut s = ProcessStats::default();
        if let Some(stat) = file("self/stat").as_deref().and_then(parse_stat) {
            s.cpu_seconds = Some((stat.utime + stat.stime) as f64 / USER_HZ);
            if let Some(btime) = file("stat").as_deref().and_then(parse_btime) {
                s.start_time_seconds = Some(btime as f64 + stat.starttime as f64 / USER_HZ);
            }
        }
        if let Some(status) = file("self/status") {
            s.resident_bytes = status_kb(&status, "VmRSS:").map(|kb| kb * 1024.0);
            s.virtual_bytes = status_kb(&status, "VmSize:").map(|kb| kb * 1024.0);
        }
        if let Ok(rd) = std::fs::read_dir(self.proc_root.join("self/fd")) {
            s.open_fds = Some(rd.count() as f64);
        }
        s.max_fds = file("self/limits").as_deref().and_then(parse_max_open_files);
        s
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.read();
        if let Some(v) = s.cpu_seconds {
            let c = ConstCounter::new(v);
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?;
            c.encode(m)?;
        }
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes.", s.resident_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.", s.virtual_bytes),
            ("process_open_fds", "Number of open file descriptors.", s.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors.", s.max_fds),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                s.start_time_seconds,
            ),
        ];
        for (name, help, v) in gauges {
            if let Some(v) = v {
                let g = ConstGauge::new(v);
                let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
                g.encode(m)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
}

/// `/proc/<pid>/stat`: fields counted after the command's closing
/// parenthesis (the command may itself hold spaces and parentheses).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14, stime 15, starttime 22.
    let n = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        utime: n(14)?,
        stime: n(15)?,
        starttime: n(22)?,
    })
}

fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn status_kb(text: &str, key: &str) -> Option<f64> {
    let v = text.lines().find_map(|l| l.strip_prefix(key))?;
    v.split_whitespace().next()?.parse().ok()
}

/// The soft limit of "Max open files" ("unlimited": none, reported as
/// Prometheus's procfs does, the largest int64).
fn parse_max_open_files(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(i64::MAX as f64);
    }
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_spaces_and_parens() {
        let line = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 50 0 0 20 0 9 0 12345 1000000 500 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 150,
                stime: 50,
                starttime: 12345
            })
        );
        assert_eq!(parse_stat("1 (x) S 1 2"), None, "truncated");
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn limits_status_and_btime() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024.0));
        assert_eq!(
            parse_max_open_files("Max open files            unlimited            unlimited            files"),
            Some(i64::MAX as f64)
        );
        assert_eq!(parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000));
        let status = "Name:\tx\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(2048.0));
        assert_eq!(status_kb(status, "VmSize:"), Some(123456.0));
        assert_eq!(status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn a_fake_proc_tree_gives_every_metric_and_the_real_one_is_plausible() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path();
        std::fs::create_dir_all(p.join("self/fd")).expect("mkdir");
        for i in 0..3 {
            std::fs::write(p.join(format!("self/fd/{i}")), "").expect("fd");
        }
        std::fs::write(p.join("self/stat"), "1 (x) S 1 1 1 0 -1 0 0 0 0 0 250 50 0 0 20 0 1 0 1000 0 0").expect("stat");
        std::fs::write(p.join("stat"), "btime 1700000000\n").expect("btime");
        std::fs::write(p.join("self/status"), "VmSize:\t 100 kB\nVmRSS:\t 10 kB\n").expect("status");
        std::fs::write(
            p.join("self/limits"),
            "Max open files            4096                 4096                 files\n",
        )
        .expect("limits");
        let s = ProcessCollector::with_proc_root(p).read();
        assert_eq!(
            s,
            ProcessStats {
                cpu_seconds: Some(3.0),
                resident_bytes: Some(10240.0),
                virtual_bytes: Some(102400.0),
                open_fds: Some(3.0),
                max_fds: Some(4096.0),
                start_time_seconds: Some(1_700_000_010.0),
            }
        );
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register_collector(Box::new(ProcessCollector::default()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
        if std::path::Path::new("/proc/self/stat").exists() {
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_virtual_memory_bytes ",
                "process_open_fds ",
                "process_max_fds ",
                "process_start_time_seconds ",
            ] {
                assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing:\n{text}");
            }
            let start = text
                .lines()
                .find_map(|l| l.strip_prefix("process_start_time_seconds "))
                .and_then(|v| v.parse::<f64>().ok())
                .expect("start time");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            assert!(start > now - 86_400.0 * 365.0 && start <= now + 5.0, "start {start}, now {now}");
        }
    }
}
