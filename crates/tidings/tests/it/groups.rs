//! Grouped API changes (`Store::write`): changes that share one transaction, each undone
//! alone when it fails or is dropped, and on PostgreSQL run again alone when their group is
//! rolled back or a row lock stays held elsewhere.

use crate::helpers::app::Setup;
use crate::helpers::{metric, stores};

use stores::{dealer, id, new_event, reseller, T0};

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use sqlx::Connection;
use tidings::domain::entities::Entity;
use tidings::domain::EventType;
use tidings::store::{Store, StoreError};
use tokio::task::JoinHandle;

/// Whether the entity is stored, read outside any group.
async fn stored(store: &dyn Store, id: &tidings::domain::EntityId) -> bool {
    let mut tx = store.read().await.unwrap();
    tx.get(id).await.unwrap().is_some()
}

/// `a`, the commit of a change that put `written` in a group since rolled back, answers
/// Again and left nothing; the lane then goes on with a new group, where the same change
/// is kept.
async fn rolled_back_then_the_lane_goes_on(
    store: &Arc<dyn Store>,
    a: JoinHandle<Result<(), StoreError>>,
    written: &Entity,
) {
    let again = a.await.unwrap();
    assert!(matches!(again, Err(StoreError::Again)), "{again:?}");
    assert!(!stored(store.as_ref(), written.id()).await);

    let mut c = store.write(Some("lane")).await.unwrap();
    c.put(written, T0).await.unwrap();
    c.commit().await.unwrap();
    assert!(stored(store.as_ref(), written.id()).await);
}

#[tokio::test]
async fn a_dropped_change_is_undone_and_the_others_of_its_group_commit() {
    for s in stores::both().await {
        let store = s.store.clone();
        let (kept, dropped, unsent, last) = (
            reseller(None),
            reseller(None),
            reseller(None),
            reseller(None),
        );
        let mut a = store.write(Some("lane")).await.unwrap();
        a.put(&kept, T0).await.unwrap();
        // Its commit waits for the group's end; the lane goes to the next member.
        let a = tokio::spawn(a.commit());

        let mut b = store.write(Some("lane")).await.unwrap();
        b.put(&dropped, T0).await.unwrap();
        // A read sends what was put off: the member's writes went out, then it is dropped.
        assert!(
            b.get(kept.id()).await.unwrap().is_some(),
            "{}: the group's earlier change is visible to the next",
            s.name
        );
        drop(b);

        let mut c = store.write(Some("lane")).await.unwrap();
        c.put(&unsent, T0).await.unwrap();
        drop(c); // nothing of it went out

        let mut d = store.write(Some("lane")).await.unwrap();
        d.put(&last, T0).await.unwrap();
        d.commit().await.unwrap();
        a.await.unwrap().unwrap();

        let store = store.as_ref();
        assert!(stored(store, kept.id()).await, "{}", s.name);
        assert!(stored(store, last.id()).await, "{}", s.name);
        assert!(!stored(store, dropped.id()).await, "{}", s.name);
        assert!(!stored(store, unsent.id()).await, "{}", s.name);
    }
}

/// A statement of one change fails (a reference to a reseller that does not exist: the
/// foreign key on PostgreSQL): that change alone is undone, to its savepoint.
#[tokio::test]
async fn on_postgres_a_change_whose_statement_fails_is_undone_alone() {
    let s = stores::postgres().await;
    let store = s.store.clone();
    let (kept, last) = (reseller(None), reseller(None));
    let orphan = dealer(&id());
    let mut a = store.write(Some("lane")).await.unwrap();
    a.put(&kept, T0).await.unwrap();
    let a = tokio::spawn(a.commit());

    let mut b = store.write(Some("lane")).await.unwrap();
    let refused = b.put(&orphan, T0).await;
    assert!(
        matches!(refused, Err(StoreError::Vanished(_))),
        "{refused:?}"
    );
    drop(b);

    let mut c = store.write(Some("lane")).await.unwrap();
    c.put(&last, T0).await.unwrap();
    c.commit().await.unwrap();
    a.await.unwrap().unwrap();

    let store = store.as_ref();
    assert!(stored(store, kept.id()).await);
    assert!(stored(store, last.id()).await);
    assert!(!stored(store, orphan.id()).await);
}

#[tokio::test]
async fn on_postgres_a_change_gives_up_a_lock_held_elsewhere_and_a_lone_one_waits_for_it() {
    let s = stores::postgres().await;
    let store = s.store.clone();
    let r = reseller(None);
    let mut tx = store.write_alone().await.unwrap();
    tx.put(&r, T0).await.unwrap();
    tx.commit().await.unwrap();

    let mut holder = store.write_alone().await.unwrap();
    assert!(holder.get_for_change(r.id()).await.unwrap().is_some());
    let mut grouped = store.write(Some(r.id().as_str())).await.unwrap();
    let gave_up = grouped.get_for_change(r.id()).await;
    assert!(matches!(gave_up, Err(StoreError::Again)), "{gave_up:?}");
    drop(grouped);

    // Alone, it waits for the lock as long as it is held.
    let lone = tokio::spawn({
        let store = store.clone();
        let id = r.id().clone();
        async move {
            let mut tx = store.write_alone().await.unwrap();
            let found = tx.get_for_change(&id).await.map(|e| e.is_some());
            tx.commit().await.map(|_| found)
        }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!lone.is_finished());
    holder.commit().await.unwrap();
    assert!(lone.await.unwrap().unwrap().unwrap());
}

#[tokio::test]
async fn on_postgres_a_failure_outside_a_change_rolls_its_group_back_and_each_answers_again() {
    let s = stores::postgres().await;
    let store = s.store.clone();
    let r = reseller(None);
    let event = new_event(EventType::DealerCreated, r.id(), "{}", T0);
    let mut tx = store.write_alone().await.unwrap();
    tx.put(&r, T0).await.unwrap();
    tx.add_event(&event, &[], None).await.unwrap();
    tx.commit().await.unwrap();

    // The event again: its insert is put off, and fails with the next member's statement.
    let written = reseller(None);
    let mut a = store.write(Some("lane")).await.unwrap();
    a.put(&written, T0).await.unwrap();
    a.add_event(&event, &[], None).await.unwrap();
    let a = tokio::spawn(a.commit());
    let mut b = store.write(Some("lane")).await.unwrap();
    let rolled_back = b.get(r.id()).await;
    assert!(
        matches!(rolled_back, Err(StoreError::Again)),
        "{rolled_back:?}"
    );
    drop(b);
    rolled_back_then_the_lane_goes_on(&store, a, &written).await;
}

/// More changes queue for one lane than a group holds: the change that fills the group
/// commits it itself, the rest make the next group, and every change is kept.
#[tokio::test]
async fn changes_past_a_full_group_all_commit() {
    for s in stores::both().await {
        let resellers: Vec<_> = (0..40).map(|_| reseller(None)).collect();
        let changes: Vec<_> = resellers
            .iter()
            .map(|r| {
                let (store, r) = (s.store.clone(), r.clone());
                tokio::spawn(async move {
                    let mut tx = store.write(Some("lane")).await?;
                    tx.put(&r, T0).await?;
                    tx.commit().await
                })
            })
            .collect();
        for change in changes {
            change.await.unwrap().unwrap();
        }
        for r in &resellers {
            assert!(stored(s.store.as_ref(), r.id()).await, "{}", s.name);
        }
    }
}

/// A change dropped while its round trip is under way leaves its group's state unknown:
/// the group is rolled back (by the flusher or the lane's next change, whichever comes
/// first), its changes answer Again, and the lane goes on with a new one.
#[tokio::test]
async fn on_postgres_a_change_cancelled_mid_round_trip_rolls_its_group_back() {
    let s = stores::postgres().await;
    let store = s.store.clone();
    let r = reseller(None);
    let mut tx = store.write_alone().await.unwrap();
    tx.put(&r, T0).await.unwrap();
    tx.commit().await.unwrap();

    let written = reseller(None);
    let mut a = store.write(Some("lane")).await.unwrap();
    a.put(&written, T0).await.unwrap();
    let a = tokio::spawn(a.commit());
    let mut b = store.write(Some("lane")).await.unwrap();
    {
        // b's read goes out (with a's writes), and b is dropped before the answer.
        let mut read = Box::pin(b.get(r.id()));
        assert!(futures::poll!(read.as_mut()).is_pending());
    }
    drop(b);
    rolled_back_then_the_lane_goes_on(&store, a, &written).await;
}

/// A group's `COMMIT` goes on without its lane: while one waits (here its deferred check
/// waits for a lock the test holds), the lane's next change opens a group of its own on
/// another connection and commits; the first commits once the lock is let go.
#[tokio::test]
async fn on_postgres_a_group_waiting_for_its_commit_leaves_the_lane_to_the_next() {
    let s = stores::postgres().await;
    let store = s.store.clone();
    let (held, next) = (reseller(None), reseller(None));
    let mut gate = sqlx::PgConnection::connect(&s.url).await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION wait_at_commit() RETURNS trigger LANGUAGE plpgsql SET lock_timeout = 0 AS $$ \
         BEGIN IF NEW.id = '{}' THEN PERFORM pg_advisory_xact_lock_shared(1); END IF; RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER wait_at_commit AFTER INSERT ON entities \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION wait_at_commit(); \
         SELECT pg_advisory_lock(1);",
        held.id()
    ))
    .execute(&mut gate)
    .await
    .unwrap();

    let mut a = store.write(Some("lane")).await.unwrap();
    a.put(&held, T0).await.unwrap();
    let a = tokio::spawn(a.commit());
    let waiting = "SELECT COUNT(*) FROM pg_stat_activity \
                   WHERE wait_event = 'advisory' AND datname = current_database()";
    while sqlx::query_scalar::<_, i64>(waiting)
        .fetch_one(&mut gate)
        .await
        .unwrap()
        == 0
    {
        tokio::task::yield_now().await;
    }

    // The same key: the same lane, whose group waits for its commit.
    let then = async {
        let mut b = store.write(Some("lane")).await?;
        b.put(&next, T0).await?;
        b.commit().await
    };
    let committed = tokio::time::timeout(std::time::Duration::from_secs(30), then).await;
    assert!(
        matches!(committed, Ok(Ok(()))),
        "the next change commits while the group before it waits: {committed:?}"
    );
    assert!(stored(store.as_ref(), next.id()).await);
    assert!(!a.is_finished());
    assert!(!stored(store.as_ref(), held.id()).await);

    sqlx::query("SELECT pg_advisory_unlock(1)")
        .execute(&mut gate)
        .await
        .unwrap();
    a.await.unwrap().unwrap();
    assert!(stored(store.as_ref(), held.id()).await);
}

/// Through the API: a PATCH whose entity is locked elsewhere longer than a grouped change
/// waits runs again alone, waits for the lock, and succeeds.
#[tokio::test]
async fn on_postgres_a_patch_behind_a_held_lock_runs_again_alone_and_succeeds() {
    let url = stores::fresh_postgres_database().await;
    let app = Setup::new().on_database(&url).quiet().start().await;
    let reseller = app.create_reseller("https://r.example/hook").await;

    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT id FROM entities WHERE id = $1 FOR UPDATE")
        .bind(&reseller)
        .execute(&mut holder)
        .await
        .unwrap();
    let path = format!("/v1/resellers/{reseller}");
    let release = async {
        // Once the PATCH waits for the lock, hold it well past a grouped change's lock
        // timeout (the server's own clock): the grouped attempt gives up, the lone one waits.
        let waiting = "SELECT COUNT(*) FROM pg_stat_activity \
                       WHERE wait_event_type = 'Lock' AND datname = current_database()";
        loop {
            let n: i64 = sqlx::query_scalar(waiting)
                .fetch_one(&mut holder)
                .await
                .unwrap();
            if n > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    };
    let ((status, body), ()) = tokio::join!(
        app.request(
            Method::PATCH,
            &path,
            Some(serde_json::json!({"name": "Renamed"}))
        ),
        release
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Renamed");
    assert_eq!(
        metric(&app.metrics().await, "tidings_changes_ran_again_total"),
        Some(1.0),
        "the PATCH ran again alone"
    );
}
