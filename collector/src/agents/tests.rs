use std::sync::Mutex;

use prometheus_client::registry::Registry;

use super::*;

const H: i64 = 3_600_000;
/// A fixed "now" (2025-01-01T00:00:00Z) for the sweeps.
const NOW: i64 = 1_735_689_600_000;

type LastSeen = Family<Labels, Gauge<f64, AtomicU64>>;

fn registry(forget_after: Duration) -> (AgentRegistry, LastSeen) {
    let fam = LastSeen::default();
    (AgentRegistry::new(forget_after, fam.clone()), fam)
}

/// The exposition of the last-seen family.
fn exported(fam: &LastSeen) -> String {
    let mut reg = Registry::default();
    reg.register("agent_last_seen_timestamp_seconds", "h", fam.clone());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
    text
}

fn names(r: &AgentRegistry, scope: Option<&str>) -> Vec<(String, String)> {
    r.list(scope).into_iter().map(|a| (a.commons, a.agent)).collect()
}

fn pair(c: &str, a: &str) -> (String, String) {
    (c.to_string(), a.to_string())
}

#[test]
fn contacts_are_listed_by_commons_and_scoped() {
    let (r, fam) = registry(DEFAULT_FORGET_AFTER);
    r.connected("beta", "beta-agent", "beta-agent-7c9d-abcde", "0.1.0");
    r.seen_at("alpha", "alpha-agent", NOW);
    r.connected("alpha", "alpha-agent", "host\u{7}\nname", "0.2.0");
    assert_eq!(names(&r, None), vec![pair("alpha", "alpha-agent"), pair("beta", "beta-agent")]);
    assert_eq!(names(&r, Some("beta")), vec![pair("beta", "beta-agent")]);
    assert!(names(&r, Some("gamma")).is_empty());
    let a = &r.list(Some("alpha"))[0];
    assert_eq!((a.hostname.as_str(), a.version.as_str(), a.streams), ("hostname", "0.2.0", 1));
    assert_eq!(a.first_seen_ms, NOW, "first contact kept");
    assert!(a.last_seen_ms > NOW, "connected now");
    r.disconnected("alpha", "alpha-agent");
    assert_eq!(r.list(Some("alpha"))[0].streams, 0);
    let text = exported(&fam);
    assert!(text.contains(r#"commons="alpha",agent="alpha-agent""#), "{text}");
    assert!(text.contains(r#"commons="beta",agent="beta-agent""#), "{text}");
}

#[test]
fn the_sweep_forgets_silent_agents_but_never_a_connected_one() {
    let (r, fam) = registry(Duration::from_secs(7 * 86_400));
    let forgotten = Arc::new(Mutex::new(Vec::new()));
    let f = forgotten.clone();
    r.on_forget(Box::new(move |c, a| f.lock().expect("lock").push(pair(c, a))));
    r.seen_at("alpha", "alpha-agent-old-pod", NOW - 8 * 24 * H);
    r.seen_at("alpha", "alpha-agent", NOW - H);
    // Connected a long time ago and still connected: kept.
    r.connected("beta", "beta-agent", "h", "v");
    let gone = r.sweep(NOW + 30 * 24 * H);
    // Everyone but the connected one is past 7d at NOW + 30d.
    assert_eq!(gone, vec![pair("alpha", "alpha-agent"), pair("alpha", "alpha-agent-old-pod")]);
    assert_eq!(names(&r, None), vec![pair("beta", "beta-agent")]);
    assert_eq!(*forgotten.lock().expect("lock"), gone, "the hooks saw each forgotten agent");
    let text = exported(&fam);
    assert!(!text.contains("alpha"), "no series left for them: {text}");
    assert!(text.contains("beta-agent"), "{text}");

    // At the boundary: silent for exactly forget_after is kept, 1ms more is not.
    let (r, _) = registry(Duration::from_secs(60));
    r.seen_at("c", "a", NOW);
    assert!(r.sweep(NOW + 60_000).is_empty());
    assert_eq!(r.sweep(NOW + 60_001), vec![pair("c", "a")]);
}

#[test]
fn zero_never_forgets() {
    let (r, _) = registry(Duration::ZERO);
    r.seen_at("c", "a", 0);
    assert!(r.sweep(NOW).is_empty());
    assert_eq!(names(&r, None), vec![pair("c", "a")]);
    assert_eq!(r.forget_at(&r.list(None)[0]), None);
    assert_eq!(r.sweep_interval(), Duration::from_secs(60));
}

#[test]
fn forget_at_and_the_sweep_interval_follow_the_setting() {
    let (r, _) = registry(Duration::from_secs(7 * 86_400));
    r.seen_at("c", "silent", NOW);
    r.connected("c", "live", "h", "v");
    let list = r.list(None);
    assert_eq!(r.forget_at(&list[0]), None, "connected: not while it is");
    assert_eq!(r.forget_at(&list[1]), Some(NOW + 7 * 24 * H));
    assert_eq!(r.sweep_interval(), Duration::from_secs(60));
    assert_eq!(registry(Duration::from_secs(8)).0.sweep_interval(), Duration::from_secs(2));
    assert_eq!(registry(Duration::from_secs(1)).0.sweep_interval(), Duration::from_secs(1));
}

#[test]
fn removal_answers_unknown_connected_or_removed() {
    let (r, fam) = registry(DEFAULT_FORGET_AFTER);
    let forgotten = Arc::new(Mutex::new(Vec::new()));
    let f = forgotten.clone();
    r.on_forget(Box::new(move |c, a| f.lock().expect("lock").push(pair(c, a))));
    r.seen_at("alpha", "old", NOW);
    r.connected("alpha", "live", "h", "v");
    assert_eq!(r.remove("alpha", "nope").expect("remove"), Removal::Unknown);
    assert_eq!(r.remove("beta", "old").expect("remove"), Removal::Unknown, "another commons' name");
    assert_eq!(r.remove("alpha", "live").expect("remove"), Removal::Connected(1));
    assert_eq!(r.remove("alpha", "old").expect("remove"), Removal::Removed);
    assert_eq!(r.remove("alpha", "old").expect("remove"), Removal::Unknown, "already gone");
    assert_eq!(names(&r, None), vec![pair("alpha", "live")]);
    assert_eq!(*forgotten.lock().expect("lock"), vec![pair("alpha", "old")]);
    let text = exported(&fam);
    assert!(!text.contains(r#"agent="old""#) && text.contains(r#"agent="live""#), "{text}");
    // Once disconnected it can go.
    r.disconnected("alpha", "live");
    assert_eq!(r.remove("alpha", "live").expect("remove"), Removal::Removed);
    assert!(r.list(None).is_empty());
}

/// Storage as `restore` sees it: (commons, agent, last seen in s).
fn storage(entries: &[(&str, &str, i64)]) -> impl FnOnce(i64) -> HashMap<(String, String), f64> {
    let entries: Vec<(String, String, i64)> = entries.iter().map(|(c, a, t)| (c.to_string(), a.to_string(), *t)).collect();
    move |mint| {
        entries
            .into_iter()
            .filter(|(_, _, t)| *t >= mint)
            .map(|(c, a, t)| ((c, a), t as f64 / 1000.0))
            .collect()
    }
}

#[test]
fn removed_and_forgotten_agents_stay_gone_after_a_restart() {
    // connected() stamps the wall clock: the test runs at the wall clock.
    let t0 = now_ms();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    let week = Duration::from_secs(7 * 86_400);
    {
        let r = AgentRegistry::new(week, LastSeen::default()).with_file(path.clone());
        assert_eq!(r.restore(t0, week, storage(&[])), 0);
        r.connected("alpha", "alpha-agent", "alpha-agent-6d9f-x2x4q", "0.1.0");
        r.disconnected("alpha", "alpha-agent");
        r.seen_at("alpha", "alpha-agent-old-pod", t0 - H);
        r.seen_at("beta", "beta-agent", t0 - 2 * H);
        assert_eq!(r.remove("alpha", "alpha-agent-old-pod").expect("remove"), Removal::Removed);
        r.save().expect("save");
    }
    // Storage still holds the removed agent's last-seen series (written by
    // the self-scrape before its removal), and a newer contact of beta's
    // than the file (a crash between saves).
    let fam = LastSeen::default();
    let r = AgentRegistry::new(week, fam.clone()).with_file(path.clone());
    let n = r.restore(
        t0,
        week,
        storage(&[("alpha", "alpha-agent-old-pod", t0 - H), ("beta", "beta-agent", t0 - 60_000)]),
    );
    assert_eq!(n, 2);
    assert_eq!(names(&r, None), vec![pair("alpha", "alpha-agent"), pair("beta", "beta-agent")]);
    let alpha = &r.list(Some("alpha"))[0];
    assert_eq!(alpha.hostname, "alpha-agent-6d9f-x2x4q", "saved with its host");
    assert_eq!(alpha.streams, 0);
    assert_eq!(r.list(Some("beta"))[0].last_seen_ms, t0 - 60_000, "raised to what storage holds");
    let text = exported(&fam);
    assert!(!text.contains("old-pod"), "{text}");
    assert!(text.contains("beta-agent") && text.contains("alpha-agent"), "{text}");

    // A week later with no contact, the restart itself forgets them, and
    // that is saved.
    let r = AgentRegistry::new(week, LastSeen::default()).with_file(path.clone());
    assert_eq!(r.restore(t0 + 8 * 24 * H, week, storage(&[])), 0);
    let r = AgentRegistry::new(week, LastSeen::default()).with_file(path);
    assert_eq!(r.restore(t0, week, storage(&[])), 0, "the forgetting was saved");
}

#[test]
fn without_a_file_the_agents_come_from_storage_within_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let week = Duration::from_secs(7 * 86_400);
    let r = AgentRegistry::new(week, LastSeen::default()).with_file(dir.path().join(STATE_FILE));
    let n = r.restore(
        NOW,
        week,
        storage(&[("alpha", "recent", NOW - H), ("alpha", "ancient", NOW - 30 * 24 * H)]),
    );
    assert_eq!(n, 1);
    assert_eq!(names(&r, None), vec![pair("alpha", "recent")]);
    assert_eq!(r.list(None)[0].last_seen_ms, NOW - H);
}

#[test]
fn an_unreadable_file_falls_back_to_storage_and_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    std::fs::write(&path, b"{not json").expect("write");
    let week = Duration::from_secs(7 * 86_400);
    let r = AgentRegistry::new(week, LastSeen::default()).with_file(path.clone());
    assert!(matches!(r.load(), Err(AgentsError::Invalid { .. })));
    assert_eq!(r.restore(NOW, week, storage(&[("alpha", "a", NOW - H)])), 1);
    r.save().expect("save");
    let r = AgentRegistry::new(week, LastSeen::default()).with_file(path.clone());
    assert!(r.load().expect("readable now"));
    assert_eq!(names(&r, None), vec![pair("alpha", "a")]);
    std::fs::write(&path, br#"{"version":9,"agents":[]}"#).expect("write");
    let e = AgentRegistry::new(week, LastSeen::default())
        .with_file(path)
        .load()
        .expect_err("version");
    assert!(e.to_string().contains("unknown version 9"), "{e}");
}

#[test]
fn config_status_is_exported_once_per_agent_and_dropped_when_forgotten() {
    let status: Family<Labels, Gauge> = Family::default();
    let r = AgentRegistry::new(Duration::from_secs(1), Family::default()).with_config_status(status.clone());
    let mut reg = Registry::default();
    reg.register("agent_config_status", "status", status);
    let text = |reg: &Registry| {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, reg).expect("encode");
        s
    };
    r.connected("alpha", "a", "h", "v");
    r.update_config("alpha", "a", |c| c.status = "pending".into());
    assert!(
        text(&reg).contains(r#"agent_config_status{commons="alpha",agent="a",status="pending"} 1"#),
        "{}",
        text(&reg)
    );
    r.update_config("alpha", "a", |c| {
        c.status = "rejected".into();
        c.error = "sources.x: unknown field".into();
    });
    let t = text(&reg);
    assert!(t.contains(r#"status="rejected"} 1"#) && !t.contains("pending"), "{t}");
    assert_eq!(r.list(None)[0].config.error, "sources.x: unknown field");
    r.disconnected("alpha", "a");
    r.sweep(now_ms() + 10_000);
    assert!(!text(&reg).contains("alpha"), "forgotten: {}", text(&reg));
}
