//! Failure notification e-mail (docs/contract.md#failure-e-mail): when a webhook's last attempt fails, the
//! notification contact of the level that owns its URL hears about it by e-mail.
//!
//! - [`digest`] (pure): which e-mail a failed webhook joins. The first failure to a URL is
//!   mailed at once; failures to the same URL within the digest window after it are gathered
//!   into one digest sent when the window ends; a window of zero mails each failure alone.
//! - [`compose`] (pure): subject and plain-text body from the webhooks and their attempts.
//! - [`mailer`]: the outbox loop. It places new failures into e-mails, finds each e-mail's
//!   recipient ([`recipient`]), claims due e-mails with a lease, sends them over SMTP with
//!   `lettre`, and backs off on SMTP failures.
//!
//! The outbox lives in the store (`emails`, filled from the `notifications` rows the
//! dispatcher writes in the same transaction as the failed attempt), so an SMTP outage or a
//! restart delays an e-mail, never loses it.
//!
//! This module must never: drop a failure (every failed webhook ends up in exactly one e-mail,
//! sent or recorded as `no_recipient`); slow down or wait for webhook delivery (it only reads
//! what the dispatcher recorded); send to an address other than a `notification_contact` on
//! the owning level or above; or put a signing secret or payload into an e-mail.

pub mod compose;
pub mod digest;
pub mod mailer;

pub use mailer::{Mailer, MailerConfig};

use crate::domain::EntityId;
use crate::store::{Result, Tx};

/// Levels walked up at most when looking for a contact (site, company, dealer, reseller).
const MAX_LEVELS: usize = 8;

/// The `notification_contact.email` of level `level_id`, or of the nearest level above it that
/// has one; `None` when no level up to the top has one (or the level no longer exists).
pub async fn recipient(tx: &mut dyn Tx, level_id: &EntityId) -> Result<Option<String>> {
    let mut next = Some(level_id.clone());
    for _ in 0..MAX_LEVELS {
        let Some(id) = next else { break };
        let Some(entity) = tx.get(&id).await? else {
            break;
        };
        if let Some((_, _, Some(contact))) = entity.level_settings() {
            return Ok(Some(contact.email.clone()));
        }
        next = entity.up().cloned();
    }
    Ok(None)
}
