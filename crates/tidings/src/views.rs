//! Composes an entity's wire shape (API answer and webhook `data`) from the store.
//!
//! One function per entity kind loads what the view embeds (a meeting's company, site and
//! creator; a site's users; ...) and hands it to the pure view builders in the domain.

use std::collections::HashMap;

use crate::domain::entities::{Entity, NameRef, OwnerView, Package, User};
use crate::domain::{EntityId, Kind};
use crate::store::{Result, StoreError, Tx};

/// How many users a site view lists at most.
const MAX_SITE_USERS: u32 = 10_000;

/// The entity as the API returns it and as its webhooks carry it.
pub async fn view(tx: &mut dyn Tx, entity: &Entity) -> Result<serde_json::Value> {
    let value = match entity {
        Entity::Reseller(r) => to_value(r.view()),
        Entity::Dealer(d) => {
            let Entity::Reseller(reseller) = load(tx, &d.reseller).await? else {
                return Err(wrong(&d.reseller));
            };
            to_value(d.view(&reseller))
        }
        Entity::Company(c) => {
            let Entity::Dealer(dealer) = load(tx, &c.dealer).await? else {
                return Err(wrong(&c.dealer));
            };
            let package = match &c.package {
                Some(p) => Some(package(tx, p).await?),
                None => None,
            };
            to_value(c.view(package.as_ref(), &dealer))
        }
        Entity::Site(s) => {
            let Entity::Company(company) = load(tx, &s.company).await? else {
                return Err(wrong(&s.company));
            };
            let mut owners = HashMap::new();
            let mut users = Vec::new();
            for e in tx
                .referrers(&s.id, Some(Kind::User), MAX_SITE_USERS)
                .await?
            {
                if let Entity::User(u) = e {
                    let owner = owner_view(tx, &u, &mut owners).await?;
                    users.push(u.site_view(owner));
                }
            }
            to_value(s.view(&company, users))
        }
        Entity::User(u) => {
            let mut sites = Vec::with_capacity(u.sites.len());
            for id in &u.sites {
                let site = load(tx, id).await?;
                sites.push(NameRef {
                    id: id.clone(),
                    name: site.name(),
                });
            }
            let owner = owner_view(tx, u, &mut HashMap::new()).await?;
            to_value(u.view(&sites, owner))
        }
        Entity::Meeting(m) => {
            let Entity::Company(company) = load(tx, &m.company).await? else {
                return Err(wrong(&m.company));
            };
            let site = match &m.site {
                Some(id) => match load(tx, id).await? {
                    Entity::Site(s) => Some(s),
                    _ => return Err(wrong(id)),
                },
                None => None,
            };
            let creator = load(tx, &m.created_by).await?;
            let created_by = NameRef {
                id: m.created_by.clone(),
                name: creator.name(),
            };
            to_value(m.view(&company, site.as_ref(), created_by))
        }
        Entity::Package(p) => to_value(p),
    };
    Ok(value)
}

/// The owning entity of a user, with the package of an owning company.
async fn owner_view(
    tx: &mut dyn Tx,
    user: &User,
    cache: &mut HashMap<EntityId, OwnerView>,
) -> Result<OwnerView> {
    if let Some(v) = cache.get(&user.owner.id) {
        return Ok(v.clone());
    }
    let owner = load(tx, &user.owner.id).await?;
    let package = match &owner {
        Entity::Company(c) => match &c.package {
            Some(p) => Some(package(tx, p).await?),
            None => None,
        },
        _ => None,
    };
    let view = OwnerView {
        level: user.owner.level,
        id: user.owner.id.clone(),
        name: owner.name(),
        package,
    };
    cache.insert(user.owner.id.clone(), view.clone());
    Ok(view)
}

async fn package(tx: &mut dyn Tx, id: &EntityId) -> Result<Package> {
    match load(tx, id).await? {
        Entity::Package(p) => Ok(p),
        _ => Err(wrong(id)),
    }
}

async fn load(tx: &mut dyn Tx, id: &EntityId) -> Result<Entity> {
    tx.get(id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("referenced entity {id} is missing")))
}

fn wrong(id: &EntityId) -> StoreError {
    StoreError::Corrupt(format!("referenced entity {id} has the wrong kind"))
}

fn to_value<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).expect("views always serialize")
}
