// Real parts for the browser tests: nb-management and nb-proxy binaries from target/debug,
// a CrowdSec LAPI from Debian's package, and Debian's Chromium driven by playwright-core.
import { execFile, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type BrowserContext, type Page } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const bin = (name: string) => join(root, "target/debug", name);
export const ADMIN = "browser-admin-token-0123456789abcdef";
export const SCREENSHOTS = join(root, "dashboard/screenshots");
const children: ChildProcess[] = [];

export function cleanup(): void {
  for (const c of children.splice(0)) c.kill("SIGKILL");
}

/** The addresses a process bound, from the ready file it writes once it serves (it listens on
 *  port 0, so no port is guessed). */
async function readyFile(file: string, what: string): Promise<Record<string, string>> {
  return until(what, async () => JSON.parse(readFileSync(file, "utf8")));
}

/** For the CrowdSec LAPI only: it cannot listen on port 0 and say where. */
export function freePort(): Promise<number> {
  return new Promise((ok) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => ok(port));
    });
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

function start(cmd: string, args: string[], logFile: string): ChildProcess {
  const log = openSync(logFile, "a");
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("NB_")));
  const child = spawn(cmd, args, { stdio: ["ignore", log, log], env });
  children.push(child);
  return child;
}

export class Management {
  dir = mkdtempSync(join(tmpdir(), "nb-ui-mgmt-"));
  url = "";
  async start(): Promise<this> {
    const ready = join(this.dir, "ready.json");
    start(bin("nb-management"), ["--listen", "127.0.0.1:0", "--ready-file", ready, "--data-dir", this.dir, "--admin-token", ADMIN], join(this.dir, "log"));
    this.url = `http://${(await readyFile(ready, "nb-management")).listen}`;
    return this;
  }
  async call(method: string, path: string, body?: unknown): Promise<any> {
    const res = await fetch(this.url + path, {
      method,
      headers: { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
    return res.status === 204 ? undefined : res.json();
  }
}

export class ManagedProxy {
  dir = mkdtempSync(join(tmpdir(), "nb-ui-proxy-"));
  port = 0;
  constructor(public name = `edge-${Math.random().toString(16).slice(2, 8)}`) {}
  /** Starts nb-proxy against `m`: with a LAPI, it waits until CrowdSec is available; with a
   *  `token` (a proxy created elsewhere, e.g. in the dashboard) it uses it instead of making one. */
  async start(m: Management, lapi?: { url: string; key: string }, token?: string): Promise<this> {
    token ??= (await m.call("POST", "/api/v1/proxies", { name: this.name })).token as string;
    const ready = join(this.dir, "ready.json");
    const crowdsec = lapi ? ["--crowdsec-api-url", lapi.url, "--crowdsec-api-key", lapi.key, "--crowdsec-update-interval", "1s"] : [];
    start(
      bin("nb-proxy"),
      ["--management-url", m.url, "--token", token, "--management-cache", join(this.dir, "cache.json"),
        "--http-listen", "127.0.0.1:0", "--ready-file", ready, "--access-log", join(this.dir, "access.log"),
        "--management-report-interval", "500ms", ...crowdsec],
      join(this.dir, "log"),
    );
    this.port = Number((await readyFile(ready, "nb-proxy")).http.split(":").pop());
    await until("the proxy to report", async () => {
      if (lapi) return (await m.call("GET", "/api/v1/capabilities")).crowdsec.supported || undefined;
      const proxies: { name: string; live: boolean }[] = await m.call("GET", "/api/v1/proxies");
      return proxies.some((p) => p.name === this.name && p.live) || undefined;
    });
    return this;
  }
  /** GET / with Host `host` from a chosen loopback source address; resolves to the status.
   *  Asynchronous, so that an upstream served by this test process can answer meanwhile. */
  get(host: string, source: string): Promise<number> {
    return new Promise((ok) => {
      execFile(
        "curl",
        ["-s", "-o", "/dev/null", "-m", "10", "-w", "%{http_code}", "--interface", source, "-H", `Host: ${host}`, `http://127.0.0.1:${this.port}/`],
        (_err, stdout) => ok(Number(stdout)),
      );
    });
  }
  /** The page a browser would get for GET / from `source`: status and HTML body. */
  page(host: string, source: string): Promise<{ status: number; body: string }> {
    return new Promise((ok) => {
      execFile(
        "curl",
        ["-s", "-m", "10", "-w", "\n%{http_code}", "--interface", source, "-H", `Host: ${host}`, "-H", "Accept: text/html", `http://127.0.0.1:${this.port}/`],
        (_err, stdout) => {
          const at = stdout.lastIndexOf("\n");
          ok({ status: Number(stdout.slice(at + 1)), body: stdout.slice(0, at) });
        },
      );
    });
  }
}

export const LAPI_KEY = "5c0ffee5c0ffee5c0ffee5c0ffee5c0f";

/** A real CrowdSec LAPI: `crowdsec -no-cs -no-capi` with its own database and bouncer key. */
export class Lapi {
  dir = mkdtempSync(join(tmpdir(), "nb-ui-lapi-"));
  url = "";
  async start(): Promise<this> {
    const d = this.dir;
    const port = await freePort();
    this.url = `http://127.0.0.1:${port}`;
    mkdirSync(join(d, "data"));
    writeFileSync(join(d, "creds.yaml"), "");
    writeFileSync(join(d, "simulation.yaml"), "simulation: false\n");
    writeFileSync(join(d, "profiles.yaml"), 'name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == "Ip"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n');
    writeFileSync(
      join(d, "config.yaml"),
      `common:\n  daemonize: false\n  log_media: stdout\n  log_level: warning\nconfig_paths:\n  config_dir: ${d}/\n  data_dir: ${d}/data/\n  simulation_path: ${d}/simulation.yaml\ndb_config:\n  type: sqlite\n  db_path: ${d}/data/crowdsec.db\n  use_wal: true\napi:\n  client:\n    credentials_path: ${d}/creds.yaml\n  server:\n    listen_uri: 127.0.0.1:${port}\n    profiles_path: ${d}/profiles.yaml\n`,
    );
    this.cscli("machines", "add", "tests", "--auto", "--force", "-f", join(d, "creds.yaml"));
    this.cscli("bouncers", "add", "nb-ui-test", "-k", LAPI_KEY);
    start("crowdsec", ["-c", join(d, "config.yaml"), "-no-cs", "-no-capi"], join(d, "lapi.log"));
    await until("the LAPI", async () => (await fetch(`${this.url}/health`).catch(() => fetch(this.url))).status > 0 || undefined);
    return this;
  }
  cscli(...args: string[]): string {
    const out = spawnSync("cscli", ["-c", join(this.dir, "config.yaml"), ...args]);
    if (out.status !== 0) throw new Error(`cscli ${args.join(" ")}: ${out.stderr}${out.stdout}`);
    return out.stdout.toString();
  }
  log(): string {
    return readFileSync(join(this.dir, "lapi.log"), "utf8");
  }
}

/** Debian's Chromium, headless, offline-safe flags, a fresh profile. */
export async function browser(): Promise<{ context: BrowserContext; page: Page }> {
  const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "nb-ui-chrome-")), {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1366, height: 820 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => console.error("page error:", e));
  // Chromium reports what the Content-Security-Policy blocked on the console.
  page.on("console", (msg) => {
    if (msg.text().includes("Content Security Policy")) violations.push(msg.text());
  });
  return { context, page };
}

const violations: string[] = [];

/** What the dashboard's Content-Security-Policy blocked so far (it should block nothing). */
export function cspViolations(): string[] {
  return [...violations];
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** Signs in with the bootstrap admin token (the way in before any user exists), then opens
 *  the Services page (the landing page is the Overview). */
export async function signIn(page: Page, m: Management): Promise<void> {
  await page.goto(m.url);
  await signInWithToken(page, ADMIN);
  await toServices(page);
}

async function toServices(page: Page): Promise<void> {
  await page.waitForSelector("h1:text('Overview')");
  await page.click("nav a:text('Services')");
  await page.waitForSelector("h1:text('Services')");
}

export async function signInWithToken(page: Page, token: string): Promise<void> {
  await page.click("text=Sign in with the admin token");
  await page.fill("#token", token);
  await page.click("#token-submit");
}

/** Signs in as a user with a password, as a person does. */
export async function signInAs(page: Page, m: Management, name: string, password: string): Promise<void> {
  await page.goto(m.url);
  await page.fill("#user", name);
  await page.fill("#password", password);
  await page.click("button[type=submit]");
  await toServices(page);
}
