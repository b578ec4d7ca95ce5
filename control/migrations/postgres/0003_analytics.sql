-- What the analytics worker keeps: per-document daily aggregates of edits and of usage events,
-- and which user each client id is. Kept equivalent to ../sqlite/0003_analytics.sql.

-- Edits' authors are client ids; a session's open records whose user it is.
CREATE TABLE client_users (
    client_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    first_ms BIGINT NOT NULL
);

-- Per document, UTC day and client id: ops, characters added and removed, time active (the
-- gaps of at most a minute between one client's consecutive edits), and its last edit.
CREATE TABLE activity_edits (
    doc_id TEXT NOT NULL,
    day TEXT NOT NULL,
    client_id TEXT NOT NULL,
    edits BIGINT NOT NULL,
    inserted BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    active_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    PRIMARY KEY (doc_id, day, client_id)
);

-- Per document, UTC day, user and kind ('opened', 'shared', ...): how many.
CREATE TABLE activity_events (
    doc_id TEXT NOT NULL,
    day TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (doc_id, day, user_id, kind)
);

-- The last revision counted per document: the change feed may deliver a revision twice (in
-- events with different ranges after a restart); it is counted once.
CREATE TABLE activity_revs (
    doc_id TEXT PRIMARY KEY,
    rev BIGINT NOT NULL
);
