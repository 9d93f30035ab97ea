import { api, type AuditEntry } from "./api";
import { clear, h, time } from "./dom";
import { showError } from "./main";

const KINDS = ["service", "proxy", "user", "token", "session"];
const ACTIONS = ["create", "update", "delete", "revoke", "sign_in", "sign_in_failed", "sign_out"];

/** "restrictions.crowdsec_mode: off → enforce" for each changed field. */
function describe(e: AuditEntry): HTMLElement {
  const pick = (v: unknown, path: string): unknown =>
    path.split(".").reduce<unknown>((o, k) => (o && typeof o === "object" ? (o as Record<string, unknown>)[k] : undefined), v);
  const show = (v: unknown) => (v === undefined ? "—" : JSON.stringify(v));
  if (e.before && e.after) {
    return h("ul", { class: "changes" }, e.changed.map((f) => h("li", {}, h("code", {}, f), `: ${show(pick(e.before, f))} → ${show(pick(e.after, f))}`)));
  }
  return h("span", { class: "hint" }, e.changed.length ? e.changed.join(", ") : "");
}

export async function renderAudit(page: HTMLElement): Promise<void> {
  const select = (id: string, label: string, values: string[]) =>
    h("select", { id, "aria-label": label }, h("option", { value: "" }, `any ${label}`), values.map((v) => h("option", { value: v }, v.replace(/_/g, " "))));
  const kind = select("audit-kind", "object", KINDS);
  const action = select("audit-action", "action", ACTIONS);
  const actor = h("input", { id: "audit-actor", placeholder: "who (user name)", "aria-label": "who" });
  const body = h("tbody", {});
  const more = h("button", { type: "button", hidden: true }, "Older entries");
  let before: number | null | undefined;
  const load = async (append: boolean) => {
    const q = new URLSearchParams({ limit: "50" });
    if (kind.value) q.set("kind", kind.value);
    if (action.value) q.set("action", action.value);
    if (actor.value.trim()) q.set("actor", actor.value.trim());
    if (append && before) q.set("before", String(before));
    try {
      const page_ = await api.audit(q);
      const rows = page_.entries.map((e) =>
        h(
          "tr",
          { "data-action": e.action, "data-kind": e.kind },
          h("td", {}, time(e.at)),
          h("td", {}, e.actor, h("div", { class: "hint" }, e.source)),
          h("td", {}, e.action.replace(/_/g, " ")),
          h("td", {}, `${e.kind} `, h("code", {}, e.object)),
          h("td", {}, describe(e)),
        ),
      );
      if (append) body.append(...rows);
      else clear(body, rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No entries match.")));
      before = page_.next_before;
      more.hidden = !before;
    } catch (e) {
      showError(page, e);
    }
  };
  for (const el of [kind, action]) el.addEventListener("change", () => void load(false));
  actor.addEventListener("change", () => void load(false));
  more.addEventListener("click", () => void load(true));
  clear(
    page,
    h("h1", {}, "Audit log"),
    h("p", { class: "hint" }, "Every change and sign-in: who, when, from which address, and what changed."),
    h("div", { class: "filters" }, kind, action, actor),
    h("table", {}, h("thead", {}, h("tr", {}, ...["When", "Who", "Action", "Object", "Changes"].map((t) => h("th", { scope: "col" }, t)))), body),
    more,
  );
  await load(false);
}
