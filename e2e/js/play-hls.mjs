#!/usr/bin/env node
// Plays an HLS stream in headless Chromium and reports what happened.
// Usage:
//   node play-hls.mjs --url URL [--min-seconds N] [--timeout-seconds T] [--until-ended]
//        [--hls-config JSON]   (added to hls.js's config: { lowLatencyMode: true })
//        [--player hlsjs|videojs|shaka|native]   (hls.js unless told: Video.js 8 with
//        its defaults, Shaka Player in lowLatencyMode, or Chromium's own HLS)
//   node play-hls.mjs --dir DIR --playlist REL [same options]   (serves DIR itself)
//   node play-hls.mjs --page URL [same options]   (a Sluice /watch page; its hls.js
//        script, wherever the page loads it from, is answered with the npm copy)
// Progress goes to stderr; stdout gets one JSON line:
//   {"ok":bool,"currentTime":x,"duration":y,"fatalErrors":[...],"nonFatalErrors":n,"latency":z|null,"ended":bool,
//    "played":s,"maxStallMs":ms}   (maxStallMs: longest time playback stood still once started)
// Exit code 0 only when ok, 1 otherwise, 2 on usage errors.
import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const STEP_TIMEOUT_MS = 30_000; // bound for each browser/page operation
const POLL_MS = 250;

const CONTENT_TYPES = {
  '.m3u8': 'application/vnd.apple.mpegurl',
  '.mp4': 'video/mp4',
  '.m4s': 'video/iso.segment',
  '.m4a': 'audio/mp4',
  '.m4v': 'video/mp4',
  '.ts': 'video/mp2t',
  '.aac': 'audio/aac',
  '.vtt': 'text/vtt',
  '.js': 'text/javascript',
  '.html': 'text/html; charset=utf-8',
};

function usage(message) {
  if (message) console.error(message);
  console.error('usage: node play-hls.mjs (--url URL | --dir DIR --playlist REL)'
    + ' [--min-seconds N] [--timeout-seconds T] [--until-ended]');
  process.exit(2);
}

let opts;
try {
  opts = parseArgs({
    options: {
      url: { type: 'string' },
      page: { type: 'string' },
      dir: { type: 'string' },
      playlist: { type: 'string' },
      'min-seconds': { type: 'string' },
      'timeout-seconds': { type: 'string', default: '60' },
      'until-ended': { type: 'boolean', default: false },
      'hls-config': { type: 'string', default: '{}' },
      player: { type: 'string', default: 'hlsjs' },
      help: { type: 'boolean', default: false },
    },
  }).values;
} catch (err) {
  usage(err.message);
}
if (opts.help) usage();
if ([opts.url, opts.dir, opts.page].filter(Boolean).length !== 1) usage('give exactly one of --url, --dir or --page');
if (opts.dir && !opts.playlist) usage('--dir needs --playlist');
const untilEnded = opts['until-ended'];
let hlsConfig;
try {
  hlsConfig = JSON.parse(opts['hls-config']);
} catch (err) {
  usage(`--hls-config is not JSON: ${err.message}`);
}
// With --until-ended the end of the stream is the goal; otherwise play 5 s by default.
const minSeconds = Number(opts['min-seconds'] ?? (untilEnded ? 0 : 5));
const timeoutSeconds = Number(opts['timeout-seconds']);
if (!Number.isFinite(minSeconds) || !(timeoutSeconds > 0)) usage('bad --min-seconds or --timeout-seconds');

const PLAYERS = ['hlsjs', 'videojs', 'shaka', 'native'];
if (!PLAYERS.includes(opts.player)) usage(`--player is one of ${PLAYERS.join(', ')}`);
if (opts.player !== 'hlsjs' && !opts.url) usage('--player other than hlsjs needs --url');

const require = createRequire(import.meta.url);
const hlsJsPath = require.resolve('hls.js/dist/hls.min.js');
// Each player's script, served as /player.js.
const PLAYER_SCRIPTS = {
  hlsjs: hlsJsPath,
  videojs: require.resolve('video.js/dist/video.min.js'),
  shaka: require.resolve('shaka-player/dist/shaka-player.compiled.js'),
  native: null,
};
const playerScript = PLAYER_SCRIPTS[opts.player];
const mediaRoot = opts.dir ? path.resolve(opts.dir) : null;

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>play-hls</title></head>
<body><video id="v" muted playsinline autoplay></video>
${playerScript ? '<script src="/player.js"></script>' : ''}</body></html>`;

// Serves the player page, hls.js and (with --dir) the media files.
async function handle(req, res) {
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Cache-Control', 'no-store');
  const { pathname } = new URL(req.url, 'http://localhost');
  let file;
  if (pathname === '/') {
    res.writeHead(200, { 'Content-Type': CONTENT_TYPES['.html'] });
    return res.end(PAGE);
  } else if (pathname === '/player.js' && playerScript) {
    file = playerScript;
  } else if (mediaRoot && pathname.startsWith('/media/')) {
    file = path.resolve(mediaRoot, '.' + decodeURIComponent(pathname.slice('/media'.length)));
    if (!file.startsWith(mediaRoot + path.sep)) file = null; // no escaping DIR
  }
  const info = file && (await stat(file).catch(() => null));
  if (!info || !info.isFile()) {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    return res.end('not found\n');
  }
  const type = CONTENT_TYPES[path.extname(file).toLowerCase()] || 'application/octet-stream';
  res.writeHead(200, { 'Content-Type': type, 'Content-Length': info.size });
  if (req.method === 'HEAD') return res.end();
  createReadStream(file).on('error', () => res.destroy()).pipe(res);
}

// Bounds a promise that could otherwise hang (page calls have no timeout of their own).
function bounded(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Runs inside the page: starts the player and records events into window.__play.
function startPlayer([src, extraConfig, player]) {
  const state = { fatalErrors: [], nonFatalErrors: 0, nonFatalSamples: [], ended: false, loaded: false };
  window.__play = state;
  const video = document.getElementById('v');
  video.addEventListener('ended', () => { state.ended = true; });
  const nonFatal = (entry) => {
    state.nonFatalErrors++;
    state.nonFatalSamples.push(entry);
    if (state.nonFatalSamples.length > 10) state.nonFatalSamples.shift();
  };
  if (player === 'native') {
    if (!video.canPlayType('application/vnd.apple.mpegurl')) {
      state.fatalErrors.push({ type: 'setup', details: 'no native HLS in this browser' });
      return;
    }
    video.addEventListener('error', () => {
      const e = video.error;
      state.fatalErrors.push({ type: 'media', details: e ? `${e.code} ${e.message}` : 'error' });
    });
    video.src = src;
    video.play().catch(() => {});
    return;
  }
  if (player === 'videojs') {
    // Video.js 8 with its defaults (VHS, llhls on); only the source type is given.
    const vjs = window.videojs(video, Object.assign({ muted: true, autoplay: true }, extraConfig));
    window.__vjs = vjs;
    vjs.on('error', () => {
      const e = vjs.error();
      state.fatalErrors.push({ type: 'videojs', details: e ? `${e.code} ${e.message}` : 'error' });
    });
    vjs.src({ src, type: 'application/x-mpegURL' });
    vjs.play().catch(() => {});
    return;
  }
  if (player === 'shaka') {
    window.shaka.polyfill.installAll();
    const shakaPlayer = new window.shaka.Player();
    window.__shaka = shakaPlayer;
    shakaPlayer.configure(Object.assign({ streaming: { lowLatencyMode: true } }, extraConfig));
    shakaPlayer.addEventListener('error', (event) => {
      const e = event.detail;
      // For an HTTP error Shaka's data starts with the URI and the status.
      const said = Array.isArray(e.data) ? ` ${e.data.slice(0, 2).map(String).join(' ')}` : '';
      const entry = { type: 'shaka', details: `${e.code} ${e.message || ''}${said}`, severity: e.severity };
      // Shaka fires a live stream's failed segment fetch as CRITICAL before its default
      // failure callback marks it recoverable and retries streaming: such an error is
      // fatal only if playback does not go on (the run then times out). Any other
      // critical error is fatal.
      const retried = e.severity === 2 && e.category === 1 && state.loaded;
      if (e.severity === 2 && !retried) state.fatalErrors.push(entry); else nonFatal(entry);
    });
    shakaPlayer.attach(video)
      .then(() => shakaPlayer.load(src))
      .then(() => { state.loaded = true; return video.play().catch(() => {}); })
      .catch((e) => state.fatalErrors.push({ type: 'shaka-load', details: `${e.code} ${e.message || e}` }));
    return;
  }
  if (!window.Hls || !window.Hls.isSupported()) {
    state.fatalErrors.push({ type: 'setup', details: 'hls.js not supported (no MSE?)' });
    return;
  }
  const hls = new window.Hls(Object.assign({ lowLatencyMode: true }, extraConfig));
  window.__hls = hls;
  hls.on(window.Hls.Events.ERROR, (_event, data) => {
    const entry = { type: data.type, details: data.details };
    if (data.response && data.response.code) entry.httpStatus = data.response.code;
    if (data.frag && data.frag.url) entry.url = data.frag.url;
    else if (data.url) entry.url = data.url;
    if (data.error && data.error.message) entry.message = data.error.message;
    if (data.fatal) {
      state.fatalErrors.push(entry);
    } else {
      nonFatal(entry); // the last few are kept for the timeout report
    }
  });
  hls.on(window.Hls.Events.MANIFEST_PARSED, () => { video.play().catch(() => {}); });
  hls.attachMedia(video);
  hls.loadSource(src);
}

// Runs inside the page: a snapshot of playback state.
function snapshot() {
  const video = document.querySelector('video');
  const hls = window.__hls || window.sluiceHls;
  // On a /watch page the page's own player records fatal errors.
  const page = window.sluicePlayer;
  const state = window.__play || {
    fatalErrors: page && page.fatal ? [{ type: 'page', details: page.fatal }] : [],
    nonFatalErrors: 0, nonFatalSamples: [], ended: false,
  };
  // A /watch page's own hls.js: count its errors and keep its last few loads too.
  if (hls && !window.__play && !hls.__observed) {
    hls.__observed = true;
    const seen = window.__pageEvents || (window.__pageEvents = { nonFatal: 0, recent: [] });
    const keep = (entry) => { seen.recent.push(entry); if (seen.recent.length > 12) seen.recent.shift(); };
    hls.on(window.Hls.Events.ERROR, (_e, data) => {
      if (!data.fatal) seen.nonFatal++;
      keep({ t: +video.currentTime.toFixed(2), error: data.details, status: data.response && data.response.code,
        url: (data.frag && data.frag.url) || data.url });
    });
    hls.on(window.Hls.Events.FRAG_LOADED, (_e, data) => {
      keep({ t: +video.currentTime.toFixed(2), loaded: (data.part && data.part.url) || data.frag.url,
        start: +((data.part || data.frag).start.toFixed(2)) });
    });
    // A load that starts and never ends shows as a loading without its loaded.
    hls.on(window.Hls.Events.FRAG_LOADING, (_e, data) => {
      keep({ t: +video.currentTime.toFixed(2), loading: (data.part && data.part.url) || data.frag.url });
    });
    // The playlists it got lately: whether they advanced (a stale one repeats).
    seen.levels = [];
    hls.on(window.Hls.Events.LEVEL_LOADED, (_e, data) => {
      const d = data.details;
      const last = d.fragments.length ? d.fragments[d.fragments.length - 1] : null;
      seen.levels.push({ t: +video.currentTime.toFixed(2), sn: [d.startSN, d.endSN],
        cc: last ? last.cc : null, parts: d.partList ? d.partList.length : 0,
        updated: d.updated, start: d.fragments.length ? +d.fragments[0].start.toFixed(2) : null });
      if (seen.levels.length > 6) seen.levels.shift();
    });
  }
  const pageEvents = window.__pageEvents;
  if (!window.__play && pageEvents) state.nonFatalErrors = pageEvents.nonFatal;
  const details = hls && (hls.latestLevelDetails || (hls.levels[hls.currentLevel] || {}).details);
  // Nudge playback if autoplay stalled in paused state (e.g. play() raced with a load).
  if (video.paused && !video.ended && video.readyState >= 2) video.play().catch(() => {});
  // Any player: how far behind the end of what the player calls seekable (its live
  // edge) the picture is.
  const seekable = video.seekable;
  const edgeDistance = seekable.length > 0
    ? +(seekable.end(seekable.length - 1) - video.currentTime).toFixed(3) : null;
  return {
    edgeDistance,
    currentTime: video.currentTime,
    duration: Number.isFinite(video.duration) ? video.duration : null,
    fatalErrors: state.fatalErrors,
    nonFatalErrors: state.nonFatalErrors,
    nonFatalSamples: state.nonFatalSamples,
    latency: details && details.live ? hls.latency : null,
    pageLatency: page && typeof page.latency === 'number' ? page.latency : null,
    ended: state.ended || video.ended,
    // Where the media is and where the playlist says the live window is: a stall
    // report shows which side is wrong.
    buffered: Array.from({ length: video.buffered.length },
      (_, i) => [+video.buffered.start(i).toFixed(2), +video.buffered.end(i).toFixed(2)]),
    window: details && details.fragments && details.fragments.length
      ? [+details.fragments[0].start.toFixed(2), +details.edge.toFixed(2)] : null,
    readyState: video.readyState,
    recentEvents: pageEvents ? pageEvents.recent : undefined,
    recentPlaylists: pageEvents ? pageEvents.levels : undefined,
  };
}

const result = { ok: false, currentTime: 0, duration: null, fatalErrors: [], nonFatalErrors: 0, latency: null, ended: false };
let server;
let browser;
let finished = false;

async function cleanup() {
  if (browser) await bounded(browser.close(), 10_000, 'browser close').catch(() => {});
  if (server) {
    server.closeAllConnections();
    await bounded(new Promise((resolve) => server.close(resolve)), 5_000, 'server close').catch(() => {});
  }
}

async function finish(reason) {
  if (finished) return;
  finished = true;
  if (reason) result.reason = reason;
  await cleanup();
  console.log(JSON.stringify(result));
  // Playwright kills a browser that is still running when the process exits.
  process.exit(result.ok ? 0 : 1);
}

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => finish(`killed by ${signal}`));
// Last-resort bound on the whole run, in case a cleanup step itself hangs.
setTimeout(() => {
  console.log(JSON.stringify({ ...result, ok: false, reason: 'watchdog expired' }));
  process.exit(1);
}, (timeoutSeconds + 90) * 1000).unref();

async function main() {
  server = createServer((req, res) => handle(req, res).catch(() => res.destroy()));
  await new Promise((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const src = opts.url || (opts.playlist
    ? `${origin}/media/${opts.playlist.split('/').map(encodeURIComponent).join('/')}` : null);

  // launch() gives Chromium a fresh temporary user-data-dir and deletes it on close.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: STEP_TIMEOUT_MS,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
      '--autoplay-policy=no-user-gesture-required'],
  });
  const page = await bounded(browser.newPage(), STEP_TIMEOUT_MS, 'new page');
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push({ type: 'pageerror', details: err.message }));
  page.on('crash', () => pageErrors.push({ type: 'crash', details: 'page crashed' }));
  if (opts.page) {
    if (process.env.PLAY_HLS_DEBUG) {
      // hls.js's own log, for finding out why a player stood still.
      const { readFile } = await import('node:fs/promises');
      const body = (await readFile(hlsJsPath, 'utf8')) + `
;(function () { var H = window.Hls; if (!H) return;
  function D(c) { return new H(Object.assign({}, c, { debug: true })); }
  Object.setPrototypeOf(D, H); D.prototype = H.prototype; window.Hls = D; })();`;
      page.on('console', (m) => console.error(`[page] ${m.text()}`));
      await page.route(/hls(\.min)?\.js(\?.*)?$/, (route) =>
        route.fulfill({ body, contentType: 'text/javascript' }));
    } else {
      await page.route(/hls(\.min)?\.js(\?.*)?$/, (route) =>
        route.fulfill({ path: hlsJsPath, contentType: 'text/javascript' }));
    }
    await page.goto(opts.page, { waitUntil: 'load' });
    console.error(`playing the page ${opts.page}`);
  } else {
    await page.goto(`${origin}/`, { waitUntil: 'load' });
    if (process.env.PLAY_HLS_DEBUG) {
      // The player's own log, as for a page, and every request it makes.
      page.on('console', (m) => console.error(`[page] ${m.text()}`));
      page.on('request', (r) => console.error(`[request] ${r.url()}`));
      if (opts.player === 'hlsjs') hlsConfig = { ...hlsConfig, debug: true };
      if (opts.player === 'videojs') await page.evaluate(() => window.videojs.log.level('debug'));
    }
    await bounded(page.evaluate(startPlayer, [src, hlsConfig, opts.player]), STEP_TIMEOUT_MS, 'player start');
    console.error(`playing ${src}`);
  }

  const deadline = Date.now() + timeoutSeconds * 1000;
  let lastLog = 0;
  // A live stream starts near its edge, not at 0: count the time played since then.
  let firstTime = null;
  // The longest wall-clock time playback did not move, once it had started.
  let lastTime = null;
  let lastProgressAt = null;
  result.maxStallMs = 0;
  for (;;) {
    const snap = await bounded(page.evaluate(snapshot), STEP_TIMEOUT_MS, 'page poll');
    const { nonFatalSamples, ...rest } = snap;
    Object.assign(result, rest, { fatalErrors: [...snap.fatalErrors, ...pageErrors] });
    if (firstTime === null && snap.currentTime > 0) firstTime = snap.currentTime;
    if (firstTime !== null) {
      const now = Date.now();
      if (lastTime === null || snap.currentTime > lastTime) {
        lastTime = snap.currentTime;
        lastProgressAt = now;
      }
      result.maxStallMs = Math.max(result.maxStallMs, now - lastProgressAt);
    }
    result.played = snap.currentTime - (firstTime ?? snap.currentTime);
    const reached = untilEnded ? snap.currentTime >= minSeconds : result.played >= minSeconds;
    if (result.fatalErrors.length > 0) return finish('fatal error');
    if (untilEnded ? snap.ended && reached : reached) {
      result.ok = true;
      return finish();
    }
    if (snap.ended) return finish(`ended at ${snap.currentTime.toFixed(3)} s, before --min-seconds`);
    if (Date.now() >= deadline) {
      if (nonFatalSamples.length) console.error('recent non-fatal errors:', JSON.stringify(nonFatalSamples));
      return finish(`timeout after ${timeoutSeconds} s`);
    }
    if (Date.now() - lastLog >= 2000) {
      lastLog = Date.now();
      console.error(`t=${snap.currentTime.toFixed(2)} played=${result.played.toFixed(2)} latency=${snap.latency ?? '-'} edge=${snap.edgeDistance ?? '-'} nonFatal=${snap.nonFatalErrors}`);
    }
    await sleep(POLL_MS);
  }
}

main().catch((err) => finish(`error: ${err.message.split('\n')[0]}`));
