//! The accept loop shared by the gRPC and HTTP servers, with and without
//! TLS: accepts TCP connections, runs each TLS handshake in its own task (at
//! most [`MAX_HANDSHAKES`] at once) so that a slow or silent client delays
//! nobody, logs failed handshakes with the peer address, and hands finished
//! connections to the server through a channel.
//!
//! Every connection is bounded ([`ConnLimits`], from `limits`):
//! - **`max_connections`** per listener: each connection holds a permit of
//!   a semaphore until it closes; with none left the loop stops accepting
//!   (new connections wait in the kernel's backlog) and resumes when one
//!   closes.
//! - **`header_read_timeout`**: from the TCP accept, the TLS handshake and
//!   the first bytes of the protocol (gRPC: the HTTP/2 preface and the first
//!   frame header, 33 bytes; HTTP: 16 bytes) must arrive within it, or the
//!   connection is closed. For HTTP/1, hyper's `header_read_timeout` also
//!   bounds every request head (a slowloris client that sends a byte every
//!   few seconds is closed when it runs out).
//! - **`idle_timeout`**: a connection on which nothing was read or written
//!   for that long, with no HTTP request in progress, is closed. (A gRPC
//!   connection carrying an agent stream is never idle: agents send
//!   heartbeats, and the collector closes a silent agent's stream after
//!   three heartbeat intervals.)
//!
//! The timeouts are enforced by [`Guarded`], a wrapper around the
//! connection's I/O whose reads and writes fail with `TimedOut` past them.
//! [`Incoming`] is the channel's end, served by [`serve_http`] (hyper's
//! HTTP/1 server with graceful shutdown) and [`serve_grpc`] (tonic, which
//! reads the peer certificates of a `tokio_rustls::server::TlsStream` into
//! `Request::peer_certs`; [`Guarded`] passes its connect info through).

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use super::ServerTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::metrics::IngestMetrics;

/// Time limit of one handshake when no limits are given
/// ([`ConnLimits::default`]).
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

impl Role {
    /// The bytes a client must send within `header_read_timeout`: the
    /// HTTP/2 preface (24) and a frame header (9); for HTTP, the shortest
    /// plausible request head.
    fn preface_bytes(self) -> usize {
        match self {
            Role::Grpc => 33,
            Role::Http => 16,
        }
    }
}

/// The connection limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most (0 = no limit).
    pub max_connections: usize,
    /// Handshake and first bytes (and, for HTTP/1, every request head)
    /// within this.
    pub header_read_timeout: Duration,
    /// Closed after this long without I/O or a request in progress (zero:
    /// never).
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 0,
            header_read_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: Duration::ZERO,
        }
    }
}

impl From<&Limits> for ConnLimits {
    fn from(l: &Limits) -> Self {
        ConnLimits {
            max_connections: l.max_connections,
            header_read_timeout: if l.header_read_timeout.is_zero() {
                HANDSHAKE_TIMEOUT
            } else {
                l.header_read_timeout
            },
            idle_timeout: l.idle_timeout,
        }
    }
}

/// A connection's I/O with its slot of `max_connections` and its
/// deadlines: until `preface` bytes were read, `header_read_timeout` from
/// the accept; then `idle_timeout` after the last read or write while no
/// request is in progress (`busy`). Past a deadline, a pending read or
/// write fails with `TimedOut` (the server then drops the connection).
pub struct Guarded<S> {
    inner: S,
    _permit: Option<OwnedSemaphorePermit>,
    timer: Pin<Box<Sleep>>,
    accepted: Instant,
    preface_left: usize,
    last: Instant,
    limits: ConnLimits,
    busy: Arc<AtomicUsize>,
}

impl<S> Guarded<S> {
    fn new(inner: S, permit: Option<OwnedSemaphorePermit>, accepted: Instant, preface: usize, limits: ConnLimits) -> Self {
        Guarded {
            inner,
            _permit: permit,
            timer: Box::pin(tokio::time::sleep_until(accepted + limits.header_read_timeout)),
            accepted,
            preface_left: preface,
            last: Instant::now(),
            limits,
            busy: Arc::default(),
        }
    }

    /// Requests in progress on this connection (while non-zero, the
    /// connection is not idle).
    pub fn busy(&self) -> Arc<AtomicUsize> {
        self.busy.clone()
    }

    fn read_some(&mut self, n: usize) {
        if n > 0 {
            self.last = Instant::now();
            self.preface_left = self.preface_left.saturating_sub(n);
        }
    }

    /// Pending, or the error of a deadline passed.
    /// After a write: bytes written count as activity; a pending write
    /// waits no longer than the connection's deadline.
    fn wrote(&mut self, cx: &mut Context<'_>, r: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        loop {
            let deadline = if self.preface_left > 0 {
                self.accepted + self.limits.header_read_timeout
            } else if self.limits.idle_timeout.is_zero() {
                return Poll::Pending;
            } else {
                self.last + self.limits.idle_timeout
            };
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.preface_left > 0 {
                return Poll::Ready(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("nothing usable within header_read_timeout {:?}", self.limits.header_read_timeout),
                ));
            }
            if self.busy.load(Ordering::Acquire) > 0 {
                // A request in progress: not idle; look again later.
                self.last = Instant::now();
                continue;
            }
            return Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("idle for idle_timeout {:?}", self.limits.idle_timeout),
            ));
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                self.read_some(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(cx, r)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.poll_deadline(cx).map(Err),
            r => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

type Conns<S> = mpsc::Receiver<(Guarded<S>, SocketAddr)>;

/// A server's connections: plain TCP or TLS, each [`Guarded`].
pub enum Incoming {
    /// No TLS.
    Plain(Conns<TcpStream>),
    /// TLS.
    Tls(Conns<TlsStream<TcpStream>>),
}

/// Starts the accept loop on `listener` (TLS if `tls`) until `stop`. Each
/// handshake uses the configuration `tls` holds when it begins (reloaded
/// certificates apply to new connections).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    role: Role,
    metrics: Option<IngestMetrics>,
    limits: ConnLimits,
    stop: CancellationToken,
) -> std::io::Result<Incoming> {
    Ok(match tls {
        Some(tls) => {
            let timeout = limits.header_read_timeout;
            Incoming::Tls(spawn(listener, role, limits, stop, move |tcp, peer| {
                let acceptor = TlsAcceptor::from(tls.current());
                let metrics = metrics.clone();
                async move {
                    let hs = super::REFUSED_CERT.scope(RefCell::new(None), async move {
                        let r = tokio::time::timeout(timeout, acceptor.accept(tcp).into_fallible()).await;
                        let refused = super::REFUSED_CERT.with(|s| s.borrow_mut().take());
                        (r, refused)
                    });
                    let (res, refused_cert) = hs.await;
                    match res {
                        Ok(Ok(stream)) => Some(stream),
                        Ok(Err((err, tcp))) => {
                            log_failure(role, peer, &err, refused_cert.as_deref(), metrics.as_ref());
                            linger(tcp).await;
                            None
                        }
                        Err(_) => {
                            let err = std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no handshake within header_read_timeout {timeout:?}"),
                            );
                            log_failure(role, peer, &err, refused_cert.as_deref(), metrics.as_ref());
                            None
                        }
                    }
                }
            })?)
        }
        None => Incoming::Plain(spawn(listener, role, limits, stop, |tcp, _| async move { Some(tcp) })?),
    })
}

/// The accept loop: a `max_connections` permit (waiting while none is
/// free), a handshake slot, the accept; the handshake runs in a task of its
/// own, so a slow client never holds up the loop.
fn spawn<S, F, Fut>(
    listener: TcpListener,
    role: Role,
    limits: ConnLimits,
    stop: CancellationToken,
    handshake: F,
) -> std::io::Result<Conns<S>>
where
    S: Send + 'static,
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = Option<S>> + Send + 'static,
{
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let conns = (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
    tokio::spawn(async move {
        loop {
            let conn_permit = match &conns {
                None => None,
                Some(c) => tokio::select! {
                    _ = stop.cancelled() => return,
                    p = c.clone().acquire_owned() => match p {
                        Ok(p) => Some(p),
                        Err(_) => return,
                    },
                },
            };
            let hs_permit = tokio::select! {
                _ = stop.cancelled() => return,
                p = handshakes.clone().acquire_owned() => match p {
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
            let accepted = Instant::now();
            let _ = tcp.set_nodelay(true);
            let hs = handshake(tcp, peer);
            let tx = tx.clone();
            tokio::spawn(async move {
                let stream = hs.await;
                drop(hs_permit);
                if let Some(s) = stream {
                    let g = Guarded::new(s, conn_permit, accepted, role.preface_bytes(), limits);
                    let _ = tx.send((g, peer)).await;
                }
            });
        }
    });
    Ok(rx)
}

/// Serves gRPC on `incoming` until `stop`.
pub async fn serve_grpc(
    server: tonic::transport::server::Router,
    incoming: Incoming,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    use tokio_stream::StreamExt;
    match incoming {
        Incoming::Tls(rx) => {
            let s = tokio_stream::wrappers::ReceiverStream::new(rx).map(|(s, _)| Ok::<_, std::io::Error>(s));
            server.serve_with_incoming_shutdown(s, stop.cancelled()).await
        }
        Incoming::Plain(rx) => {
            let s = tokio_stream::wrappers::ReceiverStream::new(rx).map(|(s, _)| Ok::<_, std::io::Error>(s));
            server.serve_with_incoming_shutdown(s, stop.cancelled()).await
        }
    }
}

/// Serves HTTP/1 on `incoming` until `stop` (graceful: requests in progress
/// finish), with hyper's `header_read_timeout` on every request head.
pub async fn serve_http(app: axum::Router, incoming: Incoming, limits: ConnLimits, stop: CancellationToken) -> std::io::Result<()> {
    match incoming {
        Incoming::Tls(rx) => serve_http_on(app, rx, limits, stop).await,
        Incoming::Plain(rx) => serve_http_on(app, rx, limits, stop).await,
    }
    Ok(())
}

async fn serve_http_on<S>(app: axum::Router, mut rx: Conns<S>, limits: ConnLimits, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (io, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            c = rx.recv() => match c {
                Some(c) => c,
                None => break,
            },
        };
        let svc = Busy {
            inner: hyper_util::service::TowerToHyperService::new(app.clone()),
            busy: io.busy(),
        };
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection closed");
            }
        });
    }
    drop(rx);
    graceful.shutdown().await;
}

/// Counts the requests in progress on a connection (see [`Guarded`]).
#[derive(Clone)]
struct Busy<T> {
    inner: T,
    busy: Arc<AtomicUsize>,
}

struct BusyGuard(Arc<AtomicUsize>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<T, R> hyper::service::Service<R> for Busy<T>
where
    T: hyper::service::Service<R>,
    T::Future: Send + 'static,
{
    type Response = T::Response;
    type Error = T::Error;
    type Future = Pin<Box<dyn Future<Output = Result<T::Response, T::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        self.busy.fetch_add(1, Ordering::AcqRel);
        let guard = BusyGuard(self.busy.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
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
