//! What the dashboard tests share: a real server on 127.0.0.1:0 over a real SQLite file, and
//! the store calls that move jobs through their states the way workers do.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

pub mod browser;

use std::sync::Arc;
use std::time::Duration;

use drove_core::{FailKind, Job, JobId, LeaseToken, Progress, RawJson};
use drove_engine::{Engine, EngineConfig};
use drove_http::{AppState, HttpConfig, app};
use drove_sqlite::{SqliteOptions, SqliteStore};
use drove_store::{ClaimRequest, Finish, Heartbeat, HeartbeatAck, NewJob, Outcome, Store};
use tokio_util::sync::CancellationToken;

/// Text that runs script if a page fails to escape it (the `"` also tests attribute quoting).
pub const EVIL: &str = r#"<script>window.__drove_xss=1</script><img src=x onerror="window.__drove_xss=2">"#;

pub struct Server {
    pub base: String,
    pub engine: Engine,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start(token: Option<&str>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("drove.db"))).unwrap();
        let engine = Engine::start(Arc::new(store), EngineConfig::default());
        let mut config = HttpConfig::for_payload(1 << 20);
        config.token = token.map(str::to_owned);
        let router = app(AppState::new(engine.clone(), config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(until.cancelled_owned()).await.unwrap();
        });
        Server { base, engine, stop, _dir: dir }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn submit(&self, job: NewJob) -> Job {
        self.engine.submit(vec![job]).await.unwrap().pop().unwrap().job
    }

    pub async fn job(&self, id: JobId) -> Job {
        self.store().get_job(id).await.unwrap().expect("the job exists")
    }

    /// Claims the next job of `queue` as a worker would (a long lease: tests end runs
    /// themselves).
    pub async fn claim(&self, queue: &str) -> (Job, LeaseToken) {
        let req = ClaimRequest {
            queue: queue.into(),
            worker: "test-worker".into(),
            max: 1,
            lease_ms: Some(600_000),
        };
        let mut out = self.store().claim(req, drove_engine::now()).await.unwrap();
        let c = out.jobs.pop().expect("a job to claim");
        (c.job, c.lease)
    }

    pub async fn progress(
        &self,
        id: JobId,
        lease: LeaseToken,
        done: i64,
        total: i64,
        message: &str,
    ) -> HeartbeatAck {
        let hb = Heartbeat {
            id,
            lease,
            progress: Some(Progress { done, total: Some(total), message: Some(message.into()) }),
            checkpoint: Some(json(&format!(r#"{{"next_page": {done}}}"#))),
            lease_ms: None,
        };
        self.store().heartbeat(hb, drove_engine::now()).await.unwrap()
    }

    pub async fn end(&self, id: JobId, lease: LeaseToken, outcome: Outcome) -> Job {
        self.engine.finish(vec![Finish { id, lease, outcome }]).await.unwrap().pop().unwrap().unwrap()
    }

    pub async fn complete(&self, id: JobId, lease: LeaseToken, result: &str, partial: bool) -> Job {
        self.end(id, lease, Outcome::Complete { result: Some(json(result)), partial }).await
    }

    pub async fn fail(&self, id: JobId, lease: LeaseToken, message: &str) -> Job {
        let outcome =
            Outcome::Fail { kind: FailKind::Permanent, message: message.into(), retry_after_ms: None };
        self.end(id, lease, outcome).await
    }

    /// A job that ran and failed for good with `message`.
    pub async fn failed_job(&self, queue: &str, message: &str) -> Job {
        let job = self.submit(NewJob::new(queue, json("{}"))).await;
        let (claimed, lease) = self.claim(queue).await;
        assert_eq!(claimed.id, job.id, "claimed the job just submitted");
        self.fail(job.id, lease, message).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn json(text: &str) -> RawJson {
    serde_json::value::RawValue::from_string(text.to_owned()).expect("valid JSON")
}

/// An HTTP client that shows redirects instead of following them.
/// rustls's ring provider as the process default (reqwest is built without one of its own).
pub fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn http() -> reqwest::Client {
    tls_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Waits (up to 30 s) until `check` holds, polling the store every 20 ms.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
