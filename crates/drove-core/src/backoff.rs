//! Retry backoff: exponential with full jitter and a cap.
//!
//! Full jitter (`U(0, min(cap, base * 2^(n-1)))`) does the least total work and keeps retrying
//! clients from moving in step (AWS, "Exponential backoff and jitter").

use crate::queue::Backoff;

/// The delay before retry number `attempt` (the attempt that just failed, from 1), given a
/// uniform random `jitter` in `[0, 1)` supplied by the caller.
pub fn retry_delay_ms(backoff: Backoff, attempt: i64, jitter: f64) -> i64 {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 62)).unwrap_or(62);
    let ceiling = backoff.base_ms.saturating_mul(1_i64.checked_shl(exp).unwrap_or(i64::MAX));
    let ceiling = if ceiling < 0 { i64::MAX } else { ceiling }.min(backoff.max_ms).max(0);
    let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    (ceiling as f64 * jitter) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff { base_ms: 100, max_ms: 10_000 };

    #[test]
    fn delay_grows_exponentially_up_to_the_cap() {
        assert_eq!(retry_delay_ms(B, 1, 0.999_999), 99);
        assert_eq!(retry_delay_ms(B, 2, 0.999_999), 199);
        assert_eq!(retry_delay_ms(B, 4, 0.5), 400);
        assert_eq!(retry_delay_ms(B, 30, 0.5), 5_000);
        assert_eq!(retry_delay_ms(B, i64::MAX, 0.5), 5_000);
    }

    #[test]
    fn jitter_spans_zero_to_the_ceiling() {
        assert_eq!(retry_delay_ms(B, 3, 0.0), 0);
        for n in 1..80 {
            for j in [0.0, 0.3, 0.99] {
                let d = retry_delay_ms(B, n, j);
                assert!((0..=B.max_ms).contains(&d), "attempt {n} jitter {j}: {d}");
            }
        }
        assert_eq!(retry_delay_ms(B, 2, f64::NAN), 0);
    }
}
