/** The landing page: requests and denials over time, the top denied sources and countries,
 *  what switching an observe-mode service to enforce would change, and the bouncers' health.
 *  Every figure comes from the API's aggregates; the browser only draws them. */

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { api, ApiError, session, type EnforcePreview, type Proxy, type ServiceBody, type Timeline, type TopLists } from "./api";
import { countryName } from "./countries";
import { clear, h, time } from "./dom";
import { showError } from "./main";

const REFRESH_MS = 10_000;

/** A colour per verdict, stable across charts. */
const COLOURS: Record<string, string> = {
  allow: "#1a7f37",
  denied: "#b42318",
  observed: "#6e56cf",
  ip_restricted: "#d9730d",
  country_restricted: "#a05a2c",
  geo_unavailable: "#7d8594",
  crowdsec_ban: "#b42318",
  crowdsec_captcha: "#e5484d",
  crowdsec_throttle: "#f59e0b",
  crowdsec_unavailable: "#8e1b10",
  appsec_block: "#9b51e0",
  appsec_unavailable: "#5b3a8e",
  no_service: "#4a6fa5",
};
const colour = (name: string) => COLOURS[name] ?? "#3b4252";

const number = new Intl.NumberFormat("en");
const plural = (n: number, one: string, many: string) => `${number.format(n)} ${n === 1 ? one : many}`;

/** One uPlot chart of `series` over the timeline's buckets. */
function chart(box: HTMLElement, t: Timeline, series: { label: string; counts: number[]; colour: string }[], title: string): uPlot {
  const xs = t.buckets.map((b) => Date.parse(b) / 1000);
  const width = Math.max(280, box.clientWidth || 600);
  return new uPlot(
    {
      title,
      width,
      height: 220,
      scales: { x: { time: true } },
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.colour,
          width: 2,
          fill: `${s.colour}22`,
          points: { show: false },
        })),
      ],
      axes: [{}, { size: 60 }],
    },
    [xs, ...series.map((s) => s.counts)],
    box,
  );
}

function summary(t: Timeline): HTMLElement {
  const allowed = t.series.find((s) => s.verdict === "allow")?.total ?? 0;
  const denied = t.series.filter((s) => s.verdict !== "allow").reduce((n, s) => n + s.total, 0);
  const observed = t.observed.reduce((n, v) => n + v, 0);
  const total = allowed + denied;
  const share = total === 0 ? "0" : ((100 * denied) / total).toFixed(1);
  const figure = (id: string, label: string, value: string) =>
    h("div", { class: "figure", id }, h("span", { class: "value" }, value), h("span", { class: "label" }, label));
  return h(
    "div",
    { class: "figures" },
    figure("fig-requests", "requests", number.format(total)),
    figure("fig-denied", `denied (${share} %)`, number.format(denied)),
    figure("fig-observed", "flagged in observe mode", number.format(observed)),
  );
}

function topTables(top: TopLists): HTMLElement {
  const since = h("p", { class: "hint" }, `Denied requests since ${time(top.since)}.`);
  const sources =
    top.sources.length === 0
      ? h("p", { class: "empty" }, "No denied requests.")
      : h(
          "table",
          { id: "top-sources" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Source address"), h("th", { scope: "col" }, "Country"), h("th", { scope: "col" }, "Denied"))),
          h(
            "tbody",
            {},
            top.sources.map((s) =>
              h("tr", {}, h("td", {}, h("code", {}, s.source_ip)), h("td", {}, s.country ? countryName(s.country) : "—"), h("td", {}, number.format(s.requests))),
            ),
          ),
        );
  const countries =
    top.countries.length === 0
      ? h("p", { class: "empty" }, "No denied requests.")
      : h(
          "table",
          { id: "top-countries" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Country"), h("th", { scope: "col" }, "Denied"))),
          h(
            "tbody",
            {},
            top.countries.map((c) =>
              h("tr", {}, h("td", {}, c.country ? `${countryName(c.country)} (${c.country})` : h("span", { class: "hint", title: "the proxy has no GeoIP database (--geo-db)" }, "unknown")), h("td", {}, number.format(c.requests))),
            ),
          ),
        );
  return h(
    "div",
    { class: "columns" },
    h("section", { class: "card" }, h("h2", {}, "Top denied sources"), since, sources),
    h("section", { class: "card" }, h("h2", {}, "Top denied countries"), since.cloneNode(true), countries),
  );
}

/** One service in observe mode: what enforce would have denied, and the switch. */
function preview(p: EnforcePreview, reload: () => void, errors: HTMLElement): HTMLElement {
  const text = h(
    "p",
    { class: "would-change" },
    "Switching ",
    h("strong", {}, p.name),
    ` to enforce would have denied ${plural(p.requests, "request", "requests")} from ${plural(p.addresses, "address", "addresses")} in the last 24 h.`,
  );
  const button =
    session.can("operator") &&
    h(
      "button",
      {
        type: "button",
        class: "primary",
        "data-switch": p.service_id,
        onclick: async (e: Event) => {
          const b = e.currentTarget as HTMLButtonElement;
          if (!window.confirm(`Deny the addresses CrowdSec flags on ${p.name} from now on?`)) return;
          b.disabled = true;
          try {
            const s = await api.service(p.service_id);
            s.restrictions.crowdsec_mode = "enforce";
            await api.updateService(p.service_id, s as ServiceBody);
            reload();
          } catch (err) {
            b.disabled = false;
            clear(errors);
            showError(errors, err);
          }
        },
      },
      `Switch ${p.name} to enforce`,
    );
  return h("li", { "data-service": p.service_id }, text, button);
}

function bouncers(proxies: Proxy[]): HTMLElement {
  const withCrowdSec = proxies.filter((p) => p.supports_crowdsec);
  if (withCrowdSec.length === 0) return h("p", { class: "empty" }, "No proxy has CrowdSec configured (--crowdsec-api-url).");
  const state = (p: Proxy): HTMLElement => {
    const b = p.bouncer;
    if (!p.live) return h("span", { class: "badge off" }, "offline");
    if (!b || !b.running) return h("span", { class: "badge off" }, "idle");
    if (!b.synced) return h("span", { class: "badge warn" }, "not synced yet");
    if (b.stale || b.last_error) return h("span", { class: "badge warn", title: b.last_error ?? "" }, "stale");
    return h("span", { class: "badge ok" }, "synced");
  };
  return h(
    "table",
    { id: "bouncers" },
    h("thead", {}, h("tr", {}, ...["Proxy", "Bouncer", "Decisions", "Last sync"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      withCrowdSec.map((p) =>
        h("tr", { "data-proxy": p.name }, h("td", {}, p.name), h("td", {}, state(p)), h("td", {}, p.bouncer?.running ? number.format(p.bouncer.decisions) : "—"), h("td", {}, time(p.bouncer?.last_sync))),
      ),
    ),
  );
}

export async function renderOverview(page: HTMLElement): Promise<() => void> {
  const services = await api.services();
  const range = h(
    "select",
    { id: "ov-range" },
    h("option", { value: "1h" }, "Last hour"),
    h("option", { value: "24h", selected: true }, "Last 24 hours"),
    h("option", { value: "7d" }, "Last 7 days"),
  );
  range.value = "24h";
  const service = h("select", { id: "ov-service" }, h("option", { value: "" }, "All services"), services.map((s) => h("option", { value: s.id }, s.name)));
  const errors = h("div", {});
  const figures = h("div", {});
  const requests = h("div", { class: "chart", id: "chart-requests" });
  const denials = h("div", { class: "chart", id: "chart-denials" });
  const tops = h("div", {});
  const previews = h("ul", { class: "previews", id: "enforce-preview" });
  const health = h("div", {});
  let charts: uPlot[] = [];
  let loading = false;

  const load = async () => {
    if (loading) return;
    loading = true;
    const q = new URLSearchParams({ range: range.value });
    if (service.value) q.set("service", service.value);
    try {
      const [t, top, would, proxies] = await Promise.all([api.timeline(q), api.top(q), api.enforcePreview(), api.proxies()]);
      clear(errors);
      clear(figures, summary(t));
      for (const c of charts) c.destroy();
      clear(requests);
      clear(denials);
      const denied = t.buckets.map((_, i) => t.series.filter((s) => s.verdict !== "allow").reduce((n, s) => n + s.counts[i], 0));
      const allowed = t.series.find((s) => s.verdict === "allow")?.counts ?? t.buckets.map(() => 0);
      charts = [
        chart(requests, t, [
          { label: "allowed", counts: allowed, colour: colour("allow") },
          { label: "denied", counts: denied, colour: colour("denied") },
          { label: "flagged in observe mode", counts: t.observed, colour: colour("observed") },
        ], "Requests"),
      ];
      const reasons = t.series.filter((s) => s.verdict !== "allow");
      if (reasons.length === 0) denials.append(h("p", { class: "empty" }, "No denials in this period."));
      else charts.push(chart(denials, t, reasons.map((s) => ({ label: s.verdict, counts: s.counts, colour: colour(s.verdict) })), "Denials by reason"));
      clear(tops, topTables(top));
      clear(
        previews,
        would.length === 0
          ? h("li", { class: "empty" }, "No service is in CrowdSec observe mode.")
          : would.map((p) => preview(p, () => void load(), errors)),
      );
      clear(health, bouncers(proxies));
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return showError(page, e);
      clear(errors);
      showError(errors, e);
    } finally {
      loading = false;
    }
  };
  range.addEventListener("change", () => void load());
  service.addEventListener("change", () => void load());

  clear(
    page,
    h("h1", {}, "Overview"),
    h(
      "form",
      { class: "filters", onsubmit: (e: Event) => e.preventDefault() },
      h("label", { for: "ov-range" }, "Period"),
      range,
      h("label", { for: "ov-service" }, "Service"),
      service,
    ),
    errors,
    figures,
    h("section", { class: "card charts" }, requests, denials),
    tops,
    h("section", { class: "card" }, h("h2", {}, "What enforce would change"), previews),
    h("section", { class: "card" }, h("h2", {}, "CrowdSec bouncers"), health),
  );
  await load();
  const timer = window.setInterval(() => void load(), REFRESH_MS);
  const resize = () => {
    for (const c of charts) {
      const box = c.root.parentElement;
      if (box) c.setSize({ width: Math.max(280, box.clientWidth), height: 220 });
    }
  };
  window.addEventListener("resize", resize);
  return () => {
    window.clearInterval(timer);
    window.removeEventListener("resize", resize);
    for (const c of charts) c.destroy();
  };
}
