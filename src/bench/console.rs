//! `replay bench console`: the console's events API with each filter an
//! operator uses, on a large ledger, served by the real `replay console`
//! binary; each filter's p95 next to the same selection read straight from
//! the database (`ledger::select`, the baseline), and the console's memory
//! before and after.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::PgPool;

use super::*;
use crate::config::Endpoints;
use crate::console::filters::EventFilters;
use crate::replay::selector::Selector;
use crate::store::ledger;
use crate::store::tokens::Role;

/// Requests timed per filter (after two untimed ones).
const REQUESTS: usize = 40;
/// Rows of another type, and rows in `error`, placed among the oldest rows,
/// so a newest-first listing must reach far back for them.
const RARE_TYPE_ROWS: i64 = 5_000;
const ERROR_ROWS: i64 = 2_000;

/// One filter's timings.
pub struct Timed {
    pub name: &'static str,
    pub query: String,
    pub rows: usize,
    /// p50 and p95 in ms, through the console's API.
    pub api: (f64, f64),
    /// p50 and p95 in ms, the `/events` page with the same filters.
    pub page: (f64, f64),
    /// p50 and p95 in ms, the same selection read with `ledger::select`.
    pub raw: (f64, f64),
}

/// What `replay bench console` prints.
pub struct ConsoleReport {
    pub rows: usize,
    pub filters: Vec<Timed>,
    /// The console's RSS in KiB before the first request and after the last, and its peak.
    pub rss_kib: (u64, u64, u64),
}

impl std::fmt::Display for ConsoleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "events API and page on a {}-row ledger, {REQUESTS} requests per filter (ms):", self.rows)?;
        writeln!(
            f,
            "  {:<34} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "filter", "rows", "api p50", "api p95", "page p50", "page p95", "raw p50", "raw p95"
        )?;
        for t in &self.filters {
            writeln!(
                f,
                "  {:<34} {:>5} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                t.name, t.rows, t.api.0, t.api.1, t.page.0, t.page.1, t.raw.0, t.raw.1
            )?;
        }
        let worst = self.filters.iter().map(|t| t.api.1).fold(0.0, f64::max);
        let ratio = median(self.filters.iter().map(|t| t.api.1 / t.raw.1.max(0.01)).collect());
        writeln!(f, "slowest filter p95 through the console (API or page): {worst:.1} ms (target < 200 ms)")?;
        writeln!(f, "ratio: console p95 / raw query p95 = {ratio:.2} (median over the filters)")?;
        let mib = |k: u64| k as f64 / 1024.0;
        writeln!(
            f,
            "console RSS: {:.1} MiB before, {:.1} MiB after, peak {:.1} MiB (flat: each page is one keyset read)",
            mib(self.rss_kib.0),
            mib(self.rss_kib.1),
            mib(self.rss_kib.2)
        )
    }
}

/// `replay bench console`.
pub async fn run(endpoints: &Endpoints, rows: usize, keep: bool, exe: &Path) -> anyhow::Result<ConsoleReport> {
    let (scratch, names) = scratch(endpoints, "console").await?;
    let result = measure(&names, &scratch.pool, rows, exe).await;
    finish(endpoints, scratch, &names, keep).await?;
    result
}

async fn measure(names: &Endpoints, pool: &PgPool, rows: usize, exe: &Path) -> anyhow::Result<ConsoleReport> {
    eprintln!("seeding {rows} ledger rows…");
    seed(pool, rows).await?;
    let member = shape(pool).await?;
    let token = crate::control::tokens::create(pool, "bench", Role::Viewer, "bench").await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let work = tempfile::tempdir().context("creating a scratch directory")?;
    let plans = work.path().join("plans").display().to_string();
    let mut console = command(exe, names, &["console", "--listen", &format!("127.0.0.1:{port}"), "--plan-dir", &plans])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting replay console")?;
    let pid = console.id().context("replay console exited at once")?;
    let base = format!("http://127.0.0.1:{port}/api/v1/events");
    wait_until_up(&base, token.secret.reveal()).await?;
    let session = log_in(port, token.secret.reveal()).await?;
    let page = format!("http://127.0.0.1:{port}/events");
    let middle: i64 = sqlx::query_scalar("SELECT id FROM processed_events ORDER BY id OFFSET $1 LIMIT 1")
        .bind((rows / 2) as i64)
        .fetch_one(pool)
        .await?;
    let before = proc_status_kib(pid, "VmRSS:");
    let filters: Vec<(&'static str, String)> = vec![
        ("newest first", String::new()),
        ("a page half-way down (after=)", format!("after={middle}")),
        ("status=error (all old)", "status=error".into()),
        ("status=error, second page", "status=error&limit=50&after=LAST".into()),
        ("type=payment.initiated (old)", "type=payment.initiated".into()),
        ("type + one day", "type=contribution.submitted&from=2026-01-05&to=2026-01-05".into()),
        ("payload member_id=… (old)", format!("payload=member_id={member}")),
        ("status=processed, limit 500", "status=processed&limit=500".into()),
    ];
    let mut timed = Vec::new();
    for (name, mut query) in filters {
        if query.contains("LAST") {
            let first = get(&format!("{base}?status=error"), token.secret.reveal()).await?;
            let next = first["next"].as_i64().context("the first page of errors has a next page")?;
            query = query.replace("LAST", &next.to_string());
        }
        eprintln!("timing {name}…");
        let endpoints = Urls { api: &base, page: &page, token: token.secret.reveal(), session: &session };
        timed.push(time_filter(pool, &endpoints, name, query).await?);
    }
    let after = proc_status_kib(pid, "VmRSS:");
    let peak = proc_status_kib(pid, "VmHWM:");
    let _ = console.kill().await;
    Ok(ConsoleReport { rows, filters: timed, rss_kib: (before, after, peak) })
}

/// Gives the seeded ledger what operators filter on: a rare type and
/// failed rows among the oldest, and one member's rows; returns that member.
async fn shape(pool: &PgPool) -> anyhow::Result<String> {
    sqlx::query("UPDATE processed_events SET event_type = 'payment.initiated' WHERE id % 20 = 0 AND id <= $1")
        .bind(RARE_TYPE_ROWS * 20)
        .execute(pool)
        .await?;
    sqlx::query(
        "UPDATE processed_events SET status = 'error', error_message = 'provider timeout', processed_at = now()
          WHERE id % 20 = 7 AND id <= $1",
    )
    .bind(ERROR_ROWS * 20)
    .execute(pool)
    .await?;
    let member = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "UPDATE processed_events SET payload = jsonb_set(payload, '{member_id}', to_jsonb($1::text)) WHERE id % 1000 = 3 AND id <= 300000",
    )
    .bind(&member)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE processed_events").execute(pool).await?;
    Ok(member)
}

async fn wait_until_up(base: &str, token: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match get(&format!("{base}?limit=1"), token).await {
            Ok(_) => return Ok(()),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => return Err(error.context("the console never answered")),
        }
    }
}

/// One GET of the API over plain HTTP/1.1 (a fresh connection each time,
/// as a browser's first request would be), its JSON body.
async fn get(url: &str, token: &str) -> anyhow::Result<serde_json::Value> {
    let (_, body) = exchange("GET", url, &format!("Authorization: Bearer {token}"), "").await?;
    Ok(serde_json::from_str(&body)?)
}

/// Signs in at `/login` with `token`; the session cookie (`name=value`).
async fn log_in(port: u16, token: &str) -> anyhow::Result<String> {
    let form = format!("token={token}");
    let headers = format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}", form.len());
    let (head, _) = exchange("POST", &format!("http://127.0.0.1:{port}/login"), &headers, &form).await?;
    head.lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
        .context("the login set no session cookie")
}

/// One request over a fresh HTTP/1.1 connection: the head and the body;
/// an error unless it answered 200 or a redirect.
async fn exchange(method: &str, url: &str, headers: &str, body: &str) -> anyhow::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = url::Url::parse(url)?;
    let address = format!("{}:{}", url.host_str().unwrap_or("127.0.0.1"), url.port().unwrap_or(80));
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let request =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\nConnection: close\r\n\r\n{body}");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("an HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    anyhow::ensure!(status == "200" || status == "303", "{target} answered {}", head.lines().next().unwrap_or(""));
    Ok((head.to_string(), body.to_string()))
}

/// Where the filters are asked, and with what.
struct Urls<'a> {
    api: &'a str,
    page: &'a str,
    token: &'a str,
    /// The session cookie of the pages.
    session: &'a str,
}

/// The selection the console reads for the same query, parsed by the
/// console's own filters (the baseline reads it with `ledger::select`).
fn selector_of(query: &str) -> anyhow::Result<(Selector, ledger::Order)> {
    let uri: axum::http::Uri = format!("/events?{query}").parse()?;
    let axum::extract::Query(filters) = axum::extract::Query::<EventFilters>::try_from_uri(&uri)?;
    let selector = filters.selector().map_err(|e| anyhow::anyhow!(e.message))?;
    Ok((selector, ledger::Order::LatestFirst { after: filters.after }))
}

async fn time_filter(pool: &PgPool, urls: &Urls<'_>, name: &'static str, query: String) -> anyhow::Result<Timed> {
    let with = |base: &str| if query.is_empty() { base.to_string() } else { format!("{base}?{query}") };
    let (url, page_url) = (with(urls.api), with(urls.page));
    let (selector, order) = selector_of(&query)?;
    let mut api = Vec::with_capacity(REQUESTS);
    let mut page = Vec::with_capacity(REQUESTS);
    let mut raw = Vec::with_capacity(REQUESTS);
    let mut rows = 0;
    for n in 0..REQUESTS + 2 {
        let started = Instant::now();
        let answer = get(&url, urls.token).await?;
        let api_ms = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        let (_, html) = exchange("GET", &page_url, &format!("Cookie: {}", urls.session), "").await?;
        let page_ms = started.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(html.contains("<table"), "{name}: the events page shows no table");
        let started = Instant::now();
        let direct = ledger::select(pool, &selector, order).await?;
        let raw_ms = started.elapsed().as_secs_f64() * 1000.0;
        rows = answer["events"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(rows == direct.len(), "{name}: the console listed {rows} rows, the database {}", direct.len());
        if n >= 2 {
            api.push(api_ms);
            page.push(page_ms);
            raw.push(raw_ms);
        }
    }
    Ok(Timed { name, query, rows, api: percentiles(api), page: percentiles(page), raw: percentiles(raw) })
}

/// p50 and p95.
fn percentiles(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values.get(((values.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    (at(0.5), at(0.95))
}
