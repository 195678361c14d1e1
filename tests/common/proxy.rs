//! A TCP proxy in front of a shared service (Postgres or RabbitMQ), for the
//! faults a test injects without touching the service. The controls only
//! the fault suite uses (restore, freeze, the counts) are in
//! `tests/faults/proxy.rs`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// `url` with its port replaced: the way through a [`TcpProxy`].
pub fn through(url: &str, port: u16) -> String {
    let mut url = url::Url::parse(url).expect("a URL");
    url.set_port(Some(port)).expect("a URL with a host");
    url.to_string()
}

/// A TCP proxy the test controls, in front of a shared service: `cut()`
/// drops every open connection and refuses new ones, as an outage would,
/// `restore()` ends the outage, `set_latency()` delays every chunk each way;
/// the service itself is never touched.
pub struct TcpProxy {
    pub port: u16,
    pub(crate) state: std::sync::Arc<ProxyState>,
}

pub(crate) struct ProxyState {
    /// What went through, to prove a fault landed on live traffic.
    pub(crate) counts: ProxyCounters,
    pub(crate) down: std::sync::atomic::AtomicBool,
    /// Connections open when `freeze` was called stop forwarding, forever.
    pub(crate) frozen: std::sync::Mutex<CancellationToken>,
    pub(crate) latency_ms: std::sync::atomic::AtomicU64,
    pub(crate) cut: std::sync::Mutex<CancellationToken>,
}

impl TcpProxy {
    pub async fn start(target: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = std::sync::Arc::new(ProxyState {
            counts: ProxyCounters::default(),
            down: std::sync::atomic::AtomicBool::new(false),
            frozen: std::sync::Mutex::new(CancellationToken::new()),
            latency_ms: std::sync::atomic::AtomicU64::new(0),
            cut: std::sync::Mutex::new(CancellationToken::new()),
        });
        let accepting = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                if accepting.down.load(std::sync::atomic::Ordering::SeqCst) {
                    accepting.counts.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    continue; // dropped at once: the service looks down
                }
                accepting.counts.connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let cut = accepting.cut.lock().expect("proxy lock").clone();
                let frozen = accepting.frozen.lock().expect("proxy lock").clone();
                let state = accepting.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pump(client_read, server_write, state.clone(), frozen.clone()) => {}
                        () = pump(server_read, client_write, state.clone(), frozen) => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
        });
        Self { port, state }
    }

    /// The outage: open connections drop, new ones are closed at once.
    pub fn cut(&self) {
        self.state.down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.state.cut.lock().expect("proxy lock").cancel();
    }

    /// Added delay for every chunk, each way.
    pub fn set_latency(&self, latency: Duration) {
        self.state.latency_ms.store(latency.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Default)]
pub(crate) struct ProxyCounters {
    pub(crate) connections: std::sync::atomic::AtomicU64,
    pub(crate) refused: std::sync::atomic::AtomicU64,
    pub(crate) bytes: std::sync::atomic::AtomicU64,
    pub(crate) delayed: std::sync::atomic::AtomicU64,
    pub(crate) stalled: std::sync::atomic::AtomicU64,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: std::sync::Arc<ProxyState>,
    frozen: CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let latency = state.latency_ms.load(std::sync::atomic::Ordering::SeqCst);
        if latency > 0 {
            state.counts.delayed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if frozen.is_cancelled() {
            state.counts.stalled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
        state.counts.bytes.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
    }
}
