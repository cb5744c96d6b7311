-- What the console's overview reads without scanning attempts or webhooks (docs/console.md).

-- Attempts per level and minute, in 60 slots per level (`slot` = minute mod 60), kept by the
-- transaction that records attempts like `endpoint_hours`: a slot whose `minute` is older
-- than an hour is overwritten, so the table never grows past 60 rows a level. It starts
-- empty: attempts recorded before this migration are not counted by minute.
CREATE TABLE endpoint_minutes (
    level_id   TEXT NOT NULL,
    slot       INTEGER NOT NULL,
    minute     INTEGER NOT NULL,
    successes  INTEGER NOT NULL,
    failures   INTEGER NOT NULL,
    PRIMARY KEY (level_id, slot)
);

-- The lists of failed and of disabled webhooks, newest first, read without passing over the
-- others. A webhook enters one of them only when it ends that way, so they cost little to
-- keep.
CREATE INDEX webhooks_failed ON webhooks (id) WHERE status = 'failed';
CREATE INDEX webhooks_disabled ON webhooks (id) WHERE status = 'disabled';

-- Nothing reads attempts by time any more (the charts read the counters): the index cost
-- every recorded attempt one more B-tree insert.
DROP INDEX IF EXISTS attempts_by_started;
