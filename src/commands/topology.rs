//! `replay topology [migrate|repartition]`: the broker topology against the
//! ordered one, moving an old queue to it, changing the partition count.

use std::process::ExitCode;

use crate::cli::{RepartitionArgs, TopologyAction, TopologyArgs};
use crate::config::Endpoints;
use crate::exit::Refused;
use crate::wire::topology::{self, QueueState, TopologyError};

pub async fn run(endpoints: &Endpoints, args: TopologyArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        None => show(endpoints, args.json).await,
        Some(TopologyAction::Migrate) => migrate(endpoints, args.json).await,
        Some(TopologyAction::Repartition(repartition)) => repartition_to(endpoints, repartition, args.json).await,
    }
}

async fn repartition_to(endpoints: &Endpoints, args: RepartitionArgs, json: bool) -> anyhow::Result<ExitCode> {
    let pool = crate::store::database::connect(&endpoints.database_url, 2).await?;
    crate::store::database::check_migrated(&pool, &endpoints.database_url).await?;
    let operator = args.operator.unwrap_or_else(super::os_user);
    let done = match crate::control::repartition::repartition(&pool, endpoints, args.to, &operator, &args.reason).await
    {
        Ok(done) => done,
        Err(e) if e.is_refusal() => return Err(Refused(e.to_string()).into()),
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string(&done)?);
    } else {
        println!(
            "repartitioned: {} -> {} partition(s); removed {}; declared {} (audit entry #{})",
            done.from,
            done.to,
            done.removed.join(", "),
            done.declared.join(", "),
            done.audit_id
        );
        println!(
            "next: start every worker, publisher and apply with --partitions {} (REPLAY_PARTITIONS={}), then `replay resume`",
            done.to, done.to
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(endpoints: &Endpoints, json: bool) -> anyhow::Result<ExitCode> {
    let inspection = topology::inspect(endpoints).await?;
    if json {
        println!("{}", serde_json::to_string(&inspection)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("exchange {} (topic) -> queue {} (bound with #)", endpoints.exchange, inspection.queue);
    println!("wanted:   {}", inspection.wanted);
    match &inspection.state {
        QueueState::Missing => {
            println!("declared: not yet (the first worker or `replay publish` declares it as wanted)")
        }
        QueueState::AsWanted { messages, consumers } => {
            println!("declared: as wanted ({messages} ready message(s), {consumers} consumer(s))")
        }
        QueueState::Different { messages, consumers, broker_says } => {
            println!("declared: DIFFERENT ({messages} ready message(s), {consumers} consumer(s)); RabbitMQ says: {broker_says}");
            println!("next: stop (or `replay pause`) the workers of the old version, then `replay topology migrate`");
        }
    }
    for (queue, messages) in &inspection.draining {
        println!("migration queue {queue}: {messages} message(s), drained by the partition's leader before its queue");
    }
    Ok(ExitCode::SUCCESS)
}

async fn migrate(endpoints: &Endpoints, json: bool) -> anyhow::Result<ExitCode> {
    let pool = crate::store::database::connect(&endpoints.database_url, 1).await?;
    crate::store::database::check_migrated(&pool, &endpoints.database_url).await?;
    let migrated = match topology::migrate(endpoints, &pool).await {
        Ok(migrated) => migrated,
        Err(e @ (TopologyError::StillConsumed { .. } | TopologyError::NothingToMigrate { .. })) => {
            return Err(Refused(e.to_string()).into())
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string(&migrated)?);
    } else {
        println!(
            "migrated queue {} to the ordered topology: {} message(s) moved to {}, events published meanwhile in {}; \
             the partition's leader applies them, in that order, before the queue's own",
            migrated.queue,
            migrated.moved,
            topology::migration_old(&migrated.queue),
            topology::migration_live(&migrated.queue)
        );
    }
    Ok(ExitCode::SUCCESS)
}
