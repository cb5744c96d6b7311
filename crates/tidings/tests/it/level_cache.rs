//! On PostgreSQL each instance keeps the levels it has read in memory, with the generation of
//! the levels it read them at (store/levels.rs). What another instance changes of a level, its
//! endpoint or its signing secrets is read by the next change anywhere; a transaction reads
//! its own changes; a rolled-back change leaves nothing behind.

use std::sync::Arc;

use sqlx::{Connection, Executor, Row};

use tidings::domain::endpoint::Endpoint;
use tidings::domain::entities::{Entity, Package};
use tidings::domain::{EntityId, EventType, Level, Millis};
use tidings::store::{Lease, Store};

use crate::helpers::stores::{self, dealer, new_event, new_webhook, reseller, T0};

/// What a new change on `store` reads above the dealer `d`: its reseller `r`'s webhook URL,
/// endpoint settings (if stored), and the signing secret a webhook handed off to `r` carries.
async fn read_above(
    store: &dyn Store,
    d: &EntityId,
    r: &EntityId,
) -> (Option<String>, Option<Endpoint>, Option<String>) {
    let mut tx = store.write(None).await.unwrap();
    assert!(tx.get_for_change(d).await.unwrap().is_some());
    let Some(Entity::Reseller(res)) = tx.get(r).await.unwrap() else {
        panic!("the reseller {r} is gone");
    };
    let endpoint = tx.endpoints(&[r]).await.unwrap().pop().map(|(_, e)| e);
    let lease = Lease {
        owner: "test".into(),
        until: Millis(T0.0 + 60_000),
    };
    let event = new_event(EventType::DealerChanged, d, "{}", T0);
    let webhook = new_webhook(Level::Reseller, r, "https://r.example/hook", T0);
    let claimed = tx
        .add_event(&event, &[webhook], Some(&lease))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let secret = claimed[0].secrets.as_ref().map(|s| s.current.clone());
    (res.webhook_url, endpoint, secret)
}

/// The reseller `r` with its webhook URL set to `url`.
fn with_url(r: &Entity, url: &str) -> Entity {
    let Entity::Reseller(mut res) = r.clone() else {
        unreachable!()
    };
    res.webhook_url = Some(url.into());
    Entity::Reseller(res)
}

fn url(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[tokio::test]
async fn an_instance_reads_what_another_changed_of_a_level_at_its_next_change() {
    let db = stores::fresh_postgres_database().await;
    let a: Arc<dyn Store> = tidings::store::open(&db).await.unwrap();
    let b: Arc<dyn Store> = tidings::store::open(&db).await.unwrap();
    let r = reseller(Some("https://one.example/hook"));
    let d = dealer(r.id());
    let (rid, did) = (r.id().clone(), d.id().clone());
    let mut tx = a.write_alone().await.unwrap();
    tx.put(&r, T0).await.unwrap();
    tx.put(&d, T0).await.unwrap();
    tx.put_secret(&rid, "sealed-1", T0).await.unwrap();
    tx.commit().await.unwrap();

    let one = (url("https://one.example/hook"), None, url("sealed-1"));
    assert_eq!(read_above(b.as_ref(), &did, &rid).await, one);
    assert_eq!(read_above(b.as_ref(), &did, &rid).await, one);

    // b answers from memory: a change to the reseller's row that announces nothing (the
    // store's writes of a level announce themselves in `level_writes`) is not seen by b,
    // while a new instance reads it.
    let mut admin = sqlx::PgConnection::connect(&db).await.unwrap();
    admin
        .execute(
            format!(
                "UPDATE entities SET doc = replace(doc, 'one.example', 'unseen.example') \
                 WHERE id = '{rid}'"
            )
            .as_str(),
        )
        .await
        .unwrap();
    assert_eq!(read_above(b.as_ref(), &did, &rid).await, one);
    let c: Arc<dyn Store> = tidings::store::open(&db).await.unwrap();
    assert_eq!(
        read_above(c.as_ref(), &did, &rid).await.0,
        url("https://unseen.example/hook")
    );

    // Changed on a: the level, then its endpoint settings, then its secret.
    let mut tx = a.write_alone().await.unwrap();
    tx.put(&with_url(&r, "https://two.example/hook"), T0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let two = (url("https://two.example/hook"), None, url("sealed-1"));
    assert_eq!(read_above(b.as_ref(), &did, &rid).await, two);
    assert_eq!(read_above(b.as_ref(), &did, &rid).await, two);
    // A view's read takes the levels from memory too, at the generation it reads.
    for _ in 0..2 {
        let mut read = b.read().await.unwrap();
        assert!(read.get(&did).await.unwrap().is_some());
        assert_eq!(
            read.get(&rid).await.unwrap(),
            Some(with_url(&r, "https://two.example/hook"))
        );
    }

    let ordered = Endpoint::default()
        .patched(Level::Reseller, &serde_json::json!({"ordered": true}))
        .unwrap();
    a.put_endpoint(&rid, &ordered, true, T0).await.unwrap();
    let (_, endpoint, _) = read_above(b.as_ref(), &did, &rid).await;
    assert_eq!(endpoint, Some(ordered.clone()));

    a.rotate_secret(&rid, "sealed-2", Millis(T0.0 + 1_000), T0)
        .await
        .unwrap();
    let now = (
        url("https://two.example/hook"),
        Some(ordered),
        url("sealed-2"),
    );
    assert_eq!(read_above(b.as_ref(), &did, &rid).await, now);
    assert_eq!(read_above(b.as_ref(), &did, &rid).await, now);

    // A transaction reads its own change of a level, with its entity's next locked read too;
    // dropped, it leaves nothing in b's memory.
    let mut tx = b.write_alone().await.unwrap();
    assert!(tx.get_for_change(&did).await.unwrap().is_some());
    let three = with_url(&r, "https://three.example/hook");
    tx.put(&three, T0).await.unwrap();
    assert!(tx.get_for_change(&did).await.unwrap().is_some());
    assert_eq!(tx.get(&rid).await.unwrap(), Some(three.clone()));
    drop(tx);
    assert_eq!(read_above(b.as_ref(), &did, &rid).await, now);

    // Committed on b, read on a and on b.
    let mut tx = b.write_alone().await.unwrap();
    assert!(tx.get_for_change(&did).await.unwrap().is_some());
    tx.put(&three, T0).await.unwrap();
    tx.commit().await.unwrap();
    for store in [&a, &b] {
        assert_eq!(
            read_above(store.as_ref(), &did, &rid).await.0,
            url("https://three.example/hook")
        );
    }
}

/// The generation of the levels as a new statement reads it.
async fn generation(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query("SELECT n FROM level_generation WHERE id = 1")
        .fetch_one(conn)
        .await
        .unwrap()
        .get(0)
}

/// Runs `sql` on `conn` and answers whether the generation changed.
async fn takes_a_generation(conn: &mut sqlx::PgConnection, sql: &str) -> bool {
    let before = generation(conn).await;
    conn.execute(sql).await.unwrap();
    generation(conn).await != before
}

#[tokio::test]
async fn every_commit_that_changes_a_level_takes_a_new_generation_and_no_other_does() {
    let db = stores::fresh_postgres_database().await;
    let store = tidings::store::open(&db).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&db).await.unwrap();

    // Entities, through the store's transactions.
    let r = reseller(None);
    let d = dealer(r.id());
    let package = Entity::Package(Package {
        id: stores::id(),
        name: "P".into(),
        features: vec![],
    });
    for (entity, is_level) in [(&r, true), (&d, true), (&package, false)] {
        let before = generation(&mut conn).await;
        let mut tx = store.write_alone().await.unwrap();
        tx.put(entity, T0).await.unwrap();
        drop(tx);
        assert_eq!(generation(&mut conn).await, before, "dropped: {entity:?}");
        let mut tx = store.write(None).await.unwrap();
        tx.put(entity, T0).await.unwrap();
        tx.commit().await.unwrap();
        let after = generation(&mut conn).await;
        assert_eq!(after != before, is_level, "written: {entity:?}");
        let mut tx = store.write_alone().await.unwrap();
        tx.get_for_change(entity.id()).await.unwrap();
        tx.put(entity, T0).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            generation(&mut conn).await != after,
            is_level,
            "written again: {entity:?}"
        );
    }
    for (entity, is_level) in [(&d, true), (&package, false)] {
        let before = generation(&mut conn).await;
        let mut tx = store.write_alone().await.unwrap();
        tx.get_for_change(entity.id()).await.unwrap();
        tx.delete(entity.id()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            generation(&mut conn).await != before,
            is_level,
            "deleted: {entity:?}"
        );
    }
    let left: i64 = sqlx::query("SELECT count(*) FROM level_writes")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "announcements outlive their transactions");

    // Endpoint settings and secrets, whoever writes them.
    for sql in [
        "INSERT INTO endpoints (level_id, updated_at) VALUES ('l1', 0)",
        "UPDATE endpoints SET ordered = 1 WHERE level_id = 'l1'",
        "DELETE FROM endpoints WHERE level_id = 'l1'",
        "INSERT INTO level_secrets (level_id, current, updated_at) VALUES ('l1', 's', 0)",
        "UPDATE level_secrets SET current = 't' WHERE level_id = 'l1'",
        "DELETE FROM level_secrets WHERE level_id = 'l1'",
    ] {
        assert!(takes_a_generation(&mut conn, sql).await, "{sql}");
    }
    let rolled_back =
        "BEGIN; INSERT INTO level_secrets (level_id, current, updated_at) VALUES ('l2', 's', 0); \
         ROLLBACK";
    assert!(!takes_a_generation(&mut conn, rolled_back).await);

    // Inside a transaction the mark of a level changed is the transaction's own, and a
    // savepoint's rollback takes it back (a group of changes is one transaction).
    let written = "SELECT coalesce(current_setting('tidings.levels_written', true), '') = 'on'";
    let mut marked = Vec::new();
    for sql in [
        "BEGIN",
        "SAVEPOINT change",
        "INSERT INTO level_writes DEFAULT VALUES",
        "ROLLBACK TO SAVEPOINT change",
        "INSERT INTO entities VALUES ('u2', 'user', '{}', 0, 0)",
        "INSERT INTO level_secrets (level_id, current, updated_at) VALUES ('l2', 's', 0)",
        "COMMIT",
    ] {
        conn.execute(sql).await.unwrap();
        let on: bool = sqlx::query(written)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        marked.push(on);
    }
    assert_eq!(marked, [false, false, true, false, false, true, false]);
}
