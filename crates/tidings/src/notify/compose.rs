//! The failure e-mail's words: subject and plain-text body from the failed webhooks and
//! their attempts. Pure: no store, no clock, no SMTP.
//!
//! Written for someone triaging from a phone: the subject says how many webhooks to which URL
//! failed and for which event types; the body gives, per webhook, its id, event type, entity,
//! creation time and every attempt with what the receiver answered.

use crate::domain::{EntityId, EventType, Level, Millis};
use crate::store::Attempt;

/// A webhook that failed its last attempt, with every attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedWebhook {
    pub id: EntityId,
    pub event_type: EventType,
    /// The entity the event is about.
    pub subject_id: EntityId,
    /// The level the webhook was for (the owner of the URL).
    pub level: Level,
    pub level_id: EntityId,
    pub url: String,
    pub created_at: Millis,
    pub attempts: Vec<Attempt>,
}

/// A composed e-mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    pub subject: String,
    pub body: String,
}

/// How many webhooks are listed with their attempts; the rest get one line each, so a digest
/// after a long outage stays readable and small.
pub const DETAILED_WEBHOOKS: usize = 100;
/// Longest URL shown whole in a subject.
const SUBJECT_URL_MAX: usize = 80;
/// Event types named in a subject before `...`.
const SUBJECT_TYPES_MAX: usize = 3;
/// Longest response body excerpt quoted per attempt.
const BODY_EXCERPT_MAX: usize = 300;

/// `[Tidings] Webhook to URL failed (TYPE)` or `[Tidings] 3 webhooks to URL failed (A, B, ...)`.
pub fn subject(url: &str, event_types: &[EventType]) -> String {
    let mut types: Vec<&str> = Vec::new();
    for t in event_types {
        if !types.contains(&t.as_str()) {
            types.push(t.as_str());
        }
    }
    let mut named = types
        .iter()
        .take(SUBJECT_TYPES_MAX)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if types.len() > SUBJECT_TYPES_MAX {
        named.push_str(", ...");
    }
    let url = shorten(&one_line(url), SUBJECT_URL_MAX);
    match event_types.len() {
        1 => format!("[Tidings] Webhook to {url} failed ({named})"),
        n => format!("[Tidings] {n} webhooks to {url} failed ({named})"),
    }
}

/// The whole e-mail for the failed webhooks to `url` (at least one).
pub fn compose(url: &str, webhooks: &[FailedWebhook]) -> Composed {
    let types: Vec<EventType> = webhooks.iter().map(|w| w.event_type).collect();
    let subject = subject(url, &types);
    let mut b = String::new();
    let n = webhooks.len();
    if n == 1 {
        b.push_str(&format!(
            "A webhook to {url} failed.\n\
             Every attempt failed; Tidings will not try it again by itself.\n\n"
        ));
    } else {
        b.push_str(&format!(
            "{n} webhooks to {url} failed.\n\
             Every attempt of each failed; Tidings will not try them again by itself.\n\n"
        ));
    }
    if let Some(w) = webhooks.first() {
        b.push_str(&format!(
            "URL:    {url}\nLevel:  {} {}\n\n",
            w.level, w.level_id
        ));
    }
    for (i, w) in webhooks.iter().enumerate() {
        if i == DETAILED_WEBHOOKS {
            b.push_str(&format!(
                "The other {} webhooks, without their attempts:\n",
                n - DETAILED_WEBHOOKS
            ));
        }
        if i >= DETAILED_WEBHOOKS {
            b.push_str(&format!(
                "- {}  {}  entity {}  created {}\n",
                w.id,
                w.event_type,
                w.subject_id,
                w.created_at.to_rfc3339()
            ));
            continue;
        }
        b.push_str(&format!(
            "Webhook {}\n  Event type: {}\n  Entity:     {}\n  Created:    {}\n  Attempts:\n",
            w.id,
            w.event_type,
            w.subject_id,
            w.created_at.to_rfc3339()
        ));
        for a in &w.attempts {
            b.push_str(&format!("    {}\n", attempt_line(a)));
        }
        b.push('\n');
    }
    b.push_str(
        "What to do: make the receiver answer HTTP 200, then send the webhooks again with\n\
         POST /v1/webhooks/{id}/retry, or all failed webhooks of the level since a time with\n\
         POST /v1/webhooks/recover. GET /v1/webhooks/{id} shows a webhook and its attempts.\n\n\
         -- \nTidings failure notification. You receive it as the notification contact of this\n\
         level or of a level above it.\n",
    );
    Composed { subject, body: b }
}

/// `[Tidings] Endpoint URL disabled: it answered 410 Gone`.
pub fn disabled_subject(url: &str) -> String {
    let url = shorten(&one_line(url), SUBJECT_URL_MAX);
    format!("[Tidings] Endpoint {url} disabled: it answered 410 Gone")
}

/// The e-mail saying a level's endpoint was disabled, why, and how to enable it again.
pub fn disabled(url: &str, level_id: &EntityId, reason: &str) -> Composed {
    let body = format!(
        "The webhook endpoint of level {level_id} was disabled.\n\n\
         URL:     {url}\n\
         Reason:  {}\n\n\
         Tidings sends nothing to this level while its endpoint is disabled. Webhooks that were\n\
         waiting, and those for new events, are kept with status `disabled`\n\
         (GET /v1/webhooks?status=disabled&level_id={level_id}).\n\n\
         What to do: set a new webhook_url on the level, or fix the receiver and enable the\n\
         endpoint again with PATCH .../{level_id}/endpoint {{\"enabled\": true}}; then send the kept\n\
         webhooks with POST /v1/webhooks/recover.\n\n\
         -- \nTidings endpoint notification. You receive it as the notification contact of this\n\
         level or of a level above it.\n",
        one_line(reason)
    );
    Composed {
        subject: disabled_subject(url),
        body,
    }
}

/// `#2 at 2020-07-15T12:33:14.000Z (120 ms): HTTP 500, body: ...` or the transport error.
fn attempt_line(a: &Attempt) -> String {
    let what = match a.status_code {
        Some(code) => {
            let body = shorten(&one_line(a.body.trim()), BODY_EXCERPT_MAX);
            if body.is_empty() {
                format!("HTTP {code}, empty body")
            } else {
                format!("HTTP {code}, body: {body}")
            }
        }
        None => one_line(a.error.as_deref().unwrap_or("failed (no error recorded)")),
    };
    format!(
        "#{} at {} ({} ms): {what}",
        a.number,
        a.started_at.to_rfc3339(),
        a.duration_ms
    )
}

/// Control characters (line breaks included) become spaces: a receiver's body cannot forge
/// lines or headers of the e-mail.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push_str("...");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::numbered_id as id;

    const URL: &str = "https://x.example/hook";

    fn attempt(number: u32, status: Option<u16>, error: &str, body: &str) -> Attempt {
        Attempt {
            number,
            started_at: Millis(1_594_816_394_000 + number as i64 * 60_000),
            duration_ms: 12,
            status_code: status,
            error: Some(error.into()),
            body: body.into(),
        }
    }

    fn webhook(n: u32, t: EventType, attempts: Vec<Attempt>) -> FailedWebhook {
        FailedWebhook {
            id: id(n),
            event_type: t,
            subject_id: id(100 + n),
            level: Level::Dealer,
            level_id: id(7),
            url: URL.into(),
            created_at: Millis(1_594_816_394_000),
            attempts,
        }
    }

    #[test]
    fn subjects_say_how_many_where_and_which_types() {
        use EventType::*;
        let long = format!("https://x.example/{}", "a".repeat(100));
        let cases: Vec<(&str, Vec<EventType>, String)> = vec![
            (
                URL,
                vec![DealerCreated],
                "[Tidings] Webhook to https://x.example/hook failed (DEALER_CREATED)".into(),
            ),
            (
                URL,
                vec![DealerCreated, DealerCreated, CompanyChanged],
                "[Tidings] 3 webhooks to https://x.example/hook failed (DEALER_CREATED, COMPANY_CHANGED)".into(),
            ),
            (
                URL,
                vec![DealerCreated, CompanyChanged, SiteCreated, UserDeleted],
                "[Tidings] 4 webhooks to https://x.example/hook failed (DEALER_CREATED, COMPANY_CHANGED, SITE_CREATED, ...)".into(),
            ),
            (
                &long,
                vec![SiteDeleted],
                format!("[Tidings] Webhook to {}... failed (SITE_DELETED)", &long[..80]),
            ),
        ];
        for (url, types, want) in cases {
            assert_eq!(subject(url, &types), want);
        }
    }

    #[test]
    fn body_lists_each_attempt_with_its_error() {
        let w = webhook(
            1,
            EventType::DealerCreated,
            vec![
                attempt(
                    1,
                    Some(500),
                    "HTTP 500: only 200 counts as success",
                    "boom one",
                ),
                attempt(2, None, "connection failed: Connection refused", ""),
                attempt(3, Some(503), "HTTP 503: only 200 counts as success", ""),
            ],
        );
        let c = compose(URL, &[w]);
        assert_eq!(
            c.subject,
            "[Tidings] Webhook to https://x.example/hook failed (DEALER_CREATED)"
        );
        for want in [
            "Webhook 000000000000000000000001\n",
            "  Event type: DEALER_CREATED\n",
            "  Entity:     000000000000000000000065\n",
            "  Created:    2020-07-15T12:33:14.000Z\n",
            "    #1 at 2020-07-15T12:34:14.000Z (12 ms): HTTP 500, body: boom one\n",
            "    #2 at 2020-07-15T12:35:14.000Z (12 ms): connection failed: Connection refused\n",
            "    #3 at 2020-07-15T12:36:14.000Z (12 ms): HTTP 503, empty body\n",
            "URL:    https://x.example/hook\nLevel:  dealer 000000000000000000000007\n",
        ] {
            assert!(c.body.contains(want), "missing {want:?} in\n{}", c.body);
        }
    }

    #[test]
    fn a_receivers_body_cannot_add_lines_and_is_cut() {
        let body = format!("line one\r\nSubject: forged\n{}", "x".repeat(1000));
        let w = webhook(
            1,
            EventType::DealerCreated,
            vec![attempt(1, Some(500), "", &body)],
        );
        let c = compose(URL, &[w]);
        assert!(!c.body.contains("\nSubject: forged"));
        assert!(c.body.contains("body: line one  Subject: forged xxx"));
        let line = c.body.lines().find(|l| l.contains("#1 at")).unwrap();
        assert!(line.ends_with("x..."), "{line}");
        assert!(line.len() < 400);
    }

    #[test]
    fn a_digest_lists_every_webhook_and_details_the_first_hundred() {
        let hooks: Vec<FailedWebhook> = (1..=105)
            .map(|n| {
                webhook(
                    n,
                    EventType::SiteChanged,
                    vec![attempt(1, Some(500), "", &format!("error of {n}"))],
                )
            })
            .collect();
        let c = compose(URL, &hooks);
        assert!(c.subject.starts_with("[Tidings] 105 webhooks to "));
        assert_eq!(c.body.matches("\nWebhook ").count(), 100);
        assert!(c.body.contains("body: error of 100\n"));
        assert!(!c.body.contains("error of 101"));
        assert!(c
            .body
            .contains("The other 5 webhooks, without their attempts:\n"));
        for n in 101..=105 {
            assert!(c
                .body
                .contains(&format!("- {}  SITE_CHANGED  entity ", id(n))));
        }
    }

    #[test]
    fn a_disabled_endpoint_mail_says_why_and_how_to_enable_it() {
        let c = disabled(
            URL,
            &id(7),
            "the receiver answered 410 Gone at 2026-01-01T00:00:00.000Z",
        );
        assert_eq!(
            c.subject,
            "[Tidings] Endpoint https://x.example/hook disabled: it answered 410 Gone"
        );
        assert!(c
            .body
            .contains("Reason:  the receiver answered 410 Gone at 2026-01-01T00:00:00.000Z\n"));
        assert!(c.body.contains(&format!("level {} was disabled", id(7))));
        assert!(c.body.contains("{\"enabled\": true}"));
        assert!(c.body.contains("POST /v1/webhooks/recover"));
    }
}
