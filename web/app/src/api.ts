// The REST API (docs/api.md), signed in by the HttpOnly cookies the server sets: scripts
// never see the refresh token. A 401 refreshes once and retries.

export interface User {
  id: string;
  email: string;
  name: string;
  created_at: number;
}

export type Role = "viewer" | "commenter" | "editor" | "owner";

export interface Doc {
  id: string;
  title: string;
  owner: string;
  role: Role;
  created_at: number;
  updated_at: number;
  link_sharing: Role | null;
  editors_can_share: boolean;
}

export interface Features {
  search: boolean;
  exports: boolean;
  uploads: boolean;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let refreshing: Promise<string | null> | null = null;

/** A fresh access token (the cookies are renewed too); `null` when signed out. */
export function refreshToken(): Promise<string | null> {
  refreshing ??= fetch("/api/auth/refresh", { method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" }, body: "{}" })
    .then(async (r) => (r.ok ? ((await r.json()) as { access_token: string }).access_token : null))
    .catch(() => null)
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

export async function api<T>(method: string, path: string, body?: unknown, retry = true): Promise<T> {
  const init: RequestInit = { method, credentials: "same-origin", headers: {} };
  if (body instanceof Blob) {
    init.body = body;
    (init.headers as Record<string, string>)["content-type"] = body.type || "application/octet-stream";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)["content-type"] = "application/json";
  }
  const r = await fetch(path, init);
  if (r.status === 401 && retry && !path.startsWith("/api/auth/")) {
    if (await refreshToken()) return api<T>(method, path, body, false);
  }
  if (r.status === 204) return undefined as T;
  const text = await r.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON
  }
  if (!r.ok) {
    const err = (json as { error?: { code: string; message: string } } | null)?.error;
    throw new ApiError(r.status, err?.code ?? "http_" + r.status, err?.message ?? (text || r.statusText));
  }
  return json as T;
}
