//! PostgreSQL's plans for the store's hot statements: each row looked up by its key, whatever
//! the tables' statistics. A prepared statement keeps the plan made at its first uses; in a
//! young database the tables are small then, and a plan that reads a small table whole (a
//! sequential scan, a hash, or an index scan with no condition, its rows matched afterwards)
//! would stay while the table grows to millions of rows.

use crate::helpers::stores;

use sqlx::{Connection, Executor, Row};

/// The tables that `plan` (EXPLAIN's JSON) reads without a condition that finds their rows:
/// a sequential scan, or an index scan with no index condition (the whole index read in
/// order, its rows then matched by a filter or a join's filter); and whether it hashes.
/// With `scans_only`, only sequential scans and hashes count.
fn whole_reads(plan: &serde_json::Value, scans_only: bool, out: &mut Vec<String>) {
    let kind = plan["Node Type"].as_str().unwrap_or_default();
    if let Some(table) = plan["Relation Name"].as_str() {
        let found_by_key = match kind {
            "ModifyTable" => true,
            "Seq Scan" => false,
            _ if scans_only => true,
            "Index Scan" | "Index Only Scan" | "Bitmap Index Scan" => {
                plan.get("Index Cond").is_some()
            }
            "Bitmap Heap Scan" => plan.get("Recheck Cond").is_some(),
            _ => false,
        };
        if !found_by_key {
            out.push(format!("{kind} on {table}"));
        }
    }
    if kind.contains("Hash") {
        out.push(kind.to_owned());
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        whole_reads(child, scans_only, out);
    }
}

#[test]
fn whole_reads_are_told_from_lookups_by_key() {
    let plan = |node: serde_json::Value| {
        let mut out = Vec::new();
        whole_reads(&node, false, &mut out);
        out
    };
    let lookup = serde_json::json!({"Node Type": "Index Scan", "Relation Name": "webhooks",
        "Index Cond": "(id = v.column1)", "Filter": "(claimed_by = $3)"});
    let whole = serde_json::json!({"Node Type": "Index Scan", "Relation Name": "webhooks",
        "Filter": "(claimed_by = $3)"});
    let bitmap = serde_json::json!({"Node Type": "Bitmap Heap Scan", "Relation Name": "webhooks",
        "Recheck Cond": "(id = v.column1)"});
    assert!(plan(lookup.clone()).is_empty());
    assert!(plan(bitmap).is_empty());
    let joined = serde_json::json!({"Node Type": "Nested Loop", "Join Filter": "(id = column1)",
        "Plans": [{"Node Type": "Values Scan"}, {"Node Type": "Materialize", "Plans": [whole]}]});
    assert_eq!(plan(joined.clone()), ["Index Scan on webhooks"]);
    let mut scans = Vec::new();
    whole_reads(&joined, true, &mut scans);
    assert!(scans.is_empty(), "{scans:?}");
    let hashed = serde_json::json!({"Node Type": "Hash Join",
        "Plans": [lookup, {"Node Type": "Seq Scan", "Relation Name": "endpoints"}]});
    assert_eq!(plan(hashed), ["Hash Join", "Seq Scan on endpoints"]);
}

/// The generic plan of every hot statement, made on tables analysed while they were small
/// (the statistics that favour whole-table reads most), reads no table whole by a
/// sequential scan and hashes nothing; in a transaction that reads nothing in an index's
/// order (plain index scans off), it finds every row it reads through an index condition.
#[tokio::test]
async fn hot_statements_look_rows_up_by_key_on_small_analysed_tables() {
    let s = stores::postgres().await;
    let mut conn = sqlx::PgConnection::connect(&s.url).await.unwrap();
    // A few rows in each table the statements read (webhooks, a young store's first seconds:
    // a couple of thousand, nearly all done, their ids in the order they were written, as
    // webhook ids are), then statistics of those.
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
         status, due_at, claimed_by, updated_at) SELECT 'w' || lpad(i::text, 8, '0'), \
         'v' || (1 + i % 20), \
         'meeting.changed', 'e5', 'site', 'e1', 'https://r.example/', 0, \
         CASE WHEN i % 200 = 0 THEN 'pending' ELSE 'succeeded' END, \
         CASE WHEN i % 200 = 0 THEN 1 END, CASE WHEN i % 200 = 0 THEN 'owner' END, 0 \
         FROM generate_series(1, 2000) i; \
         ANALYZE",
    )
    .await
    .unwrap();
    let statements = tidings::store::postgres_key_lookups();
    assert!(statements.len() >= 4);
    for (i, hot) in statements.iter().enumerate() {
        let (sql, args, begin) = (&hot.sql, &hot.args, hot.begin);
        let mut tx = conn.begin_with(begin).await.unwrap();
        tx.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            .await
            .unwrap();
        tx.execute(format!("PREPARE hot{i} AS {sql}").as_str())
            .await
            .unwrap();
        let plan: serde_json::Value =
            sqlx::query(&format!("EXPLAIN (FORMAT JSON) EXECUTE hot{i}{args}"))
                .fetch_one(&mut *tx)
                .await
                .unwrap()
                .get(0);
        let mut whole = Vec::new();
        whole_reads(&plan[0]["Plan"], !hot.by_index_condition, &mut whole);
        assert!(
            whole.is_empty(),
            "{whole:?} in the plan of\n{sql}\n{plan:#}"
        );
        tx.rollback().await.unwrap();
    }
}
