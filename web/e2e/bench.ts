// The editor's benchmarks (not tests): page load to an editable document, and keystroke to
// the other person's screen between two browsers on this machine, p50 and p99.
//
//   TANDEM_BIN=target/release/tandem npx vite-node web/e2e/bench.ts -- [loads] [keystrokes] [interval_ms]
//
// Prints JSON. Latencies are taken inside the pages: a keystroke's `keydown` in one page to
// the change applied in the other page's Quill, and to the frame after it (both clocks are
// this machine's: performance.timeOrigin + now()). The change reaches the other page only
// once it is durable in the op log (an fdatasync per batch).

import type { Page } from "playwright-core";

import { launch, startServer, userPage } from "./harness.js";

const [loads = 50, keys = 1000, interval = 50] = process.argv.slice(2).filter((a) => a !== "--").map(Number);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

function summary(xs: number[]) {
  const r = (x: number) => Math.round(x * 100) / 100;
  return { n: xs.length, p50: r(pct(xs, 50)), p90: r(pct(xs, 90)), p99: r(pct(xs, 99)), max: r(Math.max(...xs)) };
}

async function signup(page: Page, base: string, name: string): Promise<void> {
  const r = await page.request.post(`${base}/api/auth/signup`, {
    data: { email: `${name}@example.com`, password: "benchmark password", name },
    headers: { origin: base },
  });
  if (!r.ok()) throw new Error(`signup: ${r.status()} ${await r.text()}`);
}

async function main(): Promise<void> {
  // TANDEM_SERVE_ARGS: more arguments for `tandem serve` (e.g. a --config).
  const server = await startServer((process.env.TANDEM_SERVE_ARGS ?? "").split(" ").filter(Boolean));
  const browser = await launch();
  const errors: string[] = [];
  try {
    const a = await userPage(browser, errors);
    const b = await userPage(browser, errors);
    await signup(a.page, server.url, "ada");
    await signup(b.page, server.url, "bob");
    const doc = await a.page.request.post(`${server.url}/api/documents`, { data: { title: "Bench" }, headers: { origin: server.url } });
    const { id } = (await doc.json()) as { id: string };
    const share = await a.page.request.post(`${server.url}/api/documents/${id}/share`, {
      data: { email: "bob@example.com", role: "editor" },
      headers: { origin: server.url },
    });
    if (!share.ok()) throw new Error(`share: ${share.status()}`);
    const url = `${server.url}/d/${id}`;

    // 1. Page load to an editable document: a cold load (empty cache) and warm reloads.
    const ready = async (page: Page) => {
      await page.waitForFunction(() => performance.getEntriesByName("tandem-ready").length > 0, null, { timeout: 30_000 });
      return page.evaluate(() => performance.getEntriesByName("tandem-ready")[0]!.startTime);
    };
    const cold: number[] = [];
    for (let i = 0; i < Math.min(loads, 10); i++) {
      const fresh = await userPage(browser, errors);
      await fresh.context.addCookies(await a.context.cookies());
      await fresh.page.goto(url);
      cold.push(await ready(fresh.page));
      await fresh.context.close();
    }
    const warm: number[] = [];
    await a.page.goto(url);
    await ready(a.page);
    for (let i = 0; i < loads; i++) {
      await a.page.reload();
      warm.push(await ready(a.page));
    }
    await b.page.goto(url);
    await ready(b.page);

    // 2. Keystroke to the other screen.
    await b.page.evaluate(() => {
      const w = window as unknown as { tandem: { quill: { on(e: string, f: (d: unknown, o: unknown, s: string) => void): void } }; recv: number[]; applied: number[] };
      w.recv = [];
      w.applied = [];
      w.tandem.quill.on("text-change", (_d, _o, source) => {
        if (source !== "api") return;
        w.applied.push(performance.timeOrigin + performance.now());
        requestAnimationFrame(() => w.recv.push(performance.timeOrigin + performance.now()));
      });
    });
    await a.page.evaluate(() => {
      const w = window as unknown as { sent: number[]; tandem: { quill: { setSelection(i: number, l: number, s: string): void; getLength(): number } } };
      w.sent = [];
      document.addEventListener("keydown", () => w.sent.push(performance.timeOrigin + performance.now()), { capture: true });
      w.tandem.quill.setSelection(w.tandem.quill.getLength() - 1, 0, "user");
    });
    const letters = "abcdefghijklmnopqrstuvwxyz ";
    const started = Date.now();
    for (let i = 0; i < keys; i++) {
      const next = started + i * interval;
      const wait = next - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      await a.page.keyboard.press(letters[i % letters.length]!);
    }
    await b.page.waitForFunction((n) => (window as unknown as { recv: number[] }).recv.length >= n, keys, { timeout: 60_000 });
    const sent = await a.page.evaluate(() => (window as unknown as { sent: number[] }).sent);
    const recv = await b.page.evaluate(() => (window as unknown as { recv: number[] }).recv);
    const applied = await b.page.evaluate(() => (window as unknown as { applied: number[] }).applied);
    const latency = sent.map((s, i) => recv[i]! - s);
    const toApply = sent.map((s, i) => applied[i]! - s);
    const same = await Promise.all([a.page, b.page].map((p) => p.evaluate(() => (window as unknown as { tandem: { quill: { getText(): string } } }).tandem.quill.getText())));
    console.log(
      JSON.stringify(
        {
          load_to_editable_ms: { cold: summary(cold), warm: summary(warm) },
          keystroke_to_remote_quill_ms: summary(toApply),
          keystroke_to_remote_frame_ms: { ...summary(latency), interval_ms: interval, changes_received: recv.length },
          converged: same[0] === same[1],
          errors,
        },
        null,
        2,
      ),
    );
  } finally {
    await browser.close();
    await server.stop();
  }
}

await main();
