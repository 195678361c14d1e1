//! A private RabbitMQ node for tests that stop or restart the broker: its own
//! node name, ports, data and cookie in a temporary directory, so the shared
//! node on 5672 is never touched. Killed when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::free_port;

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

pub struct PrivateBroker {
    pub url: String,
    node: String,
    port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
}

impl PrivateBroker {
    /// Starts a node and waits until it accepts AMQP connections.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory for the node");
        let (port, dist_port) = (free_port(), free_port());
        std::fs::write(dir.path().join("rabbitmq.conf"), format!("listeners.tcp.default = 127.0.0.1:{port}\n"))
            .expect("write the node's config");
        // Empty: the machine's rabbitmq-env.conf names the shared node.
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "").expect("write the node's env file");
        std::fs::write(dir.path().join("enabled_plugins"), "[].").expect("write the plugins file");
        let broker = Self {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            node: format!("replay-test-{port}@localhost"),
            port,
            dist_port,
            dir,
        };
        broker.boot().await;
        broker
    }

    fn command(&self, program: &str) -> Command {
        let dir = self.dir.path();
        let mut command = Command::new(program);
        command
            .env("HOME", dir)
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", self.pid_file())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("node.pid")
    }

    async fn boot(&self) {
        let status = self.command(SERVER).arg("-detached").status().expect("run rabbitmq-server");
        assert!(status.success(), "rabbitmq-server -detached failed for {}", self.node);
        let deadline = Instant::now() + Duration::from_secs(90);
        let url = replay::config::SecretUrl::new(self.url.clone());
        loop {
            if let Ok(connection) = replay::wire::transport::connect(&url, "test probe").await {
                let _ = connection.close(200, "up".into()).await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private node {} did not start: see {}",
                self.node,
                self.log_dir().display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// A broker restart, as `docker-compose stop` then `start` does it: a
    /// clean shutdown (clients see their connections closed), then a boot
    /// from the same data directory. Returns how long the broker was away.
    pub async fn restart(&self) -> Duration {
        let started = Instant::now();
        let status = self.command(CTL).args(["-n", &self.node, "shutdown"]).status().expect("run rabbitmqctl");
        assert!(status.success(), "rabbitmqctl shutdown failed for {}", self.node);
        self.boot().await;
        started.elapsed()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.pid_file()) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}
