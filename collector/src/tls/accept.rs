//! The TLS accept loop shared by the gRPC and HTTP servers: accepts TCP
//! connections, runs each handshake in its own task (at most
//! [`MAX_HANDSHAKES`] at once, each within [`HANDSHAKE_TIMEOUT`]) so that a
//! slow or silent client delays nobody, logs failed handshakes with the peer
//! address, and hands finished connections to the server through a channel.
//! [`TlsIncoming`] is that channel's end: an `axum::serve::Listener` for the
//! HTTP API and, through [`TlsIncoming::into_stream`], the incoming stream of
//! tonic's `serve_with_incoming_shutdown` (tonic reads the peer certificates
//! of a `tokio_rustls::server::TlsStream` into `Request::peer_certs`).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::IngestMetrics;

/// Time limit of one handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; the loop stops accepting while full.
pub const MAX_HANDSHAKES: usize = 256;

/// Which server a loop serves (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// gRPC ingest: failures count in `ingest_refused_streams`.
    Grpc,
    /// The HTTP API.
    Http,
}

/// A server's listener: plain TCP or the TLS accept loop.
pub enum Incoming {
    /// No TLS.
    Plain(TcpListener),
    /// TLS ([`spawn`]).
    Tls(TlsIncoming),
}

/// `listener` as is (`tls` None) or behind the TLS accept loop.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    role: Role,
    metrics: Option<IngestMetrics>,
    stop: CancellationToken,
) -> std::io::Result<Incoming> {
    Ok(match tls {
        Some(config) => Incoming::Tls(spawn(listener, config, role, metrics, stop)?),
        None => Incoming::Plain(listener),
    })
}

/// Serves gRPC on `incoming` until `stop`.
pub async fn serve_grpc(
    server: tonic::transport::server::Router,
    incoming: Incoming,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    match incoming {
        Incoming::Tls(tls) => server.serve_with_incoming_shutdown(tls.into_stream(), stop.cancelled()).await,
        Incoming::Plain(l) => {
            server
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(l), stop.cancelled())
                .await
        }
    }
}

/// Serves HTTP on `incoming` until `stop` (graceful: requests in progress
/// finish).
pub async fn serve_http(app: axum::Router, incoming: Incoming, stop: CancellationToken) -> std::io::Result<()> {
    match incoming {
        Incoming::Tls(tls) => {
            axum::serve(tls, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
        Incoming::Plain(l) => {
            axum::serve(l, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    }
}

/// Connections whose handshake finished.
pub struct TlsIncoming {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// Starts the accept loop on `listener` until `stop`.
pub fn spawn(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    role: Role,
    metrics: Option<IngestMetrics>,
    stop: CancellationToken,
) -> std::io::Result<TlsIncoming> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = stop.cancelled() => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little.
                        tracing::warn!(error = %e, listen = %local, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let hs = super::REFUSED_CERT.scope(RefCell::new(None), async move {
                    let r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp).into_fallible()).await;
                    let refused = super::REFUSED_CERT.with(|s| s.borrow_mut().take());
                    (r, refused)
                });
                let (res, refused_cert) = hs.await;
                match res {
                    Ok(Ok(stream)) => {
                        let _ = tx.send((stream, peer)).await;
                    }
                    Ok(Err((err, tcp))) => {
                        log_failure(role, peer, &err, refused_cert.as_deref(), metrics.as_ref());
                        linger(tcp).await;
                    }
                    Err(_) => {
                        let err = std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no handshake within {HANDSHAKE_TIMEOUT:?}"));
                        log_failure(role, peer, &err, refused_cert.as_deref(), metrics.as_ref());
                    }
                }
            });
        }
    });
    Ok(TlsIncoming { rx, local })
}

/// After a failed handshake (whose alert rustls has written): closes our
/// side and reads what the client still sends for a moment, so that the
/// close is not a reset that would discard the alert before the client
/// reads it. (In TLS 1.3 a client finishes its side of the handshake before
/// the server has judged its certificate, and may already be sending.)
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 4096];
    let drain = async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// The rustls error inside an I/O error, if any.
pub fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// The `ingest_refused_streams` reason of a failed handshake.
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    match rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(_)) | Some(rustls::Error::NoCertificatesPresented) => "client_cert_invalid",
        _ => "tls_handshake",
    }
}

fn log_failure(role: Role, peer: SocketAddr, err: &std::io::Error, refused_cert: Option<&str>, metrics: Option<&IngestMetrics>) {
    let reason = failure_reason(err);
    if let Some(m) = metrics {
        m.refused(reason);
    }
    if role == Role::Http {
        tracing::info!(peer = %peer, error = %err, "HTTPS handshake failed");
        return;
    }
    match (rustls_error(err), refused_cert) {
        (Some(rustls::Error::InvalidCertificate(_)), names) => tracing::warn!(
            peer = %peer,
            client_cert = %names.unwrap_or("(unreadable)"),
            error = %err,
            "refused an agent's TLS handshake: client certificate rejected (it must be issued by grpc_tls.client_ca_file, be valid now and allow client authentication)"
        ),
        (Some(rustls::Error::InvalidMessage(_)), _) => tracing::warn!(
            peer = %peer,
            error = %err,
            "refused a connection on the gRPC port: not TLS (an agent needs an https:// collector URL when the collector has grpc_tls)"
        ),
        (Some(rustls::Error::AlertReceived(_)), _) => tracing::warn!(
            peer = %peer,
            error = %err,
            "an agent ended the TLS handshake: it does not accept the collector's certificate (its --tls-ca must be the CA that issued grpc_tls.cert_file, and the host it connects to, or its --tls-server-name, a name in that certificate)"
        ),
        _ => tracing::warn!(peer = %peer, error = %err, "an agent's TLS handshake failed"),
    }
}

impl TlsIncoming {
    /// The next connection; pending forever once the loop has stopped (the
    /// server's shutdown signal ends it).
    pub async fn next(&mut self) -> (TlsStream<TcpStream>, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    /// As a stream of connections for tonic's `serve_with_incoming*`.
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
        use tokio_stream::StreamExt;
        tokio_stream::wrappers::ReceiverStream::new(self.rx).map(|(s, _)| Ok(s))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.next().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
