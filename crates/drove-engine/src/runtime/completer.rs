//! The completer: ends of runs go through one channel and reach the store in batches, one
//! store call (and, with group commit, one fsync) for many jobs. An end the store could not
//! take (it was unreachable) is retried until it is stored or the runtime dies.

use std::time::Duration;

use drove_store::{Finish, StoreError};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const MAX_BATCH: usize = 1_000;

pub(crate) struct CompleterHandle {
    tx: std::sync::Mutex<Option<mpsc::UnboundedSender<Finish>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl CompleterHandle {
    pub fn send(&self, f: Finish) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(f);
        }
    }

    /// Stops taking ends of runs and waits until those taken are stored.
    pub async fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

pub(crate) fn spawn(engine: crate::Engine, kill: CancellationToken) -> CompleterHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(engine, rx, kill));
    CompleterHandle { tx: std::sync::Mutex::new(Some(tx)), task: Mutex::new(Some(task)) }
}

async fn run(engine: crate::Engine, mut rx: mpsc::UnboundedReceiver<Finish>, kill: CancellationToken) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            _ = kill.cancelled() => return,
        };
        if n == 0 {
            return; // closed and drained
        }
        let mut pause = Duration::from_millis(50);
        loop {
            match engine.finish(batch.clone()).await {
                Ok(results) => {
                    for (f, r) in batch.iter().zip(results) {
                        match r {
                            Ok(_) => {}
                            Err(StoreError::StaleLease) => {
                                tracing::info!(job = %f.id, "the run's lease was lost before it ended; its end was refused")
                            }
                            Err(e) => {
                                tracing::warn!(job = %f.id, error = %e, "the end of a run was refused")
                            }
                        }
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, jobs = batch.len(), "could not store ends of runs; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = kill.cancelled() => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
    }
}
