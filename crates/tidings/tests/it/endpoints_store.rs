//! Endpoint settings in the store, on both stores: ordered claims, 410 Gone, health.

use crate::helpers::stores;

use std::collections::HashSet;

use sqlx::Connection;

use tidings::domain::endpoint::{Endpoint, SuccessRule};
use tidings::domain::entities::Entity;
use tidings::domain::{EntityId, EventType, Level, Millis};
use tidings::store::{
    EmailFilter, Lease, NewWebhook, Next, Recorded, Store, WebhookFilter, WebhookStatus,
};

use stores::{attempt, id, new_event, new_webhook, recorded, T0};

const LEASE: Millis = Millis(T0.0 + 1_000_000);

/// Commits one MEETING_CHANGED event about `subject` with one webhook to `level`; with a
/// lease, returns what the hand-off got.
async fn event(
    store: &dyn Store,
    level: &EntityId,
    subject: &EntityId,
    ordered: bool,
    disabled: bool,
    lease: Option<&Lease>,
) -> (EntityId, usize) {
    let e = new_event(EventType::MeetingChanged, subject, "{}", T0);
    let w = NewWebhook {
        ordered,
        disabled,
        ..new_webhook(Level::Company, level, "https://c.example/hook", T0)
    };
    let wid = w.id.clone();
    let mut tx = store.write_alone().await.unwrap();
    let claimed = tx.add_event(&e, &[w], lease).await.unwrap();
    tx.commit().await.unwrap();
    (wid, claimed.len())
}

fn record(webhook: &EntityId, number: u32, status: u16, at: Millis, next: Next) -> Recorded {
    recorded(webhook, attempt(number, at, status), next)
}

async fn claim_ids(store: &dyn Store, owner: &str, now: Millis) -> HashSet<EntityId> {
    store
        .claim_due(owner, now, Millis(now.0 + 30_000), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.webhook.id)
        .collect()
}

#[tokio::test]
async fn an_ordered_webhook_waits_for_the_older_one_about_its_subject_and_others_do_not() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (level, meeting, other) = (id(), id(), id());
        let (first, _) = event(store, &level, &meeting, true, false, None).await;
        let (second, _) = event(store, &level, &meeting, true, false, None).await;
        let (elsewhere, _) = event(store, &level, &other, true, false, None).await;
        let (unordered, _) = event(store, &level, &meeting, false, false, None).await;

        let got = claim_ids(store, "a", T0).await;
        let want: HashSet<EntityId> = [first.clone(), elsewhere.clone(), unordered.clone()].into();
        assert_eq!(got, want, "{}: the second waits for the first", s.name);

        // The first fails and waits for a retry: the second still waits, even once due.
        let retry_at = Millis(T0.0 + 60_000);
        let t1 = Millis(T0.0 + 10);
        let results = [
            record(&first, 1, 500, t1, Next::RetryAt(retry_at)),
            record(&elsewhere, 1, 200, t1, Next::Succeeded),
            record(&unordered, 1, 200, t1, Next::Succeeded),
        ];
        assert_eq!(store.record("a", &results, t1).await.unwrap().len(), 3);
        let (w2, _) = store.webhook(&second).await.unwrap().unwrap();
        assert_eq!(
            w2.due_at,
            Some(retry_at),
            "{}: held back until the first's retry",
            s.name
        );
        assert!(claim_ids(store, "b", t1).await.is_empty(), "{}", s.name);
        let got = claim_ids(store, "b", retry_at).await;
        assert_eq!(got, [first.clone()].into(), "{}: the first only", s.name);
        let t2 = Millis(retry_at.0 + 10);
        assert!(claim_ids(store, "c", t2).await.is_empty(), "{}", s.name);

        // Once the first succeeded, the second goes.
        let done = [record(&first, 2, 200, t2, Next::Succeeded)];
        assert_eq!(store.record("b", &done, t2).await.unwrap(), vec![0]);
        assert_eq!(
            claim_ids(store, "c", t2).await,
            [second.clone()].into(),
            "{}",
            s.name
        );

        // A finally failed one lets the next go.
        let (third, _) = event(store, &level, &meeting, true, false, None).await;
        let failed = [record(&second, 1, 500, t2, Next::Failed)];
        assert!(claim_ids(store, "d", t2).await.is_empty(), "{}", s.name);
        store.record("c", &failed, t2).await.unwrap();
        assert_eq!(
            claim_ids(store, "d", t2).await,
            [third].into(),
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn an_ordered_webhook_is_handed_off_only_when_nothing_older_is_unfinished() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (level, meeting) = (id(), id());
        let lease = Lease {
            owner: "me".into(),
            until: LEASE,
        };
        let (first, handed) = event(store, &level, &meeting, true, false, Some(&lease)).await;
        assert_eq!(handed, 1, "{}: nothing older", s.name);
        let (second, handed) = event(store, &level, &meeting, true, false, Some(&lease)).await;
        assert_eq!(handed, 0, "{}: the first is in flight", s.name);
        let (w2, _) = store.webhook(&second).await.unwrap().unwrap();
        assert_eq!(
            (w2.status, w2.due_at),
            (WebhookStatus::Pending, Some(T0)),
            "{}",
            s.name
        );
        // An unordered one is handed off whatever is in flight.
        let (_, handed) = event(store, &level, &meeting, false, false, Some(&lease)).await;
        assert_eq!(handed, 1, "{}", s.name);
        assert!(claim_ids(store, "x", T0).await.is_empty(), "{}", s.name);
        store
            .record("me", &[record(&first, 1, 200, T0, Next::Succeeded)], T0)
            .await
            .unwrap();
        assert_eq!(
            claim_ids(store, "x", T0).await,
            [second].into(),
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn gone_disables_the_endpoint_its_pending_webhooks_and_queues_one_email() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (level, meeting) = (id(), id());
        let (gone, _) = event(store, &level, &meeting, false, false, None).await;
        let (in_flight, _) = event(store, &level, &meeting, false, false, None).await;
        let claimed = claim_ids(store, "a", T0).await;
        assert_eq!(claimed.len(), 2, "{}", s.name);
        let (waiting, _) = event(store, &level, &meeting, false, false, None).await;

        let t1 = Millis(T0.0 + 5);
        store
            .record("a", &[record(&gone, 1, 410, t1, Next::Gone)], t1)
            .await
            .unwrap();
        let e = store.endpoint(&level).await.unwrap();
        assert!(!e.enabled, "{}", s.name);
        assert_eq!(
            e.disabled_reason.as_deref(),
            Some("the receiver answered 410 Gone at 2023-11-14T22:13:20.005Z"),
            "{}",
            s.name
        );
        for (w, want) in [
            (&gone, WebhookStatus::Disabled),
            (&waiting, WebhookStatus::Disabled),
            (&in_flight, WebhookStatus::Pending),
        ] {
            let (w, _) = store.webhook(w).await.unwrap().unwrap();
            assert_eq!(w.status, want, "{}", s.name);
        }
        // The one in flight comes back for a retry: it waits as disabled too.
        let t2 = Millis(T0.0 + 6);
        store
            .record(
                "a",
                &[record(
                    &in_flight,
                    1,
                    500,
                    t2,
                    Next::RetryAt(Millis(T0.0 + 60_000)),
                )],
                t2,
            )
            .await
            .unwrap();
        let disabled = store
            .webhooks(&WebhookFilter {
                status: Some(WebhookStatus::Disabled),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(disabled.len(), 3, "{}", s.name);
        assert!(disabled.iter().all(|w| w.due_at.is_none()), "{}", s.name);
        assert_eq!(store.next_due_at().await.unwrap(), None, "{}", s.name);

        let emails = store
            .emails(&EmailFilter {
                level_id: Some(level.clone()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(emails.len(), 1, "{}: one e-mail", s.name);
        assert_eq!(
            emails[0].subject,
            "[Tidings] Endpoint https://c.example/hook disabled: it answered 410 Gone",
            "{}",
            s.name
        );
        assert_eq!(emails[0].disabled_reason, e.disabled_reason, "{}", s.name);

        // Enabled again, recover makes them due.
        let on = e
            .patched(Level::Company, &serde_json::json!({"enabled": true}))
            .unwrap();
        // A change of other settings leaves `enabled` as the store has it.
        let ordered_only = e
            .patched(Level::Company, &serde_json::json!({"ordered": true}))
            .unwrap();
        let stale = Endpoint {
            enabled: true,
            ..ordered_only
        };
        store.put_endpoint(&level, &stale, false, t2).await.unwrap();
        let still = store.endpoint(&level).await.unwrap();
        assert!(still.ordered && !still.enabled, "{}", s.name);
        assert_eq!(still.disabled_reason, e.disabled_reason, "{}", s.name);
        store.put_endpoint(&level, &on, true, t2).await.unwrap();
        assert_eq!(
            store.recover(&level, T0, t2).await.unwrap(),
            3,
            "{}",
            s.name
        );
        assert_eq!(claim_ids(store, "b", t2).await.len(), 3, "{}", s.name);
    }
}

#[tokio::test]
async fn settings_round_trip_and_new_webhooks_of_a_disabled_endpoint_are_kept_disabled() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (level, meeting) = (id(), id());
        assert_eq!(store.endpoint(&level).await.unwrap(), Endpoint::default());
        let settings = Endpoint {
            event_types: Some(vec![EventType::MeetingEnded, EventType::UserCreated]),
            ordered: true,
            enabled: true,
            disabled_reason: None,
            success: SuccessRule::Any2xx,
        };
        store
            .put_endpoint(&level, &settings, true, T0)
            .await
            .unwrap();
        assert_eq!(
            store.endpoint(&level).await.unwrap(),
            settings,
            "{}",
            s.name
        );
        let mut tx = store.read().await.unwrap();
        let other = id();
        assert_eq!(
            tx.endpoints(&[&level, &other]).await.unwrap(),
            vec![(level.clone(), settings.clone())],
            "{}",
            s.name
        );
        drop(tx);
        // The claim carries the level's success rule.
        event(store, &level, &meeting, false, false, None).await;
        let claimed = store.claim_due("a", T0, LEASE, 10).await.unwrap();
        assert_eq!(claimed[0].success, SuccessRule::Any2xx, "{}", s.name);

        let (kept, handed) = event(
            store,
            &level,
            &meeting,
            false,
            true,
            Some(&Lease {
                owner: "a".into(),
                until: LEASE,
            }),
        )
        .await;
        assert_eq!(handed, 0, "{}: never handed off", s.name);
        let (w, _) = store.webhook(&kept).await.unwrap().unwrap();
        assert_eq!((w.status, w.due_at), (WebhookStatus::Disabled, None));

        // A new webhook URL enables the endpoint (as the API's change does).
        let off = settings
            .patched(Level::Company, &serde_json::json!({"enabled": false}))
            .unwrap();
        store.put_endpoint(&level, &off, true, T0).await.unwrap();
        let mut tx = store.write_alone().await.unwrap();
        assert!(tx.enable_endpoint(&level, T0).await.unwrap(), "{}", s.name);
        assert!(!tx.enable_endpoint(&level, T0).await.unwrap(), "{}", s.name);
        tx.commit().await.unwrap();
        let on = store.endpoint(&level).await.unwrap();
        assert!(on.enabled && on.disabled_reason.is_none(), "{}", s.name);
    }
}

#[tokio::test]
async fn health_is_kept_as_attempts_are_recorded_and_read_for_many_levels_at_once() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (a, b, quiet) = (id(), id(), id());
        let mut hooks = Vec::new();
        for level in [&a, &a, &a, &b] {
            hooks.push(event(store, level, &id(), false, false, None).await.0);
        }
        claim_ids(store, "o", T0).await;
        let t1 = Millis(T0.0 + 1_000);
        let t2 = Millis(T0.0 + 2_000);
        store
            .record(
                "o",
                &[
                    record(&hooks[0], 1, 200, t1, Next::Succeeded),
                    record(&hooks[1], 1, 500, t2, Next::RetryAt(Millis(T0.0 + 60_000))),
                    record(&hooks[3], 1, 200, t1, Next::Succeeded),
                ],
                t2,
            )
            .await
            .unwrap();
        let t3 = Millis(T0.0 + 3_000);
        store
            .record("o", &[record(&hooks[2], 1, 503, t3, Next::Failed)], t3)
            .await
            .unwrap();
        let health = store
            .endpoint_health(&[a.clone(), b.clone(), quiet.clone()], t3)
            .await
            .unwrap();
        assert_eq!(
            health.len(),
            2,
            "{}: no row for a level never attempted",
            s.name
        );
        let ha = &health[&a];
        assert_eq!(ha.last_success_at, Some(t1), "{}", s.name);
        assert_eq!(ha.last_failure_at, Some(t3), "{}", s.name);
        assert_eq!(ha.last_error.as_deref(), Some("HTTP 503"), "{}", s.name);
        assert_eq!(ha.consecutive_failures, 2, "{}", s.name);
        assert_eq!((ha.successes_24h, ha.failures_24h), (1, 2), "{}", s.name);
        let hb = &health[&b];
        assert_eq!(
            (hb.consecutive_failures, hb.successes_24h, hb.failures_24h),
            (0, 1, 0)
        );
        // A day later the counters have aged out; the last times stay.
        let later = Millis(T0.0 + 25 * 3_600_000);
        let health = store
            .endpoint_health(std::slice::from_ref(&a), later)
            .await
            .unwrap();
        assert_eq!(
            (health[&a].successes_24h, health[&a].failures_24h),
            (0, 0),
            "{}",
            s.name
        );
        assert_eq!(health[&a].last_success_at, Some(t1), "{}", s.name);
    }
}

/// On PostgreSQL a recorded batch's health waits in memory for a moment and is then written
/// with no reader asking; what waits is written at once when the recorder stops
/// (`flush_recorded`). Read straight from the tables, not through the store's reads, which
/// write what waits first.
#[tokio::test]
async fn on_postgres_health_is_written_a_moment_after_the_record_and_at_once_when_it_stops() {
    let s = stores::postgres().await;
    let store = s.store.as_ref();
    let level = id();
    let (first, _) = event(store, &level, &id(), false, false, None).await;
    let (second, _) = event(store, &level, &id(), false, false, None).await;
    assert_eq!(claim_ids(store, "o", T0).await.len(), 2);
    let at = Millis(T0.0 + 1_000);
    let mut db = sqlx::PgConnection::connect(&s.url).await.unwrap();
    let successes =
        "SELECT COALESCE(SUM(successes), 0)::BIGINT FROM endpoint_hours WHERE level_id = $1";

    let results = [record(&first, 1, 200, at, Next::Succeeded)];
    assert_eq!(store.record("o", &results, at).await.unwrap().len(), 1);
    let written = async {
        loop {
            let n: i64 = sqlx::query_scalar(successes)
                .bind(level.as_str())
                .fetch_one(&mut db)
                .await
                .unwrap();
            if n == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), written)
        .await
        .expect("the health of a recorded batch is written without a read");

    let results = [record(&second, 1, 200, at, Next::Succeeded)];
    assert_eq!(store.record("o", &results, at).await.unwrap().len(), 1);
    store.flush_recorded().await;
    let n: i64 = sqlx::query_scalar(successes)
        .bind(level.as_str())
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(n, 2, "written when the recorder stops");
}

/// Batches recorded at the same time (on PostgreSQL, in transactions side by side, their
/// health written after them by one writer at a time) lose no count.
#[tokio::test]
async fn health_counts_every_attempt_of_batches_recorded_at_once() {
    const BATCHES: usize = 8;
    const EACH: usize = 5;
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (ok, failing) = (id(), id());
        let mut hooks = Vec::new();
        for _ in 0..BATCHES * EACH {
            hooks.push((
                event(store, &ok, &id(), false, false, None).await.0,
                event(store, &failing, &id(), false, false, None).await.0,
            ));
        }
        assert_eq!(claim_ids(store, "o", T0).await.len(), 2 * BATCHES * EACH);
        let at = Millis(T0.0 + 1_000);
        let batches = hooks.chunks(EACH).map(|chunk| {
            let results: Vec<Recorded> = chunk
                .iter()
                .flat_map(|(good, bad)| {
                    [
                        record(good, 1, 200, at, Next::Succeeded),
                        record(bad, 1, 503, at, Next::RetryAt(Millis(T0.0 + 60_000))),
                    ]
                })
                .collect();
            async move { store.record("o", &results, at).await.unwrap().len() }
        });
        let recorded: usize = futures::future::join_all(batches).await.into_iter().sum();
        assert_eq!(recorded, 2 * BATCHES * EACH, "{}", s.name);
        let health = store
            .endpoint_health(&[ok.clone(), failing.clone()], at)
            .await
            .unwrap();
        let n = (BATCHES * EACH) as u64;
        let h = &health[&ok];
        assert_eq!(
            (h.successes_24h, h.failures_24h, h.consecutive_failures),
            (n, 0, 0),
            "{}",
            s.name
        );
        assert_eq!(h.last_success_at, Some(at), "{}", s.name);
        let h = &health[&failing];
        assert_eq!(
            (h.successes_24h, h.failures_24h, h.consecutive_failures),
            (0, n, n),
            "{}",
            s.name
        );
        assert_eq!(h.last_error.as_deref(), Some("HTTP 503"), "{}", s.name);
    }
}

#[tokio::test]
async fn a_webhook_held_back_for_a_retry_goes_as_soon_as_an_early_retry_succeeds() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (level, meeting) = (id(), id());
        let (first, _) = event(store, &level, &meeting, true, false, None).await;
        let (second, _) = event(store, &level, &meeting, true, false, None).await;
        assert_eq!(claim_ids(store, "a", T0).await, [first.clone()].into());
        let hour_later = Millis(T0.0 + 3_600_000);
        store
            .record(
                "a",
                &[record(&first, 1, 500, T0, Next::RetryAt(hour_later))],
                T0,
            )
            .await
            .unwrap();
        // Retried by hand (the API's retry), long before its hour.
        let t1 = Millis(T0.0 + 1_000);
        store.retry(&first, t1).await.unwrap();
        assert_eq!(
            claim_ids(store, "b", t1).await,
            [first.clone()].into(),
            "{}",
            s.name
        );
        store
            .record("b", &[record(&first, 2, 200, t1, Next::Succeeded)], t1)
            .await
            .unwrap();
        assert_eq!(
            claim_ids(store, "c", t1).await,
            [second].into(),
            "{}: due at once, not in an hour",
            s.name
        );
    }
}

/// A change reads the endpoints of the levels above its entity with the entity itself (on
/// PostgreSQL), and what it reads afterwards is what the database holds: an endpoint it
/// enables reads as enabled, and an entity written twice ends as written last.
#[tokio::test]
async fn a_change_reads_the_endpoints_above_as_they_stand_after_its_own_writes() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let r = stores::reseller(Some("https://r.example/hook"));
        let d = stores::dealer(r.id());
        let mut tx = store.write_alone().await.unwrap();
        tx.put(&r, T0).await.unwrap();
        tx.put(&d, T0).await.unwrap();
        tx.commit().await.unwrap();
        let off = Endpoint {
            enabled: false,
            disabled_reason: Some("answered 410 Gone".into()),
            ..Endpoint::default()
        };
        store.put_endpoint(r.id(), &off, true, T0).await.unwrap();

        let mut tx = store.write_alone().await.unwrap();
        assert_eq!(tx.get_for_change(d.id()).await.unwrap(), Some(d.clone()));
        let read = tx.endpoints(&[r.id(), d.id()]).await.unwrap();
        assert_eq!(read, vec![(r.id().clone(), off.clone())], "{}", s.name);
        assert!(tx.enable_endpoint(r.id(), T0).await.unwrap(), "{}", s.name);
        let read = tx.endpoints(&[r.id()]).await.unwrap();
        assert!(read[0].1.enabled, "{}: reads its own enabling", s.name);

        let named = |name: &str| {
            let mut e = d.clone();
            if let Entity::Dealer(inner) = &mut e {
                inner.name = name.into();
            }
            e
        };
        tx.put(&named("Dealer 2"), T0).await.unwrap();
        let renamed = named("Dealer 3");
        tx.put(&renamed, T0).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.read().await.unwrap();
        assert_eq!(tx.get(d.id()).await.unwrap(), Some(renamed), "{}", s.name);
        assert!(store.endpoint(r.id()).await.unwrap().enabled, "{}", s.name);
    }
}

#[tokio::test]
async fn a_recorded_batch_of_any_size_writes_each_webhook_and_attempt_once() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        // 67 = one statement of 64 rows, then on PostgreSQL 3 in one of 4 (a row of
        // padding), on SQLite one of 2 and one of 1.
        let (level, meeting) = (id(), id());
        let mut ids = Vec::new();
        for _ in 0..67 {
            ids.push(event(store, &level, &meeting, false, false, None).await.0);
        }
        assert_eq!(claim_ids(store, "a", T0).await.len(), 67, "{}", s.name);
        let t1 = Millis(T0.0 + 10);
        let results: Vec<Recorded> = ids
            .iter()
            .enumerate()
            .map(|(i, w)| match i % 3 {
                0 => record(w, 1, 200, t1, Next::Succeeded),
                1 => record(w, 1, 500, t1, Next::RetryAt(Millis(T0.0 + 60_000))),
                _ => record(w, 1, 500, t1, Next::Failed),
            })
            .collect();
        let kept = store.record("a", &results, t1).await.unwrap();
        assert_eq!(kept, (0..67).collect::<Vec<_>>(), "{}", s.name);
        for (i, w) in ids.iter().enumerate() {
            let (webhook, attempts) = store.webhook(w).await.unwrap().unwrap();
            let want = [
                WebhookStatus::Succeeded,
                WebhookStatus::Pending,
                WebhookStatus::Failed,
            ][i % 3];
            assert_eq!(webhook.status, want, "{}: webhook {i}", s.name);
            assert_eq!(webhook.attempts, 1, "{}: webhook {i}", s.name);
            assert_eq!(attempts.len(), 1, "{}: webhook {i}'s attempts", s.name);
            assert_eq!(attempts[0].started_at, t1, "{}: webhook {i}", s.name);
        }
        // Recorded again (a retried batch): nothing changes, nothing is written twice.
        assert_eq!(
            store.record("a", &results, t1).await.unwrap(),
            Vec::<usize>::new()
        );
        let (_, attempts) = store.webhook(&ids[66]).await.unwrap().unwrap();
        assert_eq!(attempts.len(), 1, "{}", s.name);
    }
}
