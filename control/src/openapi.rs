//! `/api/openapi.json`: an OpenAPI 3.1 description of every route. The route table here is
//! checked against the router by a test (every route it names is served, and every served
//! route is named), so the description cannot drift from the API.

use serde_json::{Value, json};

/// One route: method, path, summary, whether it needs a signed-in caller, the request body's
/// schema (if any), and the success status with its response schema.
pub struct Route {
    /// HTTP method, lowercase.
    pub method: &'static str,
    /// Path, with `{param}`s.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Needs `Authorization: Bearer` (or the access cookie).
    pub auth: bool,
    /// The request body's schema name.
    pub body: Option<&'static str>,
    /// The success status.
    pub status: u16,
    /// The response schema name (none: no body).
    pub response: Option<&'static str>,
}

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    auth: bool,
    body: Option<&'static str>,
    status: u16,
    response: Option<&'static str>,
) -> Route {
    Route { method, path, summary, auth, body, status, response }
}

/// Every API route.
pub const ROUTES: &[Route] = &[
    r("post", "/api/auth/signup", "Create an account; signs in", false, Some("Signup"), 201, Some("Tokens")),
    r("post", "/api/auth/login", "Sign in", false, Some("Login"), 200, Some("Tokens")),
    r(
        "post",
        "/api/auth/refresh",
        "Rotate the refresh token (body or cookie); a reused one revokes its family",
        false,
        Some("Refresh"),
        200,
        Some("Tokens"),
    ),
    r(
        "post",
        "/api/auth/logout",
        "Revoke the refresh token's family and clear the cookies",
        false,
        Some("Refresh"),
        204,
        None,
    ),
    r(
        "post",
        "/api/auth/password",
        "Change the password; signs out every other session",
        true,
        Some("ChangePassword"),
        200,
        Some("Tokens"),
    ),
    r("get", "/api/me", "The signed-in user", true, None, 200, Some("User")),
    r(
        "get",
        "/api/documents",
        "Documents the caller may read, most recently edited first (query: limit, cursor)",
        true,
        None,
        200,
        Some("DocumentPage"),
    ),
    r("post", "/api/documents", "Create a document", true, Some("NewDocument"), 201, Some("Document")),
    r("get", "/api/documents/{id}", "One document", true, None, 200, Some("Document")),
    r(
        "patch",
        "/api/documents/{id}",
        "Rename; change link sharing or whether editors may share",
        true,
        Some("UpdateDocument"),
        200,
        Some("Document"),
    ),
    r("delete", "/api/documents/{id}", "Delete (owner only): open sessions are closed", true, None, 204, None),
    r(
        "post",
        "/api/documents/{id}/share",
        "Grant a role to an address, or invite it",
        true,
        Some("Share"),
        200,
        Some("ShareResult"),
    ),
    r(
        "get",
        "/api/documents/{id}/permissions",
        "Who has which role, and pending invitations",
        true,
        None,
        200,
        Some("Permissions"),
    ),
    r(
        "put",
        "/api/documents/{id}/permissions/{user}",
        "Change a user's role (live on open sessions)",
        true,
        Some("RoleBody"),
        200,
        Some("RoleBody"),
    ),
    r(
        "delete",
        "/api/documents/{id}/permissions/{user}",
        "Revoke a user's role (their sessions lose the document at once)",
        true,
        None,
        204,
        None,
    ),
    r("delete", "/api/documents/{id}/invitations/{email}", "Withdraw an invitation", true, None, 204, None),
    r(
        "post",
        "/api/documents/{id}/transfer",
        "Make another collaborator the owner",
        true,
        Some("Transfer"),
        200,
        Some("Document"),
    ),
    r(
        "get",
        "/api/documents/{id}/activity",
        "Daily activity (edits, characters, time active, opens, shares; per user), ?days=1..366; owner and editors",
        true,
        None,
        200,
        None,
    ),
    r(
        "get",
        "/api/documents/{id}/authors",
        "The users behind client ids of the document's history, ?clients=ID,ID (at most 100); readers",
        true,
        None,
        200,
        None,
    ),
    r(
        "get",
        "/api/documents/{id}/comments",
        "The comment threads, anchored to the document as it is now (rev); readers",
        true,
        None,
        200,
        Some("Threads"),
    ),
    r(
        "post",
        "/api/documents/{id}/comments",
        "Start a thread on the text start..end of the document as it is now; commenters and up; @mentions are emailed",
        true,
        Some("NewThread"),
        201,
        Some("ThreadResult"),
    ),
    r(
        "delete",
        "/api/documents/{id}/comments/{thread}",
        "Delete a thread (its author, or the owner)",
        true,
        None,
        204,
        None,
    ),
    r(
        "post",
        "/api/documents/{id}/comments/{thread}/replies",
        "Reply to a thread; commenters and up",
        true,
        Some("Message"),
        201,
        Some("ThreadResult"),
    ),
    r(
        "patch",
        "/api/documents/{id}/comments/{thread}/messages/{message}",
        "Edit your message",
        true,
        Some("Message"),
        200,
        Some("ThreadResult"),
    ),
    r(
        "delete",
        "/api/documents/{id}/comments/{thread}/messages/{message}",
        "Delete a message (its author, or the owner); the first one deletes the thread",
        true,
        None,
        204,
        None,
    ),
    r(
        "post",
        "/api/documents/{id}/comments/{thread}/resolve",
        "Resolve a thread; commenters and up",
        true,
        None,
        200,
        Some("ThreadResult"),
    ),
    r(
        "post",
        "/api/documents/{id}/comments/{thread}/reopen",
        "Reopen a resolved thread; commenters and up",
        true,
        None,
        200,
        Some("ThreadResult"),
    ),
    r("get", "/api/documents/{id}/versions", "The named versions; readers", true, None, 200, Some("Versions")),
    r(
        "put",
        "/api/documents/{id}/versions/{rev}",
        "Name a revision (or rename it); editors and owners",
        true,
        Some("VersionName"),
        200,
        Some("VersionResult"),
    ),
    r(
        "delete",
        "/api/documents/{id}/versions/{rev}",
        "Take a revision's name away; editors and owners",
        true,
        None,
        204,
        None,
    ),
    r("get", "/api/features", "What this server offers: search, exports, uploads", false, None, 200, None),
    r(
        "get",
        "/api/search",
        "Full-text search of the documents you may read, ?q=&limit=1..50&cursor=; ranked, with snippets",
        true,
        None,
        200,
        None,
    ),
    r(
        "post",
        "/api/documents/{id}/export",
        "Export the document as PDF or DOCX (readers); rendered in the background: poll the status URL",
        true,
        Some("ExportRequest"),
        202,
        Some("ExportAccepted"),
    ),
    r(
        "get",
        "/api/exports/{id}",
        "An export of yours: its status, and a link valid for an hour once done",
        true,
        None,
        200,
        Some("Export"),
    ),
    r(
        "get",
        "/api/exports/{id}/file",
        "The exported file, behind a signed link that expires (?expires=&sig=, from the export's url)",
        false,
        None,
        200,
        None,
    ),
    r(
        "post",
        "/api/documents/{id}/uploads",
        "Upload an image (editors): the body is the PNG, JPEG, GIF or WebP file (type checked by content); embed the answer's url as {\"image\": url}",
        true,
        None,
        201,
        Some("Upload"),
    ),
    r("get", "/api/uploads/{id}", "An uploaded image (readers of its document)", true, None, 200, None),
    r("get", "/api/openapi.json", "This document", false, None, 200, None),
];

fn schemas() -> Value {
    let s = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
    let role = json!({"type": "string", "enum": ["viewer", "commenter", "editor", "owner"]});
    json!({
        "Error": s(json!({"error": s(json!({"code": {"type": "string"}, "message": {"type": "string"}}), &["code", "message"])}), &["error"]),
        "Signup": s(json!({"email": {"type": "string"}, "password": {"type": "string", "minLength": 8}, "name": {"type": "string"}}), &["email", "password", "name"]),
        "Login": s(json!({"email": {"type": "string"}, "password": {"type": "string"}}), &["email", "password"]),
        "Refresh": s(json!({"refresh_token": {"type": "string"}}), &[]),
        "ChangePassword": s(json!({"current_password": {"type": "string"}, "new_password": {"type": "string"}}), &["current_password", "new_password"]),
        "User": s(json!({"id": {"type": "string"}, "email": {"type": "string"}, "name": {"type": "string"}, "created_at": {"type": "integer", "description": "ms since the Unix epoch"}}), &["id", "email", "name", "created_at"]),
        "Tokens": s(json!({
            "user": {"$ref": "#/components/schemas/User"},
            "access_token": {"type": "string"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer"},
            "expires_at": {"type": "integer"},
            "refresh_token": {"type": "string", "description": "only for requests without Origin (native clients); browsers get it in an HttpOnly cookie"}
        }), &["user", "access_token", "token_type", "expires_in", "expires_at"]),
        "NewDocument": s(json!({"title": {"type": "string"}}), &[]),
        "UpdateDocument": s(json!({"title": {"type": "string"}, "link_sharing": {"enum": ["off", "viewer", "commenter", "editor"]}, "editors_can_share": {"type": "boolean"}}), &[]),
        "Document": s(json!({
            "id": {"type": "string"}, "title": {"type": "string"}, "owner": {"type": "string"}, "role": role,
            "created_at": {"type": "integer"}, "updated_at": {"type": "integer"},
            "link_sharing": {"type": ["string", "null"]}, "editors_can_share": {"type": "boolean"}
        }), &["id", "title", "owner", "role", "created_at", "updated_at", "link_sharing", "editors_can_share"]),
        "DocumentPage": s(json!({"documents": {"type": "array", "items": {"$ref": "#/components/schemas/Document"}}, "next_cursor": {"type": ["string", "null"]}}), &["documents", "next_cursor"]),
        "Share": s(json!({"email": {"type": "string"}, "role": role}), &["email", "role"]),
        "ShareResult": s(json!({"status": {"enum": ["granted", "invited"]}, "user": {"$ref": "#/components/schemas/User"}, "email": {"type": "string"}, "role": role}), &["status", "role"]),
        "Permissions": s(json!({
            "permissions": {"type": "array", "items": s(json!({"user": {"$ref": "#/components/schemas/User"}, "role": role}), &["user", "role"])},
            "invitations": {"type": "array", "items": s(json!({"email": {"type": "string"}, "role": role, "created_at": {"type": "integer"}}), &["email", "role", "created_at"])}
        }), &["permissions", "invitations"]),
        "RoleBody": s(json!({"role": role, "user": {"type": "string"}}), &["role"]),
        "Transfer": s(json!({"user": {"type": "string"}}), &["user"]),
        "ExportRequest": s(json!({"format": {"enum": ["pdf", "docx"]}, "rev": {"type": "integer", "minimum": 0, "description": "default: the latest revision when asked"}}), &["format"]),
        "ExportAccepted": s(json!({"export_id": {"type": "string"}, "status": {"const": "queued"}, "status_url": {"type": "string"}}), &["export_id", "status", "status_url"]),
        "Export": s(json!({
            "export_id": {"type": "string"}, "doc": {"type": "string"}, "format": {"enum": ["pdf", "docx"]},
            "rev": {"type": ["integer", "null"]}, "status": {"enum": ["queued", "rendering", "done", "failed"]},
            "created_at_ms": {"type": "integer"}, "finished_at_ms": {"type": ["integer", "null"]},
            "error": {"type": "string"}, "url": {"type": "string"}, "url_expires_at_ms": {"type": "integer"}, "bytes": {"type": "integer"}
        }), &["export_id", "doc", "format", "rev", "status", "created_at_ms", "finished_at_ms"]),
        "NewThread": s(json!({"start": {"type": "integer", "minimum": 0}, "end": {"type": "integer"}, "text": {"type": "string", "maxLength": 4000}, "mentions": {"type": "array", "items": {"type": "string"}, "maxItems": 20, "description": "user ids"}}), &["start", "end", "text"]),
        "Message": s(json!({"text": {"type": "string", "maxLength": 4000}, "mentions": {"type": "array", "items": {"type": "string"}, "maxItems": 20}}), &["text"]),
        "Thread": s(json!({
            "id": {"type": "integer", "description": "the revision that started it"}, "start": {"type": "integer"}, "end": {"type": "integer"},
            "orphaned": {"type": "boolean"}, "resolved_by": {"type": "string"},
            "messages": {"type": "array", "items": s(json!({
                "id": {"type": "integer"}, "user": {"type": "string"}, "name": {"type": "string"}, "text": {"type": "string"},
                "mentions": {"type": "array", "items": {"type": "string"}}, "created_ms": {"type": "integer"}, "edited_ms": {"type": "integer"}
            }), &["id", "user", "name", "text", "created_ms"])}
        }), &["id", "start", "end", "messages"]),
        "Threads": s(json!({"rev": {"type": "integer"}, "threads": {"type": "array", "items": {"$ref": "#/components/schemas/Thread"}}}), &["rev", "threads"]),
        "ThreadResult": s(json!({"rev": {"type": "integer", "description": "the revision the change took"}, "thread": {"oneOf": [{"$ref": "#/components/schemas/Thread"}, {"type": "null"}]}}), &["rev", "thread"]),
        "VersionName": s(json!({"name": {"type": "string", "maxLength": 200}}), &["name"]),
        "Version": s(json!({"rev": {"type": "integer"}, "name": {"type": "string"}, "user": {"type": "string"}, "user_name": {"type": "string"}, "time_ms": {"type": "integer"}}), &["rev", "name", "user", "user_name", "time_ms"]),
        "Versions": s(json!({"rev": {"type": "integer"}, "versions": {"type": "array", "items": {"$ref": "#/components/schemas/Version"}}}), &["rev", "versions"]),
        "VersionResult": s(json!({"rev": {"type": "integer"}, "version": {"$ref": "#/components/schemas/Version"}}), &["rev", "version"]),
        "Upload": s(json!({"id": {"type": "string"}, "url": {"type": "string"}, "content_type": {"enum": ["image/png", "image/jpeg", "image/gif", "image/webp"]}, "bytes": {"type": "integer"}}), &["id", "url", "content_type", "bytes"]),
    })
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let mut op = json!({
            "summary": route.summary,
            "responses": {
                route.status.to_string(): match route.response {
                    Some(schema) => json!({"description": "success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}),
                    None => json!({"description": "success"}),
                },
                "default": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if route.auth {
            op["security"] = json!([{"bearer": []}, {"cookie": []}]);
        }
        if let Some(body) = route.body {
            op["requestBody"] = json!({"required": route.path != "/api/auth/refresh" && route.path != "/api/auth/logout",
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
        }
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        let entry = paths.entry(route.path.to_owned()).or_insert_with(|| json!({}));
        entry[route.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Tandem", "version": env!("CARGO_PKG_VERSION"), "description": "Accounts, documents, roles and sharing. Errors are {\"error\": {\"code\", \"message\"}}; see docs/api.md."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "tandem_access"}
            }
        }
    })
}
