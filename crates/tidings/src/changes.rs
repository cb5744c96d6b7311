//! Applies API changes to the hierarchy and records their events and webhooks in the same
//! transaction (the transactional outbox).
//!
//! Every operation: parse and validate the input, check its references, build the record,
//! write it, compose the subject's wire shape, route the event through the domain's level
//! table and write one webhook per receiving level with its URL snapshot, then commit.
//! Nothing is written when any step refuses; nothing is emitted when nothing changed.

use std::sync::Arc;

use serde_json::Value;

use crate::clock::Clock;
use crate::delivery::handoff::{Reservation, Waited};
use crate::delivery::secrets::{self, SecretBox};
use crate::delivery::Handoff;
use crate::domain::endpoint::Endpoint;
use crate::domain::entities::{merge_patch, BuildContext, Entity, Input, User};
use crate::domain::routing::{recipients, route, Ancestor};
use crate::domain::validate::{FieldError, UrlRules};
use crate::domain::{Action, EntityId, EventType, Kind, Level};
use crate::store::{Health, NewEvent, NewWebhook, Store, StoreError, Tx};
use crate::tenancy::Principal;
use crate::views::view;

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
}

/// Room in the dispatcher that a change took before it began, and how it waited for it.
struct Admitted<'a> {
    room: Option<Reservation<'a>>,
    waited: Option<Waited>,
}

/// A level's endpoint settings with its health, as the API shows them.
#[derive(Debug, Clone)]
pub struct LevelEndpoint {
    pub level: crate::domain::Level,
    pub level_id: EntityId,
    pub settings: Endpoint,
    pub health: Health,
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
        let now = self.clock.now();
        let (mut tx, admitted) = self.begin_change().await?;
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

    /// A level's current signing secret (`whsec_...`).
    pub async fn secret(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
    ) -> Result<String, ChangeError> {
        let level = self.level_id(who, kind, id).await?;
        let sealed = self
            .store
            .secrets(&level)
            .await?
            .ok_or_else(|| ChangeError::NotFound {
                kind,
                id: id.to_owned(),
            })?;
        let secret = self
            .keys
            .open(&sealed.current)
            .map_err(|e| ChangeError::Store(StoreError::Corrupt(e.to_string())))?;
        Ok(secret.to_string())
    }

    /// Replaces a level's signing secret; the old one keeps signing for 24 hours.
    pub async fn rotate_secret(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
    ) -> Result<String, ChangeError> {
        let level = self.level_id(who, kind, id).await?;
        self.may_change(who).await?;
        let now = self.clock.now();
        let new = secrets::generate();
        let until = crate::domain::Millis(now.0 + secrets::ROTATION_OVERLAP_MS);
        self.store
            .rotate_secret(&level, &self.keys.seal(&new), until, now)
            .await?;
        tracing::info!(level = %level, "signing secret rotated; the previous one signs too for 24 h");
        Ok(new.to_string())
    }

    /// A level's endpoint settings and health.
    pub async fn endpoint(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
    ) -> Result<LevelEndpoint, ChangeError> {
        let level_id = self.level_id(who, kind, id).await?;
        self.endpoint_of(kind, level_id).await
    }

    /// Changes a level's endpoint settings (a partial update; see [`Endpoint::patched`]).
    /// Disabling stops the level's pending webhooks; enabling lets `recover` send them.
    pub async fn patch_endpoint(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
        body: Value,
    ) -> Result<LevelEndpoint, ChangeError> {
        let level_id = self.level_id(who, kind, id).await?;
        let level = kind.level().ok_or_else(|| ChangeError::NotFound {
            kind,
            id: id.to_owned(),
        })?;
        let before = self.store.endpoint(&level_id).await?;
        let after = before.patched(level, &body).map_err(ChangeError::Invalid)?;
        if after != before {
            let set_enabled = after.enabled != before.enabled;
            self.store
                .put_endpoint(&level_id, &after, set_enabled, self.clock.now())
                .await?;
            tracing::info!(level = %level_id, enabled = after.enabled, ordered = after.ordered, success = after.success.as_str(), "endpoint settings changed");
        }
        self.endpoint_of(kind, level_id).await
    }

    async fn endpoint_of(
        &self,
        kind: Kind,
        level_id: EntityId,
    ) -> Result<LevelEndpoint, ChangeError> {
        let level = kind.level().ok_or_else(|| ChangeError::NotFound {
            kind,
            id: level_id.to_string(),
        })?;
        let settings = self.store.endpoint(&level_id).await?;
        let health = self
            .store
            .endpoint_health(std::slice::from_ref(&level_id), self.clock.now())
            .await?
            .remove(&level_id)
            .unwrap_or_default();
        Ok(LevelEndpoint {
            level,
            level_id,
            settings,
            health,
        })
    }

    async fn level_id(
        &self,
        who: &Principal,
        kind: Kind,
        id: &str,
    ) -> Result<EntityId, ChangeError> {
        let mut tx = self.store.read().await?;
        Ok(get_visible(tx.as_mut(), who, kind, id, false)
            .await?
            .id()
            .clone())
    }

    /// Refuses a change by a key whose level, or a level above it, is suspended: such a key
    /// reads but changes nothing. Every change goes through this rule (entity changes here;
    /// retries and recoveries call it from their handlers).
    pub async fn may_change(&self, who: &Principal) -> Result<(), ChangeError> {
        if who.is_operator() {
            return Ok(());
        }
        let mut tx = self.store.read().await?;
        ensure_active(tx.as_mut(), who).await
    }

    /// Whether the level `level_id` lies in the principal's subtree (for webhooks, e-mails).
    pub async fn sees_level(
        &self,
        who: &Principal,
        level_id: &EntityId,
    ) -> Result<bool, ChangeError> {
        if who.is_operator() {
            return Ok(true);
        }
        let mut tx = self.store.read().await?;
        match tx.get(level_id).await? {
            Some(e) => Ok(sees(tx.as_mut(), who, &e).await?),
            None => Ok(false),
        }
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
        let now = self.clock.now();
        let (mut tx, admitted) = self.begin_change().await?;
        let current = get_visible(tx.as_mut(), who, kind, id, true).await?;
        operator_only_for_packages(who, kind)?;
        ensure_active(tx.as_mut(), who).await?;
        let mut form = Input::of(&current).to_json();
        merge_patch(&mut form, &patch);
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
        let (mut tx, admitted) = self.begin_change().await?;
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
        let now = self.clock.now();
        let (mut tx, admitted) = self.begin_change().await?;
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

    /// Begins a change that may emit an event: once the dispatcher has room for its
    /// webhooks (as many as an event can have), or the back-pressure wait ran out (see
    /// [`Handoff::admit`]).
    async fn begin_change(&self) -> Result<(Box<dyn Tx>, Admitted<'_>), StoreError> {
        let (room, waited) = self.handoff.admit(Level::ALL.len(), self.clock.now()).await;
        Ok((self.store.write().await?, Admitted { room, waited }))
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
        })
    }
}

/// The levels above `entity`, nearest first, as they are now.
async fn ancestors(tx: &mut dyn Tx, entity: &Entity) -> Result<Vec<Ancestor>, StoreError> {
    let mut chain = Vec::new();
    let mut next = entity.up().cloned();
    while let Some(id) = next {
        let Some(e) = tx.get(&id).await? else {
            return Err(StoreError::Corrupt(format!(
                "{} refers to missing {id}",
                entity.id()
            )));
        };
        if let Some((level, url, _)) = e.level_settings() {
            chain.push(Ancestor {
                level,
                id: id.clone(),
                webhook_url: url.map(str::to_owned),
            });
        }
        next = e.up().cloned();
        if chain.len() > 8 {
            return Err(StoreError::Corrupt(format!(
                "{} has a cycle above it",
                entity.id()
            )));
        }
    }
    Ok(chain)
}

/// Reads an entity of `kind` that the principal can see; anything else is "not found", so a
/// key learns nothing about what lies outside its subtree. `for_change` locks it against
/// concurrent changes.
async fn get_visible(
    tx: &mut dyn Tx,
    who: &Principal,
    kind: Kind,
    id: &str,
    for_change: bool,
) -> Result<Entity, ChangeError> {
    let not_found = || ChangeError::NotFound {
        kind,
        id: id.to_owned(),
    };
    let id = EntityId::parse(id).map_err(|_| not_found())?;
    let found = if for_change {
        tx.get_for_change(&id).await?
    } else {
        tx.get(&id).await?
    };
    match found {
        Some(e) if e.kind() == kind && sees(tx, who, &e).await? => Ok(e),
        _ => Err(not_found()),
    }
}

/// Whether the principal can see `entity`. Packages are a catalogue everyone can read.
async fn sees(tx: &mut dyn Tx, who: &Principal, entity: &Entity) -> Result<bool, StoreError> {
    if who.is_operator() || entity.kind() == Kind::Package {
        return Ok(true);
    }
    let above: Vec<EntityId> = ancestors(tx, entity)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    Ok(who.sees(entity.id(), &above))
}

/// A new or changed entity must stay inside the principal's subtree.
async fn ensure_within(
    tx: &mut dyn Tx,
    who: &Principal,
    entity: &Entity,
) -> Result<(), ChangeError> {
    if sees(tx, who, entity).await? {
        Ok(())
    } else {
        Err(ChangeError::Forbidden(format!(
            "this key cannot place a {} outside its own subtree",
            entity.kind()
        )))
    }
}

/// A key whose level, or a level above it, is suspended reads but changes nothing.
async fn ensure_active(tx: &mut dyn Tx, who: &Principal) -> Result<(), ChangeError> {
    let Some(own) = who.own_level() else {
        return Ok(());
    };
    let mut next = Some(own.clone());
    let mut depth = 0;
    while let Some(id) = next {
        let Some(level) = tx.get(&id).await? else {
            return Err(ChangeError::Forbidden(format!(
                "this key's level {id} no longer exists"
            )));
        };
        if level.is_suspended_level() {
            let whose = if &id == own {
                "this key's level".to_owned()
            } else {
                format!("{} {id}, above this key's level,", level.kind())
            };
            return Err(ChangeError::Forbidden(format!(
                "{whose} is suspended: its keys may read but not change anything"
            )));
        }
        next = level.up().cloned();
        depth += 1;
        if depth > 8 {
            return Err(StoreError::Corrupt(format!("{own} has a cycle above it")).into());
        }
    }
    Ok(())
}

/// The fields that express the authority of the levels above an entity (its suspension,
/// package, parent: [`Entity::authority`]) change only by the operator or a key of a level
/// strictly above it; a key cannot lift its own level's suspension or give it a package.
async fn ensure_authority(
    tx: &mut dyn Tx,
    who: &Principal,
    current: &Entity,
    changed: &Entity,
) -> Result<(), ChangeError> {
    let before = current.authority();
    let Some((field, _)) = changed
        .authority()
        .into_iter()
        .zip(before)
        .find_map(|(after, before)| (after != before).then_some(after))
    else {
        return Ok(());
    };
    if who.is_operator() {
        return Ok(());
    }
    let above: Vec<EntityId> = ancestors(tx, current)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    if who.is_above(current.id(), &above) {
        return Ok(());
    }
    Err(ChangeError::Forbidden(format!(
        "`{field}` of {} {} is set by a level above it or the operator; this key cannot change it",
        current.kind(),
        current.id()
    )))
}

fn operator_only_for_packages(who: &Principal, kind: Kind) -> Result<(), ChangeError> {
    if kind == Kind::Package && !who.is_operator() {
        return Err(ChangeError::Forbidden(
            "only the operator key manages packages".into(),
        ));
    }
    Ok(())
}

/// References must agree with each other: a personal meeting's site belongs to the
/// meeting's company and its creator to that company or a level above it; a user's sites lie
/// under the user's owning entity. Otherwise a meeting's events would reach another
/// company's site, or a site would list another company's user.
async fn check_consistency(tx: &mut dyn Tx, input: &Input) -> Result<(), ChangeError> {
    let refuse = |field: &str, reason: String| {
        Err(ChangeError::InvalidReference(FieldError::new(
            field, reason,
        )))
    };
    match input {
        Input::Meeting(m) => {
            if let Some(site) = &m.site {
                if let Some(Entity::Site(s)) = tx.get(&site.id).await? {
                    if s.company != m.company.id {
                        return refuse(
                            "site.id",
                            format!(
                                "site {} belongs to another company than {}",
                                site.id, m.company.id
                            ),
                        );
                    }
                }
            }
            if let Some(Entity::User(u)) = tx.get(&m.created_by.id).await? {
                let company = tx
                    .get(&m.company.id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("company vanished".into()))?;
                let mut chain: Vec<EntityId> = ancestors(tx, &company)
                    .await?
                    .into_iter()
                    .map(|a| a.id)
                    .collect();
                chain.push(m.company.id.clone());
                if !chain.contains(&u.owner.id) {
                    return refuse(
                        "created_by.id",
                        format!(
                            "user {} belongs to neither company {} nor a level above it",
                            u.id, m.company.id
                        ),
                    );
                }
            }
        }
        Input::User(u) => {
            for (n, site) in u.sites.iter().enumerate() {
                if let Some(e @ Entity::Site(_)) = tx.get(&site.id).await? {
                    let above: Vec<EntityId> =
                        ancestors(tx, &e).await?.into_iter().map(|a| a.id).collect();
                    if !above.contains(&u.entity.id) {
                        return refuse(
                            &format!("sites[{n}].id"),
                            format!(
                                "site {} is not under the user's {} {}",
                                site.id, u.entity.level, u.entity.id
                            ),
                        );
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Every reference must name an entity of the right kind that the principal can see;
/// references the record already had (`kept`, e.g. a key's own level's parent) stay valid.
async fn check_references(
    tx: &mut dyn Tx,
    who: &Principal,
    input: &Input,
    kept: Option<&Entity>,
) -> Result<(), ChangeError> {
    let allowed = kept.map(Entity::refs).unwrap_or_default();
    for r in input.references() {
        let found = match tx.get(&r.id).await? {
            Some(e) if allowed.contains(&r.id) || sees(tx, who, &e).await? => Some(e),
            _ => None,
        };
        match found {
            Some(e) if e.kind() == r.kind => {}
            Some(e) => {
                return Err(ChangeError::InvalidReference(FieldError::new(
                    r.field,
                    format!("{} is a {}, not a {}", r.id, e.kind(), r.kind),
                )))
            }
            None => {
                return Err(ChangeError::InvalidReference(FieldError::new(
                    r.field,
                    format!("no {} with id {}", r.kind, r.id),
                )))
            }
        }
    }
    Ok(())
}

/// The users an input names as agent participants (their names and e-mails are copied).
async fn load_agents(tx: &mut dyn Tx, input: &Input) -> Result<Vec<User>, ChangeError> {
    let mut users = Vec::new();
    if let Input::Meeting(m) = input {
        for id in m.participants.iter().filter_map(|p| p.user.as_ref()) {
            if let Some(Entity::User(u)) = tx.get(id).await? {
                users.push(u);
            }
        }
    }
    Ok(users)
}

fn find_user(users: &[User], id: &EntityId) -> Option<User> {
    users.iter().find(|u| &u.id == id).cloned()
}
