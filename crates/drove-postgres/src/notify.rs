//! How every node's hub learns of commits: one dedicated connection per store instance that
//! LISTENs on the schema's channel and also sends this instance's NOTIFYs.
//!
//! A transition tells its own node's hub directly once it committed (with the finished job in
//! hand), and queues a few lines for the other nodes, which the listener task sends in batches
//! as `pg_notify` calls on its own connection, outside the transition's transaction. The reason
//! is a cost of PostgreSQL's NOTIFY: a transaction that notifies takes a database-wide lock at
//! commit and keeps it until its commit record is flushed, so notifying inside every transition
//! would serialise all commits behind one fsync each. Sent apart, transitions keep group commit
//! and one notifying statement (with `synchronous_commit = off`: it holds no data) carries
//! whatever committed meanwhile. The price: a node that dies between a commit and its NOTIFY
//! leaves the others' waiters to their fallbacks (claimers re-check within `max_idle`, job
//! waiters when their wait ends), as does a lost listener connection, after which the hub is
//! told to wake every waiter (`Hub::wake_all`) once it is back.
//!
//! A payload is lines: the sending instance's id, then `r QUEUE` (jobs may be claimable),
//! `s MILLIS` (a job was scheduled for then) and `j QUEUE STATE ID...` (jobs changed state).
//! Only ids and queue names travel, never jobs, so payloads stay under NOTIFY's 8000-byte limit;
//! a node reads a finished job only when one of its waiters watches it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use drove_core::{JobId, JobState, Millis};
use drove_store::{Event, Hub};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::db::{Shared, TxFuture, backoff};
use crate::row::{JOB_COLS, job_from_row};
use crate::tx::Effects;

/// Largest payload sent (NOTIFY refuses 8000 bytes and more).
const MAX_PAYLOAD: usize = 7_900;
/// Most lines kept for other nodes while the listener connection is down; older ones are
/// dropped (the other nodes fall back on polling for those).
const MAX_PENDING_LINES: usize = 100_000;

/// What a committed transaction leaves for the listener task.
pub(crate) enum Outgoing {
    /// Lines for the other nodes.
    Lines(Vec<String>),
    /// Jobs that finished while nobody here watched them: a waiter may have started watching
    /// between the transition and its commit, so those watched now are read and delivered.
    Recheck(Vec<i64>),
}

/// The lines other nodes need about a committed transaction.
pub(crate) fn lines_for_others(fx: &Effects) -> Vec<String> {
    let mut lines = Vec::new();
    for q in &fx.ready {
        lines.push(format!("r {q}"));
    }
    if let Some(at) = fx.scheduled {
        lines.push(format!("s {}", at.0));
    }
    for ((queue, state), ids) in &fx.announce {
        // Ids are at most 20 bytes with their separator: 200 of them keep a line far below
        // the payload limit.
        for chunk in ids.chunks(200) {
            let mut line = format!("j {queue} {state}");
            for id in chunk {
                line.push(' ');
                line.push_str(&id.to_string());
            }
            lines.push(line);
        }
    }
    lines
}

/// Packs pending lines into payloads under the limit, each starting with the sender's id.
/// Ready queues and the scheduled time are sent once however often they were reported.
fn pack<'a>(instance: &str, batches: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut ready = BTreeSet::new();
    let mut scheduled: Option<i64> = None;
    let mut jobs = Vec::new();
    for line in batches {
        if let Some(q) = line.strip_prefix("r ") {
            ready.insert(q);
        } else if let Some(at) = line.strip_prefix("s ").and_then(|v| v.parse::<i64>().ok()) {
            scheduled = Some(scheduled.map_or(at, |s| s.min(at)));
        } else {
            jobs.push(line.as_str());
        }
    }
    let mut out = Vec::new();
    let mut current = instance.to_owned();
    let mut add = |line: &str| {
        if current.len() + 1 + line.len() > MAX_PAYLOAD {
            out.push(std::mem::replace(&mut current, instance.to_owned()));
        }
        current.push('\n');
        current.push_str(line);
    };
    for q in ready {
        add(&format!("r {q}"));
    }
    if let Some(at) = scheduled {
        add(&format!("s {at}"));
    }
    for line in jobs {
        add(line);
    }
    if current.len() > instance.len() {
        out.push(current);
    }
    out
}

/// Applies another instance's payload to this node's hub. Returns the ids of finished jobs
/// watched here, which the caller reads and hands to the hub.
fn apply(payload: &str, instance: &str, hub: &Hub) -> Vec<i64> {
    let mut lines = payload.lines();
    if lines.next().is_none_or(|sender| sender == instance) {
        // Our own: this node's hub heard of it at commit.
        return Vec::new();
    }
    let mut watched = Vec::new();
    for line in lines {
        let mut parts = line.split(' ');
        match parts.next() {
            Some("r") => {
                if let Some(q) = parts.next() {
                    hub.queue_ready(q);
                }
            }
            Some("s") => {
                if let Some(at) = parts.next().and_then(|v| v.parse().ok()) {
                    hub.scheduled(Millis(at));
                }
            }
            Some("j") => {
                let (Some(queue), Some(state)) =
                    (parts.next(), parts.next().and_then(|s| s.parse().ok()).and_then(JobState::from_code))
                else {
                    continue;
                };
                let subscribed = hub.has_subscribers();
                let queue: Arc<str> = queue.into();
                for id in parts.filter_map(|v| v.parse::<i64>().ok()) {
                    if state.is_terminal() && hub.is_watched(JobId(id)) {
                        watched.push(id);
                    }
                    if subscribed {
                        hub.publish(Event { id: JobId(id), queue: Arc::clone(&queue), state });
                    }
                }
            }
            _ => {}
        }
    }
    watched
}

/// Reads finished jobs watched on this node and wakes their watchers. If they cannot be
/// read, every waiter is told to look for itself.
async fn wake_watchers(shared: Arc<Shared>, ids: Vec<i64>) {
    let read = shared
        .read(move |c| -> TxFuture<'_, _> {
            let ids = ids.clone();
            Box::pin(async move {
                let st = c.prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ANY($1)")).await?;
                let rows = c.query(&st, &[&ids]).await?;
                rows.iter().map(job_from_row).collect::<Result<Vec<_>, _>>()
            })
        })
        .await;
    match read {
        Ok(jobs) => {
            for job in jobs.into_iter().filter(|j| j.state.is_terminal()) {
                shared.hub.job_finished(Arc::new(job));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read finished jobs; waking every waiter");
            shared.hub.wake_all();
        }
    }
}

/// Forwards the connection's notifications until it fails or closes.
/// The listener connection's stream: plain or TLS, as the store's `sslmode` says.
type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

async fn drive(mut conn: Connection<Socket, Stream>, tx: mpsc::UnboundedSender<String>) {
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                if tx.send(n.payload().to_owned()).is_err() {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "listener connection ended");
                return;
            }
            None => return,
        }
    }
}

/// The listener task of one store instance.
pub(crate) struct Listener {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub channel: String,
    pub instance: String,
    pub shared: Arc<Shared>,
    pub outbox: mpsc::UnboundedReceiver<Outgoing>,
    pub shutdown: CancellationToken,
    /// Told once the first LISTEN is in place.
    pub ready: Option<oneshot::Sender<()>>,
}

impl Listener {
    pub async fn run(mut self) {
        let mut pending: Vec<Vec<String>> = Vec::new();
        let mut first = true;
        let mut failures = 0;
        loop {
            let connected = tokio::select! {
                c = self.config.connect(self.tls.clone()) => c,
                _ = self.shutdown.cancelled() => return,
            };
            let (client, connection) = match connected {
                Ok(c) => c,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %crate::error::describe(&e), "listener cannot connect; retrying");
                    if self.pause(failures).await {
                        return;
                    }
                    continue;
                }
            };
            let (note_tx, mut notes) = mpsc::unbounded_channel();
            let driver = tokio::spawn(drive(connection, note_tx));
            let setup = async {
                client
                    .batch_execute(&format!("SET synchronous_commit = off; LISTEN \"{}\"", self.channel))
                    .await?;
                client.prepare("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p").await
            }
            .await;
            let notify = match setup {
                Ok(st) => st,
                Err(e) => {
                    driver.abort();
                    failures += 1;
                    tracing::warn!(error = %crate::error::describe(&e), "listener cannot LISTEN; retrying");
                    if self.pause(failures).await {
                        return;
                    }
                    continue;
                }
            };
            failures = 0;
            if first {
                first = false;
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(());
                }
            } else {
                // Whatever was notified while we were away is lost: every waiter looks for
                // itself once.
                tracing::info!("listener reconnected; waking every waiter");
                self.shared.hub.wake_all();
            }
            let stop = self.serve(&client, &notify, &mut notes, &mut pending).await;
            driver.abort();
            if stop {
                return;
            }
        }
    }

    /// Serves one connection: applies incoming payloads, sends outgoing lines. Returns true
    /// when the store is closing.
    async fn serve(
        &mut self,
        client: &Client,
        notify: &tokio_postgres::Statement,
        notes: &mut mpsc::UnboundedReceiver<String>,
        pending: &mut Vec<Vec<String>>,
    ) -> bool {
        loop {
            if !pending.is_empty() {
                let payloads = pack(&self.instance, pending.iter().flatten());
                match client.execute(notify, &[&self.channel, &payloads]).await {
                    Ok(_) => pending.clear(),
                    Err(e) => {
                        tracing::warn!(error = %crate::error::describe(&e), "cannot NOTIFY; reconnecting");
                        return false;
                    }
                }
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    // Send what committed before the close, then stop.
                    while let Ok(out) = self.outbox.try_recv() {
                        if let Outgoing::Lines(lines) = out {
                            pending.push(lines);
                        }
                    }
                    if !pending.is_empty() {
                        // Bounded: a close must not hang on a database that stopped answering.
                        let payloads = pack(&self.instance, pending.iter().flatten());
                        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&self.channel, &payloads];
                        let send = client.execute(notify, &params);
                        let _ = tokio::time::timeout(Duration::from_secs(2), send).await;
                    }
                    return true;
                }
                note = notes.recv() => match note {
                    Some(payload) => {
                        let watched = apply(&payload, &self.instance, &self.shared.hub);
                        if !watched.is_empty() {
                            tokio::spawn(wake_watchers(Arc::clone(&self.shared), watched));
                        }
                    }
                    None => return false,
                },
                out = self.outbox.recv() => match out {
                    Some(first) => {
                        let mut recheck = Vec::new();
                        let mut next = Some(first);
                        while let Some(out) = next {
                            match out {
                                Outgoing::Lines(lines) => pending.push(lines),
                                Outgoing::Recheck(ids) => recheck.extend(ids),
                            }
                            next = self.outbox.try_recv().ok();
                        }
                        recheck.retain(|id| self.shared.hub.is_watched(JobId(*id)));
                        if !recheck.is_empty() {
                            tokio::spawn(wake_watchers(Arc::clone(&self.shared), recheck));
                        }
                        let mut total: usize = pending.iter().map(Vec::len).sum();
                        while total > MAX_PENDING_LINES && pending.len() > 1 {
                            total -= pending.remove(0).len();
                            tracing::warn!("too many notifications waiting for the listener; dropping the oldest");
                        }
                    }
                    None => return true,
                },
            }
        }
    }

    /// Waits before reconnecting; true when the store closed meanwhile.
    async fn pause(&self, failures: u32) -> bool {
        let wait = backoff(failures + 4).max(Duration::from_millis(50));
        tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = self.shutdown.cancelled() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_limit_and_merge_repeats() {
        let mut fx = Effects::default();
        fx.ready = vec!["q".into()];
        fx.scheduled = Some(Millis(50));
        fx.announce.insert(("q".into(), 3), (0..5_000).map(|i| i64::MAX - i).collect());
        let mut again = Effects::default();
        again.ready = vec!["q".into()];
        again.scheduled = Some(Millis(40));
        let batches = [lines_for_others(&fx), lines_for_others(&again)];
        let payloads = pack("me", batches.iter().flatten());
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() < 8_000 && p.starts_with("me\n")));
        let all: String = payloads.join("\n");
        assert_eq!(all.matches("\nr q").count(), 1);
        assert_eq!(all.matches("\ns ").count(), 1);
        assert!(all.contains("\ns 40"));
        let ids: usize = all.lines().filter(|l| l.starts_with("j ")).map(|l| l.split(' ').count() - 3).sum();
        assert_eq!(ids, 5_000);
    }

    #[tokio::test]
    async fn payloads_from_this_instance_are_ignored_and_others_reach_the_hub() {
        let hub = Hub::new();
        let notify = hub.queue_notify("q");
        let mut events = hub.subscribe();
        assert!(apply("me\nr q\nj q 3 7", "me", &hub).is_empty());
        let waiting = notify.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        let _watch = hub.watch_job(JobId(7));
        let watched = apply("other\nr q\nj q 3 7 8\ns 99", "me", &hub);
        assert_eq!(watched, vec![7]);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("queue notified");
        assert_eq!(events.try_recv().unwrap().id, JobId(7));
        assert_eq!(events.try_recv().unwrap().id, JobId(8));
        assert_eq!(hub.take_scheduled_hint(), Some(Millis(99)));
    }
}
