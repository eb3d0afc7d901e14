//! `sluice edge`: an external edge, not a cluster member, serving the viewer URLs by
//! pull-through from a static, ordered list of upstreams (cluster nodes or other edges).
//!
//! ```text
//! GET /hls/...        pulled through (single flight, cache, failover in list order)
//! GET /watch/{name}   the player page
//! GET /healthz, /metrics
//! ```
//!
//! Plain HTTP/1.1, or with `--tls-cert/--tls-key` TLS with HTTP/2 by ALPN, as a node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sluice_cluster::command::validate_slug;

use crate::edge::{Edge, Upstream, DEFAULT_UPSTREAM_TIMEOUT};

#[derive(clap::Args, Debug)]
pub(crate) struct EdgeArgs {
    /// An upstream to pull from (a Sluice node or another edge), by base URL; repeat it
    /// for failover, first one first.
    #[arg(long = "upstream", required = true)]
    upstreams: Vec<String>,
    /// Address of the viewer listener.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// How this edge names itself to its upstreams (their metrics, loop detection).
    #[arg(long)]
    name: Option<String>,
    /// Bytes of objects and playlists kept (least recently used out first).
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    cache_bytes: u64,
    /// How long an upstream may take to answer (and to send each chunk) before the next
    /// is tried; keep it above 3 target durations (blocking playlist requests).
    #[arg(long, default_value_t = DEFAULT_UPSTREAM_TIMEOUT.as_millis() as u64)]
    upstream_timeout_ms: u64,
    /// Where the player page loads hls.js from.
    #[arg(long, default_value = crate::http::watch::DEFAULT_HLSJS_URL)]
    hlsjs_url: String,
    /// The cluster secret (a member's data_dir/cluster.secret): this edge then checks
    /// playback tokens of private channels itself and signs its upstream requests.
    /// Without it, private channels get 403 here. Use https upstreams with it.
    #[arg(long)]
    cluster_secret_file: Option<std::path::PathBuf>,
    /// With `--tls-key`: the viewer listener speaks TLS, with HTTP/2 by ALPN (Safari
    /// needs HTTP/2 for low-latency HLS) and HTTP/1.1. A PEM certificate chain.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

/// Checks an upstream URL: `http(s)://host[:port]`, no path, query or fragment.
fn upstream(url: &str) -> Result<Upstream> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--upstream {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        bail!("--upstream {url:?}: must be an http:// or https:// URL with a host");
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        bail!("--upstream {url:?}: give the base URL only (no path or query)");
    }
    Ok(Upstream::parent(url.trim_end_matches('/')))
}

pub(crate) async fn run(args: EdgeArgs) -> Result<()> {
    let upstreams = args
        .upstreams
        .iter()
        .map(|u| upstream(u))
        .collect::<Result<Vec<_>>>()?;
    let name = match &args.name {
        Some(n) => {
            validate_slug(n).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            n.clone()
        }
        None => format!("edge-{}", &crate::support::random_hex()?[..8]),
    };
    let secret: Option<Arc<str>> = match &args.cluster_secret_file {
        Some(path) => Some(Arc::from(crate::support::read_secret(path)?.as_str())),
        None => None,
    };
    let edge = Arc::new(Edge::new(
        name.clone(),
        args.cache_bytes,
        Duration::from_millis(args.upstream_timeout_ms.max(1)),
        secret.clone(),
    )?);
    let app = crate::http::external::app(&args.hlsjs_url, edge, upstreams.into(), secret);
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding http listener {}", args.http))?;
    let addr = listener.local_addr()?;
    let tls = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let serving = crate::http::serve::viewer_listener(
        listener,
        app,
        tls,
        Arc::new(crate::limits::Limits::new(Default::default())),
        stopping,
    )
    .await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, %name, upstreams = ?args.upstreams, scheme, "edge listening");
    println!(
        "Sluice edge {name} on {scheme}://{addr}, pulling from {}",
        args.upstreams.join(", ")
    );
    tokio::spawn(async move {
        crate::support::wait_for_signal().await;
        let _ = stop.send(true);
    });
    serving.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_base_urls() {
        assert_eq!(
            upstream("http://10.0.0.1:8080/").expect("valid").url,
            "http://10.0.0.1:8080"
        );
        assert!(upstream("https://edge.example").is_ok());
        for bad in [
            "10.0.0.1:8080",
            "ftp://x",
            "http://x/hls",
            "http://x?a=1",
            "http://",
        ] {
            assert!(upstream(bad).is_err(), "{bad} accepted");
        }
    }
}
