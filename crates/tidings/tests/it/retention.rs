//! Retention in the store, on both stores: what a prune removes (finished webhooks past the
//! cutoff with their attempts, events left without webhooks, finished e-mails) and what it
//! never removes (pending and retrying webhooks, queued e-mails and what they cover).

use crate::helpers::stores;

use std::time::Duration;

use tidings::domain::{EntityId, EventType, Level, Millis};
use tidings::store::{EmailFilter, EmailStatus, NewWebhook, Next, Pruned, Store};

use stores::{attempt, new_event, new_webhook, recorded, T0};

const HOUR: i64 = 3_600_000;

/// Commits an event made at `at` with one webhook per URL (each to its own level); returns
/// the event's id and the webhooks' ids.
async fn event(store: &dyn Store, at: Millis, urls: &[&str]) -> (EntityId, Vec<EntityId>) {
    let event = new_event(
        EventType::DealerCreated,
        &EntityId::generate(at),
        "{\"id\":\"x\"}",
        at,
    );
    let hooks: Vec<NewWebhook> = urls
        .iter()
        .map(|url| new_webhook(Level::Reseller, &EntityId::generate(at), url, at))
        .collect();
    let mut tx = store.write_alone().await.unwrap();
    tx.add_event(&event, &hooks, None).await.unwrap();
    tx.commit().await.unwrap();
    (event.id, hooks.into_iter().map(|w| w.id).collect())
}

/// Claims every due webhook at `at` and records one attempt for those in `outcomes`; the
/// others are given back, due again at once.
async fn attempt_all(store: &dyn Store, at: Millis, outcomes: &[(&EntityId, Next)]) {
    let claimed = store
        .claim_due("t", at, Millis(at.0 + 60_000), 1000)
        .await
        .unwrap();
    let mut results = Vec::new();
    let mut back = Vec::new();
    for c in claimed {
        match outcomes.iter().find(|(id, _)| **id == c.webhook.id) {
            Some((_, next)) => {
                let status = if *next == Next::Succeeded { 200 } else { 500 };
                let a = attempt(c.webhook.attempts + 1, at, status);
                results.push(recorded(&c.webhook.id, a, *next));
            }
            None => back.push(c.webhook.id.clone()),
        }
    }
    assert_eq!(
        store.record("t", &results, at).await.unwrap().len(),
        results.len()
    );
    store.release("t", &back, at).await.unwrap();
}

/// Prunes everything before `cutoff`, a batch of `limit` at a time; returns the totals and
/// how many batches it took.
async fn prune_all(store: &dyn Store, cutoff: Millis, limit: u32) -> (Pruned, usize) {
    let mut total = Pruned::default();
    let mut after = None;
    let mut batches = 0;
    loop {
        let p = store.prune(cutoff, after.as_ref(), limit).await.unwrap();
        batches += 1;
        total.events += p.events;
        total.webhooks += p.webhooks;
        total.attempts += p.attempts;
        total.emails += p.emails;
        total.notifications += p.notifications;
        match p.next {
            Some(next) => after = Some(next),
            None => return (total, batches),
        }
    }
}

async fn exists(store: &dyn Store, webhook: &EntityId) -> bool {
    store.webhook(webhook).await.unwrap().is_some()
}

#[tokio::test]
async fn prune_removes_finished_work_past_the_cutoff_and_keeps_pending_and_queued_mail() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let name = s.name;
        // At T0: eight events.
        let (ev_ok, ok) = event(store, T0, &["https://a.example/ok"]).await;
        let (ev_retry, retry) = event(store, T0, &["https://a.example/retry"]).await;
        let (ev_mixed, mixed) = event(
            store,
            T0,
            &["https://a.example/ok2", "https://a.example/never"],
        )
        .await;
        let (ev_none, _) = event(store, T0, &[]).await;
        let (ev_queued, queued) = event(store, T0, &["https://b.example/queued-mail"]).await;
        let (ev_sent, sent) = event(store, T0, &["https://c.example/sent-mail"]).await;
        let (ev_norcpt, norcpt) = event(store, T0, &["https://d.example/no-recipient"]).await;
        let (ev_unassigned, unassigned) = event(store, T0, &["https://e.example/later"]).await;

        let t1 = Millis(T0.0 + 1_000);
        let mut outcomes: Vec<(&EntityId, Next)> = vec![
            (&ok[0], Next::Succeeded),
            // Waiting for its 24-hour retry.
            (&retry[0], Next::RetryAt(Millis(T0.0 + 24 * HOUR))),
            (&mixed[0], Next::Succeeded),
            (&queued[0], Next::Failed),
            (&sent[0], Next::Failed),
            (&norcpt[0], Next::Failed),
        ];
        attempt_all(store, t1, &outcomes).await;
        // Three failures go into three e-mails (one per URL); the fourth failure comes later
        // and stays unassigned.
        let opened = store
            .assign_failures(t1, Duration::from_secs(3600), 100)
            .await
            .unwrap();
        assert_eq!(opened.len(), 3, "{name}");
        outcomes.clear();
        outcomes.push((&unassigned[0], Next::Failed));
        attempt_all(store, t1, &outcomes).await;
        let emails = store
            .emails(&EmailFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let email_of = |w: &EntityId| {
            emails
                .iter()
                .find(|e| e.webhook_ids.contains(w))
                .unwrap_or_else(|| panic!("{name}: no e-mail covers {w}"))
                .id
                .clone()
        };
        let (queued_mail, sent_mail, norcpt_mail) = (
            email_of(&queued[0]),
            email_of(&sent[0]),
            email_of(&norcpt[0]),
        );
        let claimed = store
            .claim_emails("m", t1, Millis(t1.0 + 60_000), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 3, "{name}");
        assert!(store
            .email_sent("m", &sent_mail, "ops@example.com", "s", t1)
            .await
            .unwrap());
        assert!(store
            .email_no_recipient(&norcpt_mail, Some("m"), t1)
            .await
            .unwrap());
        store
            .email_not_sent(
                "m",
                &queued_mail,
                "421 try later",
                Millis(t1.0 + 48 * HOUR),
                t1,
            )
            .await
            .unwrap();

        // One hour later, a recent succeeded webhook.
        let t2 = Millis(T0.0 + HOUR);
        let (ev_recent, recent) = event(store, t2, &["https://a.example/recent"]).await;
        outcomes.clear();
        outcomes.push((&recent[0], Next::Succeeded));
        attempt_all(store, t2, &outcomes).await;

        // A cutoff between the two: what finished before it goes, in batches of two events.
        let cutoff = Millis(T0.0 + 30 * 60_000);
        let (pruned, batches) = prune_all(store, cutoff, 2).await;
        assert_eq!(
            (
                pruned.webhooks,
                pruned.attempts,
                pruned.events,
                pruned.emails,
                pruned.notifications
            ),
            // ok, mixed[0], sent, norcpt; their one attempt each; the events of ok, none, sent
            // and norcpt; the sent and the no_recipient e-mail with their notifications.
            (4, 4, 4, 2, 2),
            "{name}"
        );
        assert_eq!(
            batches, 5,
            "{name}: eight old events, two a batch, then an empty one"
        );

        for (gone, what) in [
            (&ok[0], "succeeded"),
            (&mixed[0], "succeeded beside a pending one"),
            (&sent[0], "failed, its e-mail sent"),
            (&norcpt[0], "failed, its e-mail without recipient"),
        ] {
            assert!(!exists(store, gone).await, "{name}: {what} is pruned");
        }
        for (kept, what) in [
            (&retry[0], "waiting for its 24-hour retry"),
            (&mixed[1], "pending, never attempted"),
            (&queued[0], "covered by a queued e-mail"),
            (&unassigned[0], "failed, not yet in an e-mail"),
            (&recent[0], "finished after the cutoff"),
        ] {
            assert!(exists(store, kept).await, "{name}: {what} is kept");
        }
        let (_, attempts) = store.webhook(&queued[0]).await.unwrap().unwrap();
        assert_eq!(
            attempts.len(),
            1,
            "{name}: a kept webhook keeps its attempts"
        );
        let (_, attempts) = store.webhook(&retry[0]).await.unwrap().unwrap();
        assert_eq!(attempts.len(), 1, "{name}");

        let events = event_ids(&s.url).await;
        for (id, kept) in [
            (&ev_ok, false),
            (&ev_none, false),
            (&ev_sent, false),
            (&ev_norcpt, false),
            (&ev_retry, true),
            (&ev_mixed, true),
            (&ev_queued, true),
            (&ev_unassigned, true),
            (&ev_recent, true),
        ] {
            assert_eq!(events.contains(id.as_str()), kept, "{name}: event {id}");
        }
        let left: Vec<(EntityId, EmailStatus)> = store
            .emails(&EmailFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.id, e.status))
            .collect();
        assert_eq!(
            left,
            vec![(queued_mail.clone(), EmailStatus::Queued)],
            "{name}"
        );

        // What a queued e-mail covers is still whole when it is sent.
        let (_, covered) = store.email_content(&queued_mail).await.unwrap().unwrap();
        assert_eq!(covered.len(), 1, "{name}");

        // Pruning again removes nothing more; the retry still comes at its time.
        let (again, _) = prune_all(store, cutoff, 2).await;
        assert_eq!(again, Pruned::default(), "{name}");
        let due = store
            .claim_due("t", Millis(T0.0 + 24 * HOUR), Millis(T0.0 + 25 * HOUR), 10)
            .await
            .unwrap();
        let due: Vec<_> = due.into_iter().map(|c| c.webhook.id).collect();
        assert!(due.contains(&retry[0]), "{name}");
        assert_eq!(foreign_key_orphans(&s.url).await, 0, "{name}");
    }
}

/// Every event id in the store.
async fn event_ids(url: &str) -> std::collections::HashSet<String> {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query("SELECT id FROM events")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("id"))
        .collect()
}

/// Rows that refer to a row that is gone (attempts, webhooks, notifications).
async fn foreign_key_orphans(url: &str) -> i64 {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query(
        "SELECT (SELECT COUNT(*) FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.id = a.webhook_id)) \
         + (SELECT COUNT(*) FROM webhooks w WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = w.event_id)) \
         + (SELECT COUNT(*) FROM notifications n WHERE NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.id = n.webhook_id)) AS n",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    .get::<i64, _>("n")
}
