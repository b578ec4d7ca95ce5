// A real `tandem serve` (accounts, the built editor) and Debian's Chromium driven by
// playwright-core. Nothing here skips: a missing binary, build or browser fails the tests.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

export const WEB_DIST = resolve(new URL("../app/dist", import.meta.url).pathname);

export function tandemBin(): string {
  const bin = process.env.TANDEM_BIN ?? resolve(new URL("../../target/debug/tandem", import.meta.url).pathname);
  if (!existsSync(bin)) throw new Error(`no tandem binary at ${bin}: build it (cargo build -p tandem) or set TANDEM_BIN`);
  return bin;
}

export interface Server {
  url: string;
  addr: string;
  log: () => string;
  stop(): Promise<void>;
}

export async function startServer(extra: string[] = []): Promise<Server> {
  if (!existsSync(join(WEB_DIST, "index.html"))) throw new Error(`no editor build in ${WEB_DIST}: run npm run build in web/`);
  const dir = mkdtempSync(join(tmpdir(), "tandem-e2e-"));
  const child: ChildProcess = spawn(
    tandemBin(),
    ["serve", "--listen", "127.0.0.1:0", "--cores", "2", "--data-dir", dir, "--web-dir", WEB_DIST, ...extra],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" } },
  );
  let log = "";
  const lines = createInterface({ input: child.stderr! });
  const addr = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`tandem did not start in 60 s:\n${log}`)), 60_000);
    lines.on("line", (line) => {
      log += line + "\n";
      const m = /listening on http:\/\/(\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        ok(m[1]!);
      }
    });
    child.on("exit", (code) => fail(new Error(`tandem exited (${code}):\n${log}`)));
  });
  return {
    url: `http://${addr}`,
    addr,
    log: () => log,
    stop: () =>
      new Promise<void>((ok) => {
        child.on("exit", () => {
          rmSync(dir, { recursive: true, force: true });
          ok();
        });
        child.kill("SIGTERM");
      }),
  };
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
