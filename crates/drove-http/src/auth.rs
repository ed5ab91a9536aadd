//! Who may use the server: the token (as `Authorization: Bearer` or the dashboard's session
//! cookie), the `Host` check of a server without a token, and protection against cross-site
//! requests. One middleware ([`auth`]) applies all three to every request, API and dashboard.
//!
//! **Tokenless servers and DNS rebinding.** Without a token, anything that can reach the port
//! may use the API; a web page can reach a loopback port too, by rebinding its own DNS name to
//! 127.0.0.1. Such requests carry the attacker's name in `Host`, so a tokenless server answers
//! only requests addressed to it by a loopback name or an address it listens on ([`HostPolicy`]).
//!
//!
//! **Login.** With a token configured, the login form takes the token and sets a session
//! cookie: `v1.EXPIRES.HMAC-SHA256(token, EXPIRES)`, HttpOnly and SameSite=Strict. The server
//! keeps no session table: any node holding the same token accepts the cookie (behind a load
//! balancer too), a cookie ends after [`SESSION_MS`], and changing the token ends every session.
//! `Authorization: Bearer` works everywhere as before; /healthz and /readyz stay open.
//!
//! **Cross-site requests.** Rather than CSRF tokens, every state-changing request (any method
//! but GET, HEAD, OPTIONS), to the dashboard and the API alike, token or not, is refused when
//! the browser says it comes from another origin: `Sec-Fetch-Site` other than `same-origin` or
//! `none` (user-typed), or, from browsers that do not send it, an `Origin` whose host is not
//! ours. This needs no per-form state (nodes need not share anything; forms work with
//! JavaScript off), also covers a server run without a token (where there is no cookie for
//! SameSite to withhold) and sibling origins on the same site (another port on localhost), which
//! SameSite alone lets through. Clients that are not browsers (curl, `drove worker`, Node's
//! fetch) send neither header and are unaffected. SameSite=Strict stays as the second layer.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use drove_core::Millis;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::AppState;
use crate::dashboard::view::{self, PageError};
use crate::error::ApiError;

pub const COOKIE: &str = "drove_session";
/// How long a login lasts.
pub const SESSION_MS: i64 = 12 * 3_600_000;

/// Paths of the HTML dashboard (everything but the API, metrics and the probes).
pub fn is_dashboard(path: &str) -> bool {
    !(path == "/v1" || path.starts_with("/v1/") || matches!(path, "/metrics" | "/healthz" | "/readyz"))
}

/// Dashboard paths that need no login: the login form itself, logging out, and the assets the
/// login page uses.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/login" | "/logout" | "/assets/app.css" | "/assets/live.js")
}

fn mac(token: &str, expires: i64) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
    m.update(b"drove dashboard session v1:");
    m.update(expires.to_string().as_bytes());
    m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The cookie value of a session ending at `expires`.
pub fn session_value(token: &str, expires: Millis) -> String {
    format!("v1.{}.{}", expires.0, mac(token, expires.0))
}

/// Whether the request carries a session cookie for `token` that has not ended.
pub fn has_session(headers: &HeaderMap, token: &str, now: Millis) -> bool {
    let cookies = headers.get_all(header::COOKIE).into_iter().filter_map(|v| v.to_str().ok());
    let mut values = cookies.flat_map(|c| c.split(';')).filter_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then_some(value)
    });
    values.any(|value| {
        let mut parts = value.splitn(3, '.');
        let (Some("v1"), Some(expires), Some(given)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        let Ok(expires) = expires.parse::<i64>() else { return false };
        expires > now.0 && same(given.as_bytes(), mac(token, expires).as_bytes())
    })
}

/// Whether the request carries the token as `Authorization: Bearer`.
pub fn has_bearer(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    same(given.as_bytes(), token.as_bytes())
}

/// Whether a browser marked this request as sent from another origin (see the module docs).
pub fn cross_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false; // not a browser, or one too old to tell: SameSite still applies
    };
    let authority = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (authority, host) {
        (Some(a), Some(h)) => !a.eq_ignore_ascii_case(h),
        _ => true, // `Origin: null` (sandboxed or privacy-redirected) or no Host: refuse
    }
}

/// The answer to a cross-origin state-changing request.
pub fn refuse_cross_origin(path: &str) -> Response {
    let message = "cross-origin request refused: state-changing requests must come from this \
                   server's own pages (or from a client that is not a browser)";
    if is_dashboard(path) {
        PageError::new(StatusCode::FORBIDDEN, message).into_response()
    } else {
        ApiError::new(StatusCode::FORBIDDEN, "cross_origin", message).into_response()
    }
}

/// The answer to a request without valid credentials: the login form for dashboard pages
/// (GET), a page saying so for dashboard forms, the API's 401 for everything else.
pub fn refuse_unauthenticated(req: &Request) -> Response {
    let path = req.uri().path();
    if !is_dashboard(path) {
        return ApiError::unauthorized().into_response();
    }
    let here = req.uri().path_and_query().map_or(path, |p| p.as_str());
    let login = format!("/login{}", view::query(&[("next", here)]));
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return view::see_other(&login);
    }
    PageError::new(StatusCode::UNAUTHORIZED, "your session ended: log in again, then repeat the action")
        .with_back(login, "Log in")
        .into_response()
}

/// The `Host` names a server without a token answers: loopback names, an IP literal it listens
/// on, or a name it was told to accept (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// Names accepted besides `localhost` (and `*.localhost`) and loopback IPs.
    pub names: Vec<String>,
    /// Accept any IP literal (the server listens on every address).
    pub any_ip: bool,
    /// IP literals accepted besides loopback (the address the server listens on).
    pub ips: Vec<std::net::IpAddr>,
}

impl HostPolicy {
    /// Whether a request with this `Host` (absent: not a browser, accepted) may be answered.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        let name = strip_port(host).to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            return ip.is_loopback() || self.any_ip || self.ips.contains(&ip);
        }
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// `host:port`, `[v6]:port`, `[v6]` or `host` -> the host part.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().map_or(host, |h| &host[..h.len() + 2]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who may do what (the module docs give the reasons):
/// 1. a state-changing request a browser marks as cross-origin is refused (403), token or not;
/// 2. with a token, every path but the probes and the login page needs `Authorization: Bearer`
///    or the dashboard's session cookie; dashboard pages send people to the login form.
pub async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !req.method().is_safe() && cross_origin(req.headers()) {
        return refuse_cross_origin(path);
    }
    if st.config.token.is_none() {
        let host = req.headers().get(header::HOST).map(|h| h.to_str().unwrap_or("\u{fffd}"));
        if !st.config.hosts.allows(host) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                "this server has no token and answers only requests addressed to it by a loopback \
                 name or an address it listens on (a guard against DNS rebinding); set a token, or \
                 name the host with --allowed-host",
            )
            .into_response();
        }
    }
    if let Some(token) = &st.config.token {
        let open = path == "/healthz" || path == "/readyz" || is_public(path);
        let allowed = open
            || has_bearer(req.headers(), token)
            || has_session(req.headers(), token, drove_engine::now());
        if !allowed {
            return refuse_unauthenticated(&req);
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn sessions_are_bound_to_the_token_and_expire() {
        let now = Millis(1_000_000);
        let value = session_value("s3cret", now.plus_ms(10));
        let ok = headers(&[("cookie", &format!("other=1; {COOKIE}={value}"))]);
        assert!(has_session(&ok, "s3cret", now));
        assert!(!has_session(&ok, "other-token", now));
        assert!(!has_session(&ok, "s3cret", now.plus_ms(10)));
        let forged = value.replace("v1.1000010.", "v1.9999999999999.");
        assert!(!has_session(&headers(&[("cookie", &format!("{COOKIE}={forged}"))]), "s3cret", now));
        assert!(!has_session(&headers(&[("cookie", &format!("{COOKIE}=s3cret"))]), "s3cret", now));
        assert!(!has_session(&HeaderMap::new(), "s3cret", now));
    }

    #[test]
    fn cross_origin_is_what_browsers_say() {
        assert!(!cross_origin(&headers(&[])));
        assert!(!cross_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!cross_origin(&headers(&[("sec-fetch-site", "none")])));
        assert!(cross_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(cross_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!cross_origin(&headers(&[("origin", "http://127.0.0.1:7070"), ("host", "127.0.0.1:7070")])));
        assert!(cross_origin(&headers(&[("origin", "http://127.0.0.1:7071"), ("host", "127.0.0.1:7070")])));
        assert!(cross_origin(&headers(&[("origin", "null"), ("host", "127.0.0.1:7070")])));
    }

    #[test]
    fn tokenless_servers_answer_loopback_hosts_only() {
        let p = HostPolicy::default();
        for ok in [
            None,
            Some("localhost"),
            Some("localhost:7070"),
            Some("127.0.0.1:7070"),
            Some("[::1]:7070"),
            Some("[::1]"),
            Some("app.localhost:80"),
            Some("LOCALHOST."),
            Some("127.1.2.3"),
        ] {
            assert!(p.allows(ok), "{ok:?}");
        }
        // A rebound name passes the browser's Origin check but not this one.
        for bad in [
            Some("evil.example:7070"),
            Some("evil.example"),
            Some("10.0.0.5:7070"),
            Some("localhost.evil.example"),
            Some(""),
        ] {
            assert!(!p.allows(bad), "{bad:?}");
        }
        let named = HostPolicy { names: vec!["jobs.internal".into()], ..Default::default() };
        assert!(named.allows(Some("jobs.internal:7070")));
        let all = HostPolicy { any_ip: true, ..Default::default() };
        assert!(all.allows(Some("10.0.0.5:7070")));
        assert!(!all.allows(Some("evil.example")));
    }
}
