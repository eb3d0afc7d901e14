//! Entry points for the fuzz targets in `fuzz/`: what an attacker reaches, driven the
//! way the listeners drive it. Not part of the interface; nothing else calls these.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::edge::{Edge, Upstream};
use crate::http::probe::{self, Probe, PRIVATE};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// A viewer's request target through the canonical path, the gate and the router.
/// Panics when the private channel is served to a request that does not carry its
/// token (percent-encoded or not). An odd first byte puts `/t/<a valid token>` before
/// the rest, so the fuzzer reaches the token routes without forging one.
pub fn viewer_request(data: &[u8]) {
    static PROBE: OnceLock<(Probe, String)> = OnceLock::new();
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let (probe, token) = PROBE.get_or_init(|| (Probe::new(), Probe::token()));
    let target = if flags & 1 == 1 {
        format!("/t/{token}{rest}")
    } else {
        rest.to_string()
    };
    let target = target.as_str();
    let Some((status, channel)) = runtime().block_on(probe.serve(target)) else {
        return;
    };
    if (200..300).contains(&status) && channel == PRIVATE {
        let decoded = percent_encoding::percent_decode_str(target).decode_utf8_lossy();
        assert!(
            decoded.contains(token.as_str()),
            "served the private channel without its token: {target:?}"
        );
    }
}

/// One upstream answer, as raw bytes on a real socket, into an edge: two viewers
/// asking at once (one fill), then a third (the cache, or a second fill). The first
/// byte picks the object asked for, the cache size and whether the upstream is the
/// origin; the rest is what the upstream sends before it closes the connection.
/// Every answer must end, whole or cut off, within the edge's timeouts.
///
/// The edges live across runs (building an HTTP client is most of a run otherwise):
/// each run asks for its own URL, from an upstream base of its own among 4,096 (a
/// failed upstream is skipped for a second), so runs do not see each other's answers.
pub fn edge_upstream(data: &[u8]) {
    static LISTENER: OnceLock<(std::net::TcpListener, u16)> = OnceLock::new();
    static EDGES: OnceLock<[Arc<Edge>; 2]> = OnceLock::new();
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Some((&shape, answer)) = data.split_first() else {
        return;
    };
    let (listener, port) = LISTENER.get_or_init(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        l.set_nonblocking(true).expect("non-blocking");
        let port = l.local_addr().expect("an address").port();
        (l, port)
    });
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = match shape & 3 {
        0 => format!("/hls/c/source/index.m3u8?_HLS_msn=3&_HLS_part=1&run={run}"),
        1 => format!("/hls/c/source/3/0.m4s?run={run}"),
        2 => format!("/vod/c/1/recording.mp4?run={run}"),
        _ => format!("/hls/c/index.m3u8?run={run}"),
    };
    let chain = [Upstream {
        url: format!("http://127.0.0.1:{port}/u{}", run % 4096),
        origin: shape & 8 != 0,
    }];
    let answer = answer.to_vec();
    runtime().block_on(async move {
        // 128 KiB or 8 MiB objects kept whole: small ones make long bodies oversized.
        let edges = EDGES.get_or_init(|| {
            [1 << 20, 64 << 20].map(|cache_bytes| {
                Arc::new(
                    Edge::new("fuzz".into(), cache_bytes, Duration::from_secs(2), None)
                        .expect("an edge"),
                )
            })
        });
        let edge = &edges[usize::from(shape >> 2 & 1)];
        let std_listener = listener.try_clone().expect("the listener");
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("a listener");
        let upstream = tokio::spawn(serve_raw(listener, answer));
        let limit = 64 << 20;
        let (a, b) = tokio::join!(
            edge.fetch(&chain, &path, None),
            edge.fetch(&chain, &path, None)
        );
        let (a, b) = tokio::join!(probe::deliver(a, limit), probe::deliver(b, limit));
        let _ = probe::deliver(edge.fetch(&chain, &path, None).await, limit).await;
        upstream.abort();
        // Viewers of one fill see one answer.
        if a.1.is_some() && b.1.is_some() {
            assert_eq!(a, b, "two viewers of one fill saw different answers");
        }
    });
}

/// Answers every connection with `answer`, then closes it.
async fn serve_raw(listener: tokio::net::TcpListener, answer: Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    while let Ok((mut socket, _)) = listener.accept().await {
        let answer = answer.clone();
        tokio::spawn(async move {
            // The request head, then the answer whatever it asked.
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = socket.write_all(&answer).await;
            let _ = socket.shutdown().await;
        });
    }
}
