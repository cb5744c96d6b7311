-- Endpoint settings per level, their health, and ordered delivery (docs/endpoints.md).

-- A level's endpoint settings; a level without a row has the defaults. `event_types` is a
-- comma-separated list, NULL for every type the level table gives the level.
CREATE TABLE endpoints (
    level_id         TEXT PRIMARY KEY,
    event_types      TEXT,
    ordered          BIGINT NOT NULL DEFAULT 0,
    enabled          BIGINT NOT NULL DEFAULT 1,
    disabled_reason  TEXT,
    disabled_at      BIGINT,
    success          TEXT NOT NULL DEFAULT '200',
    updated_at       BIGINT NOT NULL
);

-- Each level's delivery health, updated in the transaction that records attempts.
CREATE TABLE endpoint_health (
    level_id              TEXT PRIMARY KEY,
    last_success_at       BIGINT,
    last_failure_at       BIGINT,
    last_error            TEXT,
    consecutive_failures  BIGINT NOT NULL DEFAULT 0
);

-- Attempts per level and hour, in 24 slots per level (`slot` = hour mod 24): a slot whose
-- `hour` is older than a day is overwritten, so the table never grows past 24 rows a level.
CREATE TABLE endpoint_hours (
    level_id   TEXT NOT NULL,
    slot       BIGINT NOT NULL,
    hour       BIGINT NOT NULL,
    successes  BIGINT NOT NULL,
    failures   BIGINT NOT NULL,
    PRIMARY KEY (level_id, slot)
);

-- Whether the webhook is ordered (its level's setting when it was made), and its place in
-- creation order. The claim lets an ordered webhook go only when no older one to its level
-- about its subject is unfinished. Webhooks about one subject are written by changes that
-- lock the subject, so their `seq` follows their commit order.
ALTER TABLE webhooks ADD COLUMN ordered BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN seq BIGSERIAL;
CREATE INDEX webhooks_ordered_open ON webhooks (level_id, subject_id, seq)
    WHERE ordered = 1 AND due_at IS NOT NULL;

-- An e-mail saying an endpoint was disabled carries the reason (NULL for failure e-mails).
ALTER TABLE emails ADD COLUMN disabled_reason TEXT;
