-- Two foreign keys and an index that cost every webhook on the write path go:
--
-- - The key from a webhook to its event, a lookup of the event per webhook written, and the
--   index of webhooks by event it needed (a B-tree entry per webhook written and again per
--   recorded attempt, a new row version each). Pruning, the only reader of webhooks by
--   event, finds an event's webhooks through the primary key instead: they are written in
--   the event's transaction with ids made in the event's millisecond, which the store
--   checks (store/change.rs, store/retention.rs).
-- - The key from an attempt to its webhook, a lookup of the webhook per attempt recorded.
--   An attempt is written only for a webhook that the same transaction has just updated
--   (and so holds locked), and pruning deletes a webhook's attempts with it.
--
-- SQLite keeps all three (dropping a key there rebuilds the table).
ALTER TABLE webhooks DROP CONSTRAINT IF EXISTS webhooks_event_id_fkey;
DROP INDEX IF EXISTS webhooks_by_event;
ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_webhook_id_fkey;
