//! Issue 15: hostile PromQL. The real collector on 127.0.0.1; each case is
//! a request that used to abort the process (stack overflow, a huge
//! allocation) or hold it for a minute, now refused by a named limit or
//! answered within bounds; after each, `/-/healthy` answers within 1 s and
//! the collector's resident memory stays under [`RSS_BOUND`].
//!
//! Depth: `max_query_depth` (512 by default) bounds a token-level estimate
//! of the syntax tree's depth before the parser runs; the deepest accepted
//! query of each shape is answered, one level more is refused.

use std::time::{Duration, Instant};

use csoc_tests::*;
use serde_json::Value;

/// What the collector may hold in memory at any point of these tests.
const RSS_BOUND: u64 = 500 << 20;

struct Hostile {
    c: Collector,
    _dir: tempfile::TempDir,
}

impl Hostile {
    fn start(extra: &[&str]) -> anyhow::Result<Hostile> {
        let dir = tempfile::tempdir()?;
        let c = Collector::start(dir.path(), extra)?;
        Ok(Hostile { c, _dir: dir })
    }

    /// POSTs a form (long queries do not fit in a URL): (status, body as
    /// JSON), and how long the answer took.
    fn post(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<(u16, Value, Duration)> {
        let t = Instant::now();
        let r = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.c.http))
            .form(form)
            .timeout(Duration::from_secs(30))
            .send()?;
        let code = r.status().as_u16();
        let body = r.text()?;
        // A syntax tree deeper than serde_json's recursion limit (128)
        // comes back as its text.
        let v: Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) if e.to_string().contains("recursion limit") => Value::String(body),
            Err(e) => anyhow::bail!("{path}: not JSON ({e}): {body:.300}"),
        };
        Ok((code, v, t.elapsed()))
    }

    /// The collector's resident memory, from /proc/PID/status.
    fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.c.proc.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc status"))?;
        Ok(kb << 10)
    }

    /// The collector is alive and well: `/-/healthy` within 1 s, RSS
    /// under the bound.
    fn still_fine(&mut self, after: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.c.proc.child.try_wait()?.is_none(),
            "the collector exited after {after}; log:\n{}",
            self.c.proc.log_text()
        );
        let t = Instant::now();
        let (code, _) = get_text(&format!("{}/-/healthy", self.c.http))?;
        anyhow::ensure!(
            code == 200 && t.elapsed() < Duration::from_secs(1),
            "after {after}: /-/healthy HTTP {code} in {:?}",
            t.elapsed()
        );
        let rss = self.rss()?;
        anyhow::ensure!(rss < RSS_BOUND, "after {after}: RSS {} MiB", rss >> 20);
        Ok(())
    }

    /// A request refused with `code` and the `limit` named in the error;
    /// the error quotes at most a short part of the query.
    fn refused(&mut self, path: &str, form: &[(&str, &str)], code: u16, limit: &str) -> anyhow::Result<()> {
        let (got, v, took) = self.post(path, form)?;
        let what = format!("{path} {:.80}", format!("{form:?}"));
        anyhow::ensure!(got == code, "{what}: HTTP {got} (want {code}): {:.300}", v.to_string());
        let err = v["error"].as_str().unwrap_or_default();
        anyhow::ensure!(err.contains(limit), "{what}: error does not name {limit}: {err:.300}");
        anyhow::ensure!(err.len() < 400, "{what}: error of {} bytes", err.len());
        anyhow::ensure!(took < Duration::from_secs(10), "{what}: took {took:?}");
        self.still_fine(&what)
    }

    /// A request answered 200 within `within`; the answer.
    fn answered(&mut self, path: &str, form: &[(&str, &str)], within: Duration) -> anyhow::Result<Value> {
        let (got, v, took) = self.post(path, form)?;
        let what = format!("{path} {:.80}", format!("{form:?}"));
        anyhow::ensure!(got == 200, "{what}: HTTP {got}: {:.300}", v.to_string());
        anyhow::ensure!(took < within, "{what}: took {took:?}");
        self.still_fine(&what)?;
        Ok(v)
    }

    /// `csoc_collector_limit_rejections_total{limit="…",commons=""}`.
    fn rejections(&self, limit: &str) -> anyhow::Result<f64> {
        let (_, text) = get_text(&format!("{}/metrics", self.c.http))?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("csoc_collector_limit_rejections_total{") && l.contains(&format!("limit=\"{limit}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

fn chain(op: &str, term: &str, n: usize) -> String {
    vec![term; n].join(op)
}

fn nested(open: &str, inner: &str, close: &str, n: usize) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

const LR: &str = r#", "a", "$1", "job", "(.*)")"#;
const QUERY: &str = "/api/v1/query";
const DEPTH: &str = "max_query_depth";

#[test]
fn binary_operator_chains_are_bounded_by_depth() -> anyhow::Result<()> {
    let mut h = Hostile::start(&[])?;
    // The issue's crashes: 2,500 terms of `1+…`, 3,000 of `or`.
    h.refused(QUERY, &[("query", &chain("+", "1", 2500))], 400, DEPTH)?;
    h.refused(QUERY, &[("query", &chain(" or ", "node_load1", 3000))], 400, DEPTH)?;
    // At the limit: answered; one more term: refused.
    let v = h.answered(QUERY, &[("query", &chain("+", "1", 512))], Duration::from_secs(10))?;
    assert_eq!(v["data"]["result"][1], "512", "{v}");
    h.refused(QUERY, &[("query", &chain("+", "1", 513))], 400, DEPTH)?;
    h.answered(QUERY, &[("query", &chain(" or ", "node_load1", 512))], Duration::from_secs(10))?;
    h.answered(QUERY, &[("query", &chain("^", "1", 512))], Duration::from_secs(10))?;
    let range = [("start", "0"), ("end", "600"), ("step", "60")];
    let q = chain(" or ", "vector(1)", 511);
    let mut form = vec![("query", q.as_str())];
    form.extend(range);
    h.answered("/api/v1/query_range", &form, Duration::from_secs(10))?;
    assert!(h.rejections(DEPTH)? >= 3.0);
    Ok(())
}

#[test]
fn nesting_is_bounded_by_depth() -> anyhow::Result<()> {
    let mut h = Hostile::start(&[])?;
    // The issue's 3,000 levels are 120 KB: over the length limit first;
    // 1,500 levels (60 KB) are over the depth limit.
    let lr = nested("label_replace(", "node_load1", LR, 3000);
    h.refused(QUERY, &[("query", &lr)], 400, "max_query_length")?;
    h.refused(QUERY, &[("query", &nested("label_replace(", "node_load1", LR, 1500))], 400, DEPTH)?;
    h.refused(QUERY, &[("query", &nested("(", "1", ")", 10_000))], 400, DEPTH)?;
    h.refused(QUERY, &[("query", &format!("{}1", "-".repeat(10_000)))], 400, DEPTH)?;
    h.refused(QUERY, &[("query", &nested("sum(", "node_load1", ")", 1000))], 400, DEPTH)?;
    let within = Duration::from_secs(10);
    h.answered(QUERY, &[("query", &nested("label_replace(", "node_load1", LR, 511))], within)?;
    h.refused(QUERY, &[("query", &nested("label_replace(", "node_load1", LR, 512))], 400, DEPTH)?;
    h.answered(QUERY, &[("query", &nested("(", "1", ")", 511))], within)?;
    h.answered(QUERY, &[("query", &format!("{}1", "-".repeat(511)))], within)?;
    h.answered(QUERY, &[("query", &nested("sum(", "vector(1)", ")", 510))], within)?;
    // A call of a subquery is two levels: 255 of them (depth 512) pass.
    h.answered(QUERY, &[("query", &nested("max_over_time(", "vector(1)", "[1m:1m])", 255))], within)?;
    h.refused(
        QUERY,
        &[("query", &nested("max_over_time(", "vector(1)", "[1m:1m])", 256))],
        400,
        DEPTH,
    )?;
    Ok(())
}

#[test]
fn parse_and_format_query_are_bounded() -> anyhow::Result<()> {
    let mut h = Hostile::start(&[])?;
    h.refused("/api/v1/parse_query", &[("query", &chain("+", "1", 3000))], 400, DEPTH)?;
    h.refused("/api/v1/format_query", &[("query", &chain("+", "1", 6000))], 400, DEPTH)?;
    // At the limit: the tree and the text, in bounded time.
    let within = Duration::from_secs(10);
    let v = h.answered("/api/v1/parse_query", &[("query", &chain("+", "1", 512))], within)?;
    let text = v.as_str().unwrap_or_default();
    assert!(
        text.starts_with(r#"{"status":"success","data":{"type":"binaryExpr""#),
        "{text:.200}"
    );
    assert_eq!(text.matches("binaryExpr").count(), 511);
    let deep = chain(" + ", "node_load1", 512);
    let v = h.answered("/api/v1/format_query", &[("query", &deep)], within)?;
    assert!(v["data"].as_str().unwrap_or_default().contains("node_load1"));
    let lr = nested("label_replace(", "node_load1", LR, 511);
    h.answered("/api/v1/format_query", &[("query", &lr)], within)?;
    h.answered("/api/v1/parse_query", &[("query", &lr)], within)?;
    // The longest accepted query (64 KiB) of the deepest accepted shape, two
    // at once: /-/healthy is served meanwhile.
    let group = format!("({})", chain(" + ", "node_load1", 240));
    let wide = chain(" + ", &group, 20);
    assert!(wide.len() <= 64 << 10 && wide.len() > 60_000, "{}", wide.len());
    let (a, b) = std::thread::scope(|s| {
        let one = s.spawn(|| h.post("/api/v1/format_query", &[("query", &wide)]));
        let two = s.spawn(|| h.post("/api/v1/format_query", &[("query", &wide)]));
        let t = Instant::now();
        let healthy = get_text(&format!("{}/-/healthy", h.c.http));
        assert!(
            matches!(healthy, Ok((200, _))) && t.elapsed() < Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
        (one.join().expect("join"), two.join().expect("join"))
    });
    for r in [a?, b?] {
        assert_eq!(r.0, 200, "{}", r.1);
        assert!(r.2 < within, "{:?}", r.2);
    }
    h.still_fine("two format_query at once")?;
    Ok(())
}

#[test]
fn length_is_bounded_and_errors_are_short() -> anyhow::Result<()> {
    let mut h = Hostile::start(&[])?;
    let mega = format!("up{{a=~\"{}\"}}", "a".repeat(1 << 20));
    for path in [QUERY, "/api/v1/parse_query", "/api/v1/format_query"] {
        h.refused(path, &[("query", &mega)], 400, "max_query_length")?;
    }
    let mut form = vec![("query", mega.as_str())];
    form.extend([("start", "0"), ("end", "60"), ("step", "15")]);
    h.refused("/api/v1/query_range", &form, 400, "max_query_length")?;
    // An invalid regex just under the length limit: its error is short.
    let bad = format!("up{{a=~\"({}\"}}", "a".repeat(60_000));
    let (code, v, _) = h.post(QUERY, &[("query", &bad)])?;
    assert_eq!(code, 400, "{v:.300}");
    let err = v["error"].as_str().unwrap_or_default();
    assert!(err.len() < 400 && err.ends_with('…'), "{} bytes: {err:.300}", err.len());
    h.still_fine("a long bad regex")?;
    assert!(h.rejections("max_query_length")? >= 4.0);
    Ok(())
}

#[test]
fn subquery_steps_count_against_max_samples() -> anyhow::Result<()> {
    let mut h = Hostile::start(&["--query.max-samples", "100000"])?;
    let limit = "query_max_samples";
    // Used to abort ("memory allocation of 252288000000 bytes failed").
    h.refused(QUERY, &[("query", "max_over_time(vector(1)[1y:1ms])")], 422, limit)?;
    h.refused(QUERY, &[("query", "max_over_time(node_load1[30d:1ms])")], 422, limit)?;
    h.refused(QUERY, &[("query", "max_over_time(vector(1)[1d:1ms])")], 422, limit)?;
    h.refused(QUERY, &[("query", "count_over_time(vector(1)[2d:1s])")], 422, limit)?;
    let (_, v, _) = h.post(QUERY, &[("query", "vector(1)[1y:1ms]")])?;
    assert!(v["error"].as_str().unwrap_or_default().contains(limit), "{v}");
    // Under the limit: answered.
    let v = h.answered(QUERY, &[("query", "count_over_time(vector(1)[1h:1s])")], Duration::from_secs(10))?;
    assert_eq!(v["data"]["result"][0]["value"][1], "3600", "{v}");
    // Range query: 11,000 steps of a 1d:1s subquery is over 100,000.
    let form = [
        ("query", "max_over_time(vector(1)[1d:1s])"),
        ("start", "0"),
        ("end", "11000"),
        ("step", "1"),
    ];
    h.refused("/api/v1/query_range", &form, 422, limit)?;
    assert!(h.rejections(limit)? >= 5.0);
    Ok(())
}

#[test]
fn timeout_is_checked_inside_evaluation() -> anyhow::Result<()> {
    let mut h = Hostile::start(&[])?;
    // 500 nodes × 11,000 steps, with 1 ms to do it.
    let q = chain(" + ", "vector(1)", 500);
    let form = [
        ("query", q.as_str()),
        ("start", "0"),
        ("end", "11000"),
        ("step", "1"),
        ("timeout", "1ms"),
    ];
    let (code, v, took) = h.post("/api/v1/query_range", &form)?;
    assert_eq!((code, v["errorType"].as_str()), (503, Some("timeout")), "{v:.300}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    h.still_fine("timeout=1ms")?;
    let form = [("query", "count_over_time(vector(1)[3d:1s])"), ("timeout", "1ms")];
    let (code, v, _) = h.post(QUERY, &form)?;
    assert_eq!((code, v["errorType"].as_str()), (503, Some("timeout")), "{v:.300}");
    assert!(h.rejections("query_timeout")? >= 2.0);
    h.still_fine("timeout=1ms")
}
