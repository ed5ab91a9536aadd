//! A small client of the v1 API for workers and the CLI: retries what is safe to retry, and
//! tells "the server refused" (with the API's error code) from "the server was unreachable".
//!
//! While the server is unreachable, every request of one client (a worker's claims, every held
//! job's heartbeats, checkpoints and run ends) goes through one gate: one request at a time,
//! spaced by a capped, jittered backoff (0.1 s doubling to 1 s). However many jobs a worker
//! holds, it sends about one request a second until the server answers again, and then all of
//! them go on at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (its status and the API's error code).
    #[error("{status} {code}: {message}")]
    Api { status: u16, code: String, message: String },
    /// No answer: connection refused or reset, timeout. The request may be retried.
    #[error("the server did not answer: {0}")]
    Unreachable(String),
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Unreachable(_))
            || matches!(self, ClientError::Api { status: 502..=504, .. })
    }

    /// The server refused our credentials (401) or this client (403): retrying will not help.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Api { status: 401 | 403, .. })
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    gate: Arc<Gate>,
}

/// The first backoff after the server stopped answering, and the cap.
const GATE_FIRST: Duration = Duration::from_millis(100);
const GATE_CAP: Duration = Duration::from_secs(1);

/// Shared by a client's requests while the server is unreachable (see the module's doc).
#[derive(Default)]
struct Gate {
    offline: AtomicBool,
    /// Held by the one request that may go out while offline; holds when the next may.
    probe: tokio::sync::Mutex<Probe>,
}

#[derive(Default)]
struct Probe {
    next_try: Option<Instant>,
    pause: Duration,
}

impl Gate {
    fn failed(&self, probe: &mut Probe) {
        self.offline.store(true, Ordering::Release);
        probe.pause = if probe.pause.is_zero() { GATE_FIRST } else { (probe.pause * 2).min(GATE_CAP) };
        probe.next_try = Some(Instant::now() + probe.pause.mul_f64(0.5 + fastrand::f64() / 2.0));
    }

    fn answered(&self, probe: &mut Probe) {
        self.offline.store(false, Ordering::Release);
        *probe = Probe::default();
    }
}

/// Makes rustls's ring provider the process's default unless one is set already: HTTPS in
/// every HTTP client of the process (ours, and reqwest's in tests) uses it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        Client::with_ca(base, token, None)
    }

    /// A client that also trusts the certificates in `ca_file` (PEM) for `https://` servers,
    /// besides the system's roots (which `SSL_CERT_FILE` and `SSL_CERT_DIR` may name).
    pub fn with_ca(
        base: &str,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Client, ClientError> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder();
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Protocol(format!("cannot read the CA file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Protocol(format!("the CA file {} holds no PEM certificate: {e}", path.display()))
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .pool_max_idle_per_host(64)
            // Under the server's idle timeout (60 s), so a pooled socket is never reused just as
            // the server closes it.
            .pool_idle_timeout(Duration::from_secs(45))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Client { http, base: base.trim_end_matches('/').to_owned(), token, gate: Arc::default() })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the last request found the server unreachable (and the gate is closed).
    pub fn offline(&self) -> bool {
        self.gate.offline.load(Ordering::Acquire)
    }

    /// Sends a request; `timeout` bounds the whole exchange (long polls pass their wait plus a
    /// margin). While the server is unreachable it waits its turn at the gate.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
    ) -> Result<(u16, T), ClientError> {
        if self.gate.offline.load(Ordering::Acquire) {
            let mut probe = self.gate.probe.lock().await;
            if self.gate.offline.load(Ordering::Acquire) {
                if let Some(at) = probe.next_try {
                    tokio::time::sleep_until(at).await;
                }
                // While offline a long poll is not worth holding the gate for.
                let result = self.send(method, path, body, timeout.min(Duration::from_secs(10))).await;
                match &result {
                    Err(e) if e.is_retryable() => self.gate.failed(&mut probe),
                    _ => self.gate.answered(&mut probe),
                }
                return result;
            }
        }
        let result = self.send(method, path, body, timeout).await;
        if matches!(&result, Err(e) if e.is_retryable()) && !self.gate.offline.load(Ordering::Acquire) {
            let mut probe = self.gate.probe.lock().await;
            if !self.gate.offline.load(Ordering::Acquire) {
                self.gate.failed(&mut probe);
            }
        }
        result
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
    ) -> Result<(u16, T), ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).timeout(timeout);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        // Within an exported span (a run's end), the server's span of the request is its child.
        if let Some(tc) = drove_trace::context_of(&tracing::Span::current()) {
            req = req.header("traceparent", tc.traceparent);
            if let Some(ts) = tc.tracestate {
                req = req.header("tracestate", ts);
            }
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
        if status >= 400 {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(ClientError::Api {
                status,
                code: v["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
                message: v["error"]["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
            });
        }
        // An empty answer (204) reads as null.
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        let value = serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("{e}")))?;
        Ok((status, value))
    }

    /// Like [`Client::call`], retrying unreachable or 502-504 answers until `give_up` has
    /// passed (the gate spaces the tries).
    pub async fn call_retrying<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
        give_up: Duration,
    ) -> Result<(u16, T), ClientError> {
        let until = Instant::now() + give_up;
        let mut warned = false;
        loop {
            match self.call(method.clone(), path, body, timeout).await {
                Err(e) if e.is_retryable() && Instant::now() < until => {
                    if !warned {
                        tracing::warn!(error = %e, path, "the server does not answer; retrying");
                        warned = true;
                    }
                    // Spaced by the gate; a small pause too, should it have just reopened.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }
}
