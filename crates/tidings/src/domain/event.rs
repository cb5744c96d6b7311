//! The kinds of entity, the four receiving levels, and the 22 event types of the seed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every kind of entity Tidings stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Reseller,
    Dealer,
    Company,
    Site,
    User,
    Meeting,
    Package,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Reseller,
        Kind::Dealer,
        Kind::Company,
        Kind::Site,
        Kind::User,
        Kind::Meeting,
        Kind::Package,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Reseller => "reseller",
            Kind::Dealer => "dealer",
            Kind::Company => "company",
            Kind::Site => "site",
            Kind::User => "user",
            Kind::Meeting => "meeting",
            Kind::Package => "package",
        }
    }

    /// The level this kind is, if it is one of the four levels that can have a webhook URL.
    pub fn level(self) -> Option<Level> {
        match self {
            Kind::Reseller => Some(Level::Reseller),
            Kind::Dealer => Some(Level::Dealer),
            Kind::Company => Some(Level::Company),
            Kind::Site => Some(Level::Site),
            _ => None,
        }
    }
}

/// The one of `all` that `name` spells `s`; the error calls it an unknown `what`.
fn by_name<T: Copy, const N: usize>(
    all: [T; N],
    name: fn(T) -> &'static str,
    s: &str,
    what: &str,
) -> Result<T, String> {
    all.into_iter()
        .find(|t| name(*t) == s)
        .ok_or_else(|| format!("unknown {what} `{s}`"))
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        by_name(Kind::ALL, Kind::as_str, s, "kind")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level of the hierarchy: it may set a `webhook_url` and receives events about what is
/// strictly below it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Reseller,
    Dealer,
    Company,
    Site,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Reseller, Level::Dealer, Level::Company, Level::Site];

    pub fn kind(self) -> Kind {
        match self {
            Level::Reseller => Kind::Reseller,
            Level::Dealer => Kind::Dealer,
            Level::Company => Kind::Company,
            Level::Site => Kind::Site,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.kind().as_str()
    }

    /// The seed's level table: which kinds of entity this level receives events about.
    pub fn receives_events_about(self, subject: Kind) -> bool {
        use Kind::*;
        match self {
            Level::Reseller => matches!(subject, Dealer | Company | User | Site | Meeting),
            Level::Dealer => matches!(subject, Company | User | Site | Meeting),
            Level::Company => matches!(subject, User | Site | Meeting),
            Level::Site => matches!(subject, Meeting),
        }
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::from_str(s)?
            .level()
            .ok_or_else(|| format!("`{s}` is not a level (reseller, dealer, company, site)"))
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to the subject of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Created,
    Changed,
    Deleted,
    /// One of the seven meeting moments (start, restart, end, takeover, wait, decline, forward).
    Moment,
}

macro_rules! event_types {
    ($($variant:ident => $name:literal, $kind:ident, $action:ident;)*) => {
        /// The 22 event types of the seed's table, spelled as on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum EventType {
            $( #[serde(rename = $name)] $variant, )*
        }

        impl EventType {
            pub const ALL: [EventType; 22] = [$(EventType::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name,)* }
            }

            /// The kind of entity the event is about.
            pub fn subject(self) -> Kind {
                match self { $(EventType::$variant => Kind::$kind,)* }
            }

            pub fn action(self) -> Action {
                match self { $(EventType::$variant => Action::$action,)* }
            }
        }
    };
}

event_types! {
    MeetingCreated => "MEETING_CREATED", Meeting, Created;
    MeetingStarted => "MEETING_STARTED", Meeting, Moment;
    MeetingRestarted => "MEETING_RESTARTED", Meeting, Moment;
    MeetingEnded => "MEETING_ENDED", Meeting, Moment;
    MeetingChanged => "MEETING_CHANGED", Meeting, Changed;
    MeetingTakeover => "MEETING_TAKEOVER", Meeting, Moment;
    MeetingWait => "MEETING_WAIT", Meeting, Moment;
    MeetingDeclined => "MEETING_DECLINED", Meeting, Moment;
    MeetingForwarded => "MEETING_FORWARDED", Meeting, Moment;
    MeetingDeleted => "MEETING_DELETED", Meeting, Deleted;
    UserCreated => "USER_CREATED", User, Created;
    UserChanged => "USER_CHANGED", User, Changed;
    UserDeleted => "USER_DELETED", User, Deleted;
    SiteCreated => "SITE_CREATED", Site, Created;
    SiteChanged => "SITE_CHANGED", Site, Changed;
    SiteDeleted => "SITE_DELETED", Site, Deleted;
    CompanyCreated => "COMPANY_CREATED", Company, Created;
    CompanyChanged => "COMPANY_CHANGED", Company, Changed;
    CompanyDeleted => "COMPANY_DELETED", Company, Deleted;
    DealerCreated => "DEALER_CREATED", Dealer, Created;
    DealerChanged => "DEALER_CHANGED", Dealer, Changed;
    DealerDeleted => "DEALER_DELETED", Dealer, Deleted;
}

impl EventType {
    /// The event for a create, change or delete of `kind`, if that kind emits one
    /// (resellers and packages emit none).
    pub fn for_action(kind: Kind, action: Action) -> Option<EventType> {
        EventType::ALL
            .into_iter()
            .find(|t| t.subject() == kind && t.action() == action)
    }
}

impl FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        by_name(EventType::ALL, EventType::as_str, s, "event type")
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_exactly_the_seeds_22_types_with_unique_names() {
        let names: std::collections::HashSet<_> =
            EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names.len(), 22);
        assert!(names.contains("MEETING_TAKEOVER"));
        assert!(!names.contains("MEETING_TAKEN"));
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
    }

    #[test]
    fn resellers_and_packages_emit_no_events() {
        for action in [Action::Created, Action::Changed, Action::Deleted] {
            assert_eq!(EventType::for_action(Kind::Reseller, action), None);
            assert_eq!(EventType::for_action(Kind::Package, action), None);
        }
        assert_eq!(
            EventType::for_action(Kind::Site, Action::Changed),
            Some(EventType::SiteChanged)
        );
    }
}
