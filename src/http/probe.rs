//! The viewer route table with the real canonical path and gate in front, and handlers
//! that answer with the channel name they were given: for checking, from outside the
//! process's state, that the channel the gate authorised is the channel the router
//! served. The gate tests and the `viewer_request` fuzz target drive it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Path;
use axum::http::Request;
use axum::routing::get;
use axum::Router;
use sluice_cluster::model::PlaybackKey;
use tower::ServiceExt as _;

use crate::http::access::{protect, AccessView, Gate, PrivateChannel};
use crate::http::canonical::outside;

/// The one private channel; every other name is public.
pub(crate) const PRIVATE: &str = "news";
const PRIVATE_ID: u64 = 7;

fn key() -> PlaybackKey {
    PlaybackKey {
        key_id: "k1".into(),
        secret: "ab".repeat(32),
        created_ms: 0,
        retired_ms: None,
    }
}

struct View;
impl AccessView for View {
    fn private_channel(&self, slug: &str) -> Option<PrivateChannel> {
        (slug == PRIVATE).then(|| PrivateChannel {
            id: PRIVATE_ID,
            keys: vec![key()],
        })
    }
}

/// The router of a node's (and an external edge's) viewer interface, gated.
pub(crate) struct Probe {
    app: Router,
}

impl Probe {
    pub(crate) fn new() -> Self {
        async fn echo(Path(p): Path<Vec<(String, String)>>) -> String {
            p.into_iter()
                .find(|(k, _)| k == "channel")
                .map(|(_, v)| v)
                .unwrap_or_default()
        }
        let viewer = crate::http::ViewerRoutes {
            multivariant: get(echo),
            media_playlist: get(echo),
            object: get(echo),
            vod_file: get(echo),
            vod_object: get(echo),
        }
        .router();
        let app = outside(protect(viewer, Gate::new(Arc::new(View), Some("s".into()))));
        Self { app }
    }

    /// A valid playback token for [`PRIVATE`].
    pub(crate) fn token() -> String {
        sluice_cluster::playback::sign(&key(), PRIVATE_ID, i64::MAX / 2, None)
    }

    /// The status and, for a 2xx, the channel the handler was given; `None` when
    /// `target` is not a request target at all.
    pub(crate) async fn serve(&self, target: &str) -> Option<(u16, String)> {
        let request = Request::builder().uri(target).body(Body::empty()).ok()?;
        let response = self.app.clone().oneshot(request).await.ok()?;
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .ok()?;
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// What a viewer of an edge receives for `fetched`: the status and the body's length,
/// read through the same response conversion the listener uses (`None` when the body
/// broke off or passed `limit`).
pub(crate) async fn deliver(fetched: crate::edge::Fetched, limit: usize) -> (u16, Option<usize>) {
    use axum::response::IntoResponse as _;
    let response = fetched.into_response();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), limit).await.ok();
    (status, body.map(|b| b.len()))
}
