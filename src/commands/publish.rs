//! `replay publish`: one event from flags, or a JSON Lines file of them.
//! The whole input is read and checked before anything is sent, so a
//! malformed line publishes nothing.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::cli::PublishArgs;
use crate::config::Endpoints;
use crate::exit::UsageError;
use crate::wire::envelope::{EnvelopeLine, Event};
use crate::wire::publisher::Publisher;
use crate::wire::transport;

pub async fn run(endpoints: &Endpoints, args: PublishArgs) -> anyhow::Result<ExitCode> {
    let events = keyed(read_events(args)?, endpoints.partitions)?;
    check_partitions(endpoints).await?;
    let mut confirmed = 0;
    if let Err(error) = publish(endpoints, &events, &mut confirmed).await {
        // A refusal (unroutable, nacked, bad credentials) would fail the same
        // way from the outbox, forever: it is the operator's to fix.
        if !error.is_outage() {
            return Err(error.into());
        }
        // The broker is away: what it did not confirm is kept durably in the
        // outbox, and the workers relay it when it is back.
        let rest = &events[confirmed..];
        let kept = keep(endpoints, rest, &error).await.with_context(|| {
            format!("{error}; and the {} unconfirmed event(s) could not be kept in the outbox either", rest.len())
        })?;
        eprintln!("warning: {error}");
        println!(
            "published {confirmed} event(s) to exchange '{}' (confirmed); {} kept in the outbox ({kept} new): workers relay them when RabbitMQ is back",
            endpoints.exchange,
            rest.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    match events.as_slice() {
        [one] => {
            println!("published {} {} to exchange '{}' (confirmed)", one.event_type, one.event_id, endpoints.exchange)
        }
        many => println!("published {} events to exchange '{}' (all confirmed)", many.len(), endpoints.exchange),
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses to publish with another partition count than the system runs:
/// declaring the stream with it would bind other queues to the hash
/// exchange and move keys under running workers. A database that cannot be
/// reached does not stop a publish (the broker is what it needs): it is said.
async fn check_partitions(endpoints: &Endpoints) -> anyhow::Result<()> {
    let pool = match crate::store::database::connect(&endpoints.database_url, 1).await {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("warning: the partition count was not checked against the system's ({e}); publishing with --partitions {}", endpoints.partitions);
            return Ok(());
        }
    };
    crate::store::database::check_migrated(&pool, &endpoints.database_url).await?;
    crate::store::partitioning::check(&pool, endpoints.partitions).await?;
    pool.close().await;
    Ok(())
}

/// Sets each event's partition key from its payload (`handlers::partition_field`).
/// With more than one partition, an event whose type has a key field and
/// whose payload lacks it is refused, and nothing is published: unkeyed, it
/// would land in another partition than the events it must follow.
fn keyed(events: Vec<Event>, partitions: u16) -> anyhow::Result<Vec<Event>> {
    events
        .into_iter()
        .enumerate()
        .map(|(index, event)| match crate::handlers::partition_key(&event) {
            Ok(partition_key) => Ok(Event { partition_key, ..event }),
            Err(field) if partitions > 1 => Err(UsageError(format!(
                "event {} ({}, number {} of the input) has no payload field {field}, its partition key: with --partitions {partitions} it would reach another partition than the events it must follow. Add \"{field}\" to its payload. Nothing was published",
                event.event_id,
                event.event_type,
                index + 1
            ))
            .into()),
            Err(_) => Ok(event),
        })
        .collect()
}

/// Publishes with confirms; `confirmed` counts the events confirmed so far.
async fn publish(
    endpoints: &Endpoints,
    events: &[Event],
    confirmed: &mut usize,
) -> Result<(), transport::TransportError> {
    let connection = transport::connect(&endpoints.amqp_url, "replay publish").await?;
    let publisher = Publisher::open(&connection, endpoints).await?;
    let sent = publisher.publish_all(events, |n| *confirmed = n).await;
    transport::close(&connection, "published").await;
    sent
}

async fn keep(endpoints: &Endpoints, events: &[Event], error: &transport::TransportError) -> anyhow::Result<u64> {
    let pool = crate::store::database::connect(&endpoints.database_url, 1).await?;
    crate::store::database::check_migrated(&pool, &endpoints.database_url).await?;
    Ok(crate::store::outbox::keep(&pool, events, &error.cause()).await?)
}

fn read_events(args: PublishArgs) -> anyhow::Result<Vec<Event>> {
    if let Some(path) = args.file {
        let file =
            std::fs::File::open(&path).map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
        return read_lines(std::io::BufReader::new(file), &path.display().to_string());
    }
    let (Some(event_type), Some(payload)) = (args.event_type, args.payload) else {
        return Err(UsageError("give --type and --payload, or --file".into()).into());
    };
    let payload = serde_json::from_str(&payload).map_err(|e| {
        UsageError(format!("--payload is not valid JSON: {e}. Quote it, e.g. --payload '{{\"period_id\":\"...\"}}'"))
    })?;
    let occurred_at = match args.occurred_at {
        Some(text) => parse_time(&text)?,
        None => Utc::now(),
    };
    let line = EnvelopeLine { event_id: args.event_id, event_type, occurred_at: Some(occurred_at), payload };
    let event = line.into_event().map_err(|e| UsageError(format!("cannot publish this event: {e}")))?;
    Ok(vec![event])
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, UsageError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        UsageError(format!("--occurred-at '{text}' is not an RFC 3339 time ({e}); use e.g. 2026-01-31T12:00:00Z"))
    })
}

/// Reads every line before returning, so one bad line rejects the file.
fn read_lines(reader: impl BufRead, name: &str) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| UsageError(format!("{name}: cannot read line {number}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let envelope: EnvelopeLine = serde_json::from_str(&line).map_err(|e| {
            UsageError(format!(
                "{name}: line {number} is not an event envelope ({e}); expected {{\"event_id\",\"event_type\",\"occurred_at\",\"payload\"}}. Nothing was published"
            ))
        })?;
        let event = envelope
            .into_event()
            .map_err(|e| UsageError(format!("{name}: line {number}: {e}. Nothing was published")))?;
        events.push(event);
    }
    if events.is_empty() {
        return Err(UsageError(format!("{name} holds no events. Nothing was published")).into());
    }
    Ok(events)
}
