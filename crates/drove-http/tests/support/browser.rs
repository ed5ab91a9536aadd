//! A small WebDriver client: headless Chromium driven by chromedriver over its HTTP protocol
//! (W3C WebDriver), enough for the dashboard tests.
//!
//! Chromium and chromedriver come from Debian (`apt-get install -y chromium chromium-driver`).
//! When they are missing the tests say they were skipped and why, unless
//! `DROVE_REQUIRE_BROWSER=1` (CI), which makes that a failure.

use std::future::Future;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::Server;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a condition may take to appear in the page (generous: CI machines are slow).
pub const PATIENCE: Duration = Duration::from_secs(30);

fn binary(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

/// Why the browser tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let chromium = binary("DROVE_CHROMIUM", "/usr/bin/chromium");
    let driver = binary("DROVE_CHROMEDRIVER", "/usr/bin/chromedriver");
    let absent: Vec<String> =
        [&chromium, &driver].into_iter().filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
    (!absent.is_empty())
        .then(|| format!("{} not found (apt-get install -y chromium chromium-driver)", absent.join(" and ")))
}

#[derive(Debug)]
pub struct WdError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

impl WdError {
    fn stale(&self) -> bool {
        // The element was replaced (a live region was swapped) between finding and using it.
        self.error == "stale element reference" || self.error == "no such element"
    }
}

pub struct Browser {
    http: reqwest::Client,
    driver_url: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser ready to drive, or `None` (after saying why) when this machine has none.
    pub async fn start() -> Option<Browser> {
        if let Some(why) = missing() {
            if std::env::var("DROVE_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("DROVE_REQUIRE_BROWSER=1 but {why}");
            }
            // Once per test binary, on the terminal: libtest captures eprintln! of passing tests.
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::SeqCst) {
                let _ = writeln!(std::io::stderr(), "browser tests skipped: {why}");
            }
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(binary("DROVE_CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let driver_url = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { http, driver_url, session: String::new(), driver, _profile: profile };
        browser.wait_for_driver().await;
        browser.new_session().await;
        Some(browser)
    }

    async fn wait_for_driver(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let ready = self.http.get(format!("{}/status", self.driver_url)).send().await;
            if let Ok(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn new_session(&mut self) {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", self._profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary("DROVE_CHROMIUM", "/usr/bin/chromium"),
                "args": args,
            },
        }}});
        let v = self.raw("POST", "/session", Some(caps)).await.expect("a browser session starts");
        self.session = v["sessionId"].as_str().expect("a session id").to_owned();
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let url = format!("{}{path}", self.driver_url);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let resp = req.send().await.map_err(|e| WdError {
            status: 0,
            error: "io".into(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            return Err(WdError {
                status,
                error: v["value"]["error"].as_str().unwrap_or("unknown").to_owned(),
                message: v["value"]["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(v["value"].clone())
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        self.raw(method, &format!("/session/{}{path}", self.session), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await.expect("navigation");
    }

    pub async fn current_url(&self) -> String {
        self.cmd("GET", "/url", None).await.unwrap().as_str().unwrap_or_default().to_owned()
    }

    async fn find(&self, css: &str) -> Result<String, WdError> {
        let v = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await?;
        Ok(v[ELEMENT].as_str().unwrap_or_default().to_owned())
    }

    /// The element's rendered text, or `None` when there is no such element now.
    pub async fn text(&self, css: &str) -> Option<String> {
        for _ in 0..3 {
            let Ok(id) = self.find(css).await else { return None };
            match self.cmd("GET", &format!("/element/{id}/text"), None).await {
                Ok(v) => return v.as_str().map(str::to_owned),
                Err(e) if e.stale() => continue,
                Err(e) => panic!("reading the text of {css}: {e:?}"),
            }
        }
        None
    }

    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        for _ in 0..3 {
            let Ok(id) = self.find(css).await else { return None };
            match self.cmd("GET", &format!("/element/{id}/attribute/{name}"), None).await {
                Ok(v) => return v.as_str().map(str::to_owned),
                Err(e) if e.stale() => continue,
                Err(e) => panic!("reading {name} of {css}: {e:?}"),
            }
        }
        None
    }

    pub async fn click(&self, css: &str) {
        let mut last = None;
        for _ in 0..5 {
            match self.find(css).await {
                Ok(id) => match self.cmd("POST", &format!("/element/{id}/click"), None).await {
                    Ok(_) => return,
                    Err(e) if e.stale() => last = Some(e),
                    Err(e) => panic!("clicking {css}: {e:?}"),
                },
                Err(e) => last = Some(e),
            }
        }
        panic!("could not click {css}: {last:?}");
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await.unwrap_or_else(|e| panic!("finding {css}: {e:?}"));
        self.cmd("POST", &format!("/element/{id}/clear"), None).await.unwrap();
        self.cmd("POST", &format!("/element/{id}/value"), Some(json!({ "text": text }))).await.unwrap();
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(json!({"width": width, "height": height})))
            .await
            .expect("resize");
    }

    pub async fn exec(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": []})))
            .await
            .expect("script runs")
    }

    pub async fn source(&self) -> String {
        self.cmd("GET", "/source", None).await.unwrap().as_str().unwrap_or_default().to_owned()
    }

    pub async fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None).await.unwrap().as_array().cloned().unwrap_or_default()
    }

    pub async fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None).await.expect("a screenshot");
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    pub async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let text = self.text(css).await;
            if let Some(t) = &text
                && ok(t)
            {
                return t.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; {css} shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until attribute `name` of `css` equals `want`.
    pub async fn wait_attr(&self, css: &str, name: &str, want: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let got = self.attr(css, name).await;
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {css}[{name}={want}], got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_url(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let url = self.current_url().await;
            if ok(&url) {
                return url;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; at {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn quit(&self) {
        let _ = self.raw("DELETE", &format!("/session/{}", self.session), None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Only the chromedriver this test started (the session was deleted first, which ends
        // its Chromium).
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Runs a browser scenario against a fresh server: skipped without a browser, and on failure
/// a screenshot and the page source are saved to a temporary folder whose path is printed.
pub async fn scenario<F, Fut>(name: &str, token: Option<&str>, body: F)
where
    F: FnOnce(Arc<Browser>, Arc<Server>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(browser) = Browser::start().await else { return };
    let browser = Arc::new(browser);
    let server = Arc::new(Server::start(token).await);
    let outcome = tokio::spawn(body(Arc::clone(&browser), Arc::clone(&server))).await;
    if let Err(e) = outcome {
        let dir = std::env::temp_dir().join(format!("drove-browser-failures-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let shot = dir.join(format!("{name}.png"));
        browser.screenshot(&shot).await;
        std::fs::write(dir.join(format!("{name}.html")), browser.source().await).unwrap();
        eprintln!("browser test {name} failed: screenshot and page source in {}", dir.display());
        browser.quit().await;
        std::panic::resume_unwind(e.into_panic());
    }
    browser.quit().await;
}
