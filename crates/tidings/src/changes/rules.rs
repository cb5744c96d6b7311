//! Who may do what, and what must hold: visibility (a key sees its subtree and nothing
//! else), suspension, the authority of the levels above, and references that name what the
//! key can see and agree with each other.

use super::{ChangeError, Hierarchy};
use crate::domain::entities::{Entity, Input, User};
use crate::domain::routing::Ancestor;
use crate::domain::validate::FieldError;
use crate::domain::{EntityId, Kind};
use crate::store::{StoreError, Tx};
use crate::tenancy::Principal;

impl Hierarchy {
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
}

/// The levels above `entity`, nearest first, as they are now.
pub(super) async fn ancestors(
    tx: &mut dyn Tx,
    entity: &Entity,
) -> Result<Vec<Ancestor>, StoreError> {
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
pub(super) async fn get_visible(
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
pub(super) async fn sees(
    tx: &mut dyn Tx,
    who: &Principal,
    entity: &Entity,
) -> Result<bool, StoreError> {
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
pub(super) async fn ensure_within(
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
pub(super) async fn ensure_active(tx: &mut dyn Tx, who: &Principal) -> Result<(), ChangeError> {
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
pub(super) async fn ensure_authority(
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

pub(super) fn operator_only_for_packages(who: &Principal, kind: Kind) -> Result<(), ChangeError> {
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
pub(super) async fn check_consistency(tx: &mut dyn Tx, input: &Input) -> Result<(), ChangeError> {
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
pub(super) async fn check_references(
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
pub(super) async fn load_agents(tx: &mut dyn Tx, input: &Input) -> Result<Vec<User>, ChangeError> {
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

pub(super) fn find_user(users: &[User], id: &EntityId) -> Option<User> {
    users.iter().find(|u| &u.id == id).cloned()
}
