// The status page in headless Debian chromium, driven by playwright-core (scripts/test.sh).
//
// Starts corral and four backends, configures two load balancers through the Rancher and
// Consul APIs (raw HTTP, the same endpoints gdapi-python and py-consul use), keeps traffic
// flowing, then checks the page: targets, states and a non-zero req/s; a target put in
// maintenance through the Consul API shows up within 5 s without a reload; the page with
// JavaScript off holds the same targets. Screenshot: tests/browser/artifacts/status.png, and
// docs/status.png too when UPDATE_SCREENSHOT=1.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, copyFileSync, openSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const BIN = process.env.CORRAL_BIN || path.join(ROOT, "target/debug/corral");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = path.join(HERE, "artifacts");
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync"];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
    s.on("error", reject);
  });
}

async function waitUntil(pred, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try { if (await pred()) return; } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

function request(method, url, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(url, {
      method, agent: false,
      headers: { ...headers, ...(data ? { "content-type": "application/json", "content-length": data.length } : {}) },
    }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
    req.setTimeout(5000, () => req.destroy(new Error("timeout")));
    if (data) req.write(data);
    req.end();
  });
}

async function ok(method, url, body) {
  const r = await request(method, url, body);
  if (r.status >= 300) throw new Error(`${method} ${url}: ${r.status} ${r.text}`);
  return r.text ? JSON.parse(r.text) : null;
}

function backend(name) {
  return new Promise((resolve) => {
    const s = http.createServer((req, res) => {
      req.resume();
      res.end(name);
    });
    s.keepAliveTimeout = 1000;
    s.listen(0, "127.0.0.1", () => resolve({ server: s, port: s.address().port }));
  });
}

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
  console.log(`  ok: ${msg}`);
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const dir = mkdtempSync(path.join(os.tmpdir(), "corral-browser-"));
  const control = await freePort();
  const base = `http://127.0.0.1:${control}`;
  const log = openSync(path.join(ARTIFACTS, "corral.log"), "w");
  const corral = spawn(BIN, ["--control-addr", `127.0.0.1:${control}`, "--listen-ip", "127.0.0.1",
    "--data-dir", path.join(dir, "state")], { stdio: ["ignore", log, log] });
  const backends = [];
  let browser;
  let traffic = true;
  try {
    await waitUntil(async () => (await request("GET", `${base}/ready`)).status === 200, "corral /ready", 15000);

    // Consul: two web instances (3:1), two api instances, one of them warning.
    const reg = async (id, service, weights, check) => {
      const b = await backend(id);
      backends.push(b);
      await ok("PUT", `${base}/v1/agent/service/register`, {
        ID: id, Name: service, Address: "127.0.0.1", Port: b.port, Weights: weights,
        ...(check ? { Check: check } : {}),
      });
    };
    await reg("web-1", "web", { Passing: 3, Warning: 1 });
    await reg("web-2", "web", { Passing: 1, Warning: 1 });
    await reg("api-1", "api", { Passing: 2, Warning: 1 });
    await reg("api-2", "api", { Passing: 2, Warning: 1 }, { CheckID: "api-2-ttl", TTL: "10m", Status: "warning" });

    // Rancher: the services, two load balancers, activated.
    const web = await ok("POST", `${base}/v1/services`, { name: "web" });
    const api = await ok("POST", `${base}/v1/services`, { name: "api" });
    const frontPort = await freePort();
    const internalPort = await freePort();
    const front = await ok("POST", `${base}/v1/loadbalancerservices`, {
      name: "frontend", lbConfig: { portRules: [
        { sourcePort: frontPort, protocol: "http", hostname: "api.example.com", path: "/v1", priority: 1, serviceId: api.id },
        { sourcePort: frontPort, protocol: "http", hostname: "www.example.com", priority: 2, serviceId: web.id },
        { sourcePort: frontPort, protocol: "http", serviceId: web.id },
      ] },
    });
    const internal = await ok("POST", `${base}/v1/loadbalancerservices`, {
      name: "internal", lbConfig: { portRules: [{ sourcePort: internalPort, protocol: "http", serviceId: api.id }] },
    });
    await ok("POST", `${base}/v1/loadbalancerservices/${front.id}?action=activate`, {});
    await ok("POST", `${base}/v1/loadbalancerservices/${internal.id}?action=activate`, {});
    const cert = path.join(ROOT, "tests/data/certs");
    await ok("POST", `${base}/v1/certificates`, {
      name: "www", cert: readFileSync(path.join(cert, "rsa.crt"), "utf8"),
      key: readFileSync(path.join(cert, "rsa2048-pkcs1.key"), "utf8"),
    });
    await waitUntil(async () => (await request("GET", `http://127.0.0.1:${frontPort}/`)).status === 200, "frontend up");
    await waitUntil(async () => (await request("GET", `http://127.0.0.1:${internalPort}/`)).status === 200, "internal up");

    // Traffic until the end: ~40 req/s to the frontend, ~15 to the internal LB.
    const pump = async (port, host, pathname, everyMs) => {
      while (traffic) {
        await request("GET", `http://127.0.0.1:${port}${pathname}`, undefined, { host }).catch(() => {});
        await sleep(everyMs);
      }
    };
    const pumps = [pump(frontPort, "www.example.com", "/", 25), pump(frontPort, "api.example.com", "/v1/x", 100),
      pump(internalPort, "internal", "/", 70)];

    // JavaScript off: the server-rendered page already holds every target.
    const raw = await request("GET", `${base}/`);
    check(raw.status === 200 && raw.text.includes("<main"), "GET / serves the page");
    for (const id of ["web-1", "web-2", "api-1", "api-2"]) {
      check(raw.text.includes(`data-target="${id}"`), `static HTML has target ${id}`);
    }

    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
    const noJs = await browser.newContext({ javaScriptEnabled: false });
    const staticPage = await noJs.newPage();
    await staticPage.goto(`${base}/`);
    check(await staticPage.locator("tr[data-target]").count() === 4, "JS off: four target rows");
    check((await staticPage.locator("#live-text").textContent()).includes("static"), "JS off: marked as a static snapshot");
    await noJs.close();

    const ctx = await browser.newContext({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
    const page = await ctx.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`${base}/`);
    await page.evaluate(() => { window.__notReloaded = true; });
    await page.waitForFunction(() => document.getElementById("live-text").textContent.startsWith("live"), null, { timeout: 5000 });
    check(true, "page polls /status (live)");
    for (const lb of ["frontend", "internal"]) {
      check(await page.locator(`[data-lb="${lb}"]`).count() === 1, `load balancer ${lb} shown`);
    }
    const state = (id) => page.locator(`tr[data-target="${id}"]`).first().getAttribute("data-state");
    check(await state("web-1") === "passing", "web-1 passing");
    check(await state("api-2") === "warning", "api-2 warning");
    await page.waitForFunction(
      () => parseFloat(document.querySelector('tr[data-target="web-1"] .rps').textContent) > 0,
      null, { timeout: 15000 });
    check(true, `non-zero req/s for web-1: ${await page.locator('tr[data-target="web-1"] .rps').textContent()}`);

    // Let the sparklines grow, then flip web-2 to maintenance and watch the page follow.
    await sleep(Number(process.env.SPARK_SECONDS || 10) * 1000);
    const flipped = Date.now();
    await ok("PUT", `${base}/v1/agent/service/maintenance/web-2?enable=true&reason=deploy`);
    await page.waitForSelector('tr[data-target="web-2"][data-state="maintenance"]', { timeout: 5000 });
    check(true, `web-2 shown in maintenance after ${Date.now() - flipped} ms`);
    check(await page.evaluate(() => window.__notReloaded === true), "without a page reload");
    check(errors.length === 0, `no page errors ${errors.join("; ")}`);

    await sleep(1500);
    const shot = path.join(ARTIFACTS, "status.png");
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`  screenshot: ${shot}`);
    if (process.env.UPDATE_SCREENSHOT === "1") {
      copyFileSync(shot, path.join(ROOT, "docs/status.png"));
      console.log("  docs/status.png updated");
    }
    traffic = false;
    await Promise.all(pumps);
  } finally {
    traffic = false;
    if (browser) await browser.close();
    corral.kill("SIGTERM");
    for (const b of backends) b.server.close();
  }
}

main().then(() => { console.log("browser test passed"); process.exit(0); },
  (e) => { console.error(`browser test FAILED: ${e.stack || e}`); process.exit(1); });
