// The editor over HTTPS and WSS when `tandem serve` terminates TLS itself (--tls-cert,
// --tls-key): the page, the REST API (handed from the cores to the control plane mid-session)
// and the WebSocket all on one TLS port, in Debian's Chromium. The certificate is made here
// with openssl and trusted by the browser context only.

import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import type { Browser } from "playwright-core";
import { afterAll, beforeAll, expect, it } from "vitest";

import { launch, screenshotDir, startServer, until, type Server } from "./harness.js";

let server: Server;
let browser: Browser;
const errors: string[] = [];

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "tandem-tls-"));
  const [cert, key] = [join(dir, "cert.pem"), join(dir, "key.pem")];
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "-keyout", key, "-out", cert,
  ], { stdio: "ignore" });
  server = await startServer(["--tls-cert", cert, "--tls-key", key]);
  browser = await launch();
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

it("signs up, writes and reloads over https:// and wss://", async () => {
  expect(server.url.startsWith("https://")).toBe(true);
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of 401/.test(m.text())) errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${server.url}/`);
  await page.waitForURL(/\/login/);
  await page.getByRole("link", { name: "Create an account" }).click();
  await page.fill("#name", "Tess");
  await page.fill("#email", "tess@example.com");
  await page.fill("#password", "correct horse battery");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("heading", { name: "Documents" }).waitFor();
  // The session cookie is Secure: the server knows it is served over TLS.
  const cookies = await context.cookies();
  expect(cookies.find((c) => c.name === "tandem_access")?.secure).toBe(true);
  await page.getByRole("button", { name: "New document" }).click();
  await page.waitForURL(/\/d\//);
  await page.locator(".ql-editor").waitFor();
  await until(() => page.evaluate(() => Boolean((window as unknown as { tandem?: { doc: { isOpen: boolean } } }).tandem?.doc.isOpen)), 15_000, "the document open over wss://");
  await page.locator(".ql-editor").click();
  await page.keyboard.type("Typed over TLS.", { delay: 5 });
  await until(async () => (await page.locator("#status").textContent()) === "All changes saved", 15_000, "saved");
  await page.screenshot({ path: join(screenshotDir(), "tls-editor.png") });
  await page.reload();
  await page.locator(".ql-editor", { hasText: "Typed over TLS." }).waitFor({ timeout: 15_000 });
  expect(errors).toEqual([]);
  await context.close();
});
