//! Certificate rotation without a restart: the collector re-reads its TLS
//! files when they change. The gRPC listener's files are replaced by rename
//! (as certbot and most tools do), the HTTP listener's as a Kubernetes
//! Secret volume is updated (the kubelet swaps the `..data` symlink), and
//! each handshake is checked for the certificate it gets. Certificates are
//! made with rcgen in the test's directory; loopback only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use csoc_tests::{Proc, bin, collector_args, free_port, metric_value, wait_for};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// How long a rotation may take to show (the collector polls every 1s here).
const WITHIN: Duration = Duration::from_secs(15);

/// A CA issuing certificates in memory.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// An issued certificate: PEM of the certificate and of its key, and DER.
#[derive(Clone)]
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> anyhow::Result<Ca> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        let cert = p.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    fn issue(&self, cn: &str, eku: ExtendedKeyUsagePurpose) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = vec![SanType::DnsName(cn.try_into()?), SanType::IpAddress([127, 0, 0, 1].into())];
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }

    fn server(&self, cn: &str) -> anyhow::Result<Issued> {
        self.issue(cn, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// Writes `content` to `path` through a temporary file and a rename.
fn replace(path: &Path, content: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A directory laid out as the kubelet lays out a Secret volume:
/// `tls.crt -> ..data/tls.crt`, `..data -> ..<version>`; an update writes a
/// new version directory and renames a new `..data` symlink over the old.
struct SecretVolume {
    dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    fn new(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<SecretVolume> {
        std::fs::create_dir_all(dir)?;
        let mut v = SecretVolume {
            dir: dir.to_path_buf(),
            version: 0,
        };
        v.update(files)?;
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name))?;
        }
        Ok(v)
    }

    fn update(&mut self, files: &[(&str, &str)]) -> anyhow::Result<()> {
        self.version += 1;
        let name = format!("..2025_01_01_00_00_{:02}.{}", self.version, 1000 + self.version);
        let vdir = self.dir.join(&name);
        std::fs::create_dir(&vdir)?;
        for (f, content) in files {
            std::fs::write(vdir.join(f), content)?;
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp)?;
        std::fs::rename(&tmp, self.dir.join("..data"))?;
        Ok(())
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

/// Accepts any server certificate (the test compares it itself).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A new TLS connection to `addr` (ALPN `alpn`, optionally with a client
/// certificate); returns the server's leaf certificate, and whether the
/// server accepted the connection past the handshake (for gRPC: it answers
/// the HTTP/2 preface with its SETTINGS; a refused client certificate ends
/// the connection with an alert instead).
fn connect(addr: &str, alpn: &[u8], client: Option<&Issued>) -> anyhow::Result<(Vec<u8>, bool)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut cfg = match client {
        Some(c) => {
            let certs = vec![CertificateDer::from(c.der.clone())];
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).context("client key")?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let conn = rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost".to_string())?)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .context("no server certificate")?;
    let accepted = if alpn == b"h2" {
        // The client preface and an empty SETTINGS frame.
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let mut buf = [0u8; 64];
        tls.write_all(&hello).is_ok() && matches!(tls.read(&mut buf), Ok(n) if n > 0)
    } else {
        true
    };
    Ok((leaf, accepted))
}

/// Which of the named certificates `der` is.
fn which<'a>(der: &[u8], known: &[(&'a str, &Issued)]) -> &'a str {
    known.iter().find(|(_, c)| c.der == der).map(|(n, _)| *n).unwrap_or("unknown")
}

/// Waits until a new connection to `addr` gets `want`; returns how long it
/// took.
fn until_served(addr: &str, alpn: &[u8], want: &Issued, known: &[(&str, &Issued)]) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        let last = match connect(addr, alpn, None) {
            Ok((der, _)) if der == want.der => return Ok(t0.elapsed()),
            Ok((der, _)) => which(&der, known).to_string(),
            Err(e) => format!("error: {e}"),
        };
        if t0.elapsed() > WITHIN {
            bail!("{addr}: still {last} {WITHIN:?} after the rotation");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metrics(client: &reqwest::blocking::Client, http: &str) -> anyhow::Result<String> {
    Ok(client.get(format!("{http}/metrics")).send()?.error_for_status()?.text()?)
}

fn reloads(text: &str, listener: &str, result: &str) -> f64 {
    metric_value(
        text,
        &format!("csoc_collector_tls_reloads_total{{listener=\"{listener}\",result=\"{result}\"}}"),
    )
    .unwrap_or(-1.0)
}

#[cfg(unix)]
#[test]
fn rotated_certificates_and_client_cas_are_served_without_a_restart_and_broken_files_keep_the_old_ones() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ca = Ca::new("csoc")?;
    let (a, b, c) = (ca.server("localhost")?, ca.server("localhost")?, ca.server("localhost")?);
    let known = [("A", &a), ("B", &b), ("C", &c)];
    let agents_x = Ca::new("agents-x")?;
    let agents_y = Ca::new("agents-y")?;
    let agent_x = agents_x.issue("agent.x.example", ExtendedKeyUsagePurpose::ClientAuth)?;
    let agent_y = agents_y.issue("agent.y.example", ExtendedKeyUsagePurpose::ClientAuth)?;

    // gRPC: plain files, replaced by rename. HTTP: a Secret volume.
    let grpc = d.join("grpc");
    std::fs::create_dir(&grpc)?;
    let (g_crt, g_key, g_ca) = (grpc.join("tls.crt"), grpc.join("tls.key"), grpc.join("ca.crt"));
    std::fs::write(&g_crt, &a.cert_pem)?;
    std::fs::write(&g_key, &a.key_pem)?;
    std::fs::write(&g_ca, agents_x.pem())?;
    let mut secret = SecretVolume::new(&d.join("http"), &[("tls.crt", &a.cert_pem), ("tls.key", &a.key_pem)])?;

    let (http_port, grpc_port) = (free_port(), free_port());
    let paths: Vec<String> = [&g_crt, &g_key, &g_ca].iter().map(|p| p.display().to_string()).collect();
    let (s_crt, s_key) = (secret.path("tls.crt"), secret.path("tls.key"));
    let flags = [
        "--tls-reload-interval",
        "1s",
        "--grpc-tls-cert",
        &paths[0],
        "--grpc-tls-key",
        &paths[1],
        "--grpc-tls-client-ca",
        &paths[2],
        "--http-tls-cert",
        &s_crt,
        "--http-tls-key",
        &s_key,
    ];
    let args = collector_args(d, http_port, grpc_port, &flags);
    let proc = Proc::start(d, "collector", &bin("csoc-collector"), &args)?;
    let http = format!("https://127.0.0.1:{http_port}");
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes())?)
        .timeout(Duration::from_secs(10))
        .build()?;
    wait_for("collector /-/ready over HTTPS", Duration::from_secs(60), || {
        client
            .get(format!("{http}/-/ready"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", proc.log_text()))?;
    let (h, g) = (format!("127.0.0.1:{http_port}"), format!("127.0.0.1:{grpc_port}"));

    // A on both; the gRPC port takes agent certificates from CA X only.
    ensure!(which(&connect(&h, b"http/1.1", None)?.0, &known) == "A", "HTTP starts with A");
    ensure!(which(&connect(&g, b"h2", None)?.0, &known) == "A", "gRPC starts with A");
    ensure!(connect(&g, b"h2", Some(&agent_x))?.1, "an agent certificate from CA X is accepted");
    ensure!(!connect(&g, b"h2", Some(&agent_y))?.1, "an agent certificate from CA Y is refused");

    // Rotation to B: gRPC by rename (and the client CA becomes Y), HTTP by
    // a ..data symlink swap.
    replace(&g_crt, &b.cert_pem)?;
    replace(&g_key, &b.key_pem)?;
    replace(&g_ca, &agents_y.pem())?;
    secret.update(&[("tls.crt", &b.cert_pem), ("tls.key", &b.key_pem)])?;
    let rotated = Instant::now();
    until_served(&g, b"h2", &b, &known)?;
    let g_took = rotated.elapsed();
    until_served(&h, b"http/1.1", &b, &known)?;
    let h_took = rotated.elapsed();
    ensure!(
        wait_for("the new client CA", WITHIN, || connect(&g, b"h2", Some(&agent_y))
            .ok()
            .filter(|r| r.1))
        .is_ok(),
        "after the rotation an agent certificate from CA Y is accepted"
    );
    ensure!(!connect(&g, b"h2", Some(&agent_x))?.1, "and one from CA X is refused");
    let code = client.get(format!("{http}/-/healthy")).send()?.status();
    ensure!(code.is_success(), "HTTPS with the CA works on a new connection: {code}");
    let m = metrics(&client, &http)?;
    ensure!(
        reloads(&m, "grpc", "success") >= 1.0 && reloads(&m, "http", "success") >= 1.0,
        "reloads counted:\n{m}"
    );
    ensure!(
        reloads(&m, "grpc", "failure") == 0.0 && reloads(&m, "http", "failure") == 0.0,
        "a rotation by two renames is not a failure:\n{m}"
    );

    // Broken files: the gRPC certificate is garbage, the HTTP Secret has a
    // key that is not the certificate's. Both keep serving B, the failure
    // is logged and counted.
    replace(
        &g_crt,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )?;
    secret.update(&[("tls.crt", &c.cert_pem), ("tls.key", &a.key_pem)])?;
    let failed = wait_for("both failures counted", WITHIN, || {
        let m = metrics(&client, &http).ok()?;
        (reloads(&m, "grpc", "failure") == 1.0 && reloads(&m, "http", "failure") == 1.0).then_some(m)
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", proc.log_text()))?;
    ensure!(
        metric_value(&failed, "csoc_collector_tls_last_reload_successful{listener=\"grpc\"}") == Some(0.0),
        "the gauge says the files on disk are not in service:\n{failed}"
    );
    std::thread::sleep(Duration::from_secs(2)); // more polls: still one failure each
    let m = metrics(&client, &http)?;
    ensure!(
        reloads(&m, "grpc", "failure") == 1.0 && reloads(&m, "http", "failure") == 1.0,
        "the same broken files are reported once:\n{m}"
    );
    ensure!(which(&connect(&g, b"h2", None)?.0, &known) == "B", "gRPC keeps B");
    ensure!(which(&connect(&h, b"http/1.1", None)?.0, &known) == "B", "HTTP keeps B");
    let log = proc.log_text();
    ensure!(
        log.contains("still serving the previous certificate") && log.contains("grpc_tls.cert_file") && log.contains("http_tls.key_file"),
        "the failures are logged, naming the field:\n{log}"
    );
    for key in [&a.key_pem, &b.key_pem, &c.key_pem] {
        let body = key.lines().nth(1).unwrap_or("-");
        ensure!(!log.contains(body), "no key material in the log");
    }

    // Fixed: C on both.
    replace(&g_crt, &c.cert_pem)?;
    replace(&g_key, &c.key_pem)?;
    secret.update(&[("tls.crt", &c.cert_pem), ("tls.key", &c.key_pem)])?;
    until_served(&g, b"h2", &c, &known)?;
    until_served(&h, b"http/1.1", &c, &known)?;
    let m = wait_for("the second successes counted", WITHIN, || {
        let m = metrics(&client, &http).ok()?;
        (reloads(&m, "grpc", "success") >= 2.0 && reloads(&m, "http", "success") >= 2.0).then_some(m)
    })?;
    ensure!(
        metric_value(&m, "csoc_collector_tls_last_reload_successful{listener=\"http\"}") == Some(1.0),
        "back in service:\n{m}"
    );
    ensure!(
        proc.log_text().matches("TLS certificate reloaded").count() >= 4,
        "each reload is logged:\n{}",
        proc.log_text()
    );
    eprintln!(
        "rotation A -> B seen by new connections within: gRPC (rename) {:.1}s, HTTP (..data swap) {:.1}s (tls_reload_interval 1s)",
        g_took.as_secs_f64(),
        h_took.as_secs_f64()
    );
    Ok(())
}
