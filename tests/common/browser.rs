//! A real headless Chromium for one test, driven over WebDriver: a private
//! `chromedriver` on a free port (killed when the test's [`Browser`] is
//! dropped) and a fantoccini client; plus the few steps every browser test
//! takes (sign in, read an element's text, wait for a page to change,
//! save a screenshot under `target/console-screenshots/`).
#![allow(clippy::unwrap_used)] // a test whose browser cannot start should fail loudly

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::console::RunningConsole;
use super::http::free_port;

/// Chromium from the distribution's packages, and its driver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One test's browser.
pub struct Browser {
    pub client: Client,
    /// Killed on drop (`kill_on_drop`), with the browser it started.
    _driver: tokio::process::Child,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session.
    pub async fn start() -> Self {
        let port = free_port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900", "--disable-dev-shm-usage"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            match ClientBuilder::native().capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("chromedriver on {url} never opened a session: {error}"),
            }
        };
        Self { client, _driver: driver }
    }

    /// Opens `path` of the console.
    pub async fn open(&self, console: &RunningConsole, path: &str) {
        self.client.goto(&console.at(path)).await.unwrap();
    }

    /// Signs in with `token` through the login form.
    pub async fn sign_in(&self, console: &RunningConsole, token: &str) {
        self.open(console, "/login").await;
        self.fill("#token", token).await;
        self.follow("form[action='/login'] button[type=submit]").await;
    }

    /// Clicks the link or submit button at `css` and waits for the page it
    /// loads (a click returns before the browser has navigated).
    pub async fn follow(&self, css: &str) {
        let before = self.client.find(Locator::Css("html")).await.unwrap();
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        // The old document's root goes stale once the new page replaced it.
        while before.tag_name().await.is_ok() {
            assert!(Instant::now() < deadline, "clicking {css} never loaded a page");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            let state = self.client.execute("return document.readyState", vec![]).await;
            if state.is_ok_and(|s| s == "complete") {
                return;
            }
            assert!(Instant::now() < deadline, "the page after {css} never finished loading");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the field at `css` (emptied first).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
    }

    /// The visible text of the element at `css`.
    pub async fn text(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// The path of the page shown.
    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_string()
    }

    /// Waits until the text at `css` contains `wanted` (the page may be
    /// reloading or updating itself meanwhile).
    pub async fn wait_for_text(&self, css: &str, wanted: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(wanted) {
                return text;
            }
            assert!(Instant::now() < deadline, "{css} never showed '{wanted}'; it shows '{text}'");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves what the browser shows as `target/console-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await.unwrap()).unwrap();
        path
    }

    /// Ends the WebDriver session (the driver process dies with `self`).
    pub async fn close(self) {
        let Self { client, _driver } = self;
        let _ = client.close().await;
    }
}
