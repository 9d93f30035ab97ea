import { api, session, type Role } from "./api";
import { clear, h, time } from "./dom";
import { dangerButton, placeProblems, shownOnce } from "./forms";
import { showError } from "./main";

const ROLES: Role[] = ["viewer", "operator", "admin"];
const ROLE_HELP: Record<Role, string> = {
  viewer: "reads everything but users and the audit log",
  operator: "also changes services and proxies",
  admin: "everything, users and the audit log included",
};

export async function renderUsers(page: HTMLElement): Promise<void> {
  clear(page, h("p", { class: "loading" }, "Loading users…"));
  const users = await api.users();
  const name = h("input", { id: "new-user-name", name: "name", required: true, autocomplete: "off" });
  const password = h("input", { id: "new-user-password", name: "password", type: "password", autocomplete: "new-password", required: true });
  const role = h("select", { id: "new-user-role", name: "role" }, ROLES.map((r) => h("option", { value: r, selected: r === "viewer" }, `${r}: ${ROLE_HELP[r]}`)));
  const summary = h("div", {});
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        try {
          await api.createUser({ name: name.value.trim(), role: role.value as Role, password: password.value });
          await renderUsers(page);
        } catch (err) {
          placeProblems(form, summary, err);
        }
      },
    },
    h("h2", {}, "Add a user"),
    h("div", { class: "field" }, h("label", { for: "new-user-name" }, "Name"), name),
    h("div", { class: "field" }, h("label", { for: "new-user-password" }, "Password"), password, h("p", { class: "hint" }, "At least 12 characters.")),
    h("div", { class: "field" }, h("label", { for: "new-user-role" }, "Role"), role),
    summary,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Add user")),
  );
  const rows = users.map((u) => {
    const select = h(
      "select",
      {
        "aria-label": `Role of ${u.name}`,
        onchange: async () => {
          try {
            await api.updateUser(u.name, { role: select.value as Role });
            await renderUsers(page);
          } catch (err) {
            showError(page, err);
          }
        },
      },
      ROLES.map((r) => h("option", { value: r, selected: r === u.role }, r)),
    );
    const self = session.me?.user === u.name;
    return h(
      "tr",
      { "data-user": u.name },
      h("td", {}, u.name, self && h("span", { class: "badge" }, "you")),
      h("td", {}, self ? u.role : select),
      h("td", {}, time(u.created_at)),
      h(
        "td",
        {},
        !self &&
          dangerButton("Delete", `Delete user "${u.name}"? Their sessions and tokens stop working at once.`, page, async () => {
            await api.deleteUser(u.name);
            await renderUsers(page);
          }),
      ),
    );
  });
  clear(
    page,
    h("h1", {}, "Users"),
    users.length === 0
      ? h("p", { class: "empty" }, "No users yet: everyone signs in with the admin token. Add one below, or run nb-management user add NAME --role admin.")
      : h("table", {}, h("thead", {}, h("tr", {}, ...["Name", "Role", "Created", ""].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
    form,
  );
}

export async function renderTokens(page: HTMLElement): Promise<void> {
  clear(page, h("p", { class: "loading" }, "Loading tokens…"));
  const tokens = await api.tokens();
  const name = h("input", { id: "new-token-name", name: "name", required: true, autocomplete: "off", placeholder: "e.g. ci" });
  const days = h("input", { id: "new-token-days", name: "expires_in_days", type: "number", min: 1, max: 3650, value: 90 });
  const summary = h("div", {});
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        try {
          const created = await api.createToken({ name: name.value.trim(), expires_in_days: Number(days.value) });
          await renderTokens(page);
          page.prepend(
            shownOnce(
              "token-secret",
              `Token "${created.token.name}" created`,
              created.secret,
              "Copy it now: it is shown once, and only its hash is stored. Send it as Authorization: Bearer <token>.",
            ),
          );
        } catch (err) {
          placeProblems(form, summary, err);
        }
      },
    },
    h("h2", {}, "New token"),
    h("div", { class: "field" }, h("label", { for: "new-token-name" }, "Name"), name),
    h("div", { class: "field" }, h("label", { for: "new-token-days" }, "Expires after (days)"), days),
    summary,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create token")),
  );
  const rows = tokens.map((t) =>
    h(
      "tr",
      { "data-token": t.name },
      h("td", {}, t.name),
      session.can("admin") && h("td", {}, t.user),
      h("td", {}, h("span", { class: `badge ${t.state === "active" ? "ok" : "off"}` }, t.state)),
      h("td", {}, time(t.expires_at)),
      h(
        "td",
        {},
        t.state === "active" &&
          dangerButton("Revoke", `Revoke token "${t.name}"? Scripts using it stop working at once.`, page, async () => {
            await api.revokeToken(t.id);
            await renderTokens(page);
          }),
      ),
    ),
  );
  const headings = ["Name", ...(session.can("admin") ? ["User"] : []), "State", "Expires", ""];
  clear(
    page,
    h("h1", {}, "API tokens"),
    h("p", { class: "hint" }, `A token acts as its user, with their role (${session.me?.role}).`),
    tokens.length === 0
      ? h("p", { class: "empty" }, "No tokens yet.")
      : h("table", {}, h("thead", {}, h("tr", {}, ...headings.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
    form,
  );
}
