// The editor end to end, as people use it: several browser contexts (each its own user)
// against a real `tandem serve`, in Debian's Chromium.

import { join } from "node:path";

import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";

import { Delta, TandemClient, type SocketLike } from "@tandem/client";

import { launch, screenshotDir, startServer, until, userPage, type Server } from "./harness.js";

let server: Server;
let browser: Browser;
const errors: string[] = [];
const users: Record<string, { context: BrowserContext; page: Page; email: string; id?: string }> = {};
let docId = "";
const PASSWORD = "correct horse battery";

beforeAll(async () => {
  server = await startServer();
  browser = await launch();
});

// A failed test leaves every user's screen behind, to see what went wrong.
afterEach(async (ctx) => {
  if (ctx.task.result?.state !== "fail") return;
  for (const [name, u] of Object.entries(users)) {
    await u.page.screenshot({ path: join(screenshotDir(), `failed-${name}.png`) }).catch(() => {});
  }
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

async function signup(name: string): Promise<Page> {
  const { context, page } = await userPage(browser, errors);
  const email = `${name.toLowerCase()}@example.com`;
  users[name] = { context, page, email };
  await page.goto(`${server.url}/`);
  await page.waitForURL(/\/login/);
  await page.getByRole("link", { name: "Create an account" }).click();
  await page.fill("#name", name);
  await page.fill("#email", email);
  await page.fill("#password", PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(`${server.url}/`);
  await page.getByRole("heading", { name: "Documents" }).waitFor();
  return page;
}

type Snapshot = { rev: number; saved: boolean; server: unknown; view: unknown };

function state(page: Page): Promise<Snapshot> {
  return page.evaluate(() => {
    const t = (window as unknown as { tandem: { quill: { getContents(): { ops: unknown } }; doc: { sync: { rev: number; saved(): boolean; server: { ops: unknown } } } } }).tandem;
    return { rev: t.doc.sync.rev, saved: t.doc.sync.saved(), server: t.doc.sync.server.ops, view: t.quill.getContents().ops };
  });
}

async function settled(pages: Page[]): Promise<Snapshot[]> {
  let last: Snapshot[] = [];
  await until(
    async () => {
      last = await Promise.all(pages.map(state));
      return last.every((s) => s.saved) && new Set(last.map((s) => s.rev)).size === 1;
    },
    30_000,
    "every editor saved at the same revision",
  );
  return last;
}

async function openDoc(page: Page): Promise<void> {
  await page.goto(`${server.url}/d/${docId}`);
  await page.locator(".ql-editor").waitFor();
  await until(() => page.evaluate(() => Boolean((window as unknown as { tandem?: { doc: { isOpen: boolean } } }).tandem?.doc.isOpen)), 15_000, "the document open");
}

/** Puts the caret at `index` (UTF-16) and types. */
async function typeAt(page: Page, index: number | "end", text: string): Promise<void> {
  await page.evaluate((i) => {
    const q = (window as unknown as { tandem: { quill: { getLength(): number; setSelection(i: number, l: number, s: string): void } } }).tandem.quill;
    q.setSelection(i === "end" ? q.getLength() - 1 : i, 0, "user");
  }, index);
  await page.keyboard.type(text, { delay: 8 });
}

/** The server's document, read over the WebSocket by a fresh client with a REST token. */
async function serverDocument(email: string): Promise<Delta> {
  const r = await fetch(`${server.url}/api/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ email, password: PASSWORD }) });
  const { access_token } = (await r.json()) as { access_token: string };
  let content = new Delta();
  let open = false;
  const client = new TandemClient({
    url: `ws://${server.addr}/ws`,
    name: "checker",
    storage: null,
    token: () => access_token,
    socket: (url, p) => new WebSocket(url, p) as unknown as SocketLike,
  });
  const doc = client.open(docId, { reset: (c) => (content = c), opened: () => (open = true) });
  await until(() => open, 10_000, "the checker's open");
  content = doc.sync.view();
  client.close();
  return content;
}

const textOf = (ops: unknown): string =>
  (ops as { insert: unknown }[]).map((o) => (typeof o.insert === "string" ? o.insert : "#")).join("");

describe("the editor in Chromium", () => {
  it("signs people up and lists their documents", async () => {
    await signup("Ada");
    await signup("Bob");
    await signup("Cy");
    await signup("Dan");
    const ada = users.Ada!.page;
    await ada.getByRole("button", { name: "New document" }).click();
    await ada.waitForURL(/\/d\//);
    docId = decodeURIComponent(new URL(ada.url()).pathname.split("/")[2]!);
    await ada.locator("#doc-title").fill("Launch plan");
    await ada.locator("#doc-title").press("Enter");
    await until(async () => (await ada.locator("#status").textContent()) === "All changes saved", 15_000, "saved");
    await typeAt(ada, 0, "Launch plan");
    await ada.keyboard.press("Enter");
    await ada.keyboard.type("Goals for the week: ");
    await settled([ada]);
    // Back to the list: the document is there, most recent first.
    await ada.getByRole("link", { name: "Tandem: your documents" }).click();
    await ada.getByRole("link", { name: "Launch plan" }).waitFor();
    await ada.screenshot({ path: join(screenshotDir(), "documents.png") });
  });

  it("shares the document, and the people it is shared with open it", async () => {
    const ada = users.Ada!.page;
    await openDoc(ada);
    await ada.getByRole("button", { name: "Share" }).click();
    const dialog = ada.locator("#share-dialog");
    await dialog.waitFor();
    for (const [name, role] of [["Bob", "editor"], ["Cy", "viewer"], ["Dan", "editor"]] as const) {
      await ada.fill("#share-email", users[name]!.email);
      await ada.selectOption("#share-role", role);
      await ada.click("#share-submit");
      await until(async () => ((await ada.locator("#share-msg").textContent()) ?? "").includes(users[name]!.email), 10_000, `shared with ${name}`);
    }
    await ada.locator("#share-people li", { hasText: users.Cy!.email }).waitFor();
    await ada.screenshot({ path: join(screenshotDir(), "share.png") });
    await ada.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });
    for (const name of ["Bob", "Cy", "Dan"]) await openDoc(users[name]!.page);
    const bob = users.Bob!.page;
    await until(async () => textOf((await state(bob)).view).startsWith("Launch plan\nGoals"), 10_000, "Bob sees the text");
    // Everyone sees who else is here.
    await until(async () => (await ada.locator("#online .avatar").count()) === 3, 10_000, "three avatars");
  });

  it("merges concurrent typing in one paragraph, emoji and formatting included", async () => {
    const { Ada: a, Bob: b, Dan: d } = users;
    const pages = [a!.page, b!.page, d!.page];
    // One paragraph, "Goals for the week: ", three places in it at once: after "Goals", after
    // "the" and at its end. (People typing at the very same place interleave their letters:
    // position-based OT orders concurrent inserts at one position by commit order.)
    await Promise.all([
      (async () => {
        await typeAt(a!.page, 17, " to ship ");
        await a!.page.keyboard.press("Control+b");
        await a!.page.keyboard.type("bold 😀", { delay: 8 });
        await a!.page.keyboard.press("Control+b");
      })(),
      typeAt(b!.page, 25, " review 👨‍👩‍👧 docs"),
      typeAt(d!.page, "end", "fix bugs 🇫🇷 é"),
    ]);
    const states = await settled(pages);
    for (const s of states) {
      expect(s.view).toEqual(states[0]!.view);
      expect(s.server).toEqual(states[0]!.server);
    }
    const text = textOf(states[0]!.view);
    expect(text).toBe("Launch plan\nGoals to ship bold 😀 for the review 👨‍👩‍👧 docs week: fix bugs 🇫🇷 é\n");
    expect(states[0]!.view).toContainEqual({ insert: "bold 😀", attributes: { bold: true } });
    // And the server holds exactly what every editor shows.
    expect((await serverDocument(a!.email)).ops).toEqual(states[0]!.view);
  });

  it("undoes each person's own typing with Ctrl-Z, also after a reload", async () => {
    const { Ada: a, Bob: b } = users;
    const pages = [a!.page, b!.page];
    const before = textOf((await settled(pages))[0]!.view);
    await typeAt(a!.page, "end", " (Ada's note)");
    await typeAt(b!.page, 0, "Bob: ");
    const textNow = async () => textOf((await settled(pages))[0]!.view);
    const withBoth = `Bob: ${before.slice(0, -1)} (Ada's note)\n`;
    expect(await textNow()).toBe(withBoth);
    // Ada's undo takes back her typing only, for everyone; redo brings it back.
    await a!.page.keyboard.press("Control+z");
    await until(async () => (await textNow()) === `Bob: ${before}`, 10_000, "Ada's note undone");
    await a!.page.keyboard.press("Control+Shift+z");
    await until(async () => (await textNow()) === withBoth, 10_000, "Ada's note redone");
    // A reload keeps her undo history (it is the server's).
    await openDoc(a!.page);
    await a!.page.locator(".ql-editor").click();
    await a!.page.keyboard.press("Control+z");
    await until(async () => (await textNow()) === `Bob: ${before}`, 10_000, "undone after the reload");
    // Bob's undo is his own (the toolbar's button: phones have no Ctrl-Z).
    await b!.page.getByRole("button", { name: "Undo (Ctrl+Z)" }).click();
    await until(async () => (await textNow()) === before, 10_000, "Bob's typing undone");
    await a!.page.screenshot({ path: join(screenshotDir(), "undo.png") });
  });

  it("shows each person the others' cursors where they are", async () => {
    const { Ada: a, Bob: b, Dan: d } = users;
    const clientOf = (p: Page) => p.evaluate(() => (window as unknown as { tandem: { client: { clientId: string } } }).tandem.client.clientId);
    const adaClient = await clientOf(a!.page);
    const bobClient = await clientOf(b!.page);
    // Ada selects "plan" (after the emoji-free "Launch "), Bob puts his caret after "Goals".
    await a!.page.evaluate(() => (window as unknown as { tandem: { quill: { setSelection(i: number, l: number, s: string): void } } }).tandem.quill.setSelection(7, 4, "user"));
    await b!.page.evaluate(() => (window as unknown as { tandem: { quill: { setSelection(i: number, l: number, s: string): void } } }).tandem.quill.setSelection(17, 0, "user"));
    const cursorsOn = (p: Page) =>
      p.evaluate(() =>
        (window as unknown as { tandem: { quill: { getModule(n: string): { cursors(): { id: string; range: { index: number; length: number } }[] } } } }).tandem.quill
          .getModule("cursors")
          .cursors()
          .map((c) => ({ id: c.id, index: c.range?.index, length: c.range?.length })),
      );
    await until(async () => {
      const cs = await cursorsOn(d!.page);
      return cs.some((c) => c.id === adaClient && c.index === 7 && c.length === 4) && cs.some((c) => c.id === bobClient && c.index === 17 && c.length === 0);
    }, 10_000, "Dan sees Ada's selection and Bob's caret");
    expect(await d!.page.locator(".ql-cursor-name", { hasText: "Ada" }).count()).toBe(1);
    expect(await d!.page.locator(".ql-cursor-name", { hasText: "Bob" }).count()).toBe(1);
    await d!.page.screenshot({ path: join(screenshotDir(), "editor.png") });
  });

  it("keeps the viewer read-only", async () => {
    const cy = users.Cy!.page;
    await cy.locator("#banner", { hasText: "viewer" }).waitFor();
    const before = await state(cy);
    await cy.locator(".ql-editor").click();
    await cy.keyboard.type("viewer typing");
    await new Promise((r) => setTimeout(r, 300));
    const after = await state(cy);
    expect(after.view).toEqual(before.view);
    expect(textOf(after.view)).not.toContain("viewer typing");
    expect(await cy.locator(".ql-editor").getAttribute("contenteditable")).toBe("false");
  });

  it("loses nothing and duplicates nothing across going offline", async () => {
    const { Ada: a, Dan: d } = users;
    await d!.context.setOffline(true);
    await until(async () => ((await d!.page.locator("#status").textContent()) ?? "").startsWith("Offline"), 10_000, "Dan offline");
    await typeAt(d!.page, "end", " typed-offline");
    await typeAt(a!.page, 0, "Online: ");
    await new Promise((r) => setTimeout(r, 300));
    await d!.context.setOffline(false);
    const states = await settled([a!.page, d!.page]);
    expect(states[1]!.view).toEqual(states[0]!.view);
    const text = textOf(states[0]!.view);
    expect(text.split("typed-offline").length - 1).toBe(1);
    expect(text.split("Online: ").length - 1).toBe(1);
    expect((await serverDocument(a!.email)).ops).toEqual(states[0]!.view);
  });

  it("shows the history and the document at a revision", async () => {
    const ada = users.Ada!.page;
    await ada.getByRole("button", { name: "History" }).click();
    await ada.locator("#revisions li").first().waitFor();
    expect(await ada.locator("#revisions li").count()).toBeGreaterThan(1);
    // The oldest entry: Ada's first words.
    await ada.locator("#revisions li button").last().click();
    await ada.locator("#preview .ql-editor").waitFor();
    await until(async () => ((await ada.locator("#preview .ql-editor").textContent()) ?? "").includes("Launch plan"), 10_000, "the preview");
    expect(await ada.locator("#preview .ql-editor").textContent()).not.toContain("typed-offline");
    // What that editing session changed, with who changed it: Ada's first words, inserted.
    await ada.getByRole("button", { name: "Show changes" }).click();
    await ada.locator("#changes-legend", { hasText: "Ada (you)" }).waitFor({ timeout: 10_000 });
    await until(async () => (await ada.locator("#preview .ql-editor u").count()) > 0, 10_000, "inserted text marked");
    expect(await ada.locator("#preview .ql-editor u").first().textContent()).toContain("Launch plan");
    await ada.screenshot({ path: join(screenshotDir(), "changes.png") });
    await ada.getByRole("button", { name: "Show the document" }).click();
    await ada.locator("#changes-legend").waitFor({ state: "hidden" });
    await ada.getByRole("button", { name: "Back to editing" }).click();
    await ada.getByRole("button", { name: "History" }).click();
  });

  it("restores an old version for everyone, and undo takes it back", async () => {
    const { Ada: a, Bob: b } = users;
    const pages = [a!.page, b!.page];
    const before = textOf((await settled(pages))[0]!.view);
    await a!.page.getByRole("button", { name: "History" }).click();
    const oldest = a!.page.locator("#revisions li button").last();
    await oldest.waitFor();
    const rev = Number(await oldest.getAttribute("data-rev"));
    const then = await a!.page.evaluate(
      (r) => (window as unknown as { tandem: { doc: { revision(r: number): Promise<{ ops: unknown }> } } }).tandem.doc.revision(r).then((d) => d.ops),
      rev,
    );
    await oldest.click();
    await a!.page.getByRole("button", { name: "Restore this version" }).waitFor();
    await a!.page.screenshot({ path: join(screenshotDir(), "restore.png") });
    await a!.page.getByRole("button", { name: "Restore this version" }).click();
    // Everyone sees the restore as an edit.
    await until(async () => textOf((await settled(pages))[0]!.view) === textOf(then), 10_000, "the restore everywhere");
    await a!.page.getByRole("button", { name: "History" }).click();
    // It is Ada's change: her undo takes it back.
    await a!.page.locator("#editor .ql-editor").click();
    await a!.page.keyboard.press("Control+z");
    await until(async () => textOf((await settled(pages))[0]!.view) === before, 10_000, "the restore undone");
  });

  it("comments on text, with replies, anchors that follow edits, and resolve, for everyone", async () => {
    const { Ada: a, Bob: b, Cy: c } = users;
    const pages = [a!.page, b!.page, c!.page];
    const view = textOf((await settled(pages))[0]!.view);
    const word = "Launch";
    const at = view.indexOf(word);
    expect(at).toBeGreaterThanOrEqual(0);
    // Ada selects the word and comments, mentioning Bob.
    await a!.page.evaluate(([i, n]) => (window as unknown as { tandem: { quill: { setSelection(i: number, l: number, s: string): void } } }).tandem.quill.setSelection(i!, n!, "user"), [at, word.length]);
    await a!.page.getByRole("button", { name: "Comment", exact: true }).click();
    await a!.page.fill("#comment-text", "Is this the right word? @Bob");
    await a!.page.locator("#comment-send").click();
    await a!.page.locator("#threads .thread").first().waitFor();
    // Bob and Cy (a viewer) see it, highlighted in the text; Cy may not comment or reply.
    for (const p of [b!.page, c!.page]) {
      await p.locator("#comments").click();
      await p.locator("#threads .thread .message-text", { hasText: "Is this the right word?" }).waitFor({ timeout: 10_000 });
      expect(await p.locator("#threads .thread .quote").first().textContent()).toBe(word);
      const marked = await p.evaluate(() => (globalThis as unknown as { CSS: { highlights: Map<string, Set<unknown>> } }).CSS.highlights.get("tandem-comment")?.size ?? 0);
      expect(marked).toBe(1);
    }
    expect(await c!.page.locator("#comment-add").isHidden()).toBe(true);
    expect(await c!.page.locator("#threads .reply").count()).toBe(0);
    // Bob types before the word: the thread stays on it, everywhere.
    await typeAt(b!.page, 0, "New: ");
    await settled(pages);
    for (const p of pages) {
      await until(async () => (await p.locator("#threads .thread .quote").first().textContent()) === word, 10_000, "the anchor on the word");
    }
    // Bob replies; Ada sees it, and resolves the thread.
    await b!.page.locator("#threads .thread .reply-text").fill("Yes, keep it.");
    await b!.page.locator("#threads .thread .reply button").click();
    await a!.page.locator("#threads .message-text", { hasText: "Yes, keep it." }).waitFor({ timeout: 10_000 });
    await a!.page.screenshot({ path: join(screenshotDir(), "comments.png") });
    await a!.page.getByRole("button", { name: "Resolve" }).click();
    await until(async () => (await b!.page.locator("#threads .thread").count()) === 0, 10_000, "resolved for Bob");
    await b!.page.locator("#show-resolved").check();
    await b!.page.locator("#threads .thread[data-resolved]").waitFor();
    expect(await b!.page.getByRole("button", { name: "Reopen" }).count()).toBe(1);
    for (const p of [b!.page, c!.page]) await p.locator("#comments").click();
    await a!.page.locator("#comments").click();
  });

  it("names a version, and everyone sees the name in the history", async () => {
    const { Ada: a, Bob: b } = users;
    await a!.page.getByRole("button", { name: "History" }).click();
    const oldest = a!.page.locator("#revisions li button").last();
    await oldest.waitFor();
    const rev = await oldest.getAttribute("data-rev");
    await oldest.click();
    await a!.page.getByRole("button", { name: "Name this version" }).click();
    await a!.page.fill("#version-name", "First draft");
    await a!.page.getByRole("button", { name: "Save" }).click();
    await a!.page.locator("#named-versions li", { hasText: "First draft" }).waitFor({ timeout: 10_000 });
    await a!.page.getByRole("button", { name: "Back to editing" }).click();
    await a!.page.getByRole("button", { name: "History" }).click();
    await b!.page.getByRole("button", { name: "History" }).click();
    const named = b!.page.locator("#named-versions li button", { hasText: "First draft" });
    await named.waitFor({ timeout: 10_000 });
    expect(await named.getAttribute("data-rev")).toBe(rev);
    await b!.page.getByRole("button", { name: "History" }).click();
  });

  it("gives a new role at once: a viewer made editor can type", async () => {
    const { Ada: a, Cy: c } = users;
    await a!.page.getByRole("button", { name: "Share" }).click();
    await a!.page.getByRole("combobox", { name: "Role of Cy" }).selectOption("editor");
    await until(async () => ((await a!.page.locator("#share-msg").textContent()) ?? "").includes("Cy is now editor"), 10_000, "role changed");
    await a!.page.keyboard.press("Escape");
    await c!.page.locator("#banner").waitFor({ state: "hidden", timeout: 10_000 });
    await typeAt(c!.page, "end", " Cy was here");
    const states = await settled([a!.page, c!.page]);
    expect(textOf(states[0]!.view)).toContain("Cy was here");
  });

  it("cuts a revoked user off without a reload", async () => {
    const { Ada: a, Bob: b } = users;
    await a!.page.getByRole("button", { name: "Share" }).click();
    await a!.page.getByRole("button", { name: "Remove Bob" }).click();
    await until(async () => ((await a!.page.locator("#share-msg").textContent()) ?? "").includes("no longer has access"), 10_000, "revoked");
    await a!.page.keyboard.press("Escape");
    await b!.page.locator("#banner", { hasText: "Your access to this document was removed." }).waitFor({ timeout: 10_000 });
    expect(await b!.page.locator(".ql-editor").getAttribute("contenteditable")).toBe("false");
  });

  it("exports a PDF from the button, announced over the WebSocket", async () => {
    const ada = users.Ada!.page;
    await ada.getByRole("button", { name: "PDF" }).click();
    const link = ada.locator("#export-link");
    await link.waitFor({ timeout: 60_000 });
    const href = await link.getAttribute("href");
    const r = await ada.request.get(new URL(href!, server.url).toString());
    expect(r.status()).toBe(200);
    expect((await r.body()).subarray(0, 5).toString()).toBe("%PDF-");
  });

  it("inserts an uploaded image that everyone sees", async () => {
    const { Ada: a, Dan: d } = users;
    // A 2x2 PNG.
    const png = Buffer.from(
      "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a730000001049444154789c63f8cfc000440c100a001fee03fd8b5f14d40000000049454e44ae426082",
      "hex",
    );
    await a!.page.evaluate(() => (window as unknown as { tandem: { quill: { setSelection(i: number, l: number, s: string): void } } }).tandem.quill.setSelection(0, 0, "user"));
    const chooser = a!.page.waitForEvent("filechooser");
    await a!.page.getByRole("button", { name: "Insert image" }).click();
    await (await chooser).setFiles({ name: "dot.png", mimeType: "image/png", buffer: png });
    await d!.page.locator(".ql-editor img").waitFor({ timeout: 10_000 });
    const src = await d!.page.locator(".ql-editor img").getAttribute("src");
    expect(src).toMatch(/^\/api\/uploads\//);
    await until(() => d!.page.evaluate(() => (document.querySelector(".ql-editor img") as HTMLImageElement).naturalWidth === 2), 10_000, "the image loads");
    const states = await settled([a!.page, d!.page]);
    expect(states[1]!.view).toEqual(states[0]!.view);
  });

  it("works in a narrow window", async () => {
    const { context, page } = await userPage(browser, errors, { width: 390, height: 844 });
    await page.goto(`${server.url}/login`);
    await page.fill("#email", users.Ada!.email);
    await page.fill("#password", PASSWORD);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(`${server.url}/`);
    await openDoc(page);
    const box = await page.locator(".ql-editor").boundingBox();
    expect(box!.width).toBeLessThanOrEqual(390);
    expect(box!.width).toBeGreaterThan(300);
    await page.screenshot({ path: join(screenshotDir(), "mobile.png") });
    await context.close();
  });

  it("finds the document by its text, renames it and deletes it from the list", async () => {
    const ada = users.Ada!.page;
    await ada.goto(`${server.url}/`);
    await ada.fill("#search", "typed-offline");
    await until(async () => (await ada.locator(".search-results a", { hasText: "Launch plan" }).count()) === 1, 20_000, "a search hit");
    await ada.fill("#search", "");
    ada.once("dialog", (d) => void d.accept("Launch plan v2"));
    await ada.getByRole("button", { name: "Rename Launch plan" }).click();
    await ada.getByRole("link", { name: "Launch plan v2" }).waitFor();
    ada.once("dialog", (d) => void d.accept());
    await ada.getByRole("button", { name: "Delete Launch plan v2" }).click();
    await ada.getByRole("link", { name: "Launch plan v2" }).waitFor({ state: "detached" });
    // Everyone still on it is told.
    await users.Dan!.page.locator("#banner", { hasText: "This document was deleted." }).waitFor({ timeout: 10_000 });
    await ada.getByRole("button", { name: "Log out" }).click();
    await ada.waitForURL(/\/login/);
    await ada.goto(`${server.url}/`);
    await ada.waitForURL(/\/login/);
  });

  it("logged no errors and no CSP violations", () => {
    expect(errors, errors.join("\n")).toEqual([]);
  });
});
