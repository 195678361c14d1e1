//! The console served in the test's process on a free port, over the
//! test's world, with tokens of each role; and an HTTP client for its API.
#![allow(clippy::unwrap_used)] // a test that cannot start its console should fail loudly

use replay::console::{self, Console, Settings};
use replay::control::tokens;
use replay::store::tokens::Role;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::world::World;

/// A console serving one test's world.
pub struct RunningConsole {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its plan and backup directories, removed when it is dropped.
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

impl RunningConsole {
    /// Serves the console over `world` on a free port.
    pub async fn start(world: &World) -> Self {
        Self::start_with(world, |_| {}).await
    }

    /// Serves it as behind a TLS proxy (`--secure-cookies`).
    pub async fn start_behind_tls(world: &World) -> Self {
        Self::start_with(world, |settings| settings.secure_cookies = true).await
    }

    /// Serves it with the default settings as `adjust` changes them (e.g.
    /// `require_approval`, `--require-approval`); the plan and backup
    /// directories are the test's own.
    pub async fn start_with(world: &World, adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            plan_dir: dir.path().join("plans"),
            backup_dir: dir.path().join("backups"),
            secure_cookies: false,
            require_approval: false,
            require_rehearsal: false,
            notify: None,
        };
        adjust(&mut settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let console = Console::new(world.pool.clone(), world.endpoints.clone(), settings, shutdown.clone());
        let handle = tokio::spawn(console::serve(listener, console));
        Self { url, _dir: dir, shutdown, handle }
    }

    /// A new token of `role`, named `name`.
    pub async fn token(&self, world: &World, name: &str, role: Role) -> String {
        tokens::create(&world.pool, name, role, "test-admin").await.unwrap().secret.reveal().to_string()
    }

    /// The file of plan `plan_id` in the console's plan directory.
    pub fn plan_file(&self, plan_id: &str) -> std::path::PathBuf {
        let dir = self._dir.path().join("plans");
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "jsonl") && p.to_string_lossy().contains(plan_id))
            .unwrap_or_else(|| panic!("no plan {plan_id} in {}", dir.display()))
    }

    /// Where the console writes the pre-replay backups of its applies.
    pub fn backups(&self) -> std::path::PathBuf {
        self._dir.path().join("backups")
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Stops serving, once running applies reached their next chunk.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// What an API call answered: its status and its JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// Calls the API with `token` (none when `None`): `method path [body]`.
pub async fn call(
    console: &RunningConsole,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Answer {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, console.at(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Answer { status, body }
}
