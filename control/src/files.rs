//! Files: exports and uploads in the blob store, the links that hand them out, and their
//! lifecycle.
//!
//! A link to an export is valid for `link_ttl_s` (an hour by default): on S3 it is S3's own
//! presigned URL; on the local blob store it is `/api/exports/{id}/file?expires=..&sig=..`,
//! signed here with HMAC-SHA-256 under a key kept in the data directory (`link-key`, mode
//! 0600), and refused once expired or altered. The sweep deletes exports older than the
//! retention and the exports and uploads of deleted documents, file first, then row (a crash
//! between the two leaves a row whose file is gone, deleted again next time).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use tandem_storage::BlobStore;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::store::{Export, Store, upload_key};

/// `[control.files]`: exports and uploads.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// How long a link to an export works, seconds.
    pub link_ttl_s: u64,
    /// Exports are deleted this long after they were asked for, days.
    pub export_retention_days: u64,
    /// Exports one user may have queued or rendering at once.
    pub max_exports_in_progress: u32,
    /// Largest image upload, bytes.
    pub max_upload_bytes: u64,
    /// How often the lifecycle sweep runs, seconds.
    pub sweep_interval_s: u64,
    /// Exports rendering at once in one worker process.
    pub render_concurrency: usize,
    /// Time allowed for one render, seconds (then the export fails).
    pub render_timeout_s: u64,
    /// Characters in an exported document.
    pub max_export_chars: usize,
    /// Pages in an exported PDF.
    pub max_export_pages: usize,
    /// Images in an exported document.
    pub max_export_images: usize,
    /// Bytes of all images in an exported document.
    pub max_export_image_bytes: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            link_ttl_s: 3600,
            export_retention_days: 30,
            max_exports_in_progress: 3,
            max_upload_bytes: 10 << 20,
            sweep_interval_s: 600,
            render_concurrency: 2,
            render_timeout_s: 60,
            max_export_chars: 2_000_000,
            max_export_pages: 1_000,
            max_export_images: 200,
            max_export_image_bytes: 200 << 20,
        }
    }
}

impl FilesConfig {
    /// Checks the values.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("link_ttl_s", self.link_ttl_s),
            ("export_retention_days", self.export_retention_days),
            ("max_exports_in_progress", u64::from(self.max_exports_in_progress)),
            ("max_upload_bytes", self.max_upload_bytes),
            ("sweep_interval_s", self.sweep_interval_s),
            ("render_concurrency", self.render_concurrency as u64),
            ("render_timeout_s", self.render_timeout_s),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("control.files.{name} must be positive"));
        }
        if self.link_ttl_s > 7 * 86_400 {
            return Err("control.files.link_ttl_s: at most 7 days (S3's limit for presigned links)".into());
        }
        Ok(())
    }
}

/// Why a signed link was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkRefused {
    /// Its time is up.
    Expired,
    /// The signature does not match (altered, or signed with another key).
    BadSignature,
}

/// Signs and checks the links Tandem serves itself.
pub struct LinkSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(<key>)")
    }
}

impl LinkSigner {
    /// A signer with the key in `path`, made (32 random bytes, mode 0600) if missing.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                crate::tokens::check_private(path)?;
                let key = <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| Error::Keys(format!("{} is not a 32-byte key", path.display())))?;
                Ok(Self { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| Error::Keys(format!("no randomness: {e}")))?;
                crate::tokens::write_private(path, &key)?;
                Ok(Self { key })
            }
            Err(e) => Err(Error::Keys(format!("reading {}: {e}", path.display()))),
        }
    }

    /// A signer with `key` (tests).
    pub fn with_key(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, id: &str, expires_s: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"tandem export file\n");
        mac.update(id.as_bytes());
        mac.update(b"\n");
        mac.update(expires_s.to_string().as_bytes());
        mac
    }

    /// The signature of export `id`'s link expiring at `expires_s` (Unix seconds), hex.
    pub fn sign(&self, id: &str, expires_s: i64) -> String {
        hex(&self.mac(id, expires_s).finalize().into_bytes())
    }

    /// Checks a link's signature (in constant time) and then its expiry.
    pub fn verify(&self, id: &str, expires_s: i64, sig: &str, now_s: i64) -> std::result::Result<(), LinkRefused> {
        let sig = unhex(sig).ok_or(LinkRefused::BadSignature)?;
        self.mac(id, expires_s).verify_slice(&sig).map_err(|_| LinkRefused::BadSignature)?;
        if now_s >= expires_s { Err(LinkRefused::Expired) } else { Ok(()) }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// What the file routes and the export worker share.
#[derive(Debug)]
pub struct Files {
    /// Where the files are.
    pub blobs: Arc<dyn BlobStore>,
    /// Signs links on the local blob store.
    pub signer: LinkSigner,
    /// The settings.
    pub config: FilesConfig,
    /// The server's URL as links start with (`http://host:port`).
    pub link_base: String,
}

impl Files {
    /// A link to `export`'s file valid for `link_ttl_s` from now, and when it expires (ms).
    /// Blocks (an S3 presign reads credentials): call from a blocking thread.
    pub fn export_link(&self, export: &Export) -> Result<(String, i64)> {
        let ttl = Duration::from_secs(self.config.link_ttl_s);
        let expires_s = crate::now_ms() / 1000 + ttl.as_secs() as i64;
        let signed = self
            .blobs
            .presigned_get(&export.blob_key(), ttl)
            .map_err(|e| Error::Config(format!("signing a link to export {}: {e}", export.id)))?;
        let url = signed.unwrap_or_else(|| {
            format!(
                "{}/api/exports/{}/file?expires={expires_s}&sig={}",
                self.link_base,
                export.id,
                self.signer.sign(&export.id, expires_s)
            )
        });
        Ok((url, expires_s * 1000))
    }

    /// One lifecycle pass: deletes expired exports and the files of deleted documents.
    /// Returns how many files went.
    pub async fn sweep(self: &Arc<Self>, store: &Store) -> Result<usize> {
        let retention = Duration::from_secs(self.config.export_retention_days.saturating_mul(86_400));
        let before = crate::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let mut gone = 0;
        loop {
            let exports = store.expired_exports(before, 500).await?;
            let uploads = store.orphaned_uploads(500).await?;
            if exports.is_empty() && uploads.is_empty() {
                return Ok(gone);
            }
            let keys: Vec<String> =
                exports.iter().map(Export::blob_key).chain(uploads.iter().map(|u| upload_key(&u.id))).collect();
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || keys.iter().try_for_each(|k| this.blobs.delete(k)))
                .await
                .map_err(|e| Error::Config(format!("the sweep's blob task failed: {e}")))?
                .map_err(|e| Error::Config(format!("deleting files: {e}")))?;
            for e in &exports {
                store.delete_export(&e.id).await?;
            }
            for u in &uploads {
                store.delete_upload(&u.id).await?;
            }
            gone += exports.len() + uploads.len();
        }
    }

    /// Runs [`Files::sweep`] every `sweep_interval_s` until the runtime stops.
    pub async fn sweep_forever(self: Arc<Self>, store: Store) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.config.sweep_interval_s));
        loop {
            tick.tick().await;
            match self.sweep(&store).await {
                Ok(0) => {}
                Ok(n) => info!("files: deleted {n} expired exports and files of deleted documents"),
                Err(e) => warn!("files: the lifecycle sweep failed (retried next time): {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_verify_until_they_expire_and_refuse_any_change() {
        let s = LinkSigner::with_key([7; 32]);
        let sig = s.sign("e1", 1_000);
        assert_eq!(s.verify("e1", 1_000, &sig, 999), Ok(()));
        assert_eq!(s.verify("e1", 1_000, &sig, 1_000), Err(LinkRefused::Expired));
        assert_eq!(s.verify("e2", 1_000, &sig, 10), Err(LinkRefused::BadSignature));
        assert_eq!(s.verify("e1", 2_000, &sig, 10), Err(LinkRefused::BadSignature), "a later expiry");
        let mut other = sig.clone().into_bytes();
        other[0] = if other[0] == b'0' { b'1' } else { b'0' };
        assert_eq!(s.verify("e1", 1_000, std::str::from_utf8(&other).unwrap(), 10), Err(LinkRefused::BadSignature));
        assert_eq!(s.verify("e1", 1_000, "zz", 10), Err(LinkRefused::BadSignature));
        assert_eq!(LinkSigner::with_key([8; 32]).verify("e1", 1_000, &sig, 10), Err(LinkRefused::BadSignature));
    }

    #[test]
    fn the_key_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link-key");
        let a = LinkSigner::load_or_create(&path).unwrap();
        let b = LinkSigner::load_or_create(&path).unwrap();
        assert_eq!(a.sign("x", 5), b.sign("x", 5));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, [1u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(LinkSigner::load_or_create(&path).is_err(), "readable by others");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, b"short").unwrap();
        assert!(LinkSigner::load_or_create(&path).is_err());
    }
}
