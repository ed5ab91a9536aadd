//! The operations summary: how many runs succeeded (and of those, how many partially), failed
//! (by error kind) and were cancelled in a window, per queue and in total. Served as JSON at
//! `GET /v1/ops` (for alerts) and shown at the top of the dashboard's `/ops`.

use std::collections::BTreeMap;

use drove_core::{JobState, Millis};
use drove_store::{OutcomeCount, Store, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// The longest window a summary covers (the stores keep outcomes a day longer).
pub const MAX_WINDOW_MS: i64 = 7 * 86_400_000;

/// Ends of runs in a window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Tally {
    /// Every success, partial or not.
    pub succeeded: i64,
    /// Successes that left some items undone (a subset of `succeeded`).
    pub partial: i64,
    /// Jobs that failed in the window.
    pub failed: i64,
    /// Jobs cancelled in the window, including those cancelled before they ran.
    pub cancelled: i64,
    /// Failures by their error kind (retryable, permanent, throttled, timeout, lost, transient,
    /// dependency).
    pub failed_by_kind: BTreeMap<String, i64>,
}

impl Tally {
    fn add(&mut self, o: &OutcomeCount) {
        match o.state {
            JobState::Succeeded => {
                self.succeeded += o.n;
                if o.partial {
                    self.partial += o.n;
                }
            }
            JobState::Failed => {
                self.failed += o.n;
                let kind = o.error_kind.map_or("unknown", |k| k.as_str());
                *self.failed_by_kind.entry(kind.to_owned()).or_insert(0) += o.n;
            }
            JobState::Cancelled => self.cancelled += o.n,
            _ => {}
        }
    }

    /// "25 succeeded (5 partial) · 5 failed · 1 cancelled": each number next to its word.
    pub fn sentence(&self) -> String {
        let mut s = format!("{} succeeded", self.succeeded);
        if self.partial > 0 {
            s.push_str(&format!(" ({} partial)", self.partial));
        }
        s.push_str(&format!(" · {} failed", self.failed));
        if self.cancelled > 0 {
            s.push_str(&format!(" · {} cancelled", self.cancelled));
        }
        s
    }
}

/// One queue's ends of runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueTally {
    pub name: String,
    #[serde(flatten)]
    pub tally: Tally,
}

/// `GET /v1/ops`
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpsSummary {
    /// The window as asked (`1h`, `24h`, `7d`, ...).
    pub window: String,
    /// Its start (to the minute).
    #[schema(value_type = String)]
    pub since: Millis,
    pub totals: Tally,
    /// Queues with at least one end in the window, by name.
    pub queues: Vec<QueueTally>,
}

/// A window: `N` followed by `m`, `h` or `d`, at most 7 days.
pub fn parse_window(text: &str) -> Option<i64> {
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok().filter(|n| *n > 0)?;
    let ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(n.checked_mul(ms)?).filter(|w| *w <= MAX_WINDOW_MS)
}

/// Sums the outcomes of `counts` into totals and per-queue tallies.
pub fn tally(window: &str, since: Millis, counts: &[OutcomeCount]) -> OpsSummary {
    let mut totals = Tally::default();
    let mut queues: BTreeMap<&str, Tally> = BTreeMap::new();
    for o in counts {
        totals.add(o);
        queues.entry(o.queue.as_str()).or_default().add(o);
    }
    OpsSummary {
        window: window.to_owned(),
        since,
        totals,
        queues: queues.into_iter().map(|(name, tally)| QueueTally { name: name.to_owned(), tally }).collect(),
    }
}

/// The summary of the last `window_ms` before `now`.
pub async fn summary(
    store: &dyn Store,
    window: &str,
    window_ms: i64,
    now: Millis,
) -> Result<OpsSummary, StoreError> {
    let since = Millis(now.minus_ms(window_ms).0.div_euclid(60_000) * 60_000);
    let counts = store.outcomes(since).await?;
    Ok(tally(window, since, &counts))
}

#[cfg(test)]
mod tests {
    use drove_core::ErrorKind;

    use super::*;

    fn o(queue: &str, state: JobState, partial: bool, kind: Option<ErrorKind>, n: i64) -> OutcomeCount {
        OutcomeCount { queue: queue.into(), state, partial, error_kind: kind, n }
    }

    #[test]
    fn twenty_five_succeeded_five_partial_five_failed() {
        let counts = [
            o("a", JobState::Succeeded, false, None, 20),
            o("a", JobState::Succeeded, true, None, 5),
            o("a", JobState::Failed, false, Some(ErrorKind::Permanent), 3),
            o("b", JobState::Failed, false, Some(ErrorKind::Lost), 2),
        ];
        let s = tally("24h", Millis(0), &counts);
        assert_eq!(s.totals.sentence(), "25 succeeded (5 partial) · 5 failed");
        assert_eq!(s.totals.failed_by_kind.get("permanent"), Some(&3));
        assert_eq!(s.queues.len(), 2);
        assert_eq!(s.queues[1].tally.sentence(), "0 succeeded · 2 failed");
    }

    #[test]
    fn windows_are_minutes_hours_or_days_up_to_a_week() {
        assert_eq!(parse_window("24h"), Some(86_400_000));
        assert_eq!(parse_window("90m"), Some(5_400_000));
        assert_eq!(parse_window("7d"), Some(MAX_WINDOW_MS));
        for bad in ["8d", "0h", "h", "24", "1w", "-1h", "1.5h", ""] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
    }
}
