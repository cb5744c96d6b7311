-- The generation of the levels, which lets each instance keep the levels it has read in
-- memory (store/levels.rs): a number that every transaction changing what a change reads of a
-- level takes anew, from a sequence, as it commits. What a change reads of a level is the
-- level entity (reseller, dealer, company, site), its endpoint settings and its signing
-- secrets. An instance uses what it remembers only while the generation it reads with a
-- change's own entity is the one it remembered them at.
--
-- The number is taken by deferred triggers, at commit, after every other statement of the
-- transaction: the row's lock orders the commits of the transactions that change levels (a
-- few: settings, secrets, the levels themselves; the changes below the levels, of users and
-- meetings, never take it), and its holder waits for nothing but its own commit, so it can
-- be part of no deadlock. Values are never reused, so a generation that a rolled-back
-- transaction took is never the one another reads.
--
-- Until it commits, a transaction that has changed a level reads its own changes, which no
-- generation describes yet: the immediate triggers mark it (the transaction-local setting
-- `tidings.levels_written`, undone with a savepoint's rollback), and its reads then report
-- no generation.
CREATE SEQUENCE level_generation_seq;

-- One row, read by its key like every row a change reads.
CREATE TABLE level_generation (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    n  BIGINT NOT NULL
);
INSERT INTO level_generation (id, n) VALUES (1, nextval('level_generation_seq'));

CREATE FUNCTION tidings_level_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('tidings.levels_written', 'on', true);
    RETURN NULL;
END
$$;

CREATE FUNCTION tidings_level_committed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Waits as long as the commit before takes (grouped changes wait at most 50 ms for a
    -- row lock; here that would fail a whole group whenever another's WAL flush, or its
    -- connection's first use of this function, took longer). Its holder waits for nothing
    -- but its own commit: no deadlock can form.
    PERFORM set_config('lock_timeout', '0', true);
    UPDATE level_generation SET n = nextval('level_generation_seq') WHERE id = 1;
    -- This transaction's announcements, and any a crash left: others' are not visible yet.
    DELETE FROM level_writes;
    RETURN NULL;
END
$$;

-- A level entity's write is announced by a row in `level_writes`, which the store inserts
-- with it (store/change.rs, `put` and `delete`), rather than by triggers on `entities`: a
-- row trigger on updates of `entities`, even one whose condition is false, cost the server
-- 8 to 12 µs of CPU on every update of any entity, and meetings and users are updated by
-- nearly every change. The rows last until their transaction's commit.
CREATE TABLE level_writes (
    written BOOLEAN NOT NULL DEFAULT true
);

CREATE TRIGGER level_written AFTER INSERT ON level_writes FOR EACH ROW
    EXECUTE FUNCTION tidings_level_written();
CREATE TRIGGER endpoint_written AFTER INSERT OR UPDATE OR DELETE ON endpoints FOR EACH ROW
    EXECUTE FUNCTION tidings_level_written();
CREATE TRIGGER level_secret_written AFTER INSERT OR UPDATE OR DELETE ON level_secrets
    FOR EACH ROW EXECUTE FUNCTION tidings_level_written();

CREATE CONSTRAINT TRIGGER level_committed AFTER INSERT ON level_writes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION tidings_level_committed();
CREATE CONSTRAINT TRIGGER endpoint_committed AFTER INSERT OR UPDATE OR DELETE ON endpoints
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION tidings_level_committed();
CREATE CONSTRAINT TRIGGER level_secret_committed AFTER INSERT OR UPDATE OR DELETE
    ON level_secrets DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION tidings_level_committed();
