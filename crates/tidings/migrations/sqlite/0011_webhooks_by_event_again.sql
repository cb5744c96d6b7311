-- Webhooks by event, again. Retention deletes events once their webhooks are gone, and the
-- foreign key from `webhooks.event_id` makes the database look for webhooks of each deleted
-- event: without this index, a scan of the whole table per event (on SQLite, 200 events took
-- 8.4 s against a store of 445,000 webhooks; with the index, 0.01 s). Pruning then held the
-- single writer for minutes and could not keep up. The index costs one B-tree insert per
-- webhook. (Built in the migration's transaction: on a large existing store, writes wait for
-- it once, at the upgrade.)
CREATE INDEX webhooks_by_event ON webhooks (event_id);
