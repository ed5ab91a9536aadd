//! The trait every backend implements.

use std::sync::Arc;

use async_trait::async_trait;
use drove_core::queue::{PoolPatch, QueuePatch};
use drove_core::{Job, JobId, Millis};

use crate::error::StoreError;
use crate::hub::Hub;
use crate::request::*;
use crate::schedules::{ScheduleInfo, ScheduleSpec};

/// Durable job storage. Every method is one atomic transition (all or nothing) given `now` by
/// its caller. A store may fold many calls into one physical commit, but a call that fails
/// fails alone: it never sinks the others it shares a commit with. A successful return means
/// the change is committed (and, in durable mode, synced).
///
/// After each commit the store tells its [`Hub`] what changed (jobs ready in a queue, jobs that
/// reached a terminal state), on this node and, for shared stores, on every node.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The notification hub this store reports its commits to.
    fn hub(&self) -> &Arc<Hub>;

    /// Which backend this is (`sqlite`, `postgres`), for logs and benchmarks.
    fn backend(&self) -> &'static str;

    /// The largest payload, result or checkpoint accepted, in bytes.
    fn max_payload(&self) -> usize;

    // ---- submitting -------------------------------------------------------------------------

    /// Creates jobs, or joins, reuses or replaces existing ones by key (docs/API.md "Keys"). The
    /// batch is atomic: a rejected key or an invalid entry fails the whole batch, and a later
    /// entry with the same key as an earlier one joins it.
    async fn submit(&self, jobs: Vec<NewJob>, now: Millis) -> Result<Vec<Submitted>, StoreError>;

    // ---- running ----------------------------------------------------------------------------

    /// Leases up to `max` ready jobs of a queue, in priority-then-FIFO order, within every limit
    /// of the queue (pause, holds, concurrency, group concurrency, rates). Never waits.
    async fn claim(&self, req: ClaimRequest, now: Millis) -> Result<ClaimOutcome, StoreError>;

    /// How many jobs of the queue are ready to run, counted up to `up_to` (`None`: no such
    /// queue yet). A read: long polls ask it before claiming, so that waiting costs no write and
    /// a claim that lingers for a fuller batch waits without taking anything.
    async fn ready(&self, queue: &str, up_to: i64) -> Result<Option<i64>, StoreError>;

    /// Extends a run's lease and stores its progress and checkpoint, fenced by the lease.
    async fn heartbeat(&self, hb: Heartbeat, now: Millis) -> Result<HeartbeatAck, StoreError>;

    /// Ends runs (complete, fail, release), each fenced by its lease and each on its own: one
    /// stale lease fails only its own entry. The outer error is for the store as a whole.
    async fn finish(
        &self,
        items: Vec<Finish>,
        now: Millis,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError>;

    /// Cancels a job: scheduled or queued at once; running: `cancel_requested`. Terminal: an
    /// error.
    async fn cancel(&self, id: JobId, now: Millis) -> Result<Job, StoreError>;

    /// Queues a failed or cancelled job again with attempt 0 (redrive).
    async fn retry(&self, id: JobId, now: Millis) -> Result<Job, StoreError>;

    // ---- maintenance (each call does a bounded amount of work and says how much) ------------

    /// Moves up to `limit` due scheduled jobs to queued.
    async fn promote(&self, now: Millis, limit: usize) -> Result<usize, StoreError>;

    /// Ends up to `limit` runs whose lease ran out (kind `lost`) or whose timeout passed (kind
    /// `timeout`).
    async fn reap(&self, now: Millis, limit: usize) -> Result<usize, StoreError>;

    /// Deletes up to `limit` finished jobs that ended more than `retention_ms` ago (longer for
    /// succeeded keyed jobs of a queue whose `reuse_for_ms` is longer).
    async fn prune(&self, now: Millis, retention_ms: i64, limit: usize) -> Result<usize, StoreError>;

    /// The earliest `run_at` of a scheduled job, and the earliest lease expiry or deadline of a
    /// running one: when the promoter and the reaper next have work.
    async fn next_due(&self) -> Result<(Option<Millis>, Option<Millis>), StoreError>;

    // ---- queues and pools -------------------------------------------------------------------

    async fn put_queue(&self, name: &str, patch: QueuePatch, now: Millis) -> Result<QueueInfo, StoreError>;
    /// A queue as of `now` (its hold and rate in force are shown as of then).
    async fn get_queue(&self, name: &str, now: Millis) -> Result<Option<QueueInfo>, StoreError>;
    async fn list_queues(&self, now: Millis) -> Result<Vec<QueueInfo>, StoreError>;
    async fn put_pool(&self, name: &str, patch: PoolPatch, now: Millis) -> Result<PoolInfo, StoreError>;
    async fn get_pool(&self, name: &str) -> Result<Option<PoolInfo>, StoreError>;

    /// Sets the adaptive concurrency limit in force for a queue (or, with `pool`, a pool).
    async fn set_limit(&self, scope: LimitScope, limit: Option<i64>, now: Millis) -> Result<(), StoreError>;

    /// Sets how many of an adaptive pool's jobs may run before its offline queues wait (at
    /// most the pool's limit; `None`: the whole limit).
    async fn set_offline_limit(&self, pool: &str, limit: Option<i64>, now: Millis) -> Result<(), StoreError>;

    // ---- schedules --------------------------------------------------------------------------

    /// Creates or replaces a schedule (`true`: created). Its next tick is the first after `now`
    /// (also when only `paused` changed to false: ticks missed while paused are skipped).
    async fn put_schedule(
        &self,
        name: &str,
        spec: ScheduleSpec,
        now: Millis,
    ) -> Result<(ScheduleInfo, bool), StoreError>;
    async fn get_schedule(&self, name: &str) -> Result<Option<ScheduleInfo>, StoreError>;
    /// Every schedule, by name.
    async fn list_schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError>;
    /// Deletes a schedule (`false`: there was none). Jobs it enqueued stay.
    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError>;
    /// Enqueues a schedule's job now, outside its ticks ("run now"); its ticks are unchanged.
    async fn run_schedule(&self, name: &str, now: Millis) -> Result<Submitted, StoreError>;
    /// Enqueues the due ticks of up to `limit` schedules (see `drove_store::schedules`): exactly
    /// one job per tick across every node. Returns how many jobs it submitted.
    async fn fire_schedules(&self, now: Millis, limit: usize) -> Result<usize, StoreError>;
    /// The earliest next tick of an unpaused schedule.
    async fn next_tick(&self) -> Result<Option<Millis>, StoreError>;

    // ---- reading ----------------------------------------------------------------------------

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Jobs matching `filter`, newest first, with ids below `before` when given.
    async fn list_jobs(
        &self,
        filter: JobFilter,
        limit: usize,
        before: Option<JobId>,
    ) -> Result<JobPage, StoreError>;

    /// Jobs of `queue` that reached a terminal state at or after `since`, newest first, at
    /// most `limit` of them.
    async fn recent_runs(
        &self,
        queue: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<RunSample>, StoreError>;

    /// How many runs ended (succeeded, failed, cancelled) at or after `since` (to the minute),
    /// per queue, end state, partial success and error kind. Kept for a week and a day whatever
    /// the jobs' retention.
    async fn outcomes(&self, since: Millis) -> Result<Vec<OutcomeCount>, StoreError>;

    /// Succeeds when the store is reachable and answering.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Finishes pending writes and releases the store's resources. Calls after it fail.
    async fn close(&self);
}

/// What an adaptive limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitScope {
    Queue(String),
    Pool(String),
}
