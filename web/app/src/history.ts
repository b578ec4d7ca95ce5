// Version history: the document's revisions, grouped into editing sessions (one author,
// no pause over a minute), newest first; choosing one shows the document as it was then.

import Quill from "quill";
import { Delta, type DocHandle, type RevisionRecord } from "@tandem/client";

import { api } from "./api.js";
import { ago, h, replace, toast } from "./dom.js";
import type { Ctx } from "./main.js";

interface Group {
  author: string;
  first: number;
  last: number;
  time: number;
}

const PAGE = 1000;

export function historyPanel(side: HTMLElement, doc: DocHandle, ctx: Ctx, editor: Quill) {
  const list = h("ol", { class: "revisions", id: "revisions", "aria-label": "Revisions" });
  const status = h("p", { class: "muted small", role: "status" });
  const previewEl = h("div", { id: "preview" });
  const restoreBtn = h("button", { type: "button", id: "preview-restore", class: "primary" }, "Restore this version");
  const previewBar = h(
    "div",
    { class: "preview-bar", hidden: true },
    h("span", { id: "preview-title" }),
    h("span", { class: "preview-actions" }, restoreBtn, h("button", { type: "button", id: "preview-close" }, "Back to editing")),
  );
  let shown: Group | null = null;
  replace(side, h("h2", {}, "Version history"), status, list);
  const names = new Map<string, string>();
  let preview: Quill | null = null;

  const editorRoot = editor.root.closest(".editor-main") as HTMLElement;

  const authorName = (client: string): string => {
    if (client === doc.sync.client) return `${ctx.user.name} (you)`;
    const peer = doc.online.get(client);
    if (peer) return peer.name;
    return names.get(client) ?? "Someone";
  };

  const resolveNames = async (clients: string[]) => {
    const unknown = clients.filter((c) => !names.has(c) && c !== doc.sync.client && !doc.online.has(c));
    if (!unknown.length) return;
    try {
      const r = await api<{ authors: Record<string, { user: string; name: string }> }>(
        "GET",
        `/api/documents/${encodeURIComponent(doc.id)}/authors?clients=${unknown.slice(0, 100).join(",")}`,
      );
      for (const [c, a] of Object.entries(r.authors)) names.set(c, a.user === ctx.user.id ? `${ctx.user.name} (you)` : a.name);
    } catch {
      // names stay "Someone"
    }
  };

  const showAt = async (g: Group) => {
    const content = await doc.revision(g.last);
    if (!preview) {
      editorRoot.prepend(previewBar, previewEl);
      preview = new Quill(previewEl, { theme: "snow", readOnly: true, modules: { toolbar: false } });
    }
    preview.setContents(new Delta(content.ops), "api");
    shown = g;
    // Restoring is an edit: editors and owners only.
    restoreBtn.hidden = !(doc.role === "editor" || doc.role === "owner") || g.last === doc.sync.rev;
    previewBar.hidden = false;
    previewEl.hidden = false;
    editorRoot.classList.add("previewing");
    (previewBar.querySelector("#preview-title") as HTMLElement).textContent =
      `Revision ${g.last} · ${authorName(g.author)} · ${new Date(g.time).toLocaleString()}`;
  };

  const closePreview = () => {
    previewBar.hidden = true;
    previewEl.hidden = true;
    editorRoot.classList.remove("previewing");
  };
  previewBar.querySelector("#preview-close")!.addEventListener("click", closePreview);
  // The server makes the document what it was then, as a new change by this user: everyone
  // sees it, history keeps what came between, and undo takes it back.
  restoreBtn.addEventListener("click", () => {
    if (!shown) return;
    doc.restore(shown.last);
    toast(`Restored revision ${shown.last}. Undo (Ctrl+Z) takes it back.`);
    closePreview();
  });

  const refresh = async () => {
    status.textContent = "Loading…";
    try {
      const latest = doc.sync.rev;
      const from = Math.max(1, latest - PAGE + 1);
      const r = await doc.revisions(from, PAGE);
      const groups = group(r.revisions);
      await resolveNames([...new Set(groups.map((g) => g.author))]);
      replace(
        list,
        ...groups.reverse().map((g) => {
          const b = h(
            "button",
            { type: "button", class: "revision", "data-rev": g.last },
            h("strong", {}, authorName(g.author)),
            h("span", { class: "muted small" }, `${ago(g.time)} · ${g.first === g.last ? `revision ${g.last}` : `revisions ${g.first}–${g.last}`}`),
          );
          b.addEventListener("click", () => void showAt(g).catch((e: unknown) => (status.textContent = String(e))));
          return h("li", {}, b);
        }),
      );
      status.textContent =
        r.revisions.length === 0 ? "No edits yet."
        : r.oldest > 1 && from <= r.oldest ? `History before revision ${r.oldest} is compacted.`
        : "";
    } catch (e) {
      status.textContent = e instanceof Error ? e.message : String(e);
    }
  };

  return { refresh, close: closePreview };
}

/** Consecutive revisions by one author without a pause over a minute make one entry. */
function group(revs: RevisionRecord[]): Group[] {
  const out: Group[] = [];
  for (const r of revs) {
    const g = out[out.length - 1];
    if (g && g.author === r.author && r.time_ms - g.time <= 60_000) {
      g.last = r.rev;
      g.time = r.time_ms;
    } else {
      out.push({ author: r.author, first: r.rev, last: r.rev, time: r.time_ms });
    }
  }
  return out;
}
