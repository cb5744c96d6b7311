//! One attempt of one webhook: sign it, POST it through the guarded client, decide what the
//! answer means for the webhook (the one place that decides success), and hand the result
//! to the recorder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tidings_egress::{Egress, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;

use super::admission::Destination;
use super::secrets::{SecretBox, Signer};
use crate::clock::Clock;
use crate::domain::endpoint::{SuccessRule, GONE};
use crate::domain::{payload, Millis};
use crate::metrics::Metrics;
use crate::schedule::RetrySchedule;
use crate::store::{Attempt, Claimed, Next, Recorded};

/// One attempt of one webhook.
#[derive(Clone)]
pub(super) struct Attempting {
    pub(super) egress: Egress,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) keys: SecretBox,
    pub(super) metrics: Arc<Metrics>,
    pub(super) schedule: RetrySchedule,
    pub(super) destinations: Arc<Mutex<HashMap<Arc<str>, Destination>>>,
    pub(super) dest: Arc<str>,
    pub(super) done: mpsc::UnboundedSender<Recorded>,
}

impl Attempting {
    /// Sends `claimed`, then whatever waits for this destination, one after the other.
    pub(super) async fn run(self, mut claimed: Claimed) {
        loop {
            let took = self.attempt(claimed).await;
            let mut map = self.destinations.lock().expect("destination map poisoned");
            let Some(d) = map.get_mut(&self.dest) else {
                return;
            };
            let ms = took.as_secs_f64() * 1000.0;
            d.typical_ms = if d.typical_ms == 0.0 {
                ms
            } else {
                0.8 * d.typical_ms + 0.2 * ms
            };
            match d.waiting.pop_front() {
                Some(next) => claimed = next,
                None => {
                    d.in_flight -= 1;
                    if d.in_flight == 0 {
                        map.remove(&self.dest);
                    }
                    return;
                }
            }
        }
    }

    /// Makes one attempt and hands its result to the recorder; returns how long it took.
    async fn attempt(&self, claimed: Claimed) -> Duration {
        let w = &claimed.webhook;
        let number = w.attempts + 1;
        let started = self.clock.now();
        if w.attempts == 0 {
            // A first attempt was due when the event was acknowledged.
            self.metrics.first_attempt_lag(started.0 - w.created_at.0);
        }
        let body = payload::body(&w.id, w.created_at, number, w.event_type, &w.data);
        let span = crate::telemetry::attempt_span(&w.id, &w.event_id, number, &w.url);
        // What the attempt recorded, and what it means for the webhook.
        let (attempt, verdict) = match self.sign(&claimed, started, &body) {
            Err(reason) => {
                self.metrics.attempt("no_secret", Duration::ZERO);
                let attempt = Attempt {
                    number,
                    started_at: started,
                    duration_ms: 0,
                    status_code: None,
                    error: Some(reason),
                    body: String::new(),
                };
                (attempt, Verdict::Failed("no_secret"))
            }
            Ok(headers) => {
                let outcome = tracing::Instrument::instrument(
                    self.egress.post(&w.url, &headers, Bytes::from(body)),
                    span.clone(),
                )
                .await;
                let verdict = Verdict::of(&outcome, claimed.success);
                self.metrics.attempt(verdict.label(), outcome.duration);
                let error = match (verdict, outcome.error) {
                    (Verdict::Succeeded, _) => None,
                    (_, Some(tidings_egress::AttemptError::Status(code)))
                        if claimed.success == SuccessRule::Any2xx =>
                    {
                        Some(format!("HTTP {code}: only 2xx counts as success"))
                    }
                    (_, e) => e.map(|e| e.to_string()),
                };
                let attempt = Attempt {
                    number,
                    started_at: started,
                    duration_ms: outcome.duration.as_millis() as i64,
                    status_code: outcome.status,
                    error,
                    body: outcome.body_excerpt,
                };
                (attempt, verdict)
            }
        };
        crate::telemetry::attempt_done(
            &span,
            verdict.label(),
            attempt.status_code,
            attempt.duration_ms,
            attempt.error.as_deref(),
        );
        let finished = self.clock.now();
        let next = match verdict {
            Verdict::Succeeded => Next::Succeeded,
            Verdict::Gone => Next::Gone,
            Verdict::Failed(_) => match self.schedule.delay_after(number) {
                Some(d) if number < self.schedule.max_attempts() => Next::RetryAt(finished.plus(d)),
                _ => Next::Failed,
            },
        };
        match &attempt.error {
            None => tracing::debug!(webhook = %w.id, attempt = number, "delivered"),
            Some(e) => {
                tracing::info!(webhook = %w.id, attempt = number, error = %e, next = ?next, "attempt failed")
            }
        }
        if next == Next::Failed {
            tracing::warn!(webhook = %w.id, level = %w.level_id, attempts = number, "webhook failed for good; notification queued");
        }
        let took = Duration::from_millis(attempt.duration_ms.max(0) as u64);
        let _ = self.done.send(Recorded {
            webhook_id: w.id.clone(),
            attempt,
            next,
        });
        took
    }

    /// The Standard Webhooks headers for this attempt.
    fn sign(&self, claimed: &Claimed, now: Millis, body: &str) -> Result<HeaderMap, String> {
        let sealed = claimed
            .secrets
            .as_ref()
            .ok_or("the receiving level has no signing secret")?;
        let signer = Signer::open(sealed, now, &self.keys)
            .map_err(|e| format!("signing secret unavailable: {e}"))?;
        let ts = now.0.div_euclid(1000);
        let w = &claimed.webhook;
        let mut h = HeaderMap::with_capacity(3);
        let value = |s: String| HeaderValue::from_str(&s).map_err(|e| e.to_string());
        h.insert(WEBHOOK_ID, value(w.id.to_string())?);
        h.insert(WEBHOOK_TIMESTAMP, value(ts.to_string())?);
        h.insert(
            WEBHOOK_SIGNATURE,
            value(signer.signature(w.id.as_str(), ts, body.as_bytes()))?,
        );
        Ok(h)
    }
}

// The Standard Webhooks headers, checked once at compile time rather than per request.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// What an attempt's outcome means for its webhook: the one place that decides success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The receiver answered a status the level's success rule accepts.
    Succeeded,
    /// The receiver answered `410 Gone`: the level's endpoint is disabled.
    Gone,
    /// Anything else, by the attempts metric's label.
    Failed(&'static str),
}

impl Verdict {
    fn of(o: &tidings_egress::Outcome, rule: SuccessRule) -> Verdict {
        use tidings_egress::AttemptError as E;
        // The client reports any status but 200 as an error; the level's rule decides.
        let answered = matches!(o.error, None | Some(E::Status(_)));
        match o.status {
            Some(code) if answered && rule.accepts(code) => Verdict::Succeeded,
            Some(GONE) if answered => Verdict::Gone,
            _ => Verdict::Failed(outcome_label(o)),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::Gone => "gone",
            Verdict::Failed(label) => label,
        }
    }
}

fn outcome_label(o: &tidings_egress::Outcome) -> &'static str {
    use tidings_egress::AttemptError as E;
    match &o.error {
        None if o.is_success() => "succeeded",
        None => "http_status",
        Some(E::Status(_)) => "http_status",
        Some(E::Refused { .. }) => "refused",
        Some(E::Timeout) => "timeout",
        Some(E::Connect(_)) => "connect",
        Some(E::Tls(_)) => "tls",
        Some(E::Dns(_)) => "dns",
        Some(E::InvalidUrl(_)) | Some(E::SchemeNotAllowed { .. }) => "invalid_url",
        Some(_) => "transport",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_levels_success_rule_decides_and_410_disables() {
        use tidings_egress::{AttemptError, Outcome};
        let answer = |code: u16| Outcome {
            status: Some(code),
            error: (code != 200).then_some(AttemptError::Status(code)),
            body_excerpt: String::new(),
            duration: Duration::ZERO,
        };
        for (code, under_200, under_2xx) in [
            (200, Verdict::Succeeded, Verdict::Succeeded),
            (204, Verdict::Failed("http_status"), Verdict::Succeeded),
            (202, Verdict::Failed("http_status"), Verdict::Succeeded),
            (
                301,
                Verdict::Failed("http_status"),
                Verdict::Failed("http_status"),
            ),
            (410, Verdict::Gone, Verdict::Gone),
            (
                500,
                Verdict::Failed("http_status"),
                Verdict::Failed("http_status"),
            ),
        ] {
            assert_eq!(
                Verdict::of(&answer(code), SuccessRule::Ok200),
                under_200,
                "{code}"
            );
            assert_eq!(
                Verdict::of(&answer(code), SuccessRule::Any2xx),
                under_2xx,
                "{code}"
            );
        }
        let timeout = Outcome {
            status: None,
            error: Some(AttemptError::Timeout),
            body_excerpt: String::new(),
            duration: Duration::ZERO,
        };
        assert_eq!(
            Verdict::of(&timeout, SuccessRule::Any2xx),
            Verdict::Failed("timeout")
        );
    }
}
