-- The hierarchy, its events and their webhooks (the transactional outbox).
-- Times are Unix milliseconds (UTC).

-- Every entity: its kind and its stored record as JSON (the domain's `Entity`).
CREATE TABLE entities (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    doc         TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX entities_by_kind ON entities (kind, id);

-- Which entity refers to which: parents, owners, linked sites, a meeting's users.
-- An entity that is still referred to cannot be deleted.
CREATE TABLE entity_refs (
    target  TEXT NOT NULL,
    source  TEXT NOT NULL,
    PRIMARY KEY (target, source)
);
CREATE INDEX entity_refs_by_source ON entity_refs (source);

-- One row per event; `data` is the subject's wire shape at the moment of the event.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    subject_id  TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- One row per receiving level per event, with the URL snapshot taken at the event.
-- `due_at` is set while the webhook waits for an attempt (or is claimed, until its lease
-- ends) and NULL once it succeeded or failed for good.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    event_id    TEXT NOT NULL REFERENCES events (id),
    type        TEXT NOT NULL,
    subject_id  TEXT NOT NULL,
    level       TEXT NOT NULL,
    level_id    TEXT NOT NULL,
    url         TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    due_at      INTEGER,
    claimed_by  TEXT,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX webhooks_due ON webhooks (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX webhooks_by_level ON webhooks (level_id, id);
CREATE INDEX webhooks_by_event ON webhooks (event_id);

-- Every delivery attempt and what the receiver answered (the "received error messages").
CREATE TABLE attempts (
    webhook_id   TEXT NOT NULL REFERENCES webhooks (id),
    number       INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    body         TEXT NOT NULL,
    PRIMARY KEY (webhook_id, number)
);
