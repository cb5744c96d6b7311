-- A reference may only point at an entity that exists. Changes run side by side on
-- PostgreSQL and read without row locks; this key is what keeps a parent from being deleted
-- under a new child: inserting a reference key-share-locks its target until the change
-- commits, and fails if a concurrent change deleted it. (SQLite has one writer, which reads
-- and writes a change's references without anyone in between.)
ALTER TABLE entity_refs ADD CONSTRAINT entity_refs_target
    FOREIGN KEY (target) REFERENCES entities (id);
