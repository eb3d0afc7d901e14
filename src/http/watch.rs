//! `/watch/{channel}`: a player page. hls.js in low-latency mode where Media Source
//! Extensions exist, the browser's own HLS (Safari, iOS) otherwise; the page shows the
//! live latency and exposes it as `window.sluicePlayer` for tests and operators.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sluice_cluster::command::validate_slug;

/// The player script the page loads: the node's own copy (it plays on a network without
/// internet) unless the operator names another (`player.hlsjs_url`, e.g. a CDN).
pub(crate) const DEFAULT_HLSJS_URL: &str = "/assets/hls-1.7.4.min.js";
/// hls.js 1.7.4's `dist/hls.min.js`, unmodified (Apache-2.0, `src/http/player/LICENSE`).
const HLSJS: &[u8] = include_bytes!("player/hls.min.js");

pub(crate) fn router(hlsjs_url: Arc<str>) -> Router {
    Router::new()
        .route("/watch/{channel}", get(page))
        .with_state(hlsjs_url)
        .route(
            DEFAULT_HLSJS_URL,
            get(player_script).layer(tower_http::compression::CompressionLayer::new()),
        )
}

/// The built-in hls.js: its URL names its version, so it is kept for a year.
async fn player_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        HLSJS,
    )
        .into_response()
}

/// Escapes text for an HTML attribute or a JavaScript string inside the page.
fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "\\u003c".to_string(),
            '>' => "\\u003e".to_string(),
            '&' => "\\u0026".to_string(),
            '"' => "\\u0022".to_string(),
            '\'' => "\\u0027".to_string(),
            '\\' => "\\\\".to_string(),
            c => c.to_string(),
        })
        .collect()
}

async fn page(State(hlsjs_url): State<Arc<str>>, Path(channel): Path<String>) -> Response {
    if validate_slug(&channel).is_err() {
        return (StatusCode::NOT_FOUND, "no such channel\n").into_response();
    }
    let html = PAGE
        .replace("{{CHANNEL}}", &channel)
        .replace("{{HLSJS_URL}}", &escape(&hlsjs_url));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        html,
    )
        .into_response()
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{CHANNEL}} · Sluice</title>
<style>
  body { margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }
  video { display: block; width: 100%; max-height: 90vh; background: #000; }
  #bar { padding: 6px 10px; display: flex; gap: 16px; }
</style>
</head>
<body>
<video id="video" controls autoplay muted playsinline></video>
<div id="bar"><span>{{CHANNEL}}</span><span>latency <b id="latency">–</b></span><span id="state">loading</span></div>
<script src="{{HLSJS_URL}}"></script>
<script>
(function () {
  // A private channel's page is opened with ?token=...: the token goes in front of the
  // path, and every URL the playlists lead to keeps it.
  var token = new URLSearchParams(location.search).get("token");
  var url = (token ? "/t/" + encodeURIComponent(token) : "") + "/hls/{{CHANNEL}}/index.m3u8";
  var video = document.getElementById("video");
  var stats = { latency: null, fatal: null, state: "loading", native: false };
  window.sluicePlayer = stats;
  function show(state) { stats.state = state; document.getElementById("state").textContent = state; }
  function start() {
    if (window.Hls && Hls.isSupported()) {
      // A live part or segment that has not arrived in 20 s is not coming (a request
      // stuck on a node that went away): retry it instead of waiting hls.js's default
      // two minutes with the picture frozen.
      // Behind its target (PART-HOLD-BACK), hls.js may play up to 1.5x fast to catch
      // up; by default it never does and stays wherever it joined.
      var hls = new Hls({
        lowLatencyMode: true,
        maxLiveSyncPlaybackRate: 1.5,
        backBufferLength: 30,
        fragLoadPolicy: { default: {
          maxTimeToFirstByteMs: 8000, maxLoadTimeMs: 20000,
          timeoutRetry: { maxNumRetry: 4, retryDelayMs: 0, maxRetryDelayMs: 0 },
          errorRetry: { maxNumRetry: 6, retryDelayMs: 500, maxRetryDelayMs: 4000 }
        } }
      });
      window.sluiceHls = hls;
      hls.on(Hls.Events.ERROR, function (_, data) {
        if (!data.fatal) return;
        stats.fatal = data.type + ": " + data.details;
        show("error: " + data.details + ", retrying");
        hls.destroy();
        setTimeout(start, 2000);
      });
      hls.on(Hls.Events.MANIFEST_PARSED, function () { show("playing"); video.play().catch(function () {}); });
      hls.loadSource(url);
      hls.attachMedia(video);
      setInterval(function () {
        if (typeof hls.latency === "number" && isFinite(hls.latency) && hls.latency > 0) {
          stats.latency = hls.latency;
          document.getElementById("latency").textContent = hls.latency.toFixed(2) + " s";
        }
      }, 500);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      stats.native = true;
      video.src = url;
      show("playing (native HLS)");
    } else {
      show("this browser cannot play HLS");
    }
  }
  start();
})();
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    /// The URL names the release that is built in.
    #[test]
    fn the_built_in_player_url_names_its_version() {
        let version = super::DEFAULT_HLSJS_URL
            .strip_prefix("/assets/hls-")
            .and_then(|v| v.strip_suffix(".min.js"))
            .expect("a versioned URL");
        let quoted = format!("\"{version}\"");
        assert!(super::HLSJS
            .windows(quoted.len())
            .any(|w| w == quoted.as_bytes()));
    }
}
