-- No query looks webhooks up by their event (they are read by id, by level or by due time,
-- and joined to their event through the event's primary key), and events are never deleted,
-- so this index only cost one more B-tree insert per webhook on the write path.
DROP INDEX IF EXISTS webhooks_by_event;
