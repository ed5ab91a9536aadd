//! What a handler sees of its job, and how it says a run failed.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drove_core::{Job, LeaseToken, Progress, RawJson};
use drove_store::{Heartbeat, NewJob, Store, StoreError, Submitted};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How a run ended without a result. Any error converts into [`Fail::Retry`] with `?`.
#[derive(Debug, Clone, PartialEq)]
pub enum Fail {
    /// Back off, then retry while attempts remain.
    Retry(String),
    /// Fail now, whatever attempts remain.
    Permanent(String),
    /// The downstream pushed back: run again after `after`, no attempt used; the queue (or the
    /// group, under `group_rate`) is held until then.
    Throttled { after: Duration, message: String },
    /// Not an error: run again after the duration, no attempt used.
    Snooze(Duration),
    /// A failure known to pass by itself (a deadlock, a lock wait timeout, a reset
    /// connection): retried after a short jittered wait without using an attempt, on the
    /// queue's transient budget.
    Transient(String),
}

impl Fail {
    pub fn retry(message: impl fmt::Display) -> Fail {
        Fail::Retry(message.to_string())
    }
    pub fn permanent(message: impl fmt::Display) -> Fail {
        Fail::Permanent(message.to_string())
    }
    pub fn throttled(after: Duration, message: impl fmt::Display) -> Fail {
        Fail::Throttled { after, message: message.to_string() }
    }
    pub fn transient(message: impl fmt::Display) -> Fail {
        Fail::Transient(message.to_string())
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail::Retry(e.to_string())
    }
}

/// The link between a running job and the store: its lease, and what its next heartbeat
/// carries.
pub(crate) struct RunLink {
    pub store: Arc<dyn Store>,
    pub job: Arc<Job>,
    pub lease: LeaseToken,
    pub progress: Mutex<Option<Progress>>,
    pub progress_changed: Notify,
    pub partial: AtomicBool,
    /// The handler asked to run again once its children have ended (a fan-in).
    pub await_children: AtomicBool,
    /// Fired when the run must stop: cancel requested, lease lost, timed out, runtime stopping.
    pub cancel: CancellationToken,
    /// Set when the store refused this run's lease: its result will be refused too.
    pub lost: AtomicBool,
}

impl RunLink {
    /// Sends one heartbeat (with any pending progress and the given checkpoint).
    pub async fn beat(&self, checkpoint: Option<RawJson>) -> Result<(), StoreError> {
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner()).take();
        let hb = Heartbeat { id: self.job.id, lease: self.lease, progress, checkpoint, lease_ms: None };
        match self.store.heartbeat(hb, crate::now()).await {
            Ok(ack) => {
                if ack.cancel_requested {
                    self.cancel.cancel();
                }
                Ok(())
            }
            Err(e @ (StoreError::StaleLease | StoreError::NotFound(_))) => {
                self.lost.store(true, Ordering::Release);
                self.cancel.cancel();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// A running job as its handler sees it.
pub struct JobContext {
    pub(crate) link: Arc<RunLink>,
}

impl JobContext {
    pub fn job(&self) -> &Job {
        &self.link.job
    }

    /// The payload, decoded. A payload of the wrong shape is a permanent failure.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, Fail> {
        serde_json::from_str(self.link.job.payload.get())
            .map_err(|e| Fail::permanent(format!("payload: {e}")))
    }

    /// The number of this run among the runs that used an attempt (from 1).
    pub fn attempt(&self) -> i64 {
        self.link.job.attempt
    }

    /// The last checkpoint an earlier run saved, decoded (`None` on a first run).
    pub fn checkpoint<T: DeserializeOwned>(&self) -> Result<Option<T>, Fail> {
        match &self.link.job.checkpoint {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|e| Fail::permanent(format!("checkpoint: {e}"))),
        }
    }

    /// This run's fencing token, for the handler's own downstream writes.
    pub fn lease(&self) -> LeaseToken {
        self.link.lease
    }

    /// Reports progress; it travels with the next heartbeat (within a fraction of a second).
    pub fn progress(&self, done: i64, total: Option<i64>, message: Option<&str>) {
        let p = Progress { done, total, message: message.map(str::to_owned) };
        *self.link.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
        self.link.progress_changed.notify_one();
    }

    /// Saves a checkpoint and returns once it is durable. A later run of this job (after this
    /// worker died, say) receives it from [`JobContext::checkpoint`].
    pub async fn save_checkpoint<T: Serialize>(&self, value: &T) -> Result<(), Fail> {
        let text = serde_json::to_string(value).map_err(|e| Fail::permanent(format!("checkpoint: {e}")))?;
        let raw =
            serde_json::value::RawValue::from_string(text).map_err(|e| Fail::permanent(e.to_string()))?;
        self.link.beat(Some(raw)).await.map_err(|e| match e {
            StoreError::StaleLease | StoreError::NotFound(_) => Fail::retry("the lease was lost"),
            other => Fail::retry(format!("checkpoint not saved: {other}")),
        })
    }

    /// Marks the result as a partial success (some items left undone).
    pub fn mark_partial(&self) {
        self.link.partial.store(true, Ordering::Release);
    }

    /// Submits children of this job (each `NewJob`'s `parent` is set to it): the job's
    /// `children` counts them as they end.
    pub async fn submit_children(&self, jobs: Vec<NewJob>) -> Result<Vec<Submitted>, StoreError> {
        let jobs = jobs.into_iter().map(|j| NewJob { parent: Some(self.link.job.id), ..j }).collect();
        self.link.store.submit(jobs, crate::now()).await
    }

    /// Ends this run without ending the job: it runs again (its fan-in, no attempt used) once
    /// every child has ended, and sees them then in [`Job::children`] (`fan_in` set). The value
    /// the handler returns is kept as the job's result meanwhile.
    pub fn await_children(&self) {
        self.link.await_children.store(true, Ordering::Release);
    }

    /// This run is the fan-in: the job awaited its children and they have all ended.
    pub fn is_fan_in(&self) -> bool {
        self.link.job.fan_in
    }

    /// Completes when the run should stop: the job was cancelled, its lease was lost, its
    /// timeout passed, or the runtime is shutting down.
    pub async fn cancelled(&self) {
        self.link.cancel.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.link.cancel.is_cancelled()
    }
}
