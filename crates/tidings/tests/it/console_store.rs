//! The console's aggregate reads, on both stores: attempts per time bucket, endpoint health
//! per level, the queue of some levels, and webhooks newest first.

use crate::helpers::stores;

use stores::{id, T0};

use tidings::domain::{EntityId, EventType, Level, Millis};
use tidings::store::{
    Attempt, Bucket, BucketWidth, LastAttempt, NewEvent, NewWebhook, Next, QueueDepth, Recorded,
    Store, WebhookFilter, WebhookStatus,
};

/// Commits a reseller with `n` DEALER_CREATED webhooks to it.
async fn level_with_webhooks(store: &dyn Store, n: usize) -> (EntityId, Vec<EntityId>) {
    stores::queue(store, n, T0).await
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
            store
                .attempt_buckets(None, T0, BucketWidth::Minute)
                .await
                .unwrap(),
            vec![bucket(0, 2, 1), bucket(1, 0, 2)],
            "{}",
            s.name
        );
        assert_eq!(
            store
                .attempt_buckets(Some(std::slice::from_ref(&a)), T0, BucketWidth::Minute)
                .await
                .unwrap(),
            vec![bucket(0, 1, 0), bucket(1, 0, 2)],
            "{}",
            s.name
        );
        assert_eq!(
            store
                .attempt_buckets(Some(&[]), T0, BucketWidth::Minute)
                .await
                .unwrap(),
            vec![],
            "{}",
            s.name
        );

        // a1 waits for its retry; nothing of b does.
        let queue = |levels: Option<&[EntityId]>, now: Millis, cap: u64| {
            let levels = levels.map(<[EntityId]>::to_vec);
            async move {
                store
                    .queue_depth(levels.as_deref(), now, cap)
                    .await
                    .unwrap()
            }
        };
        let depth = |pending, more, oldest_due| QueueDepth {
            pending,
            more,
            oldest_due,
        };
        let after_retry = Millis(retry_at.0 + 1);
        assert_eq!(
            queue(Some(std::slice::from_ref(&a)), after_retry, 10).await,
            depth(1, false, Some(retry_at)),
            "{}",
            s.name
        );
        assert_eq!(
            queue(Some(std::slice::from_ref(&a)), T0, 10).await,
            depth(1, false, None),
            "{}",
            s.name
        );
        assert_eq!(
            queue(Some(std::slice::from_ref(&b)), after_retry, 10).await,
            depth(0, false, None),
            "{}",
            s.name
        );
        assert_eq!(
            queue(Some(&[]), after_retry, 10).await,
            depth(0, false, None),
            "{}",
            s.name
        );
        assert_eq!(
            queue(None, after_retry, 10).await,
            depth(1, false, Some(retry_at)),
            "{}",
            s.name
        );

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

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// The charts' figures as the console read them before it kept counters: a scan of the
/// attempts started since `since`, bucketed by `width` from there, of the webhooks addressed
/// to `levels` (every level when `None`).
async fn scanned_buckets(
    url: &str,
    levels: Option<&[EntityId]>,
    since: Millis,
    width: i64,
) -> Vec<Bucket> {
    use sqlx::{Connection as _, Row as _};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let clause = match levels {
        None => String::new(),
        Some(ids) => {
            let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
            format!(" AND w.level_id IN ({})", marks.join(", "))
        }
    };
    let sql = format!(
        "SELECT CAST((t.started_at - $1) / $2 AS BIGINT), \
                CAST(SUM(CASE WHEN t.error IS NULL THEN 1 ELSE 0 END) AS BIGINT), \
                CAST(SUM(CASE WHEN t.error IS NULL THEN 0 ELSE 1 END) AS BIGINT) \
         FROM attempts t JOIN webhooks w ON w.id = t.webhook_id \
         WHERE t.started_at >= $1{clause} GROUP BY 1 ORDER BY 1"
    );
    let mut q = sqlx::query(&sql).bind(since.0).bind(width);
    for id in levels.unwrap_or_default() {
        q = q.bind(id.as_str().to_owned());
    }
    q.fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| Bucket {
            index: r.get::<i64, _>(0),
            succeeded: r.get::<i64, _>(1) as u64,
            failed: r.get::<i64, _>(2) as u64,
        })
        .collect()
}

/// Claims every due webhook, then records `plan` (webhook, start time, delivered?) in
/// batches: one `record` call per batch.
async fn record_batches(store: &dyn Store, batches: &[Vec<(&EntityId, Millis, bool)>]) {
    store
        .claim_due("o", T0, Millis(T0.0 + 600_000), 1_000)
        .await
        .unwrap();
    for batch in batches {
        let results: Vec<Recorded> = batch
            .iter()
            .map(|(webhook, at, delivered)| Recorded {
                webhook_id: (*webhook).clone(),
                attempt: Attempt {
                    number: 1,
                    started_at: *at,
                    duration_ms: 3,
                    status_code: Some(if *delivered { 200 } else { 500 }),
                    error: (!*delivered).then(|| "HTTP 500".to_owned()),
                    body: String::new(),
                },
                next: if *delivered {
                    Next::Succeeded
                } else {
                    Next::Failed
                },
            })
            .collect();
        let kept = store.record("o", &results, Millis(T0.0 + 1)).await.unwrap();
        assert_eq!(kept.len(), results.len());
    }
}

#[tokio::test]
async fn chart_counters_give_what_a_scan_of_the_attempts_gives_at_minute_and_hour_edges() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (a, wa) = level_with_webhooks(store, 6).await;
        let (b, wb) = level_with_webhooks(store, 4).await;
        let (c, wc) = level_with_webhooks(store, 4).await;
        // An hour's start after T0; the overview is looked at 5 h 30 min 10 s later.
        let h = Millis((T0.0.div_euclid(HOUR) + 1) * HOUR);
        let at =
            |hours: i64, minutes: i64, ms: i64| Millis(h.0 + hours * HOUR + minutes * MINUTE + ms);
        let now = at(5, 30, 10_000);
        let minute_start = Millis((now.0 / MINUTE - 59) * MINUTE);
        let day_start = Millis((now.0 / HOUR - 23) * HOUR);
        assert_eq!((minute_start, day_start), (at(4, 31, 0), at(-18, 0, 0)));
        record_batches(
            store,
            &[
                vec![
                    (&wa[0], at(5, 30, 0), true),
                    (&wa[1], at(5, 29, MINUTE - 1), false),
                    (&wa[2], at(5, 29, 0), true),
                    // The window's first minute, and the last millisecond before it.
                    (&wb[0], at(4, 31, 0), true),
                    (&wb[1], at(4, 30, MINUTE - 1), false),
                    // Either side of an hour's start.
                    (&wc[0], at(5, 0, 0), false),
                    (&wc[1], at(4, 59, MINUTE - 1), true),
                ],
                vec![
                    // 61 minutes old: the per-minute slot it shares holds a newer minute of a.
                    (&wa[3], at(4, 29, 0), true),
                    (&wb[2], at(-18, 0, 0), true),
                    (&wb[3], at(-18, 0, -1), false),
                    (&wc[2], at(5, 29, 30_000), false),
                    // Added to the minute a's first batch counted.
                    (&wa[4], at(5, 29, 10_000), false),
                ],
                vec![
                    // 60 minutes old, 24 hours old: recorded after newer ones in their slots.
                    (&wa[5], at(4, 30, 0), true),
                    (&wc[3], at(-19, 0, 0), false),
                ],
            ],
        )
        .await;

        let minutes = |levels: Option<Vec<EntityId>>| async move {
            store
                .attempt_buckets(levels.as_deref(), minute_start, BucketWidth::Minute)
                .await
                .unwrap()
        };
        let hours = |levels: Option<Vec<EntityId>>| async move {
            store
                .attempt_buckets(levels.as_deref(), day_start, BucketWidth::Hour)
                .await
                .unwrap()
        };
        let every = None;
        let only_a = Some(vec![a.clone()]);
        let b_and_c = Some(vec![b.clone(), c.clone()]);
        assert_eq!(
            minutes(every.clone()).await,
            vec![
                bucket(0, 1, 0),
                bucket(28, 1, 0),
                bucket(29, 0, 1),
                bucket(58, 1, 3),
                bucket(59, 1, 0)
            ],
            "{}",
            s.name
        );
        assert_eq!(
            minutes(only_a.clone()).await,
            vec![bucket(58, 1, 2), bucket(59, 1, 0)],
            "{}",
            s.name
        );
        assert_eq!(
            minutes(b_and_c.clone()).await,
            vec![
                bucket(0, 1, 0),
                bucket(28, 1, 0),
                bucket(29, 0, 1),
                bucket(58, 0, 1)
            ],
            "{}",
            s.name
        );
        assert_eq!(
            hours(every.clone()).await,
            vec![bucket(0, 1, 0), bucket(22, 4, 1), bucket(23, 2, 4)],
            "{}",
            s.name
        );
        assert_eq!(
            hours(only_a.clone()).await,
            vec![bucket(22, 2, 0), bucket(23, 2, 2)],
            "{}",
            s.name
        );
        assert_eq!(hours(Some(vec![])).await, vec![], "{}", s.name);

        for levels in [
            every,
            only_a,
            b_and_c,
            Some(vec![a.clone(), b.clone(), c.clone()]),
        ] {
            assert_eq!(
                minutes(levels.clone()).await,
                scanned_buckets(&s.url, levels.as_deref(), minute_start, MINUTE).await,
                "per minute, {levels:?}: {}",
                s.name
            );
            assert_eq!(
                hours(levels.clone()).await,
                scanned_buckets(&s.url, levels.as_deref(), day_start, HOUR).await,
                "per hour, {levels:?}: {}",
                s.name
            );
        }
    }
}

#[tokio::test]
async fn the_queue_is_counted_up_to_the_cap_and_says_when_more_wait() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (a, _) = level_with_webhooks(store, 5).await;
        let (b, _) = level_with_webhooks(store, 2).await;
        let depth = |levels: Option<Vec<EntityId>>, cap: u64| async move {
            let q = store.queue_depth(levels.as_deref(), T0, cap).await.unwrap();
            (q.pending, q.more, q.oldest_due)
        };
        assert_eq!(depth(None, 100).await, (7, false, Some(T0)), "{}", s.name);
        assert_eq!(depth(None, 7).await, (7, false, Some(T0)), "{}", s.name);
        assert_eq!(depth(None, 6).await, (6, true, Some(T0)), "{}", s.name);
        assert_eq!(
            depth(Some(vec![a.clone()]), 3).await,
            (3, true, Some(T0)),
            "{}",
            s.name
        );
        assert_eq!(
            depth(Some(vec![b.clone()]), 3).await,
            (2, false, Some(T0)),
            "{}",
            s.name
        );
        // Claimed webhooks still wait for their attempt, but none of them is due unclaimed.
        store
            .claim_due("o", T0, Millis(T0.0 + 600_000), 100)
            .await
            .unwrap();
        assert_eq!(depth(None, 100).await, (7, false, None), "{}", s.name);
    }
}

#[tokio::test]
async fn failed_and_disabled_lists_are_newest_first_and_page_by_cursor() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        let (a, wa) = level_with_webhooks(store, 8).await;
        let (b, wb) = level_with_webhooks(store, 3).await;
        // a: 0, 2, 4, 6 fail for good, 1 and 5 succeed, 3 and 7 stay pending; b: 0 fails.
        let batch: Vec<(&EntityId, Millis, bool)> = [
            (&wa[0], false),
            (&wa[1], true),
            (&wa[2], false),
            (&wa[4], false),
            (&wa[5], true),
            (&wa[6], false),
            (&wb[0], false),
        ]
        .into_iter()
        .map(|(w, ok)| (w, T0, ok))
        .collect();
        record_batches(store, &[batch]).await;
        // Back in the queue: wa[3], wa[7] and b's 1 and 2; disabling b disables its two.
        store.release_all(T0).await.unwrap();
        store
            .put_endpoint(
                &b,
                &tidings::domain::endpoint::Endpoint {
                    enabled: false,
                    disabled_reason: Some("off".into()),
                    ..Default::default()
                },
                true,
                T0,
            )
            .await
            .unwrap();

        let newest_first = |mut ids: Vec<EntityId>| {
            ids.sort();
            ids.reverse();
            ids
        };
        let list = |status: WebhookStatus,
                    levels: Option<Vec<EntityId>>,
                    after: Option<EntityId>,
                    limit: u32| async move {
            store
                .webhooks_newest(
                    &WebhookFilter {
                        status: Some(status),
                        after,
                        limit,
                        ..WebhookFilter::default()
                    },
                    levels.as_deref(),
                )
                .await
                .unwrap()
                .into_iter()
                .map(|w| {
                    assert_eq!(w.status, status);
                    w.id
                })
                .collect::<Vec<_>>()
        };

        let failed = newest_first(vec![
            wa[0].clone(),
            wa[2].clone(),
            wa[4].clone(),
            wa[6].clone(),
            wb[0].clone(),
        ]);
        assert_eq!(
            list(WebhookStatus::Failed, None, None, 10).await,
            failed,
            "{}",
            s.name
        );
        // Two a page, each page after the last id of the one before.
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = list(WebhookStatus::Failed, None, after.clone(), 2).await;
            if page.is_empty() {
                break;
            }
            after = page.last().cloned();
            pages.push(page);
        }
        assert_eq!(
            pages,
            failed
                .chunks(2)
                .map(<[EntityId]>::to_vec)
                .collect::<Vec<_>>(),
            "{}",
            s.name
        );
        let failed_a: Vec<EntityId> = failed.iter().filter(|w| **w != wb[0]).cloned().collect();
        assert_eq!(
            list(WebhookStatus::Failed, Some(vec![a.clone()]), None, 10).await,
            failed_a,
            "{}",
            s.name
        );
        assert_eq!(
            list(
                WebhookStatus::Failed,
                Some(vec![a.clone()]),
                Some(failed_a[1].clone()),
                10
            )
            .await,
            failed_a[2..].to_vec(),
            "{}",
            s.name
        );
        assert_eq!(
            list(WebhookStatus::Disabled, None, None, 10).await,
            newest_first(vec![wb[1].clone(), wb[2].clone()]),
            "{}",
            s.name
        );
        assert!(
            list(WebhookStatus::Disabled, Some(vec![a.clone()]), None, 10)
                .await
                .is_empty()
        );
        assert_eq!(
            list(WebhookStatus::Pending, None, None, 10).await,
            newest_first(vec![wa[3].clone(), wa[7].clone()]),
            "{}",
            s.name
        );
    }
}

/// A webhook as the lists see it: its level (an index into the test's levels), type,
/// subject (an index into the test's subjects), creation time and status.
#[derive(Debug, Clone)]
struct Listed {
    id: EntityId,
    level: usize,
    event_type: EventType,
    subject: usize,
    created_at: Millis,
    status: WebhookStatus,
}

/// 40 webhooks to `levels` in an irregular turn, one an event, each a millisecond newer than
/// the one before (so ids and creation times follow the same order), some of them delivered,
/// failed or disabled; the rest pending.
async fn webhooks_across_levels(
    store: &dyn Store,
    levels: &[EntityId],
    subjects: &[EntityId],
) -> Vec<Listed> {
    let made: Vec<Listed> = (0..40usize)
        .map(|i| Listed {
            id: EntityId::generate(Millis(T0.0 + i as i64)),
            level: (i * 2 + i / 2) % levels.len(),
            event_type: if i % 3 == 0 {
                EventType::DealerChanged
            } else {
                EventType::DealerCreated
            },
            subject: (i / 2) % subjects.len(),
            created_at: Millis(T0.0 + i as i64),
            status: match (i % 7, i % 5) {
                (6, _) => WebhookStatus::Disabled,
                (_, 1) => WebhookStatus::Failed,
                (_, 3) => WebhookStatus::Succeeded,
                _ => WebhookStatus::Pending,
            },
        })
        .collect();
    let mut tx = store.write_alone().await.unwrap();
    for w in &made {
        let event = NewEvent {
            // Made in its webhook's millisecond, as the store requires.
            id: EntityId::generate(w.created_at),
            event_type: w.event_type,
            subject_id: subjects[w.subject].clone(),
            data: "{}".into(),
            created_at: w.created_at,
        };
        let webhook = NewWebhook {
            id: w.id.clone(),
            level: Level::Reseller,
            level_id: levels[w.level].clone(),
            url: "https://r.example/hook".into(),
            ordered: false,
            disabled: w.status == WebhookStatus::Disabled,
        };
        tx.add_event(&event, &[webhook], None).await.unwrap();
    }
    tx.commit().await.unwrap();
    let now = Millis(T0.0 + 1_000);
    store
        .claim_due("o", now, Millis(now.0 + 60_000), 1_000)
        .await
        .unwrap();
    let ended: Vec<Recorded> = made
        .iter()
        .filter_map(|w| {
            let next = match w.status {
                WebhookStatus::Succeeded => Next::Succeeded,
                WebhookStatus::Failed => Next::Failed,
                _ => return None,
            };
            Some(Recorded {
                webhook_id: w.id.clone(),
                attempt: attempt(0, (next == Next::Failed).then_some("HTTP 500")),
                next,
            })
        })
        .collect();
    assert_eq!(
        store.record("o", &ended, now).await.unwrap().len(),
        ended.len()
    );
    store.release_all(now).await.unwrap();
    made
}

#[tokio::test]
async fn lists_narrowed_to_levels_give_the_rows_order_and_pages_of_the_filters() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        // a, b and c are in view; x is not.
        let levels: Vec<EntityId> = (0..4).map(|_| id()).collect();
        let (a, b, c, x) = (&levels[0], &levels[1], &levels[2], &levels[3]);
        let subjects: Vec<EntityId> = (0..2).map(|_| id()).collect();
        let made = webhooks_across_levels(store, &levels, &subjects).await;
        for status in [
            WebhookStatus::Pending,
            WebhookStatus::Succeeded,
            WebhookStatus::Failed,
            WebhookStatus::Disabled,
        ] {
            assert!(
                (0..4).all(|l| made.iter().any(|w| w.level == l && w.status == status)),
                "every level has {status:?} webhooks"
            );
        }

        let page = |limit: u32| WebhookFilter {
            limit,
            ..WebhookFilter::default()
        };
        let filters: Vec<WebhookFilter> = vec![
            page(3),
            page(50),
            WebhookFilter {
                status: Some(WebhookStatus::Failed),
                ..page(2)
            },
            WebhookFilter {
                status: Some(WebhookStatus::Disabled),
                ..page(2)
            },
            WebhookFilter {
                status: Some(WebhookStatus::Pending),
                ..page(4)
            },
            WebhookFilter {
                status: Some(WebhookStatus::Succeeded),
                ..page(3)
            },
            WebhookFilter {
                event_type: Some(EventType::DealerChanged),
                ..page(3)
            },
            WebhookFilter {
                subject_id: Some(subjects[1].clone()),
                ..page(3)
            },
            WebhookFilter {
                since: Some(Millis(T0.0 + 9)),
                until: Some(Millis(T0.0 + 31)),
                ..page(3)
            },
            WebhookFilter {
                level_id: Some(b.clone()),
                ..page(3)
            },
            WebhookFilter {
                level_id: Some(x.clone()),
                ..page(3)
            },
            WebhookFilter {
                status: Some(WebhookStatus::Pending),
                event_type: Some(EventType::DealerCreated),
                subject_id: Some(subjects[0].clone()),
                since: Some(Millis(T0.0 + 4)),
                ..page(2)
            },
        ];
        // More levels than one query reads: 600 that hold nothing, with a, b and c among them.
        let mut many: Vec<EntityId> = (0..600).map(|_| id()).collect();
        many.extend([c.clone(), a.clone(), b.clone()]);
        let scopes: Vec<Option<Vec<EntityId>>> = vec![
            None,
            Some(vec![a.clone(), b.clone(), c.clone()]),
            Some(vec![c.clone(), a.clone()]),
            Some(vec![b.clone(), b.clone()]),
            Some(many),
            Some(vec![]),
        ];

        // What each list must hold: the model's matching webhooks in id order.
        let expected = |f: &WebhookFilter, scope: Option<&[EntityId]>| -> Vec<EntityId> {
            let mut ids: Vec<EntityId> = made
                .iter()
                .filter(|w| {
                    let level = &levels[w.level];
                    scope.is_none_or(|s| s.contains(level))
                        && f.status.is_none_or(|x| x == w.status)
                        && f.event_type.is_none_or(|t| t == w.event_type)
                        && f.level_id.as_ref().is_none_or(|l| l == level)
                        && f.subject_id
                            .as_ref()
                            .is_none_or(|x| *x == subjects[w.subject])
                        && f.since.is_none_or(|t| w.created_at >= t)
                        && f.until.is_none_or(|t| w.created_at < t)
                })
                .map(|w| w.id.clone())
                .collect();
            ids.sort();
            ids
        };
        // Every page, each after the last id of the one before, until an empty one.
        async fn pages(
            store: &dyn Store,
            f: &WebhookFilter,
            scope: Option<&[EntityId]>,
            newest_first: bool,
        ) -> Vec<Vec<EntityId>> {
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let f = WebhookFilter {
                    after: after.clone(),
                    ..f.clone()
                };
                let page: Vec<EntityId> = if newest_first {
                    store.webhooks_newest(&f, scope).await.unwrap()
                } else {
                    store.webhooks(&f).await.unwrap()
                }
                .into_iter()
                .map(|w| w.id)
                .collect();
                if page.is_empty() {
                    return out;
                }
                assert!(page.len() <= f.limit as usize);
                after = page.last().cloned();
                out.push(page);
                assert!(out.len() <= 40, "the cursor moves on");
            }
        }
        let chunked = |ids: Vec<EntityId>, limit: u32| -> Vec<Vec<EntityId>> {
            ids.chunks(limit as usize)
                .map(<[EntityId]>::to_vec)
                .collect()
        };
        for f in &filters {
            for scope in &scopes {
                let mut want = expected(f, scope.as_deref());
                want.reverse();
                assert_eq!(
                    pages(store, f, scope.as_deref(), true).await,
                    chunked(want, f.limit),
                    "newest first, {f:?}, {} levels: {}",
                    scope.as_ref().map_or(0, Vec::len),
                    s.name
                );
            }
            // The API's list: the same filters, oldest first, every level.
            assert_eq!(
                pages(store, f, None, false).await,
                chunked(expected(f, None), f.limit),
                "oldest first, {f:?}: {}",
                s.name
            );
        }

        // The newest page of a, b and c holds webhooks of more than one level, x's left out.
        let first = store
            .webhooks_newest(&page(5), Some(&levels[..3]))
            .await
            .unwrap();
        let seen: std::collections::BTreeSet<&EntityId> =
            first.iter().map(|w| &w.level_id).collect();
        assert!(seen.len() > 1 && !seen.contains(x), "{seen:?}: {}", s.name);
        assert!(
            made.iter().rev().take(5).any(|w| w.level == 3),
            "x has webhooks among the five newest"
        );
    }
}

#[tokio::test]
async fn the_queue_of_some_levels_is_counted_across_them_up_to_the_cap() {
    for s in stores::both().await {
        let store = s.store.as_ref();
        // a, b and c are in view; x is not.
        let levels: Vec<EntityId> = (0..4).map(|_| id()).collect();
        let (a, b, c, x) = (&levels[0], &levels[1], &levels[2], &levels[3]);
        let add = |level: &EntityId, n: usize| {
            let level = level.clone();
            async move {
                let mut tx = store.write_alone().await.unwrap();
                let mut ids = Vec::new();
                for _ in 0..n {
                    let event = NewEvent {
                        id: id(),
                        event_type: EventType::DealerCreated,
                        subject_id: id(),
                        data: "{}".into(),
                        created_at: T0,
                    };
                    let w = NewWebhook {
                        id: id(),
                        level: Level::Reseller,
                        level_id: level.clone(),
                        url: "https://r.example/hook".into(),
                        ordered: false,
                        disabled: false,
                    };
                    ids.push(w.id.clone());
                    tx.add_event(&event, &[w], None).await.unwrap();
                }
                tx.commit().await.unwrap();
                ids
            }
        };
        let wa = add(a, 4).await;
        let wb = add(b, 3).await;
        let wx = add(x, 2).await;
        let at = |hours: i64| Millis(T0.0 + hours * HOUR);
        store.claim_due("o", T0, at(2), 100).await.unwrap();
        // a: two wait until 5 h, two are delivered; b: two wait until 3 h and 4 h, one
        // failed for good; x: both wait until 1 h.
        let results: Vec<Recorded> = [
            (&wa[0], Next::RetryAt(at(5))),
            (&wa[1], Next::RetryAt(at(5))),
            (&wa[2], Next::Succeeded),
            (&wa[3], Next::Succeeded),
            (&wb[0], Next::RetryAt(at(4))),
            (&wb[1], Next::RetryAt(at(3))),
            (&wb[2], Next::Failed),
            (&wx[0], Next::RetryAt(at(1))),
            (&wx[1], Next::RetryAt(at(1))),
        ]
        .into_iter()
        .map(|(w, next)| Recorded {
            webhook_id: w.clone(),
            attempt: attempt(0, (next != Next::Succeeded).then_some("HTTP 500")),
            next,
        })
        .collect();
        assert_eq!(store.record("o", &results, T0).await.unwrap().len(), 9);
        // c: two claimed, whose lease ended at 2 h: waiting, but not due unclaimed.
        add(c, 2).await;
        assert_eq!(
            store.claim_due("p", T0, at(2), 100).await.unwrap().len(),
            2,
            "{}",
            s.name
        );

        let depth = |levels: Option<Vec<EntityId>>, now: Millis, cap: u64| async move {
            let q = store
                .queue_depth(levels.as_deref(), now, cap)
                .await
                .unwrap();
            (q.pending, q.more, q.oldest_due)
        };
        let abc = Some(vec![a.clone(), b.clone(), c.clone()]);
        // Six wait among a, b and c: two of each.
        assert_eq!(
            depth(abc.clone(), at(6), 10).await,
            (6, false, Some(at(3))),
            "{}",
            s.name
        );
        assert_eq!(
            depth(abc.clone(), at(6), 6).await,
            (6, false, Some(at(3))),
            "{}",
            s.name
        );
        assert_eq!(
            depth(abc.clone(), at(6), 5).await,
            (5, true, Some(at(3))),
            "{}",
            s.name
        );
        assert_eq!(
            depth(abc.clone(), at(6), 3).await,
            (3, true, Some(at(3))),
            "{}",
            s.name
        );
        // Before 3 h nothing of theirs is due unclaimed; x's are, since 1 h.
        assert_eq!(
            depth(abc.clone(), Millis(at(3).0 - 1), 10).await,
            (6, false, None),
            "{}",
            s.name
        );
        assert_eq!(
            depth(None, Millis(at(3).0 - 1), 10).await,
            (8, false, Some(at(1))),
            "{}",
            s.name
        );
        assert_eq!(
            depth(Some(vec![c.clone(), x.clone()]), at(6), 10).await,
            (4, false, Some(at(1))),
            "{}",
            s.name
        );
        assert_eq!(
            depth(Some(vec![a.clone()]), at(6), 10).await,
            (2, false, Some(at(5))),
            "{}",
            s.name
        );
        assert_eq!(
            depth(Some(vec![c.clone()]), at(6), 1).await,
            (1, true, None),
            "{}",
            s.name
        );
        // More levels than one query reads: 600 that hold nothing, with b and c among them.
        let mut many: Vec<EntityId> = (0..600).map(|_| id()).collect();
        many.extend([c.clone(), b.clone()]);
        assert_eq!(
            depth(Some(many.clone()), at(6), 10).await,
            (4, false, Some(at(3))),
            "{}",
            s.name
        );
        assert_eq!(
            depth(Some(many), at(6), 3).await,
            (3, true, Some(at(3))),
            "{}",
            s.name
        );
    }
}
