//! What every page shares: the layout, the HTML response (with its security headers), the
//! error page, request extractors that answer in HTML, and small formatting helpers.
//!
//! Escaping: every value reaches the page through maud's `(expr)` splices, which escape `<`,
//! `>`, `&`, `"` and `'`. Nothing user-controlled is ever wrapped in `PreEscaped`; the only
//! `PreEscaped` text is our own (the doctype). URLs are built with [`path_seg`] and [`query`],
//! which percent-encode, and then escaped again as attribute values.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{self, CONTENT_LENGTH};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use drove_core::{JobId, JobState, Millis, Progress, RawJson};
use drove_store::StoreError;
use maud::{DOCTYPE, Markup, html};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Sent with every dashboard page. `script-src 'self'` means that even if some text escaped
/// escaping, no inline script or event handler (`onerror=`) would run; `frame-ancestors 'none'`
/// keeps the action buttons from being framed (clickjacking).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Jobs,
    Ops,
    Schedules,
    None,
}

/// What the layout needs besides the page's own content.
pub struct Chrome<'a> {
    pub title: &'a str,
    pub nav: Nav,
    /// A token is configured: show the log-out button.
    pub auth: bool,
    /// Re-fetch the page's `data-live` regions this often (0: never).
    pub live_ms: u32,
}

pub fn layout(c: &Chrome<'_>, content: Markup) -> Markup {
    let item = |nav: Nav, href: &str, label: &str| {
        html! { a href=(href) aria-current=[(c.nav == nav).then_some("page")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (c.title) " · Drove" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/assets/app.css";
                @if c.live_ms > 0 { script src="/assets/live.js" defer {} }
            }
            body data-live-ms=[(c.live_ms > 0).then_some(c.live_ms)] {
                header.top {
                    a.brand href="/" { "Drove" }
                    nav {
                        (item(Nav::Overview, "/", "Overview"))
                        (item(Nav::Jobs, "/jobs", "Jobs"))
                        (item(Nav::Ops, "/ops", "Operations"))
                        (item(Nav::Schedules, "/schedules", "Schedules"))
                    }
                    span #live-status {}
                    @if c.auth {
                        form.logout method="post" action="/logout" { button type="submit" { "Log out" } }
                    }
                }
                main { (content) }
            }
        }
    }
}

/// An HTML response with the dashboard's headers.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut resp = (status, markup.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    // Pages show live data and may show payloads: never served from a cache.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// After a form: back to a page with GET (post/redirect/get, so a reload does not resubmit).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A dashboard error: an HTML page with a fitting status (API errors stay JSON).
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
    /// Where to go from here (href, label).
    pub back: Option<(String, &'static str)>,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError { status, message: message.into(), back: None }
    }

    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn with_back(mut self, href: String, label: &'static str) -> PageError {
        self.back = Some((href, label));
        self
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        PageError::new(e.status, e.message)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        // The API's mapping (it also logs internal errors and hides their details).
        ApiError::from(e).into()
    }
}

impl From<drove_core::ValidationError> for PageError {
    fn from(e: drove_core::ValidationError) -> PageError {
        ApiError::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let chrome = Chrome { title: reason, nav: Nav::None, auth: false, live_ms: 0 };
        let body = html! {
            section.error-page {
                h1 { (self.status.as_u16()) " " (reason) }
                p.error-message { (self.message) }
                p {
                    @if let Some((href, label)) = &self.back { a href=(href) { (label) } " · " }
                    a href="/" { "Overview" }
                }
            }
        };
        html_response(self.status, layout(&chrome, body))
    }
}

/// A path segment (`{name}`, `{id}`); undecodable text is an HTML 404.
pub struct Seg(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Seg {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Seg(s))
            .map_err(|_| PageError::not_found("no such page"))
    }
}

impl Seg {
    pub fn job_id(&self) -> Result<JobId, PageError> {
        self.0.parse().map_err(|_| PageError::not_found(format!("job {} not found", self.0)))
    }
}

/// A query string parsed leniently into `T` (an HTML 400 when it does not fit).
pub struct PageQuery<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequestParts<S> for PageQuery<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PageError> {
        match parts.uri.query() {
            None | Some("") => Ok(PageQuery(T::default())),
            Some(q) => serde_urlencoded::from_str(q)
                .map(PageQuery)
                .map_err(|e| PageError::bad_request(format!("unreadable query string: {e}"))),
        }
    }
}

/// Largest form body the dashboard reads (its forms hold a few short fields).
const FORM_LIMIT: usize = 16 << 10;

/// An `application/x-www-form-urlencoded` body parsed into `T`.
pub struct PageForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for PageForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, _: &S) -> Result<Self, PageError> {
        let (parts, body): (Parts, Body) = req.into_parts();
        let length = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        // A form of a few short fields: 10 s without a byte is a stalled client.
        let bytes =
            crate::extract::read_body(body, FORM_LIMIT, length, std::time::Duration::from_secs(10)).await?;
        serde_urlencoded::from_bytes(&bytes)
            .map(PageForm)
            .map_err(|e| PageError::bad_request(format!("unreadable form: {e}")))
    }
}

// ---- formatting ---------------------------------------------------------------------------

/// Percent-encodes one URL path segment (everything but RFC 3986's unreserved characters).
pub fn path_seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?a=1&b=2` from the pairs whose value is not empty (`""` when none is).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        ser.append_pair(k, v);
        any = true;
    }
    if any { format!("?{}", ser.finish()) } else { String::new() }
}

pub fn queue_href(name: &str) -> String {
    format!("/queues/{}", path_seg(name))
}

pub fn job_href(id: JobId) -> String {
    format!("/jobs/{id}")
}

pub fn jobs_href(queue: &str, state: Option<JobState>) -> String {
    format!("/jobs{}", query(&[("queue", queue), ("state", state.map_or("", JobState::as_str))]))
}

/// `2026-11-23 13:33:05Z`
pub fn clock(t: Millis) -> String {
    let text = t.to_rfc3339();
    format!("{} {}Z", &text[..10], &text[11..19])
}

/// A duration for people: `850 ms`, `4.2 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1_000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1e3),
        60_000..3_600_000 => format!("{} min {} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// A point in time relative to `now`, with the exact time as its tooltip.
pub fn when(t: Millis, now: Millis) -> Markup {
    let d = now.since(t);
    let text = match d {
        -999..1_000 => "just now".to_owned(),
        1_000.. => format!("{} ago", duration(d)),
        _ => format!("in {}", duration(-d)),
    };
    html! { time datetime=(t.to_rfc3339()) title=(clock(t)) { (text) } }
}

pub fn opt_when(t: Option<Millis>, now: Millis) -> Markup {
    match t {
        Some(t) => when(t, now),
        None => html! { span.muted { "—" } },
    }
}

pub fn state_badge(state: JobState) -> Markup {
    html! { span class={ "badge state-" (state.as_str()) } data-state=(state.as_str()) { (state.as_str()) } }
}

/// A progress bar: a real `<progress>` (value/max) when the total is known, an indeterminate
/// one with the count otherwise.
pub fn progress_bar(p: Option<&Progress>, id: Option<&str>) -> Markup {
    let Some(p) = p else {
        return html! { span.muted { "no progress reported" } };
    };
    let message = p.message.as_deref().filter(|m| !m.is_empty());
    match p.total.filter(|t| *t > 0) {
        Some(total) => {
            let done = p.done.clamp(0, total);
            let pct = done * 100 / total;
            html! {
                span.progress {
                    progress id=[id] value=(done) max=(total) data-done=(p.done) data-total=(total) { (pct) "%" }
                    span.progress-text { (p.done) " / " (total) " (" (pct) "%)" @if let Some(m) = message { " · " (m) } }
                }
            }
        }
        None => html! {
            span.progress {
                progress id=[id] data-done=(p.done) { (p.done) }
                span.progress-text { (p.done) " done" @if let Some(m) = message { " · " (m) } }
            }
        },
    }
}

/// A running job's pace: items per second since its run started, and the time left at that
/// pace ("12.5/s · ETA 3m 20s"); nothing when it cannot be told.
pub fn progress_pace(job: &drove_core::Job, now: Millis) -> Markup {
    let (Some(p), Some(started)) = (job.progress.as_ref(), job.started_at) else {
        return html! {};
    };
    let elapsed_ms = now.since(started);
    if p.done <= 0 || elapsed_ms < 1_000 {
        return html! {};
    }
    let rate = p.done as f64 * 1_000.0 / elapsed_ms as f64;
    let eta = p.total.filter(|t| *t > p.done).map(|t| ((t - p.done) as f64 / rate * 1_000.0) as i64);
    html! {
        span.muted.pace {
            (format!("{rate:.1}/s"))
            @if let Some(ms) = eta { " · ETA " (duration(ms)) }
        }
    }
}

/// Shortens text for a table cell (whole characters; more of it goes in a tooltip).
pub fn clip(text: &str, max_chars: usize) -> Markup {
    if text.chars().count() <= max_chars {
        return html! { (text) };
    }
    let short: String = text.chars().take(max_chars).collect();
    // The tooltip is capped too: a list of 64 KiB error messages must not weigh megabytes.
    let tip: String = text.chars().take(1_000).collect();
    html! { span title=(tip) { (short) "…" } }
}

/// JSON as stored, indented for reading. Works on the text, so numbers and key order are shown
/// exactly as submitted. What is shown is bounded by its output, not its input: at most `max`
/// bytes are rendered, and indentation stops growing past [`MAX_INDENT`] levels, so no document
/// (however deep; stores before the API bounded depth may hold any) renders more than `max`
/// bytes. The API serves the whole document.
pub fn json_block(raw: Option<&RawJson>, max: usize) -> Markup {
    let Some(raw) = raw else {
        return html! { span.muted { "none" } };
    };
    let text = raw.get();
    let (shown, cut) = indent_json_bounded(text, max);
    html! {
        pre.json { (shown) }
        @if cut { p.muted { "Cut at " (max / 1024) " KiB of output (the document is " (text.len() / 1024) " KiB); the API has the whole document." } }
    }
}

/// Indentation stops growing at this depth (deeper levels are shown at this one).
pub const MAX_INDENT: usize = 16;

/// Re-indents JSON text (two spaces) without parsing it into numbers.
#[cfg(test)]
pub fn indent_json(text: &str) -> String {
    indent_json_bounded(text, usize::MAX).0
}

/// [`indent_json`] stopping once the output reaches `max` bytes; says whether it was cut.
pub fn indent_json_bounded(text: &str, max: usize) -> (String, bool) {
    let mut out = String::with_capacity(text.len().min(max).saturating_add(64));
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth.min(MAX_INDENT)));
    };
    while let Some(c) = chars.next() {
        if out.len() >= max {
            return (out, true);
        }
        if in_str {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                if chars.peek().is_some_and(|n| *n == '}' || *n == ']') {
                    out.extend(chars.next());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    (out, false)
}

/// A short banner after a form succeeded (`?done=WORD`; unknown words show nothing, so the
/// query string cannot inject text).
pub fn flash(done: Option<&str>) -> Markup {
    let text = match done.unwrap_or("") {
        "paused" => "Paused: no job of this queue starts, on any node, until it is resumed.",
        "resumed" => "Resumed: jobs of this queue start again.",
        "saved" => "Settings saved; every node applies them at once.",
        "unchanged" => "Nothing changed.",
        "cancelled" => "Cancelled.",
        "cancel_requested" => "Cancel requested: the worker sees it on its next heartbeat.",
        "retried" => "Queued again with attempt 0.",
        "schedule_paused" => "Paused: the schedule enqueues nothing until it is resumed.",
        "schedule_resumed" => {
            "Resumed: the next tick after now enqueues; ticks missed while paused are skipped."
        }
        "schedule_run" => "Enqueued now; the schedule's ticks are unchanged.",
        _ => return html! {},
    };
    html! { p.flash role="status" { (text) } }
}

/// What a waiting job waits for, in words.
pub fn waiting_text(w: drove_core::WaitingFor) -> &'static str {
    match w {
        drove_core::WaitingFor::Dependencies => "the jobs it depends on",
        drove_core::WaitingFor::Children => "its children (then it runs its fan-in)",
        drove_core::WaitingFor::Key => "the running job of its key (a follow-up)",
    }
}

/// An operation's progress and outcome: children ended of total, a bar, the counts, each
/// linking to the children behind it.
pub fn children_summary(
    parent: drove_core::JobId,
    state: drove_core::JobState,
    c: &drove_core::Children,
) -> Markup {
    let link = |st: &str| {
        let id = parent.to_string();
        if st.is_empty() {
            format!("/jobs{}", query(&[("parent", id.as_str())]))
        } else {
            format!("/jobs{}", query(&[("parent", id.as_str()), ("state", st)]))
        }
    };
    let outcome = drove_core::operation_outcome(state, c);
    let progress = drove_core::Progress { done: c.ended(), total: Some(c.total), message: None };
    html! {
        span.operation {
            span class={ "badge outcome-" (outcome) } { (outcome) } " "
            (progress_bar(Some(&progress), None)) " "
            a href=(link("")) { strong { (c.ended()) } " of " (c.total) " ended" }
            " · " a.good-text href=(link("succeeded")) { (c.succeeded) " succeeded" }
            @if c.partial > 0 { " (" a href=(link("partial")) { (c.partial) " partial" } ")" }
            @if c.failed > 0 { " · " a.bad-text href=(link("failed")) { (c.failed) " failed" } }
            @if c.cancelled > 0 { " · " a href=(link("cancelled")) { (c.cancelled) " cancelled" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_indented_exactly() {
        assert_eq!(
            indent_json(r#"{"a":[1,2],"b":{},"c":"x,{y}:\"z\""}"#),
            "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {},\n  \"c\": \"x,{y}:\\\"z\\\"\"\n}"
        );
        assert_eq!(indent_json("12345678901234567890123"), "12345678901234567890123");
        assert_eq!(indent_json("[ ]"), "[]");
    }

    #[test]
    fn json_output_is_bounded_however_deep_the_input() {
        // The report: 100,000 levels in 200 KB rendered 4.3 GB. Now the output stops at `max`
        // (plus one line), and indentation at MAX_INDENT levels.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let (out, cut) = indent_json_bounded(&deep, 64 * 1024);
        assert!(cut);
        assert!(out.len() <= 64 * 1024 + 2 * MAX_INDENT + 1, "{}", out.len());
        assert!(out.lines().all(|l| l.len() <= 2 * MAX_INDENT + 1));
        let (small, cut) = indent_json_bounded(r#"{"a":1}"#, 64 * 1024);
        assert!(!cut);
        assert_eq!(small, "{\n  \"a\": 1\n}");
    }

    #[test]
    fn urls_are_encoded() {
        assert_eq!(path_seg("a b/<x>"), "a%20b%2F%3Cx%3E");
        assert_eq!(query(&[("queue", "a&b"), ("state", ""), ("key", "<k>")]), "?queue=a%26b&key=%3Ck%3E");
        assert_eq!(query(&[("state", "")]), "");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(4_200), "4.2 s");
        assert_eq!(duration(185_000), "3 min 5 s");
        assert_eq!(duration(7_800_000), "2 h 10 min");
        assert_eq!(duration(3 * 86_400_000 + 4 * 3_600_000), "3 d 4 h");
    }

    #[test]
    fn markup_escapes_user_text() {
        let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
        let out = html! { p title=(evil) { (evil) } (clip(evil, 5)) }.into_string();
        assert!(!out.contains("<script>") && !out.contains("<img"), "{out}");
        assert!(out.contains("&lt;script&gt;"), "{out}");
    }
}
