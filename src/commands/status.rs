//! `replay status [PLAN] [--watch] [--json]`: a plan's replay by status, rate
//! and ETA, with failures grouped; without a plan, the ledger by type and
//! status, the pause and the queue depth.

use std::collections::BTreeMap;
use std::process::ExitCode;

use comfy_table::Table;
use serde_json::json;
use sqlx::PgPool;

use crate::cli::StatusArgs;
use crate::config::Endpoints;
use crate::replay::plan::SealedPlan;
use crate::store::ledger::{self, Status};
use crate::{store::database, store::pause, wire::transport};

pub async fn run(endpoints: &Endpoints, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    let plan = args.plan.as_deref().map(SealedPlan::open).transpose()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    if args.watch {
        super::spawn_signal_listener(shutdown.clone())?;
    }
    loop {
        let (report, settled) = match &plan {
            Some(plan) => {
                let progress = crate::replay::progress::plan_report(&pool, plan).await?;
                (progress.report, progress.settled)
            }
            None => (ledger_report(&pool, endpoints).await?, true),
        };
        if args.json {
            println!("{report}");
        } else {
            if args.watch {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", human(&report));
        }
        if !args.watch || (plan.is_some() && settled) {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn ledger_report(pool: &PgPool, endpoints: &Endpoints) -> anyhow::Result<serde_json::Value> {
    let mut by_type: BTreeMap<String, BTreeMap<Status, i64>> = BTreeMap::new();
    for row in ledger::count_by_type_and_status(pool).await? {
        by_type.entry(row.event_type).or_default().insert(row.status, row.count);
    }
    let paused = pause::current(pool).await?;
    let queue = match queue_depth(endpoints).await {
        Ok(depth) => json!({"name": endpoints.queue, "depth": depth}),
        Err(error) => json!({"name": endpoints.queue, "depth": null, "error": error.to_string()}),
    };
    let held = ledger::held(pool, 10).await?;
    let held_count = ledger::count_held(pool).await?;
    let leaders = crate::store::leaders::all(pool).await?;
    let unkeyed = crate::store::unkeyed::all(pool).await?;
    let partitions: Vec<String> = endpoints.partition_list().into_iter().map(|p| p.queue).collect();
    Ok(json!({
        "partitions": partitions,
        "unkeyed": unkeyed,
        "ledger": by_type,
        "paused": paused,
        "queue": queue,
        "leaders": leaders,
        "held": {"count": held_count, "first": held},
    }))
}

async fn queue_depth(endpoints: &Endpoints) -> Result<u32, transport::TransportError> {
    let connection = transport::connect(&endpoints.amqp_url, "replay status").await?;
    let channel = transport::channel(&connection).await?;
    let depth = transport::stream_depth(&channel, endpoints).await;
    transport::close(&connection, "status read").await;
    depth
}

fn human(report: &serde_json::Value) -> String {
    let mut out = String::new();
    if let Some(plan_id) = report.get("plan_id") {
        out += &format!(
            "plan {} ({}): {} events, {} published, state {}\n",
            plan_id.as_str().unwrap_or("?"),
            report["reason"].as_str().unwrap_or(""),
            report["events"],
            report["published"],
            report["state"].as_str().unwrap_or("?")
        );
        let mut table = Table::new();
        table.set_header(["status", "rows"]);
        for (status, count) in report["by_status"].as_object().into_iter().flatten() {
            table.add_row([status.clone(), count.to_string()]);
        }
        out += &format!("{table}\n");
        if report["in_outbox"].as_i64().is_some_and(|n| n > 0) {
            out += &format!(
                "{} event(s) wait in the outbox (RabbitMQ failed during the apply): the workers publish them when it is back\n",
                report["in_outbox"]
            );
        }
        if let Some(rate) = report["rate_per_second"].as_f64() {
            out += &format!("rate: {rate:.1} events/s");
            if let Some(eta) = report["eta_seconds"].as_f64() {
                out += &format!(", about {eta:.0} s to go");
            }
            out += "\n";
        }
        for failure in report["failures"].as_array().into_iter().flatten() {
            out += &format!(
                "WARNING: {} row(s) {} again during the replay: {}\n",
                failure["count"],
                if failure["status"] == "error" { "failed" } else { "are retrying" },
                failure["error"].as_str().unwrap_or("")
            );
        }
        if report["state"] == "not applied" {
            out += "next: `replay apply` this plan\n";
        }
        if let Some(reason) = report["halted"]["reason"].as_str() {
            out += &format!(
                "halted {reason}\nnext: fix the cause, then run the same `replay apply` again; the unpublished rest stays parked until then\n"
            );
        }
        return out;
    }
    let mut table = Table::new();
    table.set_header(std::iter::once("event type").chain(Status::ALL.map(Status::as_str)));
    for (event_type, statuses) in report["ledger"].as_object().into_iter().flatten() {
        let mut row = vec![event_type.clone()];
        for status in Status::ALL {
            row.push(statuses.get(status.as_str()).map_or("0".to_string(), |c| c.to_string()));
        }
        table.add_row(row);
    }
    out += &format!("{table}\n");
    out += &match report["paused"].as_object() {
        Some(p) => format!(
            "workers: PAUSED since {} by {} ({})\n",
            p["paused_at"].as_str().unwrap_or("?"),
            p["operator"].as_str().unwrap_or("?"),
            p["reason"].as_str().unwrap_or("")
        ),
        None => "workers: not paused\n".to_string(),
    };
    for leader in report["leaders"].as_array().into_iter().flatten() {
        out += &format!(
            "partition {}: led by {} since {} (takeover #{})\n",
            leader["partition"].as_str().unwrap_or("?"),
            leader["worker_id"].as_str().unwrap_or("?"),
            leader["since"].as_str().unwrap_or("?"),
            leader["epoch"]
        );
    }
    for unkeyed in report["unkeyed"].as_array().into_iter().flatten() {
        out += &format!(
            "partition {}: {} event(s) arrived without a partition key (x-partition-key), last at {}: they keep no order \
             with the keyed events of other partitions. next: have their producer set the key (README, \"Partitions\")\n",
            unkeyed["partition_index"],
            unkeyed["events"],
            unkeyed["last_seen_at"].as_str().unwrap_or("?")
        );
    }
    let held = &report["held"];
    if held["count"].as_i64().is_some_and(|n| n > 0) {
        out += &format!(
            "{} event(s) held behind an earlier event of their sequence that is not applied yet:\n",
            held["count"]
        );
        for h in held["first"].as_array().into_iter().flatten() {
            out += &format!(
                "  {} {} held behind {}\n",
                h["event_id"].as_str().unwrap_or("?"),
                h["event_type"].as_str().unwrap_or("?"),
                h["held_behind"].as_str().unwrap_or("?")
            );
        }
        out += "next: fix what the event they are held behind needs, then replay it (`replay plan --event-id ...`), \
                or `replay dlq resolve` it to let them go on without it\n";
    }
    let queue = &report["queue"];
    out += &match queue["depth"].as_u64() {
        Some(depth) => match report["partitions"].as_array().map(Vec::len) {
            Some(n) if n > 1 => {
                format!("queue {} ({n} partitions): {depth} ready messages\n", queue["name"].as_str().unwrap_or("?"))
            }
            _ => format!("queue {}: {depth} ready messages\n", queue["name"].as_str().unwrap_or("?")),
        },
        None => format!(
            "queue {}: unknown ({})\n",
            queue["name"].as_str().unwrap_or("?"),
            queue["error"].as_str().unwrap_or("")
        ),
    };
    out
}
