//! The REST API (axum): accounts and tokens, documents, roles and sharing.
//!
//! Every route says who is asking (a bearer token, or the access cookie with an allowed
//! `Origin`), checks what that user may do ([`crate::policy`]), and answers JSON. Errors are
//! `{"error": {"code": "...", "message": "..."}}` with the codes in `docs/api.md`; bad input
//! is a 4xx, never a 500.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tandem_net::http::{ACCESS_COOKIE, cookie, same_origin};
use tandem_net::protocol::Role;

mod comments;
mod files;
mod forward;
mod insight;

pub use files::attachment;

use crate::error::Error;
use crate::policy;
use crate::store::{Cursor, Document, DocumentView, RefreshOutcome, ShareOutcome, User};
use crate::tokens::{hash_refresh_token, new_refresh_token};
use crate::{App, now_ms};

/// The cookie that carries a browser's refresh token (sent only to `/api/auth`).
pub const REFRESH_COOKIE: &str = "tandem_refresh";
/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Documents per page when the request names no `limit`...
pub const DEFAULT_PAGE: u32 = 50;
/// ...and at most.
pub const MAX_PAGE: u32 = 100;
/// Longest title, in chars.
pub const MAX_TITLE_CHARS: usize = 256;
/// Longest display name, in chars.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest email address, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// The client's address, put in each request's extensions by the connection that carried it.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

/// An API error: a status, a stable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such document, or no access to it")
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    fn rate_limited(wait: Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; slow down");
        e.retry_after = Some(wait);
        e
    }

    fn busy() -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the server is busy; try again shortly");
        e.retry_after = Some(Duration::from_secs(1));
        e
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::EmailTaken => Self::new(StatusCode::CONFLICT, "email_taken", "an account with this email exists"),
            Error::NotFound => Self::not_found(),
            Error::Invalid(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            e => {
                tracing::error!("control plane: {e}");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the metadata store failed; try again")
            }
        }
    }
}

impl From<crate::password::Busy> for ApiError {
    fn from(_: crate::password::Busy) -> Self {
        Self::busy()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON request body, with the API's errors for a bad one.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type =
            req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
                v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("bodies are at most {MAX_BODY_BYTES} bytes"),
            )
        })?;
        parse_body(&bytes).map(Body)
    }
}

/// Parses a JSON body (the API's request types refuse unknown fields, so nesting depth is
/// bounded by the types, and serde_json's own recursion limit guards the rest).
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}

/// The signed-in user making a request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Their id.
    pub user: String,
    /// Their display name.
    pub name: String,
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        let cookies = parts.headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
        // With an Authorization header, it alone counts (never the cookie behind it: the
        // cross-site check lets cookie-less requests through on that header).
        let has_authorization = parts.headers.contains_key(header::AUTHORIZATION);
        let token = if has_authorization { bearer } else { cookies.and_then(|c| cookie(c, ACCESS_COOKIE)) };
        let Some(token) = token else {
            return Err(ApiError::unauthorized("unauthorized", "sign in: send Authorization: Bearer <access token>"));
        };
        let claims = app.keys.verify_claims(token).map_err(|why| ApiError::unauthorized("invalid_token", why))?;
        if is_write(&parts.method) {
            app.limits.write(&claims.sub).map_err(ApiError::rate_limited)?;
        }
        Ok(Self { user: claims.sub, name: claims.name })
    }
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn client_ip(req: &Request) -> IpAddr {
    req.extensions().get::<ClientIp>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0)
}

/// Per-IP limits, the cross-site check, and response headers every answer gets.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Err(wait) = app.limits.request(client_ip(&req)) {
        return ApiError::rate_limited(wait).into_response();
    }
    if is_write(req.method())
        && let Err(e) = check_origin(&app, req.headers())
    {
        return e.into_response();
    }
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// A state-changing request from a browser must come from this server's page (or an
/// allowed origin): its `Origin` says so. Without `Origin` (native clients, curl), a request
/// may not lean on the cookies: it must carry its own bearer token, or none.
fn check_origin(app: &App, headers: &HeaderMap) -> ApiResult<()> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    match headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("")) {
        Some(origin) => {
            if same_origin(origin, host) || app.config.allowed_origins.iter().any(|o| o == origin) {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "bad_origin",
                    format!("requests from {origin:?} are not allowed"),
                ))
            }
        }
        None => {
            let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let uses_cookie = cookie(cookies, ACCESS_COOKIE).is_some() || cookie(cookies, REFRESH_COOKIE).is_some();
            if uses_cookie && !headers.contains_key(header::AUTHORIZATION) {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "bad_origin",
                    "a request signed in by cookie must send Origin",
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// The API's routes.
pub fn router(app: Arc<App>) -> Router {
    // Comments and versions are changed on the document's node: forwarded there in a cluster.
    let notes = Router::new()
        .route("/api/documents/{id}/comments", get(comments::list).post(comments::create))
        .route("/api/documents/{id}/comments/{thread}", axum::routing::delete(comments::delete_thread))
        .route("/api/documents/{id}/comments/{thread}/replies", post(comments::reply))
        .route(
            "/api/documents/{id}/comments/{thread}/messages/{message}",
            axum::routing::patch(comments::edit).delete(comments::delete_message),
        )
        .route("/api/documents/{id}/comments/{thread}/resolve", post(comments::resolve))
        .route("/api/documents/{id}/comments/{thread}/reopen", post(comments::reopen))
        .route("/api/documents/{id}/versions", get(comments::versions))
        .route("/api/documents/{id}/versions/{rev}", put(comments::name_version).delete(comments::unname_version))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), forward::to_owner));
    let api = Router::new()
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/password", post(change_password))
        .route("/api/me", get(me))
        .route("/api/documents", get(list_documents).post(create_document))
        .route("/api/documents/{id}", get(get_document).patch(update_document).delete(delete_document))
        .route("/api/documents/{id}/share", post(share))
        .route("/api/documents/{id}/permissions", get(permissions))
        .route("/api/documents/{id}/permissions/{user}", put(set_role).delete(revoke))
        .route("/api/documents/{id}/invitations/{email}", axum::routing::delete(withdraw_invitation))
        .route("/api/documents/{id}/transfer", post(transfer))
        .route("/api/documents/{id}/activity", get(insight::activity))
        .route("/api/documents/{id}/authors", get(insight::authors))
        .route("/api/search", get(insight::search))
        .route("/api/documents/{id}/export", post(files::request_export))
        .route("/api/exports/{id}", get(files::export_status))
        .route("/api/exports/{id}/file", get(files::export_file))
        .route(
            "/api/documents/{id}/uploads",
            // The body limit is the upload's own (`max_upload_bytes`), checked as it is read.
            post(files::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/api/uploads/{id}", get(files::get_upload))
        .route("/api/openapi.json", get(openapi))
        .route("/api/features", get(features))
        .merge(notes)
        // A span per request, named by its route (after routing, so the route is known).
        .route_layer(middleware::from_fn(crate::trace::request))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guard));
    Router::new()
        .merge(api)
        .route("/", get(index))
        .route("/login", get(page))
        .route("/signup", get(page))
        .route("/d/{id}", get(page))
        .route("/assets/{*path}", get(asset))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn not_found(method: Method) -> ApiError {
    if method == Method::GET || method == Method::HEAD {
        ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such API route; see /api/openapi.json")
    } else {
        ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such API route or method; see /api/openapi.json")
    }
}

/// The editor's page, or (not built) what this server is.
async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match app.web() {
        Some(web) => web.page(&headers),
        None => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Tandem is running.\nREST API: /api (described at /api/openapi.json). WebSocket: /ws.\n\
             The browser editor is not built: run scripts/serve.sh, or `npm ci && npm run build` in web/ \
             and restart (see README.md).\n",
        )
            .into_response(),
    }
}

/// An app route (`/login`, `/d/{id}`): the page, which routes in the browser.
async fn page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match app.web() {
        Some(web) => web.page(&headers),
        None => index(State(app), headers).await,
    }
}

/// A file of the editor's build.
async fn asset(State(app): State<Arc<App>>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    match app.web() {
        Some(web) => web.serve(&format!("assets/{path}"), &headers),
        None => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such file\n")
            .into_response(),
    }
}

/// Which optional parts this server runs, for clients to show only what works.
async fn features(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "search": app.search().is_some(),
        "exports": app.files().is_some(),
        "uploads": app.files().is_some(),
    }))
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let body = app.metrics.as_ref().map(|m| m()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}

// ---- validation ----

/// Normalizes an email address: trimmed and lowercased; refuses what cannot be one.
pub fn normalize_email(email: &str) -> ApiResult<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL_BYTES
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !domain.starts_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid { Ok(email) } else { Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_email", "not an email address")) }
}

fn check_password(password: &str) -> ApiResult<()> {
    use crate::password::{MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS};
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "weak_password",
            format!("passwords are {MIN_PASSWORD_CHARS} chars to {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn check_text(what: &str, s: &str, max: usize, allow_empty: bool) -> ApiResult<String> {
    let s = s.trim();
    if (!allow_empty && s.is_empty()) || s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{what} must be 1 to {max} chars without control characters")));
    }
    Ok(s.to_owned())
}

// ---- tokens and cookies ----

#[derive(Serialize)]
struct UserJson<'a> {
    id: &'a str,
    email: &'a str,
    name: &'a str,
    created_at: i64,
}

fn user_json(u: &User) -> UserJson<'_> {
    UserJson { id: &u.id, email: &u.email, name: &u.name, created_at: u.created_ms }
}

fn cookie_header(app: &App, headers: &HeaderMap, name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
    let behind_tls = headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let secure = if app.config.secure_cookies || behind_tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"))
        .expect("tokens are header-safe")
}

/// Issues an access token and a refresh token (of `family`, or a new one) to a user, as
/// cookies and JSON. A browser (a request with `Origin`) gets the refresh token only in its
/// HttpOnly cookie, out of reach of scripts.
async fn issue(app: &App, headers: &HeaderMap, status: StatusCode, user: &User) -> ApiResult<Response> {
    let (refresh, hash) = new_refresh_token();
    app.store.add_refresh_token(&hash, &crate::random_id(), &user.id, refresh_expiry(app)).await?;
    Ok(respond_tokens(app, headers, status, user, &refresh))
}

/// When a refresh token issued now expires, ms since the Unix epoch.
fn refresh_expiry(app: &App) -> i64 {
    now_ms() + i64::try_from(app.config.refresh_ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The answer carrying a fresh access token and the (already stored) refresh token.
fn respond_tokens(app: &App, headers: &HeaderMap, status: StatusCode, user: &User, refresh: &str) -> Response {
    let (access, expires_at) = app.keys.sign(&user.id, &user.name);
    let refresh_ttl = app.config.refresh_ttl;
    let browser = headers.contains_key(header::ORIGIN);
    let mut body = json!({
        "user": user_json(user),
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": app.keys.access_ttl().as_secs(),
        "expires_at": expires_at,
    });
    if !browser {
        body["refresh_token"] = json!(refresh);
    }
    let mut response = (status, Json(body)).into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        cookie_header(app, headers, ACCESS_COOKIE, &access, "/", app.keys.access_ttl().as_secs()),
    );
    h.append(
        header::SET_COOKIE,
        cookie_header(app, headers, REFRESH_COOKIE, refresh, "/api/auth", refresh_ttl.as_secs()),
    );
    response
}

fn clear_cookies(app: &App, headers: &HeaderMap, response: &mut Response) {
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, cookie_header(app, headers, ACCESS_COOKIE, "", "/", 0));
    h.append(header::SET_COOKIE, cookie_header(app, headers, REFRESH_COOKIE, "", "/api/auth", 0));
}

// ---- accounts ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Signup {
    email: String,
    password: String,
    name: String,
}

async fn signup(State(app): State<Arc<App>>, headers: HeaderMap, req: Request) -> ApiResult<Response> {
    app.limits.auth(client_ip(&req)).map_err(ApiError::rate_limited)?;
    let Body(body) = Body::<Signup>::from_request(req, &()).await?;
    let email = normalize_email(&body.email)?;
    let name = check_text("name", &body.name, MAX_NAME_CHARS, false)?;
    check_password(&body.password)?;
    let hash = app.passwords.hash(body.password).await?;
    let signed_up = app.store.create_user(&email, &name, &hash).await?;
    for doc in &signed_up.invited_to {
        app.bridge.access_changed(doc).await;
    }
    issue(&app, &headers, StatusCode::CREATED, &signed_up.user).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

async fn login(State(app): State<Arc<App>>, headers: HeaderMap, req: Request) -> ApiResult<Response> {
    app.limits.auth(client_ip(&req)).map_err(ApiError::rate_limited)?;
    let Body(body) = Body::<Login>::from_request(req, &()).await?;
    let wrong = || ApiError::unauthorized("invalid_credentials", "wrong email or password");
    // An address that cannot be one gets the same answer as a wrong password.
    let email = normalize_email(&body.email).unwrap_or_default();
    app.limits.login(&email).map_err(ApiError::rate_limited)?;
    if body.password.len() > crate::password::MAX_PASSWORD_BYTES {
        return Err(wrong());
    }
    let found = if email.is_empty() { None } else { app.store.user_by_email(&email).await? };
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), Some(hash)),
        None => (None, None),
    };
    // Unknown addresses are checked against a dummy hash: same answer, same time.
    let ok = app.passwords.verify(body.password, hash).await?;
    match user.filter(|_| ok) {
        Some(user) => issue(&app, &headers, StatusCode::OK, &user).await,
        None => Err(wrong()),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: Option<String>,
}

/// The refresh token from the body (native clients) or the cookie (browsers).
async fn presented_refresh(headers: &HeaderMap, req: Request) -> ApiResult<Option<String>> {
    let has_body = req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let from_body = if has_body { Body::<RefreshBody>::from_request(req, &()).await?.0.refresh_token } else { None };
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()).unwrap_or("");
    Ok(from_body.or_else(|| cookie(cookies, REFRESH_COOKIE).map(str::to_owned)).filter(|t| !t.is_empty()))
}

async fn refresh(State(app): State<Arc<App>>, headers: HeaderMap, req: Request) -> ApiResult<Response> {
    app.limits.auth(client_ip(&req)).map_err(ApiError::rate_limited)?;
    let Some(token) = presented_refresh(&headers, req).await? else {
        return Err(ApiError::unauthorized("invalid_refresh", "send the refresh token (body or cookie)"));
    };
    // The next token of the family is stored in the same transaction that uses this one, so
    // a reuse that revokes the family cannot miss it.
    let (next, next_hash) = new_refresh_token();
    let outcome = app.store.use_refresh_token(&hash_refresh_token(&token), &next_hash, refresh_expiry(&app)).await?;
    match outcome {
        RefreshOutcome::Rotated { user, .. } => Ok(respond_tokens(&app, &headers, StatusCode::OK, &user, &next)),
        RefreshOutcome::Reused => {
            tracing::warn!("a used refresh token was presented again: its family is revoked");
            let mut response = ApiError::unauthorized(
                "refresh_reused",
                "this refresh token was already used: every session it led to is signed out",
            )
            .into_response();
            clear_cookies(&app, &headers, &mut response);
            Ok(response)
        }
        RefreshOutcome::Invalid => {
            Err(ApiError::unauthorized("invalid_refresh", "the refresh token is unknown, expired or revoked"))
        }
    }
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap, req: Request) -> ApiResult<Response> {
    if let Some(token) = presented_refresh(&headers, req).await? {
        app.store.revoke_refresh_family(&hash_refresh_token(&token)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    clear_cookies(&app, &headers, &mut response);
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(app): State<Arc<App>>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<ChangePassword>,
) -> ApiResult<Response> {
    check_password(&body.new_password)?;
    let Some((user, hash)) = app.store.user_by_id(&caller.user).await? else {
        return Err(ApiError::unauthorized("unauthorized", "the account is gone"));
    };
    if body.current_password.len() > crate::password::MAX_PASSWORD_BYTES
        || !app.passwords.verify(body.current_password, Some(hash)).await?
    {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "invalid_credentials", "the current password is wrong"));
    }
    let hash = app.passwords.hash(body.new_password).await?;
    app.store.set_password(&user.id, &hash).await?;
    // Every refresh token is revoked: this client gets a fresh pair.
    issue(&app, &headers, StatusCode::OK, &user).await
}

async fn me(State(app): State<Arc<App>>, caller: Caller) -> ApiResult<Response> {
    let Some((user, _)) = app.store.user_by_id(&caller.user).await? else {
        return Err(ApiError::unauthorized("unauthorized", "the account is gone"));
    };
    Ok(Json(user_json(&user)).into_response())
}

// ---- documents ----

/// A document as the API shows it (serialized straight from the row: no JSON tree).
#[derive(Serialize)]
struct DocumentJson<'a> {
    id: &'a str,
    title: &'a str,
    owner: &'a str,
    role: Role,
    created_at: i64,
    updated_at: i64,
    link_sharing: Option<Role>,
    editors_can_share: bool,
}

fn document_json(v: &DocumentView) -> DocumentJson<'_> {
    let d = &v.doc;
    DocumentJson {
        id: &d.id,
        title: &d.title,
        owner: &d.owner_id,
        role: v.role,
        created_at: d.created_ms,
        updated_at: d.updated_ms,
        link_sharing: d.link_role,
        editors_can_share: d.editors_can_share,
    }
}

#[derive(Serialize)]
struct PageJson<'a> {
    documents: Vec<DocumentJson<'a>>,
    next_cursor: Option<String>,
}

/// The document as the caller sees it; 404 when they may not read it.
async fn readable(app: &App, id: &str, caller: &Caller) -> ApiResult<DocumentView> {
    if id.len() > 64 {
        return Err(ApiError::not_found());
    }
    app.store.document_for(id, &caller.user).await?.ok_or_else(ApiError::not_found)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewDocument {
    #[serde(default)]
    title: Option<String>,
}

async fn create_document(
    State(app): State<Arc<App>>,
    caller: Caller,
    Body(body): Body<NewDocument>,
) -> ApiResult<Response> {
    let title = match body.title {
        Some(t) => check_text("title", &t, MAX_TITLE_CHARS, true)?,
        None => String::new(),
    };
    let title = if title.is_empty() { "Untitled".to_owned() } else { title };
    let doc = app.store.create_document(&caller.user, &title).await?;
    let view = DocumentView { doc, role: Role::Owner, own: Some(Role::Owner) };
    Ok((StatusCode::CREATED, Json(document_json(&view))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

fn encode_cursor(c: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", c.updated_ms, c.id))
}

fn decode_cursor(s: &str) -> ApiResult<Cursor> {
    let bad = || ApiError::bad_request("bad cursor: pass back next_cursor as it was given");
    let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (t, id) = text.split_once(':').ok_or_else(bad)?;
    Ok(Cursor { updated_ms: t.parse().map_err(|_| bad())?, id: id.to_owned() })
}

async fn list_documents(
    State(app): State<Arc<App>>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!("limit is 1 to {MAX_PAGE}")));
    }
    let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let page = app.store.documents_for(&caller.user, cursor.as_ref(), limit).await?;
    let body = PageJson {
        documents: page.docs.iter().map(document_json).collect(),
        next_cursor: page.next.as_ref().map(encode_cursor),
    };
    Ok(Json(body).into_response())
}

async fn get_document(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let view = readable(&app, &id, &caller).await?;
    Ok(Json(document_json(&view)).into_response())
}

/// `"off"` or a role, for link sharing.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum LinkSharing {
    Off,
    Viewer,
    Commenter,
    Editor,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateDocument {
    title: Option<String>,
    link_sharing: Option<LinkSharing>,
    editors_can_share: Option<bool>,
}

async fn update_document(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<UpdateDocument>,
) -> ApiResult<Response> {
    let view = readable(&app, &id, &caller).await?;
    // Every check before any write: a request is applied whole or not at all.
    let sharing = body.link_sharing.is_some() || body.editors_can_share.is_some();
    if body.title.is_some() && !policy::may_rename(view.role) {
        return Err(ApiError::forbidden("only editors and the owner may rename"));
    }
    if sharing && !policy::may_change_sharing(view.own) {
        return Err(ApiError::forbidden("only the owner may change how the document is shared"));
    }
    let title = body.title.as_deref().map(|t| check_text("title", t, MAX_TITLE_CHARS, false)).transpose()?;
    if let Some(title) = title {
        app.store.rename_document(&id, &title, &caller.user).await?;
    }
    if sharing {
        let link = body.link_sharing.map(|l| match l {
            LinkSharing::Off => None,
            LinkSharing::Viewer => Some(Role::Viewer),
            LinkSharing::Commenter => Some(Role::Commenter),
            LinkSharing::Editor => Some(Role::Editor),
        });
        app.store.set_sharing(&id, link, body.editors_can_share).await?;
        if link.is_some() {
            app.bridge.access_changed(&id).await;
        }
    }
    let view = readable(&app, &id, &caller).await?;
    Ok(Json(document_json(&view)).into_response())
}

async fn delete_document(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let view = readable(&app, &id, &caller).await?;
    if !policy::may_delete(view.own) {
        return Err(ApiError::forbidden("only the owner may delete the document"));
    }
    app.store.delete_document(&id, &caller.user).await?;
    app.bridge.access_changed(&id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- sharing ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareBody {
    email: String,
    role: Role,
}

async fn caller_user(app: &App, caller: &Caller) -> ApiResult<User> {
    app.store
        .user_by_id(&caller.user)
        .await?
        .map(|(u, _)| u)
        .ok_or_else(|| ApiError::unauthorized("unauthorized", "the account is gone"))
}

async fn share(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<ShareBody>,
) -> ApiResult<Response> {
    let view = readable(&app, &id, &caller).await?;
    policy::may_grant(&view, body.role).map_err(ApiError::forbidden)?;
    let email = normalize_email(&body.email)?;
    let by = caller_user(&app, &caller).await?;
    let doc: &Document = &view.doc;
    match app.store.share(doc, &by, &email, body.role).await? {
        ShareOutcome::Granted(user) => {
            app.bridge.access_changed(&id).await;
            Ok(Json(json!({"status": "granted", "user": user_json(&user), "role": body.role})).into_response())
        }
        ShareOutcome::Invited => {
            Ok(Json(json!({"status": "invited", "email": email, "role": body.role})).into_response())
        }
    }
}

async fn permissions(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let view = readable(&app, &id, &caller).await?;
    if view.own.is_none() {
        // Who has access (and their email addresses) is for collaborators, not for anyone
        // who has the link.
        return Err(ApiError::forbidden("access through the link does not show who else has access"));
    }
    let (perms, invites) = app.store.permissions(&id).await?;
    let perms: Vec<_> = perms.iter().map(|p| json!({"user": user_json(&p.user), "role": p.role})).collect();
    let invites: Vec<_> =
        invites.iter().map(|i| json!({"email": i.email, "role": i.role, "created_at": i.created_ms})).collect();
    Ok(Json(json!({"permissions": perms, "invitations": invites})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: Role,
}

async fn set_role(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, user)): Path<(String, String)>,
    Body(body): Body<RoleBody>,
) -> ApiResult<Response> {
    let view = readable(&app, &id, &caller).await?;
    policy::may_grant(&view, body.role).map_err(ApiError::forbidden)?;
    if user == view.doc.owner_id {
        return Err(ApiError::forbidden("the owner's role changes only by a transfer"));
    }
    if !app.store.set_role(&id, &user, Some(body.role), &caller.user).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "that user has no role here: share it with them",
        ));
    }
    app.bridge.access_changed(&id).await;
    Ok(Json(json!({"user": user, "role": body.role})).into_response())
}

async fn revoke(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    let view = readable(&app, &id, &caller).await?;
    let leaving = user == caller.user;
    if !leaving {
        policy::may_grant(&view, Role::Viewer).map_err(ApiError::forbidden)?;
    }
    if user == view.doc.owner_id {
        return Err(ApiError::forbidden("the owner cannot be removed: transfer ownership first"));
    }
    if !app.store.set_role(&id, &user, None, &caller.user).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "that user has no role here"));
    }
    app.bridge.access_changed(&id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn withdraw_invitation(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, email)): Path<(String, String)>,
) -> ApiResult<Response> {
    let view = readable(&app, &id, &caller).await?;
    policy::may_grant(&view, Role::Viewer).map_err(ApiError::forbidden)?;
    let email = normalize_email(&email)?;
    if !app.store.withdraw_invitation(&id, &email).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no invitation for that address"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    user: String,
}

async fn transfer(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<TransferBody>,
) -> ApiResult<Response> {
    let view = readable(&app, &id, &caller).await?;
    if view.own != Some(Role::Owner) {
        return Err(ApiError::forbidden("only the owner may transfer ownership"));
    }
    if body.user == caller.user {
        return Err(ApiError::bad_request("you own it already"));
    }
    app.store.transfer(&view.doc, &body.user).await?;
    app.bridge.access_changed(&id).await;
    let view = readable(&app, &id, &caller).await?;
    Ok(Json(document_json(&view)).into_response())
}

/// Parses a body for route `kind`, for the fuzz targets (see `crate::fuzzing`).
#[cfg(fuzzing)]
pub(crate) fn fuzz_body(kind: u8, bytes: &[u8]) -> bool {
    fn ok<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
        parse_body::<T>(bytes).ok()
    }
    match kind % 10 {
        0 => ok::<Signup>(bytes).is_some_and(|b| {
            let _ = normalize_email(&b.email);
            let _ = check_text("name", &b.name, MAX_NAME_CHARS, false);
            let _ = check_password(&b.password);
            true
        }),
        1 => ok::<Login>(bytes).is_some(),
        2 => ok::<RefreshBody>(bytes).is_some(),
        3 => ok::<ChangePassword>(bytes).is_some(),
        4 => ok::<NewDocument>(bytes).is_some_and(|b| {
            let _ = b.title.map(|t| check_text("title", &t, MAX_TITLE_CHARS, true));
            true
        }),
        5 => ok::<UpdateDocument>(bytes).is_some(),
        6 => ok::<ShareBody>(bytes).is_some_and(|b| {
            let _ = normalize_email(&b.email);
            true
        }),
        7 => ok::<RoleBody>(bytes).is_some(),
        8 => ok::<TransferBody>(bytes).is_some(),
        _ => std::str::from_utf8(bytes).is_ok_and(|s| decode_cursor(s).is_ok()),
    }
}
