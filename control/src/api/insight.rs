//! `GET /api/documents/{id}/activity` (the analytics worker's aggregates),
//! `GET /api/documents/{id}/authors` (who the client ids in its history are) and
//! `GET /api/search` (the search worker's index, filtered by what the caller may read).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::json;
use tandem_net::protocol::Role;

use super::{ApiError, ApiResult, Caller, readable};
use crate::search::Hit;
use crate::store::day_of;
use crate::{App, now_ms};

/// Days of activity by default, and at most.
const DEFAULT_DAYS: u32 = 30;
const MAX_DAYS: u32 = 366;
/// Longest query, in characters.
pub(super) const MAX_QUERY_CHARS: usize = 256;
/// Hits per page by default, and at most.
const DEFAULT_HITS: usize = 20;
const MAX_HITS: usize = 50;
/// Up to this many readable documents, the index is asked for those only; beyond, hits are
/// filtered by the access list in chunks.
const FILTER_IN_QUERY: usize = 4096;
const CHUNK: usize = 100;
/// Candidates one request looks through before it answers with what it found and a cursor.
const MAX_SCANNED: usize = 2000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ActivityQuery {
    days: Option<u32>,
}

/// Most client ids per `authors` request.
const MAX_AUTHORS: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthorsQuery {
    clients: String,
}

/// The names behind the client ids of a document's history (`list_revisions` names authors
/// by client id), for anyone who may read the document.
pub(super) async fn authors(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<AuthorsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut clients = Vec::new();
    for c in q.clients.split(',').filter(|c| !c.is_empty()) {
        let client: tandem_engine::ClientId =
            c.parse().map_err(|e: String| ApiError::bad_request(format!("clients: {e}")))?;
        clients.push(client.to_string());
    }
    if clients.is_empty() || clients.len() > MAX_AUTHORS {
        return Err(ApiError::bad_request(format!("clients: 1 to {MAX_AUTHORS} client ids, comma-separated")));
    }
    clients.sort();
    clients.dedup();
    readable(&app, &id, &caller).await?;
    let found = app.store.client_authors(&clients).await?;
    let authors: serde_json::Map<String, serde_json::Value> =
        found.into_iter().map(|(c, user, name)| (c, json!({"user": user, "name": name}))).collect();
    Ok(Json(json!({ "authors": authors })).into_response())
}

pub(super) async fn activity(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<ActivityQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let days = q.days.unwrap_or(DEFAULT_DAYS);
    if days == 0 || days > MAX_DAYS {
        return Err(ApiError::bad_request(format!("days is 1 to {MAX_DAYS}")));
    }
    let view = readable(&app, &id, &caller).await?;
    if view.own.is_none_or(|r| r < Role::Editor) {
        return Err(ApiError::forbidden("a document's activity is for its owner and editors"));
    }
    let since = day_of(now_ms() - i64::from(days - 1) * 86_400_000);
    let report = app.store.activity(&id, &since).await?;
    let days: Vec<_> = report
        .iter()
        .map(|d| {
            let sum = |f: fn(&crate::store::UserActivity) -> u64| d.users.iter().map(f).sum::<u64>();
            let event = |kind: &str| d.users.iter().map(|u| u.events.get(kind).copied().unwrap_or(0)).sum::<u64>();
            let users: Vec<_> = d
                .users
                .iter()
                .map(|u| {
                    json!({
                        "user": (!u.user.is_empty()).then_some(&u.user),
                        "name": u.name,
                        "edits": u.edits,
                        "chars_added": u.inserted,
                        "chars_removed": u.deleted,
                        "active_seconds": u.active_ms / 1000,
                        "opens": u.events.get("opened").copied().unwrap_or(0),
                        "shares": u.events.get("shared").copied().unwrap_or(0),
                    })
                })
                .collect();
            json!({
                "day": d.day,
                "edits": sum(|u| u.edits),
                "active_editors": d.active_editors(),
                "chars_added": sum(|u| u.inserted),
                "chars_removed": sum(|u| u.deleted),
                "active_seconds": sum(|u| u.active_ms) / 1000,
                "opens": event("opened"),
                "shares": event("shared"),
                "users": users,
            })
        })
        .collect();
    Ok(Json(json!({"document": id, "since": since, "days": days})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchQuery {
    q: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn hit_json(h: &Hit) -> serde_json::Value {
    // Byte ranges to character ranges: what a browser (or any client) can slice by.
    let chars = |b: usize| h.snippet[..b.min(h.snippet.len())].chars().count();
    let highlights: Vec<[usize; 2]> = h.highlights.iter().map(|&(s, e)| [chars(s), chars(e)]).collect();
    json!({"id": h.doc, "title": h.title, "score": h.score, "snippet": h.snippet, "highlights": highlights})
}

pub(super) async fn search(
    State(app): State<Arc<App>>,
    caller: Caller,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let text = q.q.as_deref().map(str::trim).unwrap_or_default().to_owned();
    if text.is_empty() {
        return Err(ApiError::bad_request("q (the words to search for) is required"));
    }
    if text.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(format!("q is at most {MAX_QUERY_CHARS} characters")));
    }
    let limit = q.limit.unwrap_or(DEFAULT_HITS);
    if limit == 0 || limit > MAX_HITS {
        return Err(ApiError::bad_request(format!("limit is 1 to {MAX_HITS}")));
    }
    let bad_cursor = || ApiError::bad_request("bad cursor: pass back next_cursor as it was given");
    let offset: usize = match &q.cursor {
        Some(c) => {
            let bytes = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad_cursor())?;
            std::str::from_utf8(&bytes).ok().and_then(|s| s.parse().ok()).ok_or_else(bad_cursor)?
        }
        None => 0,
    };
    let Some(index) = app.search().cloned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "search_off",
            "full-text search is off on this server",
        ));
    };
    let run = |only: Option<Vec<String>>, text: String, offset: usize, count: usize| {
        let index = Arc::clone(&index);
        async move {
            tokio::task::spawn_blocking(move || index.search(&text, only.as_deref(), offset, count))
                .await
                .map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("search failed: {e}"))
                })?
                .map_err(|e| {
                    tracing::error!("search: {e}");
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the search index failed; try again")
                })
        }
    };
    let (hits, next) = match app.store.readable_ids(&caller.user, FILTER_IN_QUERY).await? {
        // Few documents: the index is asked for those only.
        Some(ids) if ids.is_empty() => (Vec::new(), None),
        Some(ids) => {
            let mut hits = run(Some(ids), text, offset, limit + 1).await?;
            let next = (hits.len() > limit).then_some(offset + limit);
            hits.truncate(limit);
            (hits, next)
        }
        // Many: candidates in rank order, kept when the access list says so.
        // The first chunk is one page and one more (a reader of most documents is done
        // there, without snippets for candidates it will not show), then chunks double.
        None => {
            let (mut kept, mut at, mut next) = (Vec::new(), offset, None);
            let mut size = (limit + 1).min(CHUNK);
            while at - offset < MAX_SCANNED {
                let chunk = run(None, text.clone(), at, size).await?;
                let ids: Vec<String> = chunk.iter().map(|h| h.doc.clone()).collect();
                let allowed = app.store.readable_among(&caller.user, &ids).await?;
                let full = chunk.len() == size;
                for (i, h) in chunk.into_iter().enumerate() {
                    if !allowed.contains(&h.doc) {
                        continue;
                    }
                    if kept.len() == limit {
                        next = Some(at + i);
                        break;
                    }
                    kept.push(h);
                }
                if next.is_some() || !full {
                    break;
                }
                at += size;
                size = (size * 2).min(CHUNK);
            }
            if next.is_none() && at - offset >= MAX_SCANNED {
                next = Some(at);
            }
            (kept, next)
        }
    };
    // Titles from the metadata store: a rename shows at once, before the index has it.
    let ids: Vec<String> = hits.iter().map(|h| h.doc.clone()).collect();
    let titles = app.store.titles(&ids).await?;
    let results: Vec<_> = hits
        .into_iter()
        .filter_map(|mut h| {
            h.title = titles.get(&h.doc)?.clone();
            Some(hit_json(&h))
        })
        .collect();
    let next_cursor = next.map(|n| URL_SAFE_NO_PAD.encode(n.to_string()));
    Ok(Json(json!({"results": results, "next_cursor": next_cursor})).into_response())
}
