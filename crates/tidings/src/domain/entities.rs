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

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::event::{Kind, Level};
use super::ids::{random_alphanumeric, EntityId, Millis};
use super::validate::{self, FieldError, UrlRules, MAX_LONG_TEXT, MAX_TEXT};

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    #[schema(min_length = 1, max_length = 200)]
    pub first_name: String,
    #[schema(min_length = 1, max_length = 200)]
    pub last_name: String,
    #[schema(format = Email)]
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

impl ContactInput {
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        validate::name(&format!("{field}.first_name"), &self.first_name)?;
        validate::name(&format!("{field}.last_name"), &self.last_name)?;
        validate::email(&format!("{field}.email"), &self.email)?;
        if let Some(p) = &self.phone {
            validate::phone(&format!("{field}.phone"), p)?;
        }
        if let Some(l) = &self.language {
            validate::language(&format!("{field}.language"), l)?;
        }
        Ok(())
    }

    /// The stored contact, keeping the id of the contact it replaces.
    fn into_contact(self, id: EntityId) -> Contact {
        Contact {
            id,
            first_name: self.first_name,
            last_name: self.last_name,
            email: self.email,
            phone: self.phone,
            language: self.language,
        }
    }

    fn from_contact(c: &Contact) -> Self {
        ContactInput {
            first_name: c.first_name.clone(),
            last_name: c.last_name.clone(),
            email: c.email.clone(),
            phone: c.phone.clone(),
            language: c.language.clone(),
        }
    }
}

/// Who hears about failed deliveries at a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationContact {
    #[schema(format = Email)]
    pub email: String,
}

/// A reference to another entity, written as the nested object with only its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ref {
    #[schema(value_type = String, example = "5f0ef6fa0c2b4d0e8a1b2c3d")]
    pub id: EntityId,
}

impl Ref {
    fn of(id: &EntityId) -> Self {
        Ref { id: id.clone() }
    }
}

/// The settings every level shares: where its webhooks go (stored in its normalised form)
/// and who hears of failures.
fn validate_level_settings(
    webhook_url: &mut Option<String>,
    notification_contact: &Option<NotificationContact>,
    rules: UrlRules,
) -> Result<(), FieldError> {
    if let Some(url) = webhook_url {
        *url = validate::webhook_url("webhook_url", url, rules)?;
    }
    if let Some(nc) = notification_contact {
        validate::email("notification_contact.email", &nc.email)?;
    }
    Ok(())
}

/// What building a record from an input needs besides the input.
pub struct BuildContext<'a> {
    pub now: Millis,
    pub url_rules: UrlRules,
    /// Base of participant URLs (`TIDINGS_MEETING_BASE_URL`), ending in `/`.
    pub meeting_base_url: &'a str,
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

    /// The level settings (`webhook_url`, `notification_contact`) if this entity is a level.
    pub fn level_settings(&self) -> Option<(Level, Option<&str>, Option<&NotificationContact>)> {
        match self {
            Entity::Reseller(e) => Some((
                Level::Reseller,
                e.webhook_url.as_deref(),
                e.notification_contact.as_ref(),
            )),
            Entity::Dealer(e) => Some((
                Level::Dealer,
                e.webhook_url.as_deref(),
                e.notification_contact.as_ref(),
            )),
            Entity::Company(e) => Some((
                Level::Company,
                e.webhook_url.as_deref(),
                e.notification_contact.as_ref(),
            )),
            Entity::Site(e) => Some((
                Level::Site,
                e.webhook_url.as_deref(),
                e.notification_contact.as_ref(),
            )),
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

// ---------------------------------------------------------------------------------------------
// Inputs: what clients POST (and, merged with a patch, what they PATCH)

/// A reference an input makes to another entity, with the kind it must be and the field
/// that names it; checked against the store before anything is written.
#[derive(Debug, Clone, PartialEq)]
pub struct RefCheck {
    pub field: String,
    pub id: EntityId,
    pub kind: Kind,
}

fn check(field: impl Into<String>, id: &EntityId, kind: Kind) -> RefCheck {
    RefCheck {
        field: field.into(),
        id: id.clone(),
        kind,
    }
}

fn opt_text(field: &str, value: &Option<String>, max: usize) -> Result<(), FieldError> {
    value
        .as_deref()
        .map_or(Ok(()), |v| validate::text(field, v, max))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResellerInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub contact: ContactInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_contact: Option<NotificationContact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DealerInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub contact: ContactInput,
    pub reseller: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_contact: Option<NotificationContact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub contact: ContactInput,
    pub dealer: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_contact: Option<NotificationContact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub company: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub videochat_font_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub videochat_text_color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_invite_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_cancel_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_hardwaretest_text: Option<String>,
    #[serde(default)]
    pub email_enable_hardwaretest: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_contact: Option<NotificationContact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

fn default_locale() -> String {
    "en".into()
}
fn default_role() -> String {
    "agent".into()
}
fn default_status() -> String {
    "offline".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    #[schema(min_length = 1, max_length = 200)]
    pub first_name: String,
    #[schema(min_length = 1, max_length = 200)]
    pub last_name: String,
    #[schema(format = Email)]
    pub email: String,
    /// The owning entity: `{"type": "company", "id": ...}` (or dealer, reseller).
    pub entity: Owner,
    #[serde(default)]
    pub sites: Vec<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo: Option<String>,
    #[serde(default = "default_locale")]
    pub locale: String,
    #[serde(default = "default_role")]
    pub role: String,
    #[serde(default = "default_status")]
    pub status: String,
    #[serde(default)]
    pub suspended: bool,
}

/// A participant as a client describes it: an agent (`user`) or a visitor (name, e-mail,
/// phone). Tidings makes its id, username, hash and URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub user: Option<EntityId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeetingInput {
    pub company: Ref,
    /// Present for a personal meeting; a meeting without a site is direct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<Ref>,
    pub created_by: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub room_available_from: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub room_available_till: Option<Millis>,
    #[serde(default)]
    pub stream_camera_two_way: bool,
    #[serde(default)]
    pub is_appointment: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<String>,
    #[serde(default)]
    pub participants: Vec<ParticipantInput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(default)]
    pub features: Vec<String>,
}

/// How long a room stays open when the client does not say: a week, as in the seed.
const DEFAULT_ROOM_OPEN_MS: i64 = 7 * 24 * 3600 * 1000;

/// One input of any kind, as parsed from a request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Reseller(ResellerInput),
    Dealer(DealerInput),
    Company(CompanyInput),
    Site(SiteInput),
    User(UserInput),
    Meeting(MeetingInput),
    Package(PackageInput),
}

impl Input {
    /// Parses a request body for `kind`, naming the offending field on error.
    pub fn parse(kind: Kind, body: serde_json::Value) -> Result<Input, FieldError> {
        use validate::from_json as de;
        Ok(match kind {
            Kind::Reseller => Input::Reseller(de(body)?),
            Kind::Dealer => Input::Dealer(de(body)?),
            Kind::Company => Input::Company(de(body)?),
            Kind::Site => Input::Site(de(body)?),
            Kind::User => Input::User(de(body)?),
            Kind::Meeting => Input::Meeting(de(body)?),
            Kind::Package => Input::Package(de(body)?),
        })
    }

    /// The input form of a stored record: what a client would POST to create it as it is.
    pub fn of(entity: &Entity) -> Input {
        match entity {
            Entity::Reseller(e) => Input::Reseller(ResellerInput {
                name: e.name.clone(),
                contact: ContactInput::from_contact(&e.contact),
                notification_contact: e.notification_contact.clone(),
                webhook_url: e.webhook_url.clone(),
                suspended: e.suspended,
            }),
            Entity::Dealer(e) => Input::Dealer(DealerInput {
                name: e.name.clone(),
                contact: ContactInput::from_contact(&e.contact),
                reseller: Ref::of(&e.reseller),
                notification_contact: e.notification_contact.clone(),
                webhook_url: e.webhook_url.clone(),
                suspended: e.suspended,
            }),
            Entity::Company(e) => Input::Company(CompanyInput {
                name: e.name.clone(),
                contact: ContactInput::from_contact(&e.contact),
                dealer: Ref::of(&e.dealer),
                package: e.package.as_ref().map(Ref::of),
                notification_contact: e.notification_contact.clone(),
                webhook_url: e.webhook_url.clone(),
                suspended: e.suspended,
            }),
            Entity::Site(e) => Input::Site(SiteInput {
                name: e.name.clone(),
                company: Ref::of(&e.company),
                logo: e.logo.clone(),
                videochat_font_type: e.videochat_font_type.clone(),
                videochat_text_color: e.videochat_text_color.clone(),
                email_invite_text: e.email_invite_text.clone(),
                email_cancel_text: e.email_cancel_text.clone(),
                email_hardwaretest_text: e.email_hardwaretest_text.clone(),
                email_enable_hardwaretest: e.email_enable_hardwaretest,
                notification_contact: e.notification_contact.clone(),
                webhook_url: e.webhook_url.clone(),
            }),
            Entity::User(e) => Input::User(UserInput {
                first_name: e.first_name.clone(),
                last_name: e.last_name.clone(),
                email: e.email.clone(),
                entity: e.owner.clone(),
                sites: e.sites.iter().map(Ref::of).collect(),
                photo: e.photo.clone(),
                locale: e.locale.clone(),
                role: e.role.clone(),
                status: e.status.clone(),
                suspended: e.suspended,
            }),
            Entity::Meeting(e) => Input::Meeting(MeetingInput {
                company: Ref::of(&e.company),
                site: e.site.as_ref().map(Ref::of),
                created_by: Ref::of(&e.created_by),
                room_available_from: Some(e.room_available_from),
                room_available_till: Some(e.room_available_till),
                stream_camera_two_way: e.stream_camera_two_way,
                is_appointment: e.is_appointment,
                subject: e.subject.clone(),
                invitation: e.invitation.clone(),
                participants: e.participants_input.clone(),
            }),
            Entity::Package(e) => Input::Package(PackageInput {
                name: e.name.clone(),
                features: e.features.clone(),
            }),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Input::Reseller(i) => serde_json::to_value(i),
            Input::Dealer(i) => serde_json::to_value(i),
            Input::Company(i) => serde_json::to_value(i),
            Input::Site(i) => serde_json::to_value(i),
            Input::User(i) => serde_json::to_value(i),
            Input::Meeting(i) => serde_json::to_value(i),
            Input::Package(i) => serde_json::to_value(i),
        };
        v.expect("inputs always serialize")
    }

    /// Checks every field's value and puts the `webhook_url` in its normalised form (the
    /// references are checked against the store separately).
    pub fn validate(&mut self, rules: UrlRules) -> Result<(), FieldError> {
        match self {
            Input::Reseller(i) => {
                validate::name("name", &i.name)?;
                i.contact.validate("contact")?;
                validate_level_settings(&mut i.webhook_url, &i.notification_contact, rules)
            }
            Input::Dealer(i) => {
                validate::name("name", &i.name)?;
                i.contact.validate("contact")?;
                validate_level_settings(&mut i.webhook_url, &i.notification_contact, rules)
            }
            Input::Company(i) => {
                validate::name("name", &i.name)?;
                i.contact.validate("contact")?;
                validate_level_settings(&mut i.webhook_url, &i.notification_contact, rules)
            }
            Input::Site(i) => {
                validate::name("name", &i.name)?;
                opt_text("logo", &i.logo, validate::MAX_URL)?;
                opt_text("videochat_font_type", &i.videochat_font_type, MAX_TEXT)?;
                if let Some(c) = &i.videochat_text_color {
                    validate::colour("videochat_text_color", c)?;
                }
                opt_text("email_invite_text", &i.email_invite_text, MAX_LONG_TEXT)?;
                opt_text("email_cancel_text", &i.email_cancel_text, MAX_LONG_TEXT)?;
                opt_text(
                    "email_hardwaretest_text",
                    &i.email_hardwaretest_text,
                    MAX_LONG_TEXT,
                )?;
                validate_level_settings(&mut i.webhook_url, &i.notification_contact, rules)
            }
            Input::User(i) => {
                validate::name("first_name", &i.first_name)?;
                validate::name("last_name", &i.last_name)?;
                validate::email("email", &i.email)?;
                opt_text("photo", &i.photo, validate::MAX_URL)?;
                validate::language("locale", &i.locale)?;
                validate::name("role", &i.role)?;
                validate::name("status", &i.status)?;
                if i.entity.level == Level::Site {
                    return Err(FieldError::new(
                        "entity.type",
                        "a user belongs to a company, dealer or reseller, not a site",
                    ));
                }
                Ok(())
            }
            Input::Meeting(i) => {
                opt_text("subject", &i.subject, MAX_TEXT)?;
                opt_text("invitation", &i.invitation, MAX_LONG_TEXT)?;
                if let (Some(from), Some(till)) = (i.room_available_from, i.room_available_till) {
                    if till < from {
                        return Err(FieldError::new(
                            "room_available_till",
                            "must not be before room_available_from",
                        ));
                    }
                }
                for (n, p) in i.participants.iter().enumerate() {
                    let field = |f: &str| format!("participants[{n}].{f}");
                    if p.user.is_none() && p.email.is_none() && p.phone.is_none() {
                        return Err(FieldError::new(
                            format!("participants[{n}]"),
                            "needs a user, an email or a phone",
                        ));
                    }
                    opt_text(&field("name"), &p.name, MAX_TEXT)?;
                    if let Some(e) = &p.email {
                        validate::email(&field("email"), e)?;
                    }
                    if let Some(ph) = &p.phone {
                        validate::phone(&field("phone"), ph)?;
                    }
                }
                Ok(())
            }
            Input::Package(i) => {
                validate::name("name", &i.name)?;
                for (n, f) in i.features.iter().enumerate() {
                    validate::name(&format!("features[{n}]"), f)?;
                }
                Ok(())
            }
        }
    }

    /// The references this input makes, each with the kind it must have.
    pub fn references(&self) -> Vec<RefCheck> {
        match self {
            Input::Reseller(_) | Input::Package(_) => vec![],
            Input::Dealer(i) => vec![check("reseller.id", &i.reseller.id, Kind::Reseller)],
            Input::Company(i) => {
                let mut v = vec![check("dealer.id", &i.dealer.id, Kind::Dealer)];
                if let Some(p) = &i.package {
                    v.push(check("package.id", &p.id, Kind::Package));
                }
                v
            }
            Input::Site(i) => vec![check("company.id", &i.company.id, Kind::Company)],
            Input::User(i) => {
                let mut v = vec![check("entity.id", &i.entity.id, i.entity.level.kind())];
                v.extend(
                    i.sites
                        .iter()
                        .enumerate()
                        .map(|(n, s)| check(format!("sites[{n}].id"), &s.id, Kind::Site)),
                );
                v
            }
            Input::Meeting(i) => {
                let mut v = vec![
                    check("company.id", &i.company.id, Kind::Company),
                    check("created_by.id", &i.created_by.id, Kind::User),
                ];
                if let Some(s) = &i.site {
                    v.push(check("site.id", &s.id, Kind::Site));
                }
                v.extend(i.participants.iter().enumerate().filter_map(|(n, p)| {
                    p.user
                        .as_ref()
                        .map(|u| check(format!("participants[{n}].user"), u, Kind::User))
                }));
                v
            }
        }
    }

    /// The stored record for this input. `previous` is the record it replaces (a PATCH), whose
    /// server-made fields are kept; `lookup` gives referenced users (for agent participants).
    pub fn build(
        self,
        id: EntityId,
        previous: Option<&Entity>,
        ctx: &BuildContext<'_>,
        users: &dyn Fn(&EntityId) -> Option<User>,
    ) -> Entity {
        let contact_id = |c: Option<&Contact>| {
            c.map(|c| c.id.clone())
                .unwrap_or_else(|| EntityId::generate(ctx.now))
        };
        match self {
            Input::Reseller(i) => {
                let prev = match previous {
                    Some(Entity::Reseller(p)) => Some(p),
                    _ => None,
                };
                Entity::Reseller(Reseller {
                    id,
                    name: i.name,
                    contact: i.contact.into_contact(contact_id(prev.map(|p| &p.contact))),
                    notification_contact: i.notification_contact,
                    webhook_url: i.webhook_url,
                    suspended: i.suspended,
                })
            }
            Input::Dealer(i) => {
                let prev = match previous {
                    Some(Entity::Dealer(p)) => Some(p),
                    _ => None,
                };
                Entity::Dealer(Dealer {
                    id,
                    name: i.name,
                    contact: i.contact.into_contact(contact_id(prev.map(|p| &p.contact))),
                    reseller: i.reseller.id,
                    notification_contact: i.notification_contact,
                    webhook_url: i.webhook_url,
                    suspended: i.suspended,
                })
            }
            Input::Company(i) => {
                let prev = match previous {
                    Some(Entity::Company(p)) => Some(p),
                    _ => None,
                };
                Entity::Company(Company {
                    id,
                    name: i.name,
                    contact: i.contact.into_contact(contact_id(prev.map(|p| &p.contact))),
                    package: i.package.map(|p| p.id),
                    dealer: i.dealer.id,
                    notification_contact: i.notification_contact,
                    webhook_url: i.webhook_url,
                    suspended: i.suspended,
                })
            }
            Input::Site(i) => Entity::Site(Site {
                id,
                name: i.name,
                logo: i.logo,
                company: i.company.id,
                videochat_font_type: i.videochat_font_type,
                videochat_text_color: i.videochat_text_color,
                email_invite_text: i.email_invite_text,
                email_cancel_text: i.email_cancel_text,
                email_hardwaretest_text: i.email_hardwaretest_text,
                email_enable_hardwaretest: i.email_enable_hardwaretest,
                notification_contact: i.notification_contact,
                webhook_url: i.webhook_url,
            }),
            Input::User(i) => {
                let created_at = match previous {
                    Some(Entity::User(p)) => p.created_at,
                    _ => ctx.now,
                };
                let mut sites: Vec<EntityId> = Vec::new();
                for s in i.sites {
                    if !sites.contains(&s.id) {
                        sites.push(s.id);
                    }
                }
                Entity::User(User {
                    id,
                    first_name: i.first_name,
                    last_name: i.last_name,
                    email: i.email,
                    photo: i.photo,
                    locale: i.locale,
                    role: i.role,
                    created_at,
                    sites,
                    owner: i.entity,
                    status: i.status,
                    suspended: i.suspended,
                })
            }
            Input::Meeting(i) => {
                let prev = match previous {
                    Some(Entity::Meeting(p)) => Some(p),
                    _ => None,
                };
                let room_created = prev.map_or(ctx.now, |p| p.room_created);
                let from = i.room_available_from.unwrap_or(room_created);
                let till = i
                    .room_available_till
                    .unwrap_or(Millis(from.0 + DEFAULT_ROOM_OPEN_MS));
                let participants = match prev {
                    Some(p) if p.participants_input == i.participants => p.participants.clone(),
                    _ => i
                        .participants
                        .iter()
                        .map(|p| make_participant(p, ctx, users))
                        .collect(),
                };
                Entity::Meeting(Meeting {
                    id,
                    company: i.company.id,
                    site: i.site.map(|s| s.id),
                    created_by: i.created_by.id,
                    room_id: prev.map_or_else(|| random_alphanumeric(32), |p| p.room_id.clone()),
                    room_password: prev
                        .map_or_else(|| random_alphanumeric(30), |p| p.room_password.clone()),
                    stream_camera_two_way: i.stream_camera_two_way,
                    duration: prev.map_or(0, |p| p.duration),
                    is_appointment: i.is_appointment,
                    room_created,
                    room_available_from: from,
                    room_available_till: till,
                    subject: i.subject,
                    invitation: i.invitation,
                    participants_input: i.participants,
                    participants,
                    started_at: prev.and_then(|p| p.started_at),
                })
            }
            Input::Package(i) => Entity::Package(Package {
                id,
                name: i.name,
                features: i.features,
            }),
        }
    }
}

fn make_participant(
    p: &ParticipantInput,
    ctx: &BuildContext<'_>,
    users: &dyn Fn(&EntityId) -> Option<User>,
) -> Participant {
    let hash = format!("{}_{}", random_alphanumeric(32), random_alphanumeric(32));
    let agent = p.user.as_ref().and_then(users);
    let username = match &p.user {
        Some(u) => format!("agent.{u}"),
        None => format!("visitor.{}", random_alphanumeric(16)),
    };
    Participant {
        username,
        name: p.name.clone().or_else(|| agent.as_ref().map(User::name)),
        id: EntityId::generate(ctx.now),
        user: p.user.clone(),
        email: p
            .email
            .clone()
            .or_else(|| agent.as_ref().map(|a| a.email.clone())),
        phone: p.phone.clone(),
        initial_participant: true,
        sessions: vec![],
        url: format!("{}{}", ctx.meeting_base_url, hash),
        hash,
    }
}

/// Applies an RFC 7396 JSON merge patch: objects merge key by key, `null` removes a key,
/// anything else replaces.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Views: the seed's payload shapes

/// A company, dealer or reseller as other entities embed it: id, name, contact.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LevelSummary {
    #[schema(value_type = String)]
    pub id: EntityId,
    pub name: String,
    pub contact: Contact,
}

/// A site or user as others embed it: id and name.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NameRef {
    #[schema(value_type = String)]
    pub id: EntityId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ResellerView {
    #[schema(value_type = String)]
    pub id: EntityId,
    pub name: String,
    pub contact: Contact,
    pub notification_contact: Option<NotificationContact>,
    pub webhook_url: Option<String>,
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DealerView {
    #[schema(value_type = String)]
    pub id: EntityId,
    pub name: String,
    pub contact: Contact,
    pub notification_contact: Option<NotificationContact>,
    pub reseller: LevelSummary,
    pub webhook_url: Option<String>,
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CompanyView {
    #[schema(value_type = String)]
    pub id: EntityId,
    pub name: String,
    pub contact: Contact,
    pub package: Option<Package>,
    pub dealer: LevelSummary,
    pub notification_contact: Option<NotificationContact>,
    pub webhook_url: Option<String>,
    pub suspended: bool,
}

/// The owning entity as a user embeds it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OwnerView {
    #[serde(rename = "type")]
    pub level: Level,
    #[schema(value_type = String)]
    pub id: EntityId,
    pub name: String,
    /// The owning company's package; `null` for a company without one, a dealer or a
    /// reseller.
    pub package: Option<Package>,
}

/// The owning entity as a site's user list embeds it: the seed's site example has no package.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SiteOwnerView {
    #[serde(rename = "type")]
    pub level: Level,
    #[schema(value_type = String)]
    pub id: EntityId,
    pub name: String,
}

/// A user as a site embeds it (no photo, sites, status or package).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SiteUserView {
    #[schema(value_type = String)]
    pub id: EntityId,
    pub first_name: String,
    pub last_name: String,
    pub name: String,
    pub email: String,
    pub locale: String,
    pub role: String,
    #[schema(value_type = String)]
    pub created_at: Millis,
    pub entity: SiteOwnerView,
    pub suspended: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SiteView {
    #[schema(value_type = String)]
    pub id: EntityId,
    pub name: String,
    pub logo: Option<String>,
    pub company: LevelSummary,
    pub users: Vec<SiteUserView>,
    pub videochat_font_type: Option<String>,
    pub videochat_text_color: Option<String>,
    pub email_invite_text: Option<String>,
    pub email_cancel_text: Option<String>,
    pub email_hardwaretest_text: Option<String>,
    pub email_enable_hardwaretest: bool,
    pub notification_contact: Option<NotificationContact>,
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UserView {
    #[schema(value_type = String)]
    pub id: EntityId,
    pub first_name: String,
    pub last_name: String,
    pub name: String,
    pub email: String,
    pub photo: Option<String>,
    pub locale: String,
    pub role: String,
    #[schema(value_type = String)]
    pub created_at: Millis,
    pub sites: Vec<NameRef>,
    pub entity: OwnerView,
    pub status: String,
    pub suspended: bool,
}

/// A meeting. A direct meeting carries `stream_camera_two_way`; a personal one carries
/// `is_appointment`, `site`, `subject` and `invitation` instead, as in the seed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MeetingView {
    #[schema(value_type = String)]
    pub id: EntityId,
    pub company: LevelSummary,
    pub room_id: String,
    pub room_password: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_camera_two_way: Option<bool>,
    pub duration: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_appointment: Option<bool>,
    #[schema(value_type = String)]
    pub room_created: Millis,
    #[schema(value_type = String)]
    pub room_available_from: Millis,
    #[schema(value_type = String)]
    pub room_available_till: Millis,
    pub created_by: NameRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<NameRef>,
    /// Personal meetings only; `null` there when not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub subject: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub invitation: Option<Option<String>>,
    pub participants: Vec<Participant>,
}

pub fn summary(id: &EntityId, name: &str, contact: &Contact) -> LevelSummary {
    LevelSummary {
        id: id.clone(),
        name: name.to_owned(),
        contact: contact.clone(),
    }
}

impl Reseller {
    pub fn view(&self) -> ResellerView {
        ResellerView {
            id: self.id.clone(),
            name: self.name.clone(),
            contact: self.contact.clone(),
            notification_contact: self.notification_contact.clone(),
            webhook_url: self.webhook_url.clone(),
            suspended: self.suspended,
        }
    }
}

impl Dealer {
    pub fn view(&self, reseller: &Reseller) -> DealerView {
        DealerView {
            id: self.id.clone(),
            name: self.name.clone(),
            contact: self.contact.clone(),
            notification_contact: self.notification_contact.clone(),
            reseller: summary(&reseller.id, &reseller.name, &reseller.contact),
            webhook_url: self.webhook_url.clone(),
            suspended: self.suspended,
        }
    }
}

impl Company {
    pub fn view(&self, package: Option<&Package>, dealer: &Dealer) -> CompanyView {
        CompanyView {
            id: self.id.clone(),
            name: self.name.clone(),
            contact: self.contact.clone(),
            package: package.cloned(),
            dealer: summary(&dealer.id, &dealer.name, &dealer.contact),
            notification_contact: self.notification_contact.clone(),
            webhook_url: self.webhook_url.clone(),
            suspended: self.suspended,
        }
    }

    pub fn summary(&self) -> LevelSummary {
        summary(&self.id, &self.name, &self.contact)
    }
}

impl Site {
    /// `users` are the users linked to this site, each with its owner as a site shows it.
    pub fn view(&self, company: &Company, users: Vec<SiteUserView>) -> SiteView {
        SiteView {
            id: self.id.clone(),
            name: self.name.clone(),
            logo: self.logo.clone(),
            company: company.summary(),
            users,
            videochat_font_type: self.videochat_font_type.clone(),
            videochat_text_color: self.videochat_text_color.clone(),
            email_invite_text: self.email_invite_text.clone(),
            email_cancel_text: self.email_cancel_text.clone(),
            email_hardwaretest_text: self.email_hardwaretest_text.clone(),
            email_enable_hardwaretest: self.email_enable_hardwaretest,
            notification_contact: self.notification_contact.clone(),
            webhook_url: self.webhook_url.clone(),
        }
    }
}

impl User {
    pub fn view(&self, sites: &[NameRef], owner: OwnerView) -> UserView {
        UserView {
            id: self.id.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            name: self.name(),
            email: self.email.clone(),
            photo: self.photo.clone(),
            locale: self.locale.clone(),
            role: self.role.clone(),
            created_at: self.created_at,
            sites: sites.to_vec(),
            entity: owner,
            status: self.status.clone(),
            suspended: self.suspended,
        }
    }

    /// The user as a site lists it; `owner` without its package.
    pub fn site_view(&self, owner: OwnerView) -> SiteUserView {
        SiteUserView {
            id: self.id.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            name: self.name(),
            email: self.email.clone(),
            locale: self.locale.clone(),
            role: self.role.clone(),
            created_at: self.created_at,
            entity: SiteOwnerView {
                level: owner.level,
                id: owner.id,
                name: owner.name,
            },
            suspended: self.suspended,
        }
    }
}

impl Meeting {
    pub fn is_personal(&self) -> bool {
        self.site.is_some()
    }

    pub fn view(&self, company: &Company, site: Option<&Site>, created_by: NameRef) -> MeetingView {
        let personal = self.is_personal();
        MeetingView {
            id: self.id.clone(),
            company: company.summary(),
            room_id: self.room_id.clone(),
            room_password: self.room_password.clone(),
            stream_camera_two_way: (!personal).then_some(self.stream_camera_two_way),
            duration: self.duration,
            is_appointment: personal.then_some(self.is_appointment),
            room_created: self.room_created,
            room_available_from: self.room_available_from,
            room_available_till: self.room_available_till,
            created_by,
            site: site.map(|s| NameRef {
                id: s.id.clone(),
                name: s.name.clone(),
            }),
            subject: personal.then(|| self.subject.clone()),
            invitation: personal.then(|| self.invitation.clone()),
            participants: self.participants.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        merge_patch(&mut doc, &json!({"list": [1, 2]}));
        assert_eq!(doc["list"], json!([1, 2]));
    }

    #[test]
    fn inputs_refuse_server_made_fields_and_name_the_field() {
        let body = json!({
            "name": "Dealer 1", "id": "45a6ac8a1e14a3c24ab20740",
            "contact": {"first_name": "F", "last_name": "L", "email": "d@x.nl"},
            "reseller": {"id": "334d171d1854dd4c97874ba8"}
        });
        let err = Input::parse(Kind::Dealer, body).unwrap_err();
        assert!(err.reason.contains("unknown field `id`"), "{err}");
        let body = json!({
            "name": "Dealer 1",
            "contact": {"first_name": "F", "last_name": "L", "email": 5},
            "reseller": {"id": "334d171d1854dd4c97874ba8"}
        });
        let err = Input::parse(Kind::Dealer, body).unwrap_err();
        assert_eq!(err.field, "contact.email");
    }

    #[test]
    fn a_missing_field_is_named_with_its_path() {
        let err = Input::parse(Kind::Dealer, json!({})).unwrap_err();
        assert_eq!(err.field, "name");
        let err = Input::parse(
            Kind::Dealer,
            json!({"name": "D", "reseller": {"id": "334d171d1854dd4c97874ba8"}, "contact": {"first_name": "F"}}),
        )
        .unwrap_err();
        assert_eq!(err.field, "contact.last_name");
        assert_eq!(err.reason, "missing field `last_name`");
    }

    #[test]
    fn input_form_round_trips_a_record() {
        let ctx = BuildContext {
            now: Millis(1_600_000_000_000),
            url_rules: UrlRules::default(),
            meeting_base_url: "https://m/",
        };
        let input = Input::parse(
            Kind::Company,
            json!({"name": "C", "contact": {"first_name": "F", "last_name": "L", "email": "c@x.nl"},
                   "dealer": {"id": "334d171d1854dd4c97874ba8"}, "webhook_url": "https://h.example/x"}),
        )
        .unwrap();
        let id = EntityId::generate(ctx.now);
        let rec = input.clone().build(id.clone(), None, &ctx, &|_| None);
        assert_eq!(Input::of(&rec), input);
        // Rebuilding from its own input form changes nothing: a no-op PATCH emits nothing.
        let again = Input::of(&rec).build(id, Some(&rec), &ctx, &|_| None);
        assert_eq!(again, rec);
    }
}
