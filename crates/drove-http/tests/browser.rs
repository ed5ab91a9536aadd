//! The dashboard in a real browser: headless Chromium driven over WebDriver against a real
//! server on 127.0.0.1:0. Skipped (and saying so) where Chromium is not installed, unless
//! `DROVE_REQUIRE_BROWSER=1`.

mod support;

use std::sync::Arc;

use drove_core::JobState;
use drove_store::{NewJob, Outcome};
use support::browser::scenario;
use support::{EVIL, Server, json, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_lists_a_queue_with_its_counts() {
    scenario("overview", None, |b, s| async move {
        let job = s.submit(NewJob::new("emails", json(r#"{"to": "a@example.com"}"#))).await;
        let (claimed, lease) = s.claim("emails").await;
        assert_eq!(claimed.id, job.id);
        s.complete(job.id, lease, r#""sent""#, false).await;
        s.failed_job("emails", "smtp: 550 mailbox unavailable").await;
        s.submit(NewJob::new("emails", json(r#"{"to": "b@example.com"}"#))).await;
        b.goto(&s.url("/")).await;
        let cell = |state: &str| format!(r#"tr[data-queue="emails"] td[data-state="{state}"]"#);
        assert_eq!(b.text(&cell("queued")).await.as_deref(), Some("1"));
        assert_eq!(b.text(&cell("succeeded")).await.as_deref(), Some("1"));
        assert_eq!(b.text(&cell("failed")).await.as_deref(), Some("1"));
        assert_eq!(b.text(&cell("running")).await.as_deref(), Some("0"));
        assert_eq!(b.text(r#"tr[data-queue="emails"] [data-paused]"#).await.as_deref(), Some("active"));
        // Live: a new job shows up without a reload.
        s.submit(NewJob::new("emails", json("{}"))).await;
        b.wait_text(&cell("queued"), "the new job on the overview", |t| t == "2").await;
        // The queue link leads to its page.
        b.click(r#"tr[data-queue="emails"] th a"#).await;
        b.wait_url("the queue page", |u| u.ends_with("/queues/emails")).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_jobs_progress_bar_moves() {
    scenario("progress", None, |b, s| async move {
        let job = s.submit(NewJob::new("exports", json(r#"{"table": "orders"}"#))).await;
        let (_, lease) = s.claim("exports").await;
        s.progress(job.id, lease, 10, 200, "page 10").await;
        b.goto(&s.url(&format!("/jobs/{}", job.id))).await;
        b.wait_attr("#job-progress", "value", "10").await;
        assert_eq!(b.attr("#job-progress", "max").await.as_deref(), Some("200"));
        for done in [60, 150] {
            s.progress(job.id, lease, done, 200, &format!("page {done}")).await;
            b.wait_attr("#job-progress", "value", &done.to_string()).await;
        }
        let text = b.text(".progress-text").await.unwrap();
        assert!(text.contains("150 / 200 (75%)") && text.contains("page 150"), "{text}");
        // The checkpoint of the last heartbeat is shown too.
        b.wait_text("#job-checkpoint", "the checkpoint", |t| t.contains("150")).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cancel_button_cancels_a_running_job() {
    scenario("cancel", None, |b, s| async move {
        let job = s.submit(NewJob::new("backups", json(r#"{"db": "main"}"#))).await;
        let (_, lease) = s.claim("backups").await;
        s.progress(job.id, lease, 3, 10, "copying").await;
        b.goto(&s.url(&format!("/jobs/{}", job.id))).await;
        b.wait_text("#job-state", "the running state", |t| t == "running").await;
        b.click("#cancel").await;
        b.wait_text("#cancel-requested", "the cancel request on the page", |t| t == "cancel requested").await;
        assert!(s.job(job.id).await.cancel_requested);
        // The worker sees it on its next heartbeat and stops; the run's end makes it cancelled.
        let ack = s.progress(job.id, lease, 4, 10, "stopping").await;
        assert!(ack.cancel_requested);
        let ended = s.end(job.id, lease, Outcome::Release).await;
        assert_eq!(ended.state, JobState::Cancelled);
        b.wait_text("#job-state", "the cancelled state, live", |t| t == "cancelled").await;
        // Cancelled: retry is offered, cancel no longer.
        b.wait_text("#retry", "the retry button", |t| t == "Retry").await;
        assert!(b.text("#cancel").await.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_button_queues_a_failed_job_again() {
    scenario("retry", None, |b, s| async move {
        let job = s.failed_job("webhooks", "POST https://hooks.example.com: 502 Bad Gateway").await;
        assert_eq!(job.state, JobState::Failed);
        b.goto(&s.url(&format!("/jobs/{}", job.id))).await;
        b.wait_text("#job-error", "the error", |t| t.contains("502 Bad Gateway")).await;
        b.click("#retry").await;
        b.wait_text(".flash", "the confirmation", |t| t.contains("Queued again")).await;
        assert_eq!(b.text("#job-state").await.as_deref(), Some("queued"));
        let now = s.job(job.id).await;
        assert_eq!((now.state, now.attempt), (JobState::Queued, 0));
        assert_eq!(b.text("#job-attempt").await.as_deref(), Some("0 of 20"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_shown_and_never_runs() {
    scenario("escaping", None, |b, s| async move {
        let payload = serde_json::to_string(&serde_json::json!({ "note": EVIL })).unwrap();
        let job = s.submit(NewJob::new("evil", json(&payload)).with_key(EVIL).with_group(EVIL)).await;
        let (_, lease) = s.claim("evil").await;
        s.progress(job.id, lease, 1, 2, EVIL).await;
        let result = serde_json::to_string(EVIL).unwrap();
        s.complete(job.id, lease, &result, true).await;
        let failed = s.failed_job("evil", EVIL).await;
        let pages = [
            "/".to_owned(),
            "/queues/evil".to_owned(),
            "/jobs".to_owned(),
            format!("/jobs/{}", job.id),
            format!("/jobs/{}", failed.id),
            "/ops".to_owned(),
            "/queues/%3Cscript%3Ewindow.__drove_xss=1%3C%2Fscript%3E".to_owned(),
        ];
        for page in &pages {
            b.goto(&s.url(page)).await;
            let ran = b.exec("return window.__drove_xss === undefined ? null : window.__drove_xss;").await;
            assert!(ran.is_null(), "script ran on {page}: {ran}");
            let images = b.exec("return document.querySelectorAll('img').length;").await;
            assert_eq!(images, 0, "an <img> element was created on {page}");
        }
        // Shown as text, exactly.
        b.goto(&s.url(&format!("/jobs/{}", job.id))).await;
        assert_eq!(b.text("#job-key").await.as_deref(), Some(EVIL));
        assert_eq!(b.text("#job-group").await.as_deref(), Some(EVIL));
        b.goto(&s.url(&format!("/jobs/{}", failed.id))).await;
        assert_eq!(b.text("#job-error").await.as_deref(), Some(EVIL));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_form_sets_a_strict_cookie() {
    scenario("login", Some("s3cret-token"), |b, s| async move {
        s.submit(NewJob::new("emails", json("{}"))).await;
        b.goto(&s.url("/jobs?queue=emails")).await;
        b.wait_url("the login form", |u| u.contains("/login?next=")).await;
        b.type_into("#token", "wrong").await;
        b.click("#login").await;
        b.wait_text(".flash", "the refusal", |t| t.contains("not the token")).await;
        b.type_into("#token", "s3cret-token").await;
        b.click("#login").await;
        // Back where we were going, logged in.
        b.wait_url("the job list", |u| u.ends_with("/jobs?queue=emails")).await;
        b.wait_text("#job-list", "the job list", |t| t.contains("emails")).await;
        let cookies = b.cookies().await;
        let session = cookies.iter().find(|c| c["name"] == "drove_session").expect("the session cookie");
        assert_eq!(session["httpOnly"], true, "{session}");
        assert_eq!(session["sameSite"], "Strict", "{session}");
        assert_eq!(b.exec("return document.cookie;").await, "", "scripts cannot read the cookie");
        b.click("form.logout button").await;
        b.wait_url("the login form after logging out", |u| u.ends_with("/login")).await;
        b.goto(&s.url("/")).await;
        b.wait_url("the login form again", |u| u.contains("/login?next=")).await;
    })
    .await;
}

/// A page on another origin (127.0.0.2) that posts a form to the dashboard as soon as it loads.
async fn attacker_site(target: String) -> String {
    let page = format!(
        r#"<!doctype html><form id="f" method="post" action="{target}"><input name="x" value="1"></form>
           <script>document.getElementById("f").submit()</script>"#
    );
    let router =
        axum::Router::new().route("/", axum::routing::get(move || async move { axum::response::Html(page) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_is_refused() {
    // No token: nothing but the origin check stands between another site and the buttons.
    scenario("cross-site", None, |b, s| async move {
        let job = s.submit(NewJob::new("emails", json("{}"))).await;
        let target = s.url(&format!("/jobs/{}/cancel", job.id));
        let evil = attacker_site(target.clone()).await;
        b.goto(&evil).await;
        b.wait_url("the forged post's answer", |u| u == target).await;
        b.wait_text("h1", "the refusal", |t| t.starts_with("403")).await;
        assert_eq!(s.job(job.id).await.state, JobState::Queued, "the forged cancel changed nothing");
        // The same button on the dashboard itself works.
        b.goto(&s.url(&format!("/jobs/{}", job.id))).await;
        b.click("#cancel").await;
        b.wait_text("#job-state", "the cancelled state", |t| t == "cancelled").await;
    })
    .await;
}

/// Writes docs/dashboard.png: the overview over an hour of made-up but plausible work.
/// `cargo test -p drove-http --test browser -- --ignored docs_screenshot`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/dashboard.png; run on purpose"]
async fn docs_screenshot() {
    scenario("docs-screenshot", None, |b, s| async move {
        seed(&s).await;
        b.resize(1400, 760).await;
        b.goto(&s.url("/")).await;
        b.wait_text(r#"tr[data-queue="exports"] td[data-state="running"]"#, "the seeded data", |t| t == "2")
            .await;
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
        b.screenshot(&out).await;
        eprintln!("wrote {}", out.display());
        // The other pages over the same data, for a look (not kept in the repository).
        let dir = std::env::temp_dir().join("drove-dashboard-pages");
        std::fs::create_dir_all(&dir).unwrap();
        let running = s.store().list_jobs(
            drove_store::JobFilter { state: Some(JobState::Running), ..Default::default() },
            1,
            None,
        );
        let running = running.await.unwrap().jobs[0].id;
        for (name, path) in [
            ("queue", "/queues/webhooks".to_owned()),
            ("jobs", "/jobs?queue=webhooks".to_owned()),
            ("job", format!("/jobs/{running}")),
            ("ops", "/ops".to_owned()),
        ] {
            b.resize(1400, 1000).await;
            b.goto(&s.url(&path)).await;
            b.screenshot(&dir.join(format!("{name}.png"))).await;
        }
        eprintln!("other pages in {}", dir.display());
    })
    .await;
}

/// An hour of work in five queues, finished at past times (store calls take `now`).
async fn seed(s: &Arc<Server>) {
    let store = s.store();
    let now = drove_engine::now();
    let mut rng = 0x2545_f491_u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let plans: [(&str, u64, i64, i64, u64); 4] = [
        // queue, runs per minute, base run ms, spread ms, failures per 100
        ("emails", 9, 120, 400, 2),
        ("webhooks", 6, 300, 2_500, 9),
        ("thumbnails", 4, 800, 1_500, 1),
        ("exports", 1, 40_000, 60_000, 0),
    ];
    for minute in (1..=60).rev() {
        for (queue, per_min, base, spread, fail_pct) in plans {
            let n = per_min + next(per_min / 2 + 1) - per_min / 4;
            for _ in 0..n {
                let at = now.minus_ms(minute * 60_000 + next(50_000) as i64);
                let ms = base + next(spread as u64) as i64;
                let key = format!("{queue}:{}", 10_000 + next(90_000));
                let new = NewJob::new(queue, json(r#"{"user": 42}"#)).with_key(key);
                let sub = store.submit(vec![new], at).await.unwrap();
                let req = drove_store::ClaimRequest {
                    queue: queue.into(),
                    worker: "node-a".into(),
                    max: 1,
                    // Longer than the hour: the reaper (real time) must not take these runs.
                    lease_ms: Some(86_400_000),
                };
                let c = store.claim(req, at).await.unwrap().jobs.pop().unwrap();
                assert_eq!(c.job.id, sub[0].job.id);
                let outcome = if next(100) < fail_pct {
                    let message = match queue {
                        "webhooks" => {
                            format!("POST https://hooks.example.com/orders: 50{} Bad Gateway", next(3) + 2)
                        }
                        "emails" => "smtp: 421 too many connections from 10.0.3.7".to_owned(),
                        _ => "image decode: unexpected end of file".to_owned(),
                    };
                    Outcome::Fail { kind: drove_core::FailKind::Permanent, message, retry_after_ms: None }
                } else {
                    Outcome::Complete { result: Some(json(r#"{"ok": true}"#)), partial: next(40) == 0 }
                };
                let f = drove_store::Finish { id: c.job.id, lease: c.lease, outcome };
                store.finish(vec![f], at.plus_ms(ms)).await.unwrap().pop().unwrap().unwrap();
            }
        }
    }
    // Now: two long exports running with progress, a backlog, scheduled jobs, a paused queue.
    for (done, total, msg) in [(7_340, 12_000, "orders 2024-06"), (1_200, 48_000, "invoices")] {
        let new = NewJob::new("exports", json(r#"{"table": "orders"}"#)).with_key(format!("export:{msg}"));
        let job = s.submit(new).await;
        let (_, lease) = s.claim("exports").await;
        s.progress(job.id, lease, done, total, msg).await;
    }
    for i in 0..37 {
        let new = NewJob::new("webhooks", json(&format!(r#"{{"order": {i}}}"#)))
            .with_key(format!("order:{}", 5_000 + i));
        s.submit(new.with_group(format!("shop:{}", i % 4))).await;
    }
    let mut later = NewJob::new("emails", json("{}"));
    later.run_at = Some(now.plus_ms(3_600_000));
    s.submit(later).await;
    for i in 0..3 {
        s.submit(NewJob::new("backups", json(&format!(r#"{{"db": "shard-{i}"}}"#)))).await;
    }
    let put = |name: &'static str, body: &'static str| async move {
        let patch: drove_core::queue::QueuePatch = serde_json::from_str(body).unwrap();
        store.put_queue(name, patch, drove_engine::now()).await.unwrap();
    };
    put("backups", r#"{"paused": true, "concurrency": 1}"#).await;
    put("webhooks", r#"{"concurrency": 16, "rate": {"limit": 50, "period_ms": 1000}}"#).await;
    put("exports", r#"{"concurrency": 2, "timeout_ms": 86400000}"#).await;
    put("emails", r#"{"concurrency": 32}"#).await;
    until("the seeded jobs", || async { store.list_queues(drove_engine::now()).await.unwrap().len() == 5 })
        .await;
}
