import type { AccessEvent } from "./api";

/** What CrowdSec would have done, for entries allowed in observe mode. */
export function observeBadge(e: AccessEvent): string | undefined {
  if (e.metadata.crowdsec_mode !== "observe" || !e.metadata.crowdsec_verdict) return undefined;
  return e.metadata.crowdsec_verdict.replace(/^crowdsec_/, "");
}
