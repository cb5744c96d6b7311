//! The failure e-mail outbox in the store: which failed webhooks went (or go) into which
//! e-mail, and each e-mail's sending state.
//!
//! The dispatcher adds one `notifications` row per webhook that failed its last attempt, in
//! the transaction that records the attempt. The mailer then places those rows into `emails`
//! ([`NotificationStore::assign_failures`], applying the pure rule of
//! [`crate::notify::digest`] inside one transaction), claims due e-mails with a lease like
//! the dispatcher claims webhooks, and records each send attempt. Nothing here talks SMTP or
//! decides the digest rule; it only applies it atomically.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::exec::{Exec, Param};
use super::queue::Queue;
use super::sql::{parse_id, Backend, SqlStore};
use super::{Attempt, Result, StoreError};
use crate::domain::{EntityId, EventType, Level, Millis};
use crate::notify::compose::{self, FailedWebhook};
use crate::notify::digest::{self, DigestKey, Failure, Latest, Placement};

/// Where an e-mail stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EmailStatus {
    /// Waiting for its time, for SMTP, or for a retry after an SMTP failure.
    Queued,
    Sent,
    /// No level from the URL's owner up to the top has a notification contact.
    NoRecipient,
}

impl EmailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailStatus::Queued => "queued",
            EmailStatus::Sent => "sent",
            EmailStatus::NoRecipient => "no_recipient",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "queued" => Ok(EmailStatus::Queued),
            "sent" => Ok(EmailStatus::Sent),
            "no_recipient" => Ok(EmailStatus::NoRecipient),
            other => Err(format!(
                "unknown e-mail status `{other}` (queued, sent, no_recipient)"
            )),
        }
    }
}

/// A failure e-mail as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub id: EntityId,
    /// The level that owns the failed URL.
    pub level_id: EntityId,
    pub url: String,
    pub recipient: Option<String>,
    pub status: EmailStatus,
    pub subject: String,
    /// The failed webhooks it covers, in id order.
    pub webhook_ids: Vec<EntityId>,
    /// SMTP send attempts so far.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: Millis,
    /// When the digest window planned to send it.
    pub scheduled_at: Millis,
    /// When the next send attempt is due, while queued.
    pub due_at: Option<Millis>,
    pub sent_at: Option<Millis>,
    /// Set on an e-mail saying the level's endpoint was disabled (it covers no webhooks).
    pub disabled_reason: Option<String>,
}

/// Which e-mails to list; `after` is the pagination cursor.
#[derive(Debug, Clone, Default)]
pub struct EmailFilter {
    pub level_id: Option<EntityId>,
    pub status: Option<EmailStatus>,
    pub after: Option<EntityId>,
    pub limit: u32,
}

/// The failure e-mail outbox.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Places up to `limit` failed webhooks that are in no e-mail yet into e-mails, by the
    /// digest rule with `window`, in one transaction; returns the e-mails it opened.
    async fn assign_failures(
        &self,
        now: Millis,
        window: Duration,
        limit: u32,
    ) -> Result<Vec<EntityId>>;

    /// Notes the address a queued e-mail will go to.
    async fn set_email_recipient(&self, id: &EntityId, recipient: &str, now: Millis) -> Result<()>;

    /// Records that no level has a notification contact: the e-mail is `no_recipient` and
    /// will not be sent. Only if it is queued and claimed by `owner` (`None`: by nobody).
    async fn email_no_recipient(
        &self,
        id: &EntityId,
        owner: Option<&str>,
        now: Millis,
    ) -> Result<bool>;

    /// Claims up to `limit` due e-mails for `owner` until `lease_until` and closes them to
    /// further failures; a claim whose lease ends unrecorded becomes due again by itself.
    async fn claim_emails(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<EntityId>>;

    /// An e-mail with the failed webhooks it covers and all their attempts.
    async fn email_content(&self, id: &EntityId) -> Result<Option<(Email, Vec<FailedWebhook>)>>;

    /// Records a successful send by `owner`; false if the claim had been lost.
    async fn email_sent(
        &self,
        owner: &str,
        id: &EntityId,
        recipient: &str,
        subject: &str,
        now: Millis,
    ) -> Result<bool>;

    /// Records a failed send by `owner`; the e-mail is due again at `retry_at`.
    async fn email_not_sent(
        &self,
        owner: &str,
        id: &EntityId,
        error: &str,
        retry_at: Millis,
        now: Millis,
    ) -> Result<()>;

    /// Ends every e-mail claim at once (single-instance stores at start).
    async fn release_all_emails(&self, now: Millis) -> Result<u64>;

    /// When the earliest queued e-mail is due.
    async fn next_email_due_at(&self) -> Result<Option<Millis>>;

    /// E-mails in id order, after the cursor.
    async fn emails(&self, filter: &EmailFilter) -> Result<Vec<Email>>;
}

/// Serializes digest placement between instances on PostgreSQL (an arbitrary constant).
const ASSIGN_LOCK: i64 = 0x7469_6469_6e67_0004;

const EMAIL_COLUMNS: &str = "id, level_id, url, recipient, status, subject, attempts, last_error, \
     created_at, scheduled_at, due_at, sent_at, disabled_reason";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn id_col(row: &AnyRow, col: &str) -> Result<EntityId> {
    let s: String = row.try_get(col)?;
    EntityId::parse(&s).map_err(corrupt)
}

fn email_from_row(row: &AnyRow) -> Result<Email> {
    let status: String = row.try_get("status")?;
    Ok(Email {
        id: id_col(row, "id")?,
        level_id: id_col(row, "level_id")?,
        url: row.try_get("url")?,
        recipient: row.try_get("recipient")?,
        status: EmailStatus::parse(&status).map_err(corrupt)?,
        subject: row.try_get("subject")?,
        webhook_ids: Vec::new(),
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        last_error: row.try_get("last_error")?,
        created_at: Millis(row.try_get("created_at")?),
        scheduled_at: Millis(row.try_get("scheduled_at")?),
        due_at: row.try_get::<Option<i64>, _>("due_at")?.map(Millis),
        sent_at: row.try_get::<Option<i64>, _>("sent_at")?.map(Millis),
        disabled_reason: row.try_get("disabled_reason")?,
    })
}

/// Queues the e-mail saying a level's endpoint (last used with `url`) was disabled, due at
/// once, closed to failures (they go into e-mails of their own), in the caller's transaction.
pub(super) async fn queue_disabled_email(
    tx: &mut dyn Exec,
    level_id: &EntityId,
    url: &str,
    reason: &str,
    now: Millis,
) -> Result<()> {
    let email = NewEmail {
        id: &EntityId::generate(now),
        level_id,
        url,
        subject: &compose::disabled_subject(url),
        scheduled_at: now,
        closed: true,
        disabled_reason: Some(reason),
    };
    email.insert(tx, now).await
}

/// A queued e-mail as it is first written, due at `scheduled_at`, with no recipient yet.
struct NewEmail<'a> {
    id: &'a EntityId,
    level_id: &'a EntityId,
    url: &'a str,
    subject: &'a str,
    scheduled_at: Millis,
    /// Closed to further failures from the start (made at `now`).
    closed: bool,
    disabled_reason: Option<&'a str>,
}

impl NewEmail<'_> {
    async fn insert(&self, tx: &mut dyn Exec, now: Millis) -> Result<()> {
        tx.execute(
            "INSERT INTO emails (id, level_id, url, recipient, status, subject, webhook_count, \
             scheduled_at, due_at, claimed_by, closed_at, attempts, last_error, created_at, \
             updated_at, sent_at, disabled_reason) \
             VALUES ($1, $2, $3, NULL, 'queued', $4, 0, $5, $5, NULL, $6, 0, NULL, $7, $7, NULL, $8)",
            &[
                self.id.as_str().into(),
                self.level_id.as_str().into(),
                self.url.into(),
                self.subject.into(),
                self.scheduled_at.0.into(),
                self.closed.then_some(now.0).into(),
                now.0.into(),
                self.disabled_reason.into(),
            ],
        )
        .await?;
        Ok(())
    }
}

impl SqlStore {
    /// Puts `notifications` into e-mail `email_id` and refreshes its subject and count.
    async fn fill_email(
        tx: &mut dyn Exec,
        email_id: &EntityId,
        url: &str,
        notifications: &[EntityId],
        now: Millis,
    ) -> Result<()> {
        for n in notifications {
            tx.execute(
                "UPDATE notifications SET email_id = $1, updated_at = $2 \
                 WHERE id = $3 AND email_id IS NULL",
                &[email_id.as_str().into(), now.0.into(), n.as_str().into()],
            )
            .await?;
        }
        let types = tx
            .fetch(
                "SELECT w.type FROM notifications n JOIN webhooks w ON w.id = n.webhook_id \
                 WHERE n.email_id = $1 ORDER BY n.id",
                &[email_id.as_str().into()],
            )
            .await?
            .iter()
            .map(|r| EventType::from_str(r.text(0)?).map_err(corrupt))
            .collect::<Result<Vec<_>>>()?;
        let subject = compose::subject(url, &types);
        tx.execute(
            "UPDATE emails SET subject = $1, webhook_count = $2, updated_at = $3 WHERE id = $4",
            &[
                subject.as_str().into(),
                (types.len() as i64).into(),
                now.0.into(),
                email_id.as_str().into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn open_email(
        tx: &mut dyn Exec,
        key: &DigestKey,
        scheduled_at: Millis,
        now: Millis,
    ) -> Result<EntityId> {
        let id = EntityId::generate(now);
        let email = NewEmail {
            id: &id,
            level_id: &key.level_id,
            url: &key.url,
            subject: "",
            scheduled_at,
            closed: false,
            disabled_reason: None,
        };
        email.insert(tx, now).await?;
        Ok(id)
    }

    /// Ends a queued e-mail with `email_update` (which names it `id` and changes it only if
    /// it is still the caller's to end) and, when that changed it, gives its notifications
    /// `status` too, in one transaction; answers whether it ended it.
    async fn end_email(
        &self,
        email_update: &str,
        params: &[Param<'_>],
        id: &EntityId,
        status: EmailStatus,
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = tx.execute(email_update, params).await?;
        if n == 1 {
            tx.execute(
                "UPDATE notifications SET status = $1, updated_at = $2 WHERE email_id = $3",
                &[status.as_str().into(), now.0.into(), id.as_str().into()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }
}

#[async_trait]
impl NotificationStore for SqlStore {
    async fn assign_failures(
        &self,
        now: Millis,
        window: Duration,
        limit: u32,
    ) -> Result<Vec<EntityId>> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // One placer at a time, so two instances never open two digests for one key.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[ASSIGN_LOCK.into()])
                .await?;
        }
        let failures = tx
            .fetch(
                "SELECT id, level_id, url FROM notifications WHERE email_id IS NULL \
                 ORDER BY id LIMIT $1",
                &[(limit as i64).into()],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Failure {
                    notification_id: parse_id(r.text(0)?)?,
                    key: DigestKey {
                        level_id: parse_id(r.text(1)?)?,
                        url: r.text(2)?.to_owned(),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if failures.is_empty() {
            tx.commit().await?;
            return Ok(vec![]);
        }
        let mut latest = HashMap::new();
        for f in &failures {
            if latest.contains_key(&f.key) {
                continue;
            }
            let rows = tx
                .fetch(
                    "SELECT id, scheduled_at, status, closed_at FROM emails \
                     WHERE level_id = $1 AND url = $2 AND disabled_reason IS NULL \
                     ORDER BY scheduled_at DESC, id DESC LIMIT 1",
                    &[f.key.level_id.as_str().into(), f.key.url.as_str().into()],
                )
                .await?;
            if let Some(r) = rows.first() {
                latest.insert(
                    f.key.clone(),
                    Latest {
                        email_id: parse_id(r.text(0)?)?,
                        scheduled_at: Millis(r.int(1)?),
                        open: r.text(2)? == "queued" && r.opt_int(3)?.is_none(),
                    },
                );
            }
        }
        let mut opened = Vec::new();
        for placement in digest::plan(&failures, &latest, now, window) {
            match placement {
                Placement::Join {
                    email_id,
                    notifications,
                } => {
                    // Locks the e-mail; a mailer that claimed it meanwhile has closed it.
                    let still_open = tx
                        .execute(
                            "UPDATE emails SET updated_at = $1 WHERE id = $2 \
                             AND closed_at IS NULL AND status = 'queued'",
                            &[now.0.into(), email_id.as_str().into()],
                        )
                        .await?
                        == 1;
                    let (key, l) = latest
                        .iter()
                        .find(|(_, l)| l.email_id == email_id)
                        .ok_or_else(|| corrupt("joined an e-mail that was not read"))?;
                    let (target, url) = if still_open {
                        (email_id, key.url.clone())
                    } else {
                        let at = now.max(l.scheduled_at.plus(window));
                        let id = Self::open_email(tx.as_mut(), key, at, now).await?;
                        opened.push(id.clone());
                        (id, key.url.clone())
                    };
                    Self::fill_email(tx.as_mut(), &target, &url, &notifications, now).await?;
                }
                Placement::Open {
                    key,
                    scheduled_at,
                    notifications,
                } => {
                    let id = Self::open_email(tx.as_mut(), &key, scheduled_at, now).await?;
                    Self::fill_email(tx.as_mut(), &id, &key.url, &notifications, now).await?;
                    opened.push(id);
                }
            }
        }
        tx.commit().await?;
        Ok(opened)
    }

    async fn set_email_recipient(&self, id: &EntityId, recipient: &str, now: Millis) -> Result<()> {
        self.write_one(
            "UPDATE emails SET recipient = $1, updated_at = $2 WHERE id = $3 AND status = 'queued'",
            &[recipient.into(), now.0.into(), id.as_str().into()],
        )
        .await?;
        Ok(())
    }

    async fn email_no_recipient(
        &self,
        id: &EntityId,
        owner: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        self.end_email(
            "UPDATE emails SET status = 'no_recipient', recipient = NULL, due_at = NULL, \
             claimed_by = NULL, closed_at = COALESCE(closed_at, $1), updated_at = $1 \
             WHERE id = $2 AND status = 'queued' AND COALESCE(claimed_by, '') = $3",
            &[now.0.into(), id.as_str().into(), owner.unwrap_or("").into()],
            id,
            EmailStatus::NoRecipient,
            now,
        )
        .await
    }

    async fn claim_emails(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<EntityId>> {
        let skip_locked = self.backend.skip_locked();
        let sql = format!(
            "UPDATE emails SET due_at = $1, claimed_by = $2, closed_at = COALESCE(closed_at, $3) \
             WHERE id IN (SELECT id FROM emails WHERE due_at <= $3 ORDER BY due_at LIMIT $4{skip_locked}) \
             RETURNING id"
        );
        let tx = self.begin_write().await?;
        let rows = Self::claim_rows(tx, &sql, owner, now, lease_until, limit).await?;
        let mut ids = rows
            .iter()
            .map(|r| parse_id(r.text(0)?))
            .collect::<Result<Vec<_>>>()?;
        ids.sort();
        Ok(ids)
    }

    async fn email_content(&self, id: &EntityId) -> Result<Option<(Email, Vec<FailedWebhook>)>> {
        let sql = format!("SELECT {EMAIL_COLUMNS} FROM emails WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?
        else {
            return Ok(None);
        };
        let mut email = email_from_row(&row)?;
        let mut webhooks = sqlx::query(
            "SELECT w.id, w.type, w.subject_id, w.level, w.level_id, w.url, w.created_at \
             FROM notifications n JOIN webhooks w ON w.id = n.webhook_id \
             WHERE n.email_id = $1 ORDER BY w.id",
        )
        .bind(id.as_str())
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|r| {
            let t: String = r.try_get("type")?;
            let level: String = r.try_get("level")?;
            Ok(FailedWebhook {
                id: id_col(r, "id")?,
                event_type: EventType::from_str(&t).map_err(corrupt)?,
                subject_id: id_col(r, "subject_id")?,
                level: Level::from_str(&level).map_err(corrupt)?,
                level_id: id_col(r, "level_id")?,
                url: r.try_get("url")?,
                created_at: Millis(r.try_get("created_at")?),
                attempts: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let attempts = sqlx::query(
            "SELECT a.webhook_id, a.number, a.started_at, a.duration_ms, a.status_code, a.error, \
             a.body FROM attempts a JOIN notifications n ON n.webhook_id = a.webhook_id \
             WHERE n.email_id = $1 ORDER BY a.webhook_id, a.number",
        )
        .bind(id.as_str())
        .fetch_all(&self.reader)
        .await?;
        let index: HashMap<EntityId, usize> = webhooks
            .iter()
            .enumerate()
            .map(|(i, w)| (w.id.clone(), i))
            .collect();
        for r in &attempts {
            let wid = id_col(r, "webhook_id")?;
            let Some(&i) = index.get(&wid) else { continue };
            webhooks[i].attempts.push(Attempt {
                number: r.try_get::<i64, _>("number")? as u32,
                started_at: Millis(r.try_get("started_at")?),
                duration_ms: r.try_get("duration_ms")?,
                status_code: r
                    .try_get::<Option<i64>, _>("status_code")?
                    .map(|c| c as u16),
                error: r.try_get("error")?,
                body: r.try_get("body")?,
            });
        }
        email.webhook_ids = webhooks.iter().map(|w| w.id.clone()).collect();
        Ok(Some((email, webhooks)))
    }

    async fn email_sent(
        &self,
        owner: &str,
        id: &EntityId,
        recipient: &str,
        subject: &str,
        now: Millis,
    ) -> Result<bool> {
        self.end_email(
            "UPDATE emails SET status = 'sent', recipient = $1, subject = $2, sent_at = $3, \
             updated_at = $3, due_at = NULL, claimed_by = NULL, attempts = attempts + 1 \
             WHERE id = $4 AND claimed_by = $5",
            &[
                recipient.into(),
                subject.into(),
                now.0.into(),
                id.as_str().into(),
                owner.into(),
            ],
            id,
            EmailStatus::Sent,
            now,
        )
        .await
    }

    async fn email_not_sent(
        &self,
        owner: &str,
        id: &EntityId,
        error: &str,
        retry_at: Millis,
        now: Millis,
    ) -> Result<()> {
        self.write_one(
            "UPDATE emails SET attempts = attempts + 1, last_error = $1, due_at = $2, \
             claimed_by = NULL, updated_at = $3 WHERE id = $4 AND claimed_by = $5",
            &[
                error.into(),
                retry_at.0.into(),
                now.0.into(),
                id.as_str().into(),
                owner.into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn release_all_emails(&self, now: Millis) -> Result<u64> {
        self.end_all_claims(Queue::Emails, now).await
    }

    async fn next_email_due_at(&self) -> Result<Option<Millis>> {
        self.earliest_due(Queue::Emails).await
    }

    async fn emails(&self, f: &EmailFilter) -> Result<Vec<Email>> {
        let mut sql = format!("SELECT {EMAIL_COLUMNS} FROM emails WHERE id > $1");
        let mut args: Vec<String> = vec![f.after.as_ref().map_or(String::new(), |a| a.to_string())];
        if let Some(l) = &f.level_id {
            args.push(l.to_string());
            sql.push_str(&format!(" AND level_id = ${}", args.len()));
        }
        if let Some(s) = f.status {
            args.push(s.as_str().to_owned());
            sql.push_str(&format!(" AND status = ${}", args.len()));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", args.len() + 1));
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(a);
        }
        let rows = q.bind(f.limit as i64).fetch_all(&self.reader).await?;
        let mut emails = rows
            .iter()
            .map(email_from_row)
            .collect::<Result<Vec<_>>>()?;
        if emails.is_empty() {
            return Ok(emails);
        }
        let list = (1..=emails.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT email_id, webhook_id FROM notifications WHERE email_id IN ({list}) \
             ORDER BY webhook_id"
        );
        let mut q = sqlx::query(&sql);
        for e in &emails {
            q = q.bind(e.id.as_str());
        }
        let mut covered: HashMap<EntityId, Vec<EntityId>> = HashMap::new();
        for r in q.fetch_all(&self.reader).await? {
            covered
                .entry(id_col(&r, "email_id")?)
                .or_default()
                .push(id_col(&r, "webhook_id")?);
        }
        for e in &mut emails {
            e.webhook_ids = covered.remove(&e.id).unwrap_or_default();
        }
        Ok(emails)
    }
}
