//! The dashboard at `/`: one page and a small script over the admin API, served by
//! every node (the same replicated data from any of them). The operator logs in with an
//! API token, kept in the browser's session storage (never in a URL). Pages: the
//! cluster (leader, nodes with lease health and what each originates, channels with
//! live state, origin, bitrate, viewers, endpoints with their snapshots) and a channel
//! (live preview, media, generations, OBS settings, a new stream key, stop).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub(crate) fn router() -> Router {
    Router::new().route("/", get(page))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
                 frame-ancestors 'none'",
            ),
        ],
        PAGE,
    )
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sluice</title>
<style>
  body { margin: 0; font: 14px system-ui, sans-serif; background: #f6f7f9; color: #222; }
  header { background: #1d2733; color: #fff; padding: 10px 16px; display: flex; gap: 16px; align-items: center; }
  header a { color: #fff; text-decoration: none; font-weight: 600; }
  header .grow { flex: 1; }
  main { padding: 16px; max-width: 1200px; }
  section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 12px 16px; margin-bottom: 16px; }
  h2 { font-size: 16px; margin: 0 0 8px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
  th { font-weight: 600; color: #555; }
  .ok { color: #167d2f; font-weight: 600; }
  .bad { color: #b3261e; font-weight: 600; }
  .muted { color: #777; }
  code, .mono { font-family: ui-monospace, monospace; }
  button { padding: 5px 12px; cursor: pointer; }
  iframe { width: 100%; aspect-ratio: 16 / 9; border: 0; background: #000; }
  .grid { display: grid; grid-template-columns: 2fr 1fr; gap: 16px; }
  #error { color: #b3261e; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 0; }
  dt { color: #555; }
  dd { margin: 0; }
</style>
</head>
<body>
<header>
  <a href="#/">Sluice</a>
  <span id="where" class="muted"></span>
  <span class="grow"></span>
  <button id="logout" hidden>Log out</button>
</header>
<main>
  <p id="error" role="alert"></p>
  <div id="view"></div>
</main>
<script>
"use strict";
(function () {
  var TOKEN_KEY = "sluice.token";
  var view = document.getElementById("view");
  var errorBox = document.getElementById("error");
  var timer = null;
  var pageId = 0;

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  // Builds an element; text children are text nodes (never parsed as HTML).
  function el(tag, attrs) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "onclick") e.addEventListener("click", attrs[k]);
      else if (k === "text") e.textContent = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function api(method, path, body) {
    var opts = { method: method, headers: { "Authorization": "Bearer " + token() } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch("/api/v1" + path, opts).then(function (r) {
      if (r.status === 401) { logout("the token was refused: log in again"); throw new Error("unauthorized"); }
      if (r.status === 204) return null;
      return r.json().then(function (v) {
        if (!r.ok) throw new Error(v.error || ("HTTP " + r.status));
        return v;
      });
    });
  }

  function fail(e) { if (e.message !== "unauthorized") errorBox.textContent = e.message; }

  function bps(n) {
    if (!n) return "–";
    if (n >= 1e6) return (n / 1e6).toFixed(2) + " Mbit/s";
    return (n / 1e3).toFixed(0) + " kbit/s";
  }
  function ms(n) { return (n === null || n === undefined) ? "–" : (n / 1000).toFixed(1) + " s"; }
  function health(ok, yes, no) { return el("span", { "class": ok ? "ok" : "bad", text: ok ? yes : no }); }
  function table(headers, rows, id) {
    var t = el("table", id ? { id: id } : {});
    t.appendChild(el("tr", {}, ...headers.map(function (h) { return el("th", { text: h }); })));
    rows.forEach(function (r) { t.appendChild(r); });
    return t;
  }
  function row(cells, attrs) {
    return el("tr", attrs || {}, ...cells.map(function (c) { return el("td", {}, c); }));
  }

  function logout(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    route(why);
  }

  function login(why) {
    document.getElementById("logout").hidden = true;
    document.getElementById("where").textContent = "";
    var input = el("input", { id: "token", type: "password", size: "60", autocomplete: "off", placeholder: "API token" });
    var form = el("form", { id: "login" },
      el("h2", { text: "Log in" }),
      el("p", { "class": "muted", text: "An admin token (admin.token in the node's data dir, or one made with `sluice token create`) or a read-only token." }),
      input, " ", el("button", { type: "submit", text: "Log in" }));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var t = input.value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      fetch("/api/v1/cluster", { headers: { "Authorization": "Bearer " + t } }).then(function (r) {
        if (r.ok) { errorBox.textContent = ""; route(); }
        else { sessionStorage.removeItem(TOKEN_KEY); errorBox.textContent = "this token was refused (HTTP " + r.status + ")"; }
      }).catch(fail);
    });
    view.replaceChildren(el("section", {}, form));
    if (why) errorBox.textContent = why;
  }

  function overview(id) {
    Promise.all([api("GET", "/cluster"), api("GET", "/nodes"), api("GET", "/channels"), api("GET", "/endpoints")])
      .then(function (r) {
        if (id !== pageId) return;
        var cluster = r[0], nodes = r[1].nodes, channels = r[2].channels, endpoints = r[3].endpoints;
        errorBox.textContent = "";
        var names = {};
        nodes.forEach(function (n) { names[n.id] = n.name; });
        document.getElementById("where").textContent = "answered by " + (names[cluster.this_node] || cluster.this_node);
        var leader = cluster.leader === null ? "none" : (names[cluster.leader] || cluster.leader) + " (" + cluster.leader + ")";
        var clusterSection = el("section", { id: "cluster" },
          el("h2", { text: "Cluster" }),
          el("p", {}, "Leader: ", el("b", { id: "leader", text: leader }), "  ·  term " + cluster.term + "  ·  " + nodes.length + " nodes"),
          table(["Node", "Id", "Lease", "Heartbeat", "Voter", "Origin of", "Pulling", "Capture ports", "HTTP"],
            nodes.map(function (n) {
              return row([
                el("b", { text: n.name }), String(n.id),
                health(n.healthy, "healthy", "down"),
                ms(n.heartbeat_age_ms) + " ago",
                n.voter ? (n.leader ? "leader" : "yes") : "no",
                n.origin_of.join(", ") || "–",
                n.pulling.join(", ") || "–",
                String(n.capture_ports.length),
                el("span", { "class": "mono", text: n.urls.http }),
              ], { "data-node": n.name });
            }), "nodes"));
        var channelSection = el("section", { id: "channels" },
          el("h2", { text: "Channels" }),
          channels.length === 0 ? el("p", { "class": "muted", text: "No channels yet: sluice channel create NAME" }) :
          table(["Channel", "State", "Origin", "Video", "Bitrate", "Viewers", "Playlist age", "Ingest", "Alert"],
            channels.map(function (c) {
              var g = c.generation;
              var link = el("a", { href: "#/channel/" + encodeURIComponent(c.slug), text: c.slug });
              var media = g ? (g.media.width ? g.media.width + "×" + g.media.height : "") + " " + g.media.codecs.join(", ") : "–";
              return row([
                link,
                g ? el("span", { "class": g.state === "live" ? "ok" : "bad", text: g.state }) : el("span", { "class": "muted", text: "idle" }),
                c.origin_name || "–", media, g ? bps(g.media.bitrate_bps) : "–", String(c.viewers),
                ms(c.playlist_age_ms), c.ingest.kind, [c.alert].concat(c.warnings || []).filter(Boolean).join("; "),
              ], { "data-channel": c.slug });
            }), "channel-table"));
        var endpointSection = el("section", { id: "endpoints" },
          el("h2", { text: "Endpoints" }),
          table(["Endpoint", "Kind", "Status", "Viewers", "Egress", "Ingress", "Hit ratio", "Playlist age", "Parents", "URL"],
            endpoints.map(function (e) {
              var s = e.last_snapshot || {};
              return row([
                el("b", { text: e.name }), e.kind,
                el("span", { "class": e.status === "ok" ? "ok" : "bad", text: e.status }),
                s.viewers === undefined ? "–" : String(s.viewers), bps(s.egress_bps), bps(s.ingress_bps),
                (s.hit_ratio === null || s.hit_ratio === undefined) ? "–" : (s.hit_ratio * 100).toFixed(0) + " %",
                ms(s.playlist_age_ms), e.upstreams.join(" → ") || "–",
                el("span", { "class": "mono", text: e.url }),
              ], { "data-endpoint": e.name });
            }), "endpoint-table"));
        view.replaceChildren(clusterSection, channelSection, endpointSection);
      }).catch(fail);
  }

  function channelPage(name, id, first) {
    Promise.all([api("GET", "/channels/" + encodeURIComponent(name)), api("GET", "/channels/" + encodeURIComponent(name) + "/generations"),
                 api("GET", "/cluster"), api("GET", "/nodes")])
      .then(function (r) {
        if (id !== pageId) return;
        errorBox.textContent = "";
        var c = r[0].channel, keys = r[0].keys, gens = r[1].generations, cluster = r[2], nodes = r[3].nodes;
        var here = nodes.filter(function (n) { return n.id === cluster.this_node; })[0] || nodes[0];
        document.getElementById("where").textContent = "answered by " + (here ? here.name : cluster.this_node);
        var g = c.generation;
        if (first) {
          var priv = c.visibility === "private";
          var preview = el("iframe", { id: "preview", title: "live preview", allow: "autoplay", src: priv ? "about:blank" : "/watch/" + encodeURIComponent(c.slug) });
          // A private channel's preview plays with a playback token of its own (an hour;
          // a read-only admin token cannot issue one, and the preview stays blank).
          if (priv) {
            api("POST", "/channels/" + encodeURIComponent(c.slug) + "/playback-tokens", { ttl_s: 3600 })
              .then(function (t) { preview.src = t.watch_path; }).catch(function () {});
          }
          var stop = el("button", { id: "stop", text: "Stop stream", onclick: function () {
            if (!confirm("End the live stream of " + c.slug + "? Its publisher is disconnected.")) return;
            api("POST", "/channels/" + encodeURIComponent(c.slug) + "/stop").then(function () { channelPage(name, pageId, false); }).catch(fail);
          } });
          var newKey = el("button", { id: "new-key", text: "New stream key", onclick: function () {
            api("POST", "/channels/" + encodeURIComponent(c.slug) + "/keys").then(function (k) {
              document.getElementById("key-once").replaceChildren("Stream key (shown once): ", el("code", { id: "stream-key", text: k.stream_key }));
            }).catch(fail);
          } });
          view.replaceChildren(
            el("h2", {}, "Channel ", el("span", { id: "channel-name", text: c.slug }), c.title ? " · " + c.title : ""),
            el("div", { "class": "grid" },
              el("section", {}, preview, el("p", {}, "Player latency: ", el("b", { id: "latency", text: "–" }))),
              el("section", {}, el("h2", { text: "Live" }), el("div", { id: "live" }), el("p", {}, stop))),
            el("section", { id: "obs" }, el("h2", { text: "OBS settings" }), el("div", { id: "obs-settings" }), el("p", {}, newKey, " ", el("span", { id: "key-once" }))),
            el("section", {}, el("h2", { text: "Generations" }), el("div", { id: "generations" })));
        }
        var live = document.getElementById("live");
        if (!live) return;
        var media = g ? g.media : null;
        live.replaceChildren(el("dl", {},
          el("dt", { text: "State" }), el("dd", { id: "live-state", text: g ? g.state : "idle" }),
          el("dt", { text: "Generation" }), el("dd", { text: g ? String(g.number) : "–" }),
          el("dt", { text: "Origin" }), el("dd", { id: "origin", text: c.origin_name || "–" }),
          el("dt", { text: "Codecs" }), el("dd", { text: media ? media.codecs.join(", ") : "–" }),
          el("dt", { text: "Resolution" }), el("dd", { text: media && media.width ? media.width + "×" + media.height : "–" }),
          el("dt", { text: "Bitrate" }), el("dd", { text: media ? bps(media.bitrate_bps) : "–" }),
          el("dt", { text: "Viewers" }), el("dd", { text: String(c.viewers) }),
          el("dt", { text: "Ingest" }), el("dd", { text: c.ingest.kind + (c.ingest.url ? " " + c.ingest.url : "") }),
          el("dt", { text: "Spool" }), el("dd", { text: media && media.spool_error ? "degraded: " + media.spool_error : "ok" }),
          el("dt", { text: "Keyframes" }), el("dd", { id: "keyframes", text: media && media.keyframe_interval_ms
            ? "every " + (media.keyframe_interval_ms / 1000).toFixed(1) + " s at most" + ((c.warnings || []).length ? ": " + c.warnings.join("; ") : "")
            : "–" })));
        document.getElementById("stop").disabled = !g;
        var server = here ? here.urls.rtmp : "";
        var activeKeys = keys.filter(function (k) { return k.revoked_ms === null; }).map(function (k) { return k.key_id; });
        document.getElementById("obs-settings").replaceChildren(c.ingest.kind !== "push"
          ? el("p", { text: "This channel is not pushed (" + c.ingest.kind + "): the cluster pulls or captures it." })
          : el("dl", {},
            el("dt", { text: "Service" }), el("dd", { text: "Custom…" }),
            el("dt", { text: "Server" }), el("dd", {}, el("code", { id: "obs-server", text: server })),
            el("dt", { text: "Stream Key" }), el("dd", { text: "the key shown when it was made (active key ids: " + (activeKeys.join(", ") || "none") + ")" }),
            el("dt", { text: "Keyframe interval" }), el("dd", { text: "1 s to 2 s (Output › Advanced) for the lowest latency; any interval plays" }),
            el("dt", { text: "SRT instead" }), el("dd", {}, el("code", { text: (here ? here.urls.srt : "srt://HOST:9000") + "?streamid=#!::r=KEY,m=publish" }))));
        document.getElementById("generations").replaceChildren(table(["#", "State", "Origin", "Started", "Last media", "Media"],
          gens.slice(0, 10).map(function (x) {
            var origin = nodes.filter(function (n) { return n.id === x.origin; })[0];
            return row([String(x.number), x.state, origin ? origin.name : String(x.origin),
              new Date(x.started_ms).toLocaleString(), new Date(x.last_media_ms).toLocaleTimeString(),
              x.media.codecs.join(", ")]);
          })));
      }).catch(fail);
  }

  // The preview's latency, from the watch page in the frame (same origin).
  setInterval(function () {
    var frame = document.getElementById("preview");
    var out = document.getElementById("latency");
    try {
      var p = frame && frame.contentWindow && frame.contentWindow.sluicePlayer;
      if (p && out && p.latency) out.textContent = p.latency.toFixed(2) + " s";
    } catch (e) { /* the frame is elsewhere */ }
  }, 1000);

  function route(why) {
    pageId++;
    var id = pageId;
    if (timer) { clearInterval(timer); timer = null; }
    errorBox.textContent = "";
    if (!token()) { login(why); return; }
    document.getElementById("logout").hidden = false;
    var m = location.hash.match(/^#\/channel\/([^/]+)$/);
    if (m) {
      var name = decodeURIComponent(m[1]);
      channelPage(name, id, true);
      timer = setInterval(function () { channelPage(name, id, false); }, 2000);
    } else {
      overview(id);
      timer = setInterval(function () { overview(id); }, 2000);
    }
  }

  document.getElementById("logout").addEventListener("click", function () { logout(); });
  window.addEventListener("hashchange", function () { route(); });
  route();
})();
</script>
</body>
</html>
"##;
