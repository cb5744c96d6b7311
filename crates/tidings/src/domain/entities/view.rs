//! Views: the seed's payload shapes, built from a record and the records it refers to. API
//! GETs and webhook `data` are both these.

use serde::Serialize;
use utoipa::ToSchema;

use super::*;
use crate::domain::ids::{EntityId, Millis};

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
