//! Tests of the pod_logs module: exact resume over timestamped streams, line
//! framing, the log counters, configuration.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::counters::{LINES_METRIC, OVERFLOW};
use super::follow::{LineReader, LogSink};
use super::resume::{Cursor, Gate, format_ts, parse_ts, since_time, split_line};
use super::*;

/// A sink that keeps every line.
#[derive(Default)]
struct Collect {
    lines: Vec<String>,
    too_long: usize,
}

impl LogSink for Collect {
    type Route = ();
    fn routes(&mut self, _pod: &Pod) -> Vec<(String, ())> {
        Vec::new()
    }
    fn line(&mut self, _route: &(), content: &[u8], too_long: bool) {
        if too_long {
            self.too_long += 1;
        }
        self.lines.push(String::from_utf8_lossy(content).into_owned());
    }
}

const S: i128 = 1_000_000_000;
/// 2025-03-01T12:00:00Z in ns.
const T0: i128 = 1_740_830_400 * S;

/// A log of `(timestamp, text)`: several lines per second, several with the
/// very same timestamp (as the kubelet writes bursts).
fn log() -> Vec<(i128, String)> {
    let mut v = Vec::new();
    let stamps = [
        T0,
        T0,
        T0 + 5,
        T0 + 700_000_000,
        T0 + 700_000_000,
        T0 + 700_000_000,
        T0 + S,
        T0 + S + 1,
        T0 + 2 * S + 999_999_999,
        T0 + 2 * S + 999_999_999,
        T0 + 3 * S,
        T0 + 3 * S,
    ];
    for (i, t) in stamps.iter().enumerate() {
        v.push((*t, format!("line {i}")));
    }
    v
}

fn render(lines: &[(i128, String)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (t, s) in lines {
        b.extend_from_slice(format_ts(*t).as_bytes());
        b.push(b' ');
        b.extend_from_slice(s.as_bytes());
        b.push(b'\n');
    }
    b
}

/// What the API server answers to `sinceTime`: every line at or after it.
fn serve(log: &[(i128, String)], cursor: &Cursor) -> Vec<u8> {
    let from = cursor.since_time().map(|t| t.as_nanosecond());
    let lines: Vec<(i128, String)> = log.iter().filter(|(t, _)| from.is_none_or(|f| *t >= f)).cloned().collect();
    render(&lines)
}

/// Feeds `bytes` in chunks of the given sizes (cycled).
fn feed(r: &mut LineReader, sink: &mut Collect, cursor: &mut Cursor, bytes: &[u8], sizes: &[usize]) {
    let mut i = 0;
    let mut k = 0;
    while i < bytes.len() {
        let n = sizes[k % sizes.len()].max(1).min(bytes.len() - i);
        r.feed(&bytes[i..i + n], &(), sink, cursor);
        i += n;
        k += 1;
    }
}

#[test]
fn timestamps_parse_format_and_truncate_to_the_second() {
    let t = parse_ts("2025-03-01T12:00:00.700000001Z").expect("parse");
    assert_eq!(t, T0 + 700_000_001);
    assert_eq!(format_ts(t), "2025-03-01T12:00:00.700000001Z");
    assert_eq!(parse_ts("2025-03-01T13:00:00+01:00"), Some(T0));
    assert_eq!(parse_ts("yesterday"), None);
    // sinceTime is truncated, never rounded up (kube-rs rounds to the
    // nearest second: 12:00:00.7 would become 12:00:01 and skip lines).
    assert_eq!(since_time(T0 + 700_000_000).expect("ts").to_string(), "2025-03-01T12:00:00Z");
    assert_eq!(since_time(T0 + 999_999_999).expect("ts").to_string(), "2025-03-01T12:00:00Z");
    assert_eq!(since_time(T0).expect("ts").to_string(), "2025-03-01T12:00:00Z");
    let (ts, content) = split_line(b"2025-03-01T12:00:00.5Z {\"a\": 1}").expect("split");
    assert_eq!(ts, T0 + 500_000_000);
    assert_eq!(content, b"{\"a\": 1}");
    assert!(split_line(b"no timestamp here").is_none());
}

#[test]
fn cursor_round_trips_through_the_state_file_with_nanoseconds() {
    let mut c = Cursor::default();
    c.record(T0 + 700_000_001);
    c.record(T0 + 700_000_001);
    c.record(T0 + 5); // older: counted, the cursor stays
    assert_eq!((c.ts, c.n), (Some(T0 + 700_000_001), 2));
    let json = serde_json::to_string(&c).expect("ser");
    assert_eq!(json, r#"{"ts":"2025-03-01T12:00:00.700000001Z","n":2}"#);
    let back: Cursor = serde_json::from_str(&json).expect("de");
    assert_eq!(back, c);
    let fresh: Cursor = serde_json::from_str("{}").expect("empty");
    assert_eq!(fresh, Cursor::default());
    assert!(serde_json::from_str::<Cursor>(r#"{"ts":"soon","n":1}"#).is_err());
}

#[test]
fn gate_skips_older_lines_and_the_first_n_at_the_cursor() {
    let mut g = Gate::new(&Cursor {
        ts: Some(T0 + 10),
        n: 2,
        done: false,
    });
    assert!(!g.admit(T0)); // older
    assert!(!g.admit(T0 + 10)); // 1st at the cursor: counted before
    assert!(!g.admit(T0 + 10)); // 2nd
    assert!(!g.is_open());
    assert!(g.admit(T0 + 10)); // 3rd: new
    assert!(g.is_open());
    assert!(g.admit(T0)); // once open, everything counts
    let mut g = Gate::new(&Cursor::default());
    assert!(g.is_open() && g.admit(0));
    // Fewer lines at the cursor than saved (the log was rotated): the next
    // newer line still opens the gate.
    let mut g = Gate::new(&Cursor {
        ts: Some(T0),
        n: 5,
        done: false,
    });
    assert!(!g.admit(T0));
    assert!(g.admit(T0 + 1));
}

/// Model check: whatever line or byte the stream is cut at, and however the
/// bytes arrive, reconnecting with the saved cursor (sinceTime truncated to
/// the second, so earlier lines of that second come again) yields every line
/// exactly once, in order.
#[test]
fn resume_after_a_cut_anywhere_counts_every_line_exactly_once() {
    let log = log();
    let all = render(&log);
    let want: Vec<String> = log.iter().map(|(_, s)| s.clone()).collect();
    let chunkings: [&[usize]; 4] = [&[1], &[7, 3], &[64], &[all.len()]];
    for cut in 0..=all.len() {
        for sizes in chunkings {
            let mut sink = Collect::default();
            let mut cursor = Cursor::default();
            // First connection: cut after `cut` bytes (mid-line or not).
            let mut r = LineReader::new(&cursor, 1024);
            feed(&mut r, &mut sink, &mut cursor, &all[..cut], sizes);
            // Second connection from the saved cursor, to the end.
            let again = serve(&log, &cursor);
            let mut r = LineReader::new(&cursor, 1024);
            feed(&mut r, &mut sink, &mut cursor, &again, sizes);
            assert_eq!(sink.lines, want, "cut at byte {cut}, chunks {sizes:?}");
            assert_eq!(cursor.ts, Some(T0 + 3 * S));
            assert_eq!(cursor.n, 2);
        }
    }
}

/// Several cuts in a row, then an agent restart (the cursor through JSON):
/// still exactly once.
#[test]
fn resume_across_repeated_cuts_and_a_restart() {
    let log = log();
    let want: Vec<String> = log.iter().map(|(_, s)| s.clone()).collect();
    for step in 1..=9u64 {
        let mut sink = Collect::default();
        let mut cursor = Cursor::default();
        let mut rounds = 0;
        loop {
            let bytes = serve(&log, &cursor);
            if bytes.is_empty() {
                break;
            }
            // Each connection delivers the lines already counted (from the
            // start of the cursor's second), `step` new ones and part of the
            // next, then breaks.
            let from = cursor.since_time().map_or(i128::MIN, |t| t.as_nanosecond());
            let old = log.iter().filter(|(t, _)| *t >= from && cursor.ts.is_some_and(|c| *t < c)).count() as u64 + cursor.n;
            let mut end = 0;
            for _ in 0..old + step {
                match bytes[end..].iter().position(|&b| b == b'\n') {
                    Some(p) => end += p + 1,
                    None => break,
                }
            }
            let end = (end + 10).min(bytes.len());
            let mut r = LineReader::new(&cursor, 1024);
            r.feed(&bytes[..end], &(), &mut sink, &mut cursor);
            // Restart: the cursor goes through the state file.
            cursor = serde_json::from_str(&serde_json::to_string(&cursor).expect("ser")).expect("de");
            rounds += 1;
            assert!(rounds < 100, "no progress");
            if r.counted == 0 && end == bytes.len() {
                break;
            }
        }
        assert_eq!(sink.lines, want, "{step} lines per connection");
    }
}

#[test]
fn long_lines_are_cut_and_flagged_and_memory_stays_bounded() {
    let mut sink = Collect::default();
    let mut cursor = Cursor::default();
    let mut r = LineReader::new(&cursor, 100);
    let long = "x".repeat(10_000);
    let bytes = render(&[(T0, "short".into()), (T0 + 1, long), (T0 + 2, "after".into())]);
    feed(&mut r, &mut sink, &mut cursor, &bytes, &[333]);
    assert_eq!(sink.lines.len(), 3);
    assert_eq!(sink.too_long, 1);
    assert!(sink.lines[1].len() <= 100 + 64, "{}", sink.lines[1].len());
    assert_eq!(sink.lines[2], "after");
    // The cut line still moved the cursor.
    assert_eq!(cursor.ts, Some(T0 + 2));
}

#[test]
fn lines_without_timestamp_pass_only_once_past_the_saved_point() {
    let mut sink = Collect::default();
    let mut cursor = Cursor::at(T0 + 10);
    let mut r = LineReader::new(&cursor, 100);
    r.feed(b"garbage\n", &(), &mut sink, &mut cursor);
    assert!(sink.lines.is_empty());
    r.feed(
        format!("{} new\ngarbage 2\n", format_ts(T0 + 11)).as_bytes(),
        &(),
        &mut sink,
        &mut cursor,
    );
    assert_eq!(sink.lines, ["new", "garbage 2"]);
}

// ---- log counters ----

fn pod(name: &str, labels: &[(&str, &str)], containers: &[&str]) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name, "namespace": "gen3", "uid": format!("uid-{name}"),
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        },
        "spec": {"containers": containers.iter().map(|c| serde_json::json!({"name": c})).collect::<Vec<_>>()},
        "status": {"phase": "Running"},
    }))
    .expect("pod")
}

fn counter(y: &str) -> LogCounterConfig {
    serde_yaml_ng::from_str(y).expect("counter yaml")
}

fn examples() -> Vec<LogCounterConfig> {
    vec![
        counter(
            r#"
metric: gen3_download_bytes_total
selector: app in (fence, presigned-url-fence)
container: fence
regex: 'Signed URL Generated\. action=(?P<action>\w+) size_in_kibibytes=(?P<kib>[0-9.eE+-]+)'
value: kib
scale: 1024
"#,
        ),
        counter(
            r#"
metric: gen3_log_errors_total
labels: {pattern: hatchery_panic}
selector: app=hatchery
regex: panic
"#,
        ),
        counter(
            r#"
metric: gen3_log_errors_total
labels: {pattern: usersync_revoke}
selector: app=gen3job
pod_name: ^usersync-
regex: 'ERROR - could not revoke policies from user `N/A`'
"#,
        ),
    ]
}

fn sample(f: &crate::model::Frame, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    f.samples
        .iter()
        .find(|s| {
            s.labels.iter().any(|(k, v)| k == "__name__" && v == name)
                && want.iter().all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
                && s.labels.len() == want.len() + 1
        })
        .map(|s| s.value)
}

#[test]
fn log_counters_route_pods_and_count_values_captures_and_fixed_labels() {
    let mut c = LogCounters::new(&examples(), "log_counters", &BTreeMap::new()).expect("valid");
    let fence = pod("fence-abc", &[("app", "fence")], &["fence", "nginx"]);
    let routes = c.routes(&fence);
    assert_eq!(routes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["fence"]);
    let hatchery = pod("hatchery-1", &[("app", "hatchery")], &["hatchery"]);
    let usersync = pod("usersync-29001", &[("app", "gen3job")], &["fence"]);
    let other_job = pod("gitops-sa-1", &[("app", "gen3job")], &["x"]);
    assert!(c.routes(&other_job).is_empty(), "pod_name filters");
    let (rf, rh, ru) = (
        routes[0].1.clone(),
        c.routes(&hatchery)[0].1.clone(),
        c.routes(&usersync)[0].1.clone(),
    );

    let l1 = b"[2025-03-01 12:00:00,001][fence.blueprints.data.indexd][   INFO] Signed URL Generated. action=download size_in_kibibytes=1.5 acl=None authz=['/programs/p'] bucket=s3://b user_sub=12 client_id=Unknown Client";
    let l2 = b"[2025-03-01 12:00:01,001][fence.blueprints.data.indexd][   INFO] Signed URL Generated. action=download size_in_kibibytes=2048.0 acl=None";
    let l3 = b"[2025-03-01 12:00:02,001][fence.blueprints.data.indexd][   INFO] Signed URL Generated. action=upload size_in_kibibytes=0.25 acl=None";
    c.line(&rf, l1, false);
    c.line(&rf, l2, false);
    c.line(&rf, l3, false);
    c.line(&rf, b"User logged in. user.id=1", false);
    c.line(&rf, l1, true); // cut: not counted
    c.line(&rh, b"panic: runtime error: invalid memory address", false);
    c.line(&rh, b"all fine", false);
    c.line(&ru, b"2025 ERROR - could not revoke policies from user `N/A`", false);
    c.line(&ru, b"2025 ERROR - could not revoke policies from user `N/A`", false);

    let f = c.frame("log_counters", 1000);
    let ns = ("namespace", "gen3");
    assert_eq!(
        sample(&f, "gen3_download_bytes_total", &[ns, ("service", "fence"), ("action", "download")]),
        Some((1.5 + 2048.0) * 1024.0)
    );
    assert_eq!(
        sample(&f, "gen3_download_bytes_total", &[ns, ("service", "fence"), ("action", "upload")]),
        Some(256.0)
    );
    assert_eq!(
        sample(
            &f,
            "gen3_log_errors_total",
            &[ns, ("service", "hatchery"), ("pattern", "hatchery_panic")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &f,
            "gen3_log_errors_total",
            &[ns, ("service", "gen3job"), ("pattern", "usersync_revoke")]
        ),
        Some(2.0)
    );
    // Metadata once per family, typed counter.
    let metas: Vec<_> = f.metadata.iter().filter(|m| m.name == "gen3_log_errors_total").collect();
    assert_eq!(metas.len(), 1);
    assert_eq!(metas[0].kind, crate::model::MetricKind::Counter);
    assert_eq!(
        sample(&f, LINES_METRIC, &[("metric", "gen3_download_bytes_total"), ("result", "counted")]),
        Some(3.0)
    );
}

#[test]
fn counters_without_captures_start_at_zero_for_each_routed_service() {
    let mut c = LogCounters::new(&examples(), "log_counters", &BTreeMap::new()).expect("valid");
    let hatchery = pod("hatchery-1", &[("app", "hatchery")], &["hatchery"]);
    c.routes(&hatchery);
    let f = c.frame("log_counters", 1000);
    assert_eq!(
        sample(
            &f,
            "gen3_log_errors_total",
            &[("namespace", "gen3"), ("service", "hatchery"), ("pattern", "hatchery_panic")]
        ),
        Some(0.0)
    );
}

#[test]
fn counter_cardinality_is_capped_with_an_other_series() {
    let cfg = vec![counter(
        r#"
metric: gen3_user_errors_total
selector: app=fence
regex: 'error for user (?P<user>\w+)'
max_series: 3
"#,
    )];
    let mut c = LogCounters::new(&cfg, "f", &BTreeMap::new()).expect("valid");
    let r = c.routes(&pod("fence-1", &[("app", "fence")], &["fence"]))[0].1.clone();
    for i in 0..10 {
        c.line(&r, format!("error for user u{i}").as_bytes(), false);
    }
    c.line(&r, b"error for user u0", false); // existing series still counts
    let f = c.frame("x", 1);
    let series: Vec<_> = f.samples.iter().filter(|s| s.labels[0].1 == "gen3_user_errors_total").collect();
    assert_eq!(series.len(), 4, "3 series plus other");
    let base = [("namespace", "gen3"), ("service", "fence")];
    assert_eq!(sample(&f, "gen3_user_errors_total", &[base[0], base[1], ("user", "u0")]), Some(2.0));
    assert_eq!(
        sample(&f, "gen3_user_errors_total", &[base[0], base[1], ("user", OVERFLOW)]),
        Some(7.0)
    );
    assert_eq!(
        sample(&f, LINES_METRIC, &[("metric", "gen3_user_errors_total"), ("result", "overflow")]),
        Some(7.0)
    );
    // Long capture values are cut.
    let cfg = vec![counter("metric: m_total\nselector: app=fence\nregex: 'v=(?P<v>\\S+)'\n")];
    let mut c = LogCounters::new(&cfg, "f", &BTreeMap::new()).expect("valid");
    let r = c.routes(&pod("fence-1", &[("app", "fence")], &["fence"]))[0].1.clone();
    c.line(&r, format!("v={}", "é".repeat(300)).as_bytes(), false);
    let f = c.frame("x", 1);
    let v = &f.samples[0].labels.iter().find(|(k, _)| k == "v").expect("v").1;
    assert!(v.len() <= counters::MAX_LABEL_VALUE && v.chars().all(|c| c == 'é'), "{v}");
}

#[test]
fn counter_bad_values_are_counted_apart_and_add_nothing() {
    let cfg = vec![counter(
        "metric: b_total\nselector: app=fence\nregex: 'size=(?P<n>\\S+)'\nvalue: n\n",
    )];
    let mut c = LogCounters::new(&cfg, "f", &BTreeMap::new()).expect("valid");
    let r = c.routes(&pod("fence-1", &[("app", "fence")], &["fence"]))[0].1.clone();
    for l in ["size=10", "size=abc", "size=-1", "size=NaN", "size=inf", "size=2.5"] {
        c.line(&r, l.as_bytes(), false);
    }
    let f = c.frame("x", 1);
    assert_eq!(sample(&f, "b_total", &[("namespace", "gen3"), ("service", "fence")]), Some(12.5));
    assert_eq!(
        sample(&f, LINES_METRIC, &[("metric", "b_total"), ("result", "bad_value")]),
        Some(4.0)
    );
}

#[test]
fn counter_values_survive_a_restart_through_the_state() {
    let cfg = examples();
    let mut c = LogCounters::new(&cfg, "f", &BTreeMap::new()).expect("valid");
    let r = c.routes(&pod("hatchery-1", &[("app", "hatchery")], &["hatchery"]))[0].1.clone();
    c.line(&r, b"panic!", false);
    let saved: BTreeMap<String, SavedCounter> = serde_json::from_slice(&serde_json::to_vec(&c.save()).expect("ser")).expect("de");
    // Reordered config: values follow the counter's identity.
    let mut reordered = cfg.clone();
    reordered.reverse();
    let mut c2 = LogCounters::new(&reordered, "f", &saved).expect("valid");
    let r2 = c2.routes(&pod("hatchery-1", &[("app", "hatchery")], &["hatchery"]))[0].1.clone();
    c2.line(&r2, b"panic again", false);
    let f = c2.frame("x", 1);
    assert_eq!(
        sample(
            &f,
            "gen3_log_errors_total",
            &[("namespace", "gen3"), ("service", "hatchery"), ("pattern", "hatchery_panic")]
        ),
        Some(2.0)
    );
}

#[test]
fn counter_config_errors_name_the_field() {
    let base = "metric: m_total\nselector: app=x\nregex: 'a'\n";
    let cases: [(&str, &str); 10] = [
        ("metric: 'bad name'\nselector: app=x\nregex: a\n", "[0].metric"),
        ("metric: m\nselector: 'app in x'\nregex: a\n", "[0].selector"),
        ("metric: m\nselector: app=x\nregex: '(unclosed'\n", "[0].regex"),
        ("metric: m\nselector: app=x\nregex: '(?P<namespace>a)'\n", "[0].regex"),
        ("metric: m\nselector: app=x\nregex: 'a'\nvalue: n\n", "[0].value"),
        ("metric: m\nselector: app=x\nregex: '(?P<n>1)'\nvalue: n\nscale: 0\n", "[0].scale"),
        ("metric: m\nselector: app=x\nregex: a\nmax_series: 0\n", "[0].max_series"),
        ("metric: m\nselector: app=x\nregex: a\npod_name: '('\n", "[0].pod_name"),
        ("metric: m\nselector: app=x\nregex: a\nlabels: {service: x}\n", "[0].labels"),
        ("metric: m\nselector: app=x\nregex: a\ncontainer: ''\n", "[0].container"),
    ];
    for (y, field) in cases {
        let e = validate_counters(&[counter(y)], "sources.kubernetes.log_counters").expect_err(y);
        assert!(
            e.to_string().contains(&format!("sources.kubernetes.log_counters{field}")),
            "{y}: {e}"
        );
    }
    let e = validate_counters(&[counter(base), counter(base)], "lc").expect_err("duplicate");
    assert!(e.to_string().contains("lc[1].metric"), "{e}");
    assert!(serde_yaml_ng::from_str::<LogCounterConfig>("metric: m\nselector: a\nregex: a\nbogus: 1\n").is_err());
    validate_counters(&examples(), "lc").expect("the examples are valid");
}

#[test]
fn pod_log_selector_and_source_validation() {
    let ok = PodLogSelector {
        namespace: "gen3".into(),
        selector: "app=revproxy".into(),
        container: None,
    };
    ok.validate("f").expect("valid");
    for (bad, field) in [
        (
            PodLogSelector {
                namespace: "Gen3".into(),
                ..ok.clone()
            },
            "f.namespace",
        ),
        (
            PodLogSelector {
                selector: String::new(),
                ..ok.clone()
            },
            "f.selector",
        ),
        (
            PodLogSelector {
                selector: "app in revproxy".into(),
                ..ok.clone()
            },
            "f.selector",
        ),
        (
            PodLogSelector {
                container: Some(String::new()),
                ..ok.clone()
            },
            "f.container",
        ),
    ] {
        let e = bad.validate("f").expect_err("invalid");
        assert!(e.to_string().contains(field), "{e}");
    }
    let dir = tempfile::tempdir().expect("tmp");
    assert!(LogCountersSource::new(vec![], examples(), None, dir.path()).is_err());
    assert!(LogCountersSource::new(vec!["Bad_NS".into()], examples(), None, dir.path()).is_err());
    LogCountersSource::new(vec!["gen3".into()], examples(), None, dir.path()).expect("valid");
}

/// Without a reachable API server the source still sends its counters (from
/// the state file), counts the failure, and saves its state at shutdown.
#[tokio::test]
async fn log_counters_source_emits_its_saved_counters_without_an_api_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let kc = dir.path().join("kubeconfig");
    // A port nothing listens on.
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
    let mut counters = BTreeMap::new();
    counters.insert(
        "gen3_log_errors_total,pattern=hatchery_panic".to_string(),
        SavedCounter {
            label_names: vec!["namespace".into(), "service".into()],
            series: vec![(vec!["gen3".into(), "hatchery".into()], 41.0)],
            lines: BTreeMap::new(),
        },
    );
    let state = CountersState {
        version: 1,
        streams: BTreeMap::new(),
        counters,
    };
    std::fs::write(dir.path().join("log_counters.state"), serde_json::to_vec(&state).expect("ser")).expect("state");
    let src = LogCountersSource::new(vec!["gen3".into()], examples(), Some(kc), dir.path()).expect("valid");
    let frame = crate::sources::test_util::run_and_assert_source_compliance(Box::new(src), "log_counters").await;
    assert_eq!(
        sample(
            &frame,
            "gen3_log_errors_total",
            &[("namespace", "gen3"), ("service", "hatchery"), ("pattern", "hatchery_panic")]
        ),
        Some(41.0)
    );
    let saved: CountersState = load_json(&dir.path().join("log_counters.state")).expect("read").expect("present");
    assert_eq!(saved.counters.len(), 3, "every counter saved");
}

/// deploy/examples/agent.yml documents the log counters in comments (under
/// the kubernetes source's section): uncommented, they are valid.
#[test]
fn example_log_counters_are_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/agent.yml");
    let text = std::fs::read_to_string(&path).expect("example");
    let mut yaml = String::new();
    let mut on = false;
    for l in text.lines() {
        match l.trim() {
            "# log_counters example begin" => on = true,
            "# log_counters example end" => break,
            _ if on => {
                yaml.push_str(l.strip_prefix("  # ").unwrap_or_default());
                yaml.push('\n');
            }
            _ => {}
        }
    }
    #[derive(serde::Deserialize)]
    struct K {
        kubernetes: L,
    }
    #[derive(serde::Deserialize)]
    struct L {
        log_counters: Vec<LogCounterConfig>,
    }
    let k: K = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(k.kubernetes.log_counters.len(), 3, "{yaml}");
    validate_counters(&k.kubernetes.log_counters, "sources.kubernetes.log_counters").expect("valid");
    // And they count what they are meant to.
    let mut c = LogCounters::new(&k.kubernetes.log_counters, "x", &BTreeMap::new()).expect("valid");
    let r = c.routes(&pod("presigned-url-fence-1", &[("app", "presigned-url-fence")], &["fence"]))[0]
        .1
        .clone();
    c.line(&r, b"Signed URL Generated. action=download size_in_kibibytes=2.0 acl=None", false);
    let f = c.frame("x", 1);
    assert_eq!(
        sample(
            &f,
            "gen3_download_bytes_total",
            &[("namespace", "gen3"), ("service", "presigned-url-fence"), ("action", "download")]
        ),
        Some(2048.0)
    );
}

#[test]
fn which_containers_have_logs_and_which_are_final() {
    use super::follow::{container_finished, container_has_logs};
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "usersync-1", "namespace": "gen3", "uid": "u"},
        "spec": {"initContainers": [{"name": "wait"}], "containers": [{"name": "main"}, {"name": "side"}, {"name": "crash"}]},
        "status": {
            "phase": "Running",
            "initContainerStatuses": [{"name": "wait", "image": "", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0}}}],
            "containerStatuses": [
                {"name": "main", "image": "", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "side", "image": "", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}},
                {"name": "crash", "image": "", "imageID": "", "ready": false, "restartCount": 3,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}}
            ]
        }
    }))
    .expect("pod");
    assert!(container_has_logs(&p, "wait") && container_has_logs(&p, "main") && container_has_logs(&p, "crash"));
    assert!(!container_has_logs(&p, "side"), "not started yet: no log to ask for");
    assert!(!container_has_logs(&p, "nope"));
    assert!(container_finished(&p, "wait"), "a completed init container does not run again");
    assert!(!container_finished(&p, "main") && !container_finished(&p, "crash"));
    let mut done = p.clone();
    done.status.as_mut().expect("status").phase = Some("Succeeded".into());
    assert!(container_finished(&done, "main"));
}
