//! Every acknowledged job survives a SIGKILL of the process that submitted it.
//!
//! The test re-runs its own binary as the child (`child_submits_until_killed`, which does
//! nothing unless `DROVE_CHILD_DB` is set): eight tasks submit jobs one at a time and print the
//! id of each acknowledged job. The parent kills the child with SIGKILL mid-stream, reopens the
//! database and looks for every id the child printed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use drove_core::{JobId, JobState};
use drove_sqlite::{SqliteOptions, SqliteStore};
use drove_store::{NewJob, Store};

#[test]
fn acknowledged_jobs_survive_sigkill_of_the_submitting_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("drove.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_submits_until_killed", "--nocapture", "--test-threads=1"])
        .env("DROVE_CHILD_DB", &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    let mut lines = stdout.lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.push(JobId(id.parse().unwrap()));
            if acked.len() == 300 {
                child.kill().unwrap(); // SIGKILL, mid-stream
                break;
            }
        }
    }
    // Acknowledgements printed before the kill are still in the pipe.
    for line in lines {
        if let Some(id) = line.unwrap().strip_prefix("ACK ") {
            acked.push(JobId(id.parse().unwrap()));
        }
    }
    child.wait().unwrap();
    assert!(acked.len() >= 300);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(SqliteOptions::new(&db)).expect("reopens after the kill");
        for id in &acked {
            let job = store.get_job(*id).await.unwrap();
            assert_eq!(job.map(|j| j.state), Some(JobState::Queued), "acknowledged job {id} lost");
        }
        let counts = store
            .get_queue("durable", drove_core::Millis::from_system_time(std::time::SystemTime::now()))
            .await
            .unwrap()
            .unwrap()
            .counts;
        assert!(counts.queued >= acked.len() as i64);
        store.close().await;
    });
}

/// The child: runs only when the parent test starts it.
#[test]
fn child_submits_until_killed() {
    let Some(db) = std::env::var_os("DROVE_CHILD_DB") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteOptions::new(db)).unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    loop {
                        let raw = serde_json::value::RawValue::from_string("{\"n\":1}".into()).unwrap();
                        let sub = store
                            .submit(
                                vec![NewJob::new("durable", raw)],
                                drove_core::Millis::from_system_time(std::time::SystemTime::now()),
                            )
                            .await
                            .unwrap();
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {}", sub[0].job.id).unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}
