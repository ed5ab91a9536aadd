//! The hub: how a store tells the rest of the process that something it committed matters.
//!
//! Waiters never poll the store. A waiter on a job registers a [`JobWatch`]; when the store
//! commits that job's terminal state it hands the job to the hub once, and every watcher of
//! the job wakes with the same `Arc<Job>` (1,000 waiters on one job cost one notification and
//! no reads). Claimers wait on their queue's [`Notify`]. Dashboards subscribe to [`Event`]s.
//! A store whose notifications can be lost (a dropped PostgreSQL listener) calls
//! [`Hub::wake_all`], after which every waiter checks the store once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use drove_core::{Job, JobId, JobState, Millis};
use tokio::sync::{Notify, broadcast, watch};

/// A change worth showing live, for in-process subscribers ([`Hub::subscribe`]): built only
/// while one listens (`has_subscribers`), so a node with none pays nothing for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: JobId,
    pub queue: Arc<str>,
    pub state: JobState,
}

struct Slot {
    tx: watch::Sender<Watched>,
    watchers: usize,
}

/// What a job watcher sees.
#[derive(Debug, Clone)]
enum Watched {
    Nothing,
    /// Notifications may have been lost: check the store.
    Poked,
    Finished(Arc<Job>),
}

#[derive(Default)]
struct Queues {
    notify: HashMap<String, Arc<Notify>>,
    idle_looks: HashMap<String, Arc<IdleLook>>,
}

/// When a waiting claimer of a queue last looked at the store on its own (its safety-net timer,
/// not a notification) and found nothing ready. Every idle claimer of the queue wakes for any
/// notification, so within `max_idle` of such a look the others need not repeat it: 2,000
/// claims held on an idle queue cost one store read a second, not 2,000.
#[derive(Debug)]
pub struct IdleLook {
    epoch: tokio::time::Instant,
    /// Milliseconds since `epoch` at the start of the last look that found nothing, plus one
    /// (0: none yet).
    at: std::sync::atomic::AtomicU64,
}

impl IdleLook {
    fn new() -> IdleLook {
        IdleLook { epoch: tokio::time::Instant::now(), at: std::sync::atomic::AtomicU64::new(0) }
    }

    fn ms(&self, t: tokio::time::Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// A look that started at `started` found nothing ready.
    pub fn found_nothing(&self, started: tokio::time::Instant) {
        self.at.fetch_max(self.ms(started), Ordering::Relaxed);
    }

    /// Whether some claimer's look that found nothing started within `within` of `now`.
    pub fn fresh(&self, now: tokio::time::Instant, within: std::time::Duration) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        at != 0 && self.ms(now).saturating_sub(at) < u64::try_from(within.as_millis()).unwrap_or(u64::MAX)
    }
}

pub struct Hub {
    // std Mutex: every critical section is a map lookup, never held across an await.
    jobs: Mutex<HashMap<JobId, Slot>>,
    queues: Mutex<Queues>,
    events: broadcast::Sender<Event>,
    /// How many jobs have watchers: lets `is_watched` answer "no" without the lock.
    watched: std::sync::atomic::AtomicUsize,
    /// Earliest `run_at` a store reported since the promoter last looked (`i64::MAX`: none).
    scheduled_hint: AtomicI64,
    timers: Notify,
    /// A schedule was written on this node: the scheduler looks again.
    schedules: Notify,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            jobs: Mutex::new(HashMap::new()),
            queues: Mutex::new(Queues::default()),
            events: broadcast::channel(4_096).0,
            watched: std::sync::atomic::AtomicUsize::new(0),
            scheduled_hint: AtomicI64::new(i64::MAX),
            timers: Notify::new(),
            schedules: Notify::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the maps inconsistent (each
    // critical section is a single insert, lookup or removal), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Starts watching a job. Register before reading the job, so that a terminal state
    /// committed between the read and the wait is not missed.
    pub fn watch_job(self: &Arc<Self>, id: JobId) -> JobWatch {
        let mut jobs = lock(&self.jobs);
        let slot = jobs.entry(id).or_insert_with(|| {
            self.watched.fetch_add(1, Ordering::AcqRel);
            Slot { tx: watch::channel(Watched::Nothing).0, watchers: 0 }
        });
        slot.watchers += 1;
        let rx = slot.tx.subscribe();
        JobWatch { hub: Arc::clone(self), id, rx }
    }

    /// Whether anyone waits on this job (stores skip building notifications nobody reads).
    pub fn is_watched(&self, id: JobId) -> bool {
        self.watched.load(Ordering::Acquire) > 0 && lock(&self.jobs).contains_key(&id)
    }

    /// A job reached a terminal state: wakes its watchers.
    pub fn job_finished(&self, job: Arc<Job>) {
        if let Some(slot) = lock(&self.jobs).get(&job.id) {
            slot.tx.send_replace(Watched::Finished(job));
        }
    }

    /// A job may have reached a terminal state that its watchers were not handed: they read
    /// it from the store once more. (For a watcher that registered while the transition was
    /// committing.)
    pub fn poke_job(&self, id: JobId) {
        if let Some(slot) = lock(&self.jobs).get(&id) {
            slot.tx.send_if_modified(|w| match w {
                Watched::Finished(_) => false,
                _ => {
                    *w = Watched::Poked;
                    true
                }
            });
        }
    }

    /// The notifier claimers of `queue` wait on.
    pub fn queue_notify(&self, queue: &str) -> Arc<Notify> {
        let mut q = lock(&self.queues);
        if let Some(n) = q.notify.get(queue) {
            return Arc::clone(n);
        }
        let n = Arc::new(Notify::new());
        q.notify.insert(queue.to_owned(), Arc::clone(&n));
        n
    }

    /// The record of `queue`'s idle safety-net looks, shared by its waiting claimers.
    pub fn queue_idle_look(&self, queue: &str) -> Arc<IdleLook> {
        let mut q = lock(&self.queues);
        Arc::clone(q.idle_looks.entry(queue.to_owned()).or_insert_with(|| Arc::new(IdleLook::new())))
    }

    /// Jobs may be claimable in `queue` (new, due, requeued, or capacity freed).
    pub fn queue_ready(&self, queue: &str) {
        if let Some(n) = lock(&self.queues).notify.get(queue) {
            n.notify_waiters();
        }
    }

    /// Notifications may have been lost: every waiter checks the store once.
    pub fn wake_all(&self) {
        for n in lock(&self.queues).notify.values() {
            n.notify_waiters();
        }
        for slot in lock(&self.jobs).values() {
            slot.tx.send_if_modified(|w| match w {
                Watched::Finished(_) => false,
                _ => {
                    *w = Watched::Poked;
                    true
                }
            });
        }
    }

    /// A job was scheduled for `at`: wakes the promoter if that is sooner than it planned.
    pub fn scheduled(&self, at: Millis) {
        let before = self.scheduled_hint.fetch_min(at.0, Ordering::AcqRel);
        if at.0 < before {
            self.timers.notify_one();
        }
    }

    /// Takes the earliest scheduled time reported since the last call.
    pub fn take_scheduled_hint(&self) -> Option<Millis> {
        let v = self.scheduled_hint.swap(i64::MAX, Ordering::AcqRel);
        (v != i64::MAX).then_some(Millis(v))
    }

    /// Wakes when [`Hub::scheduled`] reported a sooner time (the promoter waits on it).
    pub async fn scheduled_changed(&self) {
        self.timers.notified().await;
    }

    /// A schedule was written: wakes the scheduler to look at its next tick.
    pub fn schedule_written(&self) {
        self.schedules.notify_one();
    }

    /// Wakes when [`Hub::schedule_written`] was called (the scheduler waits on it).
    pub async fn schedules_changed(&self) {
        self.schedules.notified().await;
    }

    /// Whether anyone listens to [`Event`]s (stores skip building them otherwise).
    pub fn has_subscribers(&self) -> bool {
        self.events.receiver_count() > 0
    }

    pub fn publish(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// How many jobs have watchers (for metrics and tests).
    pub fn watched_jobs(&self) -> usize {
        lock(&self.jobs).len()
    }
}

/// A registration to hear of one job's terminal state. Dropping it unregisters.
pub struct JobWatch {
    hub: Arc<Hub>,
    id: JobId,
    rx: watch::Receiver<Watched>,
}

impl JobWatch {
    pub fn id(&self) -> JobId {
        self.id
    }

    /// Waits for news: `Some(job)` when the job finished, `None` when the hub was poked (the
    /// caller should read the job from the store, then wait again).
    pub async fn changed(&mut self) -> Option<Arc<Job>> {
        loop {
            if let Watched::Finished(job) = &*self.rx.borrow() {
                return Some(Arc::clone(job));
            }
            if self.rx.changed().await.is_err() {
                // The sender lives in the hub as long as we are registered: unreachable, but
                // asking the caller to re-read is always safe.
                return None;
            }
            match &*self.rx.borrow_and_update() {
                Watched::Finished(job) => return Some(Arc::clone(job)),
                Watched::Poked => return None,
                Watched::Nothing => {}
            }
        }
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        let mut jobs = lock(&self.hub.jobs);
        if let Some(slot) = jobs.get_mut(&self.id) {
            slot.watchers -= 1;
            if slot.watchers == 0 {
                jobs.remove(&self.id);
                self.hub.watched.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_idle_look_spares_the_others_for_max_idle_only() {
        let hub = Hub::new();
        let look = hub.queue_idle_look("q");
        assert!(Arc::ptr_eq(&look, &hub.queue_idle_look("q")), "one record per queue");
        let second = Duration::from_secs(1);
        let ms = Duration::from_millis;
        let t0 = tokio::time::Instant::now() + ms(5);
        assert!(!look.fresh(t0, second), "nobody looked yet");
        look.found_nothing(t0);
        assert!(look.fresh(t0 + ms(999), second));
        assert!(!look.fresh(t0 + ms(1_000), second), "a look a full max_idle old is stale");
        // An older look reported late never moves the record back.
        look.found_nothing(t0 + ms(2_000));
        look.found_nothing(t0);
        assert!(look.fresh(t0 + ms(2_500), second));
        assert!(!hub.queue_idle_look("other").fresh(t0, second));
    }
}
