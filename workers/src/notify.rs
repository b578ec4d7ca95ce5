//! The notification worker: one email per event that tells someone something (today: a
//! document shared with them), through SMTP, or as `.eml` files when no SMTP server is
//! configured.
//!
//! Exactly one email per event: the worker claims the event's id in the metadata store
//! before sending and marks it done after, so a redelivered event that was sent is skipped.
//! The one window left is a crash after the SMTP server accepted a message and before its
//! mark (each email is marked as soon as it is accepted; up to [`PARALLEL`] are in flight):
//! those events are sent again on redelivery, with the same `Message-ID`
//! (`<event id@tandem>`), which receiving systems use to drop duplicates. As files, the
//! email's name is the event's id, written atomically, so a second write is the same file.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use tandem_control::Store;
use tandem_control::store::Claim;
use tandem_events::{Envelope, Event, Topic};

use crate::{Failure, Worker};

/// How to reach the SMTP server.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS (required), usually port 587.
    #[default]
    Starttls,
    /// TLS from the first byte, usually port 465.
    Tls,
    /// No encryption (a local relay or a test sink only).
    None,
}

/// `[mail]` in the configuration.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// The SMTP server; none: emails are written as `.eml` files instead.
    pub smtp_host: Option<String>,
    /// Its port.
    pub smtp_port: u16,
    /// TLS to it.
    pub tls: TlsMode,
    /// SMTP user name (with `password`).
    pub username: Option<String>,
    /// SMTP password (never logged).
    pub password: Option<String>,
    /// The sender, `Name <address>`.
    pub from: String,
    /// Where `.eml` files go without SMTP; default: `mail/` in the data directory.
    pub files_dir: Option<PathBuf>,
    /// The start of links in emails (the URL people open Tandem at); default: the address
    /// the server listens on.
    pub link_base: Option<String>,
    /// Time allowed for one SMTP exchange, seconds.
    pub timeout_s: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: 587,
            tls: TlsMode::Starttls,
            username: None,
            password: None,
            from: "Tandem <tandem@localhost>".into(),
            files_dir: None,
            link_base: None,
            timeout_s: 30,
        }
    }
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("files_dir", &self.files_dir)
            .field("link_base", &self.link_base)
            .finish()
    }
}

/// Where emails go.
#[derive(Clone)]
pub enum Mailer {
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a directory.
    Files(PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp(_) => f.write_str("Mailer::Smtp"),
            Self::Files(dir) => f.debug_tuple("Mailer::Files").field(dir).finish(),
        }
    }
}

impl Mailer {
    /// The mailer `config` describes (`data_dir` holds the default files directory).
    pub fn new(config: &MailConfig, data_dir: &Path) -> Result<Self, String> {
        let Some(host) = &config.smtp_host else {
            let dir = config.files_dir.clone().unwrap_or_else(|| data_dir.join("mail"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            return Ok(Self::Files(dir));
        };
        let tls = match config.tls {
            TlsMode::None => Tls::None,
            mode => {
                let params = TlsParameters::new(host.clone()).map_err(|e| format!("TLS for {host}: {e}"))?;
                if mode == TlsMode::Tls { Tls::Wrapper(params) } else { Tls::Required(params) }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(config.smtp_port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(config.timeout_s.max(1))));
        match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.clone()))
            }
            (None, None) => {}
            _ => return Err("mail: set both username and password, or neither".into()),
        }
        Ok(Self::Smtp(builder.build()))
    }

    /// Says where emails go (for the start-up log; no secrets).
    pub fn describe(&self) -> String {
        match self {
            Self::Smtp(_) => "SMTP".into(),
            Self::Files(dir) => format!("files in {} (no SMTP server configured: [mail] smtp_host)", dir.display()),
        }
    }

    /// Sends `message`, whose event id is `id`.
    async fn send(&self, message: Message, id: &str) -> Result<(), Failure> {
        match self {
            Self::Smtp(transport) => match transport.send(message).await {
                Ok(_) => Ok(()),
                // 5xx: the server refuses this message for good.
                Err(e) if e.is_permanent() => Err(Failure::Permanent(format!("SMTP refused the message: {e}"))),
                Err(e) => Err(Failure::Transient(format!("SMTP: {e}"))),
            },
            Self::Files(dir) => {
                let name: String = id
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                    .collect();
                let path = dir.join(format!("{name}.eml"));
                let tmp = dir.join(format!(".{name}.eml.tmp"));
                let bytes = message.formatted();
                let write = async {
                    tokio::fs::write(&tmp, &bytes).await?;
                    tokio::fs::rename(&tmp, &path).await
                };
                write.await.map_err(|e| Failure::Transient(format!("writing {}: {e}", path.display())))
            }
        }
    }
}

/// The notification worker.
#[derive(Debug)]
pub struct Notifications {
    mailer: Mailer,
    store: Store,
    from: Mailbox,
    link_base: String,
}

/// Its consumer group.
pub const GROUP: &str = "notifications";

/// Emails sent at once (each on its own SMTP connection from lettre's pool).
pub const PARALLEL: usize = 8;

impl Notifications {
    /// A worker sending through `mailer`, links starting with `link_base`.
    pub fn new(mailer: Mailer, store: Store, config: &MailConfig, link_base: &str) -> Result<Self, String> {
        let from: Mailbox = config.from.parse().map_err(|e| format!("mail: from {:?}: {e}", config.from))?;
        let link_base = config.link_base.clone().unwrap_or_else(|| link_base.to_owned());
        Ok(Self { mailer, store, from, link_base: link_base.trim_end_matches('/').to_owned() })
    }
}

impl Worker for Notifications {
    fn group(&self) -> &'static str {
        GROUP
    }

    fn topic(&self) -> Topic {
        Topic::Notifications
    }

    async fn handle(&mut self, envelope: &Envelope) -> Result<(), Failure> {
        self.email(envelope).await
    }

    /// A batch: its emails claimed in one transaction, then sent up to [`PARALLEL`] at once,
    /// each marked sent as soon as the SMTP server took it. The rate is then the SMTP round
    /// trip's.
    fn handle_all<'a>(
        &'a mut self,
        events: &'a [&'a Envelope],
    ) -> impl Future<Output = Vec<Result<(), Failure>>> + Send + 'a {
        let this = &*self;
        async move {
            let mut results: Vec<Result<(), Failure>> = Vec::with_capacity(events.len());
            let mut to_send: Vec<(usize, Message)> = Vec::new();
            // An event delivered twice in one batch (a relay re-sent it) is sent once: its
            // first copy's result stands for both.
            let mut seen = std::collections::HashSet::new();
            for (i, envelope) in events.iter().enumerate() {
                if !seen.insert(envelope.id.as_str()) {
                    results.push(Ok(()));
                    continue;
                }
                match this.message(envelope) {
                    Ok(Some(message)) => {
                        to_send.push((i, message));
                        results.push(Ok(()));
                    }
                    Ok(None) => results.push(Ok(())),
                    Err(failure) => results.push(Err(failure)),
                }
            }
            if to_send.is_empty() {
                return results;
            }
            let ids: Vec<String> = to_send.iter().map(|(i, _)| events[*i].id.clone()).collect();
            let claims = match this.store.claim_events(GROUP, &ids).await {
                Ok(claims) => claims,
                Err(e) => {
                    for (i, _) in &to_send {
                        results[*i] = Err(Failure::Transient(format!("claiming the event: {e}")));
                    }
                    return results;
                }
            };
            // Each email is marked sent as soon as the server took it: a crash re-sends at most
            // the ones in flight (up to PARALLEL, each with its Message-ID), never a batch.
            let sends = to_send
                .into_iter()
                .zip(claims)
                .filter(|(_, claim)| *claim != Claim::Done)
                .map(|((i, message), _)| async move { (i, this.send_and_mark(&events[i].id, message).await) });
            let sent: Vec<(usize, Result<(), Failure>)> =
                stream::iter(sends).buffer_unordered(PARALLEL).collect().await;
            for (i, result) in sent {
                results[i] = result;
            }
            results
        }
    }

    fn batch(&self) -> usize {
        4 * PARALLEL
    }
}

impl Notifications {
    /// The email `envelope` calls for, if any, sent once.
    async fn email(&self, envelope: &Envelope) -> Result<(), Failure> {
        let Some(message) = self.message(envelope)? else { return Ok(()) };
        match self.store.claim_event(GROUP, &envelope.id).await {
            Ok(Claim::Done) => return Ok(()),
            Ok(Claim::Fresh | Claim::Unfinished { .. }) => {}
            Err(e) => return Err(Failure::Transient(format!("claiming the event: {e}"))),
        }
        self.send_and_mark(&envelope.id, message).await
    }

    /// Sends `message` (event `id`, claimed) and marks it sent; marking is retried here, not
    /// by resending.
    async fn send_and_mark(&self, id: &str, message: Message) -> Result<(), Failure> {
        self.mailer.send(message, id).await?;
        let mut wait = Duration::from_millis(100);
        for _ in 0..8 {
            match self.store.finish_event(GROUP, id).await {
                Ok(()) => return Ok(()),
                Err(e) => tracing::warn!("notifications: marking event {id} sent: {e}"),
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        Err(Failure::Transient("the email went, but marking it sent failed".into()))
    }

    /// The email `envelope` calls for (none: nothing to tell anyone).
    fn message(&self, envelope: &Envelope) -> Result<Option<Message>, Failure> {
        let (email, (subject, text, html)) = match &envelope.event {
            Event::DocumentShared { doc, title, by_name, email, role, .. } => {
                let link = format!("{}/d/{doc}", self.link_base);
                (email, share_email(by_name, title, role.as_str(), &link))
            }
            Event::Mentioned { doc, title, by_name, email, thread, excerpt, .. } => {
                let link = format!("{}/d/{doc}#thread-{thread}", self.link_base);
                (email, mention_email(by_name, title, excerpt, &link))
            }
            // An empty address: the account is gone.
            Event::ExportFinished { title, email, format, link, expires_ms, error, .. } if !email.is_empty() => {
                (email, export_email(title, format, link.as_deref(), *expires_ms, error.as_deref()))
            }
            _ => return Ok(None),
        };
        let to: Mailbox = email.parse().map_err(|e| Failure::Permanent(format!("address {email:?}: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{}@tandem>", envelope.id)))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| Failure::Permanent(format!("building the email: {e}")))?;
        Ok(Some(message))
    }
}

/// Subject, text and HTML of "your export is ready" (or "could not be made").
fn export_email(
    title: &str,
    format: &str,
    link: Option<&str>,
    expires_ms: Option<i64>,
    error: Option<&str>,
) -> (String, String, String) {
    let title = if title.trim().is_empty() { "Untitled document" } else { title };
    let kind = format.to_uppercase();
    match (link, error) {
        (Some(link), None) => {
            let valid = expires_ms.map_or(String::new(), |ms| {
                let mins = (ms - tandem_control::now_ms()).max(0) / 60_000;
                format!(" (the link works for {mins} more minutes; ask for a new export after that)")
            });
            let subject = format!("Your {kind} of \u{201c}{title}\u{201d} is ready");
            let text =
                format!("Your {kind} export of \u{201c}{title}\u{201d} is ready.\n\nDownload it: {link}{valid}\n");
            let html = format!(
                "<!doctype html><html><body style=\"font-family: sans-serif\">\
                 <p>Your {kind} export of <strong>{title}</strong> is ready.</p>\
                 <p><a href=\"{link}\">Download {kind}</a>{valid}</p></body></html>",
                title = html_escape(title),
                link = html_escape(link),
                valid = html_escape(&valid),
            );
            (subject, text, html)
        }
        _ => {
            let why = error.unwrap_or("unknown error");
            let subject = format!("Your {kind} of \u{201c}{title}\u{201d} could not be made");
            let text = format!("Your {kind} export of \u{201c}{title}\u{201d} failed: {why}\n");
            let html = format!(
                "<!doctype html><html><body style=\"font-family: sans-serif\">\
                 <p>Your {kind} export of <strong>{title}</strong> failed: {why}</p></body></html>",
                title = html_escape(title),
                why = html_escape(why),
            );
            (subject, text, html)
        }
    }
}

/// Subject, text and HTML of "X shared a document with you".
fn share_email(by: &str, title: &str, role: &str, link: &str) -> (String, String, String) {
    let title = if title.trim().is_empty() { "Untitled document" } else { title };
    let subject = format!("{by} shared \u{201c}{title}\u{201d} with you");
    let text = format!(
        "{by} shared the document \u{201c}{title}\u{201d} with you ({role}).\n\nOpen it: {link}\n\n\
         You get this email because someone shared a Tandem document with this address.\n"
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family: sans-serif\">\
         <p>{by} shared the document <strong>{title}</strong> with you ({role}).</p>\
         <p><a href=\"{link}\">Open \u{201c}{title}\u{201d}</a></p>\
         <p style=\"color: #666; font-size: small\">You get this email because someone shared a Tandem \
         document with this address.</p></body></html>",
        by = html_escape(by),
        title = html_escape(title),
        role = html_escape(role),
        link = html_escape(link),
    );
    (subject, text, html)
}

/// Subject, text and HTML of "you were mentioned in a comment".
fn mention_email(by: &str, title: &str, excerpt: &str, link: &str) -> (String, String, String) {
    let title = if title.trim().is_empty() { "Untitled document" } else { title };
    let subject = format!("{by} mentioned you in \u{201c}{title}\u{201d}");
    let text = format!(
        "{by} mentioned you in a comment on \u{201c}{title}\u{201d}:\n\n  {excerpt}\n\nReply: {link}\n\n\
         You get this email because someone mentioned you in a Tandem document you have access to.\n"
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family: sans-serif\">\
         <p>{by} mentioned you in a comment on <strong>{title}</strong>:</p>\
         <blockquote style=\"border-left: 3px solid #ccc; margin: 0; padding-left: 1em\">{excerpt}</blockquote>\
         <p><a href=\"{link}\">Reply</a></p>\
         <p style=\"color: #666; font-size: small\">You get this email because someone mentioned you in a \
         Tandem document you have access to.</p></body></html>",
        by = html_escape(by),
        title = html_escape(title),
        excerpt = html_escape(excerpt),
        link = html_escape(link),
    );
    (subject, text, html)
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mention_emails_escape_what_users_typed() {
        let (subject, text, html) = mention_email("Bob", "Plan", "<b>look</b> @Ada", "http://h/d/abc#thread-4");
        assert_eq!(subject, "Bob mentioned you in \u{201c}Plan\u{201d}");
        assert!(text.contains("<b>look</b> @Ada") && text.contains("#thread-4"));
        assert!(html.contains("&lt;b&gt;look") && !html.contains("<b>look"));
    }

    #[test]
    fn share_emails_escape_what_users_typed() {
        let (subject, text, html) =
            share_email("Ann <a@x>", "<script>alert(1)</script>", "editor", "http://h/d/abc?x=1&y=2");
        assert!(subject.contains("Ann <a@x>"));
        assert!(text.contains("http://h/d/abc?x=1&y=2") && text.contains("(editor)"));
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(html.contains("href=\"http://h/d/abc?x=1&amp;y=2\""));
        assert!(share_email("A", "  ", "viewer", "l").0.contains("Untitled document"));
    }

    #[test]
    fn the_password_is_never_printed() {
        let config =
            MailConfig { password: Some("hunter2".into()), username: Some("u".into()), ..MailConfig::default() };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
