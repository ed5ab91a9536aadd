//! The dashboard's login form and logout (the session cookie itself is `crate::auth`'s).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::view::{self, Chrome, Nav, PageForm, PageQuery};
use crate::AppState;
use crate::auth::{COOKIE, SESSION_MS, same, session_value};

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
    if !same(form.token.as_bytes(), token.as_bytes()) {
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
