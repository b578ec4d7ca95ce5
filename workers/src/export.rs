//! The export worker: renders a document as PDF or DOCX at a revision and stores the file.
//!
//! It reads the document the way a client does, with the requester's own access: it signs
//! an access token for them and asks the server over WebSocket for the revision
//! (`get_revision`), so an export never shows what its requester may not read (access
//! revoked since the request: the export fails). The revision is the one asked for, or the
//! latest when the request was made (found by the revisions' commit times). Images come from
//! the document's own uploads (or `data:` URLs); other URLs are not fetched (no network from
//! exports) and show as "[image]".
//!
//! Exactly once: the file's key is the export's id (a second render replaces it), and the
//! row moves to `done` (with the `export_finished` event that emails the requester) in one
//! conditional transaction, so a worker killed mid-export and restarted makes one file and
//! one email; inside `tandem serve` the requester's sessions that have the document open get
//! an `export_finished` message too. Renders run on threads of their own, `render_concurrency` at a time, and an
//! export that takes longer than `render_timeout_s` fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tandem_control::Store;
use tandem_control::files::Files;
use tandem_control::store::{Export, ExportStatus, Finished, upload_key};
use tandem_control::tokens::Keys;
use tandem_engine::{ClientDoc, ClientId, Delta};
use tandem_events::{Envelope, Event, Topic};
use tandem_net::DataPlane;
use tandem_net::client::{Client, ClientError, ClientOptions};
use tandem_net::protocol::{DocId, Encoding, ServerMsg};
use tandem_render::{Format, Image, Images, Limits};
use tandem_storage::BlobMeta;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::{Failure, Worker};

/// The consumer group.
pub const GROUP: &str = "exports";

/// The export worker.
pub struct Exporter {
    store: Store,
    files: Arc<Files>,
    keys: Arc<Keys>,
    server: SocketAddr,
    limits: Limits,
    timeout: Duration,
    renders: Arc<Semaphore>,
    data: Option<DataPlane>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Why an export ended without a file: said to the requester.
struct Refused(String);

impl Exporter {
    /// A worker that reads documents from the server at `server`, signing tokens with `keys`;
    /// with `data` (inside `tandem serve`), the requester's open sessions are told when an
    /// export finishes.
    pub fn new(store: Store, files: Arc<Files>, keys: Arc<Keys>, server: SocketAddr, data: Option<DataPlane>) -> Self {
        let c = &files.config;
        let limits = Limits {
            max_chars: c.max_export_chars,
            max_pages: c.max_export_pages,
            max_images: c.max_export_images,
            max_image_bytes: c.max_export_image_bytes,
            ..Limits::default()
        };
        let (timeout, concurrency) = (Duration::from_secs(c.render_timeout_s), c.render_concurrency);
        let renders = Arc::new(Semaphore::new(concurrency));
        Self { store, files, keys, server, limits, timeout, renders, data, tls: None }
    }

    /// Reads documents over TLS (`wss://`, the server terminating TLS on its port), trusting
    /// what `config` trusts.
    #[must_use]
    pub fn with_tls(mut self, config: Option<Arc<rustls::ClientConfig>>) -> Self {
        self.tls = config;
        self
    }

    async fn export(&self, envelope: &Envelope) -> Result<(), Failure> {
        let Event::ExportRequested { export, doc, user, format, rev } = &envelope.event else { return Ok(()) };
        let transient = |what: &str, e: &dyn std::fmt::Display| Failure::Transient(format!("{what}: {e}"));
        let Some(mut row) = self.store.export(export).await.map_err(|e| transient("reading the export", &e))? else {
            return Ok(()); // swept already
        };
        if matches!(row.status, ExportStatus::Done | ExportStatus::Failed) {
            return Ok(()); // a redelivery after it finished
        }
        let title = match self.store.document(doc).await.map_err(|e| transient("reading the document", &e))? {
            Some(d) => d.title,
            None => return self.finish(&row, "", Err(Refused("the document was deleted".into()))).await,
        };
        let Some(format) = Format::parse(format) else {
            return self.finish(&row, &title, Err(Refused(format!("unknown format {format:?}")))).await;
        };
        let started = std::time::Instant::now();
        let result = self.render(&mut row, doc, user, format, *rev, envelope.at_ms, &title).await;
        let result = match result {
            Ok(bytes) => Ok(bytes),
            Err(Err(f)) => return Err(f),
            Err(Ok(refused)) => Err(refused),
        };
        if let Ok(n) = &result {
            info!(
                export,
                doc,
                format = format.extension(),
                bytes = n,
                ms = started.elapsed().as_millis() as u64,
                "exported"
            );
        }
        self.finish(&row, &title, result).await
    }

    /// Reads, renders and stores the file; its size. `Err(Ok(_))`: the export fails for a
    /// reason the requester is told; `Err(Err(_))`: retried.
    #[allow(clippy::too_many_arguments)]
    async fn render(
        &self,
        row: &mut Export,
        doc: &str,
        user: &str,
        format: Format,
        rev: Option<u64>,
        requested_ms: i64,
        title: &str,
    ) -> Result<u64, Result<Refused, Failure>> {
        let (token, _) = self.keys.sign(user, "export");
        let (server, doc_id, tls) = (self.server, doc.to_owned(), self.tls.clone());
        let read = tokio::task::spawn_blocking(move || read_document(server, tls, &token, &doc_id, rev, requested_ms))
            .await
            .map_err(|e| Err(Failure::Transient(format!("the reading task failed: {e}"))))?;
        let (rev, content) = match read {
            Ok(v) => v,
            Err(ClientError::Refused { code, message }) => {
                return Err(Ok(Refused(format!(
                    "the server refused to read the document ({}): {message}",
                    code.as_str()
                ))));
            }
            Err(e) => return Err(Err(Failure::Transient(format!("reading the document: {e}")))),
        };
        row.rev = Some(rev);
        match self.store.start_export(&row.id, rev).await {
            Ok(true) => {}
            Ok(false) => return Err(Ok(Refused("finished elsewhere".into()))),
            Err(e) => return Err(Err(Failure::Transient(format!("marking the export started: {e}")))),
        }
        let images = self.images(doc, &content).await?;
        let permit = Arc::clone(&self.renders)
            .acquire_owned()
            .await
            .map_err(|_| Err(Failure::Transient("shutting down".into())))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (limits, title_owned) = (self.limits.clone(), title.to_owned());
        // A thread of its own: a render cannot be interrupted, so the permit goes with it and
        // a timed-out render still counts against the concurrency until it really ends.
        std::thread::Builder::new()
            .name("tandem-export".into())
            .spawn(move || {
                let result = tandem_render::render(&content, &title_owned, format, &images, &limits);
                drop(permit);
                let _ = tx.send(result);
            })
            .map_err(|e| Err(Failure::Transient(format!("starting a render thread: {e}"))))?;
        let bytes = match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => {
                return Err(Ok(Refused(format!("rendering took longer than {} s", self.timeout.as_secs()))));
            }
            Ok(Err(_)) => return Err(Err(Failure::Transient("the render thread died".into()))),
            Ok(Ok(Err(e))) => return Err(Ok(Refused(e.to_string()))),
            Ok(Ok(Ok(bytes))) => bytes,
        };
        let size = bytes.len() as u64;
        let meta = BlobMeta {
            content_type: Some(format.content_type().into()),
            content_disposition: Some(tandem_control::api::attachment(title, format.extension())),
        };
        let (files, key) = (Arc::clone(&self.files), row.blob_key());
        tokio::task::spawn_blocking(move || files.blobs.put_with(&key, &bytes, &meta))
            .await
            .map_err(|e| Err(Failure::Transient(format!("the storing task failed: {e}"))))?
            .map_err(|e| Err(Failure::Transient(format!("storing the file: {e}"))))?;
        Ok(size)
    }

    /// The document's images that exports may embed: its own uploads and `data:` URLs.
    async fn images(&self, doc: &str, content: &Delta) -> Result<Images, Result<Refused, Failure>> {
        let urls = tandem_render::image_urls(content);
        if urls.len() > self.limits.max_images {
            let m = format!("{} images (the limit is {})", urls.len(), self.limits.max_images);
            return Err(Ok(Refused(format!("the document is too large to export: {m}"))));
        }
        let mut images = HashMap::new();
        let mut total = 0u64;
        for url in urls {
            let bytes = if let Some(data) = url.strip_prefix("data:") {
                decode_data_url(data)
            } else if let Some(id) = upload_id(&url, &self.files.link_base) {
                match self.store.upload(id).await {
                    // Only this document's uploads: another's may not be readable by the requester.
                    Ok(Some(u)) if u.doc == doc => {
                        let (files, key) = (Arc::clone(&self.files), upload_key(&u.id));
                        tokio::task::spawn_blocking(move || files.blobs.get(&key))
                            .await
                            .map_err(|e| Err(Failure::Transient(format!("the image task failed: {e}"))))?
                            .map_err(|e| Err(Failure::Transient(format!("reading an image: {e}"))))?
                    }
                    Ok(_) => None,
                    Err(e) => return Err(Err(Failure::Transient(format!("reading an upload: {e}")))),
                }
            } else {
                None
            };
            let Some(bytes) = bytes else { continue };
            total += bytes.len() as u64;
            if total > self.limits.max_image_bytes {
                let m = format!("more than {:.0} MB of images", self.limits.max_image_bytes as f64 / 1e6);
                return Err(Ok(Refused(format!("the document is too large to export: {m}"))));
            }
            if let Some(image) = Image::new(bytes, self.limits.max_image_pixels) {
                images.insert(url, image);
            }
        }
        Ok(images)
    }

    async fn finish(&self, row: &Export, title: &str, result: Result<u64, Refused>) -> Result<(), Failure> {
        let finished = match result {
            Ok(bytes) => {
                let (files, r) = (Arc::clone(&self.files), row.clone());
                let (link, expires_ms) = tokio::task::spawn_blocking(move || files.export_link(&r))
                    .await
                    .map_err(|e| Failure::Transient(format!("the signing task failed: {e}")))?
                    .map_err(|e| Failure::Transient(e.to_string()))?;
                Finished { link: Some(link), expires_ms: Some(expires_ms), bytes: Some(bytes), error: None }
            }
            Err(Refused(why)) => {
                warn!(export = row.id, doc = row.doc, "export failed: {why}");
                Finished { link: None, expires_ms: None, bytes: None, error: Some(why) }
            }
        };
        let first = self
            .store
            .finish_export(row, title, finished.clone())
            .await
            .map_err(|e| Failure::Transient(format!("recording the export: {e}")))?;
        if first && let (Some(data), Ok(doc)) = (&self.data, DocId::new(&row.doc)) {
            let msg = ServerMsg::ExportFinished {
                doc: row.doc.clone(),
                export: row.id.clone(),
                format: row.format.clone(),
                status: if finished.error.is_none() { "done" } else { "failed" }.into(),
                url: finished.link,
                error: finished.error,
            };
            // Best effort: the email and the status route say it too.
            data.notify(doc, &row.user, msg);
        }
        Ok(())
    }
}

impl Worker for Exporter {
    fn group(&self) -> &'static str {
        GROUP
    }

    fn topic(&self) -> Topic {
        Topic::Exports
    }

    async fn handle(&mut self, event: &Envelope) -> Result<(), Failure> {
        self.export(event).await
    }

    fn handle_all<'a>(
        &'a mut self,
        events: &'a [&'a Envelope],
    ) -> impl std::future::Future<Output = Vec<Result<(), Failure>>> + Send + 'a {
        let this = &*self;
        async move { futures_util::future::join_all(events.iter().map(|e| this.export(e))).await }
    }

    fn batch(&self) -> usize {
        self.files.config.render_concurrency.max(1)
    }
}

/// The upload id in `url`, if it names one of this server's uploads.
fn upload_id<'a>(url: &'a str, base: &str) -> Option<&'a str> {
    let path = url.strip_prefix(base).unwrap_or(url);
    let id = path.strip_prefix("/api/uploads/")?;
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(id)
}

/// The bytes of a `data:image/...;base64,...` URL (after `data:`).
fn decode_data_url(data: &str) -> Option<Vec<u8>> {
    let (meta, payload) = data.split_once(',')?;
    if !meta.starts_with("image/") || !meta.ends_with(";base64") {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(payload.trim()).ok()
}

/// The document at `rev` (or at the last revision committed by `requested_ms`), read as
/// the token's user over WebSocket.
fn read_document(
    server: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: &str,
    doc: &str,
    rev: Option<u64>,
    requested_ms: i64,
) -> Result<(u64, Delta), ClientError> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the OS has randomness");
    let options = ClientOptions {
        encoding: Encoding::Binary,
        token: token.to_owned(),
        name: "export".into(),
        tls,
        ..ClientOptions::default()
    };
    let mut client = Client::connect(server, ClientId(u64::from_le_bytes(id)), options)?;
    client.open(doc)?;
    let rev = match rev {
        Some(r) => r,
        None => revision_at(&mut client, doc, requested_ms)?,
    };
    let content = client.get_revision(doc, rev)?;
    let _ = client.close();
    Ok((rev, content))
}

/// The last revision committed at or before `ms` (0 when none was), by bisecting the
/// revisions' commit times.
fn revision_at(client: &mut Client, doc: &str, ms: i64) -> Result<u64, ClientError> {
    let latest = client.session().doc_state(doc).map_or(0, ClientDoc::rev);
    let time = |client: &mut Client, rev: u64| -> Result<(u64, i64), ClientError> {
        let (oldest, _, revs) = client.list_revisions(doc, rev, 1)?;
        Ok((oldest, revs.first().map_or(i64::MIN, |r| r.time_ms as i64)))
    };
    if latest == 0 {
        return Ok(0);
    }
    let (oldest, t) = time(client, latest)?;
    if t <= ms {
        return Ok(latest);
    }
    // Invariant: the answer is in [lo - 1, hi - 1]: time(hi) > ms, and time(lo - 1) <= ms
    // or lo - 1 is before the oldest revision kept (then get_revision says so).
    let (mut lo, mut hi) = (oldest.max(1), latest);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if time(client, mid)?.1 <= ms {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_servers_upload_urls_are_read() {
        assert_eq!(upload_id("/api/uploads/abc123", "http://h:1"), Some("abc123"));
        assert_eq!(upload_id("http://h:1/api/uploads/abc123", "http://h:1"), Some("abc123"));
        assert_eq!(upload_id("http://evil/api/uploads/abc123", "http://h:1"), None);
        assert_eq!(upload_id("/api/uploads/../keys.json", "http://h:1"), None);
        assert_eq!(upload_id("/api/uploads/", "http://h:1"), None);
    }

    #[test]
    fn data_urls_decode_images_only() {
        assert_eq!(decode_data_url("image/png;base64,AAEC"), Some(vec![0, 1, 2]));
        assert_eq!(decode_data_url("text/html;base64,AAEC"), None);
        assert_eq!(decode_data_url("image/png,rawbytes"), None);
    }
}
