//! A private Postgres server for tests that need a second server (a
//! rehearsal made elsewhere, `--rehearsal-url`): its own data directory,
//! port and socket directory in a temporary directory, trust auth for
//! `postgres`, so the shared server on 5432 is never reconfigured. Stopped
//! (immediate) when dropped.
//!
//! Postgres refuses to run as root: as root, the server and `initdb` run
//! as the `postgres` OS user (`runuser`), who is given the directory.

#![allow(clippy::unwrap_used)] // a test helper that cannot start its server should fail loudly

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::free_port;

pub struct PrivatePostgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// The server binaries of the installed major version.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres is installed under /usr/lib/postgresql")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PrivatePostgres {
    /// Initialises a cluster and starts it, waiting until it accepts connections.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory for the server");
        if running_as_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown the private server's directory to postgres");
        }
        let port = free_port();
        let server = Self { url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), port, bin: bin_dir(), dir };
        let data = server.data();
        let out = server
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB",
            server.dir.path().display()
        );
        let out = server
            .command("pg_ctl")
            .args(["-D"])
            .arg(&data)
            .args(["-l"])
            .arg(server.dir.path().join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "the private server did not start: {} (see {})",
            String::from_utf8_lossy(&out.stderr),
            server.dir.path().join("server.log").display()
        );
        server.wait_ready().await;
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.current_dir(self.dir.path());
        command
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(pool) = sqlx::PgPool::connect(&self.url).await {
                pool.close().await;
                return;
            }
            assert!(Instant::now() < deadline, "the private server on port {} accepts no connection", self.port);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The databases on this server.
    pub async fn databases(&self) -> Vec<String> {
        let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
        let names =
            sqlx::query_scalar("SELECT datname::text FROM pg_database ORDER BY 1").fetch_all(&pool).await.unwrap();
        pool.close().await;
        names
    }

    /// The URL of database `name` on this server.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.command("pg_ctl").arg("-D").arg(&data).args(["-m", "immediate", "-w", "stop"]).output();
    }
}
