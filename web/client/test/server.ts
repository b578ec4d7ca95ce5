// Starts a real `tandem serve` for the tests (the binary cargo built: TANDEM_BIN, or
// target/debug/tandem) and stops it afterwards. A missing binary fails the tests: it is
// never a skip.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";

import WebSocket from "ws";

import { TandemClient, type ClientOptions, type SocketLike } from "../src/index.js";

export interface Server {
  /** host:port */
  addr: string;
  /** http://host:port (https:// when started with --tls-cert) */
  url: string;
  /** What it logged so far. */
  log(): string;
  stop(): Promise<void>;
}

export function tandemBin(): string {
  const bin = process.env.TANDEM_BIN ?? resolve(new URL("../../../target/debug/tandem", import.meta.url).pathname);
  if (!existsSync(bin)) {
    throw new Error(`no tandem binary at ${bin}: build it (cargo build -p tandem) or set TANDEM_BIN`);
  }
  return bin;
}

/** `tandem serve` on a free port with a fresh data directory; `args` are added (the
 *  browser tests start theirs here too). */
export async function startServer(args: string[] = ["--auth", "dev"]): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "tandem-js-"));
  const child: ChildProcess = spawn(
    tandemBin(),
    ["serve", "--listen", "127.0.0.1:0", "--cores", "2", "--data-dir", dir, ...args],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn,tandem=info" } },
  );
  const lines = createInterface({ input: child.stderr! });
  let log = "";
  let scheme = "http";
  const addr = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`tandem did not start in 30 s:\n${log}`)), 30_000);
    lines.on("line", (line) => {
      log += line + "\n";
      const m = /listening on (https?):\/\/(\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        scheme = m[1]!;
        ok(m[2]!);
      }
    });
    child.on("exit", (code) => fail(new Error(`tandem exited (${code}):\n${log}`)));
  });
  return {
    addr,
    url: `${scheme}://${addr}`,
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

/** A `tandem serve` configuration file holding `toml`, for `--config`. */
export function configFile(toml: string): string {
  const path = join(mkdtempSync(join(tmpdir(), "tandem-js-cfg-")), "tandem.toml");
  writeFileSync(path, toml);
  return path;
}

export const nodeSocket = (url: string, protocol: string): SocketLike => new WebSocket(url, protocol) as unknown as SocketLike;

let nextId = 1;

/** A client of the test server, with its own id. */
export function client(server: Server, opts: Partial<ClientOptions> = {}): TandemClient {
  return new TandemClient({
    url: `ws://${server.addr}/ws`,
    name: `user${nextId}`,
    clientId: (0x1000 + nextId++).toString(16) + Math.floor(Math.random() * 0xffff).toString(16),
    storage: null,
    socket: nodeSocket,
    backoffMs: { initial: 20, max: 200 },
    ...opts,
  });
}

/** Waits until `cond` holds (polling), or fails after `ms`. */
export async function until(cond: () => boolean, ms = 10_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
