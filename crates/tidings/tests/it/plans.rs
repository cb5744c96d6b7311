//! PostgreSQL's plans for the store's hot statements: each row looked up by its key, whatever
//! the tables' statistics. A prepared statement keeps the plan made at its first uses; in a
//! young database the tables are small then, and a plan that scans and hashes a small table
//! whole would stay while it grows to millions of rows.

use crate::helpers::stores;

use sqlx::{Connection, Executor, Row};

/// The generic plan of every hot statement, made on tables analysed while they held a few
/// rows (the statistics that favour whole-table scans most), reads no table whole and hashes
/// none.
#[tokio::test]
async fn hot_statements_look_rows_up_by_key_on_small_analysed_tables() {
    let s = stores::postgres().await;
    let mut conn = sqlx::PgConnection::connect(&s.url).await.unwrap();
    // A few rows in each table the statements read, then statistics of those.
    conn.execute(
        "INSERT INTO entities SELECT 'e' || i, CASE WHEN i <= 4 THEN 'site' ELSE 'meeting' END, \
         '{}', 0, 0 FROM generate_series(1, 20) i; \
         INSERT INTO entity_refs SELECT 'e' || (1 + i % 4), 'e' || i FROM generate_series(5, 20) i; \
         INSERT INTO endpoints (level_id, updated_at) SELECT 'e' || i, 0 FROM generate_series(1, 4) i; \
         INSERT INTO level_secrets (level_id, current, updated_at) \
         SELECT 'e' || i, 's', 0 FROM generate_series(1, 4) i; \
         INSERT INTO events SELECT 'v' || i, 'meeting.changed', 'e5', '{}', 0 \
         FROM generate_series(1, 20) i; \
         INSERT INTO webhooks (id, event_id, type, subject_id, level, level_id, url, created_at, \
         status, due_at, claimed_by, updated_at) SELECT 'w' || i, 'v' || i, 'meeting.changed', \
         'e5', 'site', 'e1', 'https://r.example/', 0, 'pending', 1, 'owner', 0 \
         FROM generate_series(1, 20) i; \
         ANALYZE",
    )
    .await
    .unwrap();
    let (statements, begin) = tidings::store::postgres_key_lookups();
    assert!(statements.len() >= 3);
    for (i, (sql, args)) in statements.iter().enumerate() {
        let mut tx = conn.begin_with(begin).await.unwrap();
        tx.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            .await
            .unwrap();
        tx.execute(format!("PREPARE hot{i} AS {sql}").as_str())
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN EXECUTE hot{i}{args}"))
            .fetch_all(&mut *tx)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan on") && !plan.contains("Hash"),
            "a table read whole or hashed:\n{sql}\n{plan}"
        );
        tx.rollback().await.unwrap();
    }
}
