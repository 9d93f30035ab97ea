// Users and roles in a real Chromium against real nb-management: each role signs in with its
// password and is offered only what it may do; an operator's edit shows on the admin's audit
// page; users and personal tokens are managed from the dashboard.
import { afterAll, afterEach, describe, expect, test } from "vitest";
import type { BrowserContext, Page } from "playwright-core";
import { browser, cleanup, cspViolations, ManagedProxy, Management, screenshot, signInAs, until } from "./harness";

let context: BrowserContext | undefined;
afterEach(async () => {
  await context?.close();
  context = undefined;
  expect(cspViolations()).toEqual([]);
});
afterAll(cleanup);

const PASSWORD = "correct horse battery staple";

async function open(): Promise<Page> {
  const b = await browser();
  context = b.context;
  return b.page;
}

async function signOut(page: Page): Promise<void> {
  await page.click("text=Sign out");
  await page.waitForSelector("#user");
}

/** A write made from the page's own session, as a script in the page could try it. */
function writeFromPage(page: Page): Promise<number> {
  return page.evaluate(async () => {
    const me = await (await fetch("/api/v1/session")).json();
    const res = await fetch("/api/v1/services/demo", { method: "DELETE", headers: { "X-CSRF-Token": me.csrf_token } });
    return res.status;
  });
}

describe("people", () => {
  test("each role sees what it may do, and the audit page shows who changed what", async () => {
    const m = await new Management().start();
    for (const [name, role] of [["ada", "admin"], ["otto", "operator"], ["vera", "viewer"]]) {
      await m.call("POST", "/api/v1/users", { name, role, password: PASSWORD });
    }
    await m.call("POST", "/api/v1/services", { id: "demo", protocol: "http", hosts: ["demo.test"], upstream: "http://127.0.0.1:9" });
    const page = await open();

    await page.goto(m.url);
    await page.fill("#user", "vera");
    await page.fill("#password", "not the password");
    await page.click("button[type=submit]");
    await page.waitForSelector("text=Wrong user name or password.");

    // A viewer reads, and is offered no write.
    await signInAs(page, m, "vera", PASSWORD);
    expect(await page.textContent(".whoami")).toBe("vera (viewer)");
    await page.waitForSelector("a[href='#/services/demo']");
    expect(await page.locator("text=New service").count()).toBe(0);
    expect(await page.locator("button:text('Delete')").count()).toBe(0);
    expect(await page.locator("nav a:text('Users')").count()).toBe(0);
    expect(await page.locator("nav a:text('Audit')").count()).toBe(0);
    await page.click("a[href='#/services/demo']");
    await page.waitForSelector("#svc-id");
    expect(await page.locator("button:text('Save')").count()).toBe(0);
    await screenshot(page, "20-viewer-service");
    // The server refuses the viewer's write whatever the page offers.
    expect(await writeFromPage(page)).toBe(403);
    // Nor can a viewer create or revoke proxies.
    await page.click("nav a:text('Proxies')");
    await page.waitForSelector("h1:text('Proxies')");
    expect(await page.locator("#new-proxy-name").count()).toBe(0);
    expect(await page.locator("button:text('Revoke')").count()).toBe(0);
    await signOut(page);

    // An operator edits the service; users and the audit log are not theirs.
    await signInAs(page, m, "otto", PASSWORD);
    expect(await page.locator("nav a:text('Users')").count()).toBe(0);
    await page.click("a[href='#/services/demo']");
    await page.click("#tab-btn-access");
    await page.fill("#cidr-deny", "192.0.2.0/24");
    await page.click("button:text('Save')");
    await page.waitForSelector(".ok[role=status]");
    await signOut(page);

    // The admin sees that edit on the audit page: who, from where, which field, before and after.
    await signInAs(page, m, "ada", PASSWORD);
    await page.click("nav a:text('Audit')");
    const row = page.locator("tr[data-kind=service][data-action=update]");
    await row.waitFor();
    const text = await row.textContent();
    expect(text).toContain("otto");
    expect(text).toContain("127.0.0.1");
    expect(text).toContain("restrictions.cidr_deny: [] → [\"192.0.2.0/24\"]");
    await page.selectOption("#audit-kind", "session");
    // The unfiltered page already shows session rows: wait for the filtered one to replace it.
    await page.waitForSelector("tr[data-kind=service]", { state: "detached" });
    await page.waitForSelector("tr[data-kind=session][data-action=sign_in_failed]");
    expect(await page.locator("tr[data-kind=service]").count()).toBe(0);
    await page.selectOption("#audit-kind", "");
    await page.waitForSelector("tr[data-kind=service]");
    await screenshot(page, "21-audit");

    // Users: a problem under its field, then a new user, then a role change.
    await page.click("nav a:text('Users')");
    await page.fill("#new-user-name", "pat");
    await page.fill("#new-user-password", "short");
    await page.click("button:text('Add user')");
    await page.waitForSelector("#new-user-password + .field-error:text('too short')");
    await page.fill("#new-user-password", "another long passphrase");
    await page.click("button:text('Add user')");
    await page.waitForSelector("tr[data-user=pat]");
    await page.selectOption("tr[data-user=pat] select", "operator");
    await page.waitForFunction(() => (document.querySelector("tr[data-user=pat] select") as HTMLSelectElement | null)?.value === "operator");
    const users = await m.call("GET", "/api/v1/users");
    expect(users.find((u: { name: string }) => u.name === "pat").role).toBe("operator");
    await screenshot(page, "22-users");

    // Personal tokens: shown once, usable, then revoked.
    await page.click("nav a:text('API tokens')");
    await page.fill("#new-token-name", "ci");
    await page.click("button:text('Create token')");
    const secret = (await page.textContent("#token-secret"))!;
    expect(secret).toMatch(/^nbu_[0-9a-f]{64}$/);
    const call = (token: string) => fetch(`${m.url}/api/v1/services`, { headers: { Authorization: `Bearer ${token}` } });
    expect((await call(secret)).status).toBe(200);
    await screenshot(page, "23-token-created");
    page.once("dialog", (d) => void d.accept());
    await page.locator("tr[data-token=ci]").locator("button:text('Revoke')").click();
    await page.waitForSelector("tr[data-token=ci] .badge:text('revoked')");
    expect((await call(secret)).status).toBe(401);
  });

  test("an operator creates a proxy in a group, it connects with the copied token, and is revoked", async () => {
    const m = await new Management().start();
    await m.call("POST", "/api/v1/users", { name: "otto", role: "operator", password: PASSWORD });
    const { createServer } = await import("node:http");
    const upstream = createServer((_, res) => res.end("eu upstream"));
    await new Promise<void>((ok) => upstream.listen(0, "127.0.0.1", ok));
    const upstreamPort = (upstream.address() as { port: number }).port;
    await m.call("POST", "/api/v1/services", { id: "eu-web", protocol: "http", hosts: ["eu.test"], upstream: `http://127.0.0.1:${upstreamPort}`, groups: ["eu"] });
    const page = await open();
    await context!.grantPermissions(["clipboard-read", "clipboard-write"], { origin: m.url });
    await signInAs(page, m, "otto", PASSWORD);
    await page.click("nav a:text('Proxies')");
    await page.waitForSelector("text=No proxy yet. Add one below");

    // A bad group name is said under its field.
    await page.fill("#new-proxy-name", "edge-eu");
    await page.fill("#new-proxy-group", "Europe West");
    await page.click("button:text('Create proxy')");
    await page.waitForSelector("#new-proxy-group + .field-error:text('is not a group name')");
    await page.fill("#new-proxy-group", "eu");
    await page.click("button:text('Create proxy')");
    const token = (await page.textContent("#proxy-token"))!;
    expect(token).toMatch(/^nbp_[0-9a-f]{64}$/);
    expect(await page.textContent(".notice")).toContain(`--management-url ${m.url}`);
    await page.click("#proxy-token-copy");
    await page.waitForSelector("#proxy-token-copied:text('Copied.')");
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(token);
    await screenshot(page, "26-proxy-created");

    // The proxy starts with that token: live, in its group, serving that group's service.
    const proxy = await new ManagedProxy("edge-eu").start(m, undefined, token);
    await page.reload();
    const row = page.locator("tr[data-proxy=edge-eu]");
    await row.locator(".badge.ok:text('live')").waitFor();
    expect(await row.locator("td").nth(1).textContent()).toBe("eu");
    await until("the eu service to be served", async () => (await proxy.get("eu.test", "127.0.0.5")) === 200 || undefined);
    await screenshot(page, "27-proxies-groups");

    // Revoked from the page: gone from the list, and its token no longer works.
    page.once("dialog", (d) => void d.accept());
    await row.locator("button:text('Revoke')").click();
    await page.waitForSelector("tr[data-proxy=edge-eu]", { state: "detached" });
    const report = await fetch(`${m.url}/api/v1/proxy/report`, { method: "PUT", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: "{}" });
    expect(report.status).toBe(401);
    upstream.close();
  });
});
