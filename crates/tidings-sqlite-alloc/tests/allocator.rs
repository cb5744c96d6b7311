//! SQLite's allocator hook (mimalloc below a page, the C library above, a size header on each
//! block) under a workload that splits, merges and renumbers B-tree pages, journals
//! savepoints and rolls growth back, and with values that grow and shrink across the
//! boundary: every byte SQLite keeps must come back as it was written.
//!
//! Each test installs the hook before it first uses SQLite (it goes in only before SQLite's
//! first use in a process). `scripts/memcheck` runs these tests under Valgrind's memcheck.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

/// A small deterministic generator (no dependency, same run every time).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type Model = BTreeMap<String, (i64, String)>;

fn insert(db: &Connection, model: &mut Model, rng: &mut Lcg) {
    let id = format!("{:016x}", rng.next());
    let due = rng.below(1_000_000) as i64;
    let body = "x".repeat(50 + rng.below(400) as usize);
    db.execute(
        "INSERT OR REPLACE INTO t (id, due, body) VALUES (?1, ?2, ?3)",
        params![id, due, body],
    )
    .unwrap();
    model.insert(id, (due, body));
}

fn some_key(model: &Model, rng: &mut Lcg) -> Option<String> {
    if model.is_empty() {
        return None;
    }
    let n = rng.below(model.len() as u64) as usize;
    model.keys().nth(n).cloned()
}

fn contents(db: &Connection) -> Model {
    let mut stmt = db
        .prepare("SELECT id, due, body FROM t ORDER BY id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Inserts, moves within an index and deletes, in transactions with savepoints, some of them
/// rolled back: the database stays exactly what the same operations on a map give, and
/// `integrity_check` passes, in the connection and in the file.
#[test]
fn a_database_under_splits_and_rollbacks_stays_exactly_the_model() {
    assert!(tidings_sqlite_alloc::install());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let db = Connection::open(&path).unwrap();
    db.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    db.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;
         CREATE TABLE t (id TEXT PRIMARY KEY, due INTEGER NOT NULL, body TEXT NOT NULL);
         CREATE INDEX t_due ON t (due);",
    )
    .unwrap();

    let mut rng = Lcg(7);
    let mut model = Model::new();
    for round in 0..60 {
        let before = model.clone();
        db.execute_batch("BEGIN IMMEDIATE").unwrap();
        for _ in 0..60 {
            match rng.below(10) {
                0..=5 => insert(&db, &mut model, &mut rng),
                6 | 7 => {
                    if let Some(id) = some_key(&model, &mut rng) {
                        let due = rng.below(1_000_000) as i64;
                        db.execute("UPDATE t SET due = ?1 WHERE id = ?2", params![due, id])
                            .unwrap();
                        model.get_mut(&id).unwrap().0 = due;
                    }
                }
                _ => {
                    if let Some(id) = some_key(&model, &mut rng) {
                        db.execute("DELETE FROM t WHERE id = ?1", params![id])
                            .unwrap();
                        model.remove(&id);
                    }
                }
            }
        }
        if round % 5 == 0 {
            // Growth inside a savepoint (its journal in memory), rolled back.
            let kept = model.clone();
            db.execute_batch("SAVEPOINT s").unwrap();
            for _ in 0..200 {
                insert(&db, &mut model, &mut rng);
            }
            db.execute_batch("ROLLBACK TO s; RELEASE s").unwrap();
            model = kept;
        }
        if round % 7 == 3 {
            db.execute_batch("ROLLBACK").unwrap();
            model = before;
        } else {
            db.execute_batch("COMMIT").unwrap();
        }
    }

    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    assert!(model.len() > 1_000, "the workload grew the table");
    assert_eq!(contents(&db), model);
    drop(db);
    let reopened = Connection::open(&path).unwrap();
    assert_eq!(contents(&reopened), model, "as stored in the file");
}

/// Text that SQLite grows by reallocation (`group_concat`) and by fresh allocation (`||`)
/// from a few bytes to 24 KiB, then cuts back down: every block keeps its contents whichever
/// allocator holds it and whichever way it moves between them.
#[test]
fn sqlite_values_keep_their_contents_across_allocators() {
    assert!(tidings_sqlite_alloc::install());
    let db = Connection::open_in_memory().unwrap();
    let expected: String = (1..=4000)
        .map(|i| format!("{i:05}"))
        .collect::<Vec<_>>()
        .join(",");
    let (concatenated, rebuilt, tail): (String, String, String) = db
        .query_row(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000),
                  grown(i, s) AS (SELECT 1, '00001'
                                  UNION ALL SELECT i + 1, s || ',' || printf('%05d', i + 1)
                                  FROM grown WHERE i < 4000)
             SELECT (SELECT group_concat(printf('%05d', i), ',') FROM n),
                    (SELECT s FROM grown WHERE i = 4000),
                    substr((SELECT s FROM grown WHERE i = 4000), -17)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(concatenated.len(), expected.len());
    assert_eq!(concatenated, expected);
    assert_eq!(rebuilt, expected);
    assert_eq!(tail, "03998,03999,04000");
}
