/** What the dashboard's forms share: server problems placed at their fields, buttons that
 *  ask before they act, and secrets shown once with a copy button. */

import { ApiError } from "./api";
import { clear, h } from "./dom";
import { showError } from "./main";

/** A field's problems under it, the rest in `summary`. */
export function placeProblems(form: HTMLElement, summary: HTMLElement, e: unknown): void {
  form.querySelectorAll(".field-error").forEach((el) => el.remove());
  if (!(e instanceof ApiError) || e.problems.length === 0) {
    clear(summary, h("p", { class: "error", role: "alert" }, e instanceof Error ? e.message : String(e)));
    return;
  }
  clear(summary);
  for (const p of e.problems) {
    const input = form.querySelector(`[name="${p.field}"]`);
    const message = h("p", { class: "field-error", role: "alert" }, p.message);
    if (input) input.after(message);
    else summary.append(message);
  }
}

/** A button that asks first, then acts; a failure is shown on the page. */
export function dangerButton(label: string, question: string, page: HTMLElement, act: () => Promise<void>): HTMLElement {
  return h(
    "button",
    {
      class: "danger",
      onclick: async () => {
        if (!confirm(question)) return;
        await act().catch((err) => showError(page, err));
      },
    },
    label,
  );
}

/** A secret shown once (a token), with a button that copies it. Where the clipboard is not
 *  available (a plain-HTTP page on another host), the text is selected for Ctrl+C instead. */
export function shownOnce(id: string, title: string, secret: string, hint: string): HTMLElement {
  const code = h("code", { id }, secret);
  const said = h("span", { class: "hint", role: "status", id: `${id}-copied` });
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(secret);
      said.textContent = "Copied.";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      const selection = window.getSelection();
      selection?.removeAllRanges();
      selection?.addRange(range);
      said.textContent = "Selected: press Ctrl+C to copy.";
    }
  };
  return h(
    "div",
    { class: "notice", role: "status" },
    h("h3", {}, title),
    h("p", {}, hint),
    code,
    " ",
    h("button", { type: "button", id: `${id}-copy`, onclick: () => void copy() }, "Copy"),
    " ",
    said,
  );
}
