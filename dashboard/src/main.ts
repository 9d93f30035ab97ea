import "./style.css";
import { ApiError, session } from "./api";
import { renderAudit } from "./audit";
import { clear, h } from "./dom";
import { renderEvents } from "./events";
import { renderOverview } from "./overview";
import { renderTokens, renderUsers } from "./people";
import { renderProxies } from "./proxies";
import { renderServiceEditor, renderServices } from "./services";

const app = document.getElementById("app")!;
let stopPage: (() => void) | undefined;

/** What a refused sign-in says, in the operator's words. */
function refusal(e: unknown, withToken: boolean): string {
  if (e instanceof ApiError && e.status === 401) {
    return withToken ? "The token was refused." : "Wrong user name or password.";
  }
  return e instanceof Error ? e.message : String(e);
}

function signIn(message?: string): void {
  const error = h("p", { class: "error", role: "alert" }, message ?? "");
  const submit = async (body: { name: string; password: string } | { token: string }) => {
    error.textContent = "";
    try {
      await session.signIn(body);
      if (!location.hash || location.hash === "#/") location.hash = "#/overview";
      await route();
    } catch (e) {
      error.textContent = refusal(e, "token" in body);
    }
  };
  const name = h("input", { id: "user", autocomplete: "username", required: true });
  const password = h("input", { id: "password", type: "password", autocomplete: "current-password", required: true });
  const token = h("input", { id: "token", type: "password", autocomplete: "off", "aria-describedby": "token-help" });
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: (e: Event) => {
        e.preventDefault();
        void submit({ name: name.value.trim(), password: password.value });
      },
    },
    h("h1", {}, "nb-proxy management"),
    h("label", { for: "user" }, "User name"),
    name,
    h("label", { for: "password" }, "Password"),
    password,
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    h(
      "details",
      { class: "token-signin" },
      h("summary", {}, "Sign in with the admin token"),
      h("label", { for: "token" }, "Admin token"),
      token,
      h("p", { id: "token-help", class: "hint" }, "Printed once by nb-management on its first start, or set with NB_MANAGEMENT_ADMIN_TOKEN. Create users with: nb-management user add NAME --role admin"),
      h("button", { type: "button", id: "token-submit", onclick: () => void submit({ token: token.value.trim() }) }, "Sign in with the token"),
    ),
  );
  clear(app, form);
  name.focus();
}

function layout(active: string): HTMLElement {
  const link = (hash: string, label: string) =>
    h("a", { href: hash, "aria-current": active === hash ? "page" : undefined }, label);
  const me = session.me!;
  const main = h("main", { id: "page" });
  clear(
    app,
    h(
      "header",
      {},
      h("span", { class: "brand" }, "nb-proxy"),
      h(
        "nav",
        {},
        link("#/overview", "Overview"),
        link("#/services", "Services"),
        link("#/proxies", "Proxies"),
        link("#/events", "Event log"),
        me.user && link("#/tokens", "API tokens"),
        session.can("admin") && link("#/users", "Users"),
        session.can("admin") && link("#/audit", "Audit"),
      ),
      h("span", { class: "whoami" }, `${me.user ?? "admin token"} (${me.role})`),
      h(
        "button",
        {
          class: "link",
          onclick: async () => {
            await session.signOut().catch(() => undefined);
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

/** Shows a failed call; an ended session sends the operator back to sign-in. */
export function showError(where: HTMLElement, e: unknown): void {
  if (e instanceof ApiError && e.status === 401) {
    session.me = null;
    signIn("Your session ended. Sign in again.");
    return;
  }
  const message = e instanceof Error ? e.message : String(e);
  where.prepend(h("p", { class: "error", role: "alert" }, message));
}

async function route(): Promise<void> {
  stopPage?.();
  stopPage = undefined;
  if (!session.me && !(await session.load().catch(() => null))) return signIn();
  const hash = location.hash || "#/overview";
  const [, section, id] = hash.split("/");
  const page = layout(`#/${section}`);
  try {
    if (section === "services" && id) {
      await renderServiceEditor(page, id === "new" ? undefined : decodeURIComponent(id));
    } else if (section === "overview") {
      stopPage = await renderOverview(page);
    } else if (section === "proxies") {
      await renderProxies(page);
    } else if (section === "events") {
      stopPage = await renderEvents(page);
    } else if (section === "users") {
      await renderUsers(page);
    } else if (section === "tokens") {
      await renderTokens(page);
    } else if (section === "audit") {
      await renderAudit(page);
    } else {
      await renderServices(page);
    }
  } catch (e) {
    showError(page, e);
  }
}

window.addEventListener("hashchange", () => void route());
void route();
