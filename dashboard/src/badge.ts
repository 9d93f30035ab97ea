import type { AccessEvent } from "./api";

/** What CrowdSec would have done, for entries allowed in observe mode. */
export function observeBadge(e: AccessEvent): string | undefined {
  const m = e.metadata;
  if (m?.crowdsec_mode !== "observe" || !m.crowdsec_verdict) return undefined;
  return m.crowdsec_verdict.replace(/^crowdsec_/, "");
}
