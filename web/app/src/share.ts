// The share dialog: invite by email with a role; the people with access, their roles
// changed or revoked; pending invitations withdrawn. A native <dialog>: focus is kept inside
// and Escape closes it.

import { api, ApiError, type Doc, type Role, type User } from "./api.js";
import { h, replace } from "./dom.js";
import type { Ctx } from "./main.js";

interface Permissions {
  permissions: { user: User; role: Role }[];
  invitations: { email: string; role: Role; created_at: number }[];
}

const ROLES: Role[] = ["viewer", "commenter", "editor"];

function roleSelect(value: Role, label: string, id?: string): HTMLSelectElement {
  const s = h("select", { "aria-label": label, id }, ...ROLES.map((r) => h("option", { value: r, selected: r === value }, r)));
  return s;
}

export function shareDialog(id: string, meta: Doc | null, ctx: Ctx): void {
  const email = h("input", { type: "email", id: "share-email", required: true, placeholder: "name@example.com", autocomplete: "off" });
  const role = roleSelect("editor", "Role", "share-role");
  const msg = h("p", { class: "form-msg", role: "status", id: "share-msg" });
  const people = h("ul", { class: "people", id: "share-people", "aria-label": "People with access" });
  const close = h("button", { type: "button", class: "ghost", id: "share-close" }, "Done");
  const form = h(
    "form",
    { class: "share-form" },
    h("label", { for: "share-email" }, "Email"),
    h("div", { class: "row" }, email, role, h("button", { type: "submit", class: "primary", id: "share-submit" }, "Share")),
  );
  const dialog = h(
    "dialog",
    { class: "dialog", id: "share-dialog", "aria-labelledby": "share-title" },
    h("h2", { id: "share-title" }, `Share “${meta?.title ?? "this document"}”`),
    form,
    msg,
    h("h3", {}, "People with access"),
    people,
    h("div", { class: "dialog-actions" }, close),
  );
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  close.addEventListener("click", () => dialog.close());

  const path = `/api/documents/${encodeURIComponent(id)}`;
  const load = async () => {
    try {
      const p = await api<Permissions>("GET", `${path}/permissions`);
      replace(
        people,
        ...p.permissions.map(({ user, role: r }) => {
          const li = h("li", { "data-email": user.email }, h("div", { class: "who" }, h("strong", {}, user.name), h("span", { class: "muted small" }, user.email)));
          if (r === "owner" || user.id === ctx.user.id) {
            li.append(h("span", { class: "muted" }, r === "owner" ? "owner" : `${r} (you)`));
            return li;
          }
          const sel = roleSelect(r, `Role of ${user.name}`);
          sel.addEventListener("change", async () => {
            try {
              await api("PUT", `${path}/permissions/${encodeURIComponent(user.id)}`, { role: sel.value });
              msg.textContent = `${user.name} is now ${sel.value}.`;
            } catch (e) {
              msg.textContent = e instanceof ApiError ? e.message : "Could not change the role.";
              sel.value = r;
            }
          });
          const remove = h("button", { type: "button", class: "ghost small danger", "aria-label": `Remove ${user.name}` }, "Remove");
          remove.addEventListener("click", async () => {
            try {
              await api("DELETE", `${path}/permissions/${encodeURIComponent(user.id)}`);
              msg.textContent = `${user.name} no longer has access.`;
              await load();
            } catch (e) {
              msg.textContent = e instanceof ApiError ? e.message : "Could not remove access.";
            }
          });
          li.append(sel, remove);
          return li;
        }),
        ...p.invitations.map((inv) => {
          const withdraw = h("button", { type: "button", class: "ghost small", "aria-label": `Withdraw the invitation to ${inv.email}` }, "Withdraw");
          withdraw.addEventListener("click", async () => {
            try {
              await api("DELETE", `${path}/invitations/${encodeURIComponent(inv.email)}`);
              await load();
            } catch (e) {
              msg.textContent = e instanceof ApiError ? e.message : "Could not withdraw.";
            }
          });
          return h("li", {}, h("div", { class: "who" }, h("strong", {}, inv.email), h("span", { class: "muted small" }, `invited as ${inv.role}`)), withdraw);
        }),
      );
    } catch (e) {
      replace(people, h("li", { class: "muted" }, e instanceof ApiError ? e.message : "Could not load who has access."));
    }
  };

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    msg.textContent = "";
    try {
      const r = await api<{ status: string }>("POST", `${path}/share`, { email: email.value.trim(), role: role.value });
      msg.textContent = r.status === "invited" ? `Invited ${email.value}: the invitation applies when they sign up.` : `Shared with ${email.value}.`;
      email.value = "";
      await load();
    } catch (e) {
      msg.textContent = e instanceof ApiError ? e.message : "Could not share.";
    }
  });

  dialog.showModal();
  email.focus();
  void load();
}
