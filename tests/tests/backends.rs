//! The backends of the Gen3 services end to end (issue 21):
//!
//! - the `elasticsearch` source: csoc-fake-gen3's Elasticsearch 7 and
//!   OpenSearch 2 answers (green, yellow, red, 401, basic auth) and a
//!   cluster gone (unreachable) → csoc-agent → gRPC → csoc-collector →
//!   /api/v1/query, and `csoc-agent --once --print --elasticsearch-url`;
//! - the `postgres` source against a real PostgreSQL (Debian's package,
//!   started here on a free port): several databases, a refused password,
//!   a lost connection re-established, a database dropped mid-test, the
//!   oldest open transaction, and the source's cost on the server measured
//!   with pg_stat_statements.

use std::path::Path;
use std::time::{Duration, Instant};

use csoc_tests::*;
use serde_json::Value;

const TOKEN: &str = "backends-token-0123456789abcdef";
/// Time limit of each wait.
const WAIT: Duration = Duration::from_secs(40);

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// Waits until `q` returns exactly one sample whose value satisfies `pred`.
fn wait_value(c: &Collector, q: &str, pred: impl Fn(f64) -> bool) -> anyhow::Result<Value> {
    wait_for(q, WAIT, || {
        c.query(q)
            .ok()
            .and_then(|r| (r.len() == 1 && pred(value(&r[0]))).then(|| r[0].clone()))
    })
}

/// The one sample of `q` now (fails unless exactly one).
fn one(c: &Collector, q: &str) -> anyhow::Result<f64> {
    let r = c.query(q)?;
    anyhow::ensure!(r.len() == 1, "{q}: {} series: {r:?}", r.len());
    Ok(value(&r[0]))
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.display().to_string())
}

/// The agent's own counter for `source` and `kind` (0 when absent).
fn agent_errors(metrics_url: &str, source: &str, kind: &str) -> f64 {
    let text = get_text(metrics_url).map(|(_, t)| t).unwrap_or_default();
    metric_value(
        &text,
        &format!("csoc_agent_source_errors_total{{source=\"{source}\",kind=\"{kind}\"}}"),
    )
    .unwrap_or(0.0)
}

fn switch(fake: &FakeGen3, flavor: &str, scenario: &str) -> anyhow::Result<()> {
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/_fake/es?flavor={flavor}&scenario={scenario}", fake.http))
        .timeout(Duration::from_secs(10))
        .send()?;
    anyhow::ensure!(r.status().is_success(), "switch {flavor}/{scenario}: HTTP {}", r.status());
    Ok(())
}

#[test]
fn elasticsearch_7_and_opensearch_2_health_and_counts_reach_the_collector() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut fake = FakeGen3::start(dir.path(), "fake", &[])?;
    let c = Collector::start(dir.path(), &["--agent-token", &format!("alpha={TOKEN}")])?;
    let pw = write(dir.path(), "es-password", "fixture-password\n")?;
    let cfg = write(
        dir.path(),
        "agent.yml",
        &format!(
            "sources:\n  host: {{enabled: false}}\n  elasticsearch:\n    url: {}/_es/live/current\n    interval: 2s\n    timeout: 1500ms\n    basic_auth: {{username: elastic, password_file: {pw}}}\n",
            fake.http
        ),
    )?;
    let (mut agent, agent_metrics) = start_agent(
        dir.path(),
        "agent",
        &c.grpc,
        &["--token", TOKEN, "--config", &cfg, "--interval", "1s"],
    )?;

    // Elasticsearch 7, green, behind basic auth (the password from its file).
    switch(&fake, "es7", "secured")?;
    let s = wait_value(&c, r#"elasticsearch_cluster_health_status{color="green"}"#, |v| v == 1.0)?;
    assert_eq!(s["metric"]["cluster"], "gen3-es", "{s}");
    assert_eq!(s["metric"]["commons"], "alpha", "{s}");
    assert_eq!(s["metric"]["job"], "elasticsearch", "{s}");
    assert_eq!(one(&c, "elasticsearch_cluster_health_up")?, 1.0);
    assert_eq!(one(&c, "elasticsearch_cluster_health_number_of_nodes")?, 3.0);
    assert_eq!(one(&c, "elasticsearch_cluster_health_active_shards")?, 6.0);
    assert_eq!(one(&c, "elasticsearch_cluster_health_unassigned_shards")?, 0.0);
    assert_eq!(one(&c, "elasticsearch_cluster_health_number_of_pending_tasks")?, 0.0);
    assert_eq!(one(&c, r#"elasticsearch_indices_docs{index="commons-a_file_1"}"#)?, 48211.0);
    assert_eq!(one(&c, r#"elasticsearch_indices_docs{index="commons-a_case_1"}"#)?, 12873.0);
    assert_eq!(
        one(&c, r#"sum by (alias) (elasticsearch_aliases_docs_primary{alias="commons-a_case"})"#)?,
        12873.0
    );
    assert_eq!(
        c.query(r#"elasticsearch_cluster_health_status{cluster="gen3-es"}"#)?.len(),
        3,
        "one series per color"
    );

    // Yellow: one node left, replicas unassigned.
    switch(&fake, "es7", "yellow")?;
    wait_value(&c, r#"elasticsearch_cluster_health_status{color="yellow"}"#, |v| v == 1.0)?;
    wait_value(&c, "elasticsearch_cluster_health_unassigned_shards", |v| v == 3.0)?;
    assert_eq!(one(&c, r#"elasticsearch_cluster_health_status{color="green"}"#)?, 0.0);

    // Red: commons-a_file_1 has no count any more (its series goes stale).
    switch(&fake, "es7", "red")?;
    wait_value(&c, r#"elasticsearch_cluster_health_status{color="red"}"#, |v| v == 1.0)?;
    wait_for("commons-a_file_1's count to go stale", WAIT, || {
        c.query(r#"elasticsearch_indices_docs{index="commons-a_file_1"}"#)
            .ok()
            .filter(|r| r.is_empty())
    })?;
    assert_eq!(one(&c, r#"elasticsearch_indices_docs{index="commons-a_case_1"}"#)?, 12873.0);

    // A 401 (Elasticsearch's security_exception): up 0, counted.
    switch(&fake, "es7", "unauthorized")?;
    wait_value(&c, "elasticsearch_cluster_health_up", |v| v == 0.0)?;
    wait_for("an unauthorized error counted", WAIT, || {
        (agent_errors(&agent_metrics, "elasticsearch", "unauthorized") >= 1.0).then_some(())
    })?;

    // OpenSearch 2: green, yellow, red, its plain-text 401.
    switch(&fake, "os2", "green")?;
    let s = wait_value(
        &c,
        r#"elasticsearch_cluster_health_status{color="green",cluster="gen3-opensearch"}"#,
        |v| v == 1.0,
    )?;
    assert_eq!(s["metric"]["job"], "elasticsearch");
    assert_eq!(one(&c, "elasticsearch_cluster_health_up")?, 1.0);
    // The security index is left out by default.
    assert!(c.query(r#"elasticsearch_indices_docs{index=".opendistro_security"}"#)?.is_empty());
    switch(&fake, "os2", "yellow")?;
    wait_value(
        &c,
        r#"elasticsearch_cluster_health_status{color="yellow",cluster="gen3-opensearch"}"#,
        |v| v == 1.0,
    )?;
    switch(&fake, "os2", "red")?;
    wait_value(
        &c,
        r#"elasticsearch_cluster_health_status{color="red",cluster="gen3-opensearch"}"#,
        |v| v == 1.0,
    )?;
    let before = agent_errors(&agent_metrics, "elasticsearch", "unauthorized");
    switch(&fake, "os2", "unauthorized")?;
    wait_value(&c, "elasticsearch_cluster_health_up", |v| v == 0.0)?;
    wait_for("the OpenSearch 401 counted", WAIT, || {
        (agent_errors(&agent_metrics, "elasticsearch", "unauthorized") > before).then_some(())
    })?;

    // Unreachable: the cluster is gone.
    switch(&fake, "os2", "green")?;
    wait_value(&c, "elasticsearch_cluster_health_up", |v| v == 1.0)?;
    fake.proc.terminate()?;
    wait_value(&c, "elasticsearch_cluster_health_up", |v| v == 0.0)?;
    wait_for("a connect error counted", WAIT, || {
        (agent_errors(&agent_metrics, "elasticsearch", "connect") >= 1.0).then_some(())
    })?;

    // Each failure was logged when it started, not at every round; the
    // password never.
    agent.terminate()?;
    let log = agent.log_text();
    assert!(!log.contains("fixture-password"), "the password is logged:\n{log}");
    let connect_lines = log
        .lines()
        .filter(|l| l.contains("Elasticsearch request failed") && l.contains("kind=\"connect\""))
        .count();
    assert_eq!(connect_lines, 1, "the outage is logged once:\n{log}");
    Ok(())
}

#[test]
fn elasticsearch_url_flag_with_once_print() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fake = FakeGen3::start(dir.path(), "fake", &[])?;
    let cfg = write(dir.path(), "agent.yml", "sources:\n  host: {enabled: false}\n")?;
    let out = run(
        dir.path(),
        &bin("csoc-agent"),
        &[
            "--config".into(),
            cfg,
            "--once".into(),
            "--print".into(),
            "--elasticsearch-url".into(),
            format!("{}/_es/os2/yellow", fake.http),
        ],
        Duration::from_secs(60),
    )?;
    // `name{labels} value timestamp` lines: the value of the first line
    // starting with `prefix`.
    let sample = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let status = |color: &str| {
        sample(&format!(
            "elasticsearch_cluster_health_status{{cluster=\"gen3-opensearch\",color=\"{color}\","
        ))
    };
    assert_eq!(status("yellow"), Some(1.0), "{out}");
    assert_eq!(status("green"), Some(0.0), "{out}");
    assert!(out.contains("# TYPE elasticsearch_cluster_health_status gauge"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("elasticsearch_indices_docs{") && l.contains("index=\"commons-a_file_1\"") && l.contains(" 48211 ")),
        "{out}"
    );
    Ok(())
}

/// The postgres source's statement as pg_stat_statements normalizes it
/// (its first words).
const STATEMENT_PREFIX: &str = "SELECT d.numbackends::float8";

#[test]
fn postgres_databases_reach_the_collector_and_failures_stay_apart() -> anyhow::Result<()> {
    let Some(bin) = postgres::bindir() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let pg = postgres::Postgres::start(
        &bin,
        dir.path(),
        &["shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all"],
    )?;
    pg.psql("postgres", "CREATE ROLE monitor LOGIN PASSWORD 'monitor-secret' IN ROLE pg_monitor")?;
    for db in ["fence_db", "indexd_db", "doomed_db"] {
        pg.psql("postgres", &format!("CREATE DATABASE {db}"))?;
    }
    pg.psql("postgres", "CREATE EXTENSION pg_stat_statements")?;
    pg.psql("fence_db", "CREATE TABLE t (i int)")?;
    let pw = write(dir.path(), "monitor-password", "monitor-secret\n")?;
    let dsn = |db: &str| format!("host=127.0.0.1 port={} user=monitor dbname={db}", pg.port);
    let c = Collector::start(dir.path(), &["--agent-token", &format!("alpha={TOKEN}")])?;
    let cfg = write(
        dir.path(),
        "agent.yml",
        &format!(
            "sources:\n  host: {{enabled: false}}\n  postgres:\n    interval: 2s\n    timeout: 1500ms\n    databases:\n      - {{name: fence, dsn: '{}', password_file: {pw}}}\n      - {{name: indexd, dsn: '{}', password_file: {pw}}}\n      - {{name: doomed, dsn: '{}', password_file: {pw}}}\n",
            dsn("fence_db"),
            dsn("indexd_db"),
            dsn("doomed_db")
        ),
    )?;
    // A fourth database from the flag, with a wrong password in its DSN.
    let wrong = format!("wrongpw={} password=not-the-password", dsn("fence_db"));
    let (mut agent, agent_metrics) = start_agent(
        dir.path(),
        "agent",
        &c.grpc,
        &["--token", TOKEN, "--config", &cfg, "--interval", "1s", "--postgres-dsn", &wrong],
    )?;

    for db in ["fence", "indexd", "doomed"] {
        let s = wait_value(&c, &format!("pg_up{{database=\"{db}\"}}"), |v| v == 1.0)?;
        assert_eq!(s["metric"]["job"], "postgres", "{s}");
        assert_eq!(s["metric"]["commons"], "alpha", "{s}");
    }
    wait_value(&c, r#"pg_up{database="wrongpw"}"#, |v| v == 0.0)?;
    assert_eq!(one(&c, r#"pg_settings_max_connections{database="fence"}"#)?, 20.0);
    assert!(
        one(&c, r#"pg_stat_database_numbackends{database="fence"}"#)? >= 1.0,
        "the agent's own connection"
    );
    assert!(
        one(&c, r#"pg_database_size_bytes{database="indexd"}"#)? > 1e6,
        "a fresh database is a few MB"
    );
    assert_eq!(one(&c, r#"pg_replication_lag_seconds{database="fence"}"#)?, 0.0, "a primary");
    assert_eq!(one(&c, r#"pg_replication_is_replica{database="fence"}"#)?, 0.0);
    assert!(
        c.query(r#"pg_stat_database_numbackends{database="wrongpw"}"#)?.is_empty(),
        "only pg_up for a refused database"
    );

    // Transactions are counted: commits and a rollback in fence_db.
    let commits0 = one(&c, r#"pg_stat_database_xact_commit{database="fence"}"#)?;
    let rollbacks0 = one(&c, r#"pg_stat_database_xact_rollback{database="fence"}"#)?;
    for i in 0..5 {
        pg.psql("fence_db", &format!("INSERT INTO t VALUES ({i})"))?;
    }
    pg.psql("fence_db", "BEGIN; INSERT INTO t VALUES (99); ROLLBACK;")?;
    wait_value(&c, r#"pg_stat_database_xact_commit{database="fence"}"#, |v| v >= commits0 + 5.0)?;
    wait_value(&c, r#"pg_stat_database_xact_rollback{database="fence"}"#, |v| v >= rollbacks0 + 1.0)?;

    // An open transaction ages.
    let mut session = pg.psql_session("fence_db", "BEGIN; SELECT txid_current();")?;
    let s = wait_value(
        &c,
        r#"pg_long_running_transactions_oldest_timestamp_seconds{database="fence"}"#,
        |v| v >= 2.0,
    );
    let _ = session.kill();
    let _ = session.wait();
    s?;
    assert!(one(&c, r#"pg_long_running_transactions_oldest_timestamp_seconds{database="indexd"}"#)? < 2.0);

    // The agent's connection to fence is killed: the next round reconnects
    // (at once: fence stays up).
    let killed = pg.psql(
        "postgres",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'csoc-agent' AND datname = 'fence_db' AND usename = 'monitor'",
    )?;
    assert!(killed.trim().parse::<u32>().unwrap_or(0) >= 1, "terminated: {killed}");
    let t0 = Instant::now();
    let commits1 = one(&c, r#"pg_stat_database_xact_commit{database="fence"}"#)?;
    wait_value(&c, r#"pg_stat_database_xact_commit{database="fence"}"#, |v| v > commits1 + 1.0)?;
    wait_value(&c, r#"pg_up{database="fence"}"#, |v| v == 1.0)?;
    eprintln!("fence reconnected within {:?}", t0.elapsed());

    // doomed_db is dropped (its connections terminated): pg_up 0, the
    // others go on.
    pg.psql("postgres", "DROP DATABASE doomed_db WITH (FORCE)")?;
    wait_value(&c, r#"pg_up{database="doomed"}"#, |v| v == 0.0)?;
    // Its other series end (staleness markers), they do not linger.
    wait_for("doomed's statistics to end", WAIT, || {
        c.query(r#"pg_stat_database_numbackends{database="doomed"}"#)
            .ok()
            .filter(|r| r.is_empty())
    })?;
    wait_for("a missing_database error counted", WAIT, || {
        (agent_errors(&agent_metrics, "postgres", "missing_database") >= 1.0).then_some(())
    })?;
    let indexd_commits = one(&c, r#"pg_stat_database_xact_commit{database="indexd"}"#)?;
    wait_value(&c, r#"pg_stat_database_xact_commit{database="indexd"}"#, |v| v > indexd_commits)?;
    assert_eq!(one(&c, r#"pg_up{database="fence"}"#)?, 1.0);
    assert_eq!(one(&c, r#"pg_up{database="indexd"}"#)?, 1.0);
    let auth = agent_errors(&agent_metrics, "postgres", "auth");
    assert!(auth >= 3.0, "the refused password is counted at every round: {auth}");

    // What the source costs the server, per statement and per collection.
    let stats = pg.psql(
        "postgres",
        &format!(
            "SELECT sum(calls), sum(total_exec_time), max(max_exec_time), sum(total_plan_time) FROM pg_stat_statements WHERE query LIKE '{STATEMENT_PREFIX}%'"
        ),
    )?;
    let f: Vec<f64> = stats.trim().split('|').map(|v| v.trim().parse().unwrap_or(f64::NAN)).collect();
    anyhow::ensure!(f.len() == 4 && f[0] >= 10.0, "pg_stat_statements: {stats:?}");
    let mean_ms = f[1] / f[0];
    eprintln!(
        "postgres source cost: {} executions, mean {mean_ms:.3} ms, max {:.3} ms of execution per database per collection",
        f[0], f[2]
    );
    assert!(mean_ms < 5.0, "the statement takes {mean_ms} ms on average");

    agent.terminate()?;
    let log = agent.log_text();
    for secret in ["monitor-secret", "not-the-password"] {
        assert!(!log.contains(secret), "a password is logged:\n{log}");
    }
    // Logged when a failure starts or its kind changes (a first connection
    // slower than the timeout on a loaded machine is a `timeout` first).
    let warned = |db: &str, kind: &str| {
        log.lines()
            .filter(|l| {
                l.contains("PostgreSQL database unavailable")
                    && l.contains(&format!("database={db} "))
                    && l.contains(&format!("kind=\"{kind}\""))
            })
            .count()
    };
    assert_eq!(warned("wrongpw", "auth"), 1, "the refused password is logged once:\n{log}");
    assert_eq!(
        warned("doomed", "missing_database"),
        1,
        "the dropped database is logged once:\n{log}"
    );
    for kind in ["connect", "auth", "missing_database", "query"] {
        assert_eq!(
            warned("fence", kind),
            0,
            "a lost connection re-established at once is no outage:\n{log}"
        );
        assert_eq!(warned("indexd", kind), 0, "{log}");
    }
    assert!(log.contains("password authentication failed"), "the reason is logged:\n{log}");
    Ok(())
}
