-- Signing secrets per level and the failure-notification outbox.

-- Each level's Standard Webhooks secret, sealed with the instance key (never stored in clear,
-- so a database dump alone does not reveal it). After a rotation the previous secret keeps
-- signing until `previous_until`.
CREATE TABLE level_secrets (
    level_id        TEXT PRIMARY KEY,
    current         TEXT NOT NULL,
    previous        TEXT,
    previous_until  BIGINT,
    updated_at      BIGINT NOT NULL
);

-- One row per webhook that failed its last attempt: the failure e-mail's outbox.
CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    webhook_id  TEXT NOT NULL UNIQUE REFERENCES webhooks (id),
    level_id    TEXT NOT NULL,
    url         TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX notifications_by_status ON notifications (status, created_at);
CREATE INDEX notifications_by_level ON notifications (level_id, id);
