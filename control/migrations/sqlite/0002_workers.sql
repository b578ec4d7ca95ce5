-- What the workers keep: the events whose effect is done (or under way), and the messages
-- they gave up on. Kept equivalent to ../postgres/0002_workers.sql (a test compares the two).

-- One row per (worker, event id): a redelivered event finds its row and does nothing twice.
CREATE TABLE processed_events (
    worker TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- 'started' (the effect may be under way) or 'done'.
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (worker, event_id)
);

-- Messages a worker could not process (unreadable, or failing after every retry), with why.
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    worker TEXT NOT NULL,
    topic TEXT NOT NULL,
    msg_partition BIGINT NOT NULL,
    msg_offset BIGINT NOT NULL,
    event_id TEXT,
    payload TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX dead_letters_by_worker ON dead_letters (worker, id);

-- The change feed's cursor per document: the last revision published to document-edits
-- (the op log's revisions are the feed's offsets; a restart catches up from here).
CREATE TABLE feed_cursors (
    doc_id TEXT PRIMARY KEY,
    rev BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
