// The bar at the top of every signed-in page.

import { api } from "./api.js";
import { colorFor, h, initials } from "./dom.js";
import type { Ctx } from "./main.js";

export function topBar(ctx: Ctx, ...middle: (Node | null)[]): HTMLElement {
  const logout = h("button", { type: "button", class: "ghost", id: "logout" }, "Log out");
  logout.addEventListener("click", async () => {
    try {
      await api("POST", "/api/auth/logout", {});
    } finally {
      ctx.signedOut();
    }
  });
  return h(
    "header",
    { class: "topbar" },
    h("a", { href: "/", class: "brand", "aria-label": "Tandem: your documents" }, "Tandem"),
    h("div", { class: "topbar-middle" }, ...middle),
    h(
      "div",
      { class: "me" },
      h("span", { class: "avatar", style: null, title: `${ctx.user.name} (${ctx.user.email})`, "data-color": colorFor(ctx.user.id) }, initials(ctx.user.name)),
      logout,
    ),
  );
}

/** Avatars take their colour from `data-color` (set through the CSSOM: the page's CSP has
 *  no inline styles). */
export function paintAvatars(root: ParentNode): void {
  for (const el of root.querySelectorAll<HTMLElement>("[data-color]")) el.style.backgroundColor = el.dataset.color!;
}
