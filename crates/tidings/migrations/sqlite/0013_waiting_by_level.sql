-- The waiting webhooks of each level (pending, due or in flight), in due order: a key
-- narrowed to a subtree counts its queue and finds its oldest due webhook level by level,
-- without passing over the levels' finished webhooks (however many are kept) or the due
-- webhooks of other levels (docs/console.md). It holds what `webhooks_due` holds.
CREATE INDEX webhooks_waiting_by_level ON webhooks (level_id, due_at) WHERE due_at IS NOT NULL;
