// Tandem's editor app: sign-in, the document list and the editor, routed by path
// (`/login`, `/signup`, `/`, `/d/<id>`; the server answers the page for each).

import "quill/dist/quill.snow.css";
import "quill-cursors/css";
import "./style.css";

import { api, ApiError, type Features, type User } from "./api.js";
import { authView } from "./auth.js";
import { h, replace } from "./dom.js";
import { editorView } from "./editor.js";
import { listView } from "./list.js";

export interface Ctx {
  user: User;
  features: Features;
  go(path: string): void;
  signedOut(): void;
}

const root = document.getElementById("app")!;
let cleanup: (() => void) | null = null;
let me: User | null = null;
let features: Features = { search: false, exports: false, uploads: false };

function go(path: string, replaceState = false): void {
  if (replaceState) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  void render();
}

async function render(): Promise<void> {
  cleanup?.();
  cleanup = null;
  const path = location.pathname;
  if (!me && path !== "/login" && path !== "/signup") {
    try {
      me = await api<User>("GET", "/api/me");
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401) throw e;
      const next = path === "/" ? "" : `?next=${encodeURIComponent(path)}`;
      history.replaceState(null, "", "/login" + next);
      return render();
    }
  }
  const ctx: Ctx = {
    user: me!,
    features,
    go: (p) => go(p),
    signedOut: () => {
      me = null;
      go("/login", true);
    },
  };
  if (path === "/login" || path === "/signup") {
    cleanup = authView(root, path === "/signup" ? "signup" : "login", (user) => {
      me = user;
      const next = new URLSearchParams(location.search).get("next");
      go(next && next.startsWith("/") && !next.startsWith("//") ? next : "/", true);
    });
    return;
  }
  const m = /^\/d\/([^/]+)$/.exec(path);
  if (m) {
    cleanup = editorView(root, ctx, decodeURIComponent(m[1]!));
    return;
  }
  if (path !== "/") {
    replace(root, h("main", { class: "page narrow" }, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/" }, "Your documents"))));
    return;
  }
  cleanup = listView(root, ctx);
}

// Links inside the app navigate without a reload.
document.addEventListener("click", (ev) => {
  const a = (ev.target as Element | null)?.closest?.("a");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || a.target) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
  ev.preventDefault();
  go(url.pathname + url.search);
});
window.addEventListener("popstate", () => void render());

void (async () => {
  try {
    features = await api<Features>("GET", "/api/features");
  } catch {
    // an older server: no optional features
  }
  await render();
})().catch((e: unknown) => {
  replace(root, h("main", { class: "page narrow" }, h("h1", {}, "Tandem could not start"), h("p", {}, String(e))));
});
