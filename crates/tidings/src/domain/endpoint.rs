//! A level's endpoint settings: which event types it wants, whether its webhooks about one
//! subject go in order, whether it is enabled, and which answers count as success.
//!
//! Pure: parsing a `PATCH` body into settings (refusing what the level could never receive),
//! and the success rule the dispatcher applies to every answer. The store keeps the
//! settings; routing ([`super::routing::route`]) and the dispatcher read them.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::{EventType, Level};
use super::validate::FieldError;

/// Which HTTP answers count as a successful attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum SuccessRule {
    /// Only `200` (the seed's rule).
    #[default]
    #[serde(rename = "200")]
    Ok200,
    /// Any `2xx` (the Standard Webhooks rule, for receivers that answer 202 or 204).
    #[serde(rename = "2xx")]
    Any2xx,
}

impl SuccessRule {
    pub fn as_str(self) -> &'static str {
        match self {
            SuccessRule::Ok200 => "200",
            SuccessRule::Any2xx => "2xx",
        }
    }

    /// Whether an answer with this status is a success under the rule.
    pub fn accepts(self, status: u16) -> bool {
        match self {
            SuccessRule::Ok200 => status == 200,
            SuccessRule::Any2xx => (200..300).contains(&status),
        }
    }
}

impl FromStr for SuccessRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "200" => Ok(SuccessRule::Ok200),
            "2xx" => Ok(SuccessRule::Any2xx),
            other => Err(format!(
                "`{other}` is not a success rule (\"200\" or \"2xx\")"
            )),
        }
    }
}

/// The status that disables an endpoint: the receiver says it is gone for good.
pub const GONE: u16 = 410;

/// Why an endpoint was disabled by a `410 Gone` answer to an attempt started `at`.
pub fn gone_reason(at: super::Millis) -> String {
    format!("the receiver answered 410 Gone at {}", at.to_rfc3339())
}

/// A level's endpoint settings as stored. A level without a stored row has the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The event types the level wants; `None`: every type the level table gives it.
    pub event_types: Option<Vec<EventType>>,
    /// Webhooks about one subject are attempted one at a time, in creation order.
    pub ordered: bool,
    pub enabled: bool,
    /// Why the endpoint was disabled (while it is).
    pub disabled_reason: Option<String>,
    pub success: SuccessRule,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint {
            event_types: None,
            ordered: false,
            enabled: true,
            disabled_reason: None,
            success: SuccessRule::Ok200,
        }
    }
}

impl Endpoint {
    /// Whether the level wants webhooks of this type (the level table is applied apart).
    pub fn wants(&self, t: EventType) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|types| types.contains(&t))
    }

    /// The types the level receives: the chosen ones, or all the level table gives it.
    pub fn effective_types(&self, level: Level) -> Vec<EventType> {
        match &self.event_types {
            Some(t) => t.clone(),
            None => receivable(level),
        }
    }

    /// The stored form of `event_types`: comma-separated, in the seed's order.
    pub fn event_types_text(&self) -> Option<String> {
        self.event_types
            .as_ref()
            .map(|t| t.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(","))
    }

    /// Reads the stored form back.
    pub fn parse_event_types_text(s: &str) -> Result<Vec<EventType>, String> {
        if s.is_empty() {
            return Ok(Vec::new());
        }
        s.split(',').map(EventType::from_str).collect()
    }

    /// Applies a `PATCH` body for a level. Every field is optional; unknown fields, a type
    /// the level could never receive, and wrong types are refused with the field named.
    /// Returns the new settings; whether it re-enables or disables is for the caller to see.
    pub fn patched(&self, level: Level, body: &Value) -> Result<Endpoint, FieldError> {
        let Some(fields) = body.as_object() else {
            return Err(FieldError::new("", "a PATCH body must be a JSON object"));
        };
        let mut next = self.clone();
        for (name, value) in fields {
            match name.as_str() {
                "event_types" => {
                    next.event_types = match value {
                        Value::Null => None,
                        Value::Array(items) => Some(parse_types(level, items)?),
                        _ => {
                            return Err(FieldError::new(
                                "event_types",
                                "must be a list of event types, or null for all",
                            ))
                        }
                    }
                }
                "ordered" => {
                    next.ordered = value
                        .as_bool()
                        .ok_or_else(|| FieldError::new("ordered", "must be true or false"))?
                }
                "enabled" => {
                    let enabled = value
                        .as_bool()
                        .ok_or_else(|| FieldError::new("enabled", "must be true or false"))?;
                    if enabled != next.enabled {
                        next.disabled_reason =
                            (!enabled).then(|| "disabled through the API".into());
                    }
                    next.enabled = enabled;
                }
                "success" => {
                    next.success = value
                        .as_str()
                        .ok_or("must be \"200\" or \"2xx\"".to_owned())
                        .and_then(SuccessRule::from_str)
                        .map_err(|e| FieldError::new("success", e))?
                }
                "disabled_reason" | "health" => {
                    return Err(FieldError::new(
                        name.as_str(),
                        "is read only (set `enabled` instead)",
                    ))
                }
                other => {
                    return Err(FieldError::new(
                        other,
                        "unknown field (event_types, ordered, enabled, success)",
                    ))
                }
            }
        }
        Ok(next)
    }
}

/// Every event type the level table gives `level`, in the seed's order.
pub fn receivable(level: Level) -> Vec<EventType> {
    EventType::ALL
        .into_iter()
        .filter(|t| level.receives_events_about(t.subject()))
        .collect()
}

fn parse_types(level: Level, items: &[Value]) -> Result<Vec<EventType>, FieldError> {
    let mut types = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("event_types[{i}]");
        let name = item
            .as_str()
            .ok_or_else(|| FieldError::new(&field, "must be an event type name"))?;
        let t = EventType::from_str(name)
            .map_err(|_| FieldError::new(&field, format!("`{name}` is not an event type")))?;
        if !level.receives_events_about(t.subject()) {
            return Err(FieldError::new(
                &field,
                format!(
                    "a {level} never receives {name}: it receives events about {}",
                    receivable_subjects(level)
                ),
            ));
        }
        if !types.contains(&t) {
            types.push(t);
        }
    }
    // Stored and shown in the seed's order, whatever order the request gave.
    types.sort_by_key(|t| EventType::ALL.iter().position(|a| a == t));
    Ok(types)
}

fn receivable_subjects(level: Level) -> &'static str {
    match level {
        Level::Reseller => "dealers, companies, users, sites and meetings",
        Level::Dealer => "companies, users, sites and meetings",
        Level::Company => "users, sites and meetings",
        Level::Site => "meetings",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn success_rules_table() {
        for (status, ok200, any2xx) in [
            (200, true, true),
            (201, false, true),
            (202, false, true),
            (204, false, true),
            (299, false, true),
            (199, false, false),
            (300, false, false),
            (301, false, false),
            (410, false, false),
            (500, false, false),
        ] {
            assert_eq!(
                SuccessRule::Ok200.accepts(status),
                ok200,
                "{status} under 200"
            );
            assert_eq!(
                SuccessRule::Any2xx.accepts(status),
                any2xx,
                "{status} under 2xx"
            );
        }
    }

    #[test]
    fn defaults_want_everything_the_level_table_gives() {
        let e = Endpoint::default();
        assert!(e.enabled && !e.ordered && e.success == SuccessRule::Ok200);
        assert!(EventType::ALL.into_iter().all(|t| e.wants(t)));
        assert_eq!(
            e.effective_types(Level::Site).len(),
            10,
            "a site: the 10 meeting types"
        );
        assert_eq!(e.effective_types(Level::Company).len(), 16);
        assert_eq!(e.effective_types(Level::Dealer).len(), 19);
        assert_eq!(e.effective_types(Level::Reseller).len(), 22);
    }

    #[test]
    fn a_patch_sets_types_in_the_seeds_order_without_duplicates() {
        let e = Endpoint::default()
            .patched(
                Level::Company,
                &json!({"event_types": ["MEETING_ENDED", "USER_CREATED", "MEETING_ENDED"], "ordered": true, "success": "2xx"}),
            )
            .unwrap();
        assert_eq!(
            e.event_types,
            Some(vec![EventType::MeetingEnded, EventType::UserCreated])
        );
        assert!(e.ordered);
        assert_eq!(e.success, SuccessRule::Any2xx);
        assert!(e.wants(EventType::MeetingEnded) && !e.wants(EventType::MeetingStarted));
        assert_eq!(
            e.event_types_text().as_deref(),
            Some("MEETING_ENDED,USER_CREATED")
        );
        assert_eq!(
            Endpoint::parse_event_types_text("MEETING_ENDED,USER_CREATED").unwrap(),
            vec![EventType::MeetingEnded, EventType::UserCreated]
        );
        let back = e
            .patched(Level::Company, &json!({"event_types": null}))
            .unwrap();
        assert_eq!(back.event_types, None);
    }

    #[test]
    fn a_type_the_level_never_receives_or_an_unknown_one_names_the_field() {
        let e = Endpoint::default();
        let err = e
            .patched(
                Level::Site,
                &json!({"event_types": ["MEETING_ENDED", "USER_CREATED"]}),
            )
            .unwrap_err();
        assert_eq!(err.field, "event_types[1]");
        assert!(
            err.reason.contains("never receives USER_CREATED"),
            "{}",
            err.reason
        );
        let err = e
            .patched(Level::Company, &json!({"event_types": ["COMPANY_CHANGED"]}))
            .unwrap_err();
        assert_eq!(
            err.field, "event_types[0]",
            "a company never hears about companies"
        );
        let err = e
            .patched(
                Level::Reseller,
                &json!({"event_types": ["MEETING_EXPLODED"]}),
            )
            .unwrap_err();
        assert_eq!(err.field, "event_types[0]");
        assert!(err.reason.contains("not an event type"));
        for (body, field) in [
            (json!({"success": "3xx"}), "success"),
            (json!({"success": 200}), "success"),
            (json!({"ordered": "yes"}), "ordered"),
            (json!({"enabled": 1}), "enabled"),
            (json!({"event_types": "MEETING_ENDED"}), "event_types"),
            (json!({"disabled_reason": "x"}), "disabled_reason"),
            (json!({"health": {}}), "health"),
            (json!({"webhook_url": "https://x"}), "webhook_url"),
        ] {
            assert_eq!(
                e.patched(Level::Reseller, &body).unwrap_err().field,
                field,
                "{body}"
            );
        }
    }

    #[test]
    fn enabling_clears_the_reason_and_disabling_gives_one() {
        let disabled = Endpoint {
            enabled: false,
            disabled_reason: Some("HTTP 410 Gone".into()),
            ..Endpoint::default()
        };
        let on = disabled
            .patched(Level::Dealer, &json!({"enabled": true}))
            .unwrap();
        assert!(on.enabled);
        assert_eq!(on.disabled_reason, None);
        let off = on
            .patched(Level::Dealer, &json!({"enabled": false}))
            .unwrap();
        assert_eq!(
            off.disabled_reason.as_deref(),
            Some("disabled through the API")
        );
        let same = disabled
            .patched(Level::Dealer, &json!({"enabled": false}))
            .unwrap();
        assert_eq!(
            same.disabled_reason.as_deref(),
            Some("HTTP 410 Gone"),
            "kept"
        );
    }
}
