//! Time as Drove stores it: whole milliseconds since the Unix epoch, UTC.
//!
//! Every store call takes `now: Millis` from its caller, so tests control time exactly. This
//! crate reads no clock: the engine does (`drove_engine::now`), and tests pass their own.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub i64);

impl Millis {
    /// The instant `t` of a clock the caller read, in whole milliseconds (saturating).
    pub fn from_system_time(t: std::time::SystemTime) -> Millis {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Millis(i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms)),
        }
    }

    pub fn plus_ms(self, ms: i64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    pub fn minus_ms(self, ms: i64) -> Millis {
        Millis(self.0.saturating_sub(ms))
    }

    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn since(self, earlier: Millis) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// RFC 3339 with millisecond precision and a `Z` offset, e.g. `2026-11-23T13:33:05.120Z`.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => {
                let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
                let (h, mi, s, ms) = (t.hour(), t.minute(), t.second(), t.millisecond());
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
            }
            // Out of the representable range: only reachable with absurd stored values.
            Err(_) => "9999-12-31T23:59:59.999Z".to_owned(),
        }
    }

    /// Parses RFC 3339 (any offset); `None` when the text is not a valid timestamp.
    pub fn parse_rfc3339(text: &str) -> Option<Millis> {
        let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        Some(Millis((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Millis::parse_rfc3339(&text).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_milliseconds() {
        let t = Millis(1_795_000_000_123);
        let text = t.to_rfc3339();
        assert_eq!(text, "2026-11-18T11:06:40.123Z");
        assert_eq!(Millis::parse_rfc3339(&text), Some(t));
    }

    #[test]
    fn rfc3339_accepts_offsets() {
        let a = Millis::parse_rfc3339("2026-11-23T14:00:00+01:00").unwrap();
        let b = Millis::parse_rfc3339("2026-11-23T13:00:00Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(Millis::parse_rfc3339("yesterday"), None);
    }
}
