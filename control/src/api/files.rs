//! Exports and uploads: `POST /api/documents/{id}/export` (202, rendered by the export
//! worker), `GET /api/exports/{id}` (its status and link), `GET /api/exports/{id}/file` (the
//! file, behind a signed, expiring link, on the local blob store), `POST
//! /api/documents/{id}/uploads` (an image, typed by its content) and `GET /api/uploads/{id}`
//! (served to readers of its document only).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tandem_net::protocol::Role;
use tandem_render::{Format, ImageKind};
use tandem_storage::BlobMeta;

use super::{ApiError, ApiResult, Body, Caller, readable};
use crate::files::{Files, LinkRefused};
use crate::store::{Export, ExportStatus, upload_key};
use crate::{App, now_ms, random_hex};

fn files(app: &App) -> ApiResult<Arc<Files>> {
    app.files().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "files are not available yet; try again")
    })
}

/// Runs a blob-store call on a blocking thread (S3 waits on the network).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!("blob store: {e}");
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the file store failed; try again"))
        }
        Err(e) => {
            tracing::error!("blob store task: {e}");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the file store task failed"))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportBody {
    format: String,
    #[serde(default)]
    rev: Option<u64>,
}

pub(super) async fn request_export(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<ExportBody>,
) -> ApiResult<Response> {
    let view = readable(&app, &id, &caller).await?;
    let format = Format::parse(&body.format)
        .ok_or_else(|| ApiError::bad_request(format!("format {:?}: \"pdf\" or \"docx\"", body.format)))?;
    let files = files(&app)?;
    let max = files.config.max_exports_in_progress;
    let export =
        app.store.request_export(&view.doc.id, &caller.user, format.extension(), body.rev, max).await?.ok_or_else(
            || {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_exports",
                    format!("you have {max} exports in progress; wait for one to finish"),
                );
                e.retry_after = Some(std::time::Duration::from_secs(5));
                e
            },
        )?;
    let body = json!({
        "export_id": export.id,
        "status": export.status.name(),
        "status_url": format!("/api/exports/{}", export.id),
    });
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, format!("/api/exports/{}", export.id))], Json(body)).into_response())
}

/// The export, if `caller` asked for it (anyone else is told it does not exist).
async fn own_export(app: &App, id: &str, caller: &Caller) -> ApiResult<Export> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such export");
    if id.len() > 64 {
        return Err(not_found());
    }
    match app.store.export(id).await? {
        Some(e) if e.user == caller.user => Ok(e),
        _ => Err(not_found()),
    }
}

pub(super) async fn export_status(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let export = own_export(&app, &id, &caller).await?;
    // Access to the document may have gone since: the file goes with it.
    readable(&app, &export.doc, &caller).await?;
    let mut body = json!({
        "export_id": export.id,
        "doc": export.doc,
        "format": export.format,
        "rev": export.rev,
        "status": export.status.name(),
        "created_at_ms": export.created_ms,
        "finished_at_ms": export.finished_ms,
    });
    if let Some(e) = &export.error {
        body["error"] = json!(e);
    }
    if export.status == ExportStatus::Done {
        let files = files(&app)?;
        let e = export.clone();
        let (url, expires_ms) = blocking(move || files.export_link(&e).map_err(|e| e.to_string())).await?;
        body["url"] = json!(url);
        body["url_expires_at_ms"] = json!(expires_ms);
        body["bytes"] = json!(export.bytes);
    }
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
pub(super) struct Signed {
    expires: i64,
    sig: String,
}

/// The file behind a signed link: no sign-in (the link is the permission), refused once
/// expired or altered.
pub(super) async fn export_file(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<Signed>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let refused = |m: &str| ApiError::new(StatusCode::FORBIDDEN, "bad_link", m.to_owned());
    let Ok(Query(signed)) = query else { return Err(refused("the link is incomplete: it needs expires and sig")) };
    let files = files(&app)?;
    match files.signer.verify(&id, signed.expires, &signed.sig, now_ms() / 1000) {
        Ok(()) => {}
        Err(LinkRefused::Expired) => {
            return Err(ApiError::new(StatusCode::GONE, "link_expired", "the link has expired; ask for a new one"));
        }
        Err(LinkRefused::BadSignature) => return Err(refused("the link is not valid")),
    }
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such export (it may have expired)");
    let export = app.store.export(&id).await?.filter(|e| e.status == ExportStatus::Done).ok_or_else(not_found)?;
    let title = app.store.document(&export.doc).await?.map(|d| d.title).ok_or_else(not_found)?;
    let key = export.blob_key();
    let bytes = blocking(move || files.blobs.get(&key).map_err(|e| e.to_string())).await?.ok_or_else(not_found)?;
    let format = Format::parse(&export.format).unwrap_or(Format::Pdf);
    Ok(file_response(bytes, format.content_type(), &attachment(&title, format.extension()), true))
}

/// `Content-Disposition` for a download named after the document: an ASCII fallback and
/// the UTF-8 name (RFC 6266).
pub fn attachment(title: &str, extension: &str) -> String {
    let ascii: String = title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || " -_.,()".contains(c) { c } else { '_' })
        .take(100)
        .collect();
    let ascii = if ascii.trim().is_empty() { "document".to_owned() } else { ascii.trim().to_owned() };
    let encoded: String = title
        .chars()
        .take(100)
        .collect::<String>()
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}.{extension}\"; filename*=UTF-8''{encoded}.{extension}")
}

fn file_response(bytes: Vec<u8>, content_type: &str, disposition: &str, private: bool) -> Response {
    let mut r = (StatusCode::OK, bytes).into_response();
    let h = r.headers_mut();
    let value =
        |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, value(content_type));
    h.insert(header::CONTENT_DISPOSITION, value(disposition));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // An image never runs as a page, even opened directly.
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    if private {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    }
    r
}

/// An upload's raw body, up to `max` bytes, with the API's error for more.
async fn read_body(req: Request, max: u64) -> ApiResult<Bytes> {
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("images are at most {max} bytes"));
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    axum::body::to_bytes(req.into_body(), usize::try_from(max).unwrap_or(usize::MAX)).await.map_err(|_| too_large())
}

pub(super) async fn upload(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    // Who may upload is checked before the body is read.
    let view = readable(&app, &id, &caller).await?;
    if view.role < Role::Editor {
        return Err(ApiError::forbidden("only editors may add images"));
    }
    let files = files(&app)?;
    let bytes = read_body(req, files.config.max_upload_bytes).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the body is empty: send the image's bytes"));
    }
    // The type is the content's, whatever the request or the file name says.
    let kind = ImageKind::sniff(&bytes).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image",
            "the file is not a PNG, JPEG, GIF or WebP image",
        )
    })?;
    let declared = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !declared.is_empty()
        && declared != "application/octet-stream"
        && !declared.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(kind.content_type())
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "type_mismatch",
            format!("the file is {}, not {declared}", kind.content_type()),
        ));
    }
    let upload_id = random_hex();
    let key = upload_key(&upload_id);
    let size = bytes.len() as u64;
    let meta = BlobMeta { content_type: Some(kind.content_type().into()), content_disposition: None };
    blocking(move || files.blobs.put_with(&key, &bytes, &meta).map_err(|e| e.to_string())).await?;
    let upload = app.store.add_upload(&view.doc.id, &caller.user, &upload_id, kind.content_type(), size).await?;
    let url = format!("/api/uploads/{}", upload.id);
    let body = json!({"id": upload.id, "url": url, "content_type": upload.content_type, "bytes": upload.bytes});
    Ok((StatusCode::CREATED, [(header::LOCATION, url)], Json(body)).into_response())
}

pub(super) async fn get_upload(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such image, or no access to it");
    if id.len() > 64 {
        return Err(not_found());
    }
    let upload = app.store.upload(&id).await?.ok_or_else(not_found)?;
    readable(&app, &upload.doc, &caller).await.map_err(|_| not_found())?;
    let files = files(&app)?;
    let key = upload_key(&upload.id);
    let bytes = blocking(move || files.blobs.get(&key).map_err(|e| e.to_string())).await?.ok_or_else(not_found)?;
    let ext = ImageKind::sniff(&bytes).map_or("bin", ImageKind::extension);
    let disposition = format!("inline; filename=\"{}.{ext}\"", upload.id);
    Ok(file_response(bytes, &upload.content_type, &disposition, true))
}

#[cfg(test)]
mod tests {
    use super::attachment;

    #[test]
    fn download_names_are_safe_in_a_header() {
        assert_eq!(
            attachment("Plan \"Q3\"\r\nX: y", "pdf"),
            "attachment; filename=\"Plan _Q3___X_ y.pdf\"; filename*=UTF-8''Plan%20%22Q3%22%0D%0AX%3A%20y.pdf"
        );
        assert!(attachment("日本", "docx").starts_with("attachment; filename=\"__.docx\"; filename*=UTF-8''%E6%97%A5"));
        assert!(attachment("", "pdf").starts_with("attachment; filename=\"document.pdf\""));
    }
}
