//! The store's contract, run against both implementations (SQLite file, PostgreSQL database):
//! the same calls must give the same answers.

use crate::helpers::stores;

use stores::{attempt, dealer, id, new_event, new_webhook, queue, recorded, reseller, T0};

use std::collections::HashSet;

use tidings::domain::entities::Entity;
use tidings::domain::{EntityId, EventType, Kind, Level, Millis};
use tidings::store::{
    Attempt, Lease, NewEvent, Next, Recorded, RetryOutcome, Store, StoreError, WebhookFilter,
    WebhookStatus,
};

#[tokio::test]
async fn entities_round_trip_and_references_block_nothing_else() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let r = reseller(None);
        let d = dealer(r.id());
        let mut tx = store.write_alone().await.unwrap();
        tx.put(&r, T0).await.unwrap();
        tx.put(&d, T0).await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = store.read().await.unwrap();
        assert_eq!(
            tx.get(r.id()).await.unwrap().as_ref(),
            Some(&r),
            "{}",
            s.name
        );
        let referrers = tx.referrers(r.id(), None, 10).await.unwrap();
        assert_eq!(referrers, vec![d.clone()], "{}", s.name);
        assert!(
            tx.referrers(r.id(), Some(Kind::User), 10)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            s.name
        );
        drop(tx);

        assert_eq!(
            store.list(Kind::Dealer, None, 10).await.unwrap(),
            vec![d.clone()],
            "{}",
            s.name
        );
        assert!(
            store
                .list(Kind::Dealer, Some(d.id()), 10)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            s.name
        );

        let mut tx = store.write_alone().await.unwrap();
        tx.delete(d.id()).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.read().await.unwrap();
        assert_eq!(tx.get(d.id()).await.unwrap(), None, "{}", s.name);
        assert!(
            tx.referrers(r.id(), None, 10).await.unwrap().is_empty(),
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn an_uncommitted_change_leaves_no_entity_event_or_webhook() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let r = reseller(Some("https://r.example/hook"));
        {
            let mut tx = store.write_alone().await.unwrap();
            tx.put(&r, T0).await.unwrap();
            let event = new_event(EventType::DealerCreated, &id(), "{}", T0);
            let w = new_webhook(Level::Reseller, r.id(), "https://r.example/hook", T0);
            tx.add_event(&event, &[w], None).await.unwrap();
            // dropped without commit
        }
        let mut tx = store.read().await.unwrap();
        assert_eq!(tx.get(r.id()).await.unwrap(), None, "{}", s.name);
        let all = store
            .webhooks(&WebhookFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(all.is_empty(), "{}", s.name);
    }
}

/// A write transaction reads what is committed: on SQLite the writer answers from the
/// entities it remembers, and must never answer with what a transaction wrote and then rolled
/// back (dropped, or failed after its write), nor miss what one committed or deleted.
#[tokio::test]
async fn a_write_transaction_reads_the_committed_entity_never_a_rolled_back_one() {
    /// What a new write transaction reads for `id`.
    async fn expect(store: &dyn Store, id: &EntityId, want: Option<&Entity>, name: &str) {
        let mut tx = store.write_alone().await.unwrap();
        assert_eq!(
            tx.get_for_change(id).await.unwrap().as_ref(),
            want,
            "{name}"
        );
    }
    for s in stores::both().await {
        let store = s.store.as_ref();
        let first = reseller(Some("https://first.example/hook"));
        let Entity::Reseller(mut r) = first.clone() else {
            unreachable!()
        };
        r.webhook_url = Some("https://second.example/hook".into());
        let second = Entity::Reseller(r);

        let mut tx = store.write_alone().await.unwrap();
        tx.put(&first, T0).await.unwrap();
        tx.commit().await.unwrap();
        expect(store, first.id(), Some(&first), s.name).await;

        // Written, then dropped.
        let mut tx = store.write_alone().await.unwrap();
        tx.put(&second, T0).await.unwrap();
        assert_eq!(
            tx.get(first.id()).await.unwrap(),
            Some(second.clone()),
            "{}",
            s.name
        );
        drop(tx);
        expect(store, first.id(), Some(&first), s.name).await;

        // Written, then a statement fails (an event id that exists) and the change is dropped.
        let (_, ids) = queue(store, 1, T0).await;
        let taken = store.webhook(&ids[0]).await.unwrap().unwrap().0.event_id;
        let mut tx = store.write_alone().await.unwrap();
        tx.put(&second, T0).await.unwrap();
        let event = NewEvent {
            id: taken,
            ..new_event(EventType::DealerChanged, first.id(), "{}", T0)
        };
        // The failing insert may be sent with the commit (see `Tx`): the change fails there.
        let failed = match tx.add_event(&event, &[], None).await {
            Err(_) => {
                drop(tx);
                true
            }
            Ok(_) => tx.commit().await.is_err(),
        };
        assert!(failed, "{}", s.name);
        expect(store, first.id(), Some(&first), s.name).await;

        // Committed: every later transaction reads it.
        let mut tx = store.write_alone().await.unwrap();
        tx.put(&second, T0).await.unwrap();
        tx.commit().await.unwrap();
        expect(store, first.id(), Some(&second), s.name).await;

        // Deleted and dropped, then deleted and committed.
        let mut tx = store.write_alone().await.unwrap();
        tx.delete(first.id()).await.unwrap();
        drop(tx);
        expect(store, first.id(), Some(&second), s.name).await;
        let mut tx = store.write_alone().await.unwrap();
        tx.delete(first.id()).await.unwrap();
        tx.commit().await.unwrap();
        expect(store, first.id(), None, s.name).await;
        let mut read = store.read().await.unwrap();
        assert_eq!(read.get(first.id()).await.unwrap(), None, "{}", s.name);
    }
}

/// One Tidings instance per SQLite file: a second store on the same file is refused with a
/// message that names the file, and the file is free again once the first store is gone.
#[tokio::test]
async fn a_sqlite_file_has_one_owner_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owned.db");
    let url = format!("sqlite://{}", path.display());
    let first = tidings::store::SqlStore::open(&url).await.unwrap();
    let second = tidings::store::SqlStore::open(&url).await;
    let Err(err) = second else {
        panic!("a second store opened the same SQLite file");
    };
    assert!(matches!(err, tidings::store::StoreError::InUse(_)), "{err}");
    assert!(err.to_string().contains("owned.db"), "{err}");
    drop(first);
    let again = tidings::store::SqlStore::open(&url).await;
    assert!(again.is_ok(), "{:?}", again.err());
}

/// The dispatcher records up to 512 attempts in one transaction, in statements of several
/// sizes; a batch that large (which on SQLite journals many pages in one savepoint) records
/// every row, retries and final failures with their notifications included.
#[tokio::test]
async fn a_full_record_batch_records_every_attempt() {
    const BATCH: usize = 512;
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (_, ids) = queue(store, BATCH, T0).await;
        let claimed = store
            .claim_due("a", T0, Millis(T0.0 + 60_000), BATCH as u32)
            .await
            .unwrap();
        assert_eq!(claimed.len(), BATCH, "{}", s.name);
        let results: Vec<Recorded> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let next = match i % 3 {
                    0 => Next::Succeeded,
                    1 => Next::RetryAt(Millis(T0.0 + 60_000)),
                    _ => Next::Failed,
                };
                recorded(id, attempt(1, T0, 500), next)
            })
            .collect();
        let recorded = store.record("a", &results, T0).await.unwrap();
        assert_eq!(recorded, (0..BATCH).collect::<Vec<_>>(), "{}", s.name);
        let failed = store
            .webhooks(&WebhookFilter {
                status: Some(WebhookStatus::Failed),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(failed.len(), BATCH / 3, "{}", s.name);
        let (last, attempts) = store.webhook(&ids[BATCH - 1]).await.unwrap().unwrap();
        assert_eq!((last.attempts, attempts.len()), (1, 1), "{}", s.name);
    }
}

/// Webhooks written claimed (handed straight to the writer's dispatcher) are what a claim
/// of them would have returned, stay out of other claims until the lease ends, and are
/// recorded by their owner alone.
#[tokio::test]
async fn webhooks_written_claimed_are_as_if_claimed() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let lease_end = Millis(T0.0 + 60_000);
        let r = reseller(Some("https://r.example/hook"));
        let (d, other) = (dealer(r.id()), reseller(Some("https://o.example/hook")));
        let mut tx = store.write_alone().await.unwrap();
        for e in [&r, &d, &other] {
            tx.put(e, T0).await.unwrap();
        }
        tx.put_secret(r.id(), "sealed-r", T0).await.unwrap();
        let data = format!("{{\"id\":\"{}\"}}", d.id());
        let event = new_event(EventType::DealerCreated, d.id(), &data, T0);
        let hooks = [
            new_webhook(Level::Reseller, r.id(), "https://r.example/hook", T0),
            // A level without a stored secret: its webhook comes back without secrets.
            new_webhook(Level::Reseller, other.id(), "https://o.example/hook", T0),
        ];
        let lease = Lease {
            owner: "a".into(),
            until: lease_end,
        };
        let handed = tx.add_event(&event, &hooks, Some(&lease)).await.unwrap();
        tx.commit().await.unwrap();

        let ids: Vec<_> = handed.iter().map(|c| c.webhook.id.clone()).collect();
        assert_eq!(
            ids,
            [hooks[0].id.clone(), hooks[1].id.clone()],
            "{}",
            s.name
        );
        let sealed = handed[0].secrets.as_ref().map(|x| x.current.as_str());
        assert_eq!(sealed, Some("sealed-r"), "{}", s.name);
        assert_eq!(handed[1].secrets, None, "{}", s.name);
        // As stored, and as a claim returns it.
        for c in &handed {
            let (stored, attempts) = store.webhook(&c.webhook.id).await.unwrap().unwrap();
            assert_eq!(stored, c.webhook, "{}", s.name);
            assert_eq!(stored.due_at, Some(lease_end), "{}", s.name);
            assert!(attempts.is_empty(), "{}", s.name);
        }
        // Nobody else's claim takes them while the lease lasts.
        let early = store
            .claim_due("b", T0, Millis(T0.0 + 1), 10)
            .await
            .unwrap();
        assert!(early.is_empty(), "{}", s.name);
        assert_eq!(
            store.next_due_at().await.unwrap(),
            Some(lease_end),
            "{}",
            s.name
        );

        // Only the owner records an attempt over them.
        let result = [recorded(&ids[0], attempt(1, T0, 500), Next::Succeeded)];
        assert!(
            store.record("b", &result, T0).await.unwrap().is_empty(),
            "{}",
            s.name
        );
        assert_eq!(
            store.record("a", &result, T0).await.unwrap(),
            [0],
            "{}",
            s.name
        );

        // The other lease ends without an attempt (its owner died): due again for anyone,
        // the same webhook.
        let later = store
            .claim_due("b", lease_end, Millis(lease_end.0 + 60_000), 10)
            .await
            .unwrap();
        assert_eq!(later.len(), 1, "{}", s.name);
        assert_eq!(later[0].webhook.id, ids[1], "{}", s.name);
        assert_eq!(later[0].webhook.data, handed[1].webhook.data, "{}", s.name);
    }
}

#[tokio::test]
async fn claims_lease_attempts_record_and_failures_queue_one_notification() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (level, ids) = queue(store, 3, T0).await;
        assert_eq!(store.next_due_at().await.unwrap(), Some(T0), "{}", s.name);

        let claimed = store
            .claim_due("a", T0, Millis(T0.0 + 60_000), 10)
            .await
            .unwrap();
        let got: HashSet<_> = claimed.iter().map(|c| c.webhook.id.clone()).collect();
        assert_eq!(
            got,
            ids.iter().cloned().collect::<HashSet<_>>(),
            "{}",
            s.name
        );
        assert!(
            claimed
                .iter()
                .all(|c| c.webhook.attempts == 0 && c.webhook.data.starts_with("{\"id\"")),
            "{}",
            s.name
        );
        // Claimed rows are not due again until their lease ends.
        assert!(
            store
                .claim_due("b", T0, Millis(T0.0 + 60_000), 10)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            s.name
        );
        assert_eq!(
            store.next_due_at().await.unwrap(),
            Some(Millis(T0.0 + 60_000)),
            "{}",
            s.name
        );

        let t1 = Millis(T0.0 + 10);
        let results = vec![
            recorded(
                &ids[0],
                Attempt {
                    number: 1,
                    started_at: T0,
                    duration_ms: 2,
                    status_code: Some(200),
                    error: None,
                    body: "ok".into(),
                },
                Next::Succeeded,
            ),
            recorded(
                &ids[1],
                attempt(1, T0, 500),
                Next::RetryAt(Millis(T0.0 + 60_000)),
            ),
            recorded(&ids[2], attempt(1, T0, 500), Next::Failed),
        ];
        // Another owner cannot record over "a"'s claims.
        let recorded = store.record("intruder", &results, t1).await.unwrap();
        assert!(recorded.is_empty(), "{}", s.name);
        let (w, attempts) = store.webhook(&ids[0]).await.unwrap().unwrap();
        assert_eq!(
            (w.status, w.attempts, attempts.len()),
            (WebhookStatus::Pending, 0, 0),
            "{}",
            s.name
        );

        let recorded = store.record("a", &results, t1).await.unwrap();
        assert_eq!(recorded, vec![0, 1, 2], "{}", s.name);
        let (w0, a0) = store.webhook(&ids[0]).await.unwrap().unwrap();
        assert_eq!(
            (w0.status, w0.attempts, w0.due_at),
            (WebhookStatus::Succeeded, 1, None),
            "{}",
            s.name
        );
        assert_eq!(a0[0].status_code, Some(200), "{}", s.name);
        let (w1, a1) = store.webhook(&ids[1]).await.unwrap().unwrap();
        assert_eq!(
            (w1.status, w1.attempts, w1.due_at),
            (WebhookStatus::Pending, 1, Some(Millis(T0.0 + 60_000))),
            "{}",
            s.name
        );
        assert_eq!(a1, vec![attempt(1, T0, 500)], "{}", s.name);
        let (w2, _) = store.webhook(&ids[2]).await.unwrap().unwrap();
        assert_eq!(w2.status, WebhookStatus::Failed, "{}", s.name);

        // Recording the same attempt twice changes nothing.
        store.record("a", &results[2..], t1).await.unwrap();
        let failed = store
            .webhooks(&WebhookFilter {
                status: Some(WebhookStatus::Failed),
                level_id: Some(level.clone()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(failed.len(), 1, "{}", s.name);

        // The retry is due at its time, not before.
        assert!(
            store
                .claim_due("a", Millis(T0.0 + 59_999), Millis(T0.0 + 120_000), 10)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            s.name
        );
        let again = store
            .claim_due("a", Millis(T0.0 + 60_000), Millis(T0.0 + 120_000), 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{}", s.name);
        assert_eq!(
            (again[0].webhook.id.clone(), again[0].webhook.attempts),
            (ids[1].clone(), 1),
            "{}",
            s.name
        );

        let stats = store.queue_stats(Millis(T0.0 + 60_000)).await.unwrap();
        assert_eq!(stats.pending, 1, "{}", s.name);
        let counts = store.counts().await.unwrap();
        assert!(
            counts
                .webhooks
                .contains(&(EventType::DealerCreated, WebhookStatus::Failed, 1)),
            "{}: {:?}",
            s.name,
            counts.webhooks
        );
        assert!(
            counts.events.contains(&(EventType::DealerCreated, 3)),
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn an_ended_lease_makes_the_webhook_due_again_and_release_all_ends_leases_at_once() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (_, ids) = queue(store, 2, T0).await;
        let lease_end = Millis(T0.0 + 30_000);
        assert_eq!(
            store
                .claim_due("dead", T0, lease_end, 1)
                .await
                .unwrap()
                .len(),
            1,
            "{}",
            s.name
        );
        // Before the lease ends only the unclaimed one is due; after, both.
        assert_eq!(
            store
                .claim_due("b", Millis(T0.0 + 1), Millis(T0.0 + 1_000), 10)
                .await
                .unwrap()
                .len(),
            1,
            "{}",
            s.name
        );
        let taken = store
            .claim_due("b", lease_end, Millis(lease_end.0 + 30_000), 10)
            .await
            .unwrap();
        assert_eq!(taken.len(), 2, "{}", s.name);

        let n = store.release_all(Millis(T0.0 + 5)).await.unwrap();
        assert_eq!(n, 2, "{}", s.name);
        assert_eq!(
            store
                .claim_due("c", Millis(T0.0 + 5), Millis(T0.0 + 90_000), 10)
                .await
                .unwrap()
                .len(),
            ids.len(),
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn retry_and_recover_make_failed_webhooks_due_now() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (level, ids) = queue(store, 3, T0).await;
        let claimed = store
            .claim_due("a", T0, Millis(T0.0 + 1_000), 10)
            .await
            .unwrap();
        assert_eq!(
            store.retry(&ids[0], T0).await.unwrap(),
            RetryOutcome::InFlight,
            "{}",
            s.name
        );
        let results: Vec<Recorded> = claimed
            .iter()
            .map(|c| recorded(&c.webhook.id, attempt(1, T0, 500), Next::Failed))
            .collect();
        store.record("a", &results, T0).await.unwrap();

        let t = Millis(T0.0 + 5_000);
        assert_eq!(
            store.retry(&ids[0], t).await.unwrap(),
            RetryOutcome::Queued,
            "{}",
            s.name
        );
        assert_eq!(
            store.retry(&id(), t).await.unwrap(),
            RetryOutcome::NotFound,
            "{}",
            s.name
        );
        let (w, _) = store.webhook(&ids[0]).await.unwrap().unwrap();
        assert_eq!(
            (w.status, w.due_at),
            (WebhookStatus::Pending, Some(t)),
            "{}",
            s.name
        );

        assert_eq!(
            store.recover(&level, Millis(T0.0 + 1), t).await.unwrap(),
            0,
            "created before `since`: {}",
            s.name
        );
        assert_eq!(store.recover(&level, T0, t).await.unwrap(), 2, "{}", s.name);
        assert_eq!(
            store
                .claim_due("b", t, Millis(t.0 + 1_000), 10)
                .await
                .unwrap()
                .len(),
            3,
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn secrets_rotate_with_the_previous_one_kept_until_the_overlap_ends() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let level = id();
        assert_eq!(store.secrets(&level).await.unwrap(), None, "{}", s.name);
        let mut tx = store.write_alone().await.unwrap();
        tx.put_secret(&level, "sealed-1", T0).await.unwrap();
        tx.commit().await.unwrap();
        let first = store.secrets(&level).await.unwrap().unwrap();
        assert_eq!(
            (first.current.as_str(), first.previous),
            ("sealed-1", None),
            "{}",
            s.name
        );

        let until = Millis(T0.0 + 86_400_000);
        store
            .rotate_secret(&level, "sealed-2", until, T0)
            .await
            .unwrap();
        let second = store.secrets(&level).await.unwrap().unwrap();
        assert_eq!(second.current, "sealed-2", "{}", s.name);
        assert_eq!(
            second.previous,
            Some(("sealed-1".to_owned(), until)),
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn concurrent_claimers_never_share_a_webhook() {
    for s in stores::both().await {
        let (_, ids) = queue(s.store.as_ref(), 400, T0).await;
        let mut tasks = Vec::new();
        for owner in ["a", "b", "c", "d"] {
            let store = s.store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store
                        .claim_due(owner, T0, Millis(T0.0 + 600_000), 16)
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        break mine;
                    }
                    mine.extend(batch.into_iter().map(|c| c.webhook.id));
                }
            }));
        }
        let mut seen = Vec::new();
        for t in tasks {
            seen.extend(t.await.unwrap());
        }
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(
            seen.len(),
            ids.len(),
            "{}: every webhook claimed exactly once",
            s.name
        );
        assert_eq!(unique.len(), ids.len(), "{}", s.name);
    }
}

/// Many changes at once (on SQLite: savepoints sharing one group commit; on PostgreSQL:
/// transactions side by side), with writes through the other path (API keys) in between:
/// every committed change is there with its webhook, and a change that failed or was dropped
/// takes nothing else with it and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_commit_and_a_failed_one_takes_nothing_with_it() {
    use tidings::store::ApiKeyRecord;

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Fate {
        Commit,
        Drop,
        FailStatement,
        ApiKey,
    }
    for s in stores::both().await {
        let r = reseller(Some("https://r.example/hook"));
        let mut tx = s.store.write_alone().await.unwrap();
        tx.put(&r, T0).await.unwrap();
        tx.commit().await.unwrap();
        let taken_event_id = {
            let (_, ids) = queue(s.store.as_ref(), 1, T0).await;
            let all = s
                .store
                .webhook(&ids[0])
                .await
                .unwrap()
                .expect("queued webhook");
            all.0.event_id
        };
        let fates: Vec<Fate> = (0..96)
            .map(|i| match i % 8 {
                3 => Fate::Drop,
                5 => Fate::FailStatement,
                6 => Fate::ApiKey,
                _ => Fate::Commit,
            })
            .collect();
        let mut tasks = Vec::new();
        for (i, fate) in fates.iter().copied().enumerate() {
            let store = s.store.clone();
            let reseller_id = r.id().clone();
            let taken = taken_event_id.clone();
            tasks.push(tokio::spawn(async move {
                if fate == Fate::ApiKey {
                    store
                        .insert_api_key(&ApiKeyRecord {
                            id: id(),
                            hash: format!("hash-{i}"),
                            scope: None,
                            label: format!("key {i}"),
                            created_at: T0,
                            revoked_at: None,
                        })
                        .await
                        .unwrap();
                    return (fate, None, None);
                }
                let d = dealer(&reseller_id);
                let mut tx = store.write_alone().await.unwrap();
                tx.put(&d, T0).await.unwrap();
                let data = format!("{{\"id\":\"{}\"}}", d.id());
                let mut event = new_event(EventType::DealerCreated, d.id(), &data, T0);
                // A failing change reuses an event id that exists: its insert fails.
                if fate == Fate::FailStatement {
                    event.id = taken;
                }
                let w = new_webhook(Level::Reseller, &reseller_id, "https://r.example/hook", T0);
                let added = tx.add_event(&event, std::slice::from_ref(&w), None).await;
                match fate {
                    Fate::Commit => {
                        added.unwrap();
                        tx.commit().await.unwrap();
                    }
                    // The failing insert may be sent with the commit (see `Tx`).
                    Fate::FailStatement => assert!(
                        added.is_err() || tx.commit().await.is_err(),
                        "duplicate event id"
                    ),
                    _ => assert!(added.unwrap().is_empty(), "nothing claimed without a lease"),
                }
                (fate, Some(d.id().clone()), Some(w.id))
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let mut read = s.store.read().await.unwrap();
        for (fate, dealer_id, webhook_id) in results {
            let (Some(dealer_id), Some(webhook_id)) = (dealer_id, webhook_id) else {
                continue;
            };
            let committed = fate == Fate::Commit;
            assert_eq!(
                read.get(&dealer_id).await.unwrap().is_some(),
                committed,
                "{}: dealer of a {fate:?} change",
                s.name
            );
            assert_eq!(
                s.store.webhook(&webhook_id).await.unwrap().is_some(),
                committed,
                "{}: webhook of a {fate:?} change",
                s.name
            );
        }
        let committed = fates.iter().filter(|f| **f == Fate::Commit).count();
        let all = s
            .store
            .webhooks(&WebhookFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), committed + 1, "{}", s.name);
        let keys = s.store.api_keys().await.unwrap();
        assert_eq!(
            keys.len(),
            fates.iter().filter(|f| **f == Fate::ApiKey).count(),
            "{}",
            s.name
        );
    }
}

/// Batches of the same size reuse one prepared statement; NULLs in one batch and values in
/// the same places in the next must both bind (a NULL keeps its column's type: PostgreSQL
/// checks a prepared statement's parameter types).
#[tokio::test]
async fn batches_of_one_size_record_nulls_and_values_in_any_row() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (_, ids) = queue(store, 4, T0).await;
        let claimed = store
            .claim_due("a", T0, Millis(T0.0 + 600_000), 4)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 4, "{}", s.name);
        let ok = |number| Attempt {
            number,
            started_at: T0,
            duration_ms: 1,
            status_code: Some(200),
            error: None,
            body: String::new(),
        };
        let refused = |number| Attempt {
            number,
            started_at: T0,
            duration_ms: 1,
            status_code: None,
            error: Some("connection refused".into()),
            body: String::new(),
        };
        let retry = Next::RetryAt(Millis(T0.0 + 60_000));
        let first = [
            recorded(&ids[0], ok(1), Next::Succeeded),
            recorded(&ids[1], ok(1), Next::Succeeded),
        ];
        let second = [
            recorded(&ids[2], refused(1), retry),
            recorded(&ids[3], refused(1), retry),
        ];
        let t1 = Millis(T0.0 + 10);
        // Text first, then NULLs, then text again.
        store.record("a", &second[..1], t1).await.unwrap();
        store.record("a", &first[..1], t1).await.unwrap();
        store.record("a", &second[1..], t1).await.unwrap();
        store.record("a", &first[1..], t1).await.unwrap();
        for (id, status, code, error) in [
            (&ids[0], WebhookStatus::Succeeded, Some(200), None),
            (&ids[1], WebhookStatus::Succeeded, Some(200), None),
            (
                &ids[2],
                WebhookStatus::Pending,
                None,
                Some("connection refused"),
            ),
            (
                &ids[3],
                WebhookStatus::Pending,
                None,
                Some("connection refused"),
            ),
        ] {
            let (w, attempts) = store.webhook(id).await.unwrap().unwrap();
            assert_eq!(w.status, status, "{}", s.name);
            assert_eq!(
                (attempts[0].status_code, attempts[0].error.as_deref()),
                (code, error),
                "{}",
                s.name
            );
        }
    }
}

/// Waits until a connection to `url`'s database waits for a row lock.
async fn until_a_change_waits_for_a_lock(url: &str) {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    for _ in 0..2_000 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("no change ever waited for a lock");
}

/// On PostgreSQL changes run side by side and read without row locks; the references a
/// change writes are what hold their targets. A child written under a parent that a
/// concurrent change is deleting waits for it, then fails (`Vanished`, a 409 at the API);
/// a parent's delete that comes second waits for the new child, then sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_reference_and_a_delete_of_its_target_exclude_each_other() {
    let s = stores::postgres().await;
    let r = reseller(None);
    let mut tx = s.store.write_alone().await.unwrap();
    tx.put(&r, T0).await.unwrap();
    tx.commit().await.unwrap();

    // The delete first: the child's change reads the parent (no lock, no wait), then
    // waits to write its reference until the delete commits, and fails.
    let mut deleting = s.store.write_alone().await.unwrap();
    assert!(deleting.get_for_change(r.id()).await.unwrap().is_some());
    deleting.delete(r.id()).await.unwrap();
    let store = s.store.clone();
    let parent = r.id().clone();
    let child = tokio::spawn(async move {
        let mut tx = store.write_alone().await.unwrap();
        assert!(
            tx.get(&parent).await.unwrap().is_some(),
            "the delete is not committed yet"
        );
        tx.put(&dealer(&parent), T0).await
    });
    until_a_change_waits_for_a_lock(&s.url).await;
    deleting.commit().await.unwrap();
    match child.await.unwrap() {
        Err(StoreError::Vanished(id)) => assert_eq!(id, r.id().to_string()),
        other => panic!("expected Vanished, got {other:?}"),
    }

    // The child first: the delete waits for it to commit, then sees it refer to the parent.
    let r = reseller(None);
    let mut tx = s.store.write_alone().await.unwrap();
    tx.put(&r, T0).await.unwrap();
    tx.commit().await.unwrap();
    let mut creating = s.store.write_alone().await.unwrap();
    let d = dealer(r.id());
    creating.put(&d, T0).await.unwrap();
    let store = s.store.clone();
    let parent = r.id().clone();
    let delete = tokio::spawn(async move {
        let mut tx = store.write_alone().await.unwrap();
        assert!(tx.get_for_change(&parent).await.unwrap().is_some());
        let referrers = tx.referrers(&parent, None, 5).await.unwrap();
        referrers.iter().map(|e| e.id().clone()).collect::<Vec<_>>()
    });
    until_a_change_waits_for_a_lock(&s.url).await;
    creating.commit().await.unwrap();
    assert_eq!(delete.await.unwrap(), vec![d.id().clone()]);
}

/// On PostgreSQL, work one instance queues for a claim (not handed to its own dispatcher)
/// wakes the others, once it is committed: the notice follows the commit, outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_queued_work_wakes_the_other_instances_after_its_commit() {
    let s = stores::postgres().await;
    let other = tidings::store::SqlStore::open(&s.url).await.unwrap();
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    other.listen_for_work(wake.clone());
    // The listener's first wake-up says it is listening (and covers what came before).
    tokio::time::timeout(std::time::Duration::from_secs(10), wake.notified())
        .await
        .expect("the listener connects");

    let (_, ids) = queue(s.store.as_ref(), 3, T0).await;
    tokio::time::timeout(std::time::Duration::from_secs(10), wake.notified())
        .await
        .expect("the other instance is woken");
    let claimed = other
        .claim_due("other", T0, Millis(T0.0 + 60_000), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), ids.len(), "and finds the work committed");
}

/// A webhook whose id was not made in its event's millisecond is refused, and nothing of the
/// event is written: pruning finds an event's webhooks by the millisecond their ids share.
#[tokio::test]
async fn a_webhook_made_in_another_millisecond_than_its_event_is_refused() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let r = reseller(Some("https://r.example/hook"));
        let mut tx = store.write_alone().await.unwrap();
        tx.put(&r, T0).await.unwrap();
        tx.commit().await.unwrap();

        let event = new_event(EventType::DealerChanged, r.id(), "{}", T0);
        let hooks = [
            new_webhook(Level::Reseller, r.id(), "https://r.example/hook", T0),
            new_webhook(
                Level::Reseller,
                r.id(),
                "https://r.example/hook",
                Millis(T0.0 + 1),
            ),
        ];
        let mut tx = store.write_alone().await.unwrap();
        let err = tx.add_event(&event, &hooks, None).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Refused(m) if m.contains(hooks[1].id.as_str())),
            "{}: {err}",
            s.name
        );
        drop(tx);

        let listed = store
            .webhooks(&WebhookFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(listed.is_empty(), "{}: {listed:?}", s.name);
        assert_eq!(store.next_due_at().await.unwrap(), None, "{}", s.name);
    }
}
