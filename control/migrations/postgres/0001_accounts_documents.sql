-- Accounts, refresh tokens, documents, roles, invitations and the outbox.
-- Kept equivalent to ../sqlite/0001_accounts_documents.sql (a test compares the two).
-- Times are milliseconds since the Unix epoch; flags are 0 or 1.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms BIGINT,
    revoked_ms BIGINT
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);

CREATE TABLE documents (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users (id),
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    link_role TEXT,
    editors_can_share BIGINT NOT NULL DEFAULT 0,
    acl_version BIGINT NOT NULL DEFAULT 1,
    deleted_ms BIGINT
);

CREATE TABLE permissions (
    doc_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    doc_updated_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (doc_id, user_id)
);
-- "My documents, most recently edited first", one index range scan per page.
CREATE INDEX permissions_by_user ON permissions (user_id, doc_updated_ms DESC, doc_id DESC);

CREATE TABLE invitations (
    doc_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    invited_by TEXT NOT NULL REFERENCES users (id),
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (doc_id, email)
);
CREATE INDEX invitations_by_email ON invitations (email);

CREATE TABLE outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    kind TEXT NOT NULL,
    schema_version BIGINT NOT NULL,
    doc_id TEXT,
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    sent_ms BIGINT
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_ms IS NULL;
