//! Accepting connections for both listeners: TCP_NODELAY on every accepted
//! socket (small gRPC frames would otherwise wait on Nagle's algorithm),
//! and, with TLS, handshakes off the accept loop with a time limit. A
//! plaintext client on a TLS port is told so in its own protocol rather
//! than left with a handshake error.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::tls::ReloadableTls;

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting to be served.
const BACKLOG: usize = 1024;
/// Most TLS handshakes in progress at once: each holds a socket for up to
/// the handshake timeout, so clients that connect and stall could
/// otherwise use up every file descriptor.
const MAX_PENDING_HANDSHAKES: usize = 512;

/// An accepted connection, plain or TLS.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// What is known of a connection's peer.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        let (tcp, tls) = match self {
            Conn::Plain(tcp) => (tcp, false),
            Conn::Tls(stream) => (stream.get_ref().0, true),
        };
        ConnInfo {
            remote_addr: tcp.peer_addr().ok(),
            tls,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Accepts on `listener` until `stop`, handing out ready connections (TLS
/// ones once their handshake is done).
pub fn accept(
    listener: TcpListener,
    tls: Option<Arc<ReloadableTls>>,
    stop: CancellationToken,
) -> mpsc::Receiver<(Conn, SocketAddr)> {
    let (ready, receiver) = mpsc::channel(BACKLOG);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let ready = ready.clone();
            match &tls {
                None => {
                    if ready.send((Conn::Plain(tcp), peer)).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let Ok(slot) = handshakes.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "too many TLS handshakes in progress; connection dropped");
                        continue;
                    };
                    let acceptor = tls.acceptor();
                    tokio::spawn(async move {
                        let _slot = slot;
                        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                            if !starts_like_tls(&tcp).await {
                                refuse_plaintext(tcp).await;
                                return None;
                            }
                            match acceptor.accept(tcp).await {
                                Ok(stream) => Some(stream),
                                Err(e) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    None
                                }
                            }
                        });
                        if let Ok(Some(stream)) = handshake.await {
                            let _ = ready.send((Conn::Tls(Box::new(stream)), peer)).await;
                        }
                    });
                }
            }
        }
    });
    receiver
}

/// Whether the first byte is a TLS handshake record (0x16).
async fn starts_like_tls(tcp: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(tcp.peek(&mut first).await, Ok(1) if first[0] == 0x16)
}

/// What a plaintext client of a TLS port is told.
const PLAINTEXT_REFUSAL: &str = "this retouchd port requires TLS: connect with https://";

/// Tells a plaintext client that this port speaks TLS, in its protocol: to
/// an HTTP/2 (gRPC) client every call answers UNAVAILABLE with that
/// message; anything else gets an HTTP/1.1 400.
async fn refuse_plaintext(mut tcp: TcpStream) {
    const MESSAGE: &[u8] = PLAINTEXT_REFUSAL.as_bytes();
    let mut head = [0u8; 3];
    if matches!(tcp.peek(&mut head).await, Ok(3) if &head == b"PRI") {
        let refuse = hyper::service::service_fn(|_request| async {
            hyper::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "14")
                .header("grpc-message", PLAINTEXT_REFUSAL)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
        });
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), refuse)
            .await;
        return;
    }
    let reply = {
        let mut response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            MESSAGE.len() + 1
        )
        .into_bytes();
        response.extend_from_slice(MESSAGE);
        response.push(b'\n');
        response
    };
    let _ = tcp.write_all(&reply).await;
    let _ = tcp.shutdown().await;
}

/// The accepted connections of [`accept`] as an axum listener.
pub struct AcceptedListener {
    connections: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

impl AcceptedListener {
    /// Serves `connections`, accepted on `local`.
    pub fn new(connections: mpsc::Receiver<(Conn, SocketAddr)>, local: SocketAddr) -> Self {
        AcceptedListener { connections, local }
    }
}

impl axum::serve::Listener for AcceptedListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.connections.recv().await {
            Some(accepted) => accepted,
            // The accept loop stopped: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
