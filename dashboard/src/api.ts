/** Typed client for nb-management's API. The admin token lives in sessionStorage. */

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
  capabilities: () => call<{ crowdsec: CrowdSecSupport; appsec: CrowdSecSupport }>("GET", "/api/v1/capabilities"),
  countries: () => call<string[]>("GET", "/api/v1/countries"),
  events: (query: URLSearchParams) => call<EventPage>("GET", `/api/v1/events?${query}`),
  /** Every event the filters match, as a file (`csv` or `jsonl`). */
  exportEvents: async (query: URLSearchParams): Promise<Blob> => {
    let res: Response;
    try {
      res = await fetch(`/api/v1/events/export?${query}`, { headers: { Authorization: `Bearer ${session.token() ?? ""}` } });
    } catch (e) {
      throw new ApiError(0, `cannot reach nb-management: ${(e as Error).message}`);
    }
    if (!res.ok) {
      const json = await res.json().catch(() => undefined);
      throw new ApiError(res.status, json?.error ?? `HTTP ${res.status}`);
    }
    return res.blob();
  },
};

/** Deny reasons as the proxies write them: every verdict but `allow`. */
export const VERDICTS: readonly Verdict[] = verdictValues.filter((v) => v !== "allow");
