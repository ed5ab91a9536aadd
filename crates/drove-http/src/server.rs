//! The HTTP server loop: accepts connections within a cap and serves each with timeouts, so no
//! client, careless or hostile, can hold the node's sockets for ever.
//!
//! - Reading a request's head must finish within [`IDLE_TIMEOUT`], which is also how long an
//!   idle keep-alive connection is kept (hyper starts the head timer when the connection waits
//!   for its next request). Responses tell HTTP/1.1 clients with `Keep-Alive: timeout=`, a few
//!   seconds less, so they close idle sockets before the server does. A request being served
//!   (a long poll of up to 60 s) is never cut.
//! - Bodies must keep moving (see `extract::read_body`).
//! - At most `max_connections` are open; past it new connections wait in the listen backlog,
//!   and the node says so in its log.
//! - hyper's own answers to unparseable requests (400, 414, 431 with an empty body) are given
//!   the API's JSON error body.
//! - With a TLS configuration ([`crate::tls`]) every connection is TLS: the handshake runs in the
//!   connection's own task (a slow handshake never holds up `accept`) within the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a connection may take to send a request's head, and how long an idle keep-alive
/// connection is kept, by default.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How the server treats connections.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long in-flight requests may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
    /// How long a connection may take to send a request's head, and how long an idle
    /// keep-alive connection is kept (bodies: see [`crate::HttpConfig::body_stall`]).
    pub idle_timeout: Duration,
    /// Serve HTTPS with this configuration (`drove serve --tls-cert --tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
            idle_timeout: IDLE_TIMEOUT,
            tls: None,
        }
    }
}

/// The `Keep-Alive: timeout=` hint: a little under the idle timeout, so clients that honour it
/// (Node's agents, undici) never reuse a socket the server is closing.
fn keep_alive_hint_secs(idle: Duration) -> u64 {
    let secs = idle.as_secs();
    if secs > 10 { secs - 5 } else { secs.saturating_sub(1).max(1) }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish (within the grace) and returns.
pub async fn serve(listener: TcpListener, app: Router, cfg: ServeConfig, shutdown: CancellationToken) {
    let hint =
        HeaderValue::from_str(&format!("timeout={}", keep_alive_hint_secs(cfg.idle_timeout))).expect("ascii");
    let app = app.layer(axum::middleware::map_response(move |version: Version, resp| {
        let hint = hint.clone();
        async move { keep_alive_hint(version, hint, resp) }
    }));
    let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(cfg.idle_timeout).keep_alive(true);
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(
                        limit = cfg.max_connections,
                        "connection limit reached: new connections wait until one closes (--max-connections)"
                    );
                    last_full_warning = Some(Instant::now());
                }
                tokio::select! {
                    p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors or memory: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        match &cfg.tls {
            None => {
                let conn =
                    graceful.watch(builder.serve_connection(TokioIo::new(JsonErrors::new(stream)), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
                let (builder, watcher, idle) = (builder.clone(), graceful.watcher(), cfg.idle_timeout);
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = watcher
                        .watch(builder.serve_connection(TokioIo::new(JsonErrors::new(stream)), service));
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(cfg.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the shutdown grace");
    }
}

fn keep_alive_hint(
    version: Version,
    hint: HeaderValue,
    mut resp: axum::response::Response,
) -> axum::response::Response {
    if version == Version::HTTP_11 {
        resp.headers_mut().insert("keep-alive", hint);
    }
    resp
}

/// A connection whose outgoing bytes are watched for hyper's bodiless answer to a request it
/// could not parse (`HTTP/1.1 400 Bad Request` + `content-length: 0`, no content type; the API
/// itself never answers an error without a JSON body), which is replaced by the same status
/// with the API's JSON error body. The connection closes after it either way.
struct JsonErrors<S> {
    inner: S,
    /// Bytes still to send of a replaced answer.
    pending: Vec<u8>,
    sent: usize,
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    fn new(inner: S) -> JsonErrors<S> {
        JsonErrors { inner, pending: Vec::new(), sent: 0 }
    }

    fn flush_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

/// The JSON answer replacing hyper's bodiless one, if `head` is one.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let status_line = text.lines().next()?;
    let (code, message) = match status_line {
        "HTTP/1.1 400 Bad Request" | "HTTP/1.0 400 Bad Request" => {
            ("malformed_request", "the request could not be parsed as HTTP/1.1")
        }
        "HTTP/1.1 414 URI Too Long" | "HTTP/1.0 414 URI Too Long" => {
            ("uri_too_long", "the request's URI is too long")
        }
        "HTTP/1.1 431 Request Header Fields Too Large" | "HTTP/1.0 431 Request Header Fields Too Large" => {
            ("headers_too_large", "the request's headers are too large")
        }
        _ => return None,
    };
    let lower = text.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n")
        || lower.contains("\r\ncontent-type:")
        || !text.ends_with("\r\n\r\n")
    {
        return None;
    }
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.flush_pending(cx))?;
        if buf.starts_with(b"HTTP/1.")
            && buf.len() < 512
            && buf.get(9) == Some(&b'4')
            && let Some(replaced) = replacement(buf)
        {
            self.pending = replaced;
            self.sent = 0;
            // The caller's bytes count as written; ours go out now or on the next call.
            let _ = self.flush_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.flush_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.flush_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_parse_errors_are_replaced() {
        let hyper_400 =
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 12:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(hyper_400).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"));
        assert!(out.ends_with(r#"{"error":{"code":"malformed_request","message":"the request could not be parsed as HTTP/1.1"}}"#));
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(hyper_431).is_some());
        // The API's own errors carry a JSON body and a content type: untouched.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(ours).is_none());
        assert!(replacement(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
