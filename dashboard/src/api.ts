/** Typed client for nb-management's API. The browser holds the session in an HttpOnly cookie;
 *  this module keeps only the CSRF token that writes must echo, in memory. */

import type { components } from "./generated/api";
import { verdictValues } from "./generated/api";

// Every type below comes from nb-management's OpenAPI document (dashboard/openapi.json,
// generated into src/generated/api.ts at build time): nothing is restated by hand.
type Schemas = components["schemas"];
export type Mode = Schemas["CrowdSecMode"];
export type Protocol = Schemas["Protocol"];
export type Verdict = Schemas["Verdict"];
export type Restrictions = Schemas["RestrictionsSpec"];
export type Service = Schemas["ServiceView"];
export type ServiceBody = Schemas["ServiceBody"];
export type Bouncer = Schemas["BouncerReport"];
export type Proxy = Schemas["ProxyView"];
export type CrowdSecSupport = Schemas["CrowdSecSupport"];
export type AccessEvent = Schemas["EventView"];
export type EventPage = Schemas["EventList"];
export type Problem = Schemas["FieldProblem"];
export type Role = Schemas["Role"];
export type Me = Schemas["SessionView"];
export type User = Schemas["UserView"];
export type Token = Schemas["TokenView"];
export type CreatedToken = Schemas["CreatedToken"];
export type AuditEntry = Schemas["AuditView"];
export type AuditPage = Schemas["AuditList"];
export type Timeline = Schemas["Timeline"];
export type TopLists = Schemas["TopLists"];
export type EnforcePreview = Schemas["EnforcePreview"];
export type CreatedProxy = Schemas["CreatedProxy"];

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public problems: Problem[] = [],
  ) {
    super(message);
  }
}

const ROLES: readonly Role[] = ["viewer", "operator", "admin"];

/** Who is signed in (with the CSRF token), once known. */
export const session = {
  me: null as Me | null,
  /** Whether the signed-in person's role includes `role`. */
  can: (role: Role): boolean => !!session.me && ROLES.indexOf(session.me.role) >= ROLES.indexOf(role),
  /** The current session, if the cookie still holds one. */
  load: async (): Promise<Me | null> => {
    try {
      session.me = await call<Me>("GET", "/api/v1/session");
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) session.me = null;
      else throw e;
    }
    return session.me;
  },
  signIn: async (body: { name: string; password: string } | { token: string }): Promise<Me> => {
    session.me = await call<Me>("POST", "/api/v1/session", body);
    return session.me;
  },
  signOut: async (): Promise<void> => {
    try {
      await call<void>("DELETE", "/api/v1/session");
    } finally {
      session.me = null;
    }
  },
};

async function send(method: string, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session.me?.csrf_token) headers["X-CSRF-Token"] = session.me.csrf_token;
  try {
    return await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, `cannot reach nb-management: ${(e as Error).message}`);
  }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await send(method, path, body);
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  const json = text ? JSON.parse(text) : undefined;
  if (!res.ok) {
    throw new ApiError(res.status, json?.error ?? `HTTP ${res.status}`, json?.problems ?? []);
  }
  return json as T;
}

const at = (base: string, id: string) => `${base}/${encodeURIComponent(id)}`;

export const api = {
  services: () => call<Service[]>("GET", "/api/v1/services"),
  service: (id: string) => call<Service>("GET", `/api/v1/services/${encodeURIComponent(id)}`),
  createService: (s: ServiceBody) => call<Service>("POST", "/api/v1/services", s),
  updateService: (id: string, s: ServiceBody) =>
    call<Service>("PUT", `/api/v1/services/${encodeURIComponent(id)}`, s),
  deleteService: (id: string) => call<void>("DELETE", `/api/v1/services/${encodeURIComponent(id)}`),
  proxies: () => call<Proxy[]>("GET", "/api/v1/proxies"),
  createProxy: (p: { name: string; group?: string }) => call<CreatedProxy>("POST", "/api/v1/proxies", p),
  revokeProxy: (id: string) => call<void>("DELETE", at("/api/v1/proxies", id)),
  /** What a service targeting `groups` can use (the whole fleet without them). */
  capabilities: (groups?: string[]) =>
    call<{ crowdsec: CrowdSecSupport; appsec: CrowdSecSupport }>(
      "GET",
      groups?.length ? `/api/v1/capabilities?${new URLSearchParams({ groups: groups.join(",") })}` : "/api/v1/capabilities",
    ),
  countries: () => call<string[]>("GET", "/api/v1/countries"),
  events: (query: URLSearchParams) => call<EventPage>("GET", `/api/v1/events?${query}`),
  /** Every event the filters match, as a file (`csv` or `jsonl`). */
  exportEvents: async (query: URLSearchParams): Promise<Blob> => {
    const res = await send("GET", `/api/v1/events/export?${query}`);
    if (!res.ok) {
      const json = await res.json().catch(() => undefined);
      throw new ApiError(res.status, json?.error ?? `HTTP ${res.status}`);
    }
    return res.blob();
  },
  users: () => call<User[]>("GET", "/api/v1/users"),
  createUser: (u: { name: string; role: Role; password: string }) => call<User>("POST", "/api/v1/users", u),
  updateUser: (name: string, change: { role?: Role; password?: string }) => call<User>("PUT", at("/api/v1/users", name), change),
  deleteUser: (name: string) => call<void>("DELETE", at("/api/v1/users", name)),
  tokens: () => call<Token[]>("GET", "/api/v1/tokens"),
  createToken: (t: { name: string; expires_in_days?: number }) => call<CreatedToken>("POST", "/api/v1/tokens", t),
  revokeToken: (id: string) => call<void>("DELETE", at("/api/v1/tokens", id)),
  audit: (query: URLSearchParams) => call<AuditPage>("GET", `/api/v1/audit?${query}`),
  timeline: (query: URLSearchParams) => call<Timeline>("GET", `/api/v1/stats/timeline?${query}`),
  top: (query: URLSearchParams) => call<TopLists>("GET", `/api/v1/stats/top?${query}`),
  enforcePreview: () => call<EnforcePreview[]>("GET", "/api/v1/stats/enforce-preview"),
};

/** Deny reasons as the proxies write them: every verdict but `allow`. */
export const VERDICTS: readonly Verdict[] = verdictValues.filter((v) => v !== "allow");
