//! Inputs: what clients POST (and, merged with a patch, what they PATCH), their checks, and
//! how a stored record is built from one.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::*;
use crate::domain::event::{Kind, Level};
use crate::domain::ids::{random_alphanumeric, EntityId, Millis};
use crate::domain::validate::{self, FieldError, UrlRules, MAX_LONG_TEXT, MAX_TEXT};

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
            Input::Reseller(ResellerInput {
                name,
                contact,
                webhook_url,
                notification_contact,
                ..
            })
            | Input::Dealer(DealerInput {
                name,
                contact,
                webhook_url,
                notification_contact,
                ..
            })
            | Input::Company(CompanyInput {
                name,
                contact,
                webhook_url,
                notification_contact,
                ..
            }) => {
                validate::name("name", name)?;
                contact.validate("contact")?;
                validate_level_settings(webhook_url, notification_contact, rules)
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

    /// The stored record for this input. `previous` is the record of the same kind it replaces
    /// (a PATCH), whose server-made fields are kept; `lookup` gives referenced users (for agent
    /// participants).
    pub fn build(
        self,
        id: EntityId,
        previous: Option<&Entity>,
        ctx: &BuildContext<'_>,
        users: &dyn Fn(&EntityId) -> Option<User>,
    ) -> Entity {
        // A changed reseller, dealer or company keeps its contact's id.
        let contact = |c: ContactInput| {
            let id = previous
                .and_then(Entity::contact)
                .map(|p| p.id.clone())
                .unwrap_or_else(|| EntityId::generate(ctx.now));
            c.into_contact(id)
        };
        match self {
            Input::Reseller(i) => Entity::Reseller(Reseller {
                id,
                name: i.name,
                contact: contact(i.contact),
                notification_contact: i.notification_contact,
                webhook_url: i.webhook_url,
                suspended: i.suspended,
            }),
            Input::Dealer(i) => Entity::Dealer(Dealer {
                id,
                name: i.name,
                contact: contact(i.contact),
                reseller: i.reseller.id,
                notification_contact: i.notification_contact,
                webhook_url: i.webhook_url,
                suspended: i.suspended,
            }),
            Input::Company(i) => Entity::Company(Company {
                id,
                name: i.name,
                contact: contact(i.contact),
                package: i.package.map(|p| p.id),
                dealer: i.dealer.id,
                notification_contact: i.notification_contact,
                webhook_url: i.webhook_url,
                suspended: i.suspended,
            }),
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
