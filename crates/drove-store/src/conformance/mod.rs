//! The conformance suite: every rule of the store contract as a test case that any [`Store`]
//! must pass. A backend runs it with [`conformance_tests!`](crate::conformance_tests), giving a
//! factory that returns a fresh store per case (a new SQLite file, a new PostgreSQL schema), or
//! `None` to skip with a reason it has printed.
//!
//! Time is explicit: cases pass `now` values built from [`T0`], so nothing sleeps.

mod basics;
mod flow;
mod groups;
mod keys;
mod leases;
mod lineage;
mod outcomes;
mod races;
mod schedules;

use std::any::Any;
use std::sync::Arc;

use drove_core::queue::QueuePatch;
use drove_core::{FailKind, Job, JobId, Millis, RawJson};

use crate::{ClaimRequest, Claimed, Finish, NewJob, Outcome, QueueInfo, Store, StoreError, Submitted};

pub use basics::*;
pub use flow::*;
pub use groups::*;
pub use keys::*;
pub use leases::*;
pub use lineage::*;
pub use outcomes::*;
pub use races::*;
pub use schedules::*;

/// A store under test, with whatever must live as long as it (a temporary directory, a schema
/// to drop).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn Any + Send>,
}

/// An arbitrary fixed start time for cases.
pub const T0: Millis = Millis(1_800_000_000_000);

pub fn at(ms: i64) -> Millis {
    T0.plus_ms(ms)
}

pub fn raw(json: &str) -> RawJson {
    serde_json::value::RawValue::from_string(json.to_owned()).expect("valid JSON in a test")
}

pub fn job(queue: &str) -> NewJob {
    NewJob::new(queue, raw("{}"))
}

pub fn job_with(queue: &str, payload: &str) -> NewJob {
    NewJob::new(queue, raw(payload))
}

pub async fn submit(s: &dyn Store, j: NewJob, now: Millis) -> Submitted {
    s.submit(vec![j], now).await.expect("submit").pop().expect("one answer")
}

pub async fn claim_as(s: &dyn Store, queue: &str, worker: &str, max: i64, now: Millis) -> Vec<Claimed> {
    let req = ClaimRequest { queue: queue.into(), worker: worker.into(), max, lease_ms: None };
    s.claim(req, now).await.expect("claim").jobs
}

pub async fn claim(s: &dyn Store, queue: &str, max: i64, now: Millis) -> Vec<Claimed> {
    claim_as(s, queue, "w1", max, now).await
}

pub async fn end(s: &dyn Store, c: &Claimed, outcome: Outcome, now: Millis) -> Result<Job, StoreError> {
    let f = Finish { id: c.job.id, lease: c.lease, outcome };
    s.finish(vec![f], now).await.expect("finish call").pop().expect("one answer")
}

pub async fn complete(s: &dyn Store, c: &Claimed, result: &str, now: Millis) -> Result<Job, StoreError> {
    end(s, c, Outcome::Complete { result: Some(raw(result)), partial: false }, now).await
}

pub async fn fail(
    s: &dyn Store,
    c: &Claimed,
    kind: FailKind,
    retry_after_ms: Option<i64>,
    now: Millis,
) -> Result<Job, StoreError> {
    let outcome = Outcome::Fail { kind, message: format!("{kind:?} failure"), retry_after_ms };
    end(s, c, outcome, now).await
}

pub async fn get(s: &dyn Store, id: JobId) -> Job {
    s.get_job(id).await.expect("get_job").expect("job exists")
}

pub async fn set_queue(s: &dyn Store, name: &str, patch: &str, now: Millis) -> QueueInfo {
    let patch: QueuePatch = serde_json::from_str(patch).expect("valid patch");
    s.put_queue(name, patch, now).await.expect("put_queue")
}

/// Immediate retries, so cases about retries need not reason about random backoff.
pub async fn no_backoff(s: &dyn Store, queue: &str) {
    set_queue(s, queue, r#"{"backoff": {"base_ms": 0, "max_ms": 0}}"#, T0).await;
}

/// Expands to one `#[tokio::test]` per conformance case, each on a fresh store from
/// `$factory` (an `async fn() -> Option<Fixture>`).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!(@cases $factory;
            submit_creates_queued_job_with_defaults,
            submit_with_future_run_at_is_scheduled_until_promoted,
            the_trace_context_is_kept_and_claimed_with_the_job,
            invalid_entry_rejects_the_whole_batch_and_writes_nothing,
            oversized_payload_is_rejected,
            job_ids_increase,
            claim_orders_by_priority_then_fifo,
            claim_respects_max_and_empty_queue_returns_nothing,
            claim_counts_the_attempt_and_leases,
            queue_exists_from_first_submit_claim_or_put,
            paused_queue_hands_out_nothing_until_resumed,
            queue_concurrency_caps_running_jobs,
            counts_follow_every_transition,
            list_jobs_filters_and_pages_newest_first,
            prune_deletes_old_finished_jobs_but_keeps_reusable_successes,
            recent_runs_lists_finished_runs_newest_first,
            submit_with_live_key_joins_existing,
            later_entry_in_a_batch_joins_an_earlier_one,
            reject_with_active_key_fails_the_whole_batch,
            replace_updates_a_queued_job,
            replace_joins_a_running_job_unchanged,
            reuse_returns_a_recent_success_within_its_window,
            failed_and_cancelled_jobs_never_block_a_key,
            cancel_requested_job_frees_its_key,
            redrive_is_refused_while_another_job_holds_the_key,
            group_concurrency_one_runs_a_group_in_order,
            busy_group_does_not_hold_back_other_groups,
            group_limit_change_applies_to_existing_groups,
            jobs_without_group_are_not_group_limited,
            heartbeat_extends_lease_and_stores_progress_and_checkpoint,
            heartbeat_with_stale_lease_is_rejected,
            complete_with_stale_lease_is_rejected_and_changes_nothing,
            expired_lease_is_reaped_as_lost_and_keeps_checkpoint,
            late_completion_after_reap_is_rejected,
            lease_tokens_grow_across_runs,
            timeout_fails_the_run_and_voids_its_lease,
            lost_lease_on_last_attempt_fails_the_job,
            retryable_failure_backs_off_then_fails_after_max_attempts,
            permanent_failure_fails_at_once,
            every_failed_run_is_kept_in_the_jobs_history,
            throttled_requeues_without_an_attempt_and_holds_the_queue,
            throttled_with_group_rate_holds_only_the_group,
            a_learning_rate_holds_its_queue_one_interval_not_the_whole_retry_after,
            snooze_requeues_without_an_attempt,
            release_requeues_at_once_keeping_checkpoint,
            finish_batch_entries_fail_alone,
            one_job_completed_twice_in_a_batch_ends_once,
            completion_results_keep_their_json,
            complete_records_result_and_partial,
            cancel_scheduled_or_queued_is_immediate,
            cancel_running_is_requested_then_cancelled_when_the_worker_stops,
            cancel_requested_job_that_completes_is_succeeded,
            cancel_of_finished_job_is_wrong_state,
            redrive_queues_a_failed_job_with_attempt_zero,
            redrive_of_active_job_is_wrong_state,
            unknown_job_is_not_found,
            waiters_wake_when_a_job_finishes,
            claimers_are_notified_when_jobs_become_ready,
            rate_limit_spaces_starts_and_says_when_to_retry,
            group_rate_limits_each_group_apart,
            adaptive_limit_in_force_caps_claims,
            a_pools_limit_is_shared_by_its_queues,
            offline_lanes_stop_at_the_pools_offline_limit,
            offline_lanes_yield_to_online_work_but_keep_their_share,
            concurrent_submits_of_one_key_create_one_job,
            concurrent_claimers_never_share_a_job,
            completion_racing_the_reaper_has_exactly_one_outcome,
            stale_lease_never_wins,
            group_limit_holds_under_concurrent_claimers,
            a_waiter_registering_during_a_completion_is_woken,
            partial_successes_are_counted_listed_and_pruned_apart,
            outcomes_count_every_ended_run_and_outlive_the_jobs,
            throttled_without_a_rate_holds_nobody,
            transient_failures_retry_fast_on_their_own_budget,
            a_lost_run_is_claimable_at_once_without_backoff,
            an_idle_rated_queue_names_no_time_to_come_back,
            a_throttle_lowers_the_rate_in_force_for_every_handle,
            a_rate_per_claim_counts_claims_not_jobs,
            a_dependent_waits_until_its_dependencies_succeed,
            a_failed_dependency_ends_its_dependents_down_the_chain,
            dependencies_that_already_ended_resolve_at_submit,
            a_parent_runs_its_fan_in_once_its_children_have_ended,
            a_parent_with_no_child_left_runs_its_fan_in_at_once,
            cancelling_a_parent_cancels_its_unfinished_children,
            a_follow_up_waits_behind_its_keys_running_job,
            a_stale_success_is_answered_at_once_and_refreshed_once,
            concurrent_follow_ups_make_one_successor,
            children_ending_at_once_wake_their_parent_once,
            a_schedule_enqueues_one_job_per_tick,
            missed_ticks_follow_the_catch_up_policy,
            a_paused_schedule_enqueues_nothing_and_resumes_after_now,
            concurrent_passes_enqueue_each_tick_once,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fixture) = $factory().await else { return };
                $crate::conformance::$case(::std::sync::Arc::clone(&fixture.store)).await;
                fixture.store.close().await;
                drop(fixture);
            }
        )*
    };
}
