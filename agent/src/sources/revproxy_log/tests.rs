use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;

use serde_json::Value;

use super::stats::Limits;
use super::tail::{State, load_state, save_state};
use super::*;

fn fixtures() -> PathBuf {
    let m = Path::new(env!("CARGO_MANIFEST_DIR"));
    let a = m.join("../../shared/gen3/fixtures");
    if a.exists() { a } else { m.join("../shared/gen3/fixtures") }
}

fn expected() -> Value {
    let b = std::fs::read(fixtures().join("revproxy-access.expected.json")).expect("expected.json");
    serde_json::from_slice(&b).expect("json")
}

fn opts(path: &Path) -> TailOptions {
    TailOptions {
        path: path.to_path_buf(),
        format: Format::Auto,
        max_line_bytes: 64 << 10,
        max_read_bytes: 32 << 20,
        start_at_end: false,
        limits: Limits {
            max_services: 200,
            max_users: 100_000,
        },
    }
}

fn tail_all(path: &Path) -> Tailer {
    let mut t = Tailer::new(opts(path), None);
    t.poll().expect("poll");
    t
}

fn lines(t: &Tailer, r: &str) -> u64 {
    t.counters.lines.get(r).copied().unwrap_or(0)
}

fn total_requests(t: &mut Tailer) -> u64 {
    t.counters.requests().iter().map(|r| r.3).sum()
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).expect("open");
    f.write_all(text.as_bytes()).expect("write");
}

fn fixture_lines() -> Vec<String> {
    let s = std::fs::read_to_string(fixtures().join("revproxy-access.jsonl")).expect("fixture");
    s.lines().map(str::to_string).collect()
}

/// A valid record for `svc` with `status`.
fn rec(svc: &str, status: u16, uri: &str) -> String {
    format!(
        "{{\"gen3log\": \"nginx\", \"date_access\": \"2026-08-21T14:00:17+00:00\", \"user_id\": \"uid:1,a@b\", \"request_id\": \"x\", \"session_id\": \"x\", \"visitor_id\": \"x\", \"network_client_ip\": \"1.2.3.4\", \"network_bytes_write\": 10, \"response_secs\": 0.020, \"http_status_code\": {status}, \"http_request\": \"{uri}\", \"http_verb\": \"GET\", \"http_referer\": \"-\", \"http_useragent\": \"-\", \"http_upstream\": \"http://{svc}-service.ns\", \"proxy_service\": \"{svc}\", \"message\": \"GET {uri} HTTP/1.1\" }}\n"
    )
}

#[test]
fn revproxy_fixture_counts_match_expected() {
    let exp = expected();
    let path = fixtures().join("revproxy-access.jsonl");
    let mut t = tail_all(&path);
    // Lines.
    let malformed: u64 = exp["malformed_lines"]
        .as_object()
        .expect("obj")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(lines(&t, "ok"), exp["records"].as_u64().expect("records"));
    assert_eq!(lines(&t, "malformed"), malformed);
    assert_eq!(
        lines(&t, "ok") + lines(&t, "malformed"),
        exp["total_lines"].as_u64().expect("total")
    );
    // Requests by service and status class, under the service-label rule.
    let mut got: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    for (svc, code, _m, n) in t.counters.requests() {
        *got.entry(svc).or_default().entry(format!("{}xx", &code[..1])).or_default() += n;
        *by_status.entry(code).or_default() += n;
    }
    let want: BTreeMap<String, BTreeMap<String, u64>> =
        serde_json::from_value(exp["by_service"]["requests_by_class"].clone()).expect("by_service");
    assert_eq!(got, want);
    let want_status: BTreeMap<String, u64> = serde_json::from_value(exp["by_status"].clone()).expect("by_status");
    assert_eq!(by_status, want_status);
    // Bytes: equal per proxy_service where no record was renamed; the
    // renamed ones (noproxy → sheepdog, peregrine) add up.
    let bp = &exp["by_proxy_service"];
    let bytes = |s: &str| t.counters.services.get(s).map_or(0, |s| s.bytes);
    for (svc, v) in bp.as_object().expect("obj") {
        if svc != "noproxy" && svc != "peregrine" {
            assert_eq!(bytes(svc), v["bytes"].as_u64().expect("bytes"), "{svc}");
        }
    }
    assert_eq!(
        bytes("noproxy") + bytes("sheepdog") + bytes("peregrine"),
        bp["noproxy"]["bytes"].as_u64().expect("b") + bp["peregrine"]["bytes"].as_u64().expect("b")
    );
    // Histogram counts = requests; max latencies land in the right buckets.
    for (svc, s) in &t.counters.services {
        assert_eq!(s.buckets.iter().sum::<u64>(), got[svc].values().sum::<u64>(), "{svc}");
    }
    // indexd's 400.014 s timeout is beyond the last finite bucket (300 s).
    assert!(t.counters.services["indexd"].buckets[stats::BUCKETS_MS.len()] >= 1);
    // Logins and downloads.
    let want_logins: BTreeMap<String, u64> = serde_json::from_value(exp["logins"]["successful_by_idp"].clone()).expect("idp");
    assert_eq!(t.counters.logins_by_idp(), want_logins);
    let dl: u64 = exp["presigned_urls_issued"]
        .as_object()
        .expect("obj")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(t.counters.downloads, dl);
    let pu = &exp["presigned_urls_issued"];
    assert_eq!(t.counters.downloads_by_kind.get("drs").copied(), pu["drs_access"].as_u64());
    assert_eq!(
        t.counters.downloads_by_kind.get("presigned").copied(),
        pu["download_presigned"].as_u64()
    );
    // Distinct users, at the last record's time.
    let last = parse::parse_time(exp["last_record"].as_str().expect("last")).expect("time");
    let users = exp["authenticated_users"].as_u64().expect("users") as usize;
    assert_eq!(t.counters.users.count(last, 86_400), users);
    assert_eq!(t.counters.users.count(last, 3600), users);
    assert!(t.counters.users.count(last, 300) < users);

    // Independent count with serde_json over the strictly valid lines: each
    // (proxy_service, status) count is ours minus the hex-escaped records.
    let mut indep: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut indep_bytes = 0;
    for l in fixture_lines() {
        let Ok(v) = serde_json::from_str::<Value>(&l) else { continue };
        if v["gen3log"] != "nginx" {
            continue;
        }
        let svc = v["proxy_service"].as_str().expect("svc").to_string();
        *indep.entry((svc, v["http_status_code"].as_u64().expect("code"))).or_default() += 1;
        indep_bytes += v["network_bytes_write"].as_u64().expect("bytes");
    }
    let mut ours: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for (svc, code, _m, n) in t.counters.requests() {
        let svc = if svc == "sheepdog" { "noproxy".to_string() } else { svc };
        *ours.entry((svc, code.parse().expect("code"))).or_default() += n;
    }
    // Undo the peregrine renaming using the raw counts: noproxy+peregrine merged.
    let merge = |m: &BTreeMap<(String, u64), u64>| -> BTreeMap<(String, u64), u64> {
        let mut o = BTreeMap::new();
        for ((s, c), n) in m {
            let s = if s == "peregrine" { "noproxy".to_string() } else { s.clone() };
            *o.entry((s, *c)).or_default() += n;
        }
        o
    };
    let (ours, indep) = (merge(&ours), merge(&indep));
    let mut diff = 0;
    for (k, n) in &ours {
        let i = indep.get(k).copied().unwrap_or(0);
        assert!(*n >= i, "{k:?}: ours {n} < independent {i}");
        diff += n - i;
    }
    assert_eq!(diff, exp["records_with_nginx_hex_escapes"].as_u64().expect("hex"));
    let all_bytes: u64 = t.counters.services.values().map(|s| s.bytes).sum();
    assert!(all_bytes >= indep_bytes);
    assert_eq!(total_requests(&mut t), exp["records"].as_u64().expect("records"));
}

#[test]
fn revproxy_cri_file_equals_plain_lines() {
    let cri = fixtures().join("revproxy-access.cri.log");
    let text = std::fs::read_to_string(&cri).expect("cri");
    let n_lines = text.lines().count();
    let partials = text.lines().filter(|l| l.split(' ').nth(2) == Some("P")).count();
    assert!(partials >= 1, "the fixture has a split line");
    let mut c = tail_all(&cri);
    // The same records, as plain lines.
    let dir = tempfile::tempdir().expect("tmp");
    let plain = dir.path().join("plain.log");
    let first: Vec<String> = fixture_lines().into_iter().take(n_lines - partials).collect();
    std::fs::write(&plain, first.join("\n") + "\n").expect("write");
    let mut p = tail_all(&plain);
    assert!(lines(&c, "ok") > 50);
    assert_eq!(c.counters.lines, p.counters.lines);
    assert_eq!(c.counters.requests(), p.counters.requests());
    assert_eq!(c.counters.logins, p.counters.logins);
    // A CRI record split across polls waits for its F chunk.
    let f = dir.path().join("cri.log");
    let l = rec("fence", 200, "/user/user");
    let (a, b) = l.trim_end().split_at(100);
    append(&f, &format!("2026-08-21T14:00:17.1Z stdout P {a}\n"));
    let mut t = tail_all(&f);
    assert_eq!(lines(&t, "ok"), 0);
    let st = t.state();
    append(&f, &format!("2026-08-21T14:00:17.1Z stdout F {b}\n"));
    t.poll().expect("poll");
    assert_eq!(lines(&t, "ok"), 1);
    // A restart from the state saved mid-record reassembles it too.
    let mut r = Tailer::new(opts(&f), Some(st));
    r.poll().expect("poll");
    assert_eq!((lines(&r, "ok"), lines(&r, "malformed")), (1, 0));
}

#[test]
fn revproxy_partial_and_malformed_and_too_long_lines() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("access.log");
    let l = rec("fence", 200, "/user/user");
    let (a, b) = l.split_at(70);
    append(&f, a);
    let mut t = tail_all(&f);
    assert_eq!((lines(&t, "ok"), lines(&t, "malformed")), (0, 0), "partial line waits");
    append(&f, b);
    t.poll().expect("poll");
    assert_eq!((lines(&t, "ok"), lines(&t, "malformed")), (1, 0));
    append(
        &f,
        "2026/08/21 14:37:12 [error] 24#24: *1 connect() failed\n\n{\"level\":\"info\"}\n{\"gen3log\": \"nginx\", \"date\n",
    );
    append(&f, &format!("{{\"gen3log\": \"nginx\", \"x\": \"{}\" }}\n", "a".repeat(70 << 10)));
    append(&f, &"b".repeat(100 << 10)); // unterminated, over the limit
    t.poll().expect("poll");
    append(&f, &format!("{}\n", "b".repeat(10)));
    append(&f, &rec("indexd", 500, "/index/x"));
    t.poll().expect("poll");
    assert_eq!(lines(&t, "ok"), 2);
    assert_eq!(lines(&t, "malformed"), 4);
    assert_eq!(lines(&t, "too_long"), 2);
    assert_eq!(total_requests(&mut t), 2);
}

#[test]
fn revproxy_rotation_and_truncation() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("access.log");
    append(&f, &rec("fence", 200, "/user/user").repeat(3));
    let mut t = tail_all(&f);
    assert_eq!(lines(&t, "ok"), 3);
    // Lines written just before the rename are read from the old file.
    append(&f, &rec("fence", 200, "/user/user").repeat(2));
    std::fs::rename(&f, dir.path().join("access.log.1")).expect("rename");
    t.poll().expect("poll while the path is missing");
    append(&f, &rec("indexd", 200, "/index/x").repeat(4));
    t.poll().expect("poll");
    assert_eq!(lines(&t, "ok"), 9);
    assert_eq!(t.counters.services["indexd"].buckets.iter().sum::<u64>(), 4);
    // Rename while the old file has unread lines and the new one exists.
    append(&f, &rec("indexd", 200, "/index/x"));
    std::fs::rename(&f, dir.path().join("access.log.2")).expect("rename");
    append(&f, &rec("guppy", 200, "/guppy/graphql"));
    t.poll().expect("poll");
    assert_eq!(lines(&t, "ok"), 11);
    assert_eq!(t.counters.files.get("rotated"), Some(&2));
    // copytruncate: emptied in place, then written again.
    std::fs::write(&f, "").expect("truncate");
    t.poll().expect("poll");
    append(&f, &rec("wts", 200, "/wts/x").repeat(2));
    t.poll().expect("poll");
    assert_eq!(lines(&t, "ok"), 13);
    // Truncated and regrown past the offset between two polls: the
    // fingerprint of the first bytes differs.
    append(&f, &rec("wts", 200, "/wts/x").repeat(5));
    t.poll().expect("poll");
    std::fs::write(&f, rec("arborist", 204, "/authz/mapping?a=1").repeat(9)).expect("rewrite");
    t.poll().expect("poll");
    assert_eq!(lines(&t, "ok"), 27);
    assert_eq!(t.counters.services["arborist"].buckets.iter().sum::<u64>(), 9);
    assert_eq!(t.counters.files.get("truncated"), Some(&2));
}

#[test]
fn revproxy_restart_from_saved_state() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("access.log");
    let sf = dir.path().join("spool/revproxy_log.state");
    let all = fixture_lines();
    let (head, tail) = all.split_at(1000);
    // Half the file plus half a line.
    let half = &tail[0][..tail[0].len() / 2];
    append(&f, &(head.join("\n") + "\n" + half));
    let mut t = tail_all(&f);
    save_state(&sf, &t.state()).expect("save");
    let saved = t.state();
    drop(t);
    // Written while the agent was down.
    append(&f, &tail[0][half.len()..]);
    append(&f, &("\n".to_string() + &tail[1..].join("\n") + "\n"));
    let st: State = load_state(&sf).expect("load").expect("some");
    assert_eq!(st.offset, saved.offset);
    let mut r = Tailer::new(opts(&f), Some(st));
    r.poll().expect("poll");
    let mut whole = tail_all(&fixtures().join("revproxy-access.jsonl"));
    assert_eq!(r.counters.lines, whole.counters.lines, "no skip, no double count");
    assert_eq!(r.counters.requests(), whole.counters.requests());
    assert_eq!(r.counters.logins, whole.counters.logins);
    assert_eq!(r.counters.downloads, whole.counters.downloads);
    let last = parse::parse_time("2026-08-21T14:59:55+00:00").expect("t");
    assert_eq!(r.counters.users.count(last, 86_400), whole.counters.users.count(last, 86_400));

    // Rotated while down: the renamed file is finished first.
    save_state(&sf, &r.state()).expect("save");
    append(&f, &rec("fence", 200, "/user/user"));
    std::fs::rename(&f, dir.path().join("access.log.1")).expect("rename");
    append(&f, &rec("fence", 200, "/user/user").repeat(2));
    let mut r2 = Tailer::new(opts(&f), load_state(&sf).expect("load"));
    r2.poll().expect("poll");
    assert_eq!(lines(&r2, "ok"), lines(&whole, "ok") + 3);
    // A state for another path is ignored.
    let other = dir.path().join("other.log");
    append(&other, &rec("fence", 200, "/user/user"));
    let r3 = {
        let mut t = Tailer::new(opts(&other), load_state(&sf).expect("load"));
        t.poll().expect("poll");
        t
    };
    assert_eq!(lines(&r3, "ok"), 1);
}

#[test]
fn revproxy_active_users_are_bounded() {
    let mut w = stats::UserWindow::default();
    for i in 0..1000 {
        w.see(&format!("uid:{i},u{i}"), 1000 + i, 100);
    }
    let n = w.count(2000, 86_400);
    assert!((90..=100).contains(&n), "{n}");
    // The most recent users are kept.
    w.see("uid:999,u999", 1999, 100);
    assert_eq!(w.count(2000, 86_400), n);
    assert_eq!(w.count(2000, 5), 4, "seen at 1996..=1999");
}

#[test]
fn revproxy_config_and_flag() {
    let y = "sources:\n  revproxy_log:\n    enabled: true\n    path: /var/log/revproxy.log\n    poll_interval: 500ms\n    max_line_bytes: 32KiB\n    format: cri\n    start_at: end\n";
    let c = crate::config::AgentConfig::from_yaml(y, Path::new("a.yml")).expect("parse");
    let r = &c.sources.revproxy_log;
    assert_eq!(r.poll_interval, Duration::from_millis(500));
    assert_eq!(r.max_line_bytes, 32 << 10);
    assert_eq!(r.format, Format::Cri);
    assert_eq!(r.state_path(Path::new("/sp")), Path::new("/sp/revproxy_log.state"));
    c.validate().expect("valid");
    let e = crate::config::AgentConfig::from_yaml("sources:\n  revproxy_log:\n    pth: x\n", Path::new("a.yml")).expect_err("unknown");
    assert!(e.to_string().contains("pth"), "{e}");
    let mut c = crate::config::AgentConfig::default();
    c.sources.revproxy_log.enabled = true;
    assert!(c.validate().expect_err("path").to_string().contains("sources.revproxy_log.path"));
    c.sources.revproxy_log.path = "/x".into();
    c.sources.revproxy_log.max_line_bytes = 10;
    assert!(
        c.validate()
            .expect_err("size")
            .to_string()
            .contains("sources.revproxy_log.max_line_bytes")
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.yml");
    let c = crate::config::AgentConfig::from_file(&example).expect("example parses");
    c.validate().expect("example is valid");
    use clap::Parser;
    let args = crate::cli::Args::try_parse_from(["csoc-agent", "--revproxy-log", "/var/log/r.log"]).expect("flags");
    let c = args.resolve().expect("resolve");
    assert!(c.sources.revproxy_log.enabled);
    assert_eq!(c.sources.revproxy_log.path, Path::new("/var/log/r.log"));
    c.validate().expect("valid");
}

#[tokio::test]
async fn revproxy_source_compliance() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("access.log");
    std::fs::copy(fixtures().join("revproxy-access.jsonl"), &f).expect("copy");
    let cfg = RevproxyLogConfig {
        enabled: true,
        path: f,
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let src = RevproxyLogSource::new(&cfg, dir.path()).expect("valid");
    let frame = crate::sources::test_util::run_and_assert_source_compliance(Box::new(src), "revproxy_log").await;
    let get = |name: &str, l: &[(&str, &str)]| {
        frame
            .samples
            .iter()
            .find(|s| {
                s.labels.iter().any(|(k, v)| k == "__name__" && v == name)
                    && l.iter().all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .map(|s| s.value)
    };
    assert_eq!(
        get(
            "gen3_http_requests_total",
            &[("service", "sheepdog"), ("code", "200"), ("method", "GET")]
        )
        .map(|v| v > 0.0),
        Some(true)
    );
    assert_eq!(get("gen3_logins_total", &[("idp", "google")]), Some(18.0));
    assert_eq!(get("gen3_downloads_total", &[("kind", "drs")]), Some(52.0));
    assert_eq!(get("gen3_downloads_total", &[("kind", "presigned")]), Some(83.0));
    assert_eq!(get("gen3_uploads_total", &[]), Some(23.0));
    assert_eq!(
        get(
            "gen3_logins_total",
            &[("idp", "fence"), ("institution", "urn:mace:incommon:uchicago.edu")]
        ),
        Some(2.0)
    );
    assert_eq!(get("gen3_revproxy_log_lines_total", &[("result", "malformed")]), Some(12.0));
    assert_eq!(
        get("gen3_http_request_duration_seconds_bucket", &[("service", "wts"), ("le", "+Inf")]),
        Some(13.0)
    );
    assert!(get("gen3_active_users", &[("window", "1d")]).is_some());
    for s in &frame.samples {
        let n = &s.labels[0].1;
        assert!(frame.metadata.iter().any(|m| n.starts_with(&m.name)), "{n} has metadata");
    }
    // The state was saved before the frame was sent.
    let st = load_state(&dir.path().join("revproxy_log.state")).expect("load").expect("saved");
    assert_eq!(st.counters.downloads, 135);
    // A restarted source continues from the state: nothing counted twice.
    append(&cfg.path, &rec("fence", 200, "/user/data/download/dg.1/x"));
    let src = RevproxyLogSource::new(&cfg, dir.path()).expect("valid");
    let frame = crate::sources::test_util::run_and_assert_source_compliance(Box::new(src), "revproxy_log").await;
    let v = |name: &str, l: (&str, &str)| {
        frame
            .samples
            .iter()
            .find(|s| s.labels.iter().any(|(k, v)| k == "__name__" && v == name) && s.labels.iter().any(|(k, v)| k == l.0 && v == l.1))
            .map(|s| s.value)
    };
    assert_eq!(v("gen3_downloads_total", ("kind", "presigned")), Some(84.0));
    assert_eq!(v("gen3_revproxy_log_lines_total", ("result", "ok")), Some(2017.0));
}

#[test]
fn revproxy_start_at_end_counts_only_new_lines() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("access.log");
    append(&f, &rec("fence", 200, "/user/user").repeat(3));
    let mut o = opts(&f);
    o.start_at_end = true;
    let mut t = Tailer::new(o, None);
    t.poll().expect("poll");
    assert_eq!(lines(&t, "ok"), 0);
    append(&f, &rec("fence", 200, "/user/user"));
    t.poll().expect("poll");
    assert_eq!(lines(&t, "ok"), 1);
}

/// Throughput: `cargo test --release -p csoc-agent --lib revproxy_log::tests::bench -- --ignored --nocapture`
/// (REVPROXY_BENCH_LINES, default 1000000). Reports CPU time (utime+stime).
#[test]
#[ignore]
fn bench() {
    let n: usize = std::env::var("REVPROXY_BENCH_LINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("access.log");
    let src = fixture_lines();
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&f).expect("create"));
        for i in 0..n {
            w.write_all(src[i % src.len()].as_bytes()).expect("w");
            w.write_all(b"\n").expect("w");
        }
    }
    let bytes = std::fs::metadata(&f).expect("md").len();
    let cpu = || -> f64 {
        let s = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let rest = &s[s.rfind(')').expect(")") + 2..];
        let v: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = v[11].parse::<f64>().expect("utime") + v[12].parse::<f64>().expect("stime");
        ticks / rustix::param::clock_ticks_per_second() as f64
    };
    let wall = Instant::now();
    let c0 = cpu();
    let mut t = Tailer::new(opts(&f), None);
    loop {
        if t.poll().expect("poll") == 0 {
            break;
        }
    }
    let c1 = cpu();
    let total: u64 = t.counters.lines.values().sum();
    assert_eq!(total as usize, n);
    let secs = c1 - c0;
    println!(
        "revproxy_log bench: {n} lines, {:.1} MiB, cpu {secs:.2} s (utime+stime), wall {:.2} s, {:.0} lines/s per core",
        bytes as f64 / 1048576.0,
        wall.elapsed().as_secs_f64(),
        n as f64 / secs
    );
}

/// A CRI line (as the kubelet writes /var/log/pods files) of `rec`.
fn cri(line: &str) -> String {
    format!("2026-08-21T14:00:17.000000001Z stdout F {}", line)
}

fn pod_dir(root: &Path, pod: &str) -> PathBuf {
    let d = root.join(format!("pods/gen3_{pod}_uid-{pod}/revproxy"));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn glob_opts(root: &Path) -> TailOptions {
    opts(&root.join("pods/gen3_revproxy-*/revproxy/*.log"))
}

fn glob_ok(g: &GlobTailer) -> u64 {
    g.counters.lines.get("ok").copied().unwrap_or(0)
}

#[test]
fn revproxy_glob_follows_every_match_new_and_vanished_files_and_resumes() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    let a = pod_dir(root, "revproxy-a").join("0.log");
    let b = pod_dir(root, "revproxy-b").join("0.log");
    // Not matched: another container, another deployment.
    append(&pod_dir(root, "fence-x").join("0.log"), &cri(&rec("fence", 200, "/user/user")));
    append(&a, &cri(&rec("fence", 200, "/user/user")).repeat(3));
    append(&b, &cri(&rec("indexd", 200, "/index/x")).repeat(2));
    let mut g = GlobTailer::new(glob_opts(root), None);
    g.poll().expect("poll");
    assert_eq!(glob_ok(&g), 5);
    assert_eq!(g.files().len(), 2);
    assert!(g.caught_up);

    // A new replica: read from its beginning.
    let c = pod_dir(root, "revproxy-c").join("0.log");
    append(&c, &cri(&rec("fence", 200, "/user/user")).repeat(4));
    // b's last lines, then its pod is deleted before the next poll: the
    // open file is finished, then forgotten.
    append(&b, &cri(&rec("indexd", 500, "/index/x")));
    std::fs::remove_dir_all(b.parent().and_then(Path::parent).expect("pod dir")).expect("rm");
    g.poll().expect("poll");
    assert_eq!(glob_ok(&g), 10);
    assert_eq!(g.files().len(), 2, "b is gone: {:?}", g.files());

    // Restart: every file resumes at its own offset.
    let st: State = serde_json::from_slice(&serde_json::to_vec(&g.state()).expect("ser")).expect("de");
    assert_eq!(st.files.len(), 2);
    drop(g);
    append(&a, &cri(&rec("fence", 200, "/user/user")));
    // The kubelet rotates c while the agent is down (renamed, new 0.log).
    append(&c, &cri(&rec("fence", 200, "/user/user")));
    std::fs::rename(&c, c.with_file_name("0.log.20260821-140017")).expect("rotate");
    append(&c, &cri(&rec("fence", 200, "/user/user")).repeat(2));
    let mut g = GlobTailer::new(glob_opts(root), Some(st));
    g.poll().expect("poll");
    // 10 + a's 1 + c's 3: the line written to c before the rotation is
    // read from the renamed file (same inode as saved), then the new 0.log.
    assert_eq!(glob_ok(&g), 14);
    let mut svc = g.counters.requests();
    svc.sort();
    assert_eq!(svc.iter().map(|r| r.3).sum::<u64>(), 14);
    assert!(svc.iter().any(|r| r.0 == "indexd" && r.1 == "500"));
    // A state for another pattern is not resumed.
    let mut other = glob_opts(root);
    other.path = root.join("pods/*/revproxy/0.log");
    let mut g2 = GlobTailer::new(other, Some(g.state()));
    g2.poll().expect("poll");
    // a (4 lines), c (2 in the new 0.log), fence-x (1): all from 0.
    assert_eq!(glob_ok(&g2), 7);
}

#[test]
fn revproxy_glob_start_at_end_only_for_files_of_the_first_poll() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    let a = pod_dir(root, "revproxy-a").join("0.log");
    append(&a, &cri(&rec("fence", 200, "/user/user")).repeat(3));
    let mut o = glob_opts(root);
    o.start_at_end = true;
    let mut g = GlobTailer::new(o, None);
    g.poll().expect("poll");
    assert_eq!(glob_ok(&g), 0);
    append(&a, &cri(&rec("fence", 200, "/user/user")));
    append(
        &pod_dir(root, "revproxy-b").join("0.log"),
        &cri(&rec("fence", 200, "/user/user")).repeat(2),
    );
    g.poll().expect("poll");
    assert_eq!(glob_ok(&g), 3);
}

#[test]
fn revproxy_old_state_files_still_load() {
    let old = r#"{"version":1,"path":"/var/log/r.log","dev":1,"ino":2,"fingerprint":"","offset":10,"skipping":false,"counters":{"services":{},"logins":{},"downloads":7,"lines":{},"files":{},"users":{"seen":[],"newest":0}}}"#;
    let st: State = serde_json::from_str(old).expect("old state");
    assert_eq!(st.counters.downloads, 7);
    assert!(st.files.is_empty() && st.pods.is_empty());
    // And the new fields are left out when empty.
    let back = serde_json::to_string(&st).expect("ser");
    assert!(!back.contains("\"files\":[") && !back.contains("\"pods\""), "{back}");
}

fn k8s_pod(name: &str, containers: &[&str]) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "gen3", "uid": "u1", "labels": {"app": "revproxy"}},
        "spec": {
            "initContainers": [{"name": "init"}],
            "containers": containers.iter().map(|c| serde_json::json!({"name": c})).collect::<Vec<_>>(),
        },
    }))
    .expect("pod")
}

#[test]
fn revproxy_kubernetes_sink_routes_containers_and_counts_lines() {
    use crate::sources::pod_logs::LogSink;
    let lim = opts(Path::new("x")).limits;
    let mut all = kube::RevproxySink::new(stats::Counters::default(), lim, None);
    let p = k8s_pod("revproxy-1", &["revproxy", "sidecar"]);
    let names = |r: Vec<(String, ())>| r.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(
        names(all.routes(&p)),
        ["revproxy", "sidecar"],
        "every container, no init containers"
    );
    let mut one = kube::RevproxySink::new(stats::Counters::default(), lim, Some("revproxy".into()));
    assert_eq!(names(one.routes(&p)), ["revproxy"]);
    assert!(one.routes(&k8s_pod("x", &["nginx"])).is_empty());
    for l in fixture_lines() {
        one.line(&(), l.as_bytes(), false);
    }
    one.line(&(), b"xxxx", true);
    let whole = tail_all(&fixtures().join("revproxy-access.jsonl"));
    assert_eq!(one.counters.lines.get("ok"), whole.counters.lines.get("ok"));
    assert_eq!(one.counters.lines.get("malformed"), whole.counters.lines.get("malformed"));
    assert_eq!(one.counters.lines.get("too_long"), Some(&1));
    assert_eq!(one.counters.downloads, whole.counters.downloads);
}

#[test]
fn revproxy_kubernetes_config_flags_and_validation() {
    use clap::Parser;
    let y =
        "sources:\n  revproxy_log:\n    enabled: true\n    kubernetes: {namespace: gen3, selector: app=revproxy, container: revproxy}\n";
    let c = crate::config::AgentConfig::from_yaml(y, Path::new("a.yml")).expect("parse");
    c.validate().expect("valid");
    let k = c.sources.revproxy_log.kubernetes.as_ref().expect("k");
    assert_eq!(
        (k.namespace.as_str(), k.selector.as_str(), k.container.as_deref()),
        ("gen3", "app=revproxy", Some("revproxy"))
    );

    let mut both = c.clone();
    both.sources.revproxy_log.path = "/x.log".into();
    assert!(
        both.validate()
            .expect_err("both")
            .to_string()
            .contains("sources.revproxy_log.kubernetes")
    );
    let mut bad = c.clone();
    if let Some(k) = bad.sources.revproxy_log.kubernetes.as_mut() {
        k.selector = "app in revproxy".into();
    }
    assert!(
        bad.validate()
            .expect_err("selector")
            .to_string()
            .contains("sources.revproxy_log.kubernetes.selector")
    );
    let mut g = crate::config::AgentConfig::default();
    g.sources.revproxy_log.enabled = true;
    g.sources.revproxy_log.path = "/var/log/pods/gen3_revproxy-*/revproxy/[0-9.log".into();
    assert!(g.validate().expect_err("glob").to_string().contains("sources.revproxy_log.path"));
    g.sources.revproxy_log.path = "/var/log/pods/gen3_revproxy-*/revproxy/*.log".into();
    g.validate().expect("glob path");

    let args = crate::cli::Args::try_parse_from([
        "csoc-agent",
        "--revproxy-log-pods",
        "app=revproxy",
        "--revproxy-log-namespace",
        "gen3",
    ])
    .expect("flags");
    let c = args.resolve().expect("resolve");
    let r = &c.sources.revproxy_log;
    assert!(r.enabled && r.path.as_os_str().is_empty());
    assert_eq!(
        r.kubernetes.as_ref().map(|k| (k.namespace.as_str(), k.selector.as_str())),
        Some(("gen3", "app=revproxy"))
    );
    c.validate().expect("valid");
    let args = crate::cli::Args::try_parse_from(["csoc-agent", "--revproxy-log-pods", "app=revproxy"]).expect("flags");
    let e = args.resolve().expect_err("no namespace");
    assert!(format!("{e:#}").contains("--revproxy-log-namespace"), "{e:#}");
    assert!(crate::cli::Args::try_parse_from(["csoc-agent", "--revproxy-log-pods", "a=b", "--revproxy-log", "/x"]).is_err());
    // The first --kubernetes-namespace (wired by the caller) or the file's namespace.
    let mut c = crate::config::AgentConfig::default();
    crate::cli::apply_revproxy_log_pods(&mut c, "app=revproxy", None, Some("commons-a")).expect("ns from --kubernetes-namespace");
    assert_eq!(
        c.sources.revproxy_log.kubernetes.as_ref().map(|k| k.namespace.as_str()),
        Some("commons-a")
    );
    crate::cli::apply_revproxy_log_pods(&mut c, "app=rp", None, None).expect("ns from the config");
    assert_eq!(
        c.sources.revproxy_log.kubernetes.as_ref().map(|k| k.namespace.as_str()),
        Some("commons-a")
    );
}

/// Kubernetes mode without a reachable API server: the saved counters are
/// still sent, and the state keeps its pod cursors.
#[tokio::test]
async fn revproxy_kubernetes_source_sends_saved_counters_without_an_api_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let kc = dir.path().join("kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    std::fs::write(
        &kc,
        format!("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\n"),
    )
    .expect("kubeconfig");
    let cfg = RevproxyLogConfig {
        enabled: true,
        kubernetes: Some(PodLogSelector {
            namespace: "gen3".into(),
            selector: "app=revproxy".into(),
            container: None,
        }),
        ..Default::default()
    };
    let mut pods = BTreeMap::new();
    pods.insert(
        "gen3/revproxy-1/u1/revproxy".to_string(),
        crate::sources::pod_logs::Cursor::at(1_740_830_400_000_000_000),
    );
    let st = State {
        version: 1,
        path: "kubernetes://gen3?app=revproxy".into(),
        counters: stats::Counters {
            downloads: 99,
            downloads_by_kind: [("drs".to_string(), 99)].into(),
            ..Default::default()
        },
        pods,
        ..Default::default()
    };
    save_state(&dir.path().join("revproxy_log.state"), &st).expect("save");
    let src = RevproxyLogSource::new(&cfg, dir.path()).expect("valid").with_kubeconfig(Some(kc));
    let frame = crate::sources::test_util::run_and_assert_source_compliance(Box::new(src), "revproxy_log").await;
    let downloads = frame
        .samples
        .iter()
        .find(|s| {
            s.labels.iter().any(|(k, v)| k == "__name__" && v == "gen3_downloads_total")
                && s.labels.iter().any(|(k, v)| k == "kind" && v == "drs")
        })
        .map(|s| s.value);
    assert_eq!(downloads, Some(99.0));
    let saved = load_state(&dir.path().join("revproxy_log.state")).expect("load").expect("some");
    assert_eq!(
        saved.pods.len(),
        1,
        "a cursor of a pod not yet seen is kept until the pod list says it is gone"
    );
    assert_eq!(saved.counters.downloads, 99);
}

/// The usage splits (downloads by kind, uploads, logins by idp and
/// institution) against an independent count: a plain substring scan of the
/// fixture's lines that shares no code with the parser (no regexes, no
/// serde), pairing each login start's `shib_idp` with its session's callback.
#[test]
fn revproxy_usage_splits_match_independent_count() {
    fn field<'a>(l: &'a str, name: &str) -> Option<&'a str> {
        let key = format!("\"{name}\": ");
        let rest = &l[l.find(&key)? + key.len()..];
        if let Some(r) = rest.strip_prefix('"') {
            r.find('"').map(|e| &r[..e])
        } else {
            rest.find([',', ' ', '}']).map(|e| &rest[..e])
        }
    }
    let (mut drs, mut presigned, mut uploads) = (0u64, 0u64, 0u64);
    let mut starts: BTreeMap<String, String> = BTreeMap::new();
    let mut logins: BTreeMap<(String, String), u64> = BTreeMap::new();
    for l in fixture_lines() {
        if !l.starts_with("{\"gen3log\": \"nginx\"") || !l.ends_with('}') {
            continue;
        }
        let (Some(uri), Some(verb), Some(code), Some(sid)) = (
            field(&l, "http_request"),
            field(&l, "http_verb"),
            field(&l, "http_status_code"),
            field(&l, "session_id"),
        ) else {
            continue;
        };
        let code: u16 = code.parse().expect("status");
        let path = uri.split('?').next().unwrap_or(uri);
        let segs: Vec<&str> = path.split('/').collect();
        if (200..400).contains(&code) {
            if verb == "GET" && path.starts_with("/user/data/download/") && path.len() > "/user/data/download/".len() {
                presigned += 1;
            }
            if (verb == "GET" || verb == "POST")
                && path.starts_with("/ga4gh/drs/v1/objects/")
                && (path.ends_with("/access") || segs.iter().rev().nth(1) == Some(&"access"))
            {
                drs += 1;
            }
        }
        if (200..300).contains(&code)
            && (path == "/user/data/upload"
                || path == "/user/data/multipart/upload"
                || (verb == "GET" && path.starts_with("/user/data/upload/")))
        {
            uploads += 1;
        }
        if verb == "GET" && segs.len() == 4 && segs[1] == "user" && segs[2] == "login" {
            // A login start: remember its shib_idp (or none).
            let inst = uri
                .split(['?', '&'])
                .find_map(|p| p.strip_prefix("shib_idp="))
                .map(|v| v.replace("%3A", ":"))
                .unwrap_or_default();
            starts.insert(sid.to_string(), inst);
        }
        let callback =
            segs.len() == 5 && segs[1] == "user" && segs[2] == "login" && (segs[4] == "login" || segs[3..] == ["ras", "callback"]);
        if verb == "GET" && callback {
            let inst = starts.remove(sid).unwrap_or_default();
            if (300..400).contains(&code) {
                let idp = if segs[3] == "shib" { "itrust" } else { segs[3] };
                *logins.entry((idp.to_string(), inst)).or_default() += 1;
            }
        }
    }
    let t = tail_all(&fixtures().join("revproxy-access.jsonl"));
    assert!(drs > 0 && presigned > 0 && uploads > 0, "the fixture has each kind");
    assert_eq!(t.counters.downloads_by_kind.get("drs").copied(), Some(drs));
    assert_eq!(t.counters.downloads_by_kind.get("presigned").copied(), Some(presigned));
    assert_eq!(t.counters.uploads, uploads);
    let mut ours: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (k, n) in &t.counters.logins {
        let mut p = k.split('\u{1f}');
        let idp = p.next().expect("idp").to_string();
        let inst = p.nth(1).unwrap_or("").to_string();
        *ours.entry((idp, inst)).or_default() += n;
    }
    assert_eq!(ours, logins);
    assert!(
        logins.keys().any(|(_, i)| i == "urn:mace:incommon:uchicago.edu"),
        "the fixture has institution logins: {logins:?}"
    );
}

/// Logins by institution are bounded: past 32 institution keys the rest
/// count as `other`, and a start's parameters go only to its own session's
/// callback.
#[test]
fn revproxy_login_institutions_are_bounded() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("a.log");
    let mut text = String::new();
    let line =
        |sid: &str, uri: &str, code: u16| rec("fence", code, uri).replace("\"session_id\": \"x\"", &format!("\"session_id\": \"{sid}\""));
    for i in 0..40 {
        text += &line(
            &format!("s{i}"),
            &format!("/user/login/fence?idp=shibboleth&shib_idp=urn%3Ainst{i}"),
            302,
        );
        text += &line(&format!("s{i}"), "/user/login/fence/login?code=c", 302);
    }
    // Another session's callback does not inherit s-start's institution.
    text += &line("s-start", "/user/login/fence?shib_idp=urn%3Aother-session", 302);
    text += &line("s-cb", "/user/login/fence/login?code=c", 302);
    append(&f, &text);
    let t = tail_all(&f);
    let inst: Vec<&String> = t.counters.logins.keys().filter(|k| k.contains('\u{1f}')).collect();
    assert_eq!(inst.len(), 33, "32 institutions and the overflow key: {inst:?}");
    assert_eq!(t.counters.logins.get("fence\u{1f}other\u{1f}other"), Some(&8));
    assert_eq!(t.counters.logins.get("fence"), Some(&1));
    assert_eq!(t.counters.logins_by_idp().get("fence"), Some(&41));
}
