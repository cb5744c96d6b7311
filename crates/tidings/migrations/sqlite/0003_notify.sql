-- Failure e-mails: the outbox the mailer sends from (SPEC section 7).
--
-- A row of `notifications` (one per webhook that failed its last attempt) joins exactly one
-- e-mail through `email_id`; a digest e-mail covers several. An e-mail is keyed by the level
-- that owns the URL and the URL; while `closed_at` is NULL more failures may join it, and
-- it closes when the mailer first claims it for sending (its content is then fixed).
CREATE TABLE emails (
    id            TEXT PRIMARY KEY,
    level_id      TEXT NOT NULL,
    url           TEXT NOT NULL,
    -- The address it went (or goes) to; NULL while unknown or when no level has one.
    recipient     TEXT,
    -- queued | sent | no_recipient
    status        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    webhook_count INTEGER NOT NULL,
    -- When the digest window planned to send it: the anchor of the next window.
    scheduled_at  INTEGER NOT NULL,
    -- When the next send attempt is due (moved to the lease's end while claimed); NULL once
    -- sent or recorded as no_recipient.
    due_at        INTEGER,
    claimed_by    TEXT,
    closed_at     INTEGER,
    -- SMTP send attempts and the last SMTP error.
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    sent_at       INTEGER
);
CREATE INDEX emails_due ON emails (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX emails_by_key ON emails (level_id, url, scheduled_at);
CREATE INDEX emails_by_level ON emails (level_id, id);
CREATE INDEX emails_by_status ON emails (status, id);

ALTER TABLE notifications ADD COLUMN email_id TEXT REFERENCES emails (id);
CREATE INDEX notifications_unassigned ON notifications (id) WHERE email_id IS NULL;
CREATE INDEX notifications_by_email ON notifications (email_id);
