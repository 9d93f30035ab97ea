import { api, ApiError, session, type Mode, type Problem, type Service, type ServiceBody } from "./api";
import { countryName, loadCountries } from "./countries";
import { clear, h } from "./dom";
import { showError } from "./main";

export async function renderServices(page: HTMLElement): Promise<void> {
  clear(page, h("p", { class: "loading" }, "Loading services…"));
  const services = await api.services();
  // Viewers read; the server refuses their writes anyway, so the page does not offer them.
  const writable = session.can("operator");
  const table = h(
    "table",
    {},
    h("thead", {}, h("tr", {}, ...["Name", "Protocol", "Hosts / port", "Upstream", "Access rules", ""].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      services.map((s) =>
        h(
          "tr",
          {},
          h("td", {}, h("a", { href: `#/services/${encodeURIComponent(s.id)}` }, s.name), h("div", { class: "hint" }, s.id)),
          h("td", {}, s.protocol.toUpperCase()),
          h("td", {}, s.protocol === "http" ? (s.hosts ?? []).map((host) => host + (s.path_prefix ?? "")).join(", ") : [s.listen ?? "", ...(s.hosts ?? [])].join(", ")),
          h("td", {}, h("code", {}, s.upstreams?.length ? s.upstreams.join(", ") : s.upstream)),
          h(
            "td",
            {},
            String(s.rule_count),
            s.restrictions.crowdsec_mode !== "off" &&
              h("span", { class: `badge ${s.restrictions.crowdsec_mode}` }, `CrowdSec ${s.restrictions.crowdsec_mode}`),
          ),
          h("td", {}, writable && h("button", { class: "danger", onclick: () => void remove(page, s) }, "Delete")),
        ),
      ),
    ),
  );
  clear(
    page,
    h("div", { class: "title" }, h("h1", {}, "Services"), writable && h("a", { class: "button primary", href: "#/services/new" }, "New service")),
    services.length === 0
      ? h("p", { class: "empty" }, "No services yet. Create one to put it behind the proxies.")
      : table,
  );
}

async function remove(page: HTMLElement, s: Service): Promise<void> {
  if (!confirm(`Delete service "${s.name}"? The proxies stop serving it at once.`)) return;
  try {
    await api.deleteService(s.id);
    await renderServices(page);
  } catch (e) {
    showError(page, e);
  }
}

const MODES: { value: Mode; label: string; help: string }[] = [
  { value: "off", label: "Off", help: "CrowdSec is not consulted for this service." },
  {
    value: "enforce",
    label: "Enforce",
    help: "Deny addresses CrowdSec flags. Fails closed: everything is denied until the first decision sync.",
  },
  {
    value: "observe",
    label: "Observe",
    help: "Never deny: log what would have been denied (an observe badge in the event log), to audit before enforcing.",
  },
];

/** A number input's value; empty (the default) is undefined. */
function number(input: HTMLInputElement): number | undefined {
  const v = input.value.trim();
  return v === "" ? undefined : Number(v);
}

type HeaderChanges = NonNullable<NonNullable<ServiceBody["headers"]>["request"]>;

/** A direction's header changes as the editor shows them: `Name: value` (set), `+Name: value`
 * (add), `-Name` (remove). */
function headerLines(c: HeaderChanges | undefined): string {
  if (!c) return "";
  return [
    ...Object.entries(c.set ?? {}).map(([k, v]) => `${k}: ${v}`),
    ...Object.entries(c.add ?? {}).map(([k, v]) => `+${k}: ${v}`),
    ...(c.remove ?? []).map((k) => `-${k}`),
  ].join("\n");
}

function parseHeaderLines(text: string): HeaderChanges {
  const out: { set: Record<string, string>; add: Record<string, string>; remove: string[] } = { set: {}, add: {}, remove: [] };
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    if (line.startsWith("-")) {
      out.remove.push(line.slice(1).trim());
      continue;
    }
    const add = line.startsWith("+");
    const rest = add ? line.slice(1) : line;
    const colon = rest.indexOf(":");
    // A line without a colon is sent as a name with an empty value: the API names it if bad.
    const name = (colon < 0 ? rest : rest.slice(0, colon)).trim();
    const value = colon < 0 ? "" : rest.slice(colon + 1).trim();
    (add ? out.add : out.set)[name] = value;
  }
  return out;
}

function lines(text: string): string[] {
  return text
    .split(/[\n,]/)
    .map((l) => l.trim())
    .filter((l) => l !== "");
}

/** A country list picked by name, kept as ISO codes. */
function countryPicker(id: string, label: string, codes: string[], all: string[]) {
  const selected = new Set(codes);
  const chips = h("ul", { class: "chips", "aria-label": `${label}: selected` });
  const select = h(
    "select",
    { id, "aria-label": label },
    h("option", { value: "" }, "Add a country…"),
    all.map((c) => h("option", { value: c }, `${countryName(c)} (${c})`)),
  );
  const draw = () =>
    clear(
      chips,
      [...selected].map((c) =>
        h(
          "li",
          {},
          `${countryName(c)} (${c}) `,
          h("button", { type: "button", class: "link", "aria-label": `Remove ${countryName(c)}`, onclick: () => (selected.delete(c), draw()) }, "×"),
        ),
      ),
    );
  select.addEventListener("change", () => {
    if (select.value) selected.add(select.value);
    select.value = "";
    draw();
  });
  draw();
  return { el: h("div", { class: "field", "data-field": `restrictions.${id.replace("-", "_")}` }, h("label", { for: id }, label), select, chips), codes: () => [...selected] };
}

const SAVED = "Saved. The proxies apply it within a second.";
/** A message for the next editor render (after a new service's page replaces this one). */
let flash: string | undefined;

export async function renderServiceEditor(page: HTMLElement, id?: string): Promise<void> {
  clear(page, h("p", { class: "loading" }, "Loading…"));
  const service = id ? await api.service(id) : undefined;
  const [caps, countries] = await Promise.all([api.capabilities(service?.groups ?? ["default"]), loadCountries()]);
  const r = service?.restrictions;
  const field = (name: string, label: string, input: HTMLElement, hint?: string) =>
    h("div", { class: "field", "data-field": name }, h("label", { for: input.id }, label), input, hint && h("p", { class: "hint" }, hint));

  const idInput = h("input", { id: "svc-id", value: service?.id ?? "", disabled: !!service, required: true });
  const nameInput = h("input", { id: "svc-name", value: service?.name ?? "" });
  const groups = h("input", { id: "svc-groups", value: (service?.groups ?? ["default"]).join(", ") });
  const protocol = h(
    "select",
    { id: "svc-protocol" },
    h("option", { value: "http" }, "HTTP (routed by Host)"),
    h("option", { value: "tcp" }, "TCP (own listener)"),
  );
  protocol.value = service?.protocol ?? "http";
  const hosts = h("input", { id: "svc-hosts", value: (service?.hosts ?? []).join(", "), placeholder: "app.example.com, *.apps.example.com" });
  const pathPrefix = h("input", { id: "svc-path-prefix", value: service?.path_prefix ?? "", placeholder: "/ (the whole host)" });
  const stripPrefix = h("input", { id: "svc-strip-prefix", type: "checkbox" });
  stripPrefix.checked = service?.strip_path_prefix ?? false;
  const sendProxy = h("input", { id: "svc-send-proxy-protocol", type: "checkbox" });
  sendProxy.checked = service?.send_proxy_protocol ?? false;
  const acme = h("input", { id: "svc-acme", type: "checkbox" });
  acme.checked = service?.tls?.acme ?? false;
  const listen = h("input", { id: "svc-listen", value: service?.listen ?? "", placeholder: "0.0.0.0:5432" });
  const targets = service?.upstreams?.length ? service.upstreams : [service?.upstream ?? ""];
  const upstream = h("input", { id: "svc-upstream", value: targets[0], placeholder: "http://10.0.0.5:8080", required: true });
  const moreUpstreams = h("textarea", { id: "svc-more-upstreams", rows: 2, placeholder: "http://10.0.0.6:8080" }, targets.slice(1).join("\n"));
  const balancing = h(
    "select",
    { id: "load-balancing" },
    h("option", { value: "round_robin" }, "Round robin: each target in turn"),
    h("option", { value: "least_connections" }, "Least connections: the target with the fewest requests in flight"),
  );
  balancing.value = service?.load_balancing ?? "round_robin";
  const passive = service?.passive_health;
  const maxFailures = h("input", { id: "max-failures", type: "number", min: "0", value: passive?.max_failures?.toString() ?? "", placeholder: "3" });
  const ejectSecs = h("input", { id: "eject-secs", type: "number", min: "1", value: passive?.eject_secs?.toString() ?? "", placeholder: "30" });
  const check = service?.health_check;
  const checkOn = h("input", { id: "health-check", type: "checkbox" });
  checkOn.checked = !!check;
  const checkPath = h("input", { id: "health-check-path", value: check?.path ?? "", placeholder: "/healthz (empty: connect only)" });
  const checkInterval = h("input", { id: "health-check-interval", type: "number", min: "1", value: check?.interval_secs?.toString() ?? "", placeholder: "10" });
  const upstreamProtocol = h(
    "select",
    { id: "upstream-protocol" },
    h("option", { value: "auto" }, "Auto: HTTP/2 by ALPN over https://, else HTTP/1.1"),
    h("option", { value: "http1" }, "HTTP/1.1 only"),
    h("option", { value: "h2c" }, "HTTP/2 over cleartext (h2c, gRPC)"),
  );
  upstreamProtocol.value = service?.upstream_protocol ?? "auto";
  const caFile = h("input", { id: "upstream-ca-file", value: service?.upstream_tls?.ca_file ?? "", placeholder: "/etc/nb-proxy/upstream-ca.pem" });
  const serverName = h("input", { id: "upstream-server-name", value: service?.upstream_tls?.server_name ?? "", placeholder: "the upstream's host" });
  const skipVerify = h("input", { id: "upstream-skip-verify", type: "checkbox" });
  skipVerify.checked = service?.upstream_tls?.skip_verify ?? false;
  const httpsRedirect = h("input", { id: "https-redirect", type: "checkbox" });
  httpsRedirect.checked = service?.https_redirect ?? true;
  const hstsMaxAge = h("input", { id: "hsts-max-age", type: "number", min: "0", value: service?.hsts?.max_age?.toString() ?? "", placeholder: "off" });
  const hstsSubdomains = h("input", { id: "hsts-subdomains", type: "checkbox" });
  hstsSubdomains.checked = service?.hsts?.include_subdomains ?? false;
  const requestHeaders = h("textarea", { id: "request-headers", rows: 3, placeholder: "X-Env: prod\n+X-Tag: added\n-X-Debug" }, headerLines(service?.headers?.request));
  const responseHeaders = h("textarea", { id: "response-headers", rows: 3, placeholder: "X-Frame-Options: DENY\n-Server" }, headerLines(service?.headers?.response));
  const cidrAllow = h("textarea", { id: "cidr-allow", rows: 3 }, (r?.cidr_allow ?? []).join("\n"));
  const cidrDeny = h("textarea", { id: "cidr-deny", rows: 3 }, (r?.cidr_deny ?? []).join("\n"));
  const bypass = h("textarea", { id: "bypass", rows: 2 }, (r?.bypass ?? []).join("\n"));
  const countryAllow = countryPicker("country-allow", "Country allow list", r?.country_allow ?? [], countries);
  const countryDeny = countryPicker("country-deny", "Country deny list", r?.country_deny ?? [], countries);
  const currentMode: Mode = r?.crowdsec_mode ?? "off";
  const rem = service?.remediation;
  type AppSec = "off" | "enforce" | "observe";
  const currentAppSec: AppSec = r?.appsec_mode ?? "off";
  let appsecMode = (): AppSec => currentAppSec;
  let appsecOpen = (): boolean => r?.appsec_fail_open ?? false;
  let appsec: HTMLElement;
  if (caps.appsec.supported) {
    const select = h(
      "select",
      { id: "appsec-mode" },
      h("option", { value: "off" }, "Off"),
      h("option", { value: "enforce" }, "Enforce"),
      h("option", { value: "observe" }, "Observe"),
    );
    select.value = currentAppSec;
    const open = h("input", { id: "appsec-fail-open", type: "checkbox" });
    open.checked = r?.appsec_fail_open ?? false;
    appsecMode = () => select.value as AppSec;
    appsecOpen = () => open.checked;
    appsec = h(
      "div",
      { class: "field", "data-field": "restrictions.appsec_mode" },
      h("label", { for: "appsec-mode" }, "CrowdSec AppSec (WAF)"),
      select,
      h("p", { class: "hint" }, "HTTP only, after IP reputation. Enforce denies what AppSec blocks (appsec_block) and, unless the box below is ticked, everything while AppSec cannot be reached (appsec_unavailable). Observe never denies."),
      h("label", { for: "appsec-fail-open" }, open, " Let requests through while AppSec cannot be reached"),
    );
  } else {
    appsec = h(
      "div",
      { class: "field notice", id: "appsec-missing", "data-field": "restrictions.appsec_mode" },
      h("h3", {}, "CrowdSec AppSec is not available"),
      h("p", {}, caps.appsec.reason ?? "No live proxy supports AppSec."),
      h("p", { class: "hint" }, "Start every proxy with --appsec-url (CrowdSec 1.6 or later, with its AppSec component). The option appears here once they report in."),
      currentAppSec !== "off" && h("p", {}, `This service keeps its current mode: ${currentAppSec}.`),
    );
  }
  const banStatus = h("input", { id: "ban-status", type: "number", min: "400", max: "599", value: rem?.ban?.status?.toString() ?? "", placeholder: "403" });
  const banRedirect = h("input", { id: "ban-redirect", value: rem?.ban?.redirect_url ?? "", placeholder: "https://example.com/blocked" });
  const banTemplate = h("input", { id: "ban-template", value: rem?.ban?.template_file ?? "", placeholder: "/etc/nb-proxy/ban.html" });
  const throttleStatus = h("input", { id: "throttle-status", type: "number", min: "400", max: "599", value: rem?.throttle?.status?.toString() ?? "", placeholder: "429" });
  const captchaProvider = h(
    "select",
    { id: "captcha-provider" },
    h("option", { value: "" }, "The proxies' own (--captcha-provider), or the ban answer"),
    h("option", { value: "turnstile" }, "Cloudflare Turnstile"),
    h("option", { value: "hcaptcha" }, "hCaptcha"),
    h("option", { value: "recaptcha" }, "Google reCAPTCHA v2"),
  );
  captchaProvider.value = rem?.captcha?.provider ?? "";
  const captchaSiteKey = h("input", { id: "captcha-site-key", value: rem?.captcha?.site_key ?? "" });
  const captchaSecretFile = h("input", { id: "captcha-secret-file", value: rem?.captcha?.secret_key_file ?? "", placeholder: "/etc/nb-proxy/captcha.secret" });
  const captchaTtl = h("input", { id: "captcha-ttl", type: "number", min: "60", max: "604800", value: rem?.captcha?.cookie_ttl_secs?.toString() ?? "", placeholder: "1800" });
  const retryAfter = h("input", { id: "throttle-retry-after", type: "number", min: "1", max: "86400", value: rem?.throttle?.retry_after_secs?.toString() ?? "", placeholder: "60" });

  let crowdsec: HTMLElement;
  let mode = (): Mode => currentMode;
  if (caps.crowdsec.supported) {
    const select = h("select", { id: "crowdsec-mode" }, MODES.map((m) => h("option", { value: m.value }, m.label)));
    select.value = currentMode;
    const help = h("p", { class: "hint", id: "crowdsec-help" });
    const explain = () => (help.textContent = MODES.find((m) => m.value === select.value)!.help);
    select.addEventListener("change", explain);
    select.setAttribute("aria-describedby", "crowdsec-help");
    explain();
    mode = () => select.value as Mode;
    crowdsec = h(
      "div",
      { class: "field", "data-field": "restrictions.crowdsec_mode" },
      h("label", { for: "crowdsec-mode" }, "CrowdSec IP Reputation"),
      select,
      help,
      h("ul", { class: "hint" }, MODES.map((m) => h("li", {}, h("strong", {}, m.label), `: ${m.help}`))),
    );
  } else {
    crowdsec = h(
      "div",
      { class: "field notice", id: "crowdsec-missing", "data-field": "restrictions.crowdsec_mode" },
      h("h3", {}, "CrowdSec IP Reputation is not available"),
      h("p", {}, caps.crowdsec.reason ?? "No live proxy supports CrowdSec."),
      h("p", { class: "hint" }, "To enable it, start every proxy with --crowdsec-api-url and --crowdsec-api-key (a bouncer key from `cscli bouncers add`). The option appears here once they report in."),
      currentMode !== "off" && h("p", {}, `This service keeps its current mode: ${currentMode}.`),
    );
  }

  const general = h(
    "section",
    { id: "tab-general", role: "tabpanel", "aria-labelledby": "tab-btn-general" },
    field("id", "Id", idInput, "Lower-case letters, digits, '-', '_' or '.'; cannot be changed later."),
    field("name", "Name", nameInput),
    field("groups", "Proxy groups", groups, "Comma-separated: the proxies of these groups serve it. CrowdSec and AppSec need every live proxy of them to support it."),
    field("protocol", "Protocol", protocol),
    field("hosts", "Hosts", hosts, "HTTP: comma-separated host names. TCP, optional: TLS server names (SNI) that pick this service when several TCP services share a listen address; TLS passes through untouched, and a service without names takes the other connections."),
    field("path_prefix", "Path prefix", pathPrefix, "HTTP, optional: serve only this path and below it (/admin). Services can share a host with different prefixes; the longest wins, and its access rules apply."),
    h(
      "div",
      { class: "field", "data-field": "strip_path_prefix" },
      h("label", { for: "svc-strip-prefix" }, stripPrefix, " Remove the prefix from the path sent upstream"),
    ),
    h(
      "div",
      { class: "field", "data-field": "tls" },
      h("label", { for: "svc-acme" }, acme, " Automatic certificate (ACME)"),
      h("p", { class: "hint", "data-field": "tls.acme" }, "HTTP: each proxy gets a certificate for these hosts from its ACME CA (Let's Encrypt by default) and renews it. The hosts' DNS must point at the proxies, with port 80 (http-01) or 443 (tls-alpn-01) reaching them. Not for wildcard hosts."),
    ),
    field("listen", "Listen address", listen, "TCP: the address the proxies listen on."),
    field("upstream", "Upstream", upstream, "HTTP: http://host:port or https://host:port. TCP: host:port."),
    field("upstreams", "More targets", moreUpstreams, "One per line, the same kind as the upstream above: requests (TCP: connections) are balanced across all of them. See the Upstream tab."),
    h(
      "div",
      { class: "field", "data-field": "send_proxy_protocol" },
      h("label", { for: "svc-send-proxy-protocol" }, sendProxy, " Open upstream connections with a PROXY protocol v2 header naming the client"),
      h("p", { class: "hint" }, "Only for upstreams that expect it (nginx proxy_protocol, HAProxy accept-proxy, Postgres behind a PROXY-aware balancer)."),
    ),
  );
  const upstreamTab = h(
    "section",
    { id: "tab-upstream", role: "tabpanel", "aria-labelledby": "tab-btn-upstream", hidden: true },
    h("p", { class: "hint" }, "How the proxies choose among the targets and notice one is down (HTTP and TCP); then, for HTTP, how they talk to the upstream and what they change on the way."),
    field("load_balancing", "Load balancing", balancing),
    field("passive_health.max_failures", "Eject a target after this many failures in a row", maxFailures, "Refused or timed-out connections and upstream timeouts. Empty means 3; 0 never ejects."),
    field("passive_health.eject_secs", "Keep an ejected target out for (seconds)", ejectSecs, "Empty means 30."),
    h(
      "div",
      { class: "field", "data-field": "health_check" },
      h("label", { for: "health-check" }, checkOn, " Check each target on an interval"),
    ),
    field("health_check.path", "Health check path", checkPath, "HTTP: GET this path; a status below 400 is healthy. Empty (and TCP): connecting is enough."),
    field("health_check.interval_secs", "Check every (seconds)", checkInterval, "Empty means 10. Each check may take 2 s at most."),
    field("upstream_protocol", "Upstream protocol", upstreamProtocol),
    field("upstream_tls.ca_file", "Trusted CA file", caFile, "https:// upstreams: a PEM file on each proxy's machine (a self-signed appliance's certificate or its CA). Empty: the system's CA store."),
    field("upstream_tls.server_name", "TLS server name", serverName, "Sent by SNI and checked in the certificate. Empty: the upstream's host."),
    h(
      "div",
      { class: "field", "data-field": "upstream_tls.skip_verify" },
      h("label", { for: "upstream-skip-verify" }, skipVerify, " Do not verify the upstream's certificate (insecure)"),
    ),
    h(
      "div",
      { class: "field", "data-field": "https_redirect" },
      h("label", { for: "https-redirect" }, httpsRedirect, " Redirect plain HTTP to HTTPS (308) for hosts the proxies have a certificate for"),
    ),
    field("hsts.max_age", "HSTS max-age (seconds)", hstsMaxAge, "Strict-Transport-Security on responses over TLS. Empty: not sent. 31536000 is a year."),
    h(
      "div",
      { class: "field", "data-field": "hsts.include_subdomains" },
      h("label", { for: "hsts-subdomains" }, hstsSubdomains, " HSTS includes subdomains"),
    ),
    field("headers.request", "Request headers", requestHeaders, "One per line. 'Name: value' sets, '+Name: value' adds, '-Name' removes. Applied to what goes upstream."),
    field("headers.response", "Response headers", responseHeaders, "The same, applied to what the client receives."),
  );
  const access = h(
    "section",
    { id: "tab-access", role: "tabpanel", "aria-labelledby": "tab-btn-access", hidden: true },
    h("p", { class: "hint" }, "Checked in this order; the first denial wins: CIDR, then country, then CrowdSec, then AppSec."),
    field("restrictions.cidr_allow", "CIDR allow list", cidrAllow, "One per line. When set, only these addresses may connect."),
    field("restrictions.cidr_deny", "CIDR deny list", cidrDeny, "One per line."),
    countryAllow.el,
    countryDeny.el,
    crowdsec,
    appsec,
    field("restrictions.bypass", "Bypass list", bypass, "One per line. These addresses skip the country and CrowdSec checks (monitoring, your office); the CIDR lists above still apply. Logged as allowed with bypass."),
  );
  const denied = h(
    "section",
    { id: "tab-denied", role: "tabpanel", "aria-labelledby": "tab-btn-denied", hidden: true },
    h("p", { class: "hint" }, "What a denied HTTP client sees. Browsers get a page, API clients (Accept: application/json) JSON, others text; each shows a reference that the event log's entry carries. Observe mode never shows any of this."),
    field("remediation.ban.status", "Ban status", banStatus, "Every denial except throttle: CIDR, country, CrowdSec ban. 400–599; empty means 403."),
    field("remediation.ban.redirect_url", "Redirect denied clients to", banRedirect, "An absolute http(s) URL (302) instead of a page. Leave empty to show the page."),
    field("remediation.ban.template_file", "Page template", banTemplate, "An HTML file on each proxy's machine, with {{reason}}, {{reference}}, {{client_ip}}, {{host}}, {{service}}, {{status}}. Empty: the built-in page."),
    field("remediation.throttle.status", "Throttle status", throttleStatus, "CrowdSec throttle decisions. Empty means 429."),
    field("remediation.throttle.retry_after_secs", "Retry-After (seconds)", retryAfter, "Sent with throttle answers. Empty means 60."),
    field("remediation.captcha", "Captcha challenge", captchaProvider, "CrowdSec captcha decisions get a challenge; solving it lets that address in for the cookie's lifetime."),
    field("remediation.captcha.site_key", "Captcha site key", captchaSiteKey),
    field("remediation.captcha.secret_key_file", "Captcha secret key file", captchaSecretFile, "A file on each proxy's machine; the secret never goes through management."),
    field("remediation.captcha.cookie_ttl_secs", "Solved challenge lasts (seconds)", captchaTtl, "Empty means 1800 (30 min)."),
  );
  const tabs = [
    ["general", "General", general],
    ["upstream", "Upstream", upstreamTab],
    ["access", "Access Control", access],
    ["denied", "Denied Clients", denied],
  ] as const;
  const tabButtons = tabs.map(([key, label]) =>
    h("button", { type: "button", role: "tab", id: `tab-btn-${key}`, "aria-controls": `tab-${key}`, onclick: () => show(key) }, label),
  );
  const show = (key: string) => {
    tabs.forEach(([k, , panel], i) => {
      panel.hidden = k !== key;
      tabButtons[i].setAttribute("aria-selected", String(k === key));
    });
  };
  show("general");

  const summary = h("div", { role: "alert" }, flash && h("p", { class: "ok", role: "status" }, flash));
  flash = undefined;
  const body = (): ServiceBody => ({
    id: service?.id ?? idInput.value.trim(),
    name: nameInput.value.trim() || idInput.value.trim(),
    groups: lines(groups.value),
    protocol: protocol.value as ServiceBody["protocol"],
    hosts: lines(hosts.value),
    path_prefix: protocol.value === "http" ? pathPrefix.value.trim() || null : null,
    strip_path_prefix: protocol.value === "http" && stripPrefix.checked,
    listen: protocol.value === "tcp" ? listen.value.trim() || null : null,
    ...upstreamTargets(upstream.value, moreUpstreams.value),
    load_balancing: balancing.value as NonNullable<ServiceBody["load_balancing"]>,
    passive_health: { max_failures: number(maxFailures) ?? 3, eject_secs: number(ejectSecs) ?? 30 },
    health_check: checkOn.checked
      ? {
          path: protocol.value === "http" ? checkPath.value.trim() || undefined : undefined,
          interval_secs: number(checkInterval) ?? 10,
          timeout_secs: Math.min(2, number(checkInterval) ?? 10),
        }
      : undefined,
    send_proxy_protocol: sendProxy.checked,
    tls: protocol.value === "http" && acme.checked ? { acme: true } : undefined,
    ...(protocol.value === "http"
      ? {
          upstream_protocol: upstreamProtocol.value as NonNullable<ServiceBody["upstream_protocol"]>,
          upstream_tls:
            caFile.value.trim() || serverName.value.trim() || skipVerify.checked
              ? {
                  ca_file: caFile.value.trim() || undefined,
                  server_name: serverName.value.trim() || undefined,
                  skip_verify: skipVerify.checked,
                }
              : undefined,
          https_redirect: httpsRedirect.checked,
          hsts: hstsMaxAge.value.trim() ? { max_age: Number(hstsMaxAge.value), include_subdomains: hstsSubdomains.checked } : undefined,
          headers: { request: parseHeaderLines(requestHeaders.value), response: parseHeaderLines(responseHeaders.value) },
        }
      : {}),
    restrictions: {
      cidr_allow: lines(cidrAllow.value),
      cidr_deny: lines(cidrDeny.value),
      country_allow: countryAllow.codes(),
      country_deny: countryDeny.codes(),
      crowdsec_mode: mode(),
      appsec_mode: appsecMode(),
      appsec_fail_open: appsecOpen(),
      appsec_oversized_body: r?.appsec_oversized_body,
      bypass: lines(bypass.value),
    },
    remediation: {
      ban: {
        status: number(banStatus),
        redirect_url: banRedirect.value.trim() || undefined,
        template_file: banTemplate.value.trim() || undefined,
      },
      throttle: { status: number(throttleStatus), retry_after_secs: number(retryAfter) },
      captcha: captchaProvider.value
        ? {
            provider: captchaProvider.value as "turnstile" | "hcaptcha" | "recaptcha",
            site_key: captchaSiteKey.value.trim(),
            secret_key_file: captchaSecretFile.value.trim(),
            cookie_ttl_secs: number(captchaTtl),
          }
        : undefined,
    },
  });
  const form = h(
    "form",
    {
      class: "card editor",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        form.querySelectorAll(".field-error").forEach((el) => el.remove());
        clear(summary);
        try {
          const saved = service ? await api.updateService(service.id, body()) : await api.createService(body());
          const target = `#/services/${encodeURIComponent(saved.id)}`;
          if (location.hash === target) {
            clear(summary, h("p", { class: "ok", role: "status" }, SAVED));
          } else {
            flash = SAVED;
            location.hash = target;
          }
        } catch (err) {
          if (err instanceof ApiError && err.problems.length > 0) {
            // Each message once, under its field; the summary only counts them.
            const n = err.problems.length;
            clear(summary, h("p", { class: "error" }, n === 1 ? "Not saved: one problem, marked at its field." : `Not saved: ${n} problems, marked at their fields.`));
            placeProblems(form, err.problems, show);
          } else {
            showError(summary, err);
          }
        }
      },
    },
    h("div", { role: "tablist", class: "tabs" }, tabButtons),
    general,
    upstreamTab,
    access,
    denied,
    summary,
    h("div", { class: "actions" }, h("a", { href: "#/services", class: "button" }, "Cancel"), session.can("operator") && h("button", { type: "submit", class: "primary" }, "Save")),
  );
  clear(page, h("h1", {}, service ? `Service ${service.name}` : "New service"), form);
}

/** One target goes in `upstream`; several go in `upstreams` (the first from the Upstream field). */
function upstreamTargets(first: string, more: string): Pick<ServiceBody, "upstream" | "upstreams"> {
  const rest = lines(more);
  return rest.length === 0 ? { upstream: first.trim(), upstreams: [] } : { upstream: "", upstreams: [first.trim(), ...rest] };
}

/** Puts each server-side problem under the field it concerns (an element inside a list,
 * `hosts[1]`, goes under its list), and opens that field's tab. A problem with no field on
 * the form goes above the buttons, named in words rather than by its API path. */
function placeProblems(form: HTMLElement, problems: Problem[], show: (tab: string) => void): void {
  let first: string | undefined;
  for (const p of problems) {
    const field = p.field.replace(/\[\d+\]$/, "");
    const target = form.querySelector(`[data-field="${CSS.escape(field)}"]`);
    if (target) {
      target.append(h("p", { class: "field-error", role: "alert" }, p.message));
    } else {
      const words = field.split(".").pop()!.replace(/_/g, " ");
      form.querySelector(".actions")?.before(h("p", { class: "field-error", role: "alert" }, `${words[0].toUpperCase()}${words.slice(1)}: ${p.message}`));
    }
    first ??= field.startsWith("restrictions.")
      ? "access"
      : field.startsWith("remediation.")
        ? "denied"
        : /^(upstream_protocol|upstream_tls|headers|https_redirect|hsts|load_balancing|passive_health|health_check)/.test(field)
          ? "upstream"
          : "general";
  }
  if (first) show(first);
}
