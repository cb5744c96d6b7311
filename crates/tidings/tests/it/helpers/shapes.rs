//! What a webhook must look like, as assertions: which levels it went to, its envelope, and
//! the shapes of the seed's examples (`tests/it/fixtures/seed_*.json`) its data follows.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use super::tree::Level;

/// `(level type, level id, url)` of a webhook, the tuple routing assertions compare.
pub type Routed = (String, String, String);

pub fn routed(w: &Value) -> Routed {
    (
        w["level"]["type"].as_str().expect("level.type").to_owned(),
        w["level"]["id"].as_str().expect("level.id").to_owned(),
        w["url"].as_str().expect("url").to_owned(),
    )
}

/// Asserts `webhooks` are the webhooks of one event of type `event_type` and go to exactly
/// the `expected` levels with those URL snapshots.
pub fn assert_routed(what: &str, webhooks: &[Value], event_type: &str, expected: &[&Level]) {
    let got: BTreeSet<Routed> = webhooks.iter().map(routed).collect();
    let want: BTreeSet<Routed> = expected.iter().map(|l| l.routed()).collect();
    assert_eq!(
        got, want,
        "{what}: {event_type} went to the wrong levels; webhooks: {webhooks:#?}"
    );
    assert_eq!(
        webhooks.len(),
        expected.len(),
        "{what}: one webhook per level"
    );
    for w in webhooks {
        assert_eq!(w["type"], event_type, "{what}: {w:#}");
        assert_eq!(w["payload"]["type"], event_type, "{what}: {w:#}");
    }
    let events: BTreeSet<&str> = webhooks
        .iter()
        .map(|w| w["event_id"].as_str().unwrap())
        .collect();
    assert!(
        events.len() <= 1,
        "{what}: the webhooks come from more than one event: {events:?}"
    );
}

/// Compares the shape of `actual` with `expected`: the same keys in every object, recursively;
/// each element of an array of objects has every key any element of the seed's array has
/// (a seed participant without `phone` and another with it: every participant has `phone`);
/// scalars of the same JSON type, or `null` (no value set). Arrays must not be empty (so
/// there is something to compare); an empty array of scalars (`sessions: []`) fits. Returns
/// every difference as `path: what`.
pub fn shape_diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_at("data", expected, actual, false, &mut out);
    out
}

/// [`shape_diff`] for sparse entities: an empty array of objects fits too (a site with no
/// users, a meeting with no participants).
pub fn key_diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_at("data", expected, actual, true, &mut out);
    out
}

/// A seed example's `data` with the level settings every level may carry (`webhook_url`,
/// `notification_contact`; the seed shows each on some levels only) added where missing.
pub fn seed_data(name: &str) -> Value {
    let mut data = seed(name)["data"].clone();
    if matches!(name, "dealer" | "company" | "site") {
        let d = data.as_object_mut().expect("an object");
        d.entry("webhook_url")
            .or_insert(json!("https://myserver.com/send/webhook/here"));
        d.entry("notification_contact")
            .or_insert(json!({"email": "notify@weseedo.nl"}));
    }
    data
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The union of the seed's array elements: every key any element has, merged recursively.
fn union_of(elements: &[Value]) -> Value {
    let mut merged = Value::Null;
    for e in elements {
        merge_into(&mut merged, e);
    }
    merged
}

fn merge_into(into: &mut Value, v: &Value) {
    match (into, v) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, bv) in b {
                merge_into(a.entry(k.clone()).or_insert(Value::Null), bv);
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b.iter().cloned()),
        (slot @ Value::Null, v) => *slot = v.clone(),
        _ => {}
    }
}

fn diff_at(path: &str, expected: &Value, actual: &Value, sparse: bool, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let ek: BTreeSet<&String> = e.keys().collect();
            let ak: BTreeSet<&String> = a.keys().collect();
            for k in ek.difference(&ak) {
                out.push(format!("{path}.{k}: missing"));
            }
            for k in ak.difference(&ek) {
                out.push(format!("{path}.{k}: not in the seed"));
            }
            for k in ek.intersection(&ak) {
                diff_at(&format!("{path}.{k}"), &e[*k], &a[*k], sparse, out);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            let objects = e.iter().any(|v| v.is_object() || v.is_array());
            if !objects {
                let types: BTreeSet<&str> = e.iter().map(kind_of).collect();
                for (i, v) in a.iter().enumerate() {
                    if !types.contains(kind_of(v)) {
                        out.push(format!(
                            "{path}[{i}]: a {}, the seed has {types:?}",
                            kind_of(v)
                        ));
                    }
                }
                return;
            }
            if a.is_empty() && !sparse {
                out.push(format!("{path}: empty, the seed has {} elements", e.len()));
                return;
            }
            let element = union_of(e);
            for (i, v) in a.iter().enumerate() {
                diff_at(&format!("{path}[{i}]"), &element, v, sparse, out);
            }
        }
        // No value set: `null` where the seed shows a value (never for a list).
        (e, Value::Null) if !e.is_array() => {}
        (e, a) if kind_of(e) != kind_of(a) => {
            out.push(format!(
                "{path}: a {}, the seed has a {}",
                kind_of(a),
                kind_of(e)
            ));
        }
        _ => {}
    }
}

/// A seed example from `tests/it/fixtures/seed_{name}.json`.
pub fn seed(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(format!("seed_{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Asserts the envelope of a webhook's payload: exactly `id, created, attempt, type, data`,
/// a 24-hex id equal to the webhook's, the seed's timestamp format, and the attempt number:
/// 1 before any attempt was made. (The dispatcher runs beside these tests and the tests'
/// URLs are unreachable, so a webhook may already have failed its first attempt; the API
/// then shows the body of the next one.)
pub fn assert_envelope(webhook: &Value) {
    let p = &webhook["payload"];
    let keys: BTreeSet<&str> = p
        .as_object()
        .expect("payload is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["id", "created", "attempt", "type", "data"]),
        "{p:#}"
    );
    let id = p["id"].as_str().expect("payload.id is a string");
    assert!(is_id(id), "payload.id {id:?} is not 24 lowercase hex");
    assert_eq!(p["id"], webhook["id"], "payload.id is the webhook's id");
    let created = p["created"].as_str().expect("payload.created is a string");
    assert!(
        is_seed_timestamp(created),
        "payload.created {created:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ"
    );
    let made = webhook["attempt_count"].as_u64().expect("attempt_count");
    let next = match webhook["status"].as_str() {
        Some("pending") => made + 1,
        _ => made.max(1),
    };
    assert_eq!(p["attempt"], json!(next), "{webhook:#}");
    if made == 0 {
        assert_eq!(
            p["attempt"],
            json!(1),
            "the first attempt is attempt 1: {p:#}"
        );
    }
    assert_eq!(p["type"], webhook["type"]);
}

/// 24 lowercase hex characters.
pub fn is_id(s: &str) -> bool {
    s.len() == 24
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`
pub fn is_seed_timestamp(s: &str) -> bool {
    const PATTERN: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    s.len() == PATTERN.len()
        && s.bytes().zip(PATTERN).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            other => c == *other,
        })
}
