//! Exports and uploads: whose each file is, and an export's progress. The files are in the
//! blob store; a row here is what makes one reachable.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, outbox};
use crate::error::{Error, Result};
use crate::outbox::Event;
use crate::{now_ms, random_hex};

/// Where an export is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportStatus {
    /// Waiting for the worker.
    Queued,
    /// The worker has it.
    Rendering,
    /// The file is in the blob store.
    Done,
    /// It could not be made; `error` says why.
    Failed,
}

impl ExportStatus {
    /// Its name in the table and the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Rendering => "rendering",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "queued" => Self::Queued,
            "rendering" => Self::Rendering,
            "done" => Self::Done,
            "failed" => Self::Failed,
            other => return Err(Error::Corrupt(format!("export status {other:?}"))),
        })
    }
}

/// An export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// Its id.
    pub id: String,
    /// The document.
    pub doc: String,
    /// Who asked.
    pub user: String,
    /// `pdf` or `docx`.
    pub format: String,
    /// The revision asked for, or (from rendering on) the one rendered.
    pub rev: Option<u64>,
    /// Where it is.
    pub status: ExportStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// The file's size.
    pub bytes: Option<u64>,
    /// When it was asked for.
    pub created_ms: i64,
    /// When it finished or failed.
    pub finished_ms: Option<i64>,
}

impl Export {
    /// The file's key in the blob store.
    pub fn blob_key(&self) -> String {
        export_key(&self.id, &self.format)
    }
}

/// The blob key of export `id` in `format`.
pub fn export_key(id: &str, format: &str) -> String {
    format!("exports/{id}.{format}")
}

/// The blob key of upload `id`.
pub fn upload_key(id: &str) -> String {
    format!("uploads/{id}")
}

/// An uploaded image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Its id.
    pub id: String,
    /// The document it belongs to.
    pub doc: String,
    /// Who uploaded it.
    pub user: String,
    /// Its type, from its content.
    pub content_type: String,
    /// Its size.
    pub bytes: u64,
    /// When.
    pub created_ms: i64,
}

/// What a finished export leaves for the requester: the notification.
#[derive(Clone, Debug)]
pub struct Finished {
    /// A link valid for a while (none when it failed).
    pub link: Option<String>,
    /// Until when.
    pub expires_ms: Option<i64>,
    /// The file's size (done) ...
    pub bytes: Option<u64>,
    /// ... or why it failed.
    pub error: Option<String>,
}

fn export_from(row: &AnyRow) -> Result<Export> {
    Ok(Export {
        id: row.try_get("id")?,
        doc: row.try_get("doc_id")?,
        user: row.try_get("user_id")?,
        format: row.try_get("format")?,
        rev: row.try_get::<Option<i64>, _>("rev")?.map(|r| r as u64),
        status: ExportStatus::parse(&row.try_get::<String, _>("status")?)?,
        error: row.try_get("error")?,
        bytes: row.try_get::<Option<i64>, _>("bytes")?.map(|b| b as u64),
        created_ms: row.try_get("created_ms")?,
        finished_ms: row.try_get("finished_ms")?,
    })
}

fn upload_from(row: &AnyRow) -> Result<Upload> {
    Ok(Upload {
        id: row.try_get("id")?,
        doc: row.try_get("doc_id")?,
        user: row.try_get("user_id")?,
        content_type: row.try_get("content_type")?,
        bytes: row.try_get::<i64, _>("bytes")? as u64,
        created_ms: row.try_get("created_ms")?,
    })
}

impl Store {
    /// Records an export request and its event for the export worker, in one transaction;
    /// `None` when `user` already has `max_in_progress` exports queued or rendering.
    pub async fn request_export(
        &self,
        doc: &str,
        user: &str,
        format: &str,
        rev: Option<u64>,
        max_in_progress: u32,
    ) -> Result<Option<Export>> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let busy: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM exports WHERE user_id = $1 AND status IN ('queued', 'rendering')")
                .bind(user)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        if busy >= i64::from(max_in_progress) {
            return Ok(None);
        }
        let export = Export {
            id: random_hex(),
            doc: doc.to_owned(),
            user: user.to_owned(),
            format: format.to_owned(),
            rev,
            status: ExportStatus::Queued,
            error: None,
            bytes: None,
            created_ms: now,
            finished_ms: None,
        };
        sqlx::query(
            "INSERT INTO exports (id, doc_id, user_id, format, rev, status, created_ms) \
             VALUES ($1, $2, $3, $4, $5, 'queued', $6)",
        )
        .bind(&export.id)
        .bind(doc)
        .bind(user)
        .bind(format)
        .bind(rev.map(|r| r as i64))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let event = Event::ExportRequested {
            export: export.id.clone(),
            doc: doc.to_owned(),
            user: user.to_owned(),
            format: format.to_owned(),
            rev,
        };
        outbox(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(Some(export))
    }

    /// Export `id`.
    pub async fn export(&self, id: &str) -> Result<Option<Export>> {
        let row = sqlx::query(concat!(
            "SELECT id, doc_id, user_id, format, rev, status, error, bytes, created_ms, finished_ms ",
            "FROM exports WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(export_from).transpose()
    }

    /// The worker has export `id`, rendering revision `rev`. False when it is already
    /// finished (a redelivered request).
    pub async fn start_export(&self, id: &str, rev: u64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE exports SET status = 'rendering', rev = $1 WHERE id = $2 AND status IN ('queued', 'rendering')",
        )
        .bind(rev as i64)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Export `id` is done (its file stored) or failed, and its requester is told (an
    /// `export_finished` event in the same transaction). Only the first call for an export
    /// has an effect: a redelivered request that renders again sends no second email.
    pub async fn finish_export(&self, export: &Export, title: &str, finished: Finished) -> Result<bool> {
        let now = now_ms();
        let status = if finished.error.is_none() { ExportStatus::Done } else { ExportStatus::Failed };
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE exports SET status = $1, error = $2, bytes = $3, finished_ms = $4, rev = COALESCE($5, rev) \
             WHERE id = $6 AND status IN ('queued', 'rendering')",
        )
        .bind(status.name())
        .bind(finished.error.as_deref())
        .bind(finished.bytes.map(|b| b as i64))
        .bind(now)
        .bind(export.rev.map(|r| r as i64))
        .bind(&export.id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let email: String = sqlx::query("SELECT email FROM users WHERE id = $1")
            .bind(&export.user)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("email"))
            .transpose()?
            .unwrap_or_default();
        let event = Event::ExportFinished {
            export: export.id.clone(),
            doc: export.doc.clone(),
            title: title.to_owned(),
            user: export.user.clone(),
            email,
            format: export.format.clone(),
            rev: export.rev,
            link: finished.link,
            expires_ms: finished.expires_ms,
            error: finished.error,
        };
        outbox(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Exports asked for before `before_ms` (whatever became of them), or finished ones of
    /// documents deleted since: what the lifecycle sweep deletes (up to `limit`).
    pub async fn expired_exports(&self, before_ms: i64, limit: u32) -> Result<Vec<Export>> {
        let rows = sqlx::query(
            "SELECT e.id, e.doc_id, e.user_id, e.format, e.rev, e.status, e.error, e.bytes, e.created_ms, \
             e.finished_ms FROM exports e LEFT JOIN documents d ON d.id = e.doc_id \
             WHERE e.created_ms < $1 \
             OR ((d.id IS NULL OR d.deleted_ms IS NOT NULL) AND e.status IN ('done', 'failed')) \
             ORDER BY e.created_ms LIMIT $2",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(export_from).collect()
    }

    /// Forgets export `id` (its file already deleted).
    pub async fn delete_export(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM exports WHERE id = $1").bind(id).execute(&self.write).await?;
        Ok(())
    }

    /// Records an upload (its blob already stored).
    pub async fn add_upload(&self, doc: &str, user: &str, id: &str, content_type: &str, bytes: u64) -> Result<Upload> {
        let upload = Upload {
            id: id.to_owned(),
            doc: doc.to_owned(),
            user: user.to_owned(),
            content_type: content_type.to_owned(),
            bytes,
            created_ms: now_ms(),
        };
        sqlx::query(
            "INSERT INTO uploads (id, doc_id, user_id, content_type, bytes, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&upload.id)
        .bind(doc)
        .bind(user)
        .bind(content_type)
        .bind(bytes as i64)
        .bind(upload.created_ms)
        .execute(&self.write)
        .await?;
        Ok(upload)
    }

    /// Upload `id`.
    pub async fn upload(&self, id: &str) -> Result<Option<Upload>> {
        let row = sqlx::query("SELECT id, doc_id, user_id, content_type, bytes, created_ms FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(upload_from).transpose()
    }

    /// Uploads whose document is deleted: what the lifecycle sweep deletes (up to `limit`).
    pub async fn orphaned_uploads(&self, limit: u32) -> Result<Vec<Upload>> {
        let rows = sqlx::query(
            "SELECT u.id, u.doc_id, u.user_id, u.content_type, u.bytes, u.created_ms \
             FROM uploads u LEFT JOIN documents d ON d.id = u.doc_id \
             WHERE d.id IS NULL OR d.deleted_ms IS NOT NULL ORDER BY u.created_ms LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(upload_from).collect()
    }

    /// Forgets upload `id` (its blob already deleted).
    pub async fn delete_upload(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id).execute(&self.write).await?;
        Ok(())
    }
}
