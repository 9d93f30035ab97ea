import "./style.css";
import { ApiError, session } from "./api";
import { clear, h } from "./dom";
import { renderEvents } from "./events";
import { renderProxies } from "./proxies";
import { renderServiceEditor, renderServices } from "./services";

const app = document.getElementById("app")!;
let stopPage: (() => void) | undefined;

function signIn(message?: string): void {
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
    "aria-describedby": "token-help",
  });
  const error = h("p", { class: "error", role: "alert" }, message ?? "");
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: (e: Event) => {
        e.preventDefault();
        session.signIn(input.value.trim());
        location.hash = "#/services";
        route();
      },
    },
    h("h1", {}, "nb-proxy management"),
    h("label", { for: "token" }, "Admin token"),
    input,
    h("p", { id: "token-help", class: "hint" }, "Printed once by nb-management on its first start, or set with NB_MANAGEMENT_ADMIN_TOKEN."),
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  clear(app, form);
  input.focus();
}

function layout(active: string): HTMLElement {
  const link = (hash: string, label: string) =>
    h("a", { href: hash, "aria-current": active === hash ? "page" : undefined }, label);
  const main = h("main", { id: "page" });
  clear(
    app,
    h(
      "header",
      {},
      h("span", { class: "brand" }, "nb-proxy"),
      h("nav", {}, link("#/services", "Services"), link("#/proxies", "Proxies"), link("#/events", "Event log")),
      h(
        "button",
        {
          class: "link",
          onclick: () => {
            session.signOut();
            location.hash = "";
            signIn("Signed out.");
          },
        },
        "Sign out",
      ),
    ),
    main,
  );
  return main;
}

/** Shows a failed call; a refused token sends the operator back to sign-in. */
export function showError(where: HTMLElement, e: unknown): void {
  if (e instanceof ApiError && e.status === 401) {
    session.signOut();
    signIn("The token was refused. Sign in again.");
    return;
  }
  const message = e instanceof Error ? e.message : String(e);
  where.prepend(h("p", { class: "error", role: "alert" }, message));
}

async function route(): Promise<void> {
  stopPage?.();
  stopPage = undefined;
  if (!session.token()) return signIn();
  const hash = location.hash || "#/services";
  const [, section, id] = hash.split("/");
  const page = layout(`#/${section}`);
  try {
    if (section === "services" && id) {
      await renderServiceEditor(page, id === "new" ? undefined : decodeURIComponent(id));
    } else if (section === "proxies") {
      await renderProxies(page);
    } else if (section === "events") {
      stopPage = await renderEvents(page);
    } else {
      await renderServices(page);
    }
  } catch (e) {
    showError(page, e);
  }
}

window.addEventListener("hashchange", () => void route());
void route();
