//! Who may use the dashboard, and protection against cross-site requests.
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
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drove_core::Millis;
use hmac::{Hmac, KeyInit, Mac};
use maud::html;
use serde::Deserialize;
use sha2::Sha256;

use super::view::{self, Chrome, Nav, PageError, PageForm, PageQuery};
use crate::AppState;
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
        expires > now.0 && crate::same(given.as_bytes(), mac(token, expires).as_bytes())
    })
}

/// Whether the request carries the token as `Authorization: Bearer`.
pub fn has_bearer(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    crate::same(given.as_bytes(), token.as_bytes())
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

/// Only a local path is a place to return to after logging in: no `//host` or `\` (other sites
/// to a browser), and no control character or whitespace anywhere (browsers drop tabs and
/// newlines from URLs, so `/\t/evil.example` becomes `//evil.example`).
fn local_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.chars().any(|c| c == '\\' || c.is_control() || c.is_whitespace()) =>
        {
            n
        }
        _ => "/",
    }
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

fn login_page(status: StatusCode, next: &str, failed: bool) -> Response {
    let chrome = Chrome { title: "Log in", nav: Nav::None, auth: false, live_ms: 0 };
    let body = html! {
        section.login {
            h1 { "Log in" }
            p { "This Drove server needs its token (the one given to " code { "drove serve --token" } ")." }
            @if failed { p.flash.error-message role="alert" { "That is not the token." } }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label { "Token" input #token type="password" name="token" autocomplete="current-password" required autofocus; }
                button.primary #login type="submit" { "Log in" }
            }
        }
    };
    view::html_response(status, view::layout(&chrome, body))
}

/// GET /login
pub async fn login_form(State(st): State<AppState>, PageQuery(q): PageQuery<LoginQuery>) -> Response {
    let next = local_next(q.next.as_deref());
    if st.config.token.is_none() {
        return view::see_other(next);
    }
    login_page(StatusCode::OK, next, false)
}

/// POST /login
pub async fn login(
    State(st): State<AppState>,
    headers: HeaderMap,
    PageForm(form): PageForm<LoginForm>,
) -> Response {
    let next = local_next(form.next.as_deref());
    let Some(token) = st.config.token.as_deref() else {
        return view::see_other(next);
    };
    if !crate::same(form.token.as_bytes(), token.as_bytes()) {
        return login_page(StatusCode::UNAUTHORIZED, next, true);
    }
    let expires = drove_engine::now().plus_ms(SESSION_MS);
    // Secure when the browser says the page is https (it sends Origin with every form POST), so
    // the cookie also works on plain http://127.0.0.1.
    let https = headers.get(header::ORIGIN).is_some_and(|o| o.as_bytes().starts_with(b"https://"));
    let cookie = format!(
        "{COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        session_value(token, expires),
        SESSION_MS / 1_000,
        if https { "; Secure" } else { "" }
    );
    with_cookie(view::see_other(next), &cookie)
}

/// POST /logout
pub async fn logout(State(st): State<AppState>) -> Response {
    let to = if st.config.token.is_some() { "/login" } else { "/" };
    let cookie = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    with_cookie(view::see_other(to), &cookie)
}

fn with_cookie(mut resp: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
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
    fn only_local_paths_are_returned_to() {
        assert_eq!(local_next(Some("/jobs?state=failed")), "/jobs?state=failed");
        assert_eq!(local_next(Some("//evil.example/")), "/");
        assert_eq!(local_next(Some("/\\evil.example")), "/");
        assert_eq!(local_next(Some("https://evil.example/")), "/");
        // The report: `next=/%09/evil.example` answered `Location: /\t/evil.example`.
        assert_eq!(local_next(Some("/\t/evil.example")), "/");
        assert_eq!(local_next(Some("/\u{7f}/evil.example")), "/");
        assert_eq!(local_next(Some("/ /evil.example")), "/");
        assert_eq!(local_next(None), "/");
    }
}
