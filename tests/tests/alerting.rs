//! Rules and notifications end to end: a real collector evaluates a rule
//! file over data written through remote write, stores recording results
//! and `ALERTS`, serves `/api/v1/rules` and `/api/v1/alerts`, notifies a
//! webhook receiver (Alertmanager's payload) through grouping, retries and
//! resolution, keeps alert state across a restart without paging again,
//! and reloads rules on `POST /-/reload` and SIGHUP (keeping the old ones
//! when the new file is broken). Interop: a real Alertmanager (Debian's
//! `prometheus-alertmanager`) receives our alerts, lists them, notifies its
//! own webhook and sees them resolve; promtool and our `--test-rules` both
//! pass the Gen3 rule pack's unit tests, and both reject the same broken
//! rule files.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use csoc_common::time::now_ms;
use csoc_proto::prometheus::WriteRequest;
use csoc_tests::*;
use serde_json::Value;

const TOKEN: &str = "alerting-token-0123456789abcdef";

/// Receivers of the end-to-end test (HOOK and BASE are the sink's URLs):
/// a webhook, PagerDuty and Slack (both pointed at the sink: neither
/// service can run here), one whose endpoint refuses connections, and one
/// whose matchers match nothing.
const RECEIVERS: &str = r#"receivers:
  - name: hook
    matchers: ['severity="critical"']
    group_by: [alertname, commons]
    group_wait: 1s
    group_interval: 2s
    repeat_interval: 1h
    webhook:
      url: HOOK
  - name: pd
    group_wait: 1s
    group_interval: 2s
    pagerduty:
      routing_key: pd-routing-key-0123
      url: BASE/pd
  - name: chat
    group_wait: 1s
    group_interval: 2s
    slack:
      api_url: BASE/slack
      channel: '#gen3'
  - name: dead
    group_wait: 1s
    group_interval: 2s
    webhook:
      url: http://127.0.0.1:1/refused
  - name: quiet
    matchers: ['severity="info"']
    group_wait: 0s
    webhook:
      url: BASE/quiet
"#;

const RULES: &str = r#"groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: ServiceDown
        expr: test_up == 0
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.service }} in {{ $labels.commons }} is down"
      - record: commons:test_up:sum
        expr: sum by (commons) (test_up)
"#;

fn write_up(c: &Collector, value: f64) -> anyhow::Result<()> {
    let req = WriteRequest {
        timeseries: vec![series(&[("__name__", "test_up"), ("service", "fence")], vec![(now_ms(), value)])],
        metadata: vec![],
    };
    remote_write(&c.http, TOKEN, &req)
}

fn post(url: &str) -> anyhow::Result<(u16, String)> {
    let r = reqwest::blocking::Client::new().post(url).timeout(Duration::from_secs(30)).send()?;
    let code = r.status().as_u16();
    Ok((code, r.text()?))
}

fn alerts(c: &Collector) -> anyhow::Result<Vec<Value>> {
    let (code, v) = get_json(&format!("{}/api/v1/alerts", c.http))?;
    ensure!(code == 200, "alerts: {v}");
    Ok(v["data"]["alerts"].as_array().cloned().unwrap_or_default())
}

fn rule_names(c: &Collector) -> anyhow::Result<Vec<String>> {
    let (_, v) = get_json(&format!("{}/api/v1/rules", c.http))?;
    Ok(v["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect())
}

fn status_of(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("")
}

fn collector_args<'a>(cfg: &'a str, rules: &'a str, token_arg: &'a str) -> Vec<&'a str> {
    vec![
        "--config",
        cfg,
        "--rules",
        rules,
        "--agent-token",
        token_arg,
        "--rules.alert.resend-delay",
        "1s",
    ]
}

#[test]
fn rules_alert_through_a_webhook_across_restart_and_reload() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sink = WebhookSink::start()?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES)?;
    let cfg = dir.path().join("collector.yml");
    std::fs::write(
        &cfg,
        RECEIVERS
            .replace("HOOK", &sink.url)
            .replace("BASE", sink.url.trim_end_matches("/hook")),
    )?;
    let (cfg_s, rules_s, tok) = (cfg.display().to_string(), rules.display().to_string(), format!("e2e={TOKEN}"));
    let args = collector_args(&cfg_s, &rules_s, &tok);
    let (http_port, grpc_port) = (free_port(), free_port());
    let c = Collector::start_on(dir.path(), http_port, grpc_port, &args)?;

    // Down: the alert fires and the webhook gets Alertmanager's payload.
    write_up(&c, 0.0)?;
    // (A receiver whose endpoint refuses connections retries on its own
    // and delays nobody.)
    let firing = sink.wait_for("a firing notification", Duration::from_secs(30), |v| {
        status_of(v) == "firing" && v["receiver"] == "hook"
    })?;
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["receiver"], "hook");
    assert_eq!(firing["groupLabels"]["alertname"], "ServiceDown");
    assert_eq!(firing["groupLabels"]["commons"], "e2e");
    let a = &firing["alerts"][0];
    assert_eq!(a["labels"]["service"], "fence");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["annotations"]["summary"], "fence in e2e is down");
    assert!(
        a["generatorURL"].as_str().is_some_and(|u| u.contains("/graph?g0.expr=test_up")),
        "{a}"
    );

    // PagerDuty gets a trigger with a dedup key, Slack a message; the
    // receiver whose matchers don't match gets nothing.
    let trigger = sink.wait_for("a PagerDuty trigger", Duration::from_secs(30), |v| v["event_action"] == "trigger")?;
    assert_eq!(trigger["routing_key"], "pd-routing-key-0123");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "e2e");
    let dedup = trigger["dedup_key"].clone();
    assert!(dedup.as_str().is_some_and(|k| k.len() == 64), "{trigger}");
    let chat = sink.wait_for("a Slack message", Duration::from_secs(30), |v| v["channel"] == "#gen3")?;
    assert_eq!(chat["attachments"][0]["title"], "[FIRING:1] ServiceDown e2e");
    assert!(
        chat["attachments"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("fence in e2e is down")),
        "{chat}"
    );

    // The API and the stored series agree.
    let listed = alerts(&c)?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "firing");
    assert_eq!(listed[0]["value"], "0e+00");
    let active_at = listed[0]["activeAt"].clone();
    let (_, r) = get_json(&format!("{}/api/v1/rules", c.http))?;
    let g = &r["data"]["groups"][0];
    assert_eq!(g["name"], "e2e");
    assert_eq!(g["interval"], 1.0);
    assert_eq!(g["rules"][0]["state"], "firing");
    assert_eq!(g["rules"][0]["health"], "ok");
    assert_eq!(g["rules"][0]["type"], "alerting");
    assert_eq!(g["rules"][1]["type"], "recording");
    wait_for("ALERTS and the recording rule in storage", Duration::from_secs(10), || {
        let a = c
            .query(r#"ALERTS{alertname="ServiceDown",alertstate="firing",commons="e2e"}"#)
            .ok()?;
        let r = c.query(r#"commons:test_up:sum{commons="e2e"}"#).ok()?;
        (a.len() == 1 && r.len() == 1 && r[0]["value"][1] == "0").then_some(())
    })?;
    let (_, r) = get_json(&format!("{}/api/v1/rules?type=record", c.http))?;
    assert_eq!(r["data"]["groups"][0]["rules"].as_array().map(Vec::len), Some(1), "{r}");

    // Restart: the alert keeps its start and nobody is paged again, even
    // though the rules re-send it every second.
    let firing_before = sink.received().iter().filter(|v| status_of(v) == "firing").count();
    let mut c = c;
    c.proc.terminate()?;
    let c = Collector::start_on(dir.path(), http_port, grpc_port, &args)?;
    write_up(&c, 0.0)?;
    let after = wait_for("the alert after the restart", Duration::from_secs(15), || {
        alerts(&c).ok().filter(|a| a.len() == 1 && a[0]["state"] == "firing")
    })?;
    assert_eq!(after[0]["activeAt"], active_at, "the restart kept the alert's start");
    std::thread::sleep(Duration::from_secs(5));
    let firing_after = sink.received().iter().filter(|v| status_of(v) == "firing").count();
    assert_eq!(firing_after, firing_before, "no new page after the restart: {:?}", sink.received());

    // Up again, with the receiver failing twice: retried, then resolved.
    sink.fail_next(2);
    write_up(&c, 1.0)?;
    let resolved = sink.wait_for("a resolved notification", Duration::from_secs(30), |v| status_of(v) == "resolved")?;
    let resolve = sink.wait_for("a PagerDuty resolve", Duration::from_secs(30), |v| v["event_action"] == "resolve")?;
    assert_eq!(resolve["dedup_key"], dedup, "one incident from trigger to resolve");
    assert_eq!(resolved["alerts"][0]["status"], "resolved");
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    let (_, m) = get_text(&format!("{}/metrics", c.http))?;
    // group_interval is 2s here, so the first flush gives up after one
    // retry (counted as failed) and the next flush delivers.
    // (The two failures fall on the webhook and PagerDuty receivers, which
    // send resolutions; Slack does not by default.)
    let sum = |name: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with(name) && (l.contains(r#"receiver="hook""#) || l.contains(r#"receiver="pd""#)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let retries = sum("csoc_collector_notification_retries_total");
    let failed = sum("csoc_collector_notifications_failed_total");
    assert!(retries >= 1.0 && retries + failed >= 2.0, "retries {retries}, failed {failed}: {m}");
    assert!(metric_value(&m, "csoc_collector_notifications_sent_total").unwrap_or(0.0) >= 1.0);
    wait_for("no active alert", Duration::from_secs(10), || {
        alerts(&c).ok().filter(|a| a.is_empty())
    })?;
    assert!(
        m.lines()
            .any(|l| l.starts_with(r#"csoc_collector_notifications_failed_total{receiver="dead""#)),
        "the dead receiver's failures are counted: {m}"
    );
    let paths: Vec<String> = sink.received_at().into_iter().map(|(_, p, _)| p).collect();
    assert!(!paths.iter().any(|p| p == "/quiet"), "{paths:?}");
    assert_eq!(
        paths.iter().filter(|p| *p == "/slack").count(),
        1,
        "Slack gets no resolution by default: {paths:?}"
    );

    // A broken file: the reload fails, names the place, keeps the rules.
    std::fs::write(&rules, RULES.replace("expr: test_up == 0", "expr: test_up =="))?;
    let (code, body) = post(&format!("{}/-/reload", c.http))?;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("rules.yml:5:9:"), "file and line named: {body}");
    assert!(body.contains("could not parse expression"), "{body}");
    assert_eq!(rule_names(&c)?, ["ServiceDown", "commons:test_up:sum"]);
    let (_, m) = get_text(&format!("{}/metrics", c.http))?;
    assert_eq!(metric_value(&m, "csoc_collector_rules_last_reload_successful"), Some(0.0));

    // A good file and SIGHUP: the new rule runs.
    std::fs::write(
        &rules,
        format!("{RULES}      - record: e2e:test_up:count\n        expr: count(test_up)\n"),
    )?;
    let pid = c.proc.child.id().to_string();
    let st = Command::new("kill").args(["-HUP", &pid]).status()?;
    ensure!(st.success(), "kill -HUP failed");
    wait_for("the reloaded rule", Duration::from_secs(15), || {
        rule_names(&c).ok().filter(|n| n.iter().any(|x| x == "e2e:test_up:count"))
    })?;
    wait_for("the new rule's result", Duration::from_secs(15), || {
        c.query("e2e:test_up:count").ok().filter(|r| r.len() == 1)
    })?;
    let (code, body) = post(&format!("{}/-/reload", c.http))?;
    assert_eq!(code, 200, "{body}");
    Ok(())
}

#[test]
fn check_config_names_broken_rule_files() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.yml");
    std::fs::write(&good, RULES)?;
    let out = Command::new(bin("csoc-collector"))
        .args(["--check-config", "--rules"])
        .arg(&good)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("good.yml: 2 rules found"), "{stdout}");
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, RULES.replace("record: commons:test_up:sum", "record: 'not a name'"))?;
    let out = Command::new(bin("csoc-collector"))
        .args(["--check-config", "--rules"])
        .arg(&bad)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.yml:11:9: group \"e2e\", rule 2, \"not a name\": invalid recording rule name: not a name"),
        "{stderr}"
    );
    Ok(())
}

/// The files promtool and we must both reject, and one both accept.
const REJECTED: &[(&str, &str)] = &[
    (
        "bad-expr.yml",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(\n",
    ),
    ("no-expr.yml", "groups:\n  - name: g\n    rules:\n      - alert: A\n"),
    (
        "both.yml",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        record: b\n        expr: up\n",
    ),
    ("dup-group.yml", "groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n"),
    (
        "record-for.yml",
        "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n        for: 1m\n",
    ),
    (
        "bad-label.yml",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        labels: {'a-b': x}\n",
    ),
    ("unknown-field.yml", "groups:\n  - name: g\n    rulez: []\n"),
    (
        "bad-template.yml",
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        annotations: {s: '{{ $labels.x '}\n",
    ),
];

#[test]
fn promtool_and_we_agree_on_rule_files_and_the_gen3_pack() -> anyhow::Result<()> {
    let Some(promtool) = program("promtool") else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    for (name, text) in REJECTED {
        let p = dir.path().join(name);
        std::fs::write(&p, text)?;
        let theirs = Command::new(&promtool).args(["check", "rules"]).arg(&p).output()?;
        assert!(!theirs.status.success(), "promtool accepted {name}");
        let ours = Command::new(bin("csoc-collector"))
            .args(["--check-config", "--rules"])
            .arg(&p)
            .output()?;
        let err = String::from_utf8_lossy(&ours.stderr);
        assert!(!ours.status.success(), "we accepted {name}");
        assert!(err.contains(&*p.display().to_string()), "{name}: the file is named: {err}");
    }
    // The Gen3 pack: promtool checks it and runs its unit tests; our
    // harness runs the same unit tests with our evaluator.
    let pack = workspace().join("deploy/rules/gen3.yml");
    let tests = workspace().join("deploy/rules/gen3_test.yml");
    let a = |p: &Path| p.display().to_string();
    let out = run(
        dir.path(),
        &promtool,
        &["check".into(), "rules".into(), a(&pack)],
        Duration::from_secs(60),
    )?;
    ensure!(out.contains("SUCCESS"), "promtool check rules: {out}");
    let out = run(
        dir.path(),
        &promtool,
        &["test".into(), "rules".into(), a(&tests)],
        Duration::from_secs(120),
    )?;
    ensure!(out.contains("SUCCESS"), "promtool test rules: {out}");
    let ours = Command::new(bin("csoc-collector")).arg("--test-rules").arg(&tests).output()?;
    let text = String::from_utf8_lossy(&ours.stdout);
    ensure!(
        ours.status.success() && text.contains("SUCCESS"),
        "csoc-collector --test-rules: {text}{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let ours = Command::new(bin("csoc-collector"))
        .args(["--check-config", "--rules"])
        .arg(&pack)
        .output()?;
    ensure!(ours.status.success(), "{}", String::from_utf8_lossy(&ours.stderr));
    Ok(())
}

/// Every alert of the Gen3 pack links its own RUNBOOK.md section, has a
/// unit test in gen3_test.yml, and every alert section of the runbook
/// belongs to an alert of the pack.
#[test]
fn every_gen3_alert_has_its_runbook_section_and_a_unit_test() -> anyhow::Result<()> {
    let dir = workspace().join("deploy/rules");
    let pack_path = dir.join("gen3.yml");
    let pack: Value =
        csoc_common::config::parse_yaml(&std::fs::read_to_string(&pack_path)?, &pack_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runbook = std::fs::read_to_string(dir.join("RUNBOOK.md"))?;
    let tests = std::fs::read_to_string(dir.join("gen3_test.yml"))?;
    let mut alerts = Vec::new();
    for g in pack["groups"].as_array().context("groups")? {
        for r in g["rules"].as_array().context("rules")? {
            let Some(name) = r["alert"].as_str() else { continue };
            alerts.push(name.to_string());
            // Absolute, clickable from Slack and PagerDuty (the collector's
            // --rules.runbook-base-url rebases them).
            let want = format!(
                "https://github.com/csoc-watch/csoc-watch/blob/main/deploy/rules/RUNBOOK.md#{}",
                name.to_lowercase()
            );
            ensure!(
                r["annotations"]["runbook_url"] == want.as_str(),
                "{name}: runbook_url {} is not {want}",
                r["annotations"]["runbook_url"]
            );
            ensure!(runbook.contains(&format!("\n## {name}\n")), "RUNBOOK.md has no section ## {name}");
            ensure!(
                tests.contains(&format!("alertname: {name}\n")),
                "gen3_test.yml tests no alert {name}"
            );
        }
    }
    ensure!(alerts.len() >= 25, "only {} alerts found", alerts.len());
    for line in runbook.lines() {
        if let Some(h) = line.strip_prefix("## ")
            && !matches!(h, "Before you start" | "Alertmanager suggestions")
        {
            ensure!(
                alerts.iter().any(|a| a == h),
                "RUNBOOK.md section {h:?} matches no alert of gen3.yml"
            );
        }
    }
    Ok(())
}

#[test]
fn a_real_alertmanager_receives_lists_and_resolves_our_alerts() -> anyhow::Result<()> {
    let Some(am) = program("prometheus-alertmanager") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let sink = WebhookSink::start()?;
    let am_port = free_port();
    let am_cfg = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_cfg,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, commons]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {}\n        send_resolved: true\n",
            sink.url
        ),
    )?;
    let am_args: Vec<String> = vec![
        format!("--config.file={}", am_cfg.display()),
        format!("--storage.path={}", dir.path().join("am-data").display()),
        format!("--web.listen-address=127.0.0.1:{am_port}"),
        "--cluster.listen-address=".into(),
    ];
    let _am = Proc::start(dir.path(), "alertmanager", &am, &am_args)?;
    let am_url = format!("http://127.0.0.1:{am_port}");
    wait_for("alertmanager ready", Duration::from_secs(30), || {
        get_text(&format!("{am_url}/-/ready")).ok().filter(|(c, _)| *c == 200)
    })?;

    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES)?;
    let tok = format!("e2e={TOKEN}");
    let c = Collector::start(
        dir.path(),
        &[
            "--rules",
            &rules.display().to_string(),
            "--agent-token",
            &tok,
            "--alertmanager",
            &am_url,
            "--external-label",
            "csoc=test",
            "--evaluation-interval",
            "1s",
        ],
    )?;
    write_up(&c, 0.0)?;
    // Alertmanager lists the alert, with our labels and external label.
    let listed = wait_for("the alert at Alertmanager", Duration::from_secs(30), || {
        let (_, v) = get_json(&format!("{am_url}/api/v2/alerts")).ok()?;
        v.as_array().cloned().filter(|a| !a.is_empty())
    })?;
    let a = &listed[0];
    assert_eq!(a["labels"]["alertname"], "ServiceDown");
    assert_eq!(a["labels"]["commons"], "e2e");
    assert_eq!(a["labels"]["csoc"], "test");
    assert_eq!(a["annotations"]["summary"], "fence in e2e is down");
    assert_eq!(a["status"]["state"], "active");
    assert!(a["generatorURL"].as_str().is_some_and(|u| u.starts_with(&c.http)), "{a}");
    // ... and notifies its own receiver.
    let n = sink.wait_for("Alertmanager's firing notification", Duration::from_secs(30), |v| {
        status_of(v) == "firing"
    })?;
    assert_eq!(n["commonLabels"]["service"], "fence");

    // Resolve: Alertmanager stops listing it and sends the resolution.
    write_up(&c, 1.0)?;
    sink.wait_for("Alertmanager's resolved notification", Duration::from_secs(30), |v| {
        status_of(v) == "resolved"
    })?;
    wait_for("the alert gone from Alertmanager's active list", Duration::from_secs(30), || {
        let (_, v) = get_json(&format!("{am_url}/api/v2/alerts?active=true")).ok()?;
        v.as_array().filter(|a| a.is_empty()).map(|_| ())
    })?;
    let (_, m) = get_text(&format!("{}/metrics", c.http)).context("metrics")?;
    assert!(
        metric_value(&m, "csoc_collector_alertmanager_alerts_sent_total").unwrap_or(0.0) >= 2.0,
        "{m}"
    );
    Ok(())
}
