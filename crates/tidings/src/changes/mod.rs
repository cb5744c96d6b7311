//! Applies API changes to the hierarchy and records their events and webhooks in the same
//! transaction (the transactional outbox).
//!
//! Every operation: parse and validate the input, check its references, build the record,
//! write it, compose the subject's wire shape, route the event through the domain's level
//! table and write one webhook per receiving level with its URL snapshot, then commit.
//! Nothing is written when any step refuses; nothing is emitted when nothing changed.
//!
//! - `rules`: who may do what, and what must hold (visibility, suspension, authority,
//!   references);
//! - `levels`: a level's signing secret and endpoint settings.

use std::sync::Arc;

use serde_json::Value;

use crate::clock::Clock;
use crate::delivery::handoff::{Reservation, Waited};
use crate::delivery::secrets::{self, SecretBox};
use crate::delivery::Handoff;
use crate::domain::entities::{merge_patch, BuildContext, Entity, Input};
use crate::domain::routing::{recipients, route};
use crate::domain::validate::{FieldError, UrlRules};
use crate::domain::{Action, EntityId, EventType, Kind, Level};
use crate::store::{NewEvent, NewWebhook, Store, StoreError, Tx};
use crate::tenancy::Principal;
use crate::views::view;

mod levels;
mod rules;

pub use levels::LevelEndpoint;
use rules::{
    ancestors, check_consistency, check_references, ensure_active, ensure_authority, ensure_within,
    find_user, get_visible, load_agents, operator_only_for_packages, sees,
};

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },
    #[error("{0}")]
    Invalid(FieldError),
    #[error("{0}")]
    InvalidReference(FieldError),
    #[error("{0}")]
    Conflict(String),
    /// The key may not do this at all (not: may not see this object, which is `NotFound`).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A meeting moment reported through `POST /v1/meetings/{id}/{moment}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    Start,
    Restart,
    End,
    Takeover,
    Wait,
    Decline,
    Forward,
}

impl Moment {
    /// Every moment with its path segment and the event it emits: the one table the parser,
    /// the router's error message and the OpenAPI document read.
    pub const ALL: [(Moment, &'static str, EventType); 7] = [
        (Moment::Start, "start", EventType::MeetingStarted),
        (Moment::Restart, "restart", EventType::MeetingRestarted),
        (Moment::End, "end", EventType::MeetingEnded),
        (Moment::Takeover, "takeover", EventType::MeetingTakeover),
        (Moment::Wait, "wait", EventType::MeetingWait),
        (Moment::Decline, "decline", EventType::MeetingDeclined),
        (Moment::Forward, "forward", EventType::MeetingForwarded),
    ];

    pub fn parse(s: &str) -> Option<Moment> {
        Moment::ALL
            .iter()
            .find(|(_, name, _)| *name == s)
            .map(|(m, _, _)| *m)
    }

    fn entry(self) -> &'static (Moment, &'static str, EventType) {
        Moment::ALL
            .iter()
            .find(|(m, _, _)| *m == self)
            .expect("every moment is in the table")
    }

    /// The moment's path segment (`/v1/meetings/{id}/{name}`).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    pub fn event_type(self) -> EventType {
        self.entry().2
    }
}

/// What a change did: the subject as it is now and how many webhooks it queued.
#[derive(Debug)]
pub struct Applied {
    pub view: Value,
    pub event: Option<EventType>,
    pub webhooks: usize,
    /// How many of them went straight to this instance's dispatcher (the rest wait for a
    /// claim).
    pub handed_off: usize,
    /// How the change waited for room in the dispatcher before it began, if it had to.
    pub waited: Option<Waited>,
    /// Whether it ran a second time, alone, after its group was rolled back
    /// ([`StoreError::Again`]).
    pub ran_again: bool,
}

/// Room in the dispatcher that a change took before it began, and how it waited for it.
struct Admitted<'a> {
    room: Option<Reservation<'a>>,
    waited: Option<Waited>,
}

/// The settings the hierarchy needs from configuration.
#[derive(Debug, Clone)]
pub struct HierarchyRules {
    pub url_rules: UrlRules,
    pub meeting_base_url: String,
}

/// The hierarchy's operations over a store.
pub struct Hierarchy {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rules: HierarchyRules,
    /// Where new webhooks go to the dispatcher: handed off, or woken for.
    handoff: Arc<Handoff>,
    /// Seals each new level's signing secret.
    keys: SecretBox,
}

impl Hierarchy {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rules: HierarchyRules,
        handoff: Arc<Handoff>,
        keys: SecretBox,
    ) -> Self {
        Hierarchy {
            store,
            clock,
            rules,
            handoff,
            keys,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> crate::domain::Millis {
        self.clock.now()
    }

    /// Wakes the dispatcher: work became due outside an API change (retry, recover).
    pub fn wake_dispatcher(&self) {
        self.handoff.wake();
    }

    /// Creates an entity of `kind` from a request body.
    pub async fn create(
        &self,
        who: &Principal,
        kind: Kind,
        body: Value,
    ) -> Result<Applied, ChangeError> {
        operator_only_for_packages(who, kind)?;
        let mut input = Input::parse(kind, body).map_err(ChangeError::Invalid)?;
        input
            .validate(self.rules.url_rules)
            .map_err(ChangeError::Invalid)?;
        self.again_alone(None, |tx| self.create_in(tx, who, input.clone()))
            .await
    }

    async fn create_in(
        &self,
        (mut tx, admitted): (Box<dyn Tx>, Admitted<'_>),
        who: &Principal,
        input: Input,
    ) -> Result<Applied, ChangeError> {
        let now = self.clock.now();
        ensure_active(tx.as_mut(), who).await?;
        check_references(tx.as_mut(), who, &input, None).await?;
        check_consistency(tx.as_mut(), &input).await?;
        let users = load_agents(tx.as_mut(), &input).await?;
        let entity = input.build(EntityId::generate(now), None, &self.context(), &|id| {
            find_user(&users, id)
        });
        ensure_within(tx.as_mut(), who, &entity).await?;
        tx.put(&entity, now).await?;
        if entity.kind().level().is_some() {
            // Every level gets its signing secret in the same transaction that creates it.
            tx.put_secret(entity.id(), &self.keys.seal(&secrets::generate()), now)
                .await?;
        }
        self.emit(tx, admitted, &entity, Action::Created, None)
            .await
    }

    /// Applies a JSON merge patch to an entity. A patch that changes nothing emits nothing.
    pub async fn patch(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
        patch: Value,
    ) -> Result<Applied, ChangeError> {
        if !patch.is_object() {
            return Err(ChangeError::Invalid(FieldError::new(
                "",
                "a PATCH body must be a JSON object",
            )));
        }
        self.again_alone(Some(id), |tx| self.patch_in(tx, who, kind, id, &patch))
            .await
    }

    async fn patch_in(
        &self,
        (mut tx, admitted): (Box<dyn Tx>, Admitted<'_>),
        who: &Principal,
        kind: Kind,
        id: &str,
        patch: &Value,
    ) -> Result<Applied, ChangeError> {
        let now = self.clock.now();
        let current = get_visible(tx.as_mut(), who, kind, id, true).await?;
        operator_only_for_packages(who, kind)?;
        ensure_active(tx.as_mut(), who).await?;
        let mut form = Input::of(&current).to_json();
        merge_patch(&mut form, patch);
        let mut input = Input::parse(kind, form).map_err(ChangeError::Invalid)?;
        input
            .validate(self.rules.url_rules)
            .map_err(ChangeError::Invalid)?;
        check_references(tx.as_mut(), who, &input, Some(&current)).await?;
        check_consistency(tx.as_mut(), &input).await?;
        let users = load_agents(tx.as_mut(), &input).await?;
        let entity = input.build(
            current.id().clone(),
            Some(&current),
            &self.context(),
            &|id| find_user(&users, id),
        );
        ensure_authority(tx.as_mut(), who, &current, &entity).await?;
        if entity.up() != current.up() && entity.kind().level().is_some() {
            // Moving a level would carry its sites, users and meetings across subtrees, where
            // their own references (a meeting's company, a user's owner) no longer agree.
            let below = tx.referrers(current.id(), None, 5).await?;
            if !below.is_empty() {
                let names: Vec<String> = below
                    .iter()
                    .map(|c| format!("{} {}", c.kind(), c.id()))
                    .collect();
                return Err(ChangeError::Conflict(format!(
                    "{kind} {id} cannot move while entities refer to it (e.g. {}); move or delete them first",
                    names.join(", ")
                )));
            }
        }
        ensure_within(tx.as_mut(), who, &entity).await?;
        if let (Some((_, Some(url), _)), Some((_, before, _))) =
            (entity.level_settings(), current.level_settings())
        {
            // A new webhook URL enables a disabled endpoint again.
            if before != Some(url) && tx.enable_endpoint(entity.id(), now).await? {
                tracing::info!(level = %entity.id(), "new webhook_url: endpoint enabled again");
            }
        }
        if entity == current {
            let view = view(tx.as_mut(), &current).await?;
            return Ok(Applied {
                view,
                event: None,
                webhooks: 0,
                handed_off: 0,
                waited: admitted.waited,
                ran_again: false,
            });
        }
        tx.put(&entity, now).await?;
        self.emit(tx, admitted, &entity, Action::Changed, None)
            .await
    }

    /// Deletes an entity that nothing refers to any more.
    pub async fn delete(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
    ) -> Result<Applied, ChangeError> {
        self.again_alone(Some(id), |tx| self.delete_in(tx, who, kind, id))
            .await
    }

    async fn delete_in(
        &self,
        (mut tx, admitted): (Box<dyn Tx>, Admitted<'_>),
        who: &Principal,
        kind: Kind,
        id: &str,
    ) -> Result<Applied, ChangeError> {
        let current = get_visible(tx.as_mut(), who, kind, id, true).await?;
        operator_only_for_packages(who, kind)?;
        ensure_active(tx.as_mut(), who).await?;
        if who.own_level() == Some(current.id()) {
            return Err(ChangeError::Forbidden(
                "a key cannot delete its own level".into(),
            ));
        }
        let children = tx.referrers(current.id(), None, 5).await?;
        if !children.is_empty() {
            let names: Vec<String> = children
                .iter()
                .map(|c| format!("{} {}", c.kind(), c.id()))
                .collect();
            return Err(ChangeError::Conflict(format!(
                "{kind} {id} still has entities that refer to it (e.g. {}); delete or move them first",
                names.join(", ")
            )));
        }
        tx.delete(current.id()).await?;
        self.emit(tx, admitted, &current, Action::Deleted, None)
            .await
    }

    /// Records a meeting moment (start, end, takeover, ...) and emits its event.
    pub async fn moment(
        &self,
        who: &Principal,
        id: &str,
        moment: Moment,
    ) -> Result<Applied, ChangeError> {
        self.again_alone(Some(id), |tx| self.moment_in(tx, who, id, moment))
            .await
    }

    async fn moment_in(
        &self,
        (mut tx, admitted): (Box<dyn Tx>, Admitted<'_>),
        who: &Principal,
        id: &str,
        moment: Moment,
    ) -> Result<Applied, ChangeError> {
        let now = self.clock.now();
        let Entity::Meeting(mut meeting) =
            get_visible(tx.as_mut(), who, Kind::Meeting, id, true).await?
        else {
            unreachable!("get_kind checked the kind")
        };
        ensure_active(tx.as_mut(), who).await?;
        match moment {
            Moment::Start | Moment::Restart => meeting.started_at = Some(now),
            Moment::End => {
                if let Some(started) = meeting.started_at.take() {
                    meeting.duration += ((now.0 - started.0).max(0) + 500) / 1000;
                }
            }
            _ => {}
        }
        let entity = Entity::Meeting(meeting);
        tx.put(&entity, now).await?;
        self.emit(
            tx,
            admitted,
            &entity,
            Action::Moment,
            Some(moment.event_type()),
        )
        .await
    }

    /// An entity's current wire shape.
    pub async fn get(&self, who: &Principal, kind: Kind, id: &str) -> Result<Value, ChangeError> {
        let mut tx = self.store.read().await?;
        let entity = get_visible(tx.as_mut(), who, kind, id, false).await?;
        Ok(view(tx.as_mut(), &entity).await?)
    }

    /// A page of entities of one kind, in creation order, after the cursor.
    /// A page of the entities the principal can see; `next` is the cursor for the next page
    /// (a tenant's page may hold fewer than `limit` when others' entities were skipped).
    pub async fn list(
        &self,
        who: &Principal,
        kind: Kind,
        after: Option<&EntityId>,
        limit: u32,
    ) -> Result<(Vec<Value>, Option<EntityId>), ChangeError> {
        let entities = self.store.list(kind, after, limit).await?;
        let next = (entities.len() as u32 == limit)
            .then(|| entities.last().map(|e| e.id().clone()))
            .flatten();
        let mut tx = self.store.read().await?;
        let mut out = Vec::with_capacity(entities.len());
        for e in &entities {
            if sees(tx.as_mut(), who, e).await? {
                out.push(view(tx.as_mut(), e).await?);
            }
        }
        Ok((out, next))
    }

    fn context(&self) -> BuildContext<'_> {
        BuildContext {
            now: self.clock.now(),
            url_rules: self.rules.url_rules,
            meeting_base_url: &self.rules.meeting_base_url,
        }
    }

    /// Runs `change` in a transaction begun by [`Hierarchy::begin_change`], grouped with
    /// other changes on a lane chosen for `key` (the entity changed) where the store groups them;
    /// when the group was rolled back ([`StoreError::Again`]), runs it again alone.
    async fn again_alone<'a, F, Fut>(
        &'a self,
        key: Option<&str>,
        change: F,
    ) -> Result<Applied, ChangeError>
    where
        F: Fn((Box<dyn Tx>, Admitted<'a>)) -> Fut,
        Fut: std::future::Future<Output = Result<Applied, ChangeError>>,
    {
        match change(self.begin_change(Some(key)).await?).await {
            Err(ChangeError::Store(StoreError::Again)) => {
                tracing::debug!(
                    entity = key,
                    "a change rolled back with its group runs again alone"
                );
                let mut applied = change(self.begin_change(None).await?).await?;
                applied.ran_again = true;
                Ok(applied)
            }
            applied => applied,
        }
    }

    /// Begins a change that may emit an event: once the dispatcher has room for its
    /// webhooks (as many as an event can have), or the back-pressure wait ran out (see
    /// [`Handoff::admit`]). `group`: grouped with other changes, on a lane chosen for the entity
    /// named if any ([`Store::write`]); `None`: alone.
    async fn begin_change(
        &self,
        group: Option<Option<&str>>,
    ) -> Result<(Box<dyn Tx>, Admitted<'_>), StoreError> {
        let (room, waited) = self.handoff.admit(Level::ALL.len(), self.clock.now()).await;
        let tx = match group {
            Some(key) => self.store.write(key).await?,
            None => self.store.write_alone().await?,
        };
        Ok((tx, Admitted { room, waited }))
    }

    /// Writes the event for `entity` (if its kind emits one) and its webhooks, then commits.
    async fn emit(
        &self,
        mut tx: Box<dyn Tx>,
        admitted: Admitted<'_>,
        entity: &Entity,
        action: Action,
        moment: Option<EventType>,
    ) -> Result<Applied, ChangeError> {
        let view = match action {
            Action::Deleted => serde_json::json!({ "id": entity.id() }),
            _ => view(tx.as_mut(), entity).await?,
        };
        let event_type = moment.or_else(|| EventType::for_action(entity.kind(), action));
        let mut queued = 0;
        let mut waiting = 0;
        let mut handing = None;
        let mut event_id = None;
        if let Some(event_type) = event_type {
            let now = self.clock.now();
            let ancestors = ancestors(tx.as_mut(), entity).await?;
            // The receiving levels' endpoint settings: filters, ordering, disabled.
            let levels: Vec<EntityId> = recipients(event_type, &ancestors)
                .into_iter()
                .map(|r| r.id)
                .collect();
            let settings = if levels.is_empty() {
                Vec::new()
            } else {
                tx.endpoints(&levels.iter().collect::<Vec<_>>()).await?
            };
            let webhooks: Vec<NewWebhook> = route(event_type, &ancestors, |id| {
                settings.iter().find(|(l, _)| l == id).map(|(_, e)| e)
            })
            .into_iter()
            .map(|r| NewWebhook {
                id: EntityId::generate(now),
                level: r.recipient.level,
                level_id: r.recipient.id,
                url: r.recipient.url,
                ordered: r.ordered,
                disabled: r.disabled,
            })
            .collect();
            let sendable = webhooks.iter().filter(|w| !w.disabled).count();
            let event = NewEvent {
                id: EntityId::generate(now),
                event_type,
                subject_id: entity.id().clone(),
                data: view.to_string(),
                created_at: now,
            };
            // Claimed as they are written when the dispatcher has room (see `Handoff`).
            let reservation = match admitted.room {
                Some(room) => room.keep(sendable),
                None => self.handoff.reserve(sendable, now),
            };
            let claimed = tx
                .add_event(&event, &webhooks, reservation.as_ref().map(|r| r.lease()))
                .await?;
            // Written due rather than handed off: ordered ones behind an unfinished older one.
            waiting = sendable - claimed.len().min(sendable);
            handing = reservation.map(|r| (r, claimed));
            queued = webhooks.len();
            event_id = Some(event.id);
        }
        let commit = crate::telemetry::commit_span(
            event_id.as_ref().zip(event_type.map(EventType::as_str)),
            queued,
        );
        tracing::Instrument::instrument(tx.commit(), commit).await?;
        let mut handed_off = 0;
        if let Some((reservation, claimed)) = handing {
            handed_off = claimed.len();
            reservation.send(claimed);
        }
        if waiting > 0 {
            self.handoff.wake();
        }
        if let Some(t) = event_type {
            // One line per event at debug: at thousands of events a second, the metrics
            // (`tidings_events`) say how many; this says which.
            tracing::debug!(event = %t, subject = %entity.id(), webhooks = queued, "event recorded");
        }
        Ok(Applied {
            view,
            event: event_type,
            webhooks: queued,
            handed_off,
            waited: admitted.waited,
            ran_again: false,
        })
    }
}
