//! The one error every validation rule returns: which field, and what is wrong with it.

/// An invalid value, naming the field as the client wrote it (`queue`, `jobs[3].key`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
    pub kind: ValidationKind,
}

/// What is wrong with the value: the HTTP layer answers 422 for one and 413 for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationKind {
    /// Not a value the field takes.
    Invalid,
    /// Larger than the server's limit for its size.
    TooLarge,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError { field: field.into(), message: message.into(), kind: ValidationKind::Invalid }
    }

    /// `field` is larger than `limit` bytes.
    pub fn too_large(field: impl Into<String>, limit: usize) -> Self {
        ValidationError {
            field: field.into(),
            message: format!("is larger than the limit of {limit} bytes"),
            kind: ValidationKind::TooLarge,
        }
    }

    /// The same error, its field prefixed (`key` inside entry 3 becomes `jobs[3].key`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// `value` must be at least `min` (docs/API.md "Bounds").
pub fn at_least(field: &str, value: i64, min: i64) -> Result<i64, ValidationError> {
    if value < min {
        Err(ValidationError::new(field, format!("must be at least {min}, got {value}")))
    } else {
        Ok(value)
    }
}

/// `value` must lie in `min..=max`.
pub fn within(field: &str, value: i64, min: i64, max: i64) -> Result<i64, ValidationError> {
    if value < min || value > max {
        Err(ValidationError::new(field, format!("must be between {min} and {max}, got {value}")))
    } else {
        Ok(value)
    }
}

/// The longest duration any request or setting may name, in ms (10 years): delays, timeouts,
/// reuse windows, backoff, retry-after, rate periods. Bounded so that `now` plus any of them,
/// and every product the flow arithmetic forms, stays far inside `i64` in every store.
pub const MAX_DURATION_MS: i64 = 315_360_000_000;
/// The largest count any request or setting may name: limits, concurrency, attempts, rate
/// limits and bursts.
pub const MAX_COUNT: i64 = 1_000_000_000;
/// The deepest nesting of arrays and objects accepted in a payload, result or checkpoint.
pub const MAX_JSON_DEPTH: usize = 64;

/// A duration of `min..=MAX_DURATION_MS` milliseconds.
pub fn duration_ms(field: &str, value: i64, min: i64) -> Result<i64, ValidationError> {
    within(field, value, min, MAX_DURATION_MS)
}

/// A count of `min..=MAX_COUNT`.
pub fn count(field: &str, value: i64, min: i64) -> Result<i64, ValidationError> {
    within(field, value, min, MAX_COUNT)
}

/// Checks a JSON document a client sent as any JSON (payload, result, checkpoint) for what every
/// consumer can read back: nesting at most [`MAX_JSON_DEPTH`] deep, numbers that fit a double
/// (`1e999` is valid JSON that JavaScript reads as Infinity and Rust refuses), and strings
/// without lone surrogate escapes (`"\ud800"`, which no UTF-8 reader can decode). Walks the
/// text once without building a tree.
pub fn check_json(field: &str, text: &str) -> Result<(), ValidationError> {
    use serde::de::{Deserializer, Error, MapAccess, SeqAccess, Visitor};

    struct Walk {
        depth: usize,
    }

    impl<'de> serde::de::DeserializeSeed<'de> for Walk {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<(), E> {
            if v.is_finite() { Ok(()) } else { Err(E::custom("a number is out of range")) }
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let depth = self.depth + 1;
            if depth > MAX_JSON_DEPTH {
                return Err(A::Error::custom(format!("nests deeper than {MAX_JSON_DEPTH} levels")));
            }
            while seq.next_element_seed(Walk { depth })?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let depth = self.depth + 1;
            if depth > MAX_JSON_DEPTH {
                return Err(A::Error::custom(format!("nests deeper than {MAX_JSON_DEPTH} levels")));
            }
            while map.next_key_seed(Walk { depth })?.is_some() {
                map.next_value_seed(Walk { depth })?;
            }
            Ok(())
        }
    }

    let mut de = serde_json::Deserializer::from_str(text);
    // Our own depth bound is lower than serde_json's recursion limit, so it is the one that
    // speaks; the message names the field and the problem, without serde's positions.
    serde::de::DeserializeSeed::deserialize(Walk { depth: 0 }, &mut de).and_then(|()| de.end()).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.rfind(" at line ").map_or(msg.as_str(), |i| &msg[..i]);
        let msg = if msg.contains("surrogate") || msg.contains("hex escape") {
            "holds a lone surrogate escape (\\ud800-\\udfff without its pair)"
        } else if msg.contains("number out of range") {
            "a number is out of range"
        } else {
            msg
        };
        ValidationError::new(field, format!("must be JSON every reader can decode: {msg}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_check_bounds_depth_numbers_and_strings() {
        assert!(check_json("payload", r#"{"a":[1,2.5,-3e10,"x\u00e9\ud83d\ude00",null,true]}"#).is_ok());
        let deep_ok = format!("{}{}", "[".repeat(MAX_JSON_DEPTH), "]".repeat(MAX_JSON_DEPTH));
        assert!(check_json("payload", &deep_ok).is_ok());
        let too_deep = format!("{}{}", "[".repeat(MAX_JSON_DEPTH + 1), "]".repeat(MAX_JSON_DEPTH + 1));
        let e = check_json("payload", &too_deep).unwrap_err();
        assert_eq!(e.field, "payload");
        assert!(e.message.contains("deeper than 64"), "{}", e.message);
        // 100,000 levels, as in the report: refused, and without a stack overflow.
        let hostile = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(check_json("payload", &hostile).is_err());
        let hostile = "{\"a\":".repeat(100_000);
        assert!(check_json("result", &hostile).is_err());
        assert!(check_json("payload", "1e999").unwrap_err().message.contains("out of range"));
        assert!(check_json("payload", "[-1e400]").is_err());
        let e = check_json("payload", r#""\ud800""#);
        assert!(e.as_ref().is_err_and(|e| e.message.contains("surrogate")), "{e:?}");
        assert!(check_json("payload", r#"{"\udfff": 1}"#).is_err());
    }

    #[test]
    fn bounds_name_the_field() {
        assert!(duration_ms("delay_ms", MAX_DURATION_MS, 0).is_ok());
        assert_eq!(duration_ms("delay_ms", i64::MAX, 0).unwrap_err().field, "delay_ms");
        assert!(count("rate.limit", 9_223_372_036_854_775_807, 1).is_err());
    }
}
