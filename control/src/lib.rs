//! Tandem's control plane: accounts, tokens, document metadata, roles, sharing, rate limits,
//! and the REST API over a SQL store (SQLite by default, PostgreSQL at scale).
//!
//! It runs on a small tokio runtime of its own inside `tandem serve`, never on a monoio
//! core. The data plane reaches it through bounded queues: the cores hand it the HTTP
//! connections they do not serve ([`tandem_net::HttpHandoff`]) and ask it for access lists
//! ([`tandem_net::access::ControlLink`]); it pushes access changes to the cores
//! ([`tandem_net::DataPlane`]). It never touches a document's content, and the cores never
//! wait for it on the hot path: tokens are verified on the core without it.
//!
//! [`store`] holds the SQL, [`tokens`] the JWT and refresh tokens, [`password`] Argon2,
//! [`policy`] who may change what, [`api`] the routes, [`limits`] the rate limits,
//! [`outbox`] the events written with each change, [`bridge`] the queues to the cores.

pub mod api;
pub mod bridge;
pub mod error;
pub mod files;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod limits;
pub mod openapi;
pub mod outbox;
pub mod password;
pub mod policy;
pub mod search;
mod sqlite_list;
pub mod store;
pub mod tokens;
mod trace;
mod transport;
pub mod web;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tandem_net::access::Auth;
use tandem_net::{DataPlane, Hooks};

pub use error::{Error, Result};
pub use limits::RateLimits;
pub use store::Store;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A new random id: 128 bits, URL-safe base64 (22 chars).
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS has randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A new random id: 128 bits, lowercase hex (32 chars; a valid blob key and URL segment).
pub fn random_hex() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS has randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The control plane's configuration (`[control]` in the TOML file).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`; default: `tandem.db` in the
    /// data directory.
    pub database_url: Option<String>,
    /// The signing keys' file; default: `keys.json` in the data directory.
    pub keys_file: Option<PathBuf>,
    /// The key that signs export and upload links; default: `link-key` in the data
    /// directory. The nodes of a cluster share one (like `keys_file`), so that a link made
    /// through one node works through any.
    pub link_key_file: Option<PathBuf>,
    /// How long access tokens are valid, seconds.
    pub access_token_ttl_s: u64,
    /// How long refresh tokens are valid, days.
    pub refresh_token_ttl_days: u64,
    /// Mark cookies `Secure` (set it when clients reach Tandem over HTTPS; a request with
    /// `X-Forwarded-Proto: https` gets it anyway).
    pub secure_cookies: bool,
    /// Origins besides this server's own whose pages may make state-changing requests
    /// (filled from the server's `allowed_origins`).
    #[serde(skip)]
    pub allowed_origins: Vec<String>,
    /// Password hashes at once (each takes 19 MiB and ~30 ms of a core); 0: half the cores.
    pub password_hash_concurrency: usize,
    /// Password hashes waiting at most; more are answered 503 at once.
    pub password_hash_queue: usize,
    /// Threads of the control plane's runtime.
    pub threads: usize,
    /// HTTP connections served at once.
    pub max_http_connections: usize,
    /// Time allowed for a request head (and between requests on a kept-alive connection), ms.
    pub http_header_timeout_ms: u64,
    /// Rate limits.
    pub rate_limits: RateLimits,
    /// Exports and uploads (`[control.files]`).
    pub files: files::FilesConfig,
    /// The browser editor's build (`npm run build` in `web/` writes `web/app/dist`), served
    /// at `/`. Unset: `web/app/dist` under the working directory if it is there (otherwise
    /// `/` says how to build it); set: it must be there, or the server does not start.
    pub web_dir: Option<PathBuf>,
}

impl ControlConfig {
    /// Where the link-signing key is: `link_key_file`, else `link-key` in `data_dir`.
    pub fn link_key_path(&self, data_dir: &std::path::Path) -> PathBuf {
        self.link_key_file.clone().unwrap_or_else(|| data_dir.join("link-key"))
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            keys_file: None,
            link_key_file: None,
            access_token_ttl_s: 3600,
            refresh_token_ttl_days: 30,
            secure_cookies: false,
            allowed_origins: Vec::new(),
            password_hash_concurrency: 0,
            password_hash_queue: 64,
            threads: 2,
            max_http_connections: 10_000,
            http_header_timeout_ms: 10_000,
            rate_limits: RateLimits::default(),
            files: files::FilesConfig::default(),
            web_dir: None,
        }
    }
}

/// What the API's handlers share.
pub struct App {
    /// The SQL store.
    pub store: Store,
    /// The signing keys.
    pub keys: Arc<tokens::Keys>,
    /// Password hashing.
    pub passwords: password::Passwords,
    /// Rate limits.
    pub limits: limits::Limiters,
    /// The queues to the cores.
    pub bridge: bridge::Bridge,
    /// Settings.
    pub config: Settings,
    data: Arc<OnceLock<DataPlane>>,
    metrics: Option<Box<dyn Fn() -> String + Send + Sync>>,
    search: OnceLock<Arc<dyn search::SearchIndex>>,
    files: OnceLock<Arc<files::Files>>,
    web: Option<web::WebAssets>,
    /// In a cluster: which documents this node serves (requests about the others'
    /// comments are forwarded to their node).
    placement: OnceLock<Arc<dyn tandem_net::placement::Placement>>,
    /// In a cluster whose nodes terminate TLS: how this node reaches the others (whom it
    /// trusts).
    forward_tls: OnceLock<Arc<rustls::ClientConfig>>,
}

/// The settings the handlers read.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Exports and uploads.
    pub files: files::FilesConfig,
    /// See [`ControlConfig::secure_cookies`].
    pub secure_cookies: bool,
    /// See [`ControlConfig::allowed_origins`].
    pub allowed_origins: Vec<String>,
    /// How long refresh tokens are valid.
    pub refresh_ttl: Duration,
}

impl App {
    /// The handlers' state over a store (for tests that serve the API alone).
    pub async fn new(store: Store, keys: Arc<tokens::Keys>, config: &ControlConfig) -> Arc<Self> {
        let (bridge, _link, _rx) = bridge::Bridge::new(store.clone());
        Self::with_bridge(store, keys, config, bridge)
    }

    fn with_bridge(store: Store, keys: Arc<tokens::Keys>, config: &ControlConfig, bridge: bridge::Bridge) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let concurrency =
            if config.password_hash_concurrency == 0 { (cores / 2).max(1) } else { config.password_hash_concurrency };
        Arc::new(Self {
            store,
            keys,
            passwords: password::Passwords::new(concurrency, config.password_hash_queue),
            limits: limits::Limiters::new(&config.rate_limits),
            bridge,
            config: Settings {
                files: config.files.clone(),
                secure_cookies: config.secure_cookies,
                allowed_origins: config.allowed_origins.clone(),
                refresh_ttl: Duration::from_secs(config.refresh_token_ttl_days.saturating_mul(86_400)),
            },
            data: Arc::new(OnceLock::new()),
            metrics: None,
            search: OnceLock::new(),
            files: OnceLock::new(),
            web: None,
            placement: OnceLock::new(),
            forward_tls: OnceLock::new(),
        })
    }

    /// Serves `GET /api/search` from `index` (without one, search answers 503).
    pub fn set_search(&self, index: Arc<dyn search::SearchIndex>) {
        let _ = self.search.set(index);
    }

    /// The full-text index, when search is on.
    pub fn search(&self) -> Option<&Arc<dyn search::SearchIndex>> {
        self.search.get()
    }

    /// Connects the blob store (exports and uploads), once the server's URL is known.
    pub fn set_files(&self, files: Arc<files::Files>) {
        let _ = self.files.set(files);
    }

    /// The browser editor's files, when built.
    pub fn web(&self) -> Option<&web::WebAssets> {
        self.web.as_ref()
    }

    /// The blob store's side of the API, once connected.
    pub fn files(&self) -> Option<&Arc<files::Files>> {
        self.files.get()
    }
}

/// Lowers the calling thread's CPU priority (nice +19): the control plane's threads, Argon2
/// hashing included, then yield to the cores whenever both want the same CPU. Measured on a
/// one-CPU server during a login flood: data-plane ack p99 +29% at normal priority, +11% at
/// nice +10, within noise (0.96x) at nice +19.
fn lower_priority() {
    // SAFETY: `setpriority` takes no pointers; with PRIO_PROCESS and `who = 0` Linux applies
    // it to the calling thread only (nice values are per thread there). Failure (no
    // permission to change it) leaves the priority as it was, which is harmless.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
}

/// Where the editor's build is looked for when `web_dir` is not set.
pub const DEFAULT_WEB_DIR: &str = "web/app/dist";

/// Loads the editor's build: from `dir` (which must hold one), or from [`DEFAULT_WEB_DIR`]
/// when it is there.
fn load_web(dir: Option<&Path>) -> Result<Option<web::WebAssets>> {
    let (dir, required) = match dir {
        Some(d) => (d.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_WEB_DIR), false),
    };
    match web::WebAssets::load(&dir) {
        Ok(assets) => {
            tracing::info!("serving the editor from {} ({} files)", dir.display(), assets.len());
            Ok(Some(assets))
        }
        Err(e) if required => Err(Error::Config(format!("web_dir: {e}"))),
        Err(_) => {
            tracing::warn!(
                "the browser editor is not built ({DEFAULT_WEB_DIR} is missing): scripts/serve.sh builds it, \
                 or set [control] web_dir; the API and the WebSocket are served without it"
            );
            Ok(None)
        }
    }
}

/// The default database URL for a data directory.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("tandem.db").display())
}

/// Connects to the configured store and applies its migrations (`tandem migrate`).
pub fn migrate(config: &ControlConfig, data_dir: &Path) -> Result<(store::Engine, usize)> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::Config(e.to_string()))?;
    let url = config.database_url.clone().unwrap_or_else(|| default_database_url(data_dir));
    runtime.block_on(async {
        let store = Store::connect(&url).await?;
        let n = store.migrate().await?;
        store.close().await;
        Ok((store.engine(), n))
    })
}

/// A running control plane.
pub struct ControlPlane {
    runtime: tokio::runtime::Runtime,
    /// The metadata database (in a cluster, other nodes' access changes are heard there).
    url: String,
    app: Arc<App>,
    link: Arc<bridge::Link>,
    receiver: Option<bridge::Receiver>,
    handoff: Arc<transport::Handoff>,
    incoming: Option<transport::Incoming>,
    http: transport::HttpSettings,
}

impl ControlPlane {
    /// Starts the runtime, connects to the store (migrating it) and loads the signing keys.
    pub fn start(config: &ControlConfig, data_dir: &Path) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("tandem-control")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("starting the control runtime: {e}")))?;
        let url = config.database_url.clone().unwrap_or_else(|| default_database_url(data_dir));
        let store = runtime.block_on(async {
            let store = Store::connect(&url).await?;
            store.migrate().await?;
            Ok::<_, Error>(store)
        })?;
        let keys_path = config.keys_file.clone().unwrap_or_else(|| data_dir.join("keys.json"));
        let keys = Arc::new(tokens::Keys::load_or_create(&keys_path, Duration::from_secs(config.access_token_ttl_s))?);
        let (bridge, link, receiver) = bridge::Bridge::new(store.clone());
        let mut app = App::with_bridge(store, keys, config, bridge);
        Arc::get_mut(&mut app).expect("not shared yet").web = load_web(config.web_dir.as_deref())?;
        let (handoff, incoming) = transport::Handoff::new(config.max_http_connections);
        let data = Arc::clone(&app.data);
        Arc::get_mut(&mut app).expect("not shared yet").metrics =
            Some(Box::new(move || data.get().map(DataPlane::metrics).unwrap_or_default()));
        let http = transport::HttpSettings {
            header_timeout: Duration::from_millis(config.http_header_timeout_ms),
            max_connections: config.max_http_connections,
        };
        Ok(Self {
            runtime,
            url,
            app,
            link,
            receiver: Some(receiver),
            handoff: Arc::new(handoff),
            incoming: Some(incoming),
            http,
        })
    }

    /// What the data plane needs: token verification, the access-list link, and the HTTP
    /// handoff.
    pub fn hooks(&self) -> Hooks {
        Hooks {
            auth: Auth::Accounts(Arc::new(tokens::TokenVerifier(Arc::clone(&self.app.keys)))),
            control: Some(self.link.clone()),
            http: Some(self.handoff.clone()),
            metrics: None,
            feed: None,
            blobs: None,
            placement: None,
        }
    }

    /// In a cluster: the node's placement (REST calls about the notes of documents another
    /// node serves are forwarded there).
    pub fn set_placement(&self, placement: Arc<dyn tandem_net::placement::Placement>) {
        let _ = self.app.placement.set(placement);
    }

    /// In a cluster whose nodes terminate TLS: the client configuration REST calls are
    /// forwarded to other nodes with (`https://`).
    pub fn set_forward_tls(&self, config: Arc<rustls::ClientConfig>) {
        let _ = self.app.forward_tls.set(config);
    }

    /// The control plane's runtime (the workers run on it too).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// The handlers' shared state.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Connects the running data plane and starts serving.
    pub fn attach(&mut self, data: DataPlane) {
        let _ = self.app.data.set(data.clone());
        self.app.bridge.attach(data);
        if let Some(rx) = self.receiver.take() {
            self.runtime.spawn(self.app.bridge.clone().run(rx));
            if self.app.store.engine() == store::Engine::Postgres {
                // Other nodes' access changes, for the documents this node serves.
                self.runtime.spawn(self.app.bridge.clone().hear_access_changes(self.url.clone()));
            }
        }
        if let Some(incoming) = self.incoming.take() {
            let router = api::router(Arc::clone(&self.app));
            self.runtime.spawn(transport::serve(incoming, router, self.http.clone()));
        }
        let app = Arc::clone(&self.app);
        self.runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                app.limits.prune();
                n += 1;
                if n.is_multiple_of(360)
                    && let Err(e) = app.store.prune_refresh_tokens().await
                {
                    tracing::warn!("pruning refresh tokens: {e}");
                }
            }
        });
    }

    /// Connects the blob store for exports and uploads (`link_key`: the file of the key
    /// that signs their links, made if missing; `link_base`: the server's URL, for the
    /// links) and starts the lifecycle sweep.
    pub fn attach_files(
        &self,
        blobs: Arc<dyn tandem_storage::BlobStore>,
        link_key: &Path,
        link_base: &str,
    ) -> Result<Arc<files::Files>> {
        let files = Arc::new(files::Files {
            blobs,
            signer: files::LinkSigner::load_or_create(link_key)?,
            config: self.app.config.files.clone(),
            link_base: link_base.to_owned(),
        });
        self.app.set_files(Arc::clone(&files));
        self.runtime.spawn(Arc::clone(&files).sweep_forever(self.app.store.clone()));
        Ok(files)
    }

    /// Stops the runtime (after the data plane has stopped).
    pub fn shutdown(self) {
        let store = self.app.store.clone();
        self.runtime.block_on(store.close());
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}
