//! The control plane's errors.

/// What can go wrong in the control plane's store and services.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed (connection lost, constraint, timeout).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite's direct read path failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A migration failed.
    #[error("migrating the database: {0}")]
    Migrate(String),
    /// The database holds something this build does not understand.
    #[error("database content: {0}")]
    Corrupt(String),
    /// The configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// Another account has this email address.
    #[error("an account with this email address exists")]
    EmailTaken,
    /// No such thing (or no access to it).
    #[error("not found")]
    NotFound,
    /// The request asks for something that cannot be done.
    #[error("{0}")]
    Invalid(String),
    /// Signing keys could not be read or written.
    #[error("signing keys: {0}")]
    Keys(String),
}

/// The control plane's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
