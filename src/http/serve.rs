//! The node's two listeners as futures to run until shutdown: the cluster listener
//! (Raft RPC and the cluster API, behind mutual TLS when configured) and the viewer
//! and admin listener (HTTPS when a certificate is set), with the per-address limits,
//! slow-client guard and TCP_NODELAY in front of every connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::accept::{LimitedAcceptor, LoggedAcceptor};
use crate::limits::Limits;

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves the cluster router until `stop`. With `tls`, mutual TLS: a peer whose
/// certificate the cluster CA did not sign is refused in the handshake (and logged),
/// before any request is read.
pub(crate) fn cluster_listener(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<rustls::ServerConfig>,
    stop: watch::Receiver<bool>,
) -> Result<BoxFuture<'static, ()>> {
    let Some(config) = tls else {
        return Ok(Box::pin(async move {
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped(stop))
                .await;
        }));
    };
    use axum_server::accept::NoDelayAcceptor;
    let acceptor = LoggedAcceptor::new(
        axum_server::tls_rustls::RustlsAcceptor::new(
            axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config)),
        )
        .acceptor(NoDelayAcceptor),
        "cluster listener",
    );
    let server_handle = axum_server::Handle::new();
    let stopping = server_handle.clone();
    let listener = listener.into_std()?;
    let serve = async move {
        let served = match axum_server::from_tcp(listener) {
            Ok(server) => {
                server
                    .acceptor(acceptor)
                    .handle(server_handle)
                    .serve(app.into_make_service())
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "cluster listener failed");
        }
    };
    let stopper = async move {
        stopped(stop).await;
        stopping.graceful_shutdown(Some(Duration::from_secs(2)));
    };
    Ok(Box::pin(async move {
        tokio::join!(serve, stopper);
    }))
}

/// Serves the viewer and admin router until `stop`; HTTPS with the certificate and key
/// files when given.
pub(crate) async fn viewer_listener(
    listener: tokio::net::TcpListener,
    app: Router,
    tls_files: Option<(&Path, &Path)>,
    limits: Arc<Limits>,
    stop: watch::Receiver<bool>,
) -> Result<BoxFuture<'static, ()>> {
    let tls = match tls_files {
        Some((cert, key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| format!("loading TLS {} / {}", cert.display(), key.display()))?,
        ),
        None => None,
    };
    let app = super::canonical::outside(app).into_make_service_with_connect_info::<SocketAddr>();
    let server_handle = axum_server::Handle::new();
    let listener = listener.into_std()?;
    let limited = |plain| LimitedAcceptor {
        limits: limits.clone(),
        plain,
    };
    let (acceptor_tls, acceptor_plain) = (limited(false), limited(true));
    let limits_config = limits.config.clone();
    let serving = server_handle.clone();
    let serve = async move {
        let result = match tls {
            // TCP_NODELAY: a response's last few bytes must not wait for the viewer's
            // delayed ACK (40 ms on Linux), a part-sized stall.
            Some(config) => match axum_server::from_tcp_rustls(listener, config) {
                Ok(server) => {
                    let mut server = server.map(|tls| tls.acceptor(acceptor_tls));
                    super::tune_http(server.http_builder(), &limits_config);
                    server.handle(serving).serve(app).await
                }
                Err(e) => Err(e),
            },
            None => match axum_server::from_tcp(listener) {
                Ok(server) => {
                    let mut server = server.acceptor(acceptor_plain);
                    super::tune_http(server.http_builder(), &limits_config);
                    server.handle(serving).serve(app).await
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "http listener failed");
        }
    };
    let stopper = async move {
        stopped(stop).await;
        server_handle.graceful_shutdown(Some(Duration::from_secs(2)));
    };
    Ok(Box::pin(async move {
        tokio::join!(serve, stopper);
    }))
}
