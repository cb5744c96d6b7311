//! The webhook body: `{"id", "created", "attempt", "type", "data"}` (docs/contract.md#envelope).
//!
//! `data` was serialized once, when the event happened; each attempt only splices it into a
//! new envelope, so an attempt costs one string build, not a re-serialization of the entity.

use super::{EntityId, EventType, Millis};

/// The body of attempt `attempt` of webhook `id`. `data` must be the JSON stored with the
/// event (it is inserted verbatim).
pub fn body(
    id: &EntityId,
    created: Millis,
    attempt: u32,
    event_type: EventType,
    data: &str,
) -> String {
    let created = created.to_rfc3339();
    let mut s = String::with_capacity(data.len() + 96);
    s.push_str("{\"id\":\"");
    s.push_str(id.as_str());
    s.push_str("\",\"created\":\"");
    s.push_str(&created);
    s.push_str("\",\"attempt\":");
    s.push_str(itoa_u32(attempt).as_str());
    s.push_str(",\"type\":\"");
    s.push_str(event_type.as_str());
    s.push_str("\",\"data\":");
    s.push_str(data);
    s.push('}');
    s
}

fn itoa_u32(n: u32) -> String {
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_envelope_has_the_seeds_keys_in_order() {
        let id = EntityId::parse("26edf51b5ed353431566fdf1").unwrap();
        let b = body(
            &id,
            Millis(1_594_816_394_000),
            3,
            EventType::DealerDeleted,
            r#"{"id":"45a6ac8a1e14a3c24ab20740"}"#,
        );
        assert_eq!(
            b,
            r#"{"id":"26edf51b5ed353431566fdf1","created":"2020-07-15T12:33:14.000Z","attempt":3,"type":"DEALER_DELETED","data":{"id":"45a6ac8a1e14a3c24ab20740"}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["data"], json!({"id": "45a6ac8a1e14a3c24ab20740"}));
    }
}
