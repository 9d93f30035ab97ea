import { api, VERDICTS, type AccessEvent } from "./api";
import { observeBadge } from "./badge";
import { clear, h, time } from "./dom";
import { showError } from "./main";

const REFRESH_MS = 3000;

function row(e: AccessEvent, proxyNames: Map<string, string>): HTMLElement[] {
  const observed = observeBadge(e);
  const details = h("tr", { class: "details", hidden: true }, h("td", { colspan: 7 }, h("pre", {}, JSON.stringify(e, null, 2))));
  const toggle = () => {
    details.hidden = !details.hidden;
    main.setAttribute("aria-expanded", String(!details.hidden));
  };
  const main = h(
    "tr",
    {
      class: "event",
      tabindex: 0,
      "aria-expanded": "false",
      onclick: toggle,
      onkeydown: (ev: Event) => {
        const k = (ev as KeyboardEvent).key;
        if (k === "Enter" || k === " ") {
          ev.preventDefault();
          toggle();
        }
      },
    },
    h("td", {}, time(e.ts)),
    h("td", {}, proxyNames.get(e.proxy_id) ?? h("span", { class: "hint", title: e.proxy_id }, "(removed proxy)")),
    h("td", {}, e.service_id || h("span", { class: "hint" }, "(no service)")),
    h("td", {}, h("code", {}, e.source_ip)),
    h("td", {}, e.protocol === "tcp" ? "TCP" : `${e.host ?? ""}${e.path ?? ""}`),
    h("td", {}, e.status === undefined ? "—" : String(e.status)),
    h(
      "td",
      {},
      e.deny_reason && h("span", { class: "badge deny" }, e.deny_reason),
      observed && h("span", { class: "badge observe", title: "allowed in observe mode; CrowdSec would have denied it" }, `observe · ${observed}`),
    ),
  );
  return [main, details];
}

/** What a load is for: a filter change replaces the rows; the timer's refresh leaves them
 * while the reader has one open; "older" appends the next page. */
type Load = "filter" | "refresh" | "older";

function download(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export async function renderEvents(page: HTMLElement): Promise<() => void> {
  const [services, proxies] = await Promise.all([api.services(), api.proxies()]);
  const proxyNames = new Map(proxies.map((p) => [p.id, p.name]));
  const service = h("select", { id: "f-service" }, h("option", { value: "" }, "All services"), services.map((s) => h("option", { value: s.id }, s.name)));
  const verdict = h("select", { id: "f-verdict" }, h("option", { value: "" }, "Any verdict"), h("option", { value: "allow" }, "allowed"), VERDICTS.map((v) => h("option", { value: v }, v)));
  const observe = h("input", { id: "f-observe", type: "checkbox" });
  const source = h("input", { id: "f-source", placeholder: "203.0.113.7", size: 18 });
  const body = h("tbody", {});
  const status = h("p", { class: "hint", "aria-live": "polite" }, "Loading events…");
  const more = h("button", { type: "button", hidden: true }, "Load older");
  const errors = h("div", {});
  let cursor: string | null = null;

  const filters = () => {
    const q = new URLSearchParams();
    if (service.value) q.set("service", service.value);
    if (verdict.value) q.set("verdict", verdict.value);
    if (observe.checked) q.set("observe", "true");
    if (source.value.trim()) q.set("source_ip", source.value.trim());
    return q;
  };
  const load = async (what: Load) => {
    const q = filters();
    q.set("limit", "50");
    if (what === "older" && cursor) q.set("cursor", cursor);
    try {
      const page = await api.events(q);
      clear(errors);
      const rows = page.events.flatMap((e) => row(e, proxyNames));
      if (what === "older") body.append(...rows);
      else if (what === "filter" || !body.querySelector('tr[aria-expanded="true"]')) clear(body, rows);
      cursor = page.next_cursor ?? null;
      more.hidden = cursor === null;
      const shown = body.querySelectorAll("tr.event").length;
      status.textContent =
        shown === 0
          ? "No events match."
          : `${shown} ${shown === 1 ? "event" : "events"}, newest first. Refreshes every ${REFRESH_MS / 1000} s.`;
    } catch (e) {
      clear(errors);
      showError(errors, e);
    }
  };
  for (const el of [service, verdict, observe, source]) el.addEventListener("change", () => void load("filter"));
  more.addEventListener("click", () => void load("older"));
  const exportAs = async (format: "csv" | "jsonl") => {
    const q = filters();
    q.set("format", format);
    try {
      download(await api.exportEvents(q), `events.${format}`);
    } catch (e) {
      clear(errors);
      showError(errors, e);
    }
  };

  clear(
    page,
    h("h1", {}, "Reverse-proxy event log"),
    h(
      "form",
      { class: "filters", onsubmit: (e: Event) => (e.preventDefault(), void load("filter")) },
      h("label", { for: "f-service" }, "Service"),
      service,
      h("label", { for: "f-verdict" }, "Deny reason"),
      verdict,
      h("label", { class: "check" }, observe, " Observe only"),
      h("label", { for: "f-source" }, "Source IP"),
      source,
      h("button", { type: "submit" }, "Apply"),
      h("span", { class: "export" },
        h("button", { type: "button", id: "export-csv", title: "Every event these filters match", onclick: () => void exportAs("csv") }, "Export CSV"),
        h("button", { type: "button", id: "export-jsonl", title: "Every event these filters match", onclick: () => void exportAs("jsonl") }, "Export JSON lines"),
      ),
    ),
    errors,
    status,
    h(
      "table",
      { class: "events" },
      h("thead", {}, h("tr", {}, ...["Time", "Proxy", "Service", "Source IP", "Host / path", "Status", "Deny reason"].map((t) => h("th", { scope: "col" }, t)))),
      body,
    ),
    more,
  );
  await load("filter");
  const timer = window.setInterval(() => void load("refresh"), REFRESH_MS);
  return () => window.clearInterval(timer);
}
