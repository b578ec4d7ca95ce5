// A real `tandem serve` (accounts, the built editor) and Debian's Chromium driven by
// playwright-core. Nothing here skips: a missing binary, build or browser fails the tests.

import { existsSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

import { startServer as startTandem, type Server } from "../client/test/server.js";

export const WEB_DIST = resolve(new URL("../app/dist", import.meta.url).pathname);

export type { Server };

/** `tandem serve` with accounts and the built editor (see ../client/test/server.ts). */
export async function startServer(extra: string[] = []): Promise<Server> {
  if (!existsSync(join(WEB_DIST, "index.html"))) throw new Error(`no editor build in ${WEB_DIST}: run npm run build in web/`);
  return startTandem(["--web-dir", WEB_DIST, ...extra]);
}

export const CHROMIUM = process.env.TANDEM_CHROMIUM ?? "/usr/bin/chromium";

export async function launch(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: install Debian's chromium or set TANDEM_CHROMIUM`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
}

/** A browser context (one user) whose page fails the test on a console error or a CSP
 *  violation. */
export async function userPage(browser: Browser, errors: string[], viewport = { width: 1280, height: 800 }): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource: the server responded with a status of 401/.test(m.text())) {
      errors.push(`console: ${m.text()}`);
    }
  });
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  return { context, page };
}

export function screenshotDir(): string {
  const dir = process.env.TANDEM_SCREENSHOTS_DIR ?? join(tmpdir(), "tandem-screenshots");
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Polls `f` until it returns true. */
export async function until(f: () => Promise<boolean> | boolean, ms = 15_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
