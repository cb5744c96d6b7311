-- API keys: the operator's and those scoped to one level. Only a SHA-256 hash of each key
-- is stored; the key itself is shown once, when it is made.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    level       TEXT,
    level_id    TEXT,
    label       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_by_level ON api_keys (level_id);
