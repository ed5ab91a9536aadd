//! The decisions of a run's end, made once for every store (River's driver seam: the decision
//! is pure code here, each store only applies it with its own SQL).
//!
//! [`end_of_run`] takes what the store read about the run ([`RunFacts`]), how the run ended
//! ([`Ending`]: the worker's outcome, a lost lease, a timeout) and the queue's settings, and says
//! what becomes of the job ([`RunEnd`]): its next state and when it runs again, whether the next
//! run uses an attempt, the error to record, the transient counters, and a scope to hold.

use drove_core::backoff::retry_delay_ms;
use drove_core::queue::QueueConfig;
use drove_core::{ErrorKind, FailKind, JobState, Millis, RawJson, WaitingFor};

use crate::request::Outcome;

/// Default delay of a throttled or snoozed run (docs/API.md: `retry_after_ms` default 1 s).
pub const DEFAULT_RETRY_AFTER_MS: i64 = 1_000;

/// What a store knows about a running job when its run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunFacts {
    pub attempt: i64,
    pub max_attempts: i64,
    pub cancel_requested: bool,
    /// Transient failures since the job last used an attempt.
    pub transient_streak: i64,
    /// Whether the job has a group.
    pub grouped: bool,
    /// Its children not yet ended.
    pub children_pending: i64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy)]
pub enum Ending<'a> {
    /// Its worker said so.
    Worker(&'a Outcome),
    /// Its lease ran out (the worker died or stopped heartbeating).
    Lost,
    /// Its `timeout_ms` passed.
    TimedOut { timeout_ms: i64 },
}

/// A scope a throttled outcome holds until its retry time (only where a rate is set: docs/API.md
/// "Throttled outcomes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The job's group, under `group_rate`.
    Group(Millis),
    /// The queue, under `rate`.
    Queue(Millis),
}

/// What becomes of a job whose run ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub state: JobState,
    /// When it may run again (scheduled or queued); `None` for terminal states.
    pub run_at: Option<Millis>,
    /// The next claim uses no attempt (throttled, snoozed, released, a transient failure within
    /// its budget).
    pub free_run: bool,
    /// The error to record (with `error_at = now`); `None` keeps the last one.
    pub error: Option<(ErrorKind, String)>,
    /// For a success: the result and whether it was partial.
    pub success: Option<(Option<RawJson>, bool)>,
    /// The job's transient streak from now on.
    pub transient_streak: i64,
    /// This run ended in a transient error (the job's `transient_retries` grows by one).
    pub transient: bool,
    pub hold: Option<Hold>,
    /// For `waiting`: what for.
    pub wait_for: Option<WaitingFor>,
    /// The next run is the fan-in (its children have all ended).
    pub fan_in: bool,
}

impl RunEnd {
    fn terminal(state: JobState, error: Option<(ErrorKind, String)>, facts: &RunFacts) -> RunEnd {
        RunEnd {
            state,
            run_at: None,
            free_run: false,
            error,
            success: None,
            transient_streak: facts.transient_streak,
            transient: false,
            hold: None,
            wait_for: None,
            fan_in: false,
        }
    }

    /// Back to wait `delay_ms` (queued at once when 0).
    fn again(
        now: Millis,
        delay_ms: i64,
        free_run: bool,
        error: Option<(ErrorKind, String)>,
        streak: i64,
    ) -> RunEnd {
        RunEnd {
            state: if delay_ms > 0 { JobState::Scheduled } else { JobState::Queued },
            run_at: Some(now.plus_ms(delay_ms)),
            free_run,
            error,
            success: None,
            transient_streak: streak,
            transient: false,
            hold: None,
            wait_for: None,
            fan_in: false,
        }
    }
}

/// The error kind a worker's failure is recorded with.
pub fn error_kind(kind: FailKind) -> ErrorKind {
    match kind {
        FailKind::Retryable | FailKind::Snooze => ErrorKind::Retryable,
        FailKind::Permanent => ErrorKind::Permanent,
        FailKind::Throttled => ErrorKind::Throttled,
        FailKind::Transient => ErrorKind::Transient,
    }
}

/// Decides what becomes of a job whose run ended (see the module's documentation). `jitter` is
/// a uniform random number in `[0, 1)` for the backoffs.
pub fn end_of_run(
    facts: &RunFacts,
    ending: Ending<'_>,
    queue: &QueueConfig,
    now: Millis,
    jitter: f64,
) -> RunEnd {
    // A run that used an attempt failed: back off and retry while attempts remain, else fail.
    let retry_or_fail = |kind: ErrorKind, message: String, transient: bool| {
        let error = Some((kind, message));
        let mut end = if facts.attempt >= facts.max_attempts {
            RunEnd::terminal(JobState::Failed, error, facts)
        } else {
            let delay = retry_delay_ms(queue.backoff(), facts.attempt, jitter);
            RunEnd::again(now, delay, false, error, 0)
        };
        end.transient_streak = 0;
        end.transient = transient;
        end
    };
    match ending {
        Ending::Worker(Outcome::Complete { result, partial }) => RunEnd {
            success: Some((result.clone(), *partial)),
            ..RunEnd::terminal(JobState::Succeeded, None, facts)
        },
        Ending::Worker(Outcome::AwaitChildren { .. }) if facts.cancel_requested => {
            RunEnd::terminal(JobState::Cancelled, None, facts)
        }
        Ending::Worker(Outcome::AwaitChildren { result }) => {
            // The fan-in uses no attempt; it runs once no child is left (at once if none is).
            let mut end = RunEnd::again(now, 0, true, None, facts.transient_streak);
            if facts.children_pending > 0 {
                end.state = JobState::Waiting;
                end.wait_for = Some(WaitingFor::Children);
            } else {
                end.fan_in = true;
            }
            end.success = Some((result.clone(), false));
            end
        }
        Ending::Worker(Outcome::Release) if facts.cancel_requested => {
            RunEnd::terminal(JobState::Cancelled, None, facts)
        }
        Ending::Worker(Outcome::Release) => RunEnd::again(now, 0, true, None, facts.transient_streak),
        Ending::Worker(Outcome::Fail { kind, message, retry_after_ms }) => {
            let recorded = error_kind(*kind);
            if facts.cancel_requested {
                let mut end = RunEnd::terminal(JobState::Cancelled, Some((recorded, message.clone())), facts);
                end.transient = *kind == FailKind::Transient;
                return end;
            }
            match kind {
                FailKind::Permanent => {
                    RunEnd::terminal(JobState::Failed, Some((recorded, message.clone())), facts)
                }
                FailKind::Retryable => retry_or_fail(recorded, message.clone(), false),
                FailKind::Throttled => {
                    let delay = retry_after_ms.unwrap_or(DEFAULT_RETRY_AFTER_MS);
                    let until = now.plus_ms(delay);
                    let mut end = RunEnd::again(
                        now,
                        delay,
                        true,
                        Some((recorded, message.clone())),
                        facts.transient_streak,
                    );
                    end.hold = match (&queue.group_rate, facts.grouped, &queue.rate) {
                        (Some(_), true, _) => Some(Hold::Group(until)),
                        (_, _, Some(_)) => Some(Hold::Queue(until)),
                        // No rate: the job waits its retry-after alone and holds nobody.
                        _ => None,
                    };
                    end
                }
                FailKind::Snooze => RunEnd::again(
                    now,
                    retry_after_ms.unwrap_or(DEFAULT_RETRY_AFTER_MS),
                    true,
                    None,
                    facts.transient_streak,
                ),
                FailKind::Transient => {
                    let budget = queue.transient();
                    if facts.transient_streak < budget.retries {
                        // Within the budget: short full-jitter backoff by the streak, no attempt.
                        let delay = retry_delay_ms(budget.backoff(), facts.transient_streak + 1, jitter);
                        let mut end = RunEnd::again(
                            now,
                            delay,
                            true,
                            Some((recorded, message.clone())),
                            facts.transient_streak + 1,
                        );
                        end.transient = true;
                        end
                    } else {
                        // Past the budget: this failure uses the attempt, like a retryable one.
                        retry_or_fail(recorded, message.clone(), true)
                    }
                }
            }
        }
        Ending::Lost | Ending::TimedOut { .. } => {
            let (kind, message) = match ending {
                Ending::TimedOut { timeout_ms } => {
                    (ErrorKind::Timeout, format!("timed out after {timeout_ms} ms"))
                }
                _ => (ErrorKind::Lost, "the lease expired: the worker stopped heartbeating".to_owned()),
            };
            if facts.cancel_requested {
                return RunEnd::terminal(JobState::Cancelled, Some((kind, message)), facts);
            }
            if kind == ErrorKind::Lost {
                // A dead worker is not the job's fault: it runs again at once, no backoff. The
                // run used its attempt (docs/API.md), so with none left the job fails.
                if facts.attempt >= facts.max_attempts {
                    return RunEnd::terminal(JobState::Failed, Some((kind, message)), facts);
                }
                return RunEnd::again(now, 0, false, Some((kind, message)), 0);
            }
            retry_or_fail(kind, message, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use drove_core::queue::{Backoff, RateLimit, Transient};

    use super::*;

    const NOW: Millis = Millis(1_000_000);

    fn facts(attempt: i64) -> RunFacts {
        RunFacts {
            attempt,
            max_attempts: 3,
            cancel_requested: false,
            transient_streak: 0,
            grouped: false,
            children_pending: 0,
        }
    }

    fn fail(kind: FailKind) -> Outcome {
        Outcome::Fail { kind, message: "boom".into(), retry_after_ms: None }
    }

    #[test]
    fn retryable_backs_off_then_fails_when_attempts_run_out() {
        let q = QueueConfig { backoff: Some(Backoff { base_ms: 100, max_ms: 100 }), ..Default::default() };
        let end = end_of_run(&facts(1), Ending::Worker(&fail(FailKind::Retryable)), &q, NOW, 0.5);
        assert_eq!(
            (end.state, end.run_at, end.free_run),
            (JobState::Scheduled, Some(Millis(1_000_050)), false)
        );
        assert_eq!(end.error.as_ref().map(|e| e.0), Some(ErrorKind::Retryable));
        let end = end_of_run(&facts(3), Ending::Worker(&fail(FailKind::Retryable)), &q, NOW, 0.5);
        assert_eq!((end.state, end.run_at), (JobState::Failed, None));
    }

    #[test]
    fn transient_failures_retry_fast_on_their_own_budget() {
        let q = QueueConfig {
            transient: Some(Transient { retries: 2, base_ms: 10, max_ms: 1_000 }),
            backoff: Some(Backoff { base_ms: 60_000, max_ms: 60_000 }),
            ..Default::default()
        };
        let mut f = facts(1);
        for streak in 1..=2 {
            let end = end_of_run(&f, Ending::Worker(&fail(FailKind::Transient)), &q, NOW, 0.999);
            assert!(end.free_run, "within the budget no attempt is used");
            assert!(end.transient);
            assert_eq!(end.transient_streak, streak);
            assert_eq!(end.error.as_ref().map(|e| e.0), Some(ErrorKind::Transient));
            // 10 ms doubling: 0..10, 0..20 (full jitter), never the queue's minute.
            assert!(end.run_at.unwrap().since(NOW) < 10 << streak, "{:?}", end.run_at);
            f.transient_streak = end.transient_streak;
        }
        // Past the budget the attempt is used, with the queue's backoff, and the streak restarts.
        let end = end_of_run(&f, Ending::Worker(&fail(FailKind::Transient)), &q, NOW, 0.999);
        assert!(!end.free_run && end.transient);
        assert_eq!(end.transient_streak, 0);
        assert!(end.run_at.unwrap().since(NOW) > 50_000);
        // And with no attempt left, past the budget, the job fails.
        f.attempt = 3;
        assert_eq!(
            end_of_run(&f, Ending::Worker(&fail(FailKind::Transient)), &q, NOW, 0.5).state,
            JobState::Failed
        );
    }

    #[test]
    fn a_throttled_run_holds_a_scope_only_under_a_rate() {
        let throttled =
            Outcome::Fail { kind: FailKind::Throttled, message: "429".into(), retry_after_ms: Some(2_000) };
        let plain = QueueConfig::default();
        let end = end_of_run(&facts(1), Ending::Worker(&throttled), &plain, NOW, 0.5);
        assert_eq!(
            (end.state, end.run_at, end.free_run, end.hold),
            (JobState::Scheduled, Some(Millis(1_002_000)), true, None)
        );
        let rate =
            RateLimit { limit: 10, period_ms: 1_000, burst: None, learn: None, auto: false, per: None };
        let queued = QueueConfig { rate: Some(rate), ..Default::default() };
        let end = end_of_run(&facts(1), Ending::Worker(&throttled), &queued, NOW, 0.5);
        assert_eq!(end.hold, Some(Hold::Queue(Millis(1_002_000))));
        let grouped = QueueConfig { group_rate: Some(rate), ..Default::default() };
        let f = RunFacts { grouped: true, ..facts(1) };
        assert_eq!(
            end_of_run(&f, Ending::Worker(&throttled), &grouped, NOW, 0.5).hold,
            Some(Hold::Group(Millis(1_002_000)))
        );
        // A job without a group under group_rate only: nothing to hold.
        assert_eq!(end_of_run(&facts(1), Ending::Worker(&throttled), &grouped, NOW, 0.5).hold, None);
    }

    #[test]
    fn a_lost_run_is_queued_again_at_once_and_a_timeout_backs_off() {
        let q =
            QueueConfig { backoff: Some(Backoff { base_ms: 5_000, max_ms: 5_000 }), ..Default::default() };
        let end = end_of_run(&facts(1), Ending::Lost, &q, NOW, 0.9);
        assert_eq!((end.state, end.run_at, end.free_run), (JobState::Queued, Some(NOW), false));
        assert_eq!(end.error.as_ref().map(|e| e.0), Some(ErrorKind::Lost));
        assert_eq!(end_of_run(&facts(3), Ending::Lost, &q, NOW, 0.9).state, JobState::Failed);
        let end = end_of_run(&facts(1), Ending::TimedOut { timeout_ms: 50 }, &q, NOW, 0.9);
        assert_eq!(end.state, JobState::Scheduled);
        assert_eq!(end.error.as_ref().map(|e| e.1.as_str()), Some("timed out after 50 ms"));
    }

    #[test]
    fn cancel_requested_runs_end_cancelled_whatever_their_outcome() {
        let f = RunFacts { cancel_requested: true, ..facts(1) };
        let q = QueueConfig::default();
        for outcome in [fail(FailKind::Retryable), fail(FailKind::Transient), Outcome::Release] {
            assert_eq!(end_of_run(&f, Ending::Worker(&outcome), &q, NOW, 0.5).state, JobState::Cancelled);
        }
        assert_eq!(end_of_run(&f, Ending::Lost, &q, NOW, 0.5).state, JobState::Cancelled);
        // A completion despite the cancel records the success (docs/API.md).
        let done = Outcome::Complete { result: None, partial: false };
        assert_eq!(end_of_run(&f, Ending::Worker(&done), &q, NOW, 0.5).state, JobState::Succeeded);
    }

    #[test]
    fn awaiting_children_waits_for_the_ones_not_ended_or_runs_the_fan_in_at_once() {
        let q = QueueConfig::default();
        let waiting = Outcome::AwaitChildren { result: None };
        let f = RunFacts { children_pending: 3, ..facts(1) };
        let end = end_of_run(&f, Ending::Worker(&waiting), &q, NOW, 0.5);
        assert_eq!(
            (end.state, end.wait_for, end.free_run, end.fan_in),
            (JobState::Waiting, Some(WaitingFor::Children), true, false)
        );
        let end = end_of_run(&facts(1), Ending::Worker(&waiting), &q, NOW, 0.5);
        assert_eq!(
            (end.state, end.run_at, end.free_run, end.fan_in),
            (JobState::Queued, Some(NOW), true, true)
        );
        let f = RunFacts { cancel_requested: true, ..f };
        assert_eq!(end_of_run(&f, Ending::Worker(&waiting), &q, NOW, 0.5).state, JobState::Cancelled);
    }
}
