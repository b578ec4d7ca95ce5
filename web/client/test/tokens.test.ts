// Accounts: a client signs in with a REST token and keeps its connection past the token's
// expiry by answering `token_expiring` with `refresh` over the open connection.

import Delta from "quill-delta";
import { afterAll, beforeAll, expect, it } from "vitest";

import type { ConnectionState } from "../src/index.js";
import { client, configFile, startServer, until, type Server } from "./server.js";

let server: Server;

beforeAll(async () => {
  // Tokens valid 5 s; sessions warned 3 s before.
  const cfg = configFile("[server]\ntoken_warning_s = 3\n\n[control]\naccess_token_ttl_s = 5\n");
  server = await startServer(["--config", cfg]);
});

afterAll(async () => {
  await server?.stop();
});

async function rest<T>(path: string, body: unknown, token?: string): Promise<T> {
  const r = await fetch(`http://${server.addr}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return (await r.json()) as T;
}

it("refreshes its token over the open connection and stays online past the expiry", async () => {
  type Tokens = { access_token: string; refresh_token: string };
  let tokens = await rest<Tokens>("/api/auth/signup", { email: "ada@example.com", password: "long enough pw", name: "Ada" });
  const doc = await rest<{ id: string }>("/api/documents", { title: "Tokens" }, tokens.access_token);
  const reasons: string[] = [];
  const states: ConnectionState[] = [];
  const c = client(server, {
    token: async (reason) => {
      reasons.push(reason);
      if (reason !== "connect") tokens = await rest<Tokens>("/api/auth/refresh", { refresh_token: tokens.refresh_token });
      return tokens.access_token;
    },
  });
  c.onState((s) => states.push(s));
  let view = new Delta();
  const h = c.open(doc.id, { reset: (d) => (view = d), change: (d) => (view = view.compose(d)) });
  await until(() => h.isOpen, 10_000, "open");
  h.edit(new Delta().insert("before\n"));
  await until(() => h.sync.saved(), 5_000, "saved");
  // Past the first token's expiry (5 s): the server warned at 2 s, the client refreshed.
  await new Promise((r) => setTimeout(r, 7_000));
  h.edit(new Delta().retain(6).insert(" after"));
  await until(() => h.sync.saved(), 5_000, "saved after the expiry");
  expect(reasons[0]).toBe("connect");
  expect(reasons.filter((r) => r === "refresh").length).toBeGreaterThanOrEqual(1);
  expect(states).toEqual(["online"]); // never dropped
  expect(c.user).not.toBe("");
  c.close();
});
