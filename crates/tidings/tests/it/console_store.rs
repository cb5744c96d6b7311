//! The console's aggregate reads, on both stores: attempts per time bucket, endpoint health
//! per level, the queue of some levels, and webhooks newest first.

use crate::helpers::stores;

use stores::{contact, id, T0};

use tidings::domain::entities::{Dealer, Entity, Reseller};
use tidings::domain::{EntityId, EventType, Level, Millis};
use tidings::store::{
    Attempt, Bucket, LastAttempt, NewEvent, NewWebhook, Next, Recorded, Store, WebhookFilter,
    WebhookStatus,
};

/// Commits a reseller with `n` DEALER_CREATED webhooks to it.
async fn level_with_webhooks(store: &dyn Store, n: usize) -> (EntityId, Vec<EntityId>) {
    let r = Entity::Reseller(Reseller {
        id: id(),
        name: "R".into(),
        contact: contact(),
        notification_contact: None,
        webhook_url: Some("https://r.example/hook".into()),
        suspended: false,
    });
    let mut tx = store.write().await.unwrap();
    tx.put(&r, T0).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let d = Entity::Dealer(Dealer {
            id: id(),
            name: "D".into(),
            contact: contact(),
            reseller: r.id().clone(),
            notification_contact: None,
            webhook_url: None,
            suspended: false,
        });
        tx.put(&d, T0).await.unwrap();
        let event = NewEvent {
            id: id(),
            event_type: EventType::DealerCreated,
            subject_id: d.id().clone(),
            data: "{}".into(),
            created_at: T0,
        };
        let w = NewWebhook {
            id: id(),
            level: Level::Reseller,
            level_id: r.id().clone(),
            url: "https://r.example/hook".into(),
            ordered: false,
            disabled: false,
        };
        ids.push(w.id.clone());
        tx.add_event(&event, &[w], None).await.unwrap();
    }
    tx.commit().await.unwrap();
    (r.id().clone(), ids)
}

fn attempt(at: i64, error: Option<&str>) -> Attempt {
    Attempt {
        number: 1,
        started_at: Millis(T0.0 + at),
        duration_ms: 3,
        status_code: Some(if error.is_some() { 500 } else { 200 }),
        error: error.map(str::to_owned),
        body: String::new(),
    }
}

fn bucket(index: i64, succeeded: u64, failed: u64) -> Bucket {
    Bucket {
        index,
        succeeded,
        failed,
    }
}

#[tokio::test]
async fn console_aggregates_count_attempts_health_and_queue_per_level() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (a, a_ids) = level_with_webhooks(store, 3).await;
        let (b, b_ids) = level_with_webhooks(store, 2).await;
        let claimed = store
            .claim_due("o", T0, Millis(T0.0 + 10_000), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 5, "{}", s.name);
        let retry_at = Millis(T0.0 + 3_600_000);
        let plan = [
            (&a_ids[0], attempt(1_000, None), Next::Succeeded),
            (
                &a_ids[1],
                attempt(61_000, Some("HTTP 502 a1")),
                Next::RetryAt(retry_at),
            ),
            (
                &a_ids[2],
                attempt(62_000, Some("HTTP 500 a2")),
                Next::Failed,
            ),
            (&b_ids[0], attempt(2_000, None), Next::Succeeded),
            (
                &b_ids[1],
                attempt(3_000, Some("timed out b1")),
                Next::Failed,
            ),
        ];
        let results: Vec<Recorded> = plan
            .iter()
            .map(|(id, attempt, next)| Recorded {
                webhook_id: (*id).clone(),
                attempt: attempt.clone(),
                next: *next,
            })
            .collect();
        assert_eq!(
            store
                .record("o", &results, Millis(T0.0 + 62_000))
                .await
                .unwrap()
                .len(),
            5,
            "{}",
            s.name
        );

        // Per minute from T0: a0, b0 delivered and b1 failed in the first; a1, a2 in the second.
        assert_eq!(
            store.attempt_buckets(None, T0, 60_000).await.unwrap(),
            vec![bucket(0, 2, 1), bucket(1, 0, 2)],
            "{}",
            s.name
        );
        assert_eq!(
            store
                .attempt_buckets(Some(std::slice::from_ref(&a)), T0, 60_000)
                .await
                .unwrap(),
            vec![bucket(0, 1, 0), bucket(1, 0, 2)],
            "{}",
            s.name
        );
        assert_eq!(
            store.attempt_buckets(Some(&[]), T0, 60_000).await.unwrap(),
            vec![],
            "{}",
            s.name
        );

        // a1 waits for its retry; nothing of b does.
        let qa = store
            .level_queue(std::slice::from_ref(&a), Millis(retry_at.0 + 1))
            .await
            .unwrap();
        assert_eq!(
            (qa.pending, qa.oldest_due),
            (1, Some(retry_at)),
            "{}",
            s.name
        );
        let qa_early = store
            .level_queue(std::slice::from_ref(&a), T0)
            .await
            .unwrap();
        assert_eq!(
            (qa_early.pending, qa_early.oldest_due),
            (1, None),
            "{}",
            s.name
        );
        let qb = store
            .level_queue(std::slice::from_ref(&b), Millis(retry_at.0 + 1))
            .await
            .unwrap();
        assert_eq!((qb.pending, qb.oldest_due), (0, None), "{}", s.name);

        // The latest attempt of each webhook asked about that has one.
        let mut last = store
            .last_attempts(&[a_ids[0].clone(), a_ids[2].clone(), id()])
            .await
            .unwrap();
        last.sort_by(|x, y| x.webhook_id.cmp(&y.webhook_id));
        let mut expected = vec![
            LastAttempt {
                webhook_id: a_ids[0].clone(),
                status_code: Some(200),
                error: None,
            },
            LastAttempt {
                webhook_id: a_ids[2].clone(),
                status_code: Some(500),
                error: Some("HTTP 500 a2".into()),
            },
        ];
        expected.sort_by(|x, y| x.webhook_id.cmp(&y.webhook_id));
        assert_eq!(last, expected, "{}", s.name);
        assert!(store.last_attempts(&[]).await.unwrap().is_empty());

        // Newest first, within the given levels, with the API's filters and the cursor.
        let mut newest_a = a_ids.clone();
        newest_a.sort();
        newest_a.reverse();
        let all = WebhookFilter {
            limit: 10,
            ..WebhookFilter::default()
        };
        let ids =
            |ws: Vec<tidings::store::Webhook>| ws.into_iter().map(|w| w.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store
                .webhooks_newest(&all, Some(std::slice::from_ref(&a)))
                .await
                .unwrap()),
            newest_a,
            "{}",
            s.name
        );
        assert_eq!(
            ids(store
                .webhooks_newest(
                    &WebhookFilter {
                        after: Some(newest_a[0].clone()),
                        limit: 1,
                        ..WebhookFilter::default()
                    },
                    Some(std::slice::from_ref(&a))
                )
                .await
                .unwrap()),
            vec![newest_a[1].clone()],
            "{}",
            s.name
        );
        assert_eq!(
            ids(store
                .webhooks_newest(
                    &WebhookFilter {
                        status: Some(WebhookStatus::Failed),
                        limit: 10,
                        ..WebhookFilter::default()
                    },
                    None
                )
                .await
                .unwrap())
            .len(),
            2,
            "a2 and b1: {}",
            s.name
        );
        assert_eq!(
            store.webhooks_newest(&all, None).await.unwrap().len(),
            5,
            "{}",
            s.name
        );
        assert!(store
            .webhooks_newest(&all, Some(&[]))
            .await
            .unwrap()
            .is_empty());
    }
}
