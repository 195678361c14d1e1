//! Connection settings shared by every command, and the one way they are shown.
//!
//! URLs carry passwords. [`SecretUrl`] holds one and only ever prints it with the
//! password replaced, so a log line, an error or a plan file cannot leak it.

use std::fmt;

/// Default Postgres URL: the local trust-auth database the test suite uses.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1/test";
/// Default AMQP URL: a local RabbitMQ with the guest account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default topic exchange the domain events travel on.
pub const DEFAULT_EXCHANGE: &str = "habitat-events";
/// Default durable queue the workers consume.
pub const DEFAULT_QUEUE: &str = "habitat-events.worker";

/// A URL whose password never appears when it is displayed or debugged.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included: only for handing to a driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// The nodes of a URL that lists several, comma-separated (`AMQP_URL`
    /// of a cluster: `amqp://u:p@node1:5672/%2f,amqp://u:p@node2:5672/%2f`);
    /// a URL that lists one is its only node. A comma inside a password is
    /// written `%2C`, as URLs write it.
    pub fn nodes(&self) -> Vec<SecretUrl> {
        self.0.split(',').map(str::trim).filter(|n| !n.is_empty()).map(SecretUrl::new).collect()
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted())
    }
}

/// Replaces the password of a URL (of each, in a comma-separated list) with
/// `***`. A string that does not parse as a URL is hidden entirely rather
/// than risk printing a secret inside it.
pub fn redact(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(|node| redact_one(node.trim())).collect::<Vec<_>>().join(",");
    }
    redact_one(url)
}

fn redact_one(url: &str) -> String {
    match url::Url::parse(url) {
        // `scheme:user:pw@host` parses as an opaque path that may hold a secret.
        Ok(parsed) if parsed.cannot_be_a_base() => "<unprintable url>".to_string(),
        Ok(mut parsed) => {
            if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
                return "<unprintable url>".to_string();
            }
            let mut shown = parsed.to_string();
            // Keep the input's own form (no trailing slash added by the parser).
            if !url.ends_with('/') && shown.ends_with('/') && parsed.path() == "/" {
                shown.pop();
            }
            shown
        }
        Err(_) => "<unparseable url>".to_string(),
    }
}

/// Where the system lives: the database, the broker, and the names on the broker.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub database_url: SecretUrl,
    pub amqp_url: SecretUrl,
    pub exchange: String,
    pub queue: String,
    /// How many partitions the stream is spread over (`--partitions`); 1
    /// is the one queue bound straight to the exchange.
    pub partitions: u16,
}

/// Most partitions a stream may be spread over (the schema's bound too).
pub const MAX_PARTITIONS: u16 = 64;

/// One partition of the stream: its place (stored on every ledger row its
/// leader applies) and the queue its events arrive on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub index: u16,
    pub queue: String,
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.queue)
    }
}

impl Partition {
    /// The index as the ledger stores it.
    pub fn ledger_index(&self) -> i16 {
        // Bounded by MAX_PARTITIONS, far below i16::MAX.
        i16::try_from(self.index).unwrap_or(i16::MAX)
    }
}

impl Endpoints {
    /// The partitions, in index order: with one partition, the queue itself;
    /// with N, `<queue>.p0` … `<queue>.p<N-1>`, each bound to the
    /// consistent-hash exchange ([`Endpoints::hash_exchange`]).
    pub fn partition_list(&self) -> Vec<Partition> {
        if self.partitions <= 1 {
            return vec![Partition { index: 0, queue: self.queue.clone() }];
        }
        (0..self.partitions).map(|index| Partition { index, queue: format!("{}.p{index}", self.queue) }).collect()
    }

    /// The consistent-hash exchange that spreads events over the partition
    /// queues by their `x-partition-key` header (only with partitions > 1).
    pub fn hash_exchange(&self) -> String {
        format!("{}.partitions", self.exchange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_nodes_is_redacted_node_by_node_and_split_into_its_nodes() {
        let cluster = SecretUrl::new("amqp://u:pw1@a:5672/%2f, amqp://u:pw2@b:5673/%2f");
        assert_eq!(cluster.redacted(), "amqp://u:***@a:5672/%2f,amqp://u:***@b:5673/%2f");
        let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.expose().to_string()).collect();
        assert_eq!(nodes, ["amqp://u:pw1@a:5672/%2f", "amqp://u:pw2@b:5673/%2f"]);
        assert_eq!(SecretUrl::new("amqp://u:p@a/%2f").nodes().len(), 1);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("amqp://guest:s3cret@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact("postgres://postgres@127.0.0.1/test"), "postgres://postgres@127.0.0.1/test");
        assert_eq!(redact("not a url with secret"), "<unparseable url>");
        let url = SecretUrl::new("postgres://u:canary-pw@h/db");
        assert!(!format!("{url} {url:?}").contains("canary-pw"));
    }
}
