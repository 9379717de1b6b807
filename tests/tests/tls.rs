//! TLS and mutual TLS between the real binaries: certificates made with
//! rcgen at test time in the test's temporary directory, loopback only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use csoc_tests::{Collector, Proc, bin, free_port, get_text, metric_value, start_agent, urlencode, wait_for};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};

const BETA_TOKEN: &str = "beta-token-0123456789abcdef";

/// A CA writing the certificates it issues as PEM files into a directory.
struct Ca {
    dir: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate's file.
    file: String,
}

/// What to put in an issued certificate.
struct Leaf<'a> {
    cn: &'a str,
    sans: Vec<SanType>,
    eku: Vec<ExtendedKeyUsagePurpose>,
    expired: bool,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> anyhow::Result<Ca> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        let cert = p.self_signed(&key)?;
        let file = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&file, cert.pem())?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            cert,
            key,
            file: file.display().to_string(),
        })
    }

    /// Issues `<name>.crt` and `<name>.key`; returns their paths.
    fn issue(&self, name: &str, leaf: Leaf<'_>) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, leaf.cn);
        p.subject_alt_names = leaf.sans;
        p.extended_key_usages = leaf.eku;
        if leaf.expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        let (c, k) = (self.dir.join(format!("{name}.crt")), self.dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem())?;
        std::fs::write(&k, key.serialize_pem())?;
        Ok((c.display().to_string(), k.display().to_string()))
    }

    /// A server certificate for localhost and 127.0.0.1.
    fn server(&self, name: &str) -> anyhow::Result<(String, String)> {
        self.issue(
            name,
            Leaf {
                cn: "csoc collector",
                sans: vec![SanType::DnsName("localhost".try_into()?), SanType::IpAddress([127, 0, 0, 1].into())],
                eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
                expired: false,
            },
        )
    }

    /// An agent client certificate with `cn` as CN and DNS name.
    fn client(&self, name: &str, cn: &str) -> anyhow::Result<(String, String)> {
        self.issue(
            name,
            Leaf {
                cn,
                sans: vec![SanType::DnsName(cn.try_into()?)],
                eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
                expired: false,
            },
        )
    }
}

fn https(grpc: &str) -> String {
    grpc.replacen("http://", "https://", 1)
}

/// The agent flags for TLS with the collector's CA and a client certificate.
fn tls_args<'a>(ca: &'a str, cert: &'a (String, String)) -> Vec<&'a str> {
    vec!["--tls-ca", ca, "--tls-cert", &cert.0, "--tls-key", &cert.1]
}

/// Starts an agent shipping every second with `who=<name>` on its series.
fn agent(dir: &Path, name: &str, grpc: &str, extra: &[&str]) -> anyhow::Result<(Proc, String)> {
    let who = format!("who={name}");
    let mut args = vec!["--interval", "1s", "--agent-name", name, "--external-label", &who];
    args.extend_from_slice(extra);
    start_agent(dir, name, grpc, &args)
}

fn refused(metrics: &str, reason: &str) -> f64 {
    metric_value(
        metrics,
        &format!("csoc_collector_ingest_refused_streams_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

fn acked(agent_metrics: &str) -> anyhow::Result<f64> {
    let (_, m) = get_text(agent_metrics)?;
    Ok(metric_value(&m, "csoc_agent_batches_acked_total").unwrap_or(0.0))
}

#[test]
fn mtls_agents_are_mapped_to_commons_and_bad_certificates_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ca = Ca::new(d, "csoc")?;
    let rogue = Ca::new(d, "rogue")?;
    let server = ca.server("collector")?;
    let alpha = ca.client("alpha", "agent.alpha.example")?;
    let beta = ca.issue(
        "beta",
        Leaf {
            cn: "beta agent",
            sans: vec![SanType::URI("spiffe://csoc/beta".try_into()?)],
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            expired: false,
        },
    )?;
    let rogue_alpha = rogue.client("rogue-alpha", "agent.alpha.example")?;
    let expired = ca.issue(
        "expired",
        Leaf {
            cn: "agent.alpha.example",
            sans: vec![],
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            expired: true,
        },
    )?;
    let server_eku = ca.issue(
        "server-eku",
        Leaf {
            cn: "agent.alpha.example",
            sans: vec![],
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
            expired: false,
        },
    )?;
    let unmapped = ca.client("unmapped", "agent.gamma.example")?;

    let beta_token = format!("beta={BETA_TOKEN}");
    let c = Collector::start(
        d,
        &[
            "--grpc-tls-cert",
            &server.0,
            "--grpc-tls-key",
            &server.1,
            "--grpc-tls-client-ca",
            &ca.file,
            "--agent-cert",
            "alpha=agent.alpha.example",
            "--agent-cert",
            "beta=spiffe://csoc/beta",
            "--agent-token",
            &beta_token,
        ],
    )?;
    let grpc = https(&c.grpc);

    // A certificate and no token: commons alpha, from the certificate.
    let (mut good, good_metrics) = agent(d, "good", &grpc, &tls_args(&ca.file, &alpha))?;
    wait_for("the certificate agent's data", Duration::from_secs(60), || {
        c.query(r#"node_time_seconds{who="good"}"#).ok().filter(|r| !r.is_empty())
    })?;
    let r = c.query(r#"count by (commons) ({who="good"})"#)?;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["metric"]["commons"], "alpha", "{r:?}");

    // A certificate and a token of the same commons (the server name given
    // explicitly): accepted.
    let mut both_args = tls_args(&ca.file, &beta);
    both_args.extend(["--token", BETA_TOKEN, "--tls-server-name", "localhost"]);
    let (mut both, _) = agent(d, "both", &grpc, &both_args)?;

    // Refused in the handshake: another CA, expired, not for client auth.
    let (mut a_rogue, _) = agent(d, "rogue", &grpc, &tls_args(&ca.file, &rogue_alpha))?;
    let (mut a_expired, _) = agent(d, "expired", &grpc, &tls_args(&ca.file, &expired))?;
    let (mut a_eku, _) = agent(d, "eku", &grpc, &tls_args(&ca.file, &server_eku))?;
    // Verified but mapped to no commons.
    let (mut a_unmapped, _) = agent(d, "unmapped", &grpc, &tls_args(&ca.file, &unmapped))?;
    // Certificate of alpha, token of beta.
    let mut mismatch_args = tls_args(&ca.file, &alpha);
    mismatch_args.extend(["--token", BETA_TOKEN]);
    let (mut a_mismatch, _) = agent(d, "mismatch", &grpc, &mismatch_args)?;
    // Does not trust the collector's CA.
    let mut untrusting_args = tls_args(&rogue.file, &alpha);
    untrusting_args.truncate(2);
    untrusting_args.extend(["--token", BETA_TOKEN]);
    let (mut a_untrusting, _) = agent(d, "untrusting", &grpc, &untrusting_args)?;

    let bad = [
        (&a_rogue, "the collector refused our client certificate"),
        (&a_expired, "the collector refused our client certificate"),
        (&a_eku, "the collector refused our client certificate"),
        (
            &a_unmapped,
            "the collector maps no commons to this client certificate (CN=agent.gamma.example",
        ),
        (&a_mismatch, r#"belongs to commons "alpha" but the token to commons "beta""#),
        (
            &a_untrusting,
            "the collector's certificate is not trusted: it is not issued by a CA this agent trusts",
        ),
    ];
    for (p, says) in bad {
        // Agents back off exponentially after each refusal; 60 s leaves room
        // for a loaded machine.
        wait_for(&format!("{} to log {says:?}", p.log.display()), Duration::from_secs(60), || {
            p.log_text().contains(says).then_some(())
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", p.log_text()))?;
    }
    wait_for("the cert+token agent's data under beta", Duration::from_secs(30), || {
        c.query(r#"count by (commons) ({who="both"})"#)
            .ok()
            .filter(|r| r.len() == 1 && r[0]["metric"]["commons"] == "beta")
    })?;

    // The good agent is still served after all that.
    let before = acked(&good_metrics)?;
    wait_for("more acknowledged batches of the good agent", Duration::from_secs(20), || {
        acked(&good_metrics).ok().filter(|n| *n > before)
    })?;

    // Nothing of the refused agents is stored.
    let r = c.query(r#"count by (who) ({who=~"rogue|expired|eku|unmapped|mismatch|untrusting"})"#)?;
    assert!(r.is_empty(), "stored from refused agents: {r:?}");

    // The collector counts and names them, never a token.
    let (_, m) = get_text(&format!("{}/metrics", c.http))?;
    assert!(refused(&m, "client_cert_invalid") >= 3.0, "{m}");
    assert!(refused(&m, "unmapped_cert") >= 1.0, "{m}");
    assert!(refused(&m, "cert_token_mismatch") >= 1.0, "{m}");
    let clog = c.proc.log_text();
    for says in [
        "refused an agent's TLS handshake: client certificate rejected",
        "client_cert=CN=agent.alpha.example",
        "refused an agent stream: its verified client certificate maps to no commons",
        "client_cert=CN=agent.gamma.example, DNS=agent.gamma.example",
        "refused an agent stream: its client certificate and its token belong to different commons",
        "peer=127.0.0.1:",
    ] {
        assert!(clog.contains(says), "collector log lacks {says:?}:\n{clog}");
    }
    assert!(!clog.contains(BETA_TOKEN), "a token in the collector's log");

    for p in [
        &mut a_rogue,
        &mut a_expired,
        &mut a_eku,
        &mut a_unmapped,
        &mut a_mismatch,
        &mut a_untrusting,
        &mut both,
    ] {
        assert!(p.terminate()?.success());
    }
    assert!(good.terminate()?.success());
    Ok(())
}

/// Starts a collector whose HTTP API speaks TLS; waits until it is ready.
fn start_https_collector(dir: &Path, client: &reqwest::blocking::Client, extra: &[&str]) -> anyhow::Result<(Proc, String, String)> {
    let (http_port, grpc_port) = (free_port(), free_port());
    let args = csoc_tests::collector_args(dir, http_port, grpc_port, extra);
    let proc = Proc::start(dir, "collector", &bin("csoc-collector"), &args)?;
    let http = format!("https://127.0.0.1:{http_port}");
    wait_for("collector /-/ready over HTTPS", Duration::from_secs(30), || {
        client
            .get(format!("{http}/-/ready"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", proc.log_text()))?;
    Ok((proc, http, format!("https://127.0.0.1:{grpc_port}")))
}

#[test]
fn https_api_and_the_local_agent_with_required_client_certificates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ca = Ca::new(d, "csoc")?;
    let server = ca.server("collector")?;
    let alpha = ca.client("alpha", "agent.alpha.example")?;
    let ca_pem = std::fs::read(&ca.file)?;
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem)?)
        .timeout(Duration::from_secs(10))
        .build()?;
    let token = format!("beta={BETA_TOKEN}");
    let (mut c, http, grpc) = start_https_collector(
        d,
        &client,
        &[
            "--http-tls-cert",
            &server.0,
            "--http-tls-key",
            &server.1,
            "--grpc-tls-cert",
            &server.0,
            "--grpc-tls-key",
            &server.1,
            "--grpc-tls-client-ca",
            &ca.file,
            "--grpc-tls-client-auth",
            "require",
            "--agent-cert",
            "alpha=agent.alpha.example",
            "--agent-token",
            &token,
            "--local-agent",
            "--local-agent-interval",
            "1s",
        ],
    )?;
    let query = |q: &str| -> anyhow::Result<Vec<serde_json::Value>> {
        let v: serde_json::Value = client.get(format!("{http}/api/v1/query?query={}", urlencode(q))).send()?.json()?;
        anyhow::ensure!(v["status"] == "success", "{v}");
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    };
    // The in-process agent ships over gRPC TLS although certificates are required.
    wait_for("the local agent's data, queried over HTTPS", Duration::from_secs(60), || {
        query(r#"node_time_seconds{commons="local"}"#).ok().filter(|r| !r.is_empty())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", c.log_text()))?;

    // A certificate agent is served; a token-only agent is refused.
    let (mut good, _) = agent(d, "good", &grpc, &tls_args(&ca.file, &alpha))?;
    let (mut tokened, _) = agent(d, "tokened", &grpc, &["--tls-ca", &ca.file, "--token", BETA_TOKEN])?;
    wait_for("the certificate agent's data", Duration::from_secs(60), || {
        query(r#"count by (commons) ({who="good"})"#)
            .ok()
            .filter(|r| r.len() == 1 && r[0]["metric"]["commons"] == "alpha")
    })?;
    wait_for("the token-only agent's refusal", Duration::from_secs(30), || {
        tokened
            .log_text()
            .contains("this collector requires a client certificate")
            .then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", tokened.log_text()))?;
    assert!(query(r#"{who="tokened"}"#)?.is_empty());
    assert!(c.log_text().contains("refused an agent stream: no client certificate"));

    // Plain HTTP to the HTTPS port gets no answer; an untrusting client fails.
    assert!(get_text(&http.replacen("https://", "http://", 1)).is_err());
    assert!(reqwest::blocking::Client::new().get(format!("{http}/-/ready")).send().is_err());

    assert!(tokened.terminate()?.success());
    assert!(good.terminate()?.success());
    // Graceful shutdown works with both TLS listeners.
    assert!(c.terminate()?.success());
    assert!(c.log_text().contains("csoc-collector stopped"), "{}", c.log_text());
    Ok(())
}

#[test]
fn check_config_names_the_bad_tls_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ca = Ca::new(d, "csoc")?;
    let server = ca.server("collector")?;
    let junk = d.join("junk.pem");
    std::fs::write(&junk, "not PEM\n")?;
    let junk = junk.display().to_string();
    let run = |program: &str, args: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = std::process::Command::new(bin(program)).args(args).arg("--check-config").output()?;
        Ok((
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        ))
    };
    let (ok, out) = run("csoc-collector", &["--grpc-tls-cert", &server.0, "--grpc-tls-key", &server.1])?;
    assert!(ok, "{out}");
    let (ok, out) = run("csoc-collector", &["--grpc-tls-cert", &junk, "--grpc-tls-key", &server.1])?;
    assert!(!ok && out.contains("grpc_tls.cert_file") && out.contains("junk.pem"), "{out}");
    let (ok, out) = run("csoc-collector", &["--http-tls-cert", &server.0, "--http-tls-key", &junk])?;
    assert!(!ok && out.contains("http_tls.key_file") && out.contains("junk.pem"), "{out}");
    let (ok, out) = run(
        "csoc-agent",
        &[
            "--collector",
            "https://127.0.0.1:1",
            "--tls-ca",
            &ca.file,
            "--tls-cert",
            &server.0,
            "--tls-key",
            &server.1,
        ],
    )?;
    assert!(ok, "{out}");
    let (ok, out) = run("csoc-agent", &["--collector", "https://127.0.0.1:1", "--tls-ca", &junk])?;
    assert!(!ok && out.contains("tls.ca_file") && out.contains("junk.pem"), "{out}");
    let (ok, out) = run("csoc-agent", &["--collector", "http://127.0.0.1:1", "--tls-ca", &ca.file])?;
    assert!(!ok && out.contains("https://"), "{out}");
    Ok(())
}
