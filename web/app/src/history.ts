// Version history: the document's named versions, and its revisions grouped into editing
// sessions (one author, no pause over a minute), newest first; choosing one shows the
// document as it was then, or what changed, and editors may restore it or name it.

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
  const nameBtn = h("button", { type: "button", id: "preview-name" }, "Name this version");
  const nameInput = h("input", { id: "version-name", "aria-label": "Version name", maxlength: 200, placeholder: "e.g. Draft sent to legal" });
  const nameForm = h(
    "form",
    { class: "version-form", hidden: true },
    nameInput,
    h("button", { type: "submit", class: "primary" }, "Save"),
    h("button", { type: "button", id: "version-unname" }, "Remove the name"),
  );
  const named = h("ol", { class: "revisions named", id: "named-versions", "aria-label": "Named versions" });
  const changesBtn = h("button", { type: "button", id: "preview-changes", "aria-pressed": "false" }, "Show changes");
  const legend = h("p", { class: "changes-legend small", id: "changes-legend", hidden: true });
  const previewBar = h(
    "div",
    { class: "preview-bar", hidden: true },
    h("span", { id: "preview-title" }),
    h(
      "span",
      { class: "preview-actions" },
      changesBtn,
      nameBtn,
      restoreBtn,
      h("button", { type: "button", id: "preview-close" }, "Back to editing"),
    ),
    nameForm,
  );
  let showChanges = false;
  let shown: Group | null = null;
  const namedTitle = h("h3", { class: "small", hidden: true }, "Named versions");
  replace(side, h("h2", {}, "Version history"), namedTitle, named, h("h3", { class: "small" }, "All changes"), status, list);
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
    // The document as the editing session left it, or what the session changed.
    const content = showChanges ? await doc.changes(g.first - 1, g.last) : await doc.revision(g.last);
    if (!preview) {
      editorRoot.prepend(previewBar, legend, previewEl);
      preview = new Quill(previewEl, { theme: "snow", readOnly: true, modules: { toolbar: false } });
    }
    if (showChanges) {
      const { delta, authors } = markChanges(content);
      await resolveNames([...authors]);
      preview.setContents(delta, "api");
      replace(
        legend,
        h("span", { class: "mark-inserted" }, "inserted"),
        " ",
        h("span", { class: "mark-deleted" }, "deleted"),
        " ",
        h("span", { class: "mark-formatted" }, "formatted"),
        ` in revisions ${g.first}–${g.last}, by ${[...authors].map(authorName).join(", ") || "nobody"}`,
      );
    } else {
      preview.setContents(new Delta(content.ops), "api");
    }
    legend.hidden = !showChanges;
    shown = g;
    // Restoring is an edit, and naming a version is the editors': editors and owners only.
    const editor = doc.role === "editor" || doc.role === "owner";
    restoreBtn.hidden = !editor || g.last === doc.sync.rev;
    const name = doc.versions().find((v) => v.rev === g.last)?.name;
    nameBtn.hidden = !editor;
    nameBtn.textContent = name ? "Rename this version" : "Name this version";
    nameForm.hidden = true;
    previewBar.hidden = false;
    previewEl.hidden = false;
    editorRoot.classList.add("previewing");
    (previewBar.querySelector("#preview-title") as HTMLElement).textContent =
      `${name ? `\u201c${name}\u201d · ` : ""}Revision ${g.last} · ${authorName(g.author)} · ${new Date(g.time).toLocaleString()}`;
  };
  nameBtn.addEventListener("click", () => {
    if (!shown) return;
    nameInput.value = doc.versions().find((v) => v.rev === shown!.last)?.name ?? "";
    (nameForm.querySelector("#version-unname") as HTMLElement).hidden = !nameInput.value;
    nameForm.hidden = false;
    nameInput.focus();
  });
  nameForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!shown || !nameInput.value.trim()) return;
    try {
      await doc.nameVersion(shown.last, nameInput.value.trim());
      toast(`Named revision ${shown.last} \u201c${nameInput.value.trim()}\u201d.`);
      nameForm.hidden = true;
      void showAt(shown);
    } catch (e) {
      toast(`Not named: ${e instanceof Error ? e.message : String(e)}`, "error");
    }
  });
  nameForm.querySelector("#version-unname")!.addEventListener("click", async () => {
    if (!shown) return;
    try {
      await doc.nameVersion(shown.last, null);
      nameForm.hidden = true;
      void showAt(shown);
    } catch (e) {
      toast(`Not changed: ${e instanceof Error ? e.message : String(e)}`, "error");
    }
  });

  const closePreview = () => {
    previewBar.hidden = true;
    previewEl.hidden = true;
    legend.hidden = true;
    editorRoot.classList.remove("previewing");
  };
  previewBar.querySelector("#preview-close")!.addEventListener("click", closePreview);
  changesBtn.addEventListener("click", () => {
    showChanges = !showChanges;
    changesBtn.setAttribute("aria-pressed", String(showChanges));
    changesBtn.textContent = showChanges ? "Show the document" : "Show changes";
    if (shown) void showAt(shown).catch((e: unknown) => (status.textContent = String(e)));
  });
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
      const versions = doc.versions();
      namedTitle.hidden = versions.length === 0;
      replace(
        named,
        ...[...versions].reverse().map((v) => {
          const g: Group = { author: "", first: v.rev, last: v.rev, time: v.time_ms };
          const b = h(
            "button",
            { type: "button", class: "revision version", "data-rev": v.rev },
            h("strong", {}, v.name),
            h("span", { class: "muted small" }, `revision ${v.rev} · named by ${v.user_name} ${ago(v.time_ms)}`),
          );
          b.addEventListener("click", () => void showAt(g).catch((e: unknown) => (status.textContent = String(e))));
          return h("li", {}, b);
        }),
      );
      const nameOf = new Map(versions.map((v) => [v.rev, v.name]));
      replace(
        list,
        ...groups.reverse().map((g) => {
          const b = h(
            "button",
            { type: "button", class: "revision", "data-rev": g.last },
            h("strong", {}, authorName(g.author)),
            nameOf.has(g.last) ? h("span", { class: "version-badge small" }, nameOf.get(g.last)!) : null,
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

/** The server's change marks (docs/protocol.md, `changes`) as formats the preview shows:
 *  inserted text underlined on green, deleted text struck through on red, reformatted text
 *  on yellow; and the client ids of the authors. */
function markChanges(content: Delta): { delta: Delta; authors: Set<string> } {
  const authors = new Set<string>();
  const delta = new Delta(
    content.ops.map((op) => {
      const a = { ...(op.attributes ?? {}) } as Record<string, unknown>;
      const ins = a.tandem_inserted, del = a.tandem_deleted, fmt = a.tandem_formatted;
      delete a.tandem_inserted;
      delete a.tandem_deleted;
      delete a.tandem_formatted;
      for (const who of [ins, del, fmt]) if (typeof who === "string") authors.add(who);
      if (typeof del === "string") Object.assign(a, { strike: true, color: "#991b1b", background: "#fee2e2" });
      else if (typeof ins === "string") Object.assign(a, { underline: true, background: "#dcfce7" });
      else if (typeof fmt === "string") Object.assign(a, { background: "#fef9c3" });
      return Object.keys(a).length ? { insert: op.insert!, attributes: a } : { insert: op.insert! };
    }),
  );
  return { delta, authors };
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
