// The dashboard in a real Chromium against real nb-management (and, where CrowdSec matters, a
// real nb-proxy and CrowdSec LAPI). Screenshots of the main pages go to dashboard/screenshots/.
import { afterAll, afterEach, describe, expect, test } from "vitest";
import type { BrowserContext, Page } from "playwright-core";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { browser, cleanup, cspViolations, Lapi, LAPI_KEY, ManagedProxy, Management, screenshot, signIn, signInWithToken, until } from "./harness";

let context: BrowserContext | undefined;
afterEach(async () => {
  await context?.close();
  context = undefined;
  // Management serves a strict policy (no inline script or style): the UI must live within it.
  expect(cspViolations()).toEqual([]);
});
afterAll(cleanup);

async function open(): Promise<Page> {
  const b = await browser();
  context = b.context;
  return b.page;
}

async function fillService(page: Page, id: string, host: string, upstream: string) {
  await page.click("text=New service");
  await page.fill("#svc-id", id);
  await page.fill("#svc-name", `Service ${id}`);
  await page.fill("#svc-hosts", host);
  await page.fill("#svc-upstream", upstream);
  await page.click("#tab-btn-access");
}

describe("dashboard", () => {
  test("sign in, create a service with CrowdSec enforce, and it persists across a reload", async () => {
    const m = await new Management().start();
    // A live proxy with a LAPI configured is what makes CrowdSec available. Two of them share
    // one bouncer key here, which the proxies page must call out.
    await new ManagedProxy().start(m, { url: "http://127.0.0.1:9", key: LAPI_KEY });
    await new ManagedProxy().start(m, { url: "http://127.0.0.1:9", key: LAPI_KEY });
    const page = await open();

    await page.goto(m.url);
    await signInWithToken(page, "wrong-token-wrong-token");
    await page.waitForSelector("text=The token was refused");
    await screenshot(page, "01-sign-in");
    await signIn(page, m);
    await page.waitForSelector("text=No services yet");

    await fillService(page, "shop", "shop.test", "http://127.0.0.1:9");
    await page.fill("#cidr-deny", "10.0.0.1/8");
    await page.selectOption("#country-deny", "RU");
    expect(await page.textContent("#country-deny + .chips")).toContain("Russia (RU)");
    await page.selectOption("#crowdsec-mode", "enforce");
    expect(await page.textContent("#crowdsec-help")).toContain("everything is denied until the first decision sync");
    await screenshot(page, "02-access-control-tab");

    // The server's validation error appears next to the field it concerns.
    await page.click("button[type=submit]");
    const fieldError = page.locator('[data-field="restrictions.cidr_deny"] .field-error');
    await fieldError.waitFor();
    expect(await fieldError.textContent()).toContain("did you mean 10.0.0.0/8");
    // Said once, where it belongs, without the API's field path.
    expect(await page.locator("text=did you mean 10.0.0.0/8").count()).toBe(1);
    expect(await page.textContent("form")).not.toContain("restrictions.cidr_deny");
    expect(await page.textContent("form")).toContain("Not saved: one problem, marked at its field.");
    await screenshot(page, "03-validation-error");
    await page.fill("#cidr-deny", "10.0.0.0/8");
    await page.click("button[type=submit]");
    await page.waitForSelector("text=Saved.");

    await page.reload();
    await page.click("#tab-btn-access");
    expect(await page.inputValue("#crowdsec-mode")).toBe("enforce");
    expect(await page.inputValue("#cidr-deny")).toBe("10.0.0.0/8");
    expect(await page.textContent("#country-deny + .chips")).toContain("Russia (RU)");

    await page.click("text=Services");
    const row = page.locator("tr", { hasText: "Service shop" });
    await row.waitFor();
    expect(await row.textContent()).toContain("shop.test");
    expect(await row.locator("td").nth(4).textContent()).toMatch(/^3CrowdSec enforce/);
    await screenshot(page, "04-services");

    await until("the shared key to show in the API", async () => {
      const proxies: { crowdsec_key_shared_with: string[] }[] = await m.call("GET", "/api/v1/proxies");
      return proxies.every((p) => p.crowdsec_key_shared_with.length === 1) || undefined;
    });
    await page.click("text=Proxies");
    await page.waitForSelector(".badge.crowdsec");
    const shared = page.locator(".shared-key").first();
    await shared.waitFor({ timeout: 20_000 });
    expect(await shared.textContent()).toContain("shares its CrowdSec bouncer key with edge-");
    await screenshot(page, "05-proxies");

    // On a phone-sized window (420 px) no page is wider than the window: wide tables scroll
    // within themselves.
    await page.setViewportSize({ width: 420, height: 800 });
    const narrow = async (name: string) => {
      const over = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      expect(over, `${name} is wider than 420 px`).toBeLessThanOrEqual(0);
      await screenshot(page, name);
    };
    await narrow("13-narrow-proxies");
    await page.click("text=Services");
    await page.locator("tr", { hasText: "Service shop" }).waitFor();
    await narrow("14-narrow-services");
    await page.locator("tr", { hasText: "Service shop" }).locator("a", { hasText: "Service shop" }).click();
    await page.click("#tab-btn-access");
    await narrow("15-narrow-service-editor");
    await page.click("text=Event log");
    await page.waitForSelector("#export-csv");
    await narrow("16-narrow-event-log");
    await page.setViewportSize({ width: 1366, height: 820 });

    // Delete asks first.
    await page.click("text=Services");
    page.once("dialog", (d) => void d.accept());
    await page.locator("tr", { hasText: "Service shop" }).locator("text=Delete").click();
    await page.waitForSelector("text=No services yet");

    await page.click("text=Sign out");
    await page.waitForSelector("#user");
    // Signing out ended the session on the server: a reload does not sign back in.
    await page.reload();
    await page.waitForSelector("#user");
  });

  test("the Upstream tab sets an https:// upstream's TLS, HTTP version and headers", async () => {
    const m = await new Management().start();
    const page = await open();
    await signIn(page, m);
    await page.waitForSelector("text=No services yet");
    await fillService(page, "pve", "pve.test", "https://10.0.0.5:8006");
    await page.click("#tab-btn-general");
    await page.fill("#svc-path-prefix", "/console/");
    await page.check("#svc-strip-prefix");
    await page.check("#svc-send-proxy-protocol");
    await page.check("#svc-acme");
    await page.click("#tab-btn-upstream");
    await page.fill("#upstream-ca-file", "/etc/nb-proxy/pve-ca.pem");
    await page.fill("#upstream-server-name", "pve.lan");
    await page.fill("#hsts-max-age", "31536000");
    await page.fill("#request-headers", "X-Env: prod\n-X-Debug\nX-Real-IP: 1.2.3.4");
    await page.fill("#response-headers", "X-Frame-Options: DENY");
    await page.uncheck("#https-redirect");
    await screenshot(page, "17-upstream-tab");

    // A header the proxy owns is refused, at its field, with the tab open.
    await page.click("#tab-btn-general");
    await page.click("button[type=submit]");
    const error = page.locator('[data-field="headers.request"] .field-error');
    await error.waitFor();
    expect(await error.textContent()).toBe("X-Real-IP is managed by the proxy and cannot be changed");
    expect(await page.isVisible("#tab-upstream")).toBe(true);
    await page.fill("#request-headers", "X-Env: prod\n-X-Debug");
    await page.click("button[type=submit]");
    await page.waitForSelector("text=Saved.");

    const saved: Record<string, unknown> = await m.call("GET", "/api/v1/services/pve");
    expect(saved.upstream_tls).toEqual({ ca_file: "/etc/nb-proxy/pve-ca.pem", server_name: "pve.lan" });
    expect(saved.headers).toEqual({ request: { set: { "X-Env": "prod" }, remove: ["X-Debug"] }, response: { set: { "X-Frame-Options": "DENY" } } });
    expect(saved.https_redirect).toBe(false);
    expect(saved.hsts).toEqual({ max_age: 31536000 });
    expect(saved.upstream_protocol).toBe("auto");
    expect(saved.path_prefix).toBe("/console/");
    expect(saved.strip_path_prefix).toBe(true);
    expect(saved.send_proxy_protocol).toBe(true);
    expect(saved.tls).toEqual({ acme: true });

    await page.reload();
    expect(await page.isChecked("#svc-acme")).toBe(true);
    await page.click("#tab-btn-upstream");
    expect(await page.inputValue("#upstream-server-name")).toBe("pve.lan");
    expect(await page.inputValue("#request-headers")).toBe("X-Env: prod\n-X-Debug");
    expect(await page.isChecked("#https-redirect")).toBe(false);
    await page.selectOption("#upstream-protocol", "h2c");
    await page.click("button[type=submit]");
    const protocolError = page.locator('[data-field="upstream_protocol"] .field-error');
    await protocolError.waitFor();
    expect(await protocolError.textContent()).toContain("h2c is HTTP/2 without TLS");
  });

  test("without a proxy that supports CrowdSec the dropdown is absent and the tab says why", async () => {
    const m = await new Management().start();
    const page = await open();
    await signIn(page, m);
    await fillService(page, "plain", "plain.test", "http://127.0.0.1:9");
    await page.waitForSelector("#crowdsec-missing");
    expect(await page.locator("#crowdsec-mode").count()).toBe(0);
    const why = await page.textContent("#crowdsec-missing");
    expect(why).toContain("no proxy is connected");
    expect(why).toContain("--crowdsec-api-url");
    expect(await page.locator("#appsec-mode").count()).toBe(0);
    expect(await page.textContent("#appsec-missing")).toContain("--appsec-url");
    await screenshot(page, "06-crowdsec-unavailable");
    await page.click("button[type=submit]");
    await page.waitForSelector("text=Saved.");
  });

  test("full stack: observe shows the would-be ban, enforce denies with crowdsec_ban", async () => {
    const lapi = await new Lapi().start();
    lapi.cscli("decisions", "add", "--ip", "127.0.0.77", "--duration", "5m", "--reason", "dashboard test");
    lapi.cscli("decisions", "add", "--ip", "127.0.0.78", "--type", "captcha", "--duration", "5m", "--reason", "dashboard test");
    const m = await new Management().start();
    const proxy = await new ManagedProxy().start(m, { url: lapi.url, key: LAPI_KEY });
    const up = await upstream();
    const page = await open();
    await signIn(page, m);

    await fillService(page, "web", "web.test", up.url);
    await page.selectOption("#crowdsec-mode", "observe");
    await page.fill("#bypass", "192.0.2.0/24");
    await page.click("button[type=submit]");
    await page.waitForSelector("text=Saved.");

    // Observe: the request is served; the event log shows what CrowdSec would have done.
    await until("the proxy to serve web.test", async () => (await proxy.get("web.test", "127.0.0.77")) === 200 || undefined);
    // Three more from the banned address and two from the captcha one: six flagged requests
    // from two addresses, which the overview must count.
    for (const source of ["127.0.0.77", "127.0.0.77", "127.0.0.77", "127.0.0.78", "127.0.0.78"]) {
      expect(await proxy.get("web.test", source)).toBe(200);
    }
    await page.click("text=Event log");
    await page.check("#f-observe");
    const observed = page.locator("tr.event", { hasText: "127.0.0.77" }).first();
    await observed.waitFor({ timeout: 20_000 });
    expect(await observed.locator(".badge.observe").textContent()).toBe("observe · ban");
    expect(await observed.locator("td").nth(5).textContent()).toBe("200");
    expect(await observed.locator(".badge.deny").count()).toBe(0);
    await observed.focus();
    await page.keyboard.press("Enter");
    const details = page.locator("tr.details:not([hidden]) pre").first();
    expect(await details.textContent()).toContain('"crowdsec_mode": "observe"');
    expect(await page.locator("text=Load older").isVisible()).toBe(false);
    // The proxy by its name, the time with its zone.
    expect(await observed.locator("td").nth(1).textContent()).toBe(proxy.name);
    expect(await observed.locator("td").nth(0).textContent()).toMatch(/\d{2}:\d{2}:\d{2}.*(UTC|GMT)/);
    await screenshot(page, "07-event-log-observe");

    // Export: every event the filters match, as the file the API serves.
    const csvDownload = page.waitForEvent("download");
    await page.click("#export-csv");
    const csvFile = await csvDownload;
    expect(csvFile.suggestedFilename()).toBe("events.csv");
    const csv = readFileSync((await csvFile.path())!, "utf8").split("\r\n");
    expect(csv[0]).toMatch(/^id,ts,proxy_id,service_id,/);
    expect(csv.some((r) => r.includes(",127.0.0.77,") && r.includes(",web,"))).toBe(true);
    const jsonlDownload = page.waitForEvent("download");
    await page.click("#export-jsonl");
    const lines = readFileSync((await (await jsonlDownload).path())!, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.every((e) => e.metadata?.crowdsec_mode === "observe")).toBe(true);

    // A filter changed while a row is open applies at once (the refresh alone keeps the row).
    await page.fill("#f-source", "192.0.2.99");
    await page.press("#f-source", "Enter");
    await page.waitForSelector("text=No events match.");
    expect(await page.locator("tr.details:not([hidden])").count()).toBe(0);
    await page.fill("#f-source", "");
    await page.press("#f-source", "Enter");
    await observed.waitFor();

    // The overview: the charts and figures count the traffic, and "what enforce would
    // change" names the six flagged requests and two addresses, with the switch.
    await page.click("nav a:text('Overview')");
    const would = page.locator("#enforce-preview li[data-service=web] .would-change");
    await would.waitFor();
    await until("the overview to count every flagged request", async () => {
      if ((await would.textContent())?.includes("6 requests")) return true;
      await page.selectOption("#ov-range", "1h");
      await page.selectOption("#ov-range", "24h");
      return undefined;
    }, 30_000);
    expect(await would.textContent()).toBe("Switching Service web to enforce would have denied 6 requests from 2 addresses in the last 24 h.");
    expect(Number((await page.textContent("#fig-observed .value"))!.replace(/,/g, ""))).toBeGreaterThanOrEqual(6);
    expect(await page.locator("#chart-requests canvas").count()).toBeGreaterThan(0);
    const bouncer = page.locator(`#bouncers tr[data-proxy='${proxy.name}']`);
    expect(await bouncer.locator(".badge").textContent()).toBe("synced");
    expect(await bouncer.locator("td").nth(2).textContent()).toBe("2");
    await screenshot(page, "24-overview-observe");
    page.once("dialog", (d) => void d.accept());
    await page.click("button[data-switch=web]");
    await page.waitForSelector("text=No service is in CrowdSec observe mode.");

    // Enforce: the next request from that address is denied with crowdsec_ban.
    await page.goto(`${m.url}/#/services/web`);
    await page.click("#tab-btn-access");
    expect(await page.inputValue("#bypass")).toBe("192.0.2.0/24");
    expect(await page.inputValue("#crowdsec-mode")).toBe("enforce");
    await until("enforce to apply", async () => (await proxy.get("web.test", "127.0.0.77")) === 403 || undefined);
    await page.click("text=Event log");
    await page.selectOption("#f-verdict", "crowdsec_ban");
    // Until the filtered page replaces it, the unfiltered one shows this client's observe rows.
    const denied = page.locator("tr.event", { hasText: "127.0.0.77", has: page.locator(".badge.deny") }).first();
    await denied.waitFor({ timeout: 20_000 });
    expect(await denied.locator(".badge.deny").textContent()).toBe("crowdsec_ban");
    expect(await denied.locator("td").nth(5).textContent()).toBe("403");
    await screenshot(page, "08-event-log-enforce");

    // The denial reaches the overview's top list.
    await page.click("nav a:text('Overview')");
    await page.waitForSelector("#top-sources >> text=127.0.0.77");
    expect(await page.textContent("#top-countries")).toContain("unknown");
    await screenshot(page, "25-overview-enforce");

    await page.click("text=Proxies");
    await page.waitForSelector("text=2 decisions");
    await screenshot(page, "09-proxies-bouncer");

    // What the denied client sees: the built-in ban page, then a status set on the Denied
    // Clients tab, which persists. The page is looked at in Chromium.
    let ban = await proxy.page("web.test", "127.0.0.77");
    expect(ban.status).toBe(403);
    expect(ban.body).toContain("blocked for suspicious activity");
    await page.goto(`${m.url}/#/services/web`);
    await page.click("#tab-btn-denied");
    await page.fill("#ban-status", "451");
    await page.fill("#throttle-retry-after", "30");
    await screenshot(page, "10-denied-clients-tab");
    await page.click("button[type=submit]");
    await page.waitForSelector("text=Saved.");
    await until("the ban status to apply", async () => (await proxy.get("web.test", "127.0.0.77")) === 451 || undefined);
    await page.reload();
    await page.click("#tab-btn-denied");
    expect(await page.inputValue("#ban-status")).toBe("451");
    expect(await page.inputValue("#throttle-retry-after")).toBe("30");
    ban = await proxy.page("web.test", "127.0.0.77");
    expect(ban.status).toBe(451);
    const reference = /<dt>Reference<\/dt><dd>([0-9a-f]{16})<\/dd>/.exec(ban.body)?.[1];
    expect(reference).toBeDefined();
    const banPage = await context!.newPage();
    await banPage.setContent(ban.body);
    expect(await banPage.textContent("h1")).toBe("Access denied");
    expect(await banPage.textContent("main")).toContain(reference!);
    await screenshot(banPage, "11-ban-page");

    // A captcha site set on the same tab: a captcha decision now gets the challenge page.
    const secretFile = join(mkdtempSync(join(tmpdir(), "nb-ui-captcha-")), "turnstile.secret");
    writeFileSync(secretFile, "0x4AAAAAAA-dashboard-test-secret\n");
    await page.click("#tab-btn-denied");
    await page.selectOption("#captcha-provider", "turnstile");
    await page.fill("#captcha-site-key", "0x4AAAAAAAdashboard");
    await page.fill("#captcha-secret-file", secretFile);
    await page.click("button[type=submit]");
    await page.waitForSelector("text=Saved.");
    let challenge = { status: 0, body: "" };
    await until("the captcha site to apply", async () => {
      challenge = await proxy.page("web.test", "127.0.0.78");
      return challenge.body.includes("cf-turnstile") || undefined;
    });
    expect(challenge.status).toBe(403);
    expect(challenge.body).toContain('data-sitekey="0x4AAAAAAAdashboard"');
    await page.reload();
    await page.click("#tab-btn-denied");
    expect(await page.inputValue("#captcha-provider")).toBe("turnstile");
    expect(await page.inputValue("#captcha-secret-file")).toBe(secretFile);
    const challengePage = await context!.newPage();
    // The widget's script is on the provider's site, out of reach here: the page without it.
    await challengePage.route("https://challenges.cloudflare.com/**", (r) => r.abort());
    await challengePage.setContent(challenge.body, { waitUntil: "domcontentloaded" });
    expect(await challengePage.textContent("h1")).toBe("Please confirm you are human");
    expect(await challengePage.isVisible("button[type=submit]")).toBe(true);
    await screenshot(challengePage, "12-captcha-challenge");

    // A second target that refuses connections: requests are retried on the live one, the
    // dead one is ejected, and the proxies page shows it from the proxy's own report.
    await page.click("#tab-btn-general");
    await page.fill("#svc-more-upstreams", "http://127.0.0.1:9");
    await page.click("#tab-btn-upstream");
    await page.fill("#max-failures", "2");
    await page.click("button[type=submit]");
    await page.waitForSelector("text=Saved.");
    const saved: Record<string, unknown> = await m.call("GET", "/api/v1/services/web");
    expect(saved.upstreams).toEqual([up.url, "http://127.0.0.1:9"]);
    expect(saved.passive_health).toEqual({ max_failures: 2, eject_secs: 30 });
    const statuses: number[] = [];
    await until("the dead target to be ejected", async () => {
      statuses.push(await proxy.get("web.test", "127.0.0.9"));
      const proxies: { targets: { target: string; healthy: boolean }[] }[] = await m.call("GET", "/api/v1/proxies");
      return proxies.some((p) => p.targets.some((t) => t.target === "http://127.0.0.1:9" && !t.healthy)) || undefined;
    });
    expect(statuses.every((s) => s === 200), `retried on the live target: ${statuses}`).toBe(true);
    await page.click("text=Proxies");
    await page.waitForSelector("text=1/2 healthy");
    expect(await page.textContent(".target-down")).toBe("web: http://127.0.0.1:9 (ejected)");
    await screenshot(page, "18-proxies-targets");
    up.close();
  });
});

/** A tiny upstream answering 200. */
async function upstream(): Promise<{ url: string; close: () => void }> {
  const { createServer } = await import("node:http");
  const server = createServer((_, res) => res.end("upstream"));
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, close: () => server.close() };
}
