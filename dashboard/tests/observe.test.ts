import { describe, expect, test } from "vitest";
import type { AccessEvent } from "../src/api";
import { observeBadge } from "../src/badge";

const base: AccessEvent = {
  id: 1, ts: "2026-11-22T10:00:00.000Z", proxy_id: "p", service_id: "web", protocol: "http",
  source_ip: "203.0.113.7", duration_ms: 1, bytes_in: 0, bytes_out: 0, deny_reason: "", metadata: {},
};

describe("observe badge", () => {
  test("names the decision type an observe entry would have been denied for", () => {
    for (const t of ["ban", "captcha", "throttle", "unavailable"] as const) {
      expect(observeBadge({ ...base, metadata: { crowdsec_mode: "observe", crowdsec_verdict: `crowdsec_${t}` } })).toBe(t);
    }
  });
  test("is absent for enforce entries and unflagged ones", () => {
    expect(observeBadge({ ...base, deny_reason: "crowdsec_ban", metadata: { crowdsec_mode: "enforce", crowdsec_verdict: "crowdsec_ban" } })).toBeUndefined();
    expect(observeBadge(base)).toBeUndefined();
  });
});
