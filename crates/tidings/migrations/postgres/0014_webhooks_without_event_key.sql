-- No foreign key from a webhook to its event, and no index of webhooks by event. Each cost
-- every webhook written: the key a lookup of the event, the index a B-tree entry, again at
-- each recorded attempt (a new row version). Pruning, the only reader of webhooks by event,
-- finds an event's webhooks through the primary key instead: they are written in the
-- event's transaction with ids made in the event's millisecond (store/retention.rs).
-- SQLite keeps both (dropping a key there rebuilds the table).
ALTER TABLE webhooks DROP CONSTRAINT IF EXISTS webhooks_event_id_fkey;
DROP INDEX IF EXISTS webhooks_by_event;
