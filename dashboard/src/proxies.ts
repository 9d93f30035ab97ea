import { api, session, type Proxy } from "./api";
import { clear, h, time } from "./dom";
import { dangerButton, placeProblems, shownOnce } from "./forms";

function bouncerState(p: Proxy): HTMLElement | string {
  if (!p.supports_crowdsec) return "—";
  const b = p.bouncer;
  if (!b || !b.running) return h("span", { class: "hint" }, "idle (no service uses CrowdSec)");
  if (!b.synced) return h("span", { class: "badge warn" }, "not synced yet");
  const stale = b.stale || b.last_error
    ? h("span", { class: "badge warn", title: b.last_error ?? "no successful poll for three update intervals" }, `stale since ${time(b.last_sync)}`)
    : h("span", { class: "badge ok" }, "synced");
  return h("span", {}, stale, ` ${b.decisions} ${b.decisions === 1 ? "decision" : "decisions"}`);
}

/** "3/4 healthy", with the targets out of rotation named below. */
function targetState(p: Proxy): HTMLElement | string {
  const targets = p.targets ?? [];
  if (targets.length === 0) return "—";
  const down = targets.filter((t) => !t.healthy);
  const summary = h("span", { class: `badge ${down.length === 0 ? "ok" : "warn"}` }, `${targets.length - down.length}/${targets.length} healthy`);
  return h(
    "span",
    { class: "targets" },
    summary,
    ...down.map((t) => h("div", { class: "hint target-down" }, `${t.service}: ${t.target} (${t.reason ?? "down"})`)),
  );
}

/** A form that creates a proxy: its token is shown once, with the command that starts it. */
function newProxyForm(page: HTMLElement): HTMLElement {
  const name = h("input", { id: "new-proxy-name", name: "name", required: true, autocomplete: "off", placeholder: "edge-1" });
  const group = h("input", { id: "new-proxy-group", name: "group", autocomplete: "off", placeholder: "default" });
  const summary = h("div", {});
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        try {
          const created = await api.createProxy({ name: name.value.trim(), group: group.value.trim() || undefined });
          await renderProxies(page);
          page.prepend(
            shownOnce(
              "proxy-token",
              `Proxy "${created.proxy.name}" created in group "${created.proxy.group}"`,
              created.token,
              `Copy its token now: it is shown once, and only its hash is stored. Save it to a file readable only by the proxy's user, then start: nb-proxy --management-url ${location.origin} --token-file FILE`,
            ),
          );
        } catch (err) {
          placeProblems(form, summary, err);
        }
      },
    },
    h("h2", {}, "Add a proxy"),
    h("div", { class: "field" }, h("label", { for: "new-proxy-name" }, "Name"), name),
    h(
      "div",
      { class: "field" },
      h("label", { for: "new-proxy-group" }, "Group"),
      group,
      h("p", { class: "hint" }, "The proxy is sent the services that target its group. Empty: default."),
    ),
    summary,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create proxy")),
  );
  return form;
}

export async function renderProxies(page: HTMLElement): Promise<void> {
  clear(page, h("p", { class: "loading" }, "Loading proxies…"));
  const proxies = await api.proxies();
  const operator = session.can("operator");
  clear(
    page,
    h("h1", {}, "Proxies"),
    proxies.length === 0
      ? h("p", { class: "empty" }, operator ? "No proxy yet. Add one below and start nb-proxy with its token." : "No proxy yet.")
      : h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ...["Name", "Group", "Version", "Last seen", "CrowdSec", "Bouncer", "Config", "Upstream targets", "Dropped events", ...(operator ? [""] : [])].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            proxies.map((p) =>
              h(
                "tr",
                { "data-proxy": p.name },
                h(
                  "td",
                  {},
                  p.name,
                  " ",
                  h("span", { class: `badge ${p.live ? "ok" : "off"}` }, p.live ? "live" : "offline"),
                  p.crowdsec_key_shared_with.length > 0
                    ? h(
                        "div",
                        { class: "error shared-key", title: "The LAPI hands each decision change to whichever proxy polls first: the others miss bans. Create one bouncer key per proxy (cscli bouncers add NAME)." },
                        `shares its CrowdSec bouncer key with ${p.crowdsec_key_shared_with.join(", ")}`,
                      )
                    : "",
                ),
                h("td", {}, p.group),
                h("td", {}, p.version ?? "—"),
                h("td", {}, time(p.last_seen)),
                h("td", {}, p.supports_crowdsec ? h("span", { class: "badge crowdsec" }, "CrowdSec") : "—"),
                h("td", {}, bouncerState(p)),
                h("td", {}, p.config_error ? h("span", { class: "error" }, p.config_error) : p.config_revision === null ? "—" : `revision ${p.config_revision}`),
                h("td", {}, targetState(p)),
                h("td", {}, p.events_rejected > 0 ? `${p.events_dropped} (${p.events_rejected} refused)` : String(p.events_dropped)),
                operator &&
                  h(
                    "td",
                    {},
                    dangerButton("Revoke", `Revoke proxy "${p.name}"? Its token stops working at once and its stream closes; its events stay.`, page, async () => {
                      await api.revokeProxy(p.id);
                      await renderProxies(page);
                    }),
                  ),
              ),
            ),
          ),
        ),
    operator && newProxyForm(page),
  );
}
