use std::time::Duration;

use super::*;

fn db(name: &str, dsn: &str) -> PostgresDatabase {
    PostgresDatabase {
        name: name.into(),
        dsn: dsn.into(),
        password_file: None,
    }
}

fn cfg(dbs: Vec<PostgresDatabase>) -> PostgresConfig {
    PostgresConfig {
        databases: dbs,
        ..Default::default()
    }
}

#[test]
fn dsns_are_never_shown_with_their_password() {
    let d = db("fence", "host=db.internal port=5433 user=fence password=hunter2 dbname=fence_db");
    let s = format!("{d:?}");
    assert!(!s.contains("hunter2") && s.contains("fence@db.internal:5433/fence_db"), "{s}");
    let u = redacted("postgresql://indexd:hunter2@db:5432/indexd_db?sslmode=disable");
    assert_eq!(u, "indexd@db:5432/indexd_db");
    assert_eq!(redacted("host=db password=hunter2 sslmode=bogus"), "<invalid DSN>");
    // A config error about a DSN names the database, not the DSN.
    let e = cfg(vec![db("fence", "host=db password=hunter2 sslmode=bogus")])
        .validate(Duration::from_secs(15))
        .expect_err("bad sslmode")
        .to_string();
    assert!(
        e.contains("sources.postgres.databases[0].dsn") && e.contains("fence") && !e.contains("hunter2"),
        "{e}"
    );
    let s = format!("{:?}", cfg(vec![d]));
    assert!(!s.contains("hunter2"), "{s}");
}

#[test]
fn config_is_checked() {
    let ok = cfg(vec![
        db("fence", "host=db user=m dbname=fence_db"),
        db("indexd", "postgresql://m@db/indexd_db"),
    ]);
    ok.validate(Duration::from_secs(15)).expect("valid");
    assert!(ok.active());
    assert!(!PostgresConfig::default().active());
    let bad = |c: PostgresConfig| c.validate(Duration::from_secs(15)).expect_err("invalid").to_string();
    let e = bad(cfg(vec![db("fence", "host=a"), db("fence", "host=b")]));
    assert!(e.contains("twice"), "{e}");
    let e = bad(cfg(vec![db("", "host=a")]));
    assert!(e.contains("databases[0].name"), "{e}");
    let e = bad(cfg(vec![db("fence", "")]));
    assert!(e.contains("empty"), "{e}");
    let e = bad(cfg(vec![db("fence", "host=db sslmode=require")]));
    assert!(e.contains("sslmode=require"), "{e}");
    let e = bad(PostgresConfig {
        timeout: Some(Duration::from_secs(30)),
        ..cfg(vec![db("fence", "host=db")])
    });
    assert!(e.contains("sources.postgres.timeout"), "{e}");
    let y = "databases:\n  - {name: fence, dsn: 'host=db user=m dbname=fence_db', password_file: /etc/pg/fence}\ninterval: 30s\n";
    let c: PostgresConfig = serde_yaml_ng::from_str(y).expect("parses");
    assert_eq!(c.databases[0].password_file.as_deref(), Some(std::path::Path::new("/etc/pg/fence")));
    assert!(serde_yaml_ng::from_str::<PostgresConfig>("databases: [{name: a, dsn: b, password: c}]\n").is_err());
}

#[test]
fn connections_are_read_only_with_a_statement_timeout() {
    let c = cfg(vec![db("fence", "host=db user=m dbname=fence_db options='-c work_mem=4MB'")]);
    let s = PostgresSource::new(&c, Duration::from_secs(15)).expect("source");
    let o = s.databases[0].config.get_options().expect("options");
    assert!(o.starts_with("-c work_mem=4MB"), "{o}");
    assert!(o.contains("-c default_transaction_read_only=on"), "{o}");
    assert!(o.contains("-c statement_timeout=10000"), "{o}");
    assert_eq!(s.databases[0].config.get_application_name(), Some("csoc-agent"));
}

#[tokio::test]
async fn a_refused_connection_reports_pg_up_0_and_the_others_go_on() {
    // Nothing listens on this port: connect fails at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let c = PostgresConfig {
        timeout: Some(Duration::from_secs(2)),
        ..cfg(vec![
            db("a", &format!("host=127.0.0.1 port={port} user=m password=hunter2 dbname=a")),
            db("b", &format!("host=127.0.0.1 port={port} user=m dbname=b")),
        ])
    };
    let mut s = PostgresSource::new(&c, Duration::from_secs(15)).expect("source");
    let (frame, results) = s.collect("postgres").await;
    assert_eq!(results.len(), 2);
    for (name, r) in &results {
        let e = r.as_ref().expect_err("refused");
        assert_eq!(e.kind, "connect", "{name}: {e:?}");
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        assert!(e.message.contains(&format!("127.0.0.1:{port}")), "{}", e.message);
    }
    let ups: Vec<_> = frame
        .samples
        .iter()
        .filter(|s| s.labels.iter().any(|(k, v)| k == "__name__" && v == "pg_up"))
        .map(|s| s.value)
        .collect();
    assert_eq!(ups, vec![0.0, 0.0]);
    assert_eq!(frame.samples.len(), 2, "nothing but pg_up for unreachable databases");
}

#[test]
fn flags_add_databases_and_the_elasticsearch_url() {
    use clap::Parser;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agent.yml");
    std::fs::write(
        &file,
        "sources:\n  postgres:\n    databases:\n      - {name: fence, dsn: 'host=old', password_file: /etc/pg/fence}\n",
    )
    .expect("write");
    let args = crate::cli::Args::try_parse_from([
        "csoc-agent",
        "--config",
        file.to_str().expect("utf-8 path"),
        "--postgres-dsn",
        "fence=host=db user=m dbname=fence_db",
        "--postgres-dsn",
        "indexd=postgresql://m@db/indexd_db",
        "--elasticsearch-url",
        "http://es:9200",
    ])
    .expect("flags parse");
    let cfg = args.resolve().expect("resolves");
    let dbs = &cfg.sources.postgres.databases;
    assert_eq!(dbs.len(), 2);
    assert_eq!(
        (dbs[0].name.as_str(), dbs[0].dsn.as_str()),
        ("fence", "host=db user=m dbname=fence_db")
    );
    assert_eq!(
        dbs[0].password_file.as_deref(),
        Some(std::path::Path::new("/etc/pg/fence")),
        "kept from the file"
    );
    assert_eq!(dbs[1].name, "indexd");
    assert_eq!(cfg.sources.elasticsearch.url.as_deref(), Some("http://es:9200"));
    cfg.validate().expect("valid");
    let names: Vec<String> = crate::build_sources(&cfg).expect("sources").into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"postgres".to_string()) && names.contains(&"elasticsearch".to_string()),
        "{names:?}"
    );
    for bad in ["fence", "=host=db", "fence="] {
        let e = crate::cli::Args::try_parse_from(["csoc-agent", "--postgres-dsn", bad])
            .expect("flags parse")
            .resolve()
            .expect_err("bad NAME=DSN");
        assert!(e.to_string().contains("NAME=DSN"), "{e}");
    }
}
