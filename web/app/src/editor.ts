// The editor: Quill 2 with its toolbar, remote carets and selections (quill-cursors), who is
// online, the connection and saving state, sharing, history, exports and image uploads.

import Quill from "quill";
import QuillCursors from "quill-cursors/core";
import { Delta, TandemClient, type ConnectionState, type DocHandle, type Peer, type Role } from "@tandem/client";

import { api, ApiError, refreshToken, type Doc } from "./api.js";
import { colorFor, h, initials, replace, toast } from "./dom.js";
import { paintAvatars, topBar } from "./header.js";
import { commentsPanel } from "./comments.js";
import { historyPanel } from "./history.js";
import type { Ctx } from "./main.js";
import { shareDialog } from "./share.js";

// Toolbar icons for undo and redo (Quill ships none: its own history has no buttons), in
// the snow theme's stroke style. The buttons matter on phones, which have no Ctrl-Z.
const icons = Quill.import("ui/icons") as Record<string, string>;
icons.undo =
  '<svg viewBox="0 0 18 18"><polygon class="ql-fill ql-stroke" points="6 10 4 12 2 10 6 10"></polygon><path class="ql-stroke" d="M8.09,13.91A4.6,4.6,0,0,0,9,14,5,5,0,1,0,4,9"></path></svg>';
icons.redo =
  '<svg viewBox="0 0 18 18"><polygon class="ql-fill ql-stroke" points="12 10 14 12 16 10 12 10"></polygon><path class="ql-stroke" d="M9.91,13.91A4.6,4.6,0,0,1,9,14a5,5,0,1,1,5-5"></path></svg>';

Quill.register("modules/cursors", QuillCursors);

const canEdit = (role: Role | undefined) => role === "editor" || role === "owner";

/** The editor, for tests and benchmarks to reach (`window.tandem`). */
export interface EditorHandle {
  quill: Quill;
  doc: DocHandle;
  client: TandemClient;
}

export function editorView(root: HTMLElement, ctx: Ctx, id: string): () => void {
  document.title = "Tandem";
  const status = h("span", { class: "status", id: "status", role: "status", "aria-live": "polite" }, "Connecting…");
  const avatars = h("div", { class: "avatars", id: "online", "aria-label": "Who is here" });
  const title = h("input", { class: "title", id: "doc-title", "aria-label": "Document title", maxlength: 256, readonly: true });
  const banner = h("div", { class: "banner", id: "banner", hidden: true });
  const shareBtn = h("button", { type: "button", id: "share", class: "primary" }, "Share");
  const historyBtn = h("button", { type: "button", id: "history", "aria-expanded": "false" }, "History");
  const commentBtn = h("button", { type: "button", id: "comment-add", title: "Comment on the selection (Ctrl+Alt+M)", hidden: true }, "Comment");
  const commentsBtn = h("button", { type: "button", id: "comments", "aria-expanded": "false" }, "Comments");
  const exportMenu = ctx.features.exports
    ? h(
        "div",
        { class: "export", role: "group", "aria-label": "Download as" },
        h("button", { type: "button", id: "export-pdf", "data-format": "pdf" }, "PDF"),
        h("button", { type: "button", id: "export-docx", "data-format": "docx" }, "DOCX"),
      )
    : null;
  const editorEl = h("div", { id: "editor" });
  const side = h("aside", { class: "side", id: "side", hidden: true, "aria-label": "Version history" });
  const commentsSide = h("aside", { class: "side comments", id: "comments-side", hidden: true, "aria-label": "Comments" });
  replace(
    root,
    topBar(ctx, h("a", { href: "/", class: "back", "aria-label": "Back to documents" }, "←"), title, status),
    h("div", { class: "doc-bar" }, avatars, h("div", { class: "doc-buttons" }, commentBtn, commentsBtn, historyBtn, exportMenu, shareBtn)),
    banner,
    h("div", { class: "editor-wrap" }, h("main", { class: "editor-main" }, editorEl), commentsSide, side),
  );
  paintAvatars(root);

  const toolbar = [
    ["undo", "redo"],
    [{ header: [1, 2, 3, false] }],
    ["bold", "italic", "underline", "strike"],
    [{ color: [] }, { background: [] }],
    [{ list: "ordered" }, { list: "bullet" }, { list: "check" }],
    ctx.features.uploads ? ["link", "image", "code", "code-block", "blockquote"] : ["link", "code", "code-block", "blockquote"],
    ["clean"],
  ];
  const quill = new Quill(editorEl, {
    theme: "snow",
    readOnly: true,
    placeholder: "Start writing…",
    modules: {
      toolbar: {
        container: toolbar,
        handlers: { image: () => void uploadImage(), undo: () => undoRedo(false), redo: () => undoRedo(true) },
      },
      cursors: { transformOnTextChange: true, hideDelayMs: 3000, hideSpeedMs: 300 },
      // Undo is the server's (each user's own changes, kept across reloads): Quill's local
      // history keeps nothing, and the shortcuts below ask the server.
      history: { userOnly: true, maxStack: 0 },
      keyboard: {
        bindings: {
          undo: { key: "z", shortKey: true, shiftKey: false, handler: () => undoRedo(false) },
          redo: { key: ["z", "Z"], shortKey: true, shiftKey: true, handler: () => undoRedo(true) },
          redoY: { key: "y", shortKey: true, handler: () => undoRedo(true) },
        },
      },
    },
  });
  function undoRedo(redo: boolean): boolean {
    if (canEdit(role) && !ended) doc.undo(redo);
    return false;
  }
  // The browser's own Undo (the context menu, the Edit menu) asks the server too.
  quill.root.addEventListener("beforeinput", (ev) => {
    if (ev.inputType === "historyUndo" || ev.inputType === "historyRedo") {
      ev.preventDefault();
      undoRedo(ev.inputType === "historyRedo");
    }
  });
  labelToolbar(root);
  const cursors = quill.getModule("cursors") as QuillCursors;

  let role: Role | undefined;
  let conn: ConnectionState = "connecting";
  let saving = false;
  let ended = false;
  let meta: Doc | null = null;
  let commentsShown = false;

  const client = new TandemClient({
    name: ctx.user.name,
    color: colorFor(ctx.user.id),
    // The page's cookie signs the WebSocket in. Refreshing rotates the refresh token (and
    // renews the cookie): done only when the server asks, since two tabs refreshing with the
    // same cookie at once would look like a stolen token.
    token: async (reason) => {
      if (reason === "connect") return "";
      const token = await refreshToken();
      if (token === null) ctx.signedOut();
      return token;
    },
  });

  const paintStatus = () => {
    const text =
      ended ? "Closed"
      : conn === "online" ? (saving ? "Saving…" : "All changes saved")
      : conn === "offline" ? "Offline: edits are kept"
      : conn === "reconnecting" ? "Reconnecting…"
      : conn === "superseded" ? "Open in another tab"
      : conn === "connecting" ? "Connecting…"
      : "Disconnected";
    status.textContent = text;
    status.dataset.state = ended ? "closed" : conn === "online" ? (saving ? "saving" : "saved") : conn;
  };
  client.onState((s) => {
    conn = s;
    if (s === "superseded") showBanner("This document is open in another tab with the same session. Reload to edit here.", "warn");
    paintStatus();
  });

  const paintOnline = () => {
    const seen = new Map<string, Peer>();
    for (const p of doc.online.values()) if (p.user !== ctx.user.id) seen.set(p.user, p);
    replace(
      avatars,
      ...[...seen.values()].map((p) =>
        h("span", { class: "avatar", title: p.name, "data-color": p.color || colorFor(p.user), "data-user": p.user, role: "img", "aria-label": p.name }, initials(p.name)),
      ),
    );
    paintAvatars(avatars);
  };

  const applyRole = () => {
    const editable = canEdit(role) && !ended;
    quill.enable(editable);
    // Editable once the document's metadata is in: a title typed before it arrives would be
    // overwritten by it, or not saved.
    title.readOnly = !editable || !meta;
    commentBtn.hidden = !(role === "commenter" || editable);
    comments.setRole(ended ? undefined : role);
    shareBtn.hidden = !(role === "owner" || (role === "editor" && meta?.editors_can_share));
    editorEl.classList.toggle("readonly", !editable);
    if (ended) return;
    if (role && !editable) showBanner(`You are a ${role} of this document: you can read it, not edit it.`, "info");
    else hideBanner();
  };

  function showBanner(text: string, kind: "info" | "warn" | "error"): void {
    banner.hidden = false;
    banner.className = `banner ${kind}`;
    banner.textContent = text;
  }
  function hideBanner(): void {
    banner.hidden = true;
  }

  const doc = client.open(id, {
    reset(content) {
      quill.setContents(content, "api");
    },
    change(delta, author) {
      quill.updateContents(delta, "api");
      // The answer to this user's undo or redo: the caret goes where the change was, as a
      // local undo puts it.
      if (author === client.clientId && quill.hasFocus()) quill.setSelection(changeEnd(delta), 0, "api");
    },
    opened(info) {
      role = info.role;
      applyRole();
      // For the load benchmark: navigation start to a document open and usable.
      if (!performance.getEntriesByName("tandem-ready").length) performance.mark("tandem-ready");
      paintOnline();
      // A new document is empty; Quill's always ends with a newline, so the server's does too.
      const view = doc.sync.view();
      if (canEdit(role) && !endsWithNewline(view)) doc.edit(new Delta().retain(view.length()).insert("\n"));
      paintStatus();
    },
    joined: () => paintOnline(),
    left(client) {
      paintOnline();
      cursors.removeCursor(client);
    },
    presence(who, sel) {
      if (!sel) return cursors.removeCursor(who);
      const peer = doc.online.get(who);
      if (!peer || peer.user === ctx.user.id && who === client.clientId) return;
      cursors.createCursor(who, peer.name, peer.color || colorFor(peer.user));
      const index = Math.min(sel.anchor, sel.head);
      cursors.moveCursor(who, { index, length: Math.abs(sel.head - sel.anchor) });
      // The name shows while the cursor moves, then fades (hideDelayMs).
      cursors.toggleFlag(who, true);
    },
    save(state) {
      saving = state === "saving";
      paintStatus();
    },
    role(r) {
      role = r;
      applyRole();
    },
    error(code, message, info) {
      if (info.closed) {
        ended = true;
        quill.enable(false);
        const text =
          code === "access_revoked" ? "Your access to this document was removed."
          : code === "document_deleted" ? "This document was deleted."
          : "You do not have access to this document (or it does not exist).";
        showBanner(text, "error");
        editorEl.classList.add("revoked");
        paintStatus();
      } else if (info.rolledBack) {
        toast(`An edit was refused and undone: ${message}`, "error");
      }
    },
    exportFinished(msg) {
      if (msg.export === exportId) exportDone(msg.status, msg.url, msg.error);
    },
    notes() {
      comments.paint();
      const open = comments.open();
      commentsBtn.textContent = open ? `Comments (${open})` : "Comments";
      // Open threads show on a wide screen the first time they come.
      if (open && !commentsShown && side.hidden && window.innerWidth >= 1000) toggleComments(true);
      commentsShown = true;
      if (!side.hidden) void history.refresh();
    },
  });
  const comments = commentsPanel(commentsSide, doc, ctx, quill);
  (window as unknown as { tandem?: EditorHandle }).tandem = { quill, doc, client };

  // Local edits go to the server; the selection follows, at most every 40 ms.
  let presenceTimer = 0;
  const sendSelection = () => {
    presenceTimer = 0;
    const r = quill.getSelection();
    doc.select(r ? { anchor: r.index, head: r.index + r.length } : null);
  };
  const schedulePresence = () => {
    if (!presenceTimer) presenceTimer = window.setTimeout(sendSelection, 40);
  };
  quill.on("text-change", (delta, _old, source) => {
    if (source !== "user") return;
    doc.edit(delta);
    schedulePresence();
  });
  quill.on("selection-change", (_range, _old, source) => {
    if (source !== "silent") schedulePresence();
  });

  // The title and the document's settings.
  void api<Doc>("GET", `/api/documents/${encodeURIComponent(id)}`)
    .then((d) => {
      meta = d;
      title.value = d.title;
      document.title = `${d.title} · Tandem`;
      applyRole();
    })
    .catch(() => {});
  const saveTitle = async () => {
    if (!meta || title.readOnly || title.value.trim() === meta.title || !title.value.trim()) return;
    try {
      meta = await api<Doc>("PATCH", `/api/documents/${encodeURIComponent(id)}`, { title: title.value.trim() });
      document.title = `${meta.title} · Tandem`;
    } catch (e) {
      toast(e instanceof ApiError ? e.message : "Could not rename.", "error");
      title.value = meta.title;
    }
  };
  title.addEventListener("blur", () => void saveTitle());
  title.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      quill.focus();
    }
  });

  shareBtn.addEventListener("click", () => shareDialog(id, meta, ctx));

  const history = historyPanel(side, doc, ctx, quill);
  historyBtn.addEventListener("click", () => {
    const open = side.hidden;
    if (open) toggleComments(false);
    side.hidden = !open;
    historyBtn.setAttribute("aria-expanded", String(open));
    if (open) void history.refresh();
    else history.close();
  });
  function toggleComments(open: boolean): void {
    if (open && !side.hidden) historyBtn.click();
    commentsSide.hidden = !open;
    commentsBtn.setAttribute("aria-expanded", String(open));
    if (open) comments.paint();
  }
  commentsBtn.addEventListener("click", () => toggleComments(commentsSide.hidden));
  commentBtn.addEventListener("mousedown", (ev) => ev.preventDefault()); // keep the editor's selection
  commentBtn.addEventListener("click", () => {
    toggleComments(true);
    comments.start();
  });
  const onKey = (ev: KeyboardEvent) => {
    if ((ev.ctrlKey || ev.metaKey) && ev.altKey && ev.key.toLowerCase() === "m") {
      ev.preventDefault();
      toggleComments(true);
      comments.start();
    }
  };
  document.addEventListener("keydown", onKey);

  // Exports: asked over REST, announced over the WebSocket (and polled, in case).
  let exportPoll = 0;
  let exportId: string | null = null;
  const exportDone = (st: string, url?: string, error?: string) => {
    // Told twice (the WebSocket and the poll): shown once.
    if (exportId === null) return;
    exportId = null;
    clearInterval(exportPoll);
    for (const b of exportMenu?.querySelectorAll("button") ?? []) b.disabled = false;
    if (st === "done" && url) {
      const box = document.getElementById("toasts") ?? document.body;
      const link = h("a", { href: url, class: "download", id: "export-link", download: "" }, "Download");
      toast("Your export is ready.");
      box.lastElementChild?.append(" ", link);
    } else if (st === "failed") {
      toast(`The export failed: ${error ?? "unknown reason"}`, "error");
    }
  };
  exportMenu?.addEventListener("click", async (ev) => {
    const btn = (ev.target as Element).closest("button");
    if (!btn) return;
    for (const b of exportMenu.querySelectorAll("button")) b.disabled = true;
    try {
      const r = await api<{ export_id: string; status_url: string }>("POST", `/api/documents/${encodeURIComponent(id)}/export`, {
        format: btn.dataset.format,
      });
      exportId = r.export_id;
      toast(`Preparing the ${btn.dataset.format!.toUpperCase()}…`);
      let tries = 0;
      exportPoll = window.setInterval(async () => {
        if (++tries > 120) return exportDone("failed", undefined, "no answer in 2 minutes");
        if (exportId !== r.export_id) return;
        try {
          const s = await api<{ status: string; url?: string; error?: string }>("GET", r.status_url);
          if (s.status === "done" || s.status === "failed") exportDone(s.status, s.url, s.error);
        } catch {
          // keep polling
        }
      }, 1000);
    } catch (e) {
      toast(e instanceof ApiError ? e.message : "Could not export.", "error");
      for (const b of exportMenu.querySelectorAll("button")) b.disabled = false;
    }
  });

  async function uploadImage(): Promise<void> {
    const input = h("input", { type: "file", accept: "image/png,image/jpeg,image/gif,image/webp" });
    input.addEventListener("change", async () => {
      const file = input.files?.[0];
      if (!file) return;
      try {
        const r = await api<{ url: string }>("POST", `/api/documents/${encodeURIComponent(id)}/uploads`, file);
        const at = quill.getSelection(true)?.index ?? quill.getLength() - 1;
        quill.insertEmbed(at, "image", r.url, "user");
        quill.setSelection(at + 1, 0, "user");
      } catch (e) {
        toast(e instanceof ApiError ? e.message : "Could not upload the image.", "error");
      }
    });
    input.click();
  }

  paintStatus();
  return () => {
    clearTimeout(presenceTimer);
    clearInterval(exportPoll);
    history.close();
    comments.close();
    document.removeEventListener("keydown", onKey);
    doc.close();
    client.close();
    delete (window as unknown as { tandem?: EditorHandle }).tandem;
  };
}

function endsWithNewline(d: Delta): boolean {
  const last = d.ops[d.ops.length - 1];
  return typeof last?.insert === "string" && last.insert.endsWith("\n");
}

/** Quill's toolbar buttons have no text: give each an accessible name. */
function labelToolbar(root: HTMLElement): void {
  const names: Record<string, string> = {
    bold: "Bold", italic: "Italic", underline: "Underline", strike: "Strikethrough", link: "Link", image: "Insert image",
    code: "Inline code", "code-block": "Code block", blockquote: "Quote", clean: "Clear formatting",
    undo: "Undo (Ctrl+Z)", redo: "Redo (Ctrl+Shift+Z)",
  };
  for (const b of root.querySelectorAll<HTMLButtonElement>(".ql-toolbar button")) {
    const cls = [...b.classList].find((c) => c.startsWith("ql-"))?.slice(3) ?? "";
    const value = b.value;
    const name = cls === "list" ? `${value === "ordered" ? "Numbered" : value === "bullet" ? "Bulleted" : "Check"} list` : names[cls];
    if (name) b.setAttribute("aria-label", name);
    if (cls === "undo" || cls === "redo") b.title = name ?? "";
  }
  for (const p of root.querySelectorAll<HTMLElement>(".ql-toolbar .ql-picker-label")) {
    const cls = [...(p.parentElement?.classList ?? [])].find((c) => c.startsWith("ql-") && c !== "ql-picker")?.slice(3) ?? "";
    p.setAttribute("aria-label", cls === "header" ? "Text style" : cls === "color" ? "Text colour" : cls === "background" ? "Highlight colour" : cls);
  }
}

/** Where a change ends: past its first insert, or at its first delete or format. */
function changeEnd(delta: Delta): number {
  let at = 0;
  for (const op of delta.ops) {
    if (typeof op.retain === "number" && !op.attributes) at += op.retain;
    else return at + (op.insert === undefined ? 0 : typeof op.insert === "string" ? op.insert.length : 1);
  }
  return at;
}
