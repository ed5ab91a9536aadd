//! Jobs that wait on other jobs, decided once for both stores: a submit's key (join, reject,
//! replace, follow-up, reuse, a stale answer), dependencies, and a parent's children.
//!
//! Each store reads what the decision needs under the locks that make it hold (the key's live
//! job, the dependency rows, the parent row), asks here, and applies the answer with its own
//! SQL. The invariants they keep:
//! - a job's `deps_pending` is the number of its dependencies not yet ended (or, under
//!   `on_dependency_failure: "fail"`, not yet succeeded); it starts when that reaches 0;
//! - a parent's children counters add up the children that ended, so `total - ended` are
//!   pending; a parent waiting for its children is queued by the end that makes that 0;
//! - at most one follow-up waits behind a key's running job (a unique index), and it takes
//!   the key when that job ends, in the same transaction.

use drove_core::{Job, JobId, JobState, Millis, OnConflict, OnDependencyFailure, WaitingFor};

use crate::request::NewJob;

/// What a keyed submit does, given the key's live job and its newest success within the reuse
/// and stale windows.
#[derive(Debug, Clone)]
pub enum KeyAction {
    /// Answer the live job.
    Join(Job),
    /// Refuse: the key is held (409).
    Reject(Job),
    /// The live job, not started, takes the new payload (and run_at, priority).
    Replace(Job),
    /// The live job runs: keep one follow-up behind it with the newest payload.
    FollowUp { holder: Job },
    /// Answer a recent success.
    Reuse(Job),
    /// Answer a stale success at once, refreshing it: by the live job (its id), or by a new one.
    Stale { done: Job, live: Option<JobId> },
    /// Create the job.
    Create,
}

/// The windows of a keyed submit: reuse a success this recent, answer one this much older
/// (stale) while it refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyWindows {
    pub reuse_ms: i64,
    pub stale_ms: i64,
}

impl KeyWindows {
    /// The oldest success either window may answer; `None` when neither is open.
    pub fn since(&self, now: Millis) -> Option<Millis> {
        let span = self.reuse_ms.saturating_add(self.stale_ms);
        (span > 0).then(|| now.minus_ms(span))
    }
}

/// Decides a keyed submit (see [`KeyAction`]). `recent` is the key's newest success finished at
/// or after [`KeyWindows::since`].
pub fn key_action(
    new: &NewJob,
    live: Option<Job>,
    recent: Option<Job>,
    windows: KeyWindows,
    now: Millis,
) -> KeyAction {
    let fresh_since = now.minus_ms(windows.reuse_ms);
    let fresh = |j: &Job| windows.reuse_ms > 0 && j.finished_at.is_some_and(|t| t >= fresh_since);
    // The newest success, as fresh (reusable) or stale (answered while it refreshes).
    let (reusable, stale) = match recent {
        Some(j) if fresh(&j) => (Some(j), None),
        Some(j) if windows.stale_ms > 0 => (None, Some(j)),
        _ => (None, None),
    };
    match live {
        Some(live) => match (stale, new.on_conflict) {
            (Some(done), _) => KeyAction::Stale { done, live: Some(live.id) },
            (None, OnConflict::Join) => KeyAction::Join(live),
            (None, OnConflict::Reject) => KeyAction::Reject(live),
            (None, OnConflict::Replace) => KeyAction::Replace(live),
            (None, OnConflict::FollowUp) if live.state == JobState::Running => {
                KeyAction::FollowUp { holder: live }
            }
            // Not started yet: it will run with the newest payload, which is all a follow-up asks.
            (None, OnConflict::FollowUp) => KeyAction::Replace(live),
        },
        None => match (reusable, stale) {
            (Some(done), _) => KeyAction::Reuse(done),
            (None, Some(done)) => KeyAction::Stale { done, live: None },
            (None, None) => KeyAction::Create,
        },
    }
}

/// How a new job with dependencies starts, given the states of the jobs it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependenciesAtSubmit {
    /// Waits for this many.
    Wait(i64),
    /// Nothing to wait for.
    Ready,
    /// One already failed or was cancelled: the job ends so, without running.
    End { state: JobState, message: String },
}

/// See [`DependenciesAtSubmit`]; `deps` are the dependencies with their current states.
pub fn dependencies_at_submit(
    deps: &[(JobId, JobState)],
    on_failure: OnDependencyFailure,
) -> DependenciesAtSubmit {
    let mut pending = 0;
    for (id, state) in deps {
        match dependency_counts(*id, *state, on_failure) {
            DepCount::Pending => pending += 1,
            DepCount::Satisfied => {}
            DepCount::Breaks { state, message } => return DependenciesAtSubmit::End { state, message },
        }
    }
    if pending > 0 { DependenciesAtSubmit::Wait(pending) } else { DependenciesAtSubmit::Ready }
}

/// Sets where a new job starts given its dependencies' states (see [`dependencies_at_submit`]):
/// waiting for them, ended already (the error naming the dependency), or as it was. Returns
/// how many it waits for.
pub fn start_after(job: &mut Job, deps: &[(JobId, JobState)], now: Millis) -> i64 {
    match dependencies_at_submit(deps, job.on_dependency_failure) {
        DependenciesAtSubmit::Ready => 0,
        DependenciesAtSubmit::Wait(n) => {
            job.state = JobState::Waiting;
            job.waiting_for = Some(WaitingFor::Dependencies);
            n
        }
        DependenciesAtSubmit::End { state, message } => {
            job.state = state;
            job.finished_at = Some(now);
            job.error =
                Some(drove_core::JobError { kind: drove_core::ErrorKind::Dependency, message, at: now });
            0
        }
    }
}

enum DepCount {
    Pending,
    Satisfied,
    Breaks { state: JobState, message: String },
}

fn dependency_counts(id: JobId, state: JobState, on_failure: OnDependencyFailure) -> DepCount {
    match (state, on_failure) {
        (s, _) if !s.is_terminal() => DepCount::Pending,
        (JobState::Succeeded, _) | (_, OnDependencyFailure::Run) => DepCount::Satisfied,
        (s, OnDependencyFailure::Fail) => {
            DepCount::Breaks { state: s, message: format!("dependency {id} {s}") }
        }
    }
}

/// What becomes of a waiting dependent when one of its dependencies ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependentAfter {
    /// Still waits (`deps_pending` is now this).
    Wait(i64),
    /// Its last dependency ended: it may start.
    Ready,
    /// It ends without running (failed, or cancelled, as its dependency), the error naming it.
    End { state: JobState, message: String },
}

/// See [`DependentAfter`]: `pending` is the dependent's count before this end.
pub fn dependency_ended(
    dep: JobId,
    dep_state: JobState,
    on_failure: OnDependencyFailure,
    pending: i64,
) -> DependentAfter {
    match dependency_counts(dep, dep_state, on_failure) {
        DepCount::Breaks { state, message } => DependentAfter::End { state, message },
        _ if pending <= 1 => DependentAfter::Ready,
        _ => DependentAfter::Wait(pending - 1),
    }
}

/// Which of a parent's counters a child's end adds to (`succeeded` counts the partial ones too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildEnd {
    pub succeeded: i64,
    pub partial: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl ChildEnd {
    /// The counters one child adds (or, with `sign` -1, takes back when it runs again).
    pub fn of(state: JobState, partial: bool, sign: i64) -> ChildEnd {
        ChildEnd {
            succeeded: sign * i64::from(state == JobState::Succeeded),
            partial: sign * i64::from(state == JobState::Succeeded && partial),
            failed: sign * i64::from(state == JobState::Failed),
            cancelled: sign * i64::from(state == JobState::Cancelled),
        }
    }

    pub fn add(&mut self, other: ChildEnd) {
        self.succeeded += other.succeeded;
        self.partial += other.partial;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
    }

    /// How many children this takes off the pending ones.
    pub fn ended(&self) -> i64 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// Whether a parent, after its counters changed, leaves `waiting` for its fan-in run.
pub fn parent_wakes(state: JobState, waiting_for: Option<WaitingFor>, pending: i64) -> bool {
    state == JobState::Waiting && waiting_for == Some(WaitingFor::Children) && pending <= 0
}

/// Where a job stands once it may start: queued, or scheduled when its `run_at` is later.
pub fn ready_state(run_at: Millis, now: Millis) -> JobState {
    if run_at <= now { JobState::Queued } else { JobState::Scheduled }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState, finished: Option<i64>) -> Job {
        let mut j = NewJob::new("q", drove_core::raw_null()).with_key("k").into_job(
            JobId(1),
            &Default::default(),
            Millis(0),
        );
        j.state = state;
        j.finished_at = finished.map(Millis);
        j
    }

    fn submit(on_conflict: OnConflict) -> NewJob {
        let mut n = NewJob::new("q", drove_core::raw_null()).with_key("k");
        n.on_conflict = on_conflict;
        n
    }

    #[test]
    fn keys_decide_from_the_live_job_and_the_last_success() {
        let now = Millis(100_000);
        let w = KeyWindows { reuse_ms: 10_000, stale_ms: 50_000 };
        let running = job(JobState::Running, None);
        let queued = job(JobState::Queued, None);
        let fresh = job(JobState::Succeeded, Some(95_000));
        let stale = job(JobState::Succeeded, Some(60_000));
        let act = |c, live: &Job, recent: Option<&Job>| {
            key_action(&submit(c), Some(live.clone()), recent.cloned(), w, now)
        };
        assert!(matches!(act(OnConflict::Join, &running, None), KeyAction::Join(_)));
        assert!(matches!(act(OnConflict::FollowUp, &running, None), KeyAction::FollowUp { .. }));
        assert!(matches!(act(OnConflict::FollowUp, &queued, None), KeyAction::Replace(_)));
        assert!(matches!(act(OnConflict::Reject, &running, Some(&fresh)), KeyAction::Reject(_)));
        // A stale success is answered even while its refresh runs.
        assert!(matches!(
            act(OnConflict::Join, &running, Some(&stale)),
            KeyAction::Stale { live: Some(_), .. }
        ));
        let none =
            |recent: Option<&Job>, w| key_action(&submit(OnConflict::Join), None, recent.cloned(), w, now);
        assert!(matches!(none(Some(&fresh), w), KeyAction::Reuse(_)));
        assert!(matches!(none(Some(&stale), w), KeyAction::Stale { live: None, .. }));
        assert!(matches!(none(None, w), KeyAction::Create));
        // Without a stale window an old success is not answered.
        let reuse_only = KeyWindows { reuse_ms: 10_000, stale_ms: 0 };
        assert!(matches!(none(Some(&stale), reuse_only), KeyAction::Create));
        assert_eq!(reuse_only.since(now), Some(Millis(90_000)));
        assert_eq!(KeyWindows { reuse_ms: 0, stale_ms: 0 }.since(now), None);
    }

    #[test]
    fn dependencies_resolve_by_how_each_ended() {
        use JobState::*;
        let fail = OnDependencyFailure::Fail;
        let run = OnDependencyFailure::Run;
        assert_eq!(
            dependencies_at_submit(&[(JobId(1), Succeeded), (JobId(2), Running)], fail),
            DependenciesAtSubmit::Wait(1)
        );
        assert_eq!(dependencies_at_submit(&[(JobId(1), Succeeded)], fail), DependenciesAtSubmit::Ready);
        assert_eq!(
            dependencies_at_submit(&[(JobId(1), Queued), (JobId(2), Cancelled)], fail),
            DependenciesAtSubmit::End { state: Cancelled, message: "dependency 2 cancelled".into() }
        );
        assert_eq!(dependencies_at_submit(&[(JobId(2), Failed)], run), DependenciesAtSubmit::Ready);
        assert_eq!(dependency_ended(JobId(4), Succeeded, fail, 2), DependentAfter::Wait(1));
        assert_eq!(dependency_ended(JobId(4), Succeeded, fail, 1), DependentAfter::Ready);
        assert_eq!(
            dependency_ended(JobId(4), Failed, fail, 2),
            DependentAfter::End { state: Failed, message: "dependency 4 failed".into() }
        );
        assert_eq!(dependency_ended(JobId(4), Failed, run, 1), DependentAfter::Ready);
    }

    #[test]
    fn children_count_once_each_and_wake_their_waiting_parent() {
        let mut c = ChildEnd::of(JobState::Succeeded, true, 1);
        c.add(ChildEnd::of(JobState::Failed, false, 1));
        assert_eq!((c.succeeded, c.partial, c.failed, c.ended()), (1, 1, 1, 2));
        c.add(ChildEnd::of(JobState::Failed, false, -1));
        assert_eq!(c.ended(), 1);
        assert!(parent_wakes(JobState::Waiting, Some(WaitingFor::Children), 0));
        assert!(!parent_wakes(JobState::Waiting, Some(WaitingFor::Children), 1));
        assert!(!parent_wakes(JobState::Running, None, 0));
    }
}
