//! Durations in query strings (`?wait=`): `N`, `Nms`, `Ns` or `Nm`; bare `N` is seconds.

use std::time::Duration;

/// The longest `?wait=` a request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// Not of the form `N`, `Nms`, `Ns` or `Nm` (a 400).
    #[error("must be N, Nms, Ns or Nm (bare N is seconds)")]
    Malformed,
    /// Longer than [`MAX_WAIT`] (a 422).
    #[error("must be at most 60 s")]
    TooLong,
}

/// Parses a duration written `N` followed by a unit: `ms`, `s`, `m`, `h` or `d` (`@every 30s`).
/// `None` for anything else, or past `i64` milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let unit_ms: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.parse::<i64>().ok()?.checked_mul(unit_ms)
}

/// Parses a `?wait=` value.
pub fn parse_wait(text: &str) -> Result<Duration, WaitError> {
    let (digits, unit_ms): (&str, u64) = if let Some(d) = text.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = text.strip_suffix('s') {
        (d, 1_000)
    } else if let Some(d) = text.strip_suffix('m') {
        (d, 60_000)
    } else {
        (text, 1_000)
    };
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WaitError::Malformed);
    }
    let n: u64 = digits.parse().map_err(|_| WaitError::Malformed)?;
    let ms = n.checked_mul(unit_ms).ok_or(WaitError::TooLong)?;
    let d = Duration::from_millis(ms);
    if d > MAX_WAIT { Err(WaitError::TooLong) } else { Ok(d) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration_ms("30s"), Some(30_000));
        assert_eq!(parse_duration_ms("1500ms"), Some(1_500));
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("1d"), Some(86_400_000));
        for bad in ["", "30", "s", "3x", "-1s", "1.5s", "9999999999999999d"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn accepts_the_four_forms() {
        assert_eq!(parse_wait("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_wait("0"), Ok(Duration::ZERO));
        assert_eq!(parse_wait("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("1m"), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn rejects_the_rest() {
        for bad in ["", "s", "-1", "1.5", "1h", "5 s", "ms", "1e3", "999999999999999999999"] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_wait("61"), Err(WaitError::TooLong));
        assert_eq!(parse_wait("2m"), Err(WaitError::TooLong));
        assert_eq!(parse_wait("60001ms"), Err(WaitError::TooLong));
    }
}
