-- Endpoint settings per level, their health, and ordered delivery (docs/endpoints.md).

-- A level's endpoint settings; a level without a row has the defaults. `event_types` is a
-- comma-separated list, NULL for every type the level table gives the level.
CREATE TABLE endpoints (
    level_id         TEXT PRIMARY KEY,
    event_types      TEXT,
    ordered          INTEGER NOT NULL DEFAULT 0,
    enabled          INTEGER NOT NULL DEFAULT 1,
    disabled_reason  TEXT,
    disabled_at      INTEGER,
    success          TEXT NOT NULL DEFAULT '200',
    updated_at       INTEGER NOT NULL
);

-- Each level's delivery health, updated in the transaction that records attempts.
CREATE TABLE endpoint_health (
    level_id              TEXT PRIMARY KEY,
    last_success_at       INTEGER,
    last_failure_at       INTEGER,
    last_error            TEXT,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0
);

-- Attempts per level and hour, in 24 slots per level (`slot` = hour mod 24): a slot whose
-- `hour` is older than a day is overwritten, so the table never grows past 24 rows a level.
CREATE TABLE endpoint_hours (
    level_id   TEXT NOT NULL,
    slot       INTEGER NOT NULL,
    hour       INTEGER NOT NULL,
    successes  INTEGER NOT NULL,
    failures   INTEGER NOT NULL,
    PRIMARY KEY (level_id, slot)
);

-- Whether the webhook is ordered (its level's setting when it was made). The claim lets an
-- ordered webhook go only when no older one to its level about its subject is unfinished;
-- creation order is the rowid on SQLite (one writer gives rowids in insertion order).
ALTER TABLE webhooks ADD COLUMN ordered INTEGER NOT NULL DEFAULT 0;
CREATE INDEX webhooks_ordered_open ON webhooks (level_id, subject_id)
    WHERE ordered = 1 AND due_at IS NOT NULL;

-- An e-mail saying an endpoint was disabled carries the reason (NULL for failure e-mails).
ALTER TABLE emails ADD COLUMN disabled_reason TEXT;
