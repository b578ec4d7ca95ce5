//! Comment threads and named versions over REST: the same changes as the WebSocket `note`
//! message, made on the document's owner core (where they are sequenced with the text) as
//! the caller, with the role checked here in SQL and again there.
//!
//! `GET /api/documents/{id}/comments`, `POST .../comments` (a thread on `start..end` of the
//! document as it is now), `POST .../comments/{thread}/replies`, `PATCH` and `DELETE
//! .../comments/{thread}/messages/{message}`, `DELETE .../comments/{thread}`, `POST
//! .../comments/{thread}/resolve` and `/reopen`; `GET .../versions`, `PUT` and `DELETE
//! .../versions/{rev}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tandem_engine::{NoteChange, Notes};
use tandem_net::protocol::ErrorCode;

use super::{ApiError, ApiResult, Body, Caller, readable};
use crate::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewThread {
    start: usize,
    end: usize,
    text: String,
    #[serde(default)]
    mentions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MessageBody {
    text: String,
    #[serde(default)]
    mentions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionBody {
    name: String,
}

/// A thread, message or revision number from the path.
fn number(what: &str, s: &str) -> ApiResult<u64> {
    s.parse().map_err(|_| ApiError::bad_request(format!("{what} must be a number, not {s:?}")))
}

/// Makes (or, without `change`, reads) `id`'s notes on its core as the caller.
async fn on_core(app: &App, id: &str, caller: &Caller, change: Option<NoteChange>) -> ApiResult<(u64, Notes)> {
    let view = readable(app, id, caller).await?;
    app.bridge.notes(id, &caller.user, &caller.name, view.role, change).await.map_err(|(code, message)| {
        let status = match code {
            ErrorCode::ReadOnly | ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvalidNote | ErrorCode::InvalidDocId => StatusCode::BAD_REQUEST,
            ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DocumentDeleted => StatusCode::GONE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, code.as_str(), message)
    })
}

fn threads_json(rev: u64, notes: &Notes) -> serde_json::Value {
    json!({ "rev": rev, "threads": notes.threads().collect::<Vec<_>>() })
}

/// The thread `thread` as it is after a change, or (deleted) nothing.
fn thread_json(rev: u64, notes: &Notes, thread: u64) -> serde_json::Value {
    json!({ "rev": rev, "thread": notes.thread(thread) })
}

pub(super) async fn list(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let (rev, notes) = on_core(&app, &id, &caller, None).await?;
    Ok(Json(threads_json(rev, &notes)).into_response())
}

pub(super) async fn create(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<NewThread>,
) -> ApiResult<Response> {
    let change = NoteChange::Comment { start: b.start, end: b.end, text: b.text, mentions: b.mentions };
    let (rev, notes) = on_core(&app, &id, &caller, Some(change)).await?;
    Ok((StatusCode::CREATED, Json(thread_json(rev, &notes, rev))).into_response())
}

pub(super) async fn reply(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, thread)): Path<(String, String)>,
    Body(b): Body<MessageBody>,
) -> ApiResult<Response> {
    let thread = number("thread", &thread)?;
    let change = NoteChange::Reply { thread, text: b.text, mentions: b.mentions };
    let (rev, notes) = on_core(&app, &id, &caller, Some(change)).await?;
    Ok((StatusCode::CREATED, Json(thread_json(rev, &notes, thread))).into_response())
}

pub(super) async fn edit(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, thread, message)): Path<(String, String, String)>,
    Body(b): Body<MessageBody>,
) -> ApiResult<Response> {
    let (thread, message) = (number("thread", &thread)?, number("message", &message)?);
    let change = NoteChange::Edit { thread, message, text: b.text, mentions: b.mentions };
    let (rev, notes) = on_core(&app, &id, &caller, Some(change)).await?;
    Ok(Json(thread_json(rev, &notes, thread)).into_response())
}

pub(super) async fn delete_message(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, thread, message)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (thread, message) = (number("thread", &thread)?, number("message", &message)?);
    on_core(&app, &id, &caller, Some(NoteChange::Delete { thread, message })).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn delete_thread(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, thread)): Path<(String, String)>,
) -> ApiResult<Response> {
    let thread = number("thread", &thread)?;
    // A thread's first message is the comment: deleting it deletes the thread.
    on_core(&app, &id, &caller, Some(NoteChange::Delete { thread, message: thread })).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn resolve(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, thread)): Path<(String, String)>,
) -> ApiResult<Response> {
    let thread = number("thread", &thread)?;
    let (rev, notes) = on_core(&app, &id, &caller, Some(NoteChange::Resolve { thread })).await?;
    Ok(Json(thread_json(rev, &notes, thread)).into_response())
}

pub(super) async fn reopen(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, thread)): Path<(String, String)>,
) -> ApiResult<Response> {
    let thread = number("thread", &thread)?;
    let (rev, notes) = on_core(&app, &id, &caller, Some(NoteChange::Reopen { thread })).await?;
    Ok(Json(thread_json(rev, &notes, thread)).into_response())
}

pub(super) async fn versions(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (rev, notes) = on_core(&app, &id, &caller, None).await?;
    Ok(Json(json!({ "rev": rev, "versions": notes.versions().collect::<Vec<_>>() })).into_response())
}

pub(super) async fn name_version(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, named)): Path<(String, String)>,
    Body(b): Body<VersionBody>,
) -> ApiResult<Response> {
    let named = number("revision", &named)?;
    let change = NoteChange::NameVersion { rev: named, name: b.name };
    let (rev, notes) = on_core(&app, &id, &caller, Some(change)).await?;
    let version = notes.versions().find(|v| v.rev == named);
    Ok(Json(json!({ "rev": rev, "version": version })).into_response())
}

pub(super) async fn unname_version(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, named)): Path<(String, String)>,
) -> ApiResult<Response> {
    let named = number("revision", &named)?;
    on_core(&app, &id, &caller, Some(NoteChange::UnnameVersion { rev: named })).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
