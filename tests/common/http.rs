//! Plain HTTP against a worker's health and metrics endpoints, and free
//! ports to serve them on.
#![allow(clippy::unwrap_used)] // a test that cannot bind a port should fail loudly

use std::time::Duration;

/// A plain HTTP/1.0 GET: (status code, body), or `None` if nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Some((code, body))
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits up to 20 s for `path` to answer `expected`; returns the body.
pub async fn wait_for_status(port: u16, path: &str, expected: u16) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((code, body)) = http_get(port, path).await {
            if code == expected {
                return body;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{path} never answered {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
