//! The HTTP listeners' acceptors: the per-address connection limit and slow-client
//! guard in front of every connection, and a log line for every refused TLS handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::Accept;
use futures_util::future::BoxFuture;
use tokio::net::TcpStream;

use crate::limits::{Guarded, Limits, Listener};

/// The HTTP listener's acceptor: per-address connection limit (a plain-HTTP client
/// over it gets a 429 before the close), TCP_NODELAY, and the slow-client guard.
#[derive(Clone)]
pub(crate) struct LimitedAcceptor {
    pub(crate) limits: Arc<Limits>,
    /// Whether refused clients get a plain-text HTTP 429 (not on a TLS port).
    pub(crate) plain: bool,
}

const REFUSED_429: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\ncache-control: no-store\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: 45\r\n\r\ntoo many connections from this address (429)\n";

impl<S: Send + 'static> Accept<TcpStream, S> for LimitedAcceptor {
    type Stream = Guarded<TcpStream>;
    type Service = S;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let limits = self.limits.clone();
        let plain = self.plain;
        Box::pin(async move {
            let _ = stream.set_nodelay(true);
            let ip = stream.peer_addr()?.ip();
            let Some(held) = limits.connection(Listener::Http, ip) else {
                if plain {
                    use tokio::io::AsyncWriteExt as _;
                    let mut stream = stream;
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        stream.write_all(REFUSED_429).await?;
                        stream.shutdown().await
                    })
                    .await;
                }
                return Err(io::Error::other("too many connections from this address"));
            };
            Ok((Guarded::new(stream, Some(held), limits), service))
        })
    }
}

/// Wraps an acceptor so a refused handshake (a foreign certificate, none, plain text)
/// is logged with the peer's address.
#[derive(Clone)]
pub(crate) struct LoggedAcceptor<A> {
    inner: A,
    what: &'static str,
}

impl<A> LoggedAcceptor<A> {
    pub(crate) fn new(inner: A, what: &'static str) -> Self {
        Self { inner, what }
    }
}

impl<A, S> Accept<TcpStream, S> for LoggedAcceptor<A>
where
    A: Accept<TcpStream, S>,
    A::Future: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(A::Stream, A::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let peer: Option<SocketAddr> = stream.peer_addr().ok();
        let what = self.what;
        let accepting = self.inner.accept(stream, service);
        Box::pin(async move {
            accepting.await.inspect_err(|e| {
                tracing::warn!(
                    peer = ?peer,
                    error = %e,
                    "{what}: TLS handshake refused"
                );
            })
        })
    }
}
