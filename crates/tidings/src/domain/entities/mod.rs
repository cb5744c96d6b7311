//! The entities of the hierarchy: how they are stored, what the API accepts, and the exact
//! wire shape of each (the seed's example payloads).
//!
//! Three forms per entity:
//! - the stored record (`Dealer`, `Meeting`, ...): own fields plus the ids it refers to;
//! - the input (`DealerInput`, ...): what a client POSTs, in the seed's names and nesting,
//!   references written as `{"id": ...}`; server-made fields are refused;
//! - the view (`DealerView`, ...): the seed's payload shape, built from the record and the
//!   records it refers to. API GETs and webhook `data` are both this view.
//!
//! A PATCH is a JSON merge patch over the input form of the current record, validated as a
//! full input, so creation and change share one path and one set of checks.
//!
//! This module holds the stored records and [`Entity`]; `input` the inputs and how a
//! record is built from one; `view` the wire shapes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::event::{Kind, Level};
use super::ids::{EntityId, Millis};

mod input;
mod view;

pub use input::*;
pub use view::*;

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// A person to talk to at a level (the seed's `contact`). Its id is made by Tidings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Contact {
    pub id: EntityId,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    /// `null` when not given: a receiver finds every key the seed's example shows.
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
}

/// Who hears about failed deliveries at a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationContact {
    #[schema(format = Email)]
    pub email: String,
}

// ---------------------------------------------------------------------------------------------
// The stored records

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reseller {
    pub id: EntityId,
    pub name: String,
    pub contact: Contact,
    pub notification_contact: Option<NotificationContact>,
    pub webhook_url: Option<String>,
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dealer {
    pub id: EntityId,
    pub name: String,
    pub contact: Contact,
    pub reseller: EntityId,
    pub notification_contact: Option<NotificationContact>,
    pub webhook_url: Option<String>,
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Company {
    pub id: EntityId,
    pub name: String,
    pub contact: Contact,
    pub package: Option<EntityId>,
    pub dealer: EntityId,
    pub notification_contact: Option<NotificationContact>,
    pub webhook_url: Option<String>,
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub id: EntityId,
    pub name: String,
    pub logo: Option<String>,
    pub company: EntityId,
    pub videochat_font_type: Option<String>,
    pub videochat_text_color: Option<String>,
    pub email_invite_text: Option<String>,
    pub email_cancel_text: Option<String>,
    pub email_hardwaretest_text: Option<String>,
    pub email_enable_hardwaretest: bool,
    pub notification_contact: Option<NotificationContact>,
    pub webhook_url: Option<String>,
}

/// The entity that owns a user: normally a company; a dealer or reseller may own users too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    #[serde(rename = "type")]
    pub level: Level,
    #[schema(value_type = String)]
    pub id: EntityId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: EntityId,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub photo: Option<String>,
    pub locale: String,
    pub role: String,
    pub created_at: Millis,
    pub sites: Vec<EntityId>,
    pub owner: Owner,
    pub status: String,
    pub suspended: bool,
}

impl User {
    /// The seed's `name`: first and last name.
    pub fn name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Participant {
    pub username: String,
    /// Every key any of the seed's participants shows is on every participant (`null` when
    /// not set): an agent has no phone, a visitor no user.
    #[serde(default)]
    pub name: Option<String>,
    #[schema(value_type = String)]
    pub id: EntityId,
    /// The user id of an agent participant.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub user: Option<EntityId>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    pub initial_participant: bool,
    pub sessions: Vec<String>,
    pub hash: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meeting {
    pub id: EntityId,
    pub company: EntityId,
    /// Set for a personal meeting, absent for a direct one.
    pub site: Option<EntityId>,
    pub created_by: EntityId,
    pub room_id: String,
    pub room_password: String,
    pub stream_camera_two_way: bool,
    pub duration: i64,
    pub is_appointment: bool,
    pub room_created: Millis,
    pub room_available_from: Millis,
    pub room_available_till: Millis,
    pub subject: Option<String>,
    pub invitation: Option<String>,
    /// The participants as the client last gave them; kept to tell a real change from a no-op.
    pub participants_input: Vec<ParticipantInput>,
    pub participants: Vec<Participant>,
    /// When the meeting last started, for the `duration` set by `end`.
    pub started_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Package {
    #[schema(value_type = String)]
    pub id: EntityId,
    pub name: String,
    pub features: Vec<String>,
}

/// Any stored entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
pub enum Entity {
    Reseller(Reseller),
    Dealer(Dealer),
    Company(Company),
    Site(Site),
    User(User),
    Meeting(Meeting),
    Package(Package),
}

impl Entity {
    pub fn id(&self) -> &EntityId {
        match self {
            Entity::Reseller(e) => &e.id,
            Entity::Dealer(e) => &e.id,
            Entity::Company(e) => &e.id,
            Entity::Site(e) => &e.id,
            Entity::User(e) => &e.id,
            Entity::Meeting(e) => &e.id,
            Entity::Package(e) => &e.id,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Entity::Reseller(_) => Kind::Reseller,
            Entity::Dealer(_) => Kind::Dealer,
            Entity::Company(_) => Kind::Company,
            Entity::Site(_) => Kind::Site,
            Entity::User(_) => Kind::User,
            Entity::Meeting(_) => Kind::Meeting,
            Entity::Package(_) => Kind::Package,
        }
    }

    /// The next entity up the chain of levels: the parent level, a user's owner, a personal
    /// meeting's site or a direct meeting's company. Walking it gives the event's receivers.
    pub fn up(&self) -> Option<&EntityId> {
        match self {
            Entity::Reseller(_) | Entity::Package(_) => None,
            Entity::Dealer(e) => Some(&e.reseller),
            Entity::Company(e) => Some(&e.dealer),
            Entity::Site(e) => Some(&e.company),
            Entity::User(e) => Some(&e.owner.id),
            Entity::Meeting(e) => Some(e.site.as_ref().unwrap_or(&e.company)),
        }
    }

    /// Every entity this one refers to. An entity that others refer to cannot be deleted.
    pub fn refs(&self) -> Vec<EntityId> {
        let mut refs: Vec<EntityId> = match self {
            Entity::Reseller(_) | Entity::Package(_) => vec![],
            Entity::Dealer(e) => vec![e.reseller.clone()],
            Entity::Company(e) => [Some(e.dealer.clone()), e.package.clone()]
                .into_iter()
                .flatten()
                .collect(),
            Entity::Site(e) => vec![e.company.clone()],
            Entity::User(e) => std::iter::once(e.owner.id.clone())
                .chain(e.sites.iter().cloned())
                .collect(),
            Entity::Meeting(e) => [
                Some(e.company.clone()),
                e.site.clone(),
                Some(e.created_by.clone()),
            ]
            .into_iter()
            .flatten()
            .chain(e.participants.iter().filter_map(|p| p.user.clone()))
            .collect(),
        };
        refs.sort();
        refs.dedup();
        refs
    }

    /// The levels among [`Entity::refs`]: a company's package, a meeting's creator and
    /// participants are not levels.
    pub fn level_refs(&self) -> Vec<EntityId> {
        match self {
            Entity::User(e) => std::iter::once(e.owner.id.clone())
                .chain(e.sites.iter().cloned())
                .collect(),
            Entity::Meeting(e) => std::iter::once(e.company.clone())
                .chain(e.site.clone())
                .collect(),
            Entity::Reseller(_) | Entity::Package(_) => Vec::new(),
            Entity::Dealer(_) | Entity::Company(_) | Entity::Site(_) => {
                self.up().cloned().into_iter().collect()
            }
        }
    }

    /// The level settings (`webhook_url`, `notification_contact`) if this entity is a level.
    pub fn level_settings(&self) -> Option<(Level, Option<&str>, Option<&NotificationContact>)> {
        let (url, contact) = match self {
            Entity::Reseller(e) => (&e.webhook_url, &e.notification_contact),
            Entity::Dealer(e) => (&e.webhook_url, &e.notification_contact),
            Entity::Company(e) => (&e.webhook_url, &e.notification_contact),
            Entity::Site(e) => (&e.webhook_url, &e.notification_contact),
            _ => return None,
        };
        Some((self.kind().level()?, url.as_deref(), contact.as_ref()))
    }

    /// The contact of a reseller, dealer or company.
    pub fn contact(&self) -> Option<&Contact> {
        match self {
            Entity::Reseller(Reseller { contact, .. })
            | Entity::Dealer(Dealer { contact, .. })
            | Entity::Company(Company { contact, .. }) => Some(contact),
            _ => None,
        }
    }

    /// The fields that express the authority of the levels above this entity, by name: its
    /// suspension, its package and its place in the hierarchy. Only the operator or a key
    /// of a level strictly above the entity changes them (`docs/api.md`).
    pub fn authority(&self) -> Vec<(&'static str, String)> {
        let id = |i: &EntityId| i.to_string();
        let suspended = |s: bool| ("suspended", s.to_string());
        match self {
            Entity::Reseller(e) => vec![suspended(e.suspended)],
            Entity::Dealer(e) => vec![suspended(e.suspended), ("reseller", id(&e.reseller))],
            Entity::Company(e) => vec![
                suspended(e.suspended),
                ("package", e.package.as_ref().map(id).unwrap_or_default()),
                ("dealer", id(&e.dealer)),
            ],
            Entity::Site(e) => vec![("company", id(&e.company))],
            Entity::User(e) => vec![
                suspended(e.suspended),
                ("entity", format!("{} {}", e.owner.level, e.owner.id)),
            ],
            Entity::Meeting(e) => vec![
                ("company", id(&e.company)),
                ("site", e.site.as_ref().map(id).unwrap_or_default()),
            ],
            Entity::Package(_) => vec![],
        }
    }

    /// Whether this level is suspended (sites, users as levels, meetings and packages never
    /// are).
    pub fn is_suspended_level(&self) -> bool {
        match self {
            Entity::Reseller(e) => e.suspended,
            Entity::Dealer(e) => e.suspended,
            Entity::Company(e) => e.suspended,
            _ => false,
        }
    }

    /// The display name used where another entity embeds this one.
    pub fn name(&self) -> String {
        match self {
            Entity::Reseller(e) => e.name.clone(),
            Entity::Dealer(e) => e.name.clone(),
            Entity::Company(e) => e.name.clone(),
            Entity::Site(e) => e.name.clone(),
            Entity::User(e) => e.name(),
            Entity::Meeting(e) => e.subject.clone().unwrap_or_default(),
            Entity::Package(e) => e.name.clone(),
        }
    }
}
