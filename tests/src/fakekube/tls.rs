//! HTTPS and plain HTTP on one port.
//!
//! A real apiserver speaks only HTTPS, and client-go (kubectl) reads a
//! kubeconfig's user credentials only for a TLS server: against
//! `http://...` kubectl sends no token at all. So the fake serves TLS with a
//! certificate for `127.0.0.1` and `localhost` signed by a CA generated at
//! start (the kubeconfig carries it as `certificate-authority-data`), and
//! still answers plain HTTP on the same port for quick requests with
//! [`super::FakeKube::url`]. The first byte of a connection tells them apart
//! (0x16 starts a TLS handshake record).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The generated CA (PEM, for clients) and the server's configuration.
pub(crate) struct Certs {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

impl Certs {
    pub fn generate() -> anyhow::Result<Certs> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "csoc fake kube-apiserver CA");
        ca.not_before = rcgen::date_time_ymd(2020, 1, 1);
        ca.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let ca = ca.self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        leaf.distinguished_name.push(rcgen::DnType::CommonName, "kube-apiserver");
        leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2044, 1, 1);
        let leaf = leaf.signed_by(&key, &ca, &ca_key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec()), CertificateDer::from(ca.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .context("the server certificate")?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Certs {
            ca_pem: ca.pem(),
            server: Arc::new(cfg),
        })
    }
}

/// One accepted connection, TLS or not.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections, sniffs and (for TLS) handshakes them concurrently
/// (each within 10s), and hands axum the ready ones.
pub(crate) struct DualListener {
    rx: mpsc::Receiver<(Conn, SocketAddr)>,
    addr: SocketAddr,
}

impl DualListener {
    pub fn new(listener: tokio::net::TcpListener, server: Arc<rustls::ServerConfig>) -> std::io::Result<DualListener> {
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let setup = async {
                        let mut first = [0u8; 1];
                        let n = tcp.peek(&mut first).await.ok()?;
                        if n == 1 && first[0] == 0x16 {
                            acceptor.accept(tcp).await.ok().map(|s| Conn::Tls(Box::new(s)))
                        } else {
                            Some(Conn::Plain(tcp))
                        }
                    };
                    if let Ok(Some(conn)) = tokio::time::timeout(Duration::from_secs(10), setup).await {
                        let _ = tx.send((conn, peer)).await;
                    }
                });
            }
        });
        Ok(DualListener { rx, addr })
    }
}

impl axum::serve::Listener for DualListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task lives as long as the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
