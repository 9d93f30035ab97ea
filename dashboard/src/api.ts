/** Typed client for nb-management's API. The admin token lives in sessionStorage. */

export type Mode = "off" | "enforce" | "observe";
export type Protocol = "http" | "tcp";

export interface Restrictions {
  cidr_allow: string[];
  cidr_deny: string[];
  country_allow: string[];
  country_deny: string[];
  crowdsec_mode: Mode;
}

export interface Service {
  id: string;
  name: string;
  protocol: Protocol;
  hosts: string[];
  listen: string | null;
  upstream: string;
  restrictions: Restrictions;
  rule_count: number;
  created_at: string;
  updated_at: string;
}

export type ServiceBody = Omit<Service, "rule_count" | "created_at" | "updated_at">;

export interface Bouncer {
  running: boolean;
  synced: boolean;
  stale: boolean;
  decisions: number;
  last_sync?: string;
  last_error?: string;
}

export interface Proxy {
  id: string;
  name: string;
  created_at: string;
  last_seen: string | null;
  live: boolean;
  version: string | null;
  supports_crowdsec: boolean;
  bouncer: Bouncer | null;
  config_revision: number | null;
  config_error: string | null;
  events_dropped: number;
  events_rejected: number;
  crowdsec_key_shared_with: string[];
}

export interface CrowdSecSupport {
  supported: boolean;
  reason?: string;
  live_proxies: number;
  live_proxies_with_crowdsec: number;
}

export interface AccessEvent {
  id: number;
  ts: string;
  proxy_id: string;
  service_id: string;
  protocol: Protocol;
  source_ip: string;
  host?: string;
  method?: string;
  path?: string;
  status?: number;
  duration_ms: number;
  bytes_in: number;
  bytes_out: number;
  deny_reason: string;
  metadata: Record<string, string>;
}

export interface EventPage {
  events: AccessEvent[];
  next_cursor: string | null;
}

export interface Problem {
  field: string;
  message: string;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public problems: Problem[] = [],
  ) {
    super(message);
  }
}

const TOKEN = "nb-admin-token";

export const session = {
  token: (): string | null => sessionStorage.getItem(TOKEN),
  signIn: (t: string) => sessionStorage.setItem(TOKEN, t),
  signOut: () => sessionStorage.removeItem(TOKEN),
};

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Authorization: `Bearer ${session.token() ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, `cannot reach nb-management: ${(e as Error).message}`);
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  const json = text ? JSON.parse(text) : undefined;
  if (!res.ok) {
    throw new ApiError(res.status, json?.error ?? `HTTP ${res.status}`, json?.problems ?? []);
  }
  return json as T;
}

export const api = {
  services: () => call<Service[]>("GET", "/api/v1/services"),
  service: (id: string) => call<Service>("GET", `/api/v1/services/${encodeURIComponent(id)}`),
  createService: (s: ServiceBody) => call<Service>("POST", "/api/v1/services", s),
  updateService: (id: string, s: ServiceBody) =>
    call<Service>("PUT", `/api/v1/services/${encodeURIComponent(id)}`, s),
  deleteService: (id: string) => call<void>("DELETE", `/api/v1/services/${encodeURIComponent(id)}`),
  proxies: () => call<Proxy[]>("GET", "/api/v1/proxies"),
  capabilities: () => call<{ crowdsec: CrowdSecSupport }>("GET", "/api/v1/capabilities"),
  countries: () => call<string[]>("GET", "/api/v1/countries"),
  events: (query: URLSearchParams) => call<EventPage>("GET", `/api/v1/events?${query}`),
};

/** Deny reasons as the proxies write them. */
export const VERDICTS = [
  "ip_restricted",
  "country_restricted",
  "geo_unavailable",
  "crowdsec_ban",
  "crowdsec_captcha",
  "crowdsec_throttle",
  "crowdsec_unavailable",
] as const;
