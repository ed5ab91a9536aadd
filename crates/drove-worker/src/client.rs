//! A small client of the v1 API for workers and the CLI: retries what is safe to retry, and
//! tells "the server refused" (with the API's error code) from "the server was unreachable".

use std::time::Duration;

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
        matches!(self, ClientError::Unreachable(_)) || matches!(self, ClientError::Api { status: 503, .. })
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
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            // Under the server's idle timeout (60 s), so a pooled socket is never reused just as
            // the server closes it.
            .pool_idle_timeout(Duration::from_secs(45))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Client { http, base: base.trim_end_matches('/').to_owned(), token })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; `timeout` bounds the whole exchange (long polls pass their wait plus a
    /// margin).
    pub async fn call<T: DeserializeOwned>(
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
        let value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("{e}")))?;
        Ok((status, value))
    }

    /// Like [`Client::call`], retrying unreachable or 503 answers with backoff until `give_up`.
    pub async fn call_retrying<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
        give_up: Duration,
    ) -> Result<(u16, T), ClientError> {
        let start = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match self.call(method.clone(), path, body, timeout).await {
                Err(e) if e.is_retryable() && start.elapsed() < give_up => {
                    tracing::warn!(error = %e, path, "retrying");
                    tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }
}
