#!/usr/bin/env node
// Drives the Sluice dashboard in headless Chromium, as an operator would:
//   node dashboard.mjs --base URL --token TOKEN --channel NAME --origin NODE_NAME
//        --nodes N --shots DIR [--timeout-seconds T]
// Logs in, waits for N healthy nodes and the live channel on its origin, opens the
// channel page, waits for the preview to play (currentTime advances), stops the stream
// from the page and waits for the page to show it ended. A screenshot of each page goes
// to DIR. The watch page's hls.js script is answered with the npm copy.
// Prints one JSON line: {"ok":bool,"step":last step,"error":msg?,"steps":{...}}.
import { createRequire } from 'node:module';
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const hlsJsPath = createRequire(import.meta.url).resolve('hls.js/dist/hls.min.js');

const { values: opts } = parseArgs({
  options: {
    base: { type: 'string' },
    token: { type: 'string' },
    channel: { type: 'string' },
    origin: { type: 'string' },
    nodes: { type: 'string', default: '3' },
    shots: { type: 'string' },
    'timeout-seconds': { type: 'string', default: '120' },
  },
});
for (const k of ['base', 'token', 'channel', 'origin', 'shots']) {
  if (!opts[k]) { console.error(`missing --${k}`); process.exit(2); }
}
mkdirSync(opts.shots, { recursive: true });
const STEP_MS = 45_000;
const report = { ok: false, step: 'start', steps: {} };
let browser;
const deadline = setTimeout(() => {
  report.error = `gave up after ${opts['timeout-seconds']} s`;
  finish(1);
}, Number(opts['timeout-seconds']) * 1000);

async function finish(code) {
  clearTimeout(deadline);
  try { if (browser) await browser.close(); } catch { /* closing anyway */ }
  console.log(JSON.stringify(report));
  process.exit(code);
}

async function step(name, fn) {
  report.step = name;
  console.error(`dashboard: ${name}`);
  const started = Date.now();
  const value = await fn();
  report.steps[name] = { ms: Date.now() - started, value: value === undefined ? null : value };
}

try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--autoplay-policy=no-user-gesture-required'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.route(/hls(\.min)?\.js(\?.*)?$/, (route) =>
    route.fulfill({ path: hlsJsPath, contentType: 'text/javascript' }));
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('dialog', (d) => d.accept());

  await step('login page', async () => {
    await page.goto(opts.base + '/');
    await page.waitForSelector('#login');
    await page.screenshot({ path: path.join(opts.shots, 'login.png'), fullPage: true });
  });
  await step('refused token', async () => {
    await page.fill('#token', 'not-a-token');
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => /refused/.test(document.getElementById('error').textContent));
    return await page.textContent('#error');
  });
  await step('log in', async () => {
    await page.fill('#token', opts.token);
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#nodes');
    const stored = await page.evaluate(() => sessionStorage.getItem('sluice.token') !== null);
    if (!stored) throw new Error('the token is not kept in session storage');
    if (page.url().includes(opts.token)) throw new Error('the token appears in the URL');
  });
  await step('cluster overview', async () => {
    const want = Number(opts.nodes);
    await page.waitForFunction((want) => {
      const rows = document.querySelectorAll('#nodes tr[data-node]');
      return rows.length === want && [...rows].every((r) => r.textContent.includes('healthy'));
    }, want);
    // The live channel, with its origin node.
    await page.waitForFunction(({ channel, origin }) => {
      const row = document.querySelector(`#channel-table tr[data-channel="${channel}"]`);
      return row && row.textContent.includes('live') && row.textContent.includes(origin);
    }, { channel: opts.channel, origin: opts.origin });
    // The origin node lists the channel as one it originates.
    const originRow = await page.textContent(`#nodes tr[data-node="${opts.origin}"]`);
    if (!originRow.includes(opts.channel)) throw new Error(`node row of ${opts.origin} does not list ${opts.channel}: ${originRow}`);
    await page.waitForSelector('#endpoint-table tr[data-endpoint]');
    await page.screenshot({ path: path.join(opts.shots, 'cluster.png'), fullPage: true });
    return {
      leader: await page.textContent('#leader'),
      channelRow: await page.textContent(`#channel-table tr[data-channel="${opts.channel}"]`),
      endpoints: await page.locator('#endpoint-table tr[data-endpoint]').count(),
    };
  });
  await step('channel page', async () => {
    await page.click(`#channel-table tr[data-channel="${opts.channel}"] a`);
    await page.waitForSelector('#preview');
    await page.waitForFunction(() => document.getElementById('live-state')?.textContent === 'live');
    // The publisher's keyframe interval, once a report has seen two keyframes.
    await page.waitForFunction(() => document.getElementById('keyframes')?.textContent.startsWith('every'));
    return {
      server: await page.textContent('#obs-server'),
      origin: await page.textContent('#origin'),
      keyframes: await page.textContent('#keyframes'),
    };
  });
  await step('preview plays', async () => {
    const frame = page.frameLocator('#preview');
    const video = frame.locator('video');
    await video.waitFor();
    const read = () => video.evaluate((v) => v.currentTime);
    let first = 0;
    const until = Date.now() + STEP_MS;
    while (Date.now() < until && (first = await read()) <= 0) await new Promise((r) => setTimeout(r, 250));
    if (first <= 0) throw new Error('the preview never started playing');
    await new Promise((r) => setTimeout(r, 3000));
    const second = await read();
    if (!(second > first + 1)) throw new Error(`the preview stands still: currentTime ${first} -> ${second}`);
    await page.waitForFunction(() => /\d/.test(document.getElementById('latency').textContent));
    await page.screenshot({ path: path.join(opts.shots, 'channel.png'), fullPage: true });
    return { first, second, latency: await page.textContent('#latency') };
  });
  await step('stop stream', async () => {
    await page.click('#stop');
    await page.waitForFunction(() => document.getElementById('live-state')?.textContent === 'idle');
    await page.screenshot({ path: path.join(opts.shots, 'stopped.png'), fullPage: true });
    return await page.textContent('#generations');
  });
  await step('log out', async () => {
    await page.click('#logout');
    await page.waitForSelector('#login');
    const stored = await page.evaluate(() => sessionStorage.getItem('sluice.token'));
    if (stored !== null) throw new Error('the token is still stored after logging out');
  });
  if (pageErrors.length) throw new Error(`script errors on the page: ${pageErrors.join('; ')}`);
  report.ok = true;
  await finish(0);
} catch (e) {
  report.error = e.message;
  await finish(1);
}
