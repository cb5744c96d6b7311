-- The failed and the disabled webhooks of each level, in id order: the lists of a key
-- narrowed to a subtree read them level by level, a page at most from each, without passing
-- over the levels' pending and delivered webhooks (docs/console.md). A webhook enters one of
-- them only when it ends that way, so they cost little to keep.
CREATE INDEX webhooks_failed_by_level ON webhooks (level_id, id) WHERE status = 'failed';
CREATE INDEX webhooks_disabled_by_level ON webhooks (level_id, id) WHERE status = 'disabled';
