//! The blob store on S3 (or any S3-compatible store), through `object_store`.
//!
//! `object_store` is asynchronous; the storage threads and the control plane's blocking tasks
//! that call [`BlobStore`] are not on a runtime, so the client runs on a small runtime of its
//! own and each call waits for it. A PUT is atomic on S3: a reader sees the old object or the
//! new one, never a part. Presigned links are S3's own signature (SigV4, `X-Amz-Expires`).

use std::fmt;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, RetryConfig,
};

use crate::blob::{BlobMeta, BlobStore, check_key};
use crate::error::StorageError;

/// Where the blobs are (`[server.storage.s3]`).
#[derive(Clone, Default)]
pub struct S3Options {
    /// The bucket (it must exist).
    pub bucket: String,
    /// The region (`us-east-1` when empty).
    pub region: String,
    /// An S3-compatible store's URL (`http://127.0.0.1:8014`); AWS when empty.
    pub endpoint: String,
    /// Keys are put under this prefix (`tandem/`), so one bucket can serve several things.
    pub prefix: String,
    /// Access key; from `AWS_ACCESS_KEY_ID` (and the rest of the AWS environment) when empty.
    pub access_key_id: String,
    /// Secret key; from `AWS_SECRET_ACCESS_KEY` when empty. Never logged.
    pub secret_access_key: String,
    /// Bucket as a host name (`bucket.endpoint`) instead of a path (`endpoint/bucket`).
    pub virtual_hosted_style: bool,
    /// Time allowed for one request (retried with backoff up to three times).
    pub request_timeout: Duration,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &if self.secret_access_key.is_empty() { "" } else { "<redacted>" })
            .finish_non_exhaustive()
    }
}

/// Blobs in an S3 bucket.
pub struct S3Blobs {
    store: AmazonS3,
    prefix: String,
    runtime: tokio::runtime::Runtime,
    describe: String,
}

impl fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe)
    }
}

impl S3Blobs {
    /// A client for `opts`' bucket. Checks the configuration, not the bucket: call
    /// [`S3Blobs::check`] to reach it.
    pub fn open(opts: &S3Options) -> Result<Self, StorageError> {
        if opts.bucket.is_empty() {
            return Err(StorageError::Invalid("s3: a bucket is required".into()));
        }
        let prefix = opts.prefix.trim_matches('/');
        if !prefix.is_empty() {
            check_key(prefix)
                .map_err(|_| StorageError::Invalid(format!("s3: prefix {prefix:?} is not a valid key")))?;
        }
        // reqwest's rustls takes its crypto from the process default: ring, which the rest of
        // the binary (lettre) already uses. A second install is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = if opts.request_timeout.is_zero() { Duration::from_secs(30) } else { opts.request_timeout };
        let retry = RetryConfig { max_retries: 3, retry_timeout: timeout * 4, ..RetryConfig::default() };
        // Client options first: `with_allow_http` below is one of them.
        let mut b = AmazonS3Builder::from_env()
            .with_client_options(
                ClientOptions::new().with_timeout(timeout).with_connect_timeout(Duration::from_secs(5)),
            )
            .with_retry(retry)
            .with_bucket_name(&opts.bucket);
        if !opts.region.is_empty() {
            b = b.with_region(&opts.region);
        } else if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
            b = b.with_region("us-east-1");
        }
        if !opts.endpoint.is_empty() {
            b = b.with_endpoint(&opts.endpoint).with_allow_http(opts.endpoint.starts_with("http://"));
        }
        if !opts.access_key_id.is_empty() {
            b = b.with_access_key_id(&opts.access_key_id);
        }
        if !opts.secret_access_key.is_empty() {
            b = b.with_secret_access_key(&opts.secret_access_key);
        }
        let store = b
            .with_virtual_hosted_style_request(opts.virtual_hosted_style)
            .build()
            .map_err(|e| StorageError::Invalid(format!("s3: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tandem-s3")
            .enable_all()
            .build()
            .map_err(|e| StorageError::io(String::from("starting the S3 client's runtime"), e))?;
        let endpoint = if opts.endpoint.is_empty() { "AWS" } else { &opts.endpoint };
        let describe = format!("s3://{}/{prefix} at {endpoint}", opts.bucket);
        Ok(Self { store, prefix: prefix.to_owned(), runtime, describe })
    }

    /// Writes, reads and deletes a small object, so a wrong endpoint, bucket, credentials or
    /// permissions fail at start rather than at the first snapshot.
    pub fn check(&self) -> Result<(), StorageError> {
        let key = "tandem-check";
        self.put(key, b"ok")?;
        if self.get(key)?.as_deref() != Some(b"ok") {
            return Err(StorageError::Backend(format!("{}: an object written could not be read back", self.describe)));
        }
        self.delete(key)
    }

    fn path(&self, key: &str) -> Result<Path, StorageError> {
        check_key(key)?;
        let full = if self.prefix.is_empty() { key.to_owned() } else { format!("{}/{key}", self.prefix) };
        Path::parse(&full).map_err(|e| StorageError::Invalid(format!("blob key {key:?}: {e}")))
    }

    fn failed(&self, what: &str, key: &str, e: object_store::Error) -> StorageError {
        StorageError::Backend(format!("{what} {key:?} in {}: {e}", self.describe))
    }
}

impl BlobStore for S3Blobs {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.put_with(key, bytes, &BlobMeta::default())
    }

    fn put_with(&self, key: &str, bytes: &[u8], meta: &BlobMeta) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let mut attributes = Attributes::new();
        if let Some(t) = &meta.content_type {
            attributes.insert(Attribute::ContentType, t.clone().into());
        }
        if let Some(d) = &meta.content_disposition {
            attributes.insert(Attribute::ContentDisposition, d.clone().into());
        }
        let opts = PutOptions { attributes, ..PutOptions::default() };
        let payload = PutPayload::from(bytes.to_vec());
        self.runtime
            .block_on(self.store.put_opts(&path, payload, opts))
            .map(drop)
            .map_err(|e| self.failed("storing", key, e))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.path(key)?;
        self.runtime.block_on(async {
            match self.store.get(&path).await {
                Ok(r) => r.bytes().await.map(|b| Some(b.to_vec())).map_err(|e| self.failed("reading", key, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.failed("reading", key, e)),
            }
        })
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("deleting", key, e)),
        }
    }

    fn presigned_get(&self, key: &str, valid_for: Duration) -> Result<Option<String>, StorageError> {
        let path = self.path(key)?;
        self.runtime
            .block_on(self.store.signed_url(http::Method::GET, &path, valid_for))
            .map(|u| Some(u.to_string()))
            .map_err(|e| self.failed("signing a link to", key, e))
    }
}
