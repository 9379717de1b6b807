use std::path::{Path, PathBuf};

use super::*;
use crate::cli::Args;
use clap::Parser;

/// A CA and certificates it issues, written as PEM files in a directory.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
        let ca = p.self_signed(&ca_key).expect("ca");
        std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write");
        Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
        }
    }

    /// Issues `<name>.crt`/`<name>.key` for CN `cn` with `dns` and `uris` SANs.
    fn issue(&self, name: &str, cn: &str, dns: &[&str], uris: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
        for u in uris {
            p.subject_alt_names.push(rcgen::SanType::URI((*u).try_into().expect("ia5")));
        }
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).expect("sign");
        let (c, k) = (self.dir.join(format!("{name}.crt")), self.dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

fn err(cfg: &CollectorConfig) -> String {
    cfg.validate().expect_err("invalid").to_string()
}

#[test]
fn names_are_read_from_a_real_certificate() {
    let d = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(d.path());
    let (c, _) = pki.issue("a", "agent.alpha.example", &["a1.example", "a2.example"], &["spiffe://csoc/alpha"]);
    let der = read_certs("x", &c).expect("certs").remove(0);
    let n = CertNames::from_der(&der).expect("names");
    assert_eq!(n.common_names, vec!["agent.alpha.example"]);
    assert_eq!(n.dns, vec!["a1.example", "a2.example"]);
    assert_eq!(n.uris, vec!["spiffe://csoc/alpha"]);
    assert_eq!(
        n.to_string(),
        "CN=agent.alpha.example, DNS=a1.example, DNS=a2.example, URI=spiffe://csoc/alpha"
    );
    let m = CertMap::new(&[AgentCert {
        commons: "alpha".into(),
        name: "spiffe://csoc/alpha".into(),
    }])
    .expect("map");
    assert_eq!(m.lookup(&n), CertLookup::Commons("alpha".into()));
}

#[test]
fn tls_config_files_are_checked_and_named() {
    let d = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(d.path());
    let (crt, key) = pki.issue("server", "collector", &["collector.example"], &[]);
    let (_, other_key) = pki.issue("other", "other", &["other.example"], &[]);
    let junk = d.path().join("junk.pem");
    std::fs::write(&junk, "hello\n").expect("write");
    let grpc = |cert: &Path, key: Option<&Path>, ca: Option<&Path>| GrpcTlsConfig {
        cert_file: Some(cert.to_path_buf()),
        key_file: key.map(Path::to_path_buf),
        client_ca_file: ca.map(Path::to_path_buf),
        client_auth: ClientAuth::Optional,
    };
    let mut cfg = CollectorConfig {
        grpc_tls: Some(grpc(&crt, Some(&key), Some(&pki.ca_file()))),
        agent_certs: vec![AgentCert {
            commons: "alpha".into(),
            name: "agent.alpha.example".into(),
        }],
        http_tls: Some(HttpTlsConfig {
            cert_file: Some(crt.clone()),
            key_file: Some(key.clone()),
        }),
        ..Default::default()
    };
    cfg.validate().expect("valid");
    assert!(cfg.external_url().starts_with("https://"), "{}", cfg.external_url());

    let with = |g: GrpcTlsConfig| CollectorConfig {
        grpc_tls: Some(g),
        ..cfg.clone()
    };
    let e = err(&with(grpc(&crt, None, Some(&pki.ca_file()))));
    assert!(e.contains("grpc_tls.key_file") && e.contains("required"), "{e}");
    let e = err(&with(grpc(&d.path().join("missing.crt"), Some(&key), None)));
    assert!(e.contains("grpc_tls.cert_file") && e.contains("missing.crt"), "{e}");
    let e = err(&with(grpc(&junk, Some(&key), None)));
    assert!(
        e.contains("grpc_tls.cert_file") && e.contains("no PEM certificate") && e.contains("junk.pem"),
        "{e}"
    );
    let e = err(&with(grpc(&crt, Some(&crt), None)));
    assert!(e.contains("grpc_tls.key_file") && e.contains("no PEM private key"), "{e}");
    let e = err(&with(grpc(&crt, Some(&other_key), None)));
    assert!(e.contains("grpc_tls.key_file") && e.contains("does not belong"), "{e}");
    let e = err(&with(grpc(&crt, Some(&key), Some(&junk))));
    assert!(e.contains("grpc_tls.client_ca_file") && e.contains("junk.pem"), "{e}");
    // agent_certs need a client CA.
    let e = err(&with(grpc(&crt, Some(&key), None)));
    assert!(e.contains("agent_certs") && e.contains("client_ca_file"), "{e}");
    let e = err(&CollectorConfig {
        grpc_tls: None,
        ..cfg.clone()
    });
    assert!(e.contains("agent_certs") && e.contains("grpc_tls"), "{e}");
    // require needs a client CA.
    let mut g = grpc(&crt, Some(&key), None);
    g.client_auth = ClientAuth::Require;
    let e = err(&CollectorConfig {
        grpc_tls: Some(g),
        agent_certs: Vec::new(),
        ..cfg.clone()
    });
    assert!(e.contains("grpc_tls.client_auth"), "{e}");
    let e = err(&CollectorConfig {
        http_tls: Some(HttpTlsConfig {
            cert_file: Some(crt.clone()),
            key_file: Some(d.path().join("nokey.pem")),
        }),
        ..cfg.clone()
    });
    assert!(e.contains("http_tls.key_file") && e.contains("nokey.pem"), "{e}");
    cfg.agent_certs.push(AgentCert {
        commons: "beta".into(),
        name: "AGENT.alpha.example".into(),
    });
    assert!(err(&cfg).contains("agent_certs[1]"));
}

#[test]
fn yaml_and_flags() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("c.yml");
    std::fs::write(
        &p,
        "grpc_tls:\n  cert_file: /etc/c.crt\n  key_file: /etc/c.key\n  client_auth: require\nagent_certs:\n  - {commons: alpha, name: agent.alpha.example}\nhttp_tls: {cert_file: /etc/h.crt, key_file: /etc/h.key}\n",
    )
    .expect("write");
    let args = Args::try_parse_from([
        "csoc-collector",
        "--config",
        p.to_str().expect("utf-8"),
        "--grpc-tls-client-ca",
        "/etc/ca.crt",
        "--agent-cert",
        "beta=spiffe://csoc/beta",
        "--http-tls-key",
        "/etc/h2.key",
    ])
    .expect("args");
    let cfg = args.resolve().expect("resolve");
    let g = cfg.grpc_tls.as_ref().expect("grpc_tls");
    assert_eq!(g.cert_file.as_deref(), Some(Path::new("/etc/c.crt")));
    assert_eq!(g.client_ca_file.as_deref(), Some(Path::new("/etc/ca.crt")));
    assert_eq!(g.client_auth, ClientAuth::Require);
    assert_eq!(cfg.agent_certs.len(), 2);
    assert_eq!(cfg.agent_certs[1].name, "spiffe://csoc/beta");
    let h = cfg.http_tls.as_ref().expect("http_tls");
    assert_eq!(h.key_file.as_deref(), Some(Path::new("/etc/h2.key")));
    assert!(Args::try_parse_from(["csoc-collector", "--agent-cert", "nocommons"]).is_err());
    assert!(Args::try_parse_from(["csoc-collector", "--grpc-tls-client-auth", "always"]).is_err());
    std::fs::write(&p, "grpc_tls: {cert_file: a, client_auth: sometimes}\n").expect("write");
    let e = CollectorConfig::from_file(&p).expect_err("bad enum").to_string();
    assert!(e.contains("client_auth") || e.contains("sometimes"), "{e}");
}

#[test]
fn the_internal_token_is_recognised() {
    let p = PeerPolicy {
        internal_token: Some(crate::auth::digest("internal-token-123456")),
        ..Default::default()
    };
    assert!(p.is_internal_token("internal-token-123456"));
    assert!(!p.is_internal_token("internal-token-123457"));
    assert!(!PeerPolicy::default().is_internal_token("internal-token-123456"));
}
