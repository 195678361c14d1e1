//! The proxy's controls that only the fault suite uses: the end of an
//! outage, a frozen peer, and the counts that prove a fault landed on live
//! traffic. The proxy itself is `tests/common/proxy.rs`.

use tokio_util::sync::CancellationToken;

use crate::common::TcpProxy;

impl TcpProxy {
    /// The outage ends: new connections go through again.
    pub fn restore(&self) {
        *self.state.cut.lock().expect("proxy lock") = CancellationToken::new();
        self.state.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// A hung peer, as `kill -STOP` makes one: every connection open now
    /// stays open and silent for good; new connections work.
    pub fn freeze(&self) {
        let mut frozen = self.state.frozen.lock().expect("proxy lock");
        frozen.cancel();
        *frozen = CancellationToken::new();
    }

    /// What the proxy has seen so far.
    pub fn counts(&self) -> ProxyCounts {
        let c = &self.state.counts;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::SeqCst);
        ProxyCounts {
            connections: load(&c.connections),
            refused: load(&c.refused),
            bytes: load(&c.bytes),
            delayed: load(&c.delayed),
            stalled: load(&c.stalled),
        }
    }
}

/// A snapshot of a proxy's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    /// Connections accepted and forwarded.
    pub connections: u64,
    /// Connections dropped at once during an outage.
    pub refused: u64,
    /// Bytes forwarded, both ways.
    pub bytes: u64,
    /// Chunks held back by the added latency.
    pub delayed: u64,
    /// Chunks a frozen connection had to forward and never did: proof that
    /// a peer was using a connection when it froze.
    pub stalled: u64,
}
