//! W3C Trace Context as a job keeps it: the `traceparent` its runs descend from and the vendor
//! `tracestate` that travels with it (https://www.w3.org/TR/trace-context/).
//!
//! Only the format is checked here; what a trace means is the exporters' business.

use crate::ValidationError;

/// The longest `tracestate` kept (the W3C recommends propagating at least 512 characters).
pub const MAX_TRACESTATE: usize = 512;

/// A job's trace context: a valid `traceparent`, and the `tracestate` that came with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TraceContext {
    /// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower case.
    pub traceparent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Checks a client's `traceparent` (and `tracestate`), naming `field` (and `state_field`)
    /// when one is not valid.
    pub fn parse(
        field: &str,
        traceparent: &str,
        state_field: &str,
        tracestate: Option<&str>,
    ) -> Result<Self, ValidationError> {
        if !is_traceparent(traceparent) {
            return Err(ValidationError::new(
                field,
                "must be a W3C traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, \
                 lower case, ids not all zero",
            ));
        }
        let tracestate = match tracestate.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) if s.len() > MAX_TRACESTATE => {
                return Err(ValidationError::new(
                    state_field,
                    format!("must be at most {MAX_TRACESTATE} characters, got {}", s.len()),
                ));
            }
            Some(s) if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                return Err(ValidationError::new(state_field, "must be printable ASCII (a W3C tracestate)"));
            }
            Some(s) => Some(s.to_owned()),
        };
        Ok(TraceContext { traceparent: traceparent.to_owned(), tracestate })
    }

    /// The trace id (32 hex digits).
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// The parent span's id (16 hex digits).
    pub fn span_id(&self) -> &str {
        &self.traceparent[36..52]
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.traceparent[53..55], 16).is_ok_and(|f| f & 1 == 1)
    }
}

/// A version-00 `traceparent`: lower-case hex fields of the right lengths, non-zero ids.
pub fn is_traceparent(s: &str) -> bool {
    let b = s.as_bytes();
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    let zero = |r: std::ops::Range<usize>| b[r].iter().all(|c| *c == b'0');
    b.len() == 55
        && s.starts_with("00-")
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(3..35)
        && hex(36..52)
        && hex(53..55)
        && !zero(3..35)
        && !zero(36..52)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_kept_and_read() {
        let t =
            TraceContext::parse("traceparent", TP, "tracestate", Some(" rojo=00f067aa0ba902b7 ")).unwrap();
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id(), "00f067aa0ba902b7");
        assert!(t.sampled());
        assert_eq!(t.tracestate.as_deref(), Some("rojo=00f067aa0ba902b7"));
    }

    #[test]
    fn malformed_traceparents_are_refused_naming_the_field() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            let e = TraceContext::parse("jobs[2].traceparent", bad, "tracestate", None).unwrap_err();
            assert_eq!(e.field, "jobs[2].traceparent", "{bad:?}");
        }
        let long = "a=".to_owned() + &"b".repeat(MAX_TRACESTATE);
        assert_eq!(TraceContext::parse("tp", TP, "ts", Some(&long)).unwrap_err().field, "ts");
        assert_eq!(TraceContext::parse("tp", TP, "ts", Some("a=\u{e9}")).unwrap_err().field, "ts");
    }
}
