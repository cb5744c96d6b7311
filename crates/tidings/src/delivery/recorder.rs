//! The recorder: finished attempts are written in batches, one transaction per batch, and
//! the room they held in the dispatcher is given back once they are.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::handoff::Freed;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{Next, Recorded, Store};

/// Largest number of attempts recorded in one transaction.
const RECORD_BATCH: usize = 512;

/// How many batches of attempts are recorded at once. SQLite has one writer, which
/// records one batch at a time whatever the number. On PostgreSQL each batch is a
/// transaction of its own, written side by side: with one at a time, an attempt waited for
/// the batch before its own, and the room it held in the dispatcher (which back-pressure
/// lends to the API) was given back that much later. With more than two, one is nearly
/// always free at a moderate rate and takes whatever has finished, a webhook or three: at
/// 1,000 events/s four cost the server 9 % more CPU than two, for no more throughput at the
/// maximum rate (BENCHMARKS.md).
fn recorders(store: &dyn Store) -> usize {
    match store.backend() {
        "postgres" => 2,
        _ => 1,
    }
}

/// How long a batch waits for more finished attempts once its first is in. SQLite's
/// single writer already commits many changes at once, so it waits for none. On
/// PostgreSQL every batch is a transaction of its own, and two of them (the record and the
/// endpoints' health after it); a moderate rate would otherwise make a batch of nearly
/// every attempt: the server's CPU then follows the number of batches, not of webhooks.
/// A few milliseconds of waiting delays only the recording, never an attempt.
fn linger(store: &dyn Store) -> Duration {
    match store.backend() {
        "postgres" => Duration::from_millis(5),
        _ => Duration::ZERO,
    }
}

/// A batch: `first`, and what else comes in within `linger` of it (or is waiting already),
/// up to [`RECORD_BATCH`].
async fn gather(
    rx: &mut mpsc::UnboundedReceiver<Recorded>,
    first: Recorded,
    linger: Duration,
) -> Vec<Recorded> {
    let deadline = tokio::time::Instant::now() + linger;
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    batch.push(first);
    while batch.len() < RECORD_BATCH {
        let next = match rx.try_recv() {
            Ok(r) => Some(r),
            Err(mpsc::error::TryRecvError::Empty) if !linger.is_zero() => {
                tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten()
            }
            Err(_) => None,
        };
        match next {
            Some(r) => batch.push(r),
            None => break,
        }
    }
    batch
}

/// Records finished attempts in batches; a failed write is retried, never dropped. Returns
/// once the channel is closed and every batch is recorded.
#[allow(clippy::too_many_arguments)]
pub(super) async fn record_loop(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    owner: String,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::UnboundedReceiver<Recorded>,
    in_flight: Arc<AtomicUsize>,
    slot_freed: Arc<Freed>,
    new_work: Arc<Notify>,
) {
    let parallel = recorders(store.as_ref());
    let linger = linger(store.as_ref());
    let recorders = Arc::new(tokio::sync::Semaphore::new(parallel));
    while let Some(first) = rx.recv().await {
        // The batch grows while every recorder is busy.
        let recorder = recorders
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let batch = gather(&mut rx, first, linger).await;
        let (store, metrics, owner, clock) =
            (store.clone(), metrics.clone(), owner.clone(), clock.clone());
        let (in_flight, slot_freed, new_work) =
            (in_flight.clone(), slot_freed.clone(), new_work.clone());
        tokio::spawn(async move {
            loop {
                match store.record(&owner, &batch, clock.now()).await {
                    Ok(recorded) => {
                        for i in recorded {
                            metrics.recorded(&batch[i].next);
                        }
                        break;
                    }
                    Err(e) => {
                        metrics.record_failed();
                        tracing::error!(error = %e, count = batch.len(), "recording attempts failed; retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            in_flight.fetch_sub(batch.len(), Ordering::SeqCst);
            slot_freed.notify();
            if batch.iter().any(|r| matches!(r.next, Next::RetryAt(_))) {
                // A retry may be due earlier than the loop's sleep.
                new_work.notify_one();
            }
            drop(recorder);
        });
    }
    // Every batch under way is recorded before the loop ends, and what the store keeps
    // of them in memory is written.
    let _all = recorders
        .acquire_many(parallel as u32)
        .await
        .expect("the semaphore is never closed");
    store.flush_recorded().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::{Attempt, SqlStore};

    fn finished(number: u32) -> Recorded {
        Recorded {
            webhook_id: crate::domain::EntityId::generate(crate::domain::Millis(0)),
            attempt: Attempt {
                number,
                started_at: crate::domain::Millis(0),
                duration_ms: 1,
                status_code: Some(200),
                error: None,
                body: String::new(),
            },
            next: Next::Succeeded,
        }
    }

    fn numbers(batch: &[Recorded]) -> Vec<u32> {
        batch.iter().map(|r| r.attempt.number).collect()
    }

    /// A batch takes what comes within the linger of its first attempt, and what is already
    /// waiting; what comes later starts the next batch. Without a linger it takes only what
    /// is waiting.
    #[tokio::test(start_paused = true)]
    async fn a_batch_gathers_what_finishes_within_the_linger() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(finished(2)).unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            late.send(finished(3)).unwrap();
            tokio::time::sleep(Duration::from_millis(4)).await;
            late.send(finished(4)).unwrap();
        });
        let started = tokio::time::Instant::now();
        let batch = gather(&mut rx, finished(1), Duration::from_millis(5)).await;
        assert_eq!(numbers(&batch), [1, 2, 3]);
        assert_eq!(started.elapsed(), Duration::from_millis(5));

        let first = rx.recv().await.unwrap();
        tx.send(finished(5)).unwrap();
        let batch = gather(&mut rx, first, Duration::ZERO).await;
        assert_eq!(numbers(&batch), [4, 5]);
        assert_eq!(started.elapsed(), Duration::from_millis(7));

        // A closed channel ends the wait at once.
        drop(tx);
        let batch = gather(&mut rx, finished(6), Duration::from_millis(5)).await;
        assert_eq!(numbers(&batch), [6]);
        assert_eq!(started.elapsed(), Duration::from_millis(7));
    }

    /// A full batch goes without waiting out the linger.
    #[tokio::test(start_paused = true)]
    async fn a_full_batch_does_not_wait() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for n in 0..RECORD_BATCH as u32 {
            tx.send(finished(n + 2)).unwrap();
        }
        let started = tokio::time::Instant::now();
        let batch = gather(&mut rx, finished(1), Duration::from_secs(1)).await;
        assert_eq!(batch.len(), RECORD_BATCH);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(
            rx.try_recv().unwrap().attempt.number,
            RECORD_BATCH as u32 + 1
        );
    }

    fn line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
    }

    /// While the store refuses the record, the batch waits and is retried (nothing dropped),
    /// and `/metrics` says so; once the store takes it again, it is recorded.
    #[tokio::test]
    async fn a_failing_record_is_counted_retried_and_then_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let url = format!("sqlite://{}", path.display());
        let store: Arc<dyn Store> = Arc::new(SqlStore::open(&url).await.unwrap());
        let now = SystemClock.now();
        let webhook = crate::metrics::tests::queue_one(store.as_ref(), 1).await;
        let claimed = store
            .claim_due("me", now, now.plus(Duration::from_secs(60)), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);

        // The attempts table goes away under the store: every record fails.
        let side = rusqlite::Connection::open(&path).unwrap();
        side.busy_timeout(Duration::from_secs(5)).unwrap();
        side.execute_batch("ALTER TABLE attempts RENAME TO attempts_away")
            .unwrap();

        let metrics = Arc::new(Metrics::new());
        let in_flight = Arc::new(AtomicUsize::new(1));
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_loop(
            store.clone(),
            metrics.clone(),
            "me".into(),
            Arc::new(SystemClock),
            rx,
            in_flight.clone(),
            Arc::new(Freed::default()),
            Arc::new(Notify::new()),
        ));
        tx.send(Recorded {
            webhook_id: webhook.clone(),
            attempt: Attempt {
                number: 1,
                started_at: now,
                duration_ms: 1,
                status_code: Some(200),
                error: None,
                body: String::new(),
            },
            next: Next::Succeeded,
        })
        .unwrap();
        let scrape = || async { metrics.scrape(&store, SystemClock.now()).await.unwrap() };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let failures = |text: &str| -> u64 {
            line(text, "tidings_record_failures_total").map_or(0, |n| n.parse().unwrap())
        };
        // Two: the first write and its retry a second later.
        while failures(&scrape().await) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no failures counted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(in_flight.load(Ordering::SeqCst), 1, "still waiting");
        let attempts: i64 = side
            .query_row(
                "SELECT attempts FROM webhooks WHERE id = ?1",
                [webhook.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(attempts, 0, "nothing half-recorded");

        side.execute_batch("ALTER TABLE attempts_away RENAME TO attempts")
            .unwrap();
        while in_flight.load(Ordering::SeqCst) != 0 {
            assert!(tokio::time::Instant::now() < deadline, "never recorded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (w, attempts) = store.webhook(&webhook).await.unwrap().unwrap();
        assert_eq!((w.attempts, attempts.len()), (1, 1));
        let text = scrape().await;
        assert_eq!(
            line(
                &text,
                "tidings_webhooks_recorded_total{status=\"succeeded\"}"
            ),
            Some("1")
        );
        drop(tx);
        recorder.await.unwrap();
    }
}
