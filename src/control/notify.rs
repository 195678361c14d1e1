//! Stakeholders told: `--notify URL` (or `REPLAY_NOTIFY_URL`) POSTs one JSON
//! [`Notification`] to a webhook when a plan is applied (its checks passed
//! and it starts), halted (a pause, an interrupt or a refusal stopped it
//! mid-way), finished, or emergency-stopped.
//!
//! A [`Notifier`] delivers in the order it was given, from a task of its
//! own: each attempt has [`ATTEMPT_TIMEOUT`], a failed one is retried with
//! backoff, and what still cannot be delivered is logged as a warning naming
//! the webhook's scheme, host and port only (a path or a query may hold a
//! secret). Invariant: a notification never blocks, fails or changes the
//! replay it reports, nor its exit code; only [`Notifier::close`] waits, and
//! at most [`CLOSE_WAIT`].

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use url::Url;

use crate::control::emergency::Report;
use crate::replay::apply::{ApplyError, Outcome, Reached};
use crate::replay::plan::{PlanId, SealedPlan};

/// The longest one delivery attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries after a failed attempt (so four attempts in all).
const RETRIES: usize = 3;
/// The longest a finishing command waits for what is still being delivered.
pub const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Checks `--notify`'s value (clap's parser): an absolute http URL with a host.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e}): give the webhook as http://host[:port]/path"))?;
    match url.scheme() {
        "http" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "http" => Err("the URL has no host: give the webhook as http://host[:port]/path".into()),
        "https" => Err("https webhooks need TLS, which this build's HTTP client does not include: \
             give an http URL (e.g. a relay on this host)"
            .into()),
        other => Err(format!("{other}:// is not a webhook: give an http:// URL (http://host[:port]/path)")),
    }
}

/// Where a webhook is, for a log line: scheme, host and port, never the
/// credentials, path or query.
pub fn redacted(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// What happened to the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Event {
    #[serde(rename = "replay.applied")]
    Applied,
    #[serde(rename = "replay.halted")]
    Halted,
    #[serde(rename = "replay.finished")]
    Finished,
    #[serde(rename = "replay.emergency_stopped")]
    EmergencyStopped,
}

/// The counts known when it is sent; an unknown one is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_in_outbox: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_rows: Option<u64>,
}

/// The JSON body POSTed to the webhook.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub event: Event,
    /// The plan, when the event is about one (an emergency stop may restore
    /// a backup with no plan named).
    pub plan_id: Option<PlanId>,
    pub operator: String,
    /// The plan's reason; for an emergency stop, the stop's.
    pub reason: String,
    pub counts: Counts,
    /// The next step in words, as the CLI prints it.
    pub next: String,
    /// An emergency stop's failed steps ("step: why").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_steps: Vec<String>,
    pub at: DateTime<Utc>,
}

/// The plan an apply's notifications are about, taken before the apply
/// consumes its checked plan.
#[derive(Debug, Clone)]
pub struct AppliedPlan {
    plan_id: PlanId,
    operator: String,
    reason: String,
    path: String,
    events: u64,
}

impl AppliedPlan {
    pub fn of(plan: &SealedPlan, operator: &str) -> Self {
        Self {
            plan_id: plan.header.plan_id,
            operator: operator.to_string(),
            reason: plan.header.reason.clone(),
            path: plan.path.display().to_string(),
            events: plan.events() as u64,
        }
    }

    /// "replay.applied": every check passed and the apply starts.
    pub fn started(&self) -> Notification {
        let next = format!("the apply is running: `replay status {}` shows its progress", self.path);
        self.notification(Event::Applied, Counts { events: Some(self.events), ..Counts::default() }, next)
    }

    /// "replay.finished" with the outcome's counts, or "replay.halted" with
    /// the error's words (which say what to do next).
    pub fn ended(&self, result: &Result<Outcome, ApplyError>) -> Notification {
        match result {
            Ok(outcome) => {
                let counts = Counts {
                    events: Some(outcome.events),
                    published: Some(outcome.published_now),
                    kept_in_outbox: Some(outcome.kept_in_outbox),
                    stale_rows: Some(outcome.stale_rows),
                };
                let next = format!("`replay status {} --watch` follows the workers processing them", self.path);
                self.notification(Event::Finished, counts, next)
            }
            Err(error) => {
                let counts = match error {
                    ApplyError::Paused { reached, .. }
                    | ApplyError::Interrupted(reached)
                    | ApplyError::BrokerRefused { reached, .. }
                    | ApplyError::BrokerLost { reached, .. } => reached_counts(reached),
                    _ => Counts { events: Some(self.events), ..Counts::default() },
                };
                self.notification(Event::Halted, counts, chain(error))
            }
        }
    }

    fn notification(&self, event: Event, counts: Counts, next: String) -> Notification {
        Notification {
            event,
            plan_id: Some(self.plan_id),
            operator: self.operator.clone(),
            reason: self.reason.clone(),
            counts,
            next,
            failed_steps: vec![],
            at: Utc::now(),
        }
    }
}

fn reached_counts(reached: &Reached) -> Counts {
    Counts { events: Some(reached.events), published: Some(reached.published), ..Counts::default() }
}

/// An error and its causes on one line, as `exit::render` prints them.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

impl Notification {
    /// "replay.emergency_stopped", with the report's failed steps and
    /// `next`, the words the command ends with.
    pub fn emergency_stopped(report: &Report, next: String) -> Self {
        Self {
            event: Event::EmergencyStopped,
            plan_id: report.plan_id,
            operator: report.operator.clone(),
            reason: report.reason.clone(),
            counts: Counts::default(),
            next,
            failed_steps: report.failed().iter().map(|s| format!("{}: {}", s.name, s.detail)).collect(),
            at: Utc::now(),
        }
    }
}

/// Delivers notifications to one webhook, in order, from its own task; with
/// no URL it does nothing.
pub struct Notifier {
    queue: Option<(mpsc::UnboundedSender<Notification>, JoinHandle<()>)>,
}

impl Notifier {
    /// Starts delivering to `url` (`None`: notifications are dropped).
    /// Needs a Tokio runtime.
    pub fn new(url: Option<Url>) -> Self {
        let queue = url.and_then(|url| {
            let client = match reqwest::Client::builder()
                .timeout(ATTEMPT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("replay/", env!("CARGO_PKG_VERSION")))
                .build()
            {
                Ok(client) => client,
                Err(error) => {
                    tracing::warn!(webhook = %redacted(&url), error = %error.without_url(), "notifications are off: the HTTP client could not be built");
                    return None;
                }
            };
            let (sender, mut received) = mpsc::unbounded_channel::<Notification>();
            let delivery = tokio::spawn(async move {
                while let Some(notification) = received.recv().await {
                    deliver(&client, &url, &notification).await;
                }
            });
            Some((sender, delivery))
        });
        Self { queue }
    }

    /// Queues `notification`; returns at once.
    pub fn send(&self, notification: Notification) {
        if let Some((sender, _)) = &self.queue {
            // The task ends only once the sender is dropped (`close`).
            let _ = sender.send(notification);
        }
    }

    /// Waits for what is queued to be delivered or given up, at most
    /// [`CLOSE_WAIT`].
    pub async fn close(self) {
        if let Some((sender, delivery)) = self.queue {
            drop(sender);
            if tokio::time::timeout(CLOSE_WAIT, delivery).await.is_err() {
                tracing::warn!(wait = ?CLOSE_WAIT, "notifications still undelivered were given up");
            }
        }
    }
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("{0}")]
    Request(String),
    #[error("the webhook answered {0}")]
    Status(reqwest::StatusCode),
}

impl AttemptError {
    /// Worth another attempt: no answer, a server error or "too many requests".
    fn is_transient(&self) -> bool {
        match self {
            Self::Request(_) => true,
            Self::Status(status) => status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// POSTs `notification`, retried with backoff; a failure is logged, never returned.
async fn deliver(client: &reqwest::Client, url: &Url, notification: &Notification) {
    let attempt = || async {
        let response = client
            .post(url.clone())
            .json(notification)
            .send()
            .await
            .map_err(|e| AttemptError::Request(chain(&e.without_url())))?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(AttemptError::Status(status)),
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(RETRIES);
    let event = notification.event;
    match attempt.retry(backoff).when(AttemptError::is_transient).await {
        Ok(()) => tracing::debug!(webhook = %redacted(url), ?event, "notification delivered"),
        Err(error) => tracing::warn!(
            webhook = %redacted(url),
            ?event,
            "notification not delivered to {}: {error} (the replay is not affected)",
            redacted(url)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_are_webhooks() {
        assert!(parse_url("http://127.0.0.1:9/hook?token=s").is_ok());
        assert!(parse_url("ftp://x").unwrap_err().contains("http://"));
        assert!(parse_url("not a url").is_err());
        assert!(parse_url("https://example.com/hook").unwrap_err().contains("TLS"));
    }

    #[test]
    fn a_redacted_webhook_keeps_neither_credentials_nor_path_nor_query() {
        let url = Url::parse("http://user:pw@hooks.example:8080/T0/secret?token=abc").unwrap();
        assert_eq!(redacted(&url), "http://hooks.example:8080");
    }

    #[test]
    fn events_are_named_as_the_webhook_reads_them() {
        assert_eq!(serde_json::to_value(Event::EmergencyStopped).unwrap(), "replay.emergency_stopped");
        assert_eq!(serde_json::to_value(Event::Halted).unwrap(), "replay.halted");
    }
}
