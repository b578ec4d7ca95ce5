-- Exports (PDF/DOCX files rendered by the export worker) and uploads (images embedded in
-- documents). The files themselves are in the blob store (`exports/<id>.<ext>`,
-- `uploads/<id>`); these rows say whose they are. Kept equivalent between ../sqlite and
-- ../postgres (a test compares the two).

CREATE TABLE exports (
    id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    -- 'pdf' or 'docx'.
    format TEXT NOT NULL,
    -- The revision asked for; once rendering, the revision rendered.
    rev BIGINT,
    -- 'queued', 'rendering', 'done' or 'failed'.
    status TEXT NOT NULL,
    error TEXT,
    bytes BIGINT,
    created_ms BIGINT NOT NULL,
    finished_ms BIGINT
);
CREATE INDEX exports_by_user ON exports (user_id, status);
CREATE INDEX exports_by_age ON exports (created_ms);
CREATE INDEX exports_by_doc ON exports (doc_id);

CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX uploads_by_doc ON uploads (doc_id);
