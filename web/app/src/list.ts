// The document list: create, rename, delete, open; search when the server has it.

import { api, ApiError, type Doc } from "./api.js";
import { ago, h, replace, toast } from "./dom.js";
import { paintAvatars, topBar } from "./header.js";
import type { Ctx } from "./main.js";

interface SearchResult {
  id: string;
  title: string;
  snippet: string;
  highlights: [number, number][];
}

export function listView(root: HTMLElement, ctx: Ctx): () => void {
  document.title = "Documents · Tandem";
  const list = h("ul", { class: "doc-list", "aria-label": "Your documents" });
  const status = h("p", { class: "muted", role: "status" }, "Loading…");
  const create = h("button", { type: "button", class: "primary", id: "new-doc" }, "New document");
  let alive = true;

  create.addEventListener("click", async () => {
    create.disabled = true;
    try {
      const doc = await api<Doc>("POST", "/api/documents", { title: "Untitled document" });
      ctx.go(`/d/${encodeURIComponent(doc.id)}`);
    } catch (e) {
      toast(e instanceof ApiError ? e.message : "Could not create the document.", "error");
      create.disabled = false;
    }
  });

  const row = (doc: Doc): HTMLElement => {
    const title = h("a", { href: `/d/${encodeURIComponent(doc.id)}`, class: "doc-title" }, doc.title || "Untitled document");
    const actions = h("div", { class: "doc-actions" });
    if (doc.role === "owner" || doc.role === "editor") {
      const rename = h("button", { type: "button", class: "ghost small", "data-verb": "Rename", "aria-label": `Rename ${doc.title}` }, "Rename");
      rename.addEventListener("click", async () => {
        const name = prompt("New name", doc.title);
        if (name === null || !name.trim()) return;
        try {
          const d = await api<Doc>("PATCH", `/api/documents/${encodeURIComponent(doc.id)}`, { title: name.trim() });
          doc.title = d.title;
          title.textContent = d.title;
          for (const b of actions.querySelectorAll("button[data-verb]")) {
            b.setAttribute("aria-label", `${(b as HTMLElement).dataset.verb} ${d.title}`);
          }
        } catch (e) {
          toast(e instanceof ApiError ? e.message : "Could not rename.", "error");
        }
      });
      actions.append(rename);
    }
    if (doc.role === "owner") {
      const del = h("button", { type: "button", class: "ghost small danger", "data-verb": "Delete", "aria-label": `Delete ${doc.title}` }, "Delete");
      del.addEventListener("click", async () => {
        if (!confirm(`Delete “${doc.title}” for everyone? This cannot be undone.`)) return;
        try {
          await api("DELETE", `/api/documents/${encodeURIComponent(doc.id)}`);
          li.remove();
        } catch (e) {
          toast(e instanceof ApiError ? e.message : "Could not delete.", "error");
        }
      });
      actions.append(del);
    }
    const li = h(
      "li",
      { class: "doc-row" },
      h("div", { class: "doc-main" }, title, h("span", { class: "muted small" }, `${doc.role} · edited ${ago(doc.updated_at)}`)),
      actions,
    );
    return li;
  };

  const load = async () => {
    try {
      const page = await api<{ documents: Doc[] }>("GET", "/api/documents?limit=100");
      if (!alive) return;
      replace(list, ...page.documents.map(row));
      status.textContent = page.documents.length ? "" : "No documents yet: create one.";
    } catch (e) {
      status.textContent = e instanceof ApiError ? e.message : "Could not load your documents.";
    }
  };

  let search: HTMLElement | null = null;
  if (ctx.features.search) {
    const input = h("input", { type: "search", id: "search", placeholder: "Search documents", "aria-label": "Search documents", autocomplete: "off" });
    const results = h("ul", { class: "search-results", "aria-label": "Search results" });
    let timer = 0;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = window.setTimeout(async () => {
        const q = input.value.trim();
        if (!q) return replace(results);
        try {
          const r = await api<{ results: SearchResult[] }>("GET", `/api/search?q=${encodeURIComponent(q)}&limit=10`);
          replace(
            results,
            ...(r.results.length
              ? r.results.map((x) => h("li", {}, h("a", { href: `/d/${encodeURIComponent(x.id)}` }, x.title), h("p", { class: "snippet" }, ...marked(x.snippet, x.highlights))))
              : [h("li", { class: "muted" }, "No matches.")]),
          );
        } catch (e) {
          replace(results, h("li", { class: "muted" }, e instanceof ApiError ? e.message : "Search failed."));
        }
      }, 200);
    });
    search = h("div", { class: "search" }, input, results);
  }

  replace(
    root,
    topBar(ctx, search),
    h("main", { class: "page" }, h("div", { class: "list-head" }, h("h1", {}, "Documents"), create), status, list),
  );
  paintAvatars(root);
  void load();
  return () => {
    alive = false;
  };
}

/** A snippet with its matched words in <mark> (highlights are character ranges). */
function marked(snippet: string, highlights: [number, number][]): (string | Node)[] {
  const chars = [...snippet];
  const out: (string | Node)[] = [];
  let at = 0;
  for (const [s, e] of highlights) {
    if (s < at) continue;
    out.push(chars.slice(at, s).join(""), h("mark", {}, chars.slice(s, e).join("")));
    at = e;
  }
  out.push(chars.slice(at).join(""));
  return out;
}
