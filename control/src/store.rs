//! The control plane's SQL store: users, refresh tokens, documents, roles, invitations and
//! the outbox, on SQLite (the default, a file in the data directory, WAL mode) or PostgreSQL.
//!
//! One set of queries serves both engines through sqlx's `Any` driver (`$1` placeholders,
//! portable types: TEXT and BIGINT). Each engine has its own migration directory, kept
//! equivalent by a test. On SQLite, writes go through a pool of one connection (SQLite has
//! one writer; a second would only wait for the lock or fail to upgrade a read transaction),
//! reads through several.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Row, SqlStr};
use tandem_net::access::AccessList;
use tandem_net::protocol::Role;

mod activity;
mod files;
pub use files::{Export, ExportStatus, Finished, Upload, export_key, upload_key};

pub use activity::{ACTIVE_GAP_MS, Counted, DayActivity, EditRecord, OpenRecord, UsageRecord, UserActivity, day_of};

use crate::error::{Error, Result};
use crate::outbox::{Event, OutboxRow, SCHEMA_VERSION};
use crate::sqlite_list::ListReader;
use crate::{now_ms, random_id};

impl tandem_events::relay::Outbox for Store {
    async fn unsent(&self, limit: u32) -> std::result::Result<Vec<(i64, tandem_events::Message)>, String> {
        self.unsent_messages(limit).await.map_err(|e| e.to_string())
    }

    async fn mark_sent(&self, seq: i64) -> std::result::Result<(), String> {
        Self::mark_sent(self, seq).await.map_err(|e| e.to_string())
    }
}

impl tandem_events::feed::Cursors for Store {
    async fn save(&self, cursors: &[(String, u64)]) -> std::result::Result<(), String> {
        self.save_feed_cursors(cursors).await.map_err(|e| e.to_string())
    }

    async fn get(&self, docs: &[String]) -> std::result::Result<Vec<(String, u64)>, String> {
        self.feed_cursors_of(docs).await.map_err(|e| e.to_string())
    }
}

/// SQLite connections for reads (besides the one writer).
const READERS: usize = 4;

/// Most documents in one page of [`Store::documents_for`].
pub const MAX_PAGE: u32 = 1000;

/// Which engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// SQLite (one file).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The migrations of one engine, in order.
fn migrations(engine: Engine) -> Vec<Migration> {
    let files: &[(i64, &str, &'static str)] = match engine {
        Engine::Sqlite => &[
            (1, "accounts documents", include_str!("../migrations/sqlite/0001_accounts_documents.sql")),
            (2, "workers", include_str!("../migrations/sqlite/0002_workers.sql")),
            (3, "analytics", include_str!("../migrations/sqlite/0003_analytics.sql")),
            (4, "files", include_str!("../migrations/sqlite/0004_files.sql")),
        ],
        Engine::Postgres => &[
            (1, "accounts documents", include_str!("../migrations/postgres/0001_accounts_documents.sql")),
            (2, "workers", include_str!("../migrations/postgres/0002_workers.sql")),
            (3, "analytics", include_str!("../migrations/postgres/0003_analytics.sql")),
            (4, "files", include_str!("../migrations/postgres/0004_files.sql")),
        ],
    };
    files
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(version, description.into(), MigrationType::Simple, SqlStr::from_static(sql), false)
        })
        .collect()
}

/// A user account (never with its password hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user's id.
    pub id: String,
    /// Normalized email address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// When the account was made, ms since the Unix epoch.
    pub created_ms: i64,
}

/// A document's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The server-made id (URL-safe).
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its owner's user id.
    pub owner_id: String,
    /// Created, ms since the Unix epoch.
    pub created_ms: i64,
    /// Last edited or renamed, ms since the Unix epoch.
    pub updated_ms: i64,
    /// The role of anyone signed in with the link (none: link sharing is off).
    pub link_role: Option<Role>,
    /// Editors may share it too (otherwise only the owner may).
    pub editors_can_share: bool,
    /// The version of its access list.
    pub acl_version: i64,
}

/// A document as one user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentView {
    /// The document.
    pub doc: Document,
    /// The user's role on it: their own, or the link's, whichever is more.
    pub role: Role,
    /// Their own role (none when they reach it only through the link): sharing and
    /// ownership decisions go by this one.
    pub own: Option<Role>,
}

/// One page of a user's documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The documents, most recently edited first.
    pub docs: Vec<DocumentView>,
    /// Where the next page starts (none: this was the last).
    pub next: Option<Cursor>,
}

/// A position in a user's document list: (updated time, id) of the last one seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Its `updated_ms`.
    pub updated_ms: i64,
    /// Its id.
    pub id: String,
}

/// What presenting a refresh token did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// It was valid and is now used: a new one of the same family may be issued.
    Rotated {
        /// Whose.
        user: User,
        /// The family.
        family: String,
    },
    /// It had been used before: its whole family is now revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

/// Someone's role on a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    /// Who.
    pub user: User,
    /// Their role.
    pub role: Role,
}

/// A share waiting for its address to sign up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    /// The address.
    pub email: String,
    /// The role it will get.
    pub role: Role,
    /// When it was made, ms since the Unix epoch.
    pub created_ms: i64,
}

/// What a share did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareOutcome {
    /// The address has an account: it has the role now.
    Granted(User),
    /// It has none: the role applies when it signs up.
    Invited,
}

/// What [`Store::claim_event`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Never seen: go ahead.
    Fresh,
    /// Started before and not finished (this is attempt `attempts + 1`).
    Unfinished {
        /// Attempts before this one.
        attempts: u32,
    },
    /// Done: do nothing.
    Done,
}

/// A message a worker gave up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The worker (its consumer group).
    pub worker: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The event's id, when it could be read.
    pub event_id: Option<String>,
    /// The message as published (lossy UTF-8).
    pub payload: String,
    /// Why it was given up.
    pub reason: String,
}

/// A new user and the documents whose access lists their invitations changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedUp {
    /// The account.
    pub user: User,
    /// Documents shared with the address before it signed up.
    pub invited_to: Vec<String>,
}

/// The PostgreSQL channel access changes are announced on, for the other nodes of a cluster.
pub const ACCESS_CHANNEL: &str = "tandem_access";

/// The metadata store.
#[derive(Clone, Debug)]
pub struct Store {
    engine: Engine,
    read: AnyPool,
    write: AnyPool,
    /// SQLite only: the document list's direct read path.
    list: Option<Arc<ListReader>>,
}

pub(crate) fn role_from(name: &str) -> Result<Role> {
    Role::parse(name).ok_or_else(|| Error::Corrupt(format!("unknown role {name:?} in the database")))
}

fn user_from(row: &AnyRow, prefix: &str) -> Result<User> {
    let col = |c: &str| format!("{prefix}{c}");
    Ok(User {
        id: row.try_get(col("id").as_str())?,
        email: row.try_get(col("email").as_str())?,
        name: row.try_get(col("name").as_str())?,
        created_ms: row.try_get(col("created_ms").as_str())?,
    })
}

fn document_from(row: &AnyRow) -> Result<Document> {
    let link: Option<String> = row.try_get("link_role")?;
    Ok(Document {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        owner_id: row.try_get("owner_id")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        link_role: link.as_deref().map(role_from).transpose()?,
        editors_can_share: row.try_get::<i64, _>("editors_can_share")? != 0,
        acl_version: row.try_get("acl_version")?,
    })
}

/// Writes an event to the outbox inside the caller's transaction.
async fn outbox(tx: &mut sqlx::AnyConnection, event: &Event, now: i64) -> Result<()> {
    let payload = serde_json::to_string(event).expect("events serialize");
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, kind, schema_version, doc_id, payload, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(random_id())
    .bind(event.topic().name())
    .bind(event.kind())
    .bind(SCHEMA_VERSION)
    .bind(event.doc())
    .bind(payload)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Appends `events` (each with its time) to the outbox in order, many rows per statement.
async fn outbox_many(tx: &mut sqlx::AnyConnection, events: &[(Event, i64)]) -> Result<()> {
    for chunk in events.chunks(100) {
        let sql = format!(
            "INSERT INTO outbox (event_id, topic, kind, schema_version, doc_id, payload, created_ms) VALUES {}",
            value_rows(chunk.len(), 7, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (event, at_ms) in chunk {
            let payload = serde_json::to_string(event).expect("events serialize");
            query = query
                .bind(random_id())
                .bind(event.topic().name())
                .bind(event.kind())
                .bind(SCHEMA_VERSION)
                .bind(event.doc().to_owned())
                .bind(payload)
                .bind(*at_ms);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// A user's own role on a document (none: no permission row).
async fn own_role(conn: &mut sqlx::AnyConnection, doc: &str, user: &str) -> Result<Option<Role>> {
    let role: Option<String> = sqlx::query("SELECT role FROM permissions WHERE doc_id = $1 AND user_id = $2")
        .bind(doc)
        .bind(user)
        .fetch_optional(conn)
        .await?
        .map(|r| r.try_get("role"))
        .transpose()?;
    role.as_deref().map(role_from).transpose()
}

/// Gives `user` `role` on `doc` (inside the caller's transaction); `doc_updated_ms` places
/// the document in the user's list.
async fn insert_permission(
    tx: &mut sqlx::AnyConnection,
    doc: &str,
    user: &str,
    role: Role,
    doc_updated_ms: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO permissions (doc_id, user_id, role, doc_updated_ms, created_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(doc)
    .bind(user)
    .bind(role.as_str())
    .bind(doc_updated_ms)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Bumps a document's access-list version (inside the caller's transaction).
async fn bump_acl(tx: &mut sqlx::AnyConnection, doc: &str) -> Result<()> {
    sqlx::query("UPDATE documents SET acl_version = acl_version + 1 WHERE id = $1").bind(doc).execute(&mut *tx).await?;
    Ok(())
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`), creating a SQLite file when
    /// missing. Migrations are not run: see [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres
        } else {
            // Not the URL itself: it may hold a password.
            let scheme = url.split(':').next().unwrap_or("");
            return Err(Error::Config(format!(
                "the database URL must start with sqlite: or postgres:, not {scheme:?}:"
            )));
        };
        let timeout = Duration::from_secs(10);
        match engine {
            Engine::Sqlite => {
                let path = sqlite_path(url)?;
                let url = if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") };
                let setup = sqlite_setup;
                let write = AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(timeout)
                    .after_connect(setup)
                    .connect(&url)
                    .await?;
                let read = AnyPoolOptions::new()
                    .max_connections(READERS as u32)
                    .acquire_timeout(timeout)
                    .after_connect(setup)
                    .connect(&url)
                    .await?;
                let list = Some(Arc::new(ListReader::new(path, READERS)));
                Ok(Self { engine, read, write, list })
            }
            Engine::Postgres => {
                let pool = AnyPoolOptions::new().max_connections(16).acquire_timeout(timeout).connect(url).await?;
                Ok(Self { engine, read: pool.clone(), write: pool, list: None })
            }
        }
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Applies the migrations not applied yet; returns how many ran.
    pub async fn migrate(&self) -> Result<usize> {
        let migrator = Migrator::with_migrations(migrations(self.engine));
        let mut conn = self.write.acquire().await?;
        let before = applied(&mut conn).await;
        migrator.run(&mut *conn).await.map_err(|e| Error::Migrate(e.to_string()))?;
        let after = applied(&mut conn).await;
        Ok(after.saturating_sub(before))
    }

    /// Closes the pools.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    // ---- users ----

    /// Creates a user; pending invitations for the address become roles.
    pub async fn create_user(&self, email: &str, name: &str, password_hash: &str) -> Result<SignedUp> {
        let now = now_ms();
        let id = format!("u{}", random_id());
        let mut tx = self.write.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&id)
        .bind(email)
        .bind(name)
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await;
        if let Err(sqlx::Error::Database(e)) = &inserted
            && e.is_unique_violation()
        {
            return Err(Error::EmailTaken);
        }
        inserted?;
        let invites = sqlx::query(
            "SELECT i.doc_id, i.role, i.invited_by, d.updated_ms FROM invitations i \
             JOIN documents d ON d.id = i.doc_id WHERE i.email = $1 AND d.deleted_ms IS NULL",
        )
        .bind(email)
        .fetch_all(&mut *tx)
        .await?;
        let mut invited_to = Vec::new();
        for row in invites {
            let doc: String = row.try_get("doc_id")?;
            let role: String = row.try_get("role")?;
            let by: String = row.try_get("invited_by")?;
            let updated: i64 = row.try_get("updated_ms")?;
            let role = role_from(&role)?;
            insert_permission(&mut tx, &doc, &id, role, updated, now).await?;
            bump_acl(&mut tx, &doc).await?;
            let event = Event::RoleChanged { doc: doc.clone(), user: id.clone(), role: Some(role), by };
            outbox(&mut tx, &event, now).await?;
            invited_to.push(doc);
        }
        sqlx::query("DELETE FROM invitations WHERE email = $1").bind(email).execute(&mut *tx).await?;
        tx.commit().await?;
        let user = User { id, email: email.to_owned(), name: name.to_owned(), created_ms: now };
        Ok(SignedUp { user, invited_to })
    }

    /// A user and their password hash, by email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query("SELECT id, email, name, created_ms, password_hash FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((user_from(&r, "")?, r.try_get("password_hash")?))).transpose()
    }

    /// A user and their password hash, by id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query("SELECT id, email, name, created_ms, password_hash FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((user_from(&r, "")?, r.try_get("password_hash")?))).transpose()
    }

    /// Sets a user's password hash and revokes all their refresh tokens (every other
    /// session must sign in again).
    pub async fn set_password(&self, user: &str, password_hash: &str) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1, updated_ms = $2 WHERE id = $3")
            .bind(password_hash)
            .bind(now)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE refresh_tokens SET revoked_ms = $1 WHERE user_id = $2 AND revoked_ms IS NULL")
            .bind(now)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- refresh tokens ----

    /// Stores a refresh token's hash (of a new family, or of `family` when rotating).
    ///
    /// Written without waiting for the disk (SQLite `synchronous = NORMAL`, PostgreSQL
    /// `synchronous_commit = off` for this one write): a refresh token is session state, and
    /// losing the last ones to a power cut only signs those users out, while an `fsync` per
    /// login competed with the op log's for the disk (measured: ack p99 +31% during a login
    /// flood). The next durable commit makes it durable too. Never corrupts: both engines
    /// keep the database consistent either way.
    pub async fn add_refresh_token(&self, hash: &str, family: &str, user: &str, expires_ms: i64) -> Result<()> {
        let (store, hash, family, user) = (self.clone(), hash.to_owned(), family.to_owned(), user.to_owned());
        // Spawned: a dropped request must not stop it between the two pragmas and leave the
        // writer connection without synchronous = FULL.
        tokio::spawn(async move {
            let mut conn = store.write.acquire().await?;
            let insert = sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family, user_id, created_ms, expires_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(hash)
            .bind(family)
            .bind(user)
            .bind(now_ms())
            .bind(expires_ms);
            match store.engine {
                Engine::Sqlite => {
                    sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    let inserted = insert.execute(&mut *conn).await;
                    let restored = sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await;
                    if restored.is_err() {
                        // Never hand the writer back in the lazy mode.
                        conn.close_on_drop();
                    }
                    inserted?;
                    restored?;
                }
                Engine::Postgres => {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
                    insert.execute(&mut *tx).await?;
                    tx.commit().await?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Invalid(format!("storing the refresh token stopped: {e}")))?
    }

    /// Presents a refresh token (by hash): when it is valid, marks it used and stores its
    /// successor (`next_hash`, same family, valid until `next_expires_ms`) in the same
    /// transaction; when it was used before, revokes its family.
    pub async fn use_refresh_token(&self, hash: &str, next_hash: &str, next_expires_ms: i64) -> Result<RefreshOutcome> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let used = sqlx::query(
            "UPDATE refresh_tokens SET used_ms = $1 WHERE token_hash = $2 AND used_ms IS NULL \
             AND revoked_ms IS NULL AND expires_ms > $1 RETURNING user_id, family",
        )
        .bind(now)
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = used {
            let user_id: String = row.try_get("user_id")?;
            let family: String = row.try_get("family")?;
            let user = sqlx::query("SELECT id, email, name, created_ms FROM users WHERE id = $1")
                .bind(&user_id)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family, user_id, created_ms, expires_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(next_hash)
            .bind(&family)
            .bind(&user_id)
            .bind(now)
            .bind(next_expires_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Rotated { user: user_from(&user, "")?, family });
        }
        let known = sqlx::query("SELECT family, used_ms FROM refresh_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match known {
            Some(row) if row.try_get::<Option<i64>, _>("used_ms")?.is_some() => {
                // A used token again: it was stolen, or the client lost a race with itself.
                // Either way nobody may keep using the family.
                let family: String = row.try_get("family")?;
                sqlx::query("UPDATE refresh_tokens SET revoked_ms = $1 WHERE family = $2 AND revoked_ms IS NULL")
                    .bind(now)
                    .bind(&family)
                    .execute(&mut *tx)
                    .await?;
                RefreshOutcome::Reused
            }
            _ => RefreshOutcome::Invalid,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Revokes the family of a refresh token (log out); false when the token is unknown.
    pub async fn revoke_refresh_family(&self, hash: &str) -> Result<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_ms = $1 WHERE revoked_ms IS NULL AND family = \
             (SELECT family FROM refresh_tokens WHERE token_hash = $2)",
        )
        .bind(now)
        .bind(hash)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes refresh tokens expired for more than a day; returns how many.
    pub async fn prune_refresh_tokens(&self) -> Result<u64> {
        let cutoff = now_ms() - 86_400_000;
        let done =
            sqlx::query("DELETE FROM refresh_tokens WHERE expires_ms < $1").bind(cutoff).execute(&self.write).await?;
        Ok(done.rows_affected())
    }

    // ---- documents ----

    /// Creates a document owned by `owner`.
    pub async fn create_document(&self, owner: &str, title: &str) -> Result<Document> {
        let now = now_ms();
        let id = random_id();
        let mut tx = self.write.begin().await?;
        sqlx::query("INSERT INTO documents (id, title, owner_id, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $4)")
            .bind(&id)
            .bind(title)
            .bind(owner)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_permission(&mut tx, &id, owner, Role::Owner, now, now).await?;
        let event = Event::DocumentCreated { doc: id.clone(), title: title.to_owned(), owner: owner.to_owned() };
        outbox(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(Document {
            id,
            title: title.to_owned(),
            owner_id: owner.to_owned(),
            created_ms: now,
            updated_ms: now,
            link_role: None,
            editors_can_share: false,
            acl_version: 1,
        })
    }

    /// A document (not deleted), whoever asks.
    pub async fn document(&self, id: &str) -> Result<Option<Document>> {
        let row = sqlx::query(
            "SELECT id, title, owner_id, created_ms, updated_ms, link_role, editors_can_share, acl_version \
             FROM documents WHERE id = $1 AND deleted_ms IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(document_from).transpose()
    }

    /// A document as `user` sees it: none when it does not exist or they may not read it
    /// (the two are not told apart).
    pub async fn document_for(&self, id: &str, user: &str) -> Result<Option<DocumentView>> {
        let Some(doc) = self.document(id).await? else { return Ok(None) };
        let own = own_role(&mut *self.read.acquire().await?, id, user).await?;
        Ok(own.max(doc.link_role).map(|role| DocumentView { doc, role, own }))
    }

    /// The documents `user` has a role on, most recently edited first, `limit` at a time.
    pub async fn documents_for(&self, user: &str, after: Option<&Cursor>, limit: u32) -> Result<Page> {
        let limit = limit.clamp(1, MAX_PAGE);
        if let Some(list) = &self.list {
            return list.documents_for(user, after, limit).await;
        }
        // `limit` is our own integer written into the text (see `list_sql`): no injection.
        let sql = AssertSqlSafe(list_sql(after.is_some(), u64::from(limit)));
        let limit = i64::from(limit);
        let rows = match after {
            None => sqlx::query(sql).bind(user).fetch_all(&self.read).await?,
            Some(c) => sqlx::query(sql).bind(user).bind(c.updated_ms).bind(&c.id).fetch_all(&self.read).await?,
        };
        let more = rows.len() as i64 > limit;
        let mut docs = Vec::with_capacity(rows.len());
        let mut next = None;
        for row in rows.iter().take(limit as usize) {
            let role: String = row.try_get("role")?;
            let doc = document_from(row)?;
            next = Some(Cursor { updated_ms: row.try_get("doc_updated_ms")?, id: doc.id.clone() });
            let role = role_from(&role)?;
            docs.push(DocumentView { doc, role, own: Some(role) });
        }
        Ok(Page { docs, next: if more { next } else { None } })
    }

    /// Renames a document.
    pub async fn rename_document(&self, id: &str, title: &str, by: &str) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let done = sqlx::query("UPDATE documents SET title = $1, updated_ms = $2 WHERE id = $3 AND deleted_ms IS NULL")
            .bind(title)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        sqlx::query("UPDATE permissions SET doc_updated_ms = $1 WHERE doc_id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let event = Event::DocumentRenamed { doc: id.to_owned(), title: title.to_owned(), by: by.to_owned() };
        outbox(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes link sharing and who may share.
    pub async fn set_sharing(
        &self,
        id: &str,
        link_role: Option<Option<Role>>,
        editors_can_share: Option<bool>,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        if let Some(link) = link_role {
            sqlx::query("UPDATE documents SET link_role = $1 WHERE id = $2 AND deleted_ms IS NULL")
                .bind(link.map(Role::as_str))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            bump_acl(&mut tx, id).await?;
        }
        if let Some(flag) = editors_can_share {
            sqlx::query("UPDATE documents SET editors_can_share = $1 WHERE id = $2 AND deleted_ms IS NULL")
                .bind(i64::from(flag))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a document: its row stays as a tombstone (its id never opens again), its
    /// roles and invitations go.
    pub async fn delete_document(&self, id: &str, by: &str) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE documents SET deleted_ms = $1, acl_version = acl_version + 1 WHERE id = $2 AND deleted_ms IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        sqlx::query("DELETE FROM permissions WHERE doc_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM invitations WHERE doc_id = $1").bind(id).execute(&mut *tx).await?;
        outbox(&mut tx, &Event::DocumentDeleted { doc: id.to_owned(), by: by.to_owned() }, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records edits: documents' `updated_ms` (and their listing order) move to `at`.
    pub async fn touch_documents(&self, ids: &[String], at: i64) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for id in ids {
            sqlx::query("UPDATE documents SET updated_ms = $1 WHERE id = $2 AND updated_ms < $1")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE permissions SET doc_updated_ms = $1 WHERE doc_id = $2 AND doc_updated_ms < $1")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// In a cluster (PostgreSQL): tells every node that `doc`'s access list changed (the
    /// node serving it pushes the new list to its core; see `Bridge::hear_access_changes`).
    /// `origin` names this process, so that it skips its own news. Nothing on SQLite.
    pub async fn notify_access(&self, origin: &str, doc: &str) -> Result<()> {
        if self.engine != Engine::Postgres {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ACCESS_CHANNEL)
            .bind(format!("{origin} {doc}"))
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// A document's access list, for its owner core.
    pub async fn access_list(&self, id: &str) -> Result<Option<AccessList>> {
        let Some(doc) = self.document(id).await? else { return Ok(None) };
        let rows = sqlx::query("SELECT user_id, role FROM permissions WHERE doc_id = $1")
            .bind(id)
            .fetch_all(&self.read)
            .await?;
        let mut roles = HashMap::with_capacity(rows.len());
        for row in rows {
            let user: String = row.try_get("user_id")?;
            let role: String = row.try_get("role")?;
            roles.insert(Arc::from(user.as_str()), role_from(&role)?);
        }
        let version = u64::try_from(doc.acl_version).unwrap_or(0);
        Ok(Some(AccessList { version, roles, link: doc.link_role }))
    }

    /// Records that a comment by `by` in thread `thread` of `doc` mentions `users`: one
    /// `mentioned` event (for the notification worker) per user who has a role on the
    /// document; others are skipped. Returns how many were notified.
    pub async fn record_mentions(
        &self,
        doc: &str,
        by: &str,
        by_name: &str,
        users: &[String],
        thread: u64,
        text: &str,
    ) -> Result<usize> {
        let Some(document) = self.document(doc).await? else { return Ok(0) };
        let excerpt: String = text.chars().take(500).collect();
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let mut notified = 0;
        for user in users {
            let row = sqlx::query(
                "SELECT u.email FROM permissions p JOIN users u ON u.id = p.user_id WHERE p.doc_id = $1 AND p.user_id = $2",
            )
            .bind(doc)
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { continue };
            let event = Event::Mentioned {
                doc: doc.to_owned(),
                title: document.title.clone(),
                by: by.to_owned(),
                by_name: by_name.to_owned(),
                user: user.clone(),
                email: row.try_get("email")?,
                thread,
                excerpt: excerpt.clone(),
            };
            outbox(&mut tx, &event, now).await?;
            notified += 1;
        }
        tx.commit().await?;
        Ok(notified)
    }

    // ---- sharing ----

    /// Gives the account with `email` a role, or records an invitation for the address.
    /// Never changes the owner's role, and never grants `owner` (see [`Store::transfer`]).
    pub async fn share(&self, doc: &Document, by: &User, email: &str, role: Role) -> Result<ShareOutcome> {
        if role == Role::Owner {
            return Err(Error::Invalid("a document has one owner: transfer ownership instead".into()));
        }
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let target = sqlx::query("SELECT id, email, name, created_ms FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match target {
            Some(row) => {
                let user = user_from(&row, "")?;
                if user.id == doc.owner_id {
                    return Err(Error::Invalid("that is the document's owner".into()));
                }
                // Never the owner's row, even if ownership moved since `doc` was read.
                let updated = sqlx::query(
                    "UPDATE permissions SET role = $1 WHERE doc_id = $2 AND user_id = $3 AND role <> 'owner'",
                )
                .bind(role.as_str())
                .bind(&doc.id)
                .bind(&user.id)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    insert_permission(&mut tx, &doc.id, &user.id, role, doc.updated_ms, now).await?;
                }
                bump_acl(&mut tx, &doc.id).await?;
                let event = Event::RoleChanged {
                    doc: doc.id.clone(),
                    user: user.id.clone(),
                    role: Some(role),
                    by: by.id.clone(),
                };
                outbox(&mut tx, &event, now).await?;
                ShareOutcome::Granted(user)
            }
            None => {
                let updated = sqlx::query("UPDATE invitations SET role = $1 WHERE doc_id = $2 AND email = $3")
                    .bind(role.as_str())
                    .bind(&doc.id)
                    .bind(email)
                    .execute(&mut *tx)
                    .await?;
                if updated.rows_affected() == 0 {
                    sqlx::query(
                        "INSERT INTO invitations (doc_id, email, role, invited_by, created_ms) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&doc.id)
                    .bind(email)
                    .bind(role.as_str())
                    .bind(&by.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                ShareOutcome::Invited
            }
        };
        let event = Event::DocumentShared {
            doc: doc.id.clone(),
            title: doc.title.clone(),
            by: by.id.clone(),
            by_name: by.name.clone(),
            email: email.to_owned(),
            role,
            user: match &outcome {
                ShareOutcome::Granted(u) => Some(u.id.clone()),
                ShareOutcome::Invited => None,
            },
        };
        outbox(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Everyone with a role on a document, and its pending invitations.
    pub async fn permissions(&self, doc: &str) -> Result<(Vec<Permission>, Vec<Invitation>)> {
        let rows = sqlx::query(
            "SELECT u.id, u.email, u.name, u.created_ms, p.role FROM permissions p JOIN users u ON u.id = p.user_id \
             WHERE p.doc_id = $1 ORDER BY p.created_ms, u.id",
        )
        .bind(doc)
        .fetch_all(&self.read)
        .await?;
        let perms = rows
            .iter()
            .map(|r| Ok(Permission { user: user_from(r, "")?, role: role_from(&r.try_get::<String, _>("role")?)? }))
            .collect::<Result<Vec<_>>>()?;
        let rows =
            sqlx::query("SELECT email, role, created_ms FROM invitations WHERE doc_id = $1 ORDER BY created_ms, email")
                .bind(doc)
                .fetch_all(&self.read)
                .await?;
        let invites = rows
            .iter()
            .map(|r| {
                Ok(Invitation {
                    email: r.try_get("email")?,
                    role: role_from(&r.try_get::<String, _>("role")?)?,
                    created_ms: r.try_get("created_ms")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((perms, invites))
    }

    /// Sets (`Some`) or revokes (`None`) a user's role. The owner's role changes only by
    /// [`Store::transfer`]. Returns false when the user had no role and none is set.
    pub async fn set_role(&self, doc: &str, user: &str, role: Option<Role>, by: &str) -> Result<bool> {
        if role == Some(Role::Owner) {
            return Err(Error::Invalid("a document has one owner: transfer ownership instead".into()));
        }
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        match (own_role(&mut tx, doc, user).await?, role) {
            (Some(Role::Owner), _) => return Err(Error::Invalid("the owner's role changes only by a transfer".into())),
            (None, _) => return Ok(false),
            (Some(_), Some(role)) => {
                sqlx::query("UPDATE permissions SET role = $1 WHERE doc_id = $2 AND user_id = $3")
                    .bind(role.as_str())
                    .bind(doc)
                    .bind(user)
                    .execute(&mut *tx)
                    .await?;
            }
            (Some(_), None) => {
                sqlx::query("DELETE FROM permissions WHERE doc_id = $1 AND user_id = $2")
                    .bind(doc)
                    .bind(user)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        bump_acl(&mut tx, doc).await?;
        let event = Event::RoleChanged { doc: doc.to_owned(), user: user.to_owned(), role, by: by.to_owned() };
        outbox(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Withdraws an invitation; false when there was none.
    pub async fn withdraw_invitation(&self, doc: &str, email: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM invitations WHERE doc_id = $1 AND email = $2")
            .bind(doc)
            .bind(email)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Makes `to` (who must already have a role) the owner; the old owner becomes an
    /// editor.
    pub async fn transfer(&self, doc: &Document, to: &str) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        if own_role(&mut tx, &doc.id, to).await?.is_none() {
            return Err(Error::Invalid("share the document with the new owner first".into()));
        }
        sqlx::query("UPDATE permissions SET role = 'editor' WHERE doc_id = $1 AND user_id = $2")
            .bind(&doc.id)
            .bind(&doc.owner_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE permissions SET role = 'owner' WHERE doc_id = $1 AND user_id = $2")
            .bind(&doc.id)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE documents SET owner_id = $1 WHERE id = $2")
            .bind(to)
            .bind(&doc.id)
            .execute(&mut *tx)
            .await?;
        bump_acl(&mut tx, &doc.id).await?;
        for (user, role) in [(to, Role::Owner), (doc.owner_id.as_str(), Role::Editor)] {
            let event = Event::RoleChanged {
                doc: doc.id.clone(),
                user: user.to_owned(),
                role: Some(role),
                by: doc.owner_id.clone(),
            };
            outbox(&mut tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- outbox ----

    /// Outbox rows not yet published, in order, at most `limit`.
    pub async fn unsent_events(&self, limit: u32) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            // A literal LIMIT, as in `documents_for`.
            AssertSqlSafe(format!(
                "SELECT seq, event_id, topic, schema_version, payload, created_ms, sent_ms FROM outbox \
                 WHERE sent_ms IS NULL ORDER BY seq LIMIT {}",
                limit.clamp(1, 100_000)
            )),
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.try_get("payload")?;
                Ok(OutboxRow {
                    seq: r.try_get("seq")?,
                    event_id: r.try_get("event_id")?,
                    topic: r.try_get("topic")?,
                    schema_version: r.try_get("schema_version")?,
                    event: serde_json::from_str(&payload).map_err(|e| Error::Corrupt(format!("outbox event: {e}")))?,
                    created_ms: r.try_get("created_ms")?,
                    sent_ms: r.try_get("sent_ms")?,
                })
            })
            .collect()
    }

    /// Marks outbox rows up to `seq` as published.
    pub async fn mark_sent(&self, up_to_seq: i64) -> Result<()> {
        sqlx::query("UPDATE outbox SET sent_ms = $1 WHERE seq <= $2 AND sent_ms IS NULL")
            .bind(now_ms())
            .bind(up_to_seq)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Outbox rows not yet published as the bus's messages: (seq, message). The payload is
    /// not parsed here: a row no consumer can read is still published (and dead-lettered by
    /// its consumer), so it cannot hold up the rows behind it.
    pub async fn unsent_messages(&self, limit: u32) -> Result<Vec<(i64, tandem_events::Message)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT seq, event_id, topic, schema_version, doc_id, payload, created_ms FROM outbox \
             WHERE sent_ms IS NULL ORDER BY seq LIMIT {}",
            limit.clamp(1, 100_000)
        )))
        .fetch_all(&self.read)
        .await?;
        let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq")?;
                let topic: String = r.try_get("topic")?;
                let topic = tandem_events::Topic::parse(&topic)
                    .ok_or_else(|| Error::Corrupt(format!("outbox row {seq} names an unknown topic {topic:?}")))?;
                let key: Option<String> = r.try_get("doc_id")?;
                let key = key.unwrap_or_default();
                let payload: String = r.try_get("payload")?;
                let envelope = format!(
                    r#"{{"schema":{},"id":{},"topic":{},"key":{},"at_ms":{},"event":{}}}"#,
                    r.try_get::<i64, _>("schema_version")?,
                    quote(&r.try_get::<String, _>("event_id")?),
                    quote(topic.name()),
                    quote(&key),
                    r.try_get::<i64, _>("created_ms")?,
                    payload
                );
                Ok((seq, tandem_events::Message { topic, key, payload: envelope.into_bytes() }))
            })
            .collect()
    }

    // ---- search ----

    /// The documents `user` may read (has a role on, not deleted), when `user` has roles on at
    /// most `max` documents (deleted ones counted); `None` when there are more.
    pub async fn readable_ids(&self, user: &str, max: usize) -> Result<Option<Vec<String>>> {
        // Counted on the permissions index alone first: a caller with thousands of documents
        // is answered without reading them (the search then checks candidates instead).
        let roles: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM (SELECT 1 FROM permissions WHERE user_id = $1 LIMIT {}) roles",
            max + 1
        )))
        .bind(user)
        .fetch_one(&self.read)
        .await?;
        if usize::try_from(roles).unwrap_or(usize::MAX) > max {
            return Ok(None);
        }
        // One row with the ids joined (ids are base64url: no spaces), not a row per id: each
        // row through sqlx's `Any` driver costs microseconds, a search's access list
        // thousands of them.
        let join = self.joined_ids("doc_id");
        let (joined, n): (Option<String>, i64) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {join}, count(*) FROM (SELECT p.doc_id FROM permissions p JOIN documents d ON d.id = p.doc_id \
             WHERE p.user_id = $1 AND d.deleted_ms IS NULL LIMIT {}) readable",
            max + 1
        )))
        .bind(user)
        .fetch_one(&self.read)
        .await?;
        if usize::try_from(n).unwrap_or(usize::MAX) > max {
            return Ok(None);
        }
        Ok(Some(joined.map(|j| j.split(' ').map(str::to_owned).collect()).unwrap_or_default()))
    }

    /// Which of `ids` `user` may read.
    pub async fn readable_among(&self, user: &str, ids: &[String]) -> Result<std::collections::HashSet<String>> {
        if ids.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
        // One row, the ids joined, as in `readable_ids`.
        let sql = format!(
            "SELECT {} FROM permissions p JOIN documents d ON d.id = p.doc_id \
             WHERE p.user_id = $1 AND d.deleted_ms IS NULL AND p.doc_id IN ({})",
            self.joined_ids("p.doc_id"),
            marks.join(", ")
        );
        let mut query = sqlx::query_scalar::<_, Option<String>>(AssertSqlSafe(sql)).bind(user);
        for id in ids {
            query = query.bind(id);
        }
        let joined = query.fetch_one(&self.read).await?;
        Ok(joined.map(|j| j.split(' ').map(str::to_owned).collect()).unwrap_or_default())
    }

    /// SQL joining a column of document ids into one string, space-separated (ids are
    /// base64url: no spaces).
    fn joined_ids(&self, column: &str) -> String {
        match self.engine {
            Engine::Sqlite => format!("group_concat({column}, ' ')"),
            Engine::Postgres => format!("string_agg({column}, ' ')"),
        }
    }

    /// The titles of the live documents among `ids`.
    pub async fn titles(&self, ids: &[String]) -> Result<HashMap<String, String>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 1)).collect();
        let sql = format!("SELECT id, title FROM documents WHERE deleted_ms IS NULL AND id IN ({})", marks.join(", "));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("title")?))).collect()
    }

    /// Every live document's id and title, in id order from after `after` (`tandem reindex`).
    pub async fn live_documents(&self, after: &str, limit: u32) -> Result<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT id, title FROM documents WHERE deleted_ms IS NULL AND id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("title")?))).collect()
    }

    // ---- the change feed's cursors ----

    /// Every document's last published feed revision.
    pub async fn feed_cursors(&self) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query("SELECT doc_id, rev FROM feed_cursors").fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("doc_id")?, u64::try_from(r.try_get::<i64, _>("rev")?).unwrap_or(0))))
            .collect()
    }

    /// The feed cursors of `docs` (those with none are left out).
    pub async fn feed_cursors_of(&self, docs: &[String]) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for chunk in docs.chunks(500) {
            let marks = (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let sql = format!("SELECT doc_id, rev FROM feed_cursors WHERE doc_id IN ({marks})");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for doc in chunk {
                query = query.bind(doc);
            }
            for r in query.fetch_all(&self.read).await? {
                out.push((r.try_get("doc_id")?, u64::try_from(r.try_get::<i64, _>("rev")?).unwrap_or(0)));
            }
        }
        Ok(out)
    }

    /// Raises the feed cursors given (a lower revision never replaces a higher one).
    pub async fn save_feed_cursors(&self, cursors: &[(String, u64)]) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        // Many rows per statement (a statement is a round trip to the driver).
        for chunk in cursors.chunks(300) {
            let sql = format!(
                "INSERT INTO feed_cursors (doc_id, rev, updated_ms) VALUES {} \
                 ON CONFLICT (doc_id) DO UPDATE SET rev = excluded.rev, updated_ms = excluded.updated_ms \
                 WHERE feed_cursors.rev < excluded.rev",
                value_rows(chunk.len(), 3, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (doc, rev) in chunk {
                query = query.bind(doc).bind(i64::try_from(*rev).unwrap_or(i64::MAX)).bind(now);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- workers ----

    /// Claims `event_id` for `worker` before its effect: [`Claim::Fresh`] the first time,
    /// [`Claim::Unfinished`] when an earlier attempt started and did not finish (a crash or a
    /// failure: the effect may or may not have happened), [`Claim::Done`] when it is done.
    pub async fn claim_event(&self, worker: &str, event_id: &str) -> Result<Claim> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let row = sqlx::query("SELECT state, attempts FROM processed_events WHERE worker = $1 AND event_id = $2")
            .bind(worker)
            .bind(event_id)
            .fetch_optional(&mut *tx)
            .await?;
        let claim = match row {
            None => {
                sqlx::query(
                    "INSERT INTO processed_events (worker, event_id, state, attempts, updated_ms) \
                     VALUES ($1, $2, 'started', 1, $3)",
                )
                .bind(worker)
                .bind(event_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Claim::Fresh
            }
            Some(r) if r.try_get::<String, _>("state")? == "done" => Claim::Done,
            Some(r) => {
                let attempts: i64 = r.try_get("attempts")?;
                sqlx::query(
                    "UPDATE processed_events SET attempts = attempts + 1, updated_ms = $1 \
                     WHERE worker = $2 AND event_id = $3",
                )
                .bind(now)
                .bind(worker)
                .bind(event_id)
                .execute(&mut *tx)
                .await?;
                Claim::Unfinished { attempts: u32::try_from(attempts).unwrap_or(u32::MAX) }
            }
        };
        tx.commit().await?;
        Ok(claim)
    }

    /// [`Store::claim_event`] for many events in one transaction (one write to disk for a
    /// batch); the claims in the order of `event_ids` (an id twice is claimed once, then
    /// found unfinished).
    pub async fn claim_events(&self, worker: &str, event_ids: &[String]) -> Result<Vec<Claim>> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let mut known: HashMap<String, Claim> = HashMap::new();
        for chunk in event_ids.chunks(500) {
            let sql = format!(
                "SELECT event_id, state, attempts FROM processed_events WHERE worker = $1 AND event_id IN ({})",
                (2..chunk.len() + 2).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(worker);
            for id in chunk {
                query = query.bind(id);
            }
            for r in query.fetch_all(&mut *tx).await? {
                let claim = if r.try_get::<String, _>("state")? == "done" {
                    Claim::Done
                } else {
                    Claim::Unfinished { attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX) }
                };
                known.insert(r.try_get("event_id")?, claim);
            }
        }
        let mut claims = Vec::with_capacity(event_ids.len());
        let (mut fresh, mut again): (Vec<&String>, Vec<&String>) = (Vec::new(), Vec::new());
        for id in event_ids {
            let claim = match known.get(id) {
                None => {
                    fresh.push(id);
                    known.insert(id.clone(), Claim::Unfinished { attempts: 1 });
                    Claim::Fresh
                }
                Some(Claim::Done) => Claim::Done,
                Some(&Claim::Unfinished { attempts }) => {
                    again.push(id);
                    known.insert(id.clone(), Claim::Unfinished { attempts: attempts.saturating_add(1) });
                    Claim::Unfinished { attempts }
                }
                Some(Claim::Fresh) => unreachable!("stored claims are done or unfinished"),
            };
            claims.push(claim);
        }
        for chunk in fresh.chunks(100) {
            let sql = format!(
                "INSERT INTO processed_events (worker, event_id, state, attempts, updated_ms) VALUES {}",
                value_rows(chunk.len(), 5, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(worker).bind(*id).bind("started").bind(1_i64).bind(now);
            }
            query.execute(&mut *tx).await?;
        }
        for id in again {
            sqlx::query(
                "UPDATE processed_events SET attempts = attempts + 1, updated_ms = $1 WHERE worker = $2 AND event_id = $3",
            )
            .bind(now)
            .bind(worker)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(claims)
    }

    /// Records that `worker` finished `event_id`'s effect.
    pub async fn finish_event(&self, worker: &str, event_id: &str) -> Result<()> {
        sqlx::query("UPDATE processed_events SET state = 'done', updated_ms = $1 WHERE worker = $2 AND event_id = $3")
            .bind(now_ms())
            .bind(worker)
            .bind(event_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Keeps a message `worker` gave up on, with the reason.
    pub async fn dead_letter(&self, letter: &DeadLetter) -> Result<()> {
        sqlx::query(
            "INSERT INTO dead_letters (worker, topic, msg_partition, msg_offset, event_id, payload, reason, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&letter.worker)
        .bind(&letter.topic)
        .bind(i64::from(letter.partition))
        .bind(letter.offset)
        .bind(letter.event_id.as_deref())
        .bind(&letter.payload)
        .bind(&letter.reason)
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The newest dead letters of `worker`, newest first.
    pub async fn dead_letters(&self, worker: &str, limit: u32) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT worker, topic, msg_partition, msg_offset, event_id, payload, reason FROM dead_letters \
             WHERE worker = $1 ORDER BY id DESC LIMIT {}",
            limit.clamp(1, 10_000)
        )))
        .bind(worker)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    worker: r.try_get("worker")?,
                    topic: r.try_get("topic")?,
                    partition: i32::try_from(r.try_get::<i64, _>("msg_partition")?).unwrap_or(i32::MAX),
                    offset: r.try_get("msg_offset")?,
                    event_id: r.try_get("event_id")?,
                    payload: r.try_get("payload")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Every table's columns as (table, column, declared type family, nullable), sorted:
    /// the migrations of both engines must give the same answer.
    pub async fn schema(&self) -> Result<Vec<(String, String, String, bool)>> {
        let tables = [
            "users",
            "refresh_tokens",
            "documents",
            "permissions",
            "invitations",
            "outbox",
            "processed_events",
            "dead_letters",
            "feed_cursors",
        ];
        let mut out = Vec::new();
        for table in tables {
            let rows = match self.engine {
                Engine::Sqlite => {
                    // `table` is one of our own names above, not input.
                    let sql = AssertSqlSafe(format!(
                        "SELECT name, type, \"notnull\" AS nn, pk FROM pragma_table_info('{table}')"
                    ));
                    let rows = sqlx::query(sql).fetch_all(&self.read).await?;
                    rows.iter()
                        .map(|r| {
                            let ty: String = r.try_get("type")?;
                            // A primary key is NOT NULL on PostgreSQL whatever it says.
                            let not_null = r.try_get::<i64, _>("nn")? != 0 || r.try_get::<i64, _>("pk")? != 0;
                            Ok((r.try_get::<String, _>("name")?, type_family(&ty), !not_null))
                        })
                        .collect::<Result<Vec<_>>>()?
                }
                Engine::Postgres => {
                    let rows = sqlx::query(
                        "SELECT column_name::text AS name, data_type::text AS ty, is_nullable::text AS nullable \
                         FROM information_schema.columns WHERE table_name = $1 AND table_schema = current_schema()",
                    )
                    .bind(table)
                    .fetch_all(&self.read)
                    .await?;
                    rows.iter()
                        .map(|r| {
                            let ty: String = r.try_get("ty")?;
                            let nullable: String = r.try_get("nullable")?;
                            Ok((r.try_get::<String, _>("name")?, type_family(&ty), nullable == "YES"))
                        })
                        .collect::<Result<Vec<_>>>()?
                }
            };
            out.extend(rows.into_iter().map(|(c, t, n)| (table.to_owned(), c, t, n)));
        }
        out.sort();
        Ok(out)
    }
}

/// A column type, as one family name for both engines.
fn type_family(ty: &str) -> String {
    let ty = ty.to_ascii_lowercase();
    if ty.contains("int") {
        "integer".into()
    } else if ty.contains("text") || ty.contains("char") {
        "text".into()
    } else {
        ty
    }
}

type SetupFuture<'c> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

/// Every SQLite connection: WAL (readers never wait for the writer), foreign keys checked,
/// waits of up to 10 s for the write lock instead of failing at once.
fn sqlite_setup(conn: &mut sqlx::AnyConnection, _: sqlx::pool::PoolConnectionMetadata) -> SetupFuture<'_> {
    // synchronous = FULL: a commit is on disk before its answer (NORMAL in WAL mode may lose
    // the last commits, a 201 included, on power loss).
    Box::pin(async move {
        sqlx::raw_sql(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
        )
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// The document list's statement (`$1` user, `$2`/`$3` the cursor when `after`), the same
/// text on both engines and on SQLite's direct path. The LIMIT (our own integer, `limit + 1`
/// to learn whether a next page exists) is written into the text, not bound: SQLite reads a
/// bound LIMIT's value when it plans, so rebinding it made every run re-prepare the cached
/// statement, 15% of the request's CPU (measured).
/// `count` rows of `cols` numbered placeholders, from `$first`: `($1, $2), ($3, $4)`.
pub(crate) fn value_rows(count: usize, cols: usize, first: usize) -> String {
    let mut out = String::with_capacity(count * cols * 5);
    for r in 0..count {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(first + r * cols + c).to_string());
        }
        out.push(')');
    }
    out
}

pub(crate) fn list_sql(after: bool, limit: u64) -> String {
    let cursor = if after { " AND (p.doc_updated_ms < $2 OR (p.doc_updated_ms = $2 AND p.doc_id < $3))" } else { "" };
    format!(
        "SELECT d.id, d.title, d.owner_id, d.created_ms, d.updated_ms, d.link_role, d.editors_can_share, \
         d.acl_version, p.role, p.doc_updated_ms FROM permissions p JOIN documents d ON d.id = p.doc_id \
         WHERE p.user_id = $1 AND d.deleted_ms IS NULL{cursor} \
         ORDER BY p.doc_updated_ms DESC, p.doc_id DESC LIMIT {}",
        limit + 1
    )
}

/// The file a `sqlite:` URL names (`sqlite://PATH`, `sqlite:PATH`, with or without `?options`).
/// An in-memory database is refused: every pooled connection would get a database of its own.
fn sqlite_path(url: &str) -> Result<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return Err(Error::Config("SQLite needs a database file (sqlite://PATH), not an in-memory database".into()));
    }
    Ok(std::path::PathBuf::from(path))
}

/// How many migrations the database has applied (0 before the first run).
async fn applied(conn: &mut sqlx::AnyConnection) -> usize {
    sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations WHERE success")
        .fetch_one(conn)
        .await
        .and_then(|r| r.try_get::<i64, _>("n"))
        .map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_a_file() {
        let p = |u: &str| sqlite_path(u).map(|p| p.display().to_string());
        assert_eq!(p("sqlite:///data/t.db").unwrap(), "/data/t.db");
        assert_eq!(p("sqlite://rel/t.db?mode=rwc").unwrap(), "rel/t.db");
        assert_eq!(p("sqlite:t.db").unwrap(), "t.db");
        for memory in ["sqlite::memory:", "sqlite://", "sqlite:x.db?mode=memory"] {
            assert!(matches!(sqlite_path(memory), Err(Error::Config(m)) if m.contains("in-memory")), "{memory}");
        }
    }
}
