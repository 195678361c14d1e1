//! Processes a test spawns: the probed `replay` binary the workers run as,
//! their output, signals, and a tap on their log.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A spawned process's stderr, read as it comes (so a chatty process never
/// blocks on a full pipe), for a test to wait on what it says.
pub struct LogTap {
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl LogTap {
    /// Takes `child`'s piped stderr.
    pub fn of(child: &mut tokio::process::Child) -> Self {
        use tokio::io::AsyncReadExt;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let into = text.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 8192];
            while let Ok(n) = stderr.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                into.lock().expect("log lock").push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Self { text }
    }

    pub fn text(&self) -> String {
        self.text.lock().expect("log lock").clone()
    }

    /// Waits up to `limit` for `needle` in the log.
    pub async fn wait_for(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.text().contains(needle) {
            assert!(Instant::now() < deadline, "waited {limit:?} for {needle:?} in the log:\n{}", self.text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The `replay` binary with the effect probe (`examples/probed_replay.rs`):
/// what the tests run as a worker. `cargo test` builds it with the tests;
/// the build here makes a run of one test target (`--test`) use a fresh one.
pub fn probed_replay() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("a test binary lives in <profile>/deps");
        let mut build = std::process::Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "--example", "probed_replay", "--manifest-path"]);
        build.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(profile) => {
                build.args(["--profile", profile]);
            }
            None => panic!("no profile directory above {}", exe.display()),
        }
        let status = build.status().expect("run cargo build --example probed_replay");
        assert!(status.success(), "cargo build --example probed_replay failed");
        profile_dir.join("examples").join("probed_replay")
    })
}

pub fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("worker is running").to_string();
    let status = std::process::Command::new("kill").args([name, &pid]).status().expect("kill");
    assert!(status.success());
}
