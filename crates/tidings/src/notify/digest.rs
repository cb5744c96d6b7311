//! The digest rule: which e-mail a failed webhook joins. Pure: no store, no clock, no SMTP.
//!
//! Failures are keyed by the level that owns the URL and the URL ([`DigestKey`]). Per key:
//!
//! - **leading edge**: a failure with no e-mail for its key in the last window opens an
//!   e-mail that is sent at once, so the first failure is never held back;
//! - **trailing digest**: failures that follow within the window open (or join) one e-mail
//!   planned for the end of that window, `window` after the previous e-mail's planned time;
//!   everything that fails until it is sent joins it;
//! - so a key gets at most one e-mail per window, and every failure is in exactly one e-mail;
//! - a window of zero turns gathering off: one e-mail per failed webhook, at once.
//!
//! An e-mail stays open (joinable) until the mailer first claims it for sending.

use std::collections::HashMap;
use std::time::Duration;

use crate::domain::{EntityId, Millis};

/// What failures are gathered by: the level that owns the URL, and the URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DigestKey {
    pub level_id: EntityId,
    pub url: String,
}

/// A webhook that failed its last attempt and is in no e-mail yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub notification_id: EntityId,
    pub key: DigestKey,
}

/// The latest e-mail of a key, as far as the digest rule cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    pub email_id: EntityId,
    /// When it was planned to go out: the start of the window that follows it.
    pub scheduled_at: Millis,
    /// Whether failures may still join it (not yet claimed for sending).
    pub open: bool,
}

/// Where a group of failures goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Into an e-mail that is still open.
    Join {
        email_id: EntityId,
        notifications: Vec<EntityId>,
    },
    /// Into a new e-mail for `key`, to be sent at `scheduled_at`.
    Open {
        key: DigestKey,
        scheduled_at: Millis,
        notifications: Vec<EntityId>,
    },
}

/// Places `failures` (oldest first) given each key's latest e-mail. Keys come out in the order
/// of their first failure; within a placement, failures keep their order.
pub fn plan(
    failures: &[Failure],
    latest: &HashMap<DigestKey, Latest>,
    now: Millis,
    window: Duration,
) -> Vec<Placement> {
    if window.is_zero() {
        return failures
            .iter()
            .map(|f| Placement::Open {
                key: f.key.clone(),
                scheduled_at: now,
                notifications: vec![f.notification_id.clone()],
            })
            .collect();
    }
    let mut order: Vec<&DigestKey> = Vec::new();
    let mut groups: HashMap<&DigestKey, Vec<EntityId>> = HashMap::new();
    for f in failures {
        let group = groups.entry(&f.key).or_insert_with(|| {
            order.push(&f.key);
            Vec::new()
        });
        group.push(f.notification_id.clone());
    }
    order
        .into_iter()
        .map(|key| {
            let notifications = groups.remove(key).unwrap_or_default();
            match latest.get(key) {
                Some(l) if l.open => Placement::Join {
                    email_id: l.email_id.clone(),
                    notifications,
                },
                Some(l) => Placement::Open {
                    key: key.clone(),
                    scheduled_at: now.max(l.scheduled_at.plus(window)),
                    notifications,
                },
                None => Placement::Open {
                    key: key.clone(),
                    scheduled_at: now,
                    notifications,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::numbered_id as id;

    const HOUR: Duration = Duration::from_secs(3600);
    const NOW: Millis = Millis(10_000_000);

    fn key(level: u32, url: &str) -> DigestKey {
        DigestKey {
            level_id: id(level),
            url: url.into(),
        }
    }

    fn failure(n: u32, level: u32, url: &str) -> Failure {
        Failure {
            notification_id: id(n),
            key: key(level, url),
        }
    }

    fn open(k: DigestKey, at: i64, ns: &[u32]) -> Placement {
        Placement::Open {
            key: k,
            scheduled_at: Millis(at),
            notifications: ns.iter().map(|&n| id(n)).collect(),
        }
    }

    fn join(email: u32, ns: &[u32]) -> Placement {
        Placement::Join {
            email_id: id(email),
            notifications: ns.iter().map(|&n| id(n)).collect(),
        }
    }

    fn latest(entries: &[(DigestKey, u32, i64, bool)]) -> HashMap<DigestKey, Latest> {
        entries
            .iter()
            .map(|(k, e, at, open)| {
                (
                    k.clone(),
                    Latest {
                        email_id: id(*e),
                        scheduled_at: Millis(*at),
                        open: *open,
                    },
                )
            })
            .collect()
    }

    const A: &str = "https://a.example/hook";
    const B: &str = "https://b.example/hook";

    #[test]
    fn digest_rule_table() {
        let hour = HOUR.as_millis() as i64;
        let now = NOW.0;
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Vec<Failure>,
            Vec<(DigestKey, u32, i64, bool)>,
            Duration,
            Vec<Placement>,
        )> =
            vec![
            (
                "first failure to a URL is sent at once",
                vec![failure(1, 7, A)],
                vec![],
                HOUR,
                vec![open(key(7, A), now, &[1])],
            ),
            (
                "failures found together go into one e-mail",
                vec![failure(1, 7, A), failure(2, 7, A), failure(3, 7, A)],
                vec![],
                HOUR,
                vec![open(key(7, A), now, &[1, 2, 3])],
            ),
            (
                "a failure within the window after a sent e-mail waits for the window's end",
                vec![failure(4, 7, A)],
                vec![(key(7, A), 50, now - 1000, false)],
                HOUR,
                vec![open(key(7, A), now - 1000 + hour, &[4])],
            ),
            (
                "a failure after the window has passed is sent at once",
                vec![failure(4, 7, A)],
                vec![(key(7, A), 50, now - hour - 1, false)],
                HOUR,
                vec![open(key(7, A), now, &[4])],
            ),
            (
                "failures join the digest that is still open",
                vec![failure(5, 7, A), failure(6, 7, A)],
                vec![(key(7, A), 51, now + 5000, true)],
                HOUR,
                vec![join(51, &[5, 6])],
            ),
            (
                "an open e-mail planned in the past (no SMTP yet) still gathers",
                vec![failure(5, 7, A)],
                vec![(key(7, A), 51, now - 10 * hour, true)],
                HOUR,
                vec![join(51, &[5])],
            ),
            (
                "different URLs and different levels are gathered apart, in order of first failure",
                vec![
                    failure(1, 7, B),
                    failure(2, 7, A),
                    failure(3, 8, A),
                    failure(4, 7, B),
                ],
                vec![(key(7, A), 52, now - 10, false)],
                HOUR,
                vec![
                    open(key(7, B), now, &[1, 4]),
                    open(key(7, A), now - 10 + hour, &[2]),
                    open(key(8, A), now, &[3]),
                ],
            ),
            (
                "window zero: one e-mail per failed webhook, at once, even with an open one",
                vec![failure(1, 7, A), failure(2, 7, A)],
                vec![(key(7, A), 51, now + 5000, true)],
                Duration::ZERO,
                vec![open(key(7, A), now, &[1]), open(key(7, A), now, &[2])],
            ),
            ("nothing failed, nothing to place", vec![], vec![], HOUR, vec![]),
        ];
        for (name, failures, history, window, want) in cases {
            let got = plan(&failures, &latest(&history), NOW, window);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn every_failure_is_placed_exactly_once() {
        let failures: Vec<Failure> = (1..=40)
            .map(|n| failure(n, n % 3, if n % 2 == 0 { A } else { B }))
            .collect();
        let history = latest(&[(key(0, A), 99, NOW.0, true), (key(1, B), 98, NOW.0, false)]);
        for window in [Duration::ZERO, HOUR] {
            let mut placed: Vec<EntityId> = plan(&failures, &history, NOW, window)
                .into_iter()
                .flat_map(|p| match p {
                    Placement::Join { notifications, .. }
                    | Placement::Open { notifications, .. } => notifications,
                })
                .collect();
            placed.sort();
            let want: Vec<EntityId> = failures.iter().map(|f| f.notification_id.clone()).collect();
            assert_eq!(placed, want, "window {window:?}");
        }
    }
}
