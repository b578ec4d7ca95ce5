//! SQLite's read path for the document list, without sqlx.
//!
//! `GET /api/documents` is the control plane's busiest read. Through sqlx's `Any` driver a
//! page of 50 cost ~0.8 ms of CPU, most of it outside SQLite: each sqlx SQLite connection runs
//! its statements on a thread of its own and sends every row back through a channel, copying
//! each value (`sqlite3_value_dup`) and then again into an `AnyRow` (measured with `perf`,
//! `results/2026-11-29-control-plane`). Here the statement runs on a tokio blocking thread over
//! a read-only rusqlite connection (the same libsqlite3-sys, so the same SQLite) and its
//! columns go straight into [`DocumentView`]s: one thread hop per request.
//!
//! Only this query takes the path; PostgreSQL runs the same query through sqlx, and both
//! answer the same store tests.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::store::{Cursor, Document, DocumentView, Page, list_sql, role_from};

/// Read-only connections for the list (one statement runs on each at a time).
pub(crate) struct ListReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for ListReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListReader").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ListReader {
    /// Up to `connections` read-only connections to the database file at `path`, opened
    /// when first needed.
    pub(crate) fn new(path: PathBuf, connections: usize) -> Self {
        Self { path, idle: Mutex::new(Vec::new()), permits: Arc::new(Semaphore::new(connections.max(1))) }
    }

    fn open(&self) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(conn)
    }

    /// The documents `user` has a role on, most recently edited first; `limit` is already
    /// clamped by the caller.
    pub(crate) async fn documents_for(
        self: &Arc<Self>,
        user: &str,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page> {
        let _permit = self.permits.acquire().await.map_err(|_| Error::Invalid("the store is closed".into()))?;
        let idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let (user, after) = (user.to_owned(), after.cloned());
        let this = Arc::clone(self);
        let (conn, page) = tokio::task::spawn_blocking(move || {
            let conn = match idle {
                Some(conn) => conn,
                None => match this.open() {
                    Ok(conn) => conn,
                    Err(e) => return (None, Err(e)),
                },
            };
            let page = page(&conn, &user, after.as_ref(), limit);
            (Some(conn), page)
        })
        .await
        .map_err(|e| Error::Invalid(format!("the list query stopped: {e}")))?;
        // A connection whose statement failed is dropped, not reused.
        if let (Some(conn), Ok(_)) = (conn, &page) {
            self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(conn);
        }
        page
    }
}

fn page(conn: &Connection, user: &str, after: Option<&Cursor>, limit: u32) -> Result<Page> {
    let mut docs = Vec::with_capacity(limit as usize + 1);
    let mut keys = Vec::with_capacity(limit as usize + 1);
    let mut push = |row: &rusqlite::Row<'_>| -> Result<()> {
        let link: Option<String> = row.get(5)?;
        let role: String = row.get(8)?;
        let role = role_from(&role)?;
        let doc = Document {
            id: row.get(0)?,
            title: row.get(1)?,
            owner_id: row.get(2)?,
            created_ms: row.get(3)?,
            updated_ms: row.get(4)?,
            link_role: link.as_deref().map(role_from).transpose()?,
            editors_can_share: row.get::<_, i64>(6)? != 0,
            acl_version: row.get(7)?,
        };
        keys.push(row.get::<_, i64>(9)?);
        docs.push(DocumentView { doc, role, own: Some(role) });
        Ok(())
    };
    match after {
        None => {
            let mut stmt = conn.prepare_cached(&list_sql(false, u64::from(limit)))?;
            let mut rows = stmt.query(params![user])?;
            while let Some(row) = rows.next()? {
                push(row)?;
            }
        }
        Some(c) => {
            let mut stmt = conn.prepare_cached(&list_sql(true, u64::from(limit)))?;
            let mut rows = stmt.query(params![user, c.updated_ms, c.id])?;
            while let Some(row) = rows.next()? {
                push(row)?;
            }
        }
    }
    let more = docs.len() > limit as usize;
    docs.truncate(limit as usize);
    let next = match (more, docs.last()) {
        (true, Some(last)) => Some(Cursor { updated_ms: keys[docs.len() - 1], id: last.doc.id.clone() }),
        _ => None,
    };
    Ok(Page { docs, next })
}
