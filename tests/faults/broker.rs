//! A private RabbitMQ node for tests that stop or restart the broker: its own
//! node name, ports, data and cookie in a temporary directory, so the shared
//! node on 5672 is never touched. Killed when dropped. A [`PrivateCluster`]
//! is three such nodes sharing one cookie, joined into one cluster.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::free_port;

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// Held by the tests that run several busy private nodes (the load test,
/// the cluster): on two cores, one at a time, so a node booting or joining
/// a cluster is not starved by the other test's load.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
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
        Self::start_with_cookie(None, &[]).await
    }

    /// Starts a node with RabbitMQ's consistent-hash exchange enabled, as
    /// partitions need it (docker-compose.prod.yml enables it too).
    pub async fn start_with_hash_exchange() -> Self {
        Self::start_with_cookie(None, &["rabbitmq_consistent_hash_exchange"]).await
    }

    /// Starts a node whose Erlang cookie is `cookie` (the nodes of one
    /// cluster share theirs), or the one Erlang makes up, with `plugins` on.
    async fn start_with_cookie(cookie: Option<&str>, plugins: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a directory for the node");
        if let Some(cookie) = cookie {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(".erlang.cookie");
            std::fs::write(&path, cookie).expect("write the node's cookie");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("the cookie's mode");
        }
        let (port, dist_port) = (free_port(), free_port());
        std::fs::write(dir.path().join("rabbitmq.conf"), format!("listeners.tcp.default = 127.0.0.1:{port}\n"))
            .expect("write the node's config");
        // Empty: the machine's rabbitmq-env.conf names the shared node.
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "").expect("write the node's env file");
        std::fs::write(dir.path().join("enabled_plugins"), format!("[{}].", plugins.join(",")))
            .expect("write the plugins file");
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

    /// `rabbitmqctl -n NODE ARGS`, expected to succeed; its output.
    fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args).unwrap_or_else(|failed| panic!("{failed}"))
    }

    /// `rabbitmqctl -n NODE ARGS`: its output, or why it failed.
    fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(CTL)
            .args(["-n", &self.node])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output();
        let out = out.expect("run rabbitmqctl");
        if !out.status.success() {
            return Err(format!(
                "rabbitmqctl {args:?} failed for {}: {}{}",
                self.node,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Boots the node again if it is not running (said on stderr, with the
    /// end of its log: a node that stopped on its own is worth knowing of).
    async fn ensure_running(&self) {
        if self.try_ctl(&["status"]).is_ok() {
            return;
        }
        let log = std::fs::read_dir(self.log_dir())
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .map(|text| text.lines().rev().take(20).collect::<Vec<_>>().join("\n"))
            .collect::<Vec<_>>()
            .join("\n---\n");
        eprintln!("node {} was not running; booting it again. Its log ends (last lines first):\n{log}", self.node);
        self.boot().await;
    }

    /// Stops the node cleanly (its clients see their connections closed).
    pub fn stop(&self) {
        self.ctl(&["shutdown"]);
    }

    /// Boots the stopped node again from its data directory.
    pub async fn start_again(&self) {
        self.boot().await;
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

/// Three private nodes joined into one cluster: their own names, ports,
/// data directories and one shared cookie. Stopped when dropped.
pub struct PrivateCluster {
    pub nodes: Vec<PrivateBroker>,
}

impl PrivateCluster {
    pub async fn start() -> Self {
        let cookie = format!("REPLAYTEST{}", uuid::Uuid::new_v4().simple()).to_uppercase();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(PrivateBroker::start_with_cookie(Some(&cookie), &[]).await);
        }
        let first = nodes[0].node.clone();
        for node in &nodes[1..] {
            nodes[0].ensure_running().await;
            node.ensure_running().await;
            node.ctl(&["stop_app"]);
            node.ctl(&["join_cluster", &first]);
            node.ctl(&["start_app"]);
        }
        let running = nodes[0].ctl(&["cluster_status", "--formatter", "json"]);
        let status: serde_json::Value = serde_json::from_str(&running).expect("cluster_status is JSON");
        assert_eq!(status["running_nodes"].as_array().map(Vec::len), Some(3), "three running nodes: {status}");
        Self { nodes }
    }

    /// `AMQP_URL` for the cluster: every node, comma-separated.
    pub fn url(&self) -> String {
        self.nodes.iter().map(|n| n.url.clone()).collect::<Vec<_>>().join(",")
    }

    /// The node that leads quorum queue `queue`, as the first node that
    /// answers says (a stopped one does not).
    pub fn leader_of(&self, queue: &str) -> usize {
        let args = ["list_queues", "name", "leader", "--formatter", "json"];
        let listed =
            self.nodes.iter().find_map(|node| node.try_ctl(&args).ok()).expect("a running node lists the queues");
        let queues: Vec<serde_json::Value> = serde_json::from_str(&listed).expect("list_queues is JSON");
        let leader = queues
            .iter()
            .find(|q| q["name"] == queue)
            .and_then(|q| q["leader"].as_str())
            .unwrap_or_else(|| panic!("{queue} has a leader: {queues:?}"))
            .to_string();
        self.nodes.iter().position(|n| n.node == leader).unwrap_or_else(|| panic!("{leader} is one of ours"))
    }
}
