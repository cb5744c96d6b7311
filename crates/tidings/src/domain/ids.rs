//! Identifiers and timestamps in the seed's wire formats.
//!
//! Every identifier is 24 lowercase hex characters; every timestamp is UTC with millisecond
//! precision and a `Z` suffix. Nothing here touches I/O.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// A 24-character lowercase hex identifier (entities, contacts, participants, webhooks).
///
/// The first 12 hex digits are the creation time in milliseconds, so ids sort by creation
/// time: store indexes stay append-mostly and cursor pagination follows creation order.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[0-9a-f]{24}$", example = "5f0ef6fa0c2b4d0e8a1b2c3d")]
pub struct EntityId(String);

impl EntityId {
    /// Makes a new id for something created at `now`.
    pub fn generate(now: Millis) -> Self {
        let mut random = [0u8; 6];
        rand::thread_rng().fill_bytes(&mut random);
        let millis = (now.0.max(0) as u64) & 0xffff_ffff_ffff;
        EntityId(format!("{millis:012x}{}", hex::encode(random)))
    }

    /// Accepts exactly 24 lowercase hex characters.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 24
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(EntityId(s.to_owned()))
        } else {
            Err(format!("`{s}` is not an id (24 lowercase hex characters)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The millisecond it was made in: its first 12 hex digits.
    pub fn millisecond(&self) -> &str {
        &self.0[..12]
    }
}

impl TryFrom<String> for EntityId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        EntityId::parse(&s)
    }
}

impl From<EntityId> for String {
    fn from(id: EntityId) -> String {
        id.0
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point in time as Unix milliseconds (UTC). Serialized as `2020-07-15T12:33:14.000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

impl Millis {
    /// Formats as the seed does: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn to_rfc3339(self) -> String {
        let nanos = self.0 as i128 * 1_000_000;
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        if !(0..=9999).contains(&t.year()) {
            return format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            );
        }
        // Every payload and view carries a few of these: written into a fixed template
        // rather than through `format!` (≈ 1 % of Tidings' CPU in scenario b).
        let mut out = *b"0000-00-00T00:00:00.000Z";
        for (at, width, value) in [
            (0, 4, t.year() as u32),
            (5, 2, u8::from(t.month()) as u32),
            (8, 2, t.day() as u32),
            (11, 2, t.hour() as u32),
            (14, 2, t.minute() as u32),
            (17, 2, t.second() as u32),
            (20, 3, t.millisecond() as u32),
        ] {
            let mut v = value;
            for digit in out[at..at + width].iter_mut().rev() {
                *digit = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        String::from_utf8(out.to_vec()).expect("digits and ASCII punctuation")
    }

    /// Parses any RFC 3339 timestamp (offsets are converted to UTC, sub-ms digits dropped).
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| format!("`{s}` is not an RFC 3339 timestamp"))?;
        Ok(Millis((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    pub fn plus(self, d: std::time::Duration) -> Self {
        Millis(self.0.saturating_add(d.as_millis() as i64))
    }
}

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Millis::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// Random alphanumeric text of `len` characters (room ids, passwords, participant hashes).
pub fn random_alphanumeric(len: usize) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

/// The id whose 24 hex digits spell `n`: short, readable ids for unit tests.
#[cfg(test)]
pub(crate) fn numbered_id(n: u32) -> EntityId {
    EntityId::parse(&format!("{n:024x}")).expect("24 hex digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_24_lowercase_hex_and_sort_by_time() {
        let a = EntityId::generate(Millis(1_594_816_394_000));
        let b = EntityId::generate(Millis(1_594_816_394_001));
        assert_eq!(a.as_str().len(), 24);
        assert!(EntityId::parse(a.as_str()).is_ok());
        assert!(a < b);
        assert_eq!(a.millisecond(), "01735276f310");
        assert_eq!(
            a.millisecond(),
            EntityId::generate(Millis(1_594_816_394_000)).millisecond()
        );
        assert_ne!(a.millisecond(), b.millisecond());
    }

    #[test]
    fn parse_refuses_the_seeds_non_hex_ids() {
        assert!(EntityId::parse("58h6aa8a0e14a4c24df20760").is_err());
        assert!(EntityId::parse("26EDF51B5ED353431566FDF1").is_err());
        assert!(EntityId::parse("26edf51b5ed353431566fdf").is_err());
        assert!(EntityId::parse("26edf51b5ed353431566fdf1").is_ok());
    }

    #[test]
    fn timestamps_use_the_seed_format() {
        assert_eq!(
            Millis(1_594_816_394_000).to_rfc3339(),
            "2020-07-15T12:33:14.000Z"
        );
        assert_eq!(
            Millis(1_594_816_394_007).to_rfc3339(),
            "2020-07-15T12:33:14.007Z"
        );
        assert_eq!(
            Millis::parse_rfc3339("2020-07-15T14:33:14.007+02:00").unwrap(),
            Millis(1_594_816_394_007)
        );
        assert_eq!(Millis(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            Millis(253_402_300_799_999).to_rfc3339(),
            "9999-12-31T23:59:59.999Z"
        );
    }

    proptest::proptest! {
        /// The template gives what the formatter gave, and parses back to the same instant.
        #[test]
        fn timestamps_format_as_the_formatter_did(ms in -62_135_596_800_000i64..253_402_300_800_000) {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second(),
                t.millisecond()
            );
            proptest::prop_assert_eq!(Millis(ms).to_rfc3339(), expected);
            proptest::prop_assert_eq!(Millis::parse_rfc3339(&Millis(ms).to_rfc3339()), Ok(Millis(ms)));
        }
    }
}
