#!/usr/bin/env node
// Validates HLS playlists (files or http(s) URLs) with hls-parser in strict mode.
// Usage: node validate-playlists.mjs PATH_OR_URL...
// Prints "ok X" or "FAIL X: reason" per playlist, then a JSON summary line;
// exits 1 if any playlist fails, 2 on usage errors.
//
// hls-parser 0.16 strict mode rejects some LL-HLS that RFC 8216bis allows, so a
// FAIL quoting one of these messages needs a look at the spec first:
// - "...at least 85% of PART-TARGET": it exempts only the last part of a segment,
//   not INDEPENDENT=YES parts, GAP=YES parts or a part followed by a GAP=YES part.
// - "Remove EXT-X-PART tags...": it counts entries (parts allowed only on the last
//   three, the open segment included), not three target durations of time.
// - "CAN-BLOCK-RELOAD=YES is mandatory": the spec makes that attribute optional.
// It also misses a few MUST rules; extraChecks() adds those.
import { readFile } from 'node:fs/promises';
import HLS from 'hls-parser';

HLS.setOptions({ strictMode: true, silent: true });

const FETCH_TIMEOUT_MS = 10_000;

async function load(source) {
  if (/^https?:\/\//i.test(source)) {
    const res = await fetch(source, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return res.text();
  }
  return readFile(source, 'utf8');
}

// Spec rules hls-parser does not check (RFC 8216bis 4.4.3.8, 4.4.4.9, 4.4.5.3).
function extraChecks(playlist) {
  if (playlist.isMasterPlaylist) return;
  const partTarget = playlist.partTargetDuration;
  const partHoldBack = playlist.lowLatencyCompatibility?.partHoldBack;
  if (partTarget !== undefined && partHoldBack === undefined) {
    throw new Error('EXT-X-PART-INF present but EXT-X-SERVER-CONTROL has no PART-HOLD-BACK');
  }
  if (partTarget !== undefined && partHoldBack < 2 * partTarget) {
    throw new Error(`PART-HOLD-BACK ${partHoldBack} must be at least twice PART-TARGET ${partTarget}`);
  }
  if (playlist.endlist && /^#EXT-X-PRELOAD-HINT:/m.test(playlist.source)) {
    throw new Error('a playlist with EXT-X-ENDLIST must not contain EXT-X-PRELOAD-HINT');
  }
  // EXT-X-PROGRAM-DATE-TIME applies to the first part too, so it must precede it.
  let inParts = false;
  for (const line of playlist.source.split(/\r?\n/)) {
    if (line.startsWith('#EXT-X-PART:')) inParts = true;
    else if (line.startsWith('#EXT-X-PROGRAM-DATE-TIME:') && inParts) {
      throw new Error('EXT-X-PROGRAM-DATE-TIME must appear before the first EXT-X-PART of its segment');
    } else if (line.trim() && !line.startsWith('#')) inParts = false;
  }
}

const sources = process.argv.slice(2);
if (sources.length === 0 || sources.includes('--help')) {
  console.error('usage: node validate-playlists.mjs PATH_OR_URL...');
  process.exit(2);
}

let ok = 0;
let failed = 0;
for (const source of sources) {
  try {
    const playlist = HLS.parse(await load(source));
    extraChecks(playlist);
    console.log(`ok ${source}`);
    ok++;
  } catch (err) {
    const cause = err?.cause?.code || err?.cause?.message; // e.g. ECONNREFUSED behind "fetch failed"
    const message = `${err?.message || err}${cause ? ` (${cause})` : ''}`;
    console.log(`FAIL ${source}: ${message.replace(/\s*\n\s*/g, ' ')}`);
    failed++;
  }
}
console.log(JSON.stringify({ ok, failed }));
process.exit(failed > 0 ? 1 : 0);
