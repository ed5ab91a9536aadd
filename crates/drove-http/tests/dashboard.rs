//! The dashboard over HTTP, as `curl` sees it: every page's data is in the HTML, user text is
//! escaped on every page, forms change state through the store, login and cross-site
//! protection, HTML errors. (tests/browser.rs drives the same pages in Chromium.)

mod support;

use drove_core::JobState;
use drove_store::NewJob;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use support::{EVIL, Server, http, json};

async fn get(url: &str) -> (StatusCode, String, reqwest::header::HeaderMap) {
    let resp = http().get(url).send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, resp.text().await.unwrap(), headers)
}

async fn page(s: &Server, path: &str) -> String {
    let (status, body, headers) = get(&s.url(path)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
    body
}

async fn post_form(
    s: &Server,
    path: &str,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = http().post(s.url(path)).header(CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    req.body(body).send().await.unwrap()
}

fn assert_escaped(html: &str, page: &str) {
    assert!(!html.contains("<script>window.__drove_xss"), "{page} has a raw <script> from user text");
    assert!(!html.contains("<img src=x"), "{page} has a raw <img> from user text");
    // The overview shows no user text (queue names are validated); every other page does.
    if page != "/" {
        assert!(
            html.contains("&lt;script&gt;window.__drove_xss=1&lt;/script&gt;"),
            "{page} does not show the text"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_text_is_escaped_on_every_page() {
    let s = Server::start(None).await;
    let payload = serde_json::to_string(&serde_json::json!({ "note": EVIL })).unwrap();
    let mut new = NewJob::new("evil", json(&payload)).with_key(EVIL).with_group(EVIL);
    new.kind = Some(EVIL.into());
    let done = s.submit(new).await;
    let (_, lease) = s.claim("evil").await;
    s.progress(done.id, lease, 1, 2, EVIL).await;
    s.complete(done.id, lease, &serde_json::to_string(EVIL).unwrap(), true).await;
    let failed = s.failed_job("evil", EVIL).await;
    let running = s.submit(NewJob::new("evil", json("{}")).with_key(format!("run {EVIL}"))).await;
    let (_, lease) = s.claim("evil").await;
    s.progress(running.id, lease, 5, 10, EVIL).await;

    let key = form_urlencoded::byte_serialize(EVIL.as_bytes()).collect::<String>();
    for path in [
        "/".to_owned(),
        "/queues/evil".to_owned(),
        "/jobs".to_owned(),
        format!("/jobs?key={key}"),
        format!("/jobs?group={key}"),
        format!("/jobs/{}", done.id),
        format!("/jobs/{}", failed.id),
        format!("/jobs/{}", running.id),
        "/ops".to_owned(),
    ] {
        let html = page(&s, &path).await;
        assert_escaped(&html, &path);
    }
    // User text in URLs (a queue name, a job id, a filter value) comes back escaped in errors.
    for path in [
        "/queues/%3Cscript%3Ewindow.__drove_xss=1%3C%2Fscript%3E".to_owned(),
        "/jobs/%3Cscript%3Ewindow.__drove_xss=1%3C%2Fscript%3E".to_owned(),
        "/jobs?state=%3Cscript%3Ewindow.__drove_xss=1%3C%2Fscript%3E".to_owned(),
    ] {
        let (status, html, _) = get(&s.url(&path)).await;
        assert!(status.is_client_error(), "{path}: {status}");
        assert!(!html.contains("<script>window.__drove_xss"), "{path}: {html}");
    }
    // The job page shows every hostile field, escaped (kind, key, group, payload, result,
    // progress message and error).
    let html = page(&s, &format!("/jobs/{}", done.id)).await;
    assert!(html.matches("&lt;script&gt;window.__drove_xss=1").count() >= 5, "{html}");
    // And a browser would refuse to run inline script anyway.
    let (_, _, headers) = get(&s.url("/")).await;
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_hold_their_data_without_javascript() {
    let s = Server::start(None).await;
    for _ in 0..2 {
        s.submit(NewJob::new("emails", json("{}"))).await;
    }
    let job =
        s.submit(NewJob::new("exports", json(r#"{"table": "orders"}"#)).with_key("export:orders")).await;
    let (_, lease) = s.claim("exports").await;
    s.progress(job.id, lease, 40, 100, "page 40").await;
    let failed = s.failed_job("exports", "disk full after 1200 rows").await;
    s.failed_job("exports", "disk full after 977 rows").await;

    let overview = page(&s, "/").await;
    let cell = |q: &str, st: &str, n: i64| {
        format!(r#"data-state="{st}"><a href="/jobs?queue={q}&amp;state={st}">{n}</a>"#)
    };
    assert!(overview.contains(&cell("emails", "queued", 2)), "{overview}");
    assert!(overview.contains(&cell("exports", "running", 1)), "{overview}");
    assert!(overview.contains(&cell("exports", "failed", 2)), "{overview}");
    assert!(overview.contains("<svg"), "charts are in the HTML");

    let job_page = page(&s, &format!("/jobs/{}", job.id)).await;
    assert!(job_page.contains(r#"<progress id="job-progress" value="40" max="100""#), "{job_page}");
    assert!(job_page.contains("export:orders") && job_page.contains("&quot;table&quot;: &quot;orders&quot;"));
    assert!(job_page.contains(r#"id="cancel""#) && !job_page.contains(r#"id="retry""#));
    let failed_page = page(&s, &format!("/jobs/{}", failed.id)).await;
    let history = &failed_page[failed_page.find(r#"id="job-history""#).expect("a history panel")..];
    assert!(history.contains("permanent") && history.contains("disk full after 1200 rows"), "{history}");

    let ops = page(&s, "/ops").await;
    // The two "disk full" failures differ only in numbers: one group of 2.
    assert!(ops.contains("<strong>2</strong>"), "{ops}");
    assert!(ops.contains("disk full after"), "{ops}");
    assert!(ops.contains(&format!(r#"href="/jobs/{}""#, job.id)), "the running job is listed: {ops}");

    let queue = page(&s, "/queues/exports").await;
    assert!(queue.contains(r#"data-paused="false""#) && queue.contains(r#"id="pause""#), "{queue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_list_filters_and_pages_by_cursor() {
    let s = Server::start(None).await;
    let mut ids = Vec::new();
    for i in 0..120 {
        let new = NewJob::new("bulk", json("{}")).with_key(format!("k{i}")).with_group(format!("g{}", i % 2));
        ids.push(s.submit(new).await.id);
    }
    s.submit(NewJob::new("other", json("{}"))).await;
    let rows = |html: &str| html.matches("<tr data-job=").count();
    let next = |html: &str| {
        let at = html.find(r#"id="next-page" href=""#)? + r#"id="next-page" href=""#.len();
        Some(html[at..].split('"').next()?.replace("&amp;", "&"))
    };
    let first = page(&s, "/jobs?queue=bulk").await;
    assert_eq!(rows(&first), 50);
    assert!(first.contains(&format!(r#"data-job="{}""#, ids[119])), "newest first");
    let second_url = next(&first).expect("a next page");
    assert!(second_url.contains("queue=bulk") && second_url.contains("cursor="), "{second_url}");
    let second = page(&s, &second_url).await;
    assert_eq!(rows(&second), 50);
    assert!(second.contains(&format!(r#"data-job="{}""#, ids[69])));
    let third = page(&s, &next(&second).unwrap()).await;
    assert_eq!(rows(&third), 20);
    assert!(next(&third).is_none() && third.contains("end of the list"));

    assert_eq!(rows(&page(&s, "/jobs?key=k7").await), 1);
    assert_eq!(rows(&page(&s, "/jobs?group=g1&limit=500").await), 60);
    assert_eq!(rows(&page(&s, "/jobs?state=queued&limit=500").await), 121);
    assert_eq!(rows(&page(&s, "/jobs?state=failed").await), 0);
    assert_eq!(rows(&page(&s, &format!("/jobs?id={}", ids[3])).await), 1);
    assert_eq!(rows(&page(&s, &format!("/jobs?id={}&queue=other", ids[3])).await), 0);
    for bad in ["/jobs?cursor=zzz", "/jobs?state=sleeping", "/jobs?limit=0"] {
        let (status, html, headers) = get(&s.url(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8", "{bad}: {html}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_forms_change_settings_like_the_api() {
    let s = Server::start(None).await;
    s.submit(NewJob::new("emails", json("{}"))).await;
    s.store()
        .put_queue(
            "emails",
            serde_json::from_str(r#"{"group_concurrency": 2}"#).unwrap(),
            drove_engine::now(),
        )
        .await
        .unwrap();
    let resp = post_form(&s, "/queues/emails/pause", &[], &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/queues/emails?done=paused");
    assert!(s.store().get_queue("emails", drove_engine::now()).await.unwrap().unwrap().config.is_paused());
    assert!(page(&s, "/queues/emails?done=paused").await.contains(r#"id="resume""#));

    let form = [
        ("orig_concurrency", ""),
        ("orig_group_concurrency", "2"),
        ("orig_rate", ""),
        ("concurrency", "7"),
        ("group_concurrency", "2"),
        ("rate_limit", "100"),
        ("rate_period_ms", "60000"),
        ("rate_burst", ""),
    ];
    let resp = post_form(&s, "/queues/emails/settings", &form, &[]).await;
    assert_eq!(resp.headers()[LOCATION], "/queues/emails?done=saved");
    let q = s.store().get_queue("emails", drove_engine::now()).await.unwrap().unwrap();
    assert_eq!(q.config.concurrency, Some(7));
    assert_eq!(q.config.group_concurrency, Some(2));
    assert_eq!(q.config.rate.map(|r| (r.limit, r.period_ms)), Some((100, 60_000)));
    assert_eq!(q.limit_now, Some(7));

    // Invalid: the page again with the API's message, nothing saved.
    let bad = [
        ("orig_concurrency", "7"),
        ("concurrency", "0"),
        ("orig_rate", "100/60000/"),
        ("rate_limit", "100"),
        ("rate_period_ms", "60000"),
    ];
    let resp = post_form(&s, "/queues/emails/settings", &bad, &[]).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Not saved: concurrency"), "{html}");
    assert_eq!(
        s.store().get_queue("emails", drove_engine::now()).await.unwrap().unwrap().config.concurrency,
        Some(7)
    );

    let resp = post_form(&s, "/queues/emails/resume", &[], &[]).await;
    assert_eq!(resp.headers()[LOCATION], "/queues/emails?done=resumed");
    assert!(!s.store().get_queue("emails", drove_engine::now()).await.unwrap().unwrap().config.is_paused());
    // A queue never used is not created by the dashboard.
    let resp = post_form(&s, "/queues/nope/pause", &[], &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(s.store().get_queue("nope", drove_engine::now()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_actions_fit_the_state_and_errors_are_pages() {
    let s = Server::start(None).await;
    let queued = s.submit(NewJob::new("emails", json("{}"))).await;
    let resp = post_form(&s, &format!("/jobs/{}/cancel", queued.id), &[], &[]).await;
    assert_eq!(resp.headers()[LOCATION].to_str().unwrap(), format!("/jobs/{}?done=cancelled", queued.id));
    assert_eq!(s.job(queued.id).await.state, JobState::Cancelled);
    // Cancelling again: 409 as an HTML page that links back.
    let resp = post_form(&s, &format!("/jobs/{}/cancel", queued.id), &[], &[]).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(resp.text().await.unwrap().contains(&format!(r#"href="/jobs/{}""#, queued.id)));
    let resp = post_form(&s, &format!("/jobs/{}/retry", queued.id), &[], &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(s.job(queued.id).await.state, JobState::Queued);

    // A job waiting for another can be cancelled from its page too (an operation's parent, a
    // dependent): the button is there and cancels it at once.
    let first = s.submit(NewJob::new("emails", json("{}"))).await;
    let mut dependent = NewJob::new("emails", json("{}"));
    dependent.depends_on = vec![first.id];
    let waiting = s.submit(dependent).await;
    assert_eq!(waiting.state, JobState::Waiting);
    assert!(page(&s, &format!("/jobs/{}", waiting.id)).await.contains(r#"id="cancel""#));
    let resp = post_form(&s, &format!("/jobs/{}/cancel", waiting.id), &[], &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(s.job(waiting.id).await.state, JobState::Cancelled);

    for path in ["/jobs/99999999", "/jobs/abc", "/queues/never-used"] {
        let (status, html, headers) = get(&s.url(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8", "{path}");
        assert!(html.contains("<h1>404 Not Found</h1>"), "{html}");
    }
    // The API keeps its JSON errors.
    let (status, body, headers) = get(&s.url("/v1/jobs/99999999")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert!(body.contains(r#""code":"not_found""#), "{body}");
}

fn session_cookie(resp: &reqwest::Response) -> String {
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"), "{set}");
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_pages_need_the_cookie_or_the_bearer() {
    let s = Server::start(Some("s3cret")).await;
    let job = s.submit(NewJob::new("emails", json("{}"))).await;

    let (status, _, headers) = get(&s.url("/jobs?state=queued")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[LOCATION], "/login?next=%2Fjobs%3Fstate%3Dqueued");
    let (status, body, _) = get(&s.url("/v1/queues")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains(r#""code":"unauthorized""#), "API errors stay JSON: {body}");
    for open in ["/healthz", "/readyz", "/login", "/assets/app.css", "/assets/live.js"] {
        assert_eq!(get(&s.url(open)).await.0, StatusCode::OK, "{open}");
    }

    let resp = post_form(&s, "/login", &[("token", "wrong"), ("next", "/ops")], &[]).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get(SET_COOKIE).is_none());
    let resp = post_form(&s, "/login", &[("token", "s3cret"), ("next", "//evil.example/")], &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/", "never redirected off the site");
    let cookie = session_cookie(&resp);

    let with_cookie = |path: &str| http().get(s.url(path)).header(COOKIE, cookie.clone()).send();
    assert_eq!(with_cookie("/").await.unwrap().status(), StatusCode::OK);
    assert_eq!(with_cookie("/v1/queues").await.unwrap().status(), StatusCode::OK);
    let bearer = http().get(s.url("/ops")).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);
    let forged =
        http().get(s.url("/")).header(COOKIE, "drove_session=v1.99999999999999.00").send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::SEE_OTHER);

    // A form without credentials: a page saying so, nothing changed.
    let cancel = format!("/jobs/{}/cancel", job.id);
    let resp = post_form(&s, &cancel, &[], &[]).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");

    // Cross-site: refused even with a valid cookie (a sibling origin on the same site would
    // get the cookie sent; Sec-Fetch-Site or Origin gives it away).
    let forgeries: [&[(&str, &str)]; 3] = [
        &[("sec-fetch-site", "cross-site"), ("origin", "http://evil.example")],
        &[("sec-fetch-site", "same-site"), ("origin", "http://127.0.0.1:1")],
        &[("origin", "http://evil.example")], // a browser without Sec-Fetch-Site
    ];
    for forged in forgeries {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend_from_slice(forged);
        let resp = post_form(&s, &cancel, &[], &headers).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{forged:?}");
    }
    assert_eq!(s.job(job.id).await.state, JobState::Queued);
    // The API refuses browsers' cross-site writes the same way, in JSON.
    let resp = http()
        .post(s.url(&format!("/v1/jobs/{}/cancel", job.id)))
        .bearer_auth("s3cret")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.text().await.unwrap().contains(r#""code":"cross_origin""#));
    assert_eq!(s.job(job.id).await.state, JobState::Queued);

    // Same origin (what the dashboard's own buttons send): done.
    let origin = s.base.clone();
    let headers =
        [("cookie", cookie.as_str()), ("sec-fetch-site", "same-origin"), ("origin", origin.as_str())];
    assert_eq!(post_form(&s, &cancel, &[], &headers).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(s.job(job.id).await.state, JobState::Cancelled);
    // An old browser (Origin only) from our own origin works too.
    let headers = [("cookie", cookie.as_str()), ("origin", origin.as_str())];
    let retry = format!("/jobs/{}/retry", job.id);
    assert_eq!(post_form(&s, &retry, &[], &headers).await.status(), StatusCode::SEE_OTHER);

    // Logging out clears the cookie.
    let resp = post_form(&s, "/logout", &[], &[("cookie", cookie.as_str())]).await;
    assert_eq!(resp.headers()[LOCATION], "/login");
    assert!(resp.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_cross_site_writes_are_still_refused() {
    let s = Server::start(None).await;
    s.submit(NewJob::new("emails", json("{}"))).await;
    let resp = post_form(&s, "/queues/emails/pause", &[], &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    let resp = post_form(&s, "/queues/emails/pause", &[], &[("origin", "null")]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(!s.store().get_queue("emails", drove_engine::now()).await.unwrap().unwrap().config.is_paused());
    // Reading is not a write: another site may link to the dashboard.
    let resp = http().get(s.url("/")).header("sec-fetch-site", "cross-site").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Clients that are not browsers send neither header and are unaffected.
    assert_eq!(post_form(&s, "/queues/emails/pause", &[], &[]).await.status(), StatusCode::SEE_OTHER);
    assert!(s.store().get_queue("emails", drove_engine::now()).await.unwrap().unwrap().config.is_paused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_queues_page_shows_the_pools_limits() {
    let s = Server::start(None).await;
    let pool = serde_json::from_str(r#"{"adaptive": {"min": 3, "max": 3}}"#).unwrap();
    s.store().put_pool("llm", pool, drove_engine::now()).await.unwrap();
    let bulk = serde_json::from_str(r#"{"pool": "llm", "lane": "offline"}"#).unwrap();
    s.store().put_queue("bulk", bulk, drove_engine::now()).await.unwrap();
    // Online work waiting in the pool: the limit service holds offline work at the offline
    // limit, written on its first look.
    let live = serde_json::from_str(r#"{"pool": "llm"}"#).unwrap();
    s.store().put_queue("live", live, drove_engine::now()).await.unwrap();
    s.submit(NewJob::new("live", json("{}"))).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.store().get_pool("llm").await.unwrap().unwrap().offline_limit_now.is_none() {
        assert!(std::time::Instant::now() < deadline, "the limit service never wrote the offline limit");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let html = page(&s, "/queues/bulk").await;
    assert!(html.contains(r#"id="pool-limits""#), "{html}");
    assert!(html.contains("limit 3"), "{html}");
    assert!(html.contains(r#"data-offline-limit="3""#), "{html}");
}

/// The page's text with the tags taken out (block tags and cells as spaces), whitespace folded.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut tag: Option<String> = None;
    for c in html.chars() {
        match (&mut tag, c) {
            (None, '<') => tag = Some(String::new()),
            (Some(t), '>') => {
                let name = t.trim_start_matches('/').split([' ', '/']).next().unwrap_or("");
                if matches!(
                    name,
                    "td" | "th" | "tr" | "h1" | "h2" | "h3" | "p" | "div" | "li" | "br" | "section"
                ) {
                    out.push(' ');
                }
                tag = None;
            }
            (Some(t), c) => t.push(c),
            (None, c) => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_view_counts_what_ended() {
    // The report: with 30 jobs (20 succeeded, 5 partial, 5 failed) no page said so.
    let s = Server::start(None).await;
    for i in 0..30 {
        let job = s.submit(NewJob::new("export", json("{}"))).await;
        let (claimed, lease) = s.claim("export").await;
        assert_eq!(claimed.id, job.id);
        match i {
            0..20 => s.complete(job.id, lease, "1", false).await,
            20..25 => s.complete(job.id, lease, "1", true).await,
            _ => s.fail(job.id, lease, &format!("page {i} refused")).await,
        };
    }
    let ops = text_of(&page(&s, "/ops").await);
    for window in ["last 1h", "last 24h", "last 7d"] {
        assert!(ops.contains(&format!("{window} 25 succeeded (5 partial) · 5 failed")), "{window}: {ops}");
    }
    assert!(ops.contains("export 25 succeeded (5 partial) · 5 failed"), "per queue: {ops}");
    // Failures grouped by message (numbers blanked), and the partial successes listed.
    assert!(ops.contains("page 25 refused") || ops.contains("page 29 refused"), "{ops}");
    let partial = text_of(&page(&s, "/jobs?state=partial").await);
    assert!(partial.matches("succeeded").count() >= 5, "{partial}");
    let queue = text_of(&page(&s, "/queues/export").await);
    assert!(queue.contains("of which partial 5"), "{queue}");
}
