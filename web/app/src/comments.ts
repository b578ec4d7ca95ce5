// Comments: threads anchored to the text, kept by the server (every client sees the same
// anchors), shown in a side panel and highlighted in the text (the CSS Custom Highlight API:
// nothing is added to the document). Commenters and up comment, reply, resolve and reopen;
// authors edit and delete their messages; owners delete any. "@Name" mentions collaborators,
// who are emailed.

import Quill from "quill";
import { NoteError, type DocHandle, type Role, type ThreadView } from "@tandem/client";

import { api } from "./api.js";
import { ago, h, replace, toast } from "./dom.js";
import type { Ctx } from "./main.js";

const canComment = (role: Role | undefined) => role === "commenter" || role === "editor" || role === "owner";

interface Collaborator {
  id: string;
  name: string;
  email: string;
}

interface Highlights {
  set(name: string, h: unknown): void;
  delete(name: string): void;
}

export interface CommentsPanel {
  /** Re-reads the threads (a note came, or the text changed). */
  paint(): void;
  /** Starts a comment on the editor's selection (the toolbar button, Ctrl+Alt+M). */
  start(): void;
  /** The user's role changed. */
  setRole(role: Role | undefined): void;
  /** How many open threads there are. */
  open(): number;
  close(): void;
}

export function commentsPanel(side: HTMLElement, doc: DocHandle, ctx: Ctx, quill: Quill): CommentsPanel {
  let role: Role | undefined;
  let showResolved = false;
  let draft: { index: number; length: number } | null = null;
  let active: number | null = null;
  let collaborators: Collaborator[] | null = null;
  const list = h("ol", { class: "threads", id: "threads", "aria-label": "Comment threads" });
  const empty = h("p", { class: "muted small", id: "comments-empty" });
  const resolvedToggle = h("input", { type: "checkbox", id: "show-resolved" });
  const draftBox = h("form", { class: "thread draft", id: "comment-draft", hidden: true });
  replace(
    side,
    h("h2", {}, "Comments"),
    h("label", { class: "small muted" }, resolvedToggle, " Show resolved"),
    draftBox,
    empty,
    list,
  );
  resolvedToggle.addEventListener("change", () => {
    showResolved = resolvedToggle.checked;
    paint();
  });

  const highlights = (globalThis as unknown as { CSS?: { highlights?: Highlights } }).CSS?.highlights;
  const HighlightCtor = (globalThis as unknown as { Highlight?: new (...r: Range[]) => unknown }).Highlight;

  /** A DOM range over `index..index+length` of the editor's text. */
  const domRange = (index: number, length: number): Range | null => {
    try {
      const [startLeaf, startOffset] = quill.getLeaf(index);
      const [endLeaf, endOffset] = quill.getLeaf(index + length);
      if (!startLeaf || !endLeaf) return null;
      const r = document.createRange();
      const node = (leaf: unknown) => (leaf as { domNode: Node }).domNode;
      const startNode = node(startLeaf);
      const endNode = node(endLeaf);
      r.setStart(startNode, startNode.nodeType === Node.TEXT_NODE ? startOffset : 0);
      r.setEnd(endNode, endNode.nodeType === Node.TEXT_NODE ? endOffset : 0);
      return r;
    } catch {
      return null;
    }
  };

  const paintHighlights = (threads: ThreadView[]) => {
    if (!highlights || !HighlightCtor) return;
    const visible = threads.filter((t) => !t.orphaned && (!t.resolved_by || showResolved) && t.length > 0);
    const ranges = visible.filter((t) => t.id !== active).map((t) => domRange(t.index, t.length)).filter((r): r is Range => !!r);
    highlights.set("tandem-comment", new HighlightCtor(...ranges));
    const current = visible.find((t) => t.id === active);
    const r = current && domRange(current.index, current.length);
    if (r) highlights.set("tandem-comment-active", new HighlightCtor(r));
    else highlights.delete("tandem-comment-active");
  };

  const mentionsIn = async (text: string): Promise<string[]> => {
    if (!text.includes("@")) return [];
    if (collaborators === null) {
      try {
        const r = await api<{ permissions: { user: { id: string; name: string; email: string } }[] }>(
          "GET",
          `/api/documents/${encodeURIComponent(doc.id)}/permissions`,
        );
        collaborators = r.permissions.map((p) => p.user);
      } catch {
        collaborators = []; // link access: collaborators are not shown
      }
    }
    const lower = text.toLowerCase();
    return collaborators
      .filter((c) => c.id !== ctx.user.id)
      .filter((c) => lower.includes(`@${c.name.toLowerCase()}`) || lower.includes(`@${c.email.toLowerCase()}`))
      .map((c) => c.id);
  };

  const refused = (e: unknown, what: string) => {
    const message = e instanceof NoteError ? e.message : String(e);
    toast(`${what}: ${message}`, "error");
  };

  const quoteOf = (t: ThreadView): string => {
    if (t.orphaned) return "";
    const text = quill.getText(t.index, t.length).replace(/\s+/g, " ").trim();
    return text.length > 120 ? `${text.slice(0, 117)}…` : text;
  };

  const messageEl = (t: ThreadView, m: ThreadView["messages"][number], first: boolean) => {
    const mine = m.user === ctx.user.id;
    const body = h("p", { class: "message-text" }, m.text);
    const actions = h("span", { class: "message-actions" });
    if (mine && canComment(role)) {
      const edit = h("button", { type: "button", class: "link edit-message" }, "Edit");
      edit.addEventListener("click", () => {
        const area = h("textarea", { class: "edit-text", "aria-label": "Edit the message", maxlength: 4000 });
        area.value = m.text;
        const save = h("button", { type: "submit", class: "primary small" }, "Save");
        const cancel = h("button", { type: "button", class: "small" }, "Cancel");
        const form = h("form", { class: "edit-form" }, area, h("div", { class: "row" }, save, cancel));
        cancel.addEventListener("click", () => paint());
        form.addEventListener("submit", async (ev) => {
          ev.preventDefault();
          try {
            await doc.editMessage(t.id, m.id, area.value, await mentionsIn(area.value));
          } catch (e) {
            refused(e, "Not saved");
          }
        });
        body.replaceWith(form);
        area.focus();
      });
      actions.append(edit);
    }
    if ((mine && canComment(role)) || role === "owner") {
      const del = h("button", { type: "button", class: "link delete-message" }, first ? "Delete thread" : "Delete");
      del.addEventListener("click", async () => {
        try {
          await doc.deleteMessage(t.id, m.id);
        } catch (e) {
          refused(e, "Not deleted");
        }
      });
      actions.append(del);
    }
    return h(
      "div",
      { class: "message", "data-message": m.id },
      h(
        "div",
        { class: "message-head" },
        h("strong", {}, m.name),
        " ",
        h("span", { class: "muted small", title: new Date(m.created_ms).toLocaleString() }, ago(m.created_ms), m.edited_ms ? " (edited)" : ""),
        actions,
      ),
      body,
    );
  };

  const threadEl = (t: ThreadView) => {
    const quote = quoteOf(t);
    const li = h(
      "li",
      {
        class: `thread${t.id === active ? " active" : ""}`,
        "data-thread": t.id,
        "data-resolved": t.resolved_by ? "true" : null,
        "data-orphaned": t.orphaned ? "true" : null,
        tabindex: 0,
      },
      t.orphaned ? h("p", { class: "quote orphaned small" }, "The text it was on was deleted.") : h("blockquote", { class: "quote" }, quote),
      ...t.messages.map((m, i) => messageEl(t, m, i === 0)),
    );
    if (canComment(role)) {
      if (!t.resolved_by) {
        const area = h("textarea", { class: "reply-text", placeholder: "Reply… (@name to mention)", "aria-label": "Reply", rows: 1, maxlength: 4000 });
        const send = h("button", { type: "submit", class: "small" }, "Reply");
        const form = h("form", { class: "reply" }, area, send);
        form.addEventListener("submit", async (ev) => {
          ev.preventDefault();
          if (!area.value.trim()) return;
          const text = area.value;
          send.disabled = true;
          try {
            await doc.reply(t.id, text, await mentionsIn(text));
            area.value = "";
          } catch (e) {
            refused(e, "Not sent");
          } finally {
            send.disabled = false;
          }
        });
        li.append(form);
      }
      const resolve = h("button", { type: "button", class: "small resolve" }, t.resolved_by ? "Reopen" : "Resolve");
      resolve.addEventListener("click", async () => {
        try {
          await doc.resolve(t.id, !!t.resolved_by);
        } catch (e) {
          refused(e, "Not changed");
        }
      });
      li.append(resolve);
    }
    li.addEventListener("focusin", () => select(t.id, false));
    li.addEventListener("click", (ev) => {
      if ((ev.target as Element).closest("button, textarea, form")) return;
      select(t.id, true);
    });
    return li;
  };

  /** Marks a thread as the one looked at; `scroll` brings its text into view. */
  const select = (id: number | null, scroll: boolean) => {
    if (active === id) return;
    active = id;
    for (const el of list.querySelectorAll<HTMLElement>(".thread")) el.classList.toggle("active", Number(el.dataset.thread) === id);
    const t = doc.threads().find((x) => x.id === id);
    paintHighlights(doc.threads());
    if (t && scroll && !t.orphaned) {
      const b = quill.getBounds(t.index, t.length);
      if (b) quill.root.scrollTop = Math.max(0, quill.root.scrollTop + b.top - 40);
    }
  };

  let scheduled = 0;
  const paint = () => {
    scheduled = 0;
    const threads = doc.threads();
    const shown = threads.filter((t) => showResolved || !t.resolved_by);
    // Keep what is being typed: a reply or an edit in progress is not repainted away.
    const focused = list.querySelector<HTMLTextAreaElement>(".thread textarea:focus");
    const thread = focused?.closest<HTMLElement>(".thread")?.dataset.thread;
    const cls = focused?.classList[0];
    const keep = focused && thread && cls ? { thread, cls, value: focused.value } : null;
    if (keep && focused?.classList.contains("edit-text")) {
      paintHighlights(threads);
      return; // an edit form would be lost: wait for it
    }
    replace(list, ...shown.map(threadEl));
    if (keep) {
      const area = list.querySelector<HTMLTextAreaElement>(`.thread[data-thread="${CSS.escape(keep.thread)}"] textarea.${CSS.escape(keep.cls)}`);
      if (area) {
        area.value = keep.value;
        area.focus();
      }
    }
    const open = threads.filter((t) => !t.resolved_by).length;
    empty.textContent =
      shown.length ? ""
      : threads.length ? `${threads.length} resolved thread${threads.length === 1 ? "" : "s"}.`
      : canComment(role) ? "No comments yet. Select some text and press Comment (Ctrl+Alt+M)."
      : "No comments yet.";
    side.dataset.open = String(open);
    paintHighlights(threads);
  };
  const schedule = () => {
    if (!scheduled) scheduled = requestAnimationFrame(paint);
  };

  // A draft comment's range follows the edits made while it is typed.
  quill.on("text-change", (delta) => {
    if (draft) {
      const start = delta.transformPosition(draft.index, false);
      const end = Math.max(start, delta.transformPosition(draft.index + draft.length, true));
      draft = { index: start, length: end - start };
    }
    schedule();
  });
  // The caret in commented text shows its thread.
  quill.on("selection-change", (range) => {
    if (!range) return;
    const t = doc.threads().find((x) => !x.orphaned && (showResolved || !x.resolved_by) && range.index >= x.index && range.index < x.index + x.length);
    if (t) {
      select(t.id, false);
      list.querySelector(`.thread[data-thread="${t.id}"]`)?.scrollIntoView({ block: "nearest" });
    }
  });

  const start = () => {
    if (!canComment(role)) return;
    const sel = quill.getSelection();
    if (!sel || sel.length === 0) {
      toast("Select the text to comment on first.");
      return;
    }
    draft = { index: sel.index, length: sel.length };
    side.hidden = false;
    const area = h("textarea", { id: "comment-text", placeholder: "Add a comment… (@name to mention)", "aria-label": "Comment", rows: 2, maxlength: 4000 });
    const send = h("button", { type: "submit", class: "primary small", id: "comment-send" }, "Comment");
    const cancel = h("button", { type: "button", class: "small" }, "Cancel");
    const quote = quill.getText(sel.index, sel.length).replace(/\s+/g, " ").trim();
    replace(draftBox, h("blockquote", { class: "quote" }, quote.length > 120 ? `${quote.slice(0, 117)}…` : quote), area, h("div", { class: "row" }, send, cancel));
    draftBox.hidden = false;
    cancel.addEventListener("click", () => {
      draft = null;
      draftBox.hidden = true;
    });
    area.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) draftBox.requestSubmit();
      if (ev.key === "Escape") cancel.click();
    });
    area.focus();
  };
  draftBox.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const area = draftBox.querySelector<HTMLTextAreaElement>("#comment-text");
    if (!draft || !area || !area.value.trim()) return;
    const send = draftBox.querySelector<HTMLButtonElement>("#comment-send")!;
    send.disabled = true;
    try {
      const id = await doc.comment(draft, area.value, await mentionsIn(area.value));
      draft = null;
      draftBox.hidden = true;
      paint();
      select(id, false);
    } catch (e) {
      refused(e, "Not commented");
    } finally {
      send.disabled = false;
    }
  });

  return {
    paint: schedule,
    start,
    setRole(r) {
      role = r;
      schedule();
    },
    open: () => doc.threads().filter((t) => !t.resolved_by).length,
    close() {
      if (scheduled) cancelAnimationFrame(scheduled);
      highlights?.delete("tandem-comment");
      highlights?.delete("tandem-comment-active");
    },
  };
}
