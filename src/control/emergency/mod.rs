//! `replay emergency-stop`: pause every worker, purge the replay's messages,
//! restore the pre-replay backup, and lose nothing else.
//!
//! In order: pause and wait for the workers (and for a running apply to
//! see the pause and let go of the control lock); take every ready message
//! off the queue (consumers are gone, so none is held unacked elsewhere),
//! dropping the replay's and keeping the rest; save the ledger rows of events
//! first seen since the backup that are not part of the replay; restore the
//! backup in one transaction (the control plane, outside every dump, keeps the
//! pause, the audit log and the runs); put the saved events and the kept
//! messages back as `pending`, so they are processed on resume; only then ack
//! the taken messages. Each step is timed; a step that fails is reported, the
//! pause stays, and what is still safe goes on. Running it again continues.
//!
//! Architecture invariant: nothing taken off the queue is acked before what
//! must survive of it is committed to the ledger; if the stop dies first, the
//! channel closes and the broker puts every message back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use crate::config::Endpoints;
use crate::control::pause::{self, Paused};
use crate::replay::plan::PlanId;
use crate::store::audit::{self, AuditEntry};
use crate::wire::envelope::{self, Event, ReplayHeader};
use crate::{control::backup, store::dead_letters, store::ledger, store::outbox, store::runs, wire::transport};

/// How far before the backup's snapshot time (known to the second) events
/// are saved: a row that the backup does hold is skipped when put back, so an
/// early bound is only slower, never wrong.
const SAVE_MARGIN: Duration = Duration::from_secs(5);
/// The margin when only the dump file's time is known (the dump ran before it).
const FILE_TIME_MARGIN: Duration = Duration::from_secs(3600);
/// Longest wait for a running apply to let go of the control lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// Where an incident report goes with neither `--report-dir` nor a backup
/// to put it next to: where `replay backup` and `replay apply` put dumps.
const DEFAULT_REPORT_DIR: &str = "backups";

/// What to restore.
#[derive(Debug, Clone)]
pub enum Restore {
    /// The pre-replay backup of this plan's run.
    Plan { plan_id: PlanId, backup: PathBuf },
    /// This dump; any replay's messages are purged.
    Backup(PathBuf),
    /// Pause and purge only.
    Nothing,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub operator: String,
    pub reason: String,
    pub restore: Restore,
    pub wait: Duration,
    /// Where the incident report goes; `None`: next to the backup, else `backups/`.
    pub report_dir: Option<PathBuf>,
}

/// One step, timed.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub ms: u64,
    pub ok: bool,
    pub detail: String,
}

/// Everything the stop did, as printed and written to the incident report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_at: DateTime<Utc>,
    pub operator: String,
    pub reason: String,
    pub plan_id: Option<PlanId>,
    pub pause: Option<Paused>,
    pub purged_replay_messages: usize,
    pub kept_messages: usize,
    pub dead_lettered: usize,
    pub restored_from: Option<PathBuf>,
    /// Events first seen since the backup, not part of the replay, kept as pending.
    pub kept_events: u64,
    pub steps: Vec<Step>,
    pub report_path: Option<PathBuf>,
}

impl Report {
    pub fn failed(&self) -> Vec<&Step> {
        self.steps.iter().filter(|s| !s.ok).collect()
    }
}

/// Runs the stop; a failed step is recorded in the report, never returned
/// as an error, so every safe step still runs.
pub async fn stop(pool: &PgPool, endpoints: &Endpoints, request: &Request) -> Report {
    let plan_id = match &request.restore {
        Restore::Plan { plan_id, .. } => Some(*plan_id),
        _ => None,
    };
    let mut report = Report {
        started_at: Utc::now(),
        operator: request.operator.clone(),
        reason: request.reason.clone(),
        plan_id,
        pause: None,
        purged_replay_messages: 0,
        kept_messages: 0,
        dead_lettered: 0,
        restored_from: None,
        kept_events: 0,
        steps: Vec::new(),
        report_path: None,
    };

    // 1. Pause, and wait for the workers and for a running apply.
    let step = Instant::now();
    match pause::pause_workers(pool, &request.operator, &request.reason, request.wait).await {
        Ok(paused) => {
            let ok = paused.workers_still_running.is_empty();
            let detail = if ok {
                format!("{} worker(s) paused in {} ms", paused.workers_paused.len(), paused.latency_ms)
            } else {
                format!("still running after the wait: {}", paused.workers_still_running.join(", "))
            };
            report.steps.push(Step { name: "pause", ms: ms(step), ok, detail });
            report.pause = Some(paused);
        }
        Err(e) => report.steps.push(Step { name: "pause", ms: ms(step), ok: false, detail: e.to_string() }),
    }
    let step = Instant::now();
    let lock = wait_for_lock(pool).await;
    report.steps.push(Step {
        name: "apply lock",
        ms: ms(step),
        ok: lock.is_some(),
        detail: match &lock {
            Some(_) => "no apply running".into(),
            None => format!("an apply still holds the lock after {} s: not restoring under it", LOCK_WAIT.as_secs()),
        },
    });

    // 2. Take the queue's messages (unacked until the end).
    let step = Instant::now();
    let taken = take_messages(endpoints, request.wait).await;
    let (held, kept_events, dead) = match taken {
        Ok((connection, channel, deliveries)) => {
            let (replay, kept): (Vec<_>, Vec<_>) =
                deliveries.iter().partition(|d| is_replay_message(&d.properties, plan_id));
            let (events, dead) = crate::worker::read_batch(kept.iter().copied(), endpoints, usize::MAX);
            report.purged_replay_messages += replay.len();
            report.kept_messages = events.len();
            report.dead_lettered = dead.len();
            report.steps.push(Step {
                name: "purge",
                ms: ms(step),
                ok: true,
                detail: format!(
                    "{} replay message(s) removed, {} other message(s) kept for the ledger",
                    replay.len(),
                    kept.len()
                ),
            });
            let last = deliveries.last().map(|d| d.delivery_tag);
            (Some((connection, channel, last)), events, dead)
        }
        Err(e) => {
            report.steps.push(Step {
                name: "purge",
                ms: ms(step),
                ok: false,
                detail: format!(
                    "{e}. The queue still holds the replay's messages: run the stop again once the broker is back"
                ),
            });
            (None, Vec::new(), Vec::new())
        }
    };

    // A replay's events the broker never confirmed wait in the outbox (the
    // paused workers relay nothing): drop them too, broker or not, but only
    // under the apply lock, since a running apply may still be adding some.
    let step = Instant::now();
    let dropped = match &lock {
        Some(_) => outbox::drop_replay(pool, plan_id).await.map_err(|e| e.to_string()),
        None => Err("an apply still holds the lock".to_string()),
    };
    match dropped {
        Ok(dropped) => {
            report.purged_replay_messages += dropped as usize;
            report.steps.push(Step {
                name: "outbox",
                ms: ms(step),
                ok: true,
                detail: format!("{dropped} replay event(s) removed from the outbox"),
            });
        }
        Err(e) => report.steps.push(Step {
            name: "outbox",
            ms: ms(step),
            ok: false,
            detail: format!("{e}: the replay's events in the outbox were not removed; run the stop again"),
        }),
    }

    // 3. Restore, keeping what arrived after the backup.
    let backup = match &request.restore {
        Restore::Plan { backup, .. } | Restore::Backup(backup) => Some(backup.clone()),
        Restore::Nothing => None,
    };
    let mut to_keep = kept_events;
    let mut restore_ok = true;
    if let (Some(path), Some(_)) = (&backup, &lock) {
        let step = Instant::now();
        match restore_keeping(pool, endpoints, path, plan_id).await {
            Ok(saved) => {
                report.restored_from = Some(path.clone());
                report.steps.push(Step {
                    name: "restore",
                    ms: ms(step),
                    ok: true,
                    detail: format!("restored {}; {} event(s) first seen since kept", path.display(), saved.len()),
                });
                to_keep.extend(saved);
            }
            Err(e) => {
                restore_ok = false;
                report.steps.push(Step { name: "restore", ms: ms(step), ok: false, detail: e });
            }
        }
    }

    // 4. Put back what must survive, then let the broker forget what was taken.
    let step = Instant::now();
    match keep(pool, &to_keep, &dead).await {
        Ok(added) => {
            report.kept_events = added;
            report.steps.push(Step {
                name: "keep",
                ms: ms(step),
                ok: true,
                detail: format!(
                    "{added} event(s) added as pending, {} unreadable message(s) dead-lettered",
                    dead.len()
                ),
            });
            if let Some((connection, channel, Some(last))) = &held {
                if let Err(e) = transport::ack_through(channel, *last).await {
                    report.steps.push(Step { name: "ack", ms: ms(step), ok: false, detail: e.to_string() });
                }
                transport::close(connection, "emergency stop done").await;
            }
        }
        Err(e) => report.steps.push(Step {
            name: "keep",
            ms: ms(step),
            ok: false,
            detail: format!("{e}. The taken messages go back to the queue"),
        }),
    }
    drop(held);

    // 5. Record it: the run is never resumed, the audit log says what happened.
    if let (Some(plan_id), true) = (plan_id, restore_ok) {
        if let Err(e) = runs::stop(pool, plan_id).await {
            report.steps.push(Step { name: "mark run stopped", ms: 0, ok: false, detail: e.to_string() });
        }
    }
    let report_dir = report_dir(request, backup.as_deref());
    let path = report_dir.join(format!("incident-{}.json", report.started_at.format("%Y%m%dT%H%M%S%.3fZ")));
    report.report_path = Some(path.clone());
    if let Err(e) = audit_stop(pool, &report).await {
        report.steps.push(Step { name: "audit", ms: 0, ok: false, detail: e });
    }
    let written = std::fs::create_dir_all(&report_dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(&report).unwrap_or_default()));
    if let Err(e) = written {
        report.steps.push(Step {
            name: "incident report",
            ms: 0,
            ok: false,
            detail: format!("{}: {e}", path.display()),
        });
        report.report_path = None;
    }
    drop(lock);
    report
}

/// Where the incident report goes: the directory the operator named; else
/// next to the backup, where whoever looks into the replay finds its dump
/// (only if that directory exists: a backup that is missing is no reason to
/// create a directory for it); else [`DEFAULT_REPORT_DIR`].
fn report_dir(request: &Request, backup: Option<&Path>) -> PathBuf {
    if let Some(dir) = &request.report_dir {
        return dir.clone();
    }
    let beside = backup.and_then(Path::parent).map(|dir| if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
    match beside {
        Some(dir) if dir.is_dir() => dir.to_path_buf(),
        _ => PathBuf::from(DEFAULT_REPORT_DIR),
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Takes the control lock once a running apply has seen the pause and exited.
async fn wait_for_lock(pool: &PgPool) -> Option<runs::ControlLock> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        if let Ok(Some(lock)) = runs::try_lock(pool).await {
            return Some(lock);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A message is the replay's when it carries the plan's header (any plan's,
/// when no plan is named).
fn is_replay_message(properties: &lapin::BasicProperties, plan_id: Option<PlanId>) -> bool {
    match (envelope::replay_plan(properties), plan_id) {
        (ReplayHeader::Absent, _) => false,
        (_, None) => true,
        (ReplayHeader::Plan(plan), Some(wanted)) => plan == wanted,
        (ReplayHeader::Unreadable, Some(_)) => false,
    }
}

type Held = (lapin::Connection, lapin::Channel, Vec<lapin::message::Delivery>);

/// Waits until the queue has no consumer (the paused workers closed theirs,
/// so no message is held unacked elsewhere), then takes every message.
async fn take_messages(endpoints: &Endpoints, wait: Duration) -> Result<Held, transport::TransportError> {
    let connection = transport::connect(&endpoints.amqp_url, "replay emergency-stop").await?;
    let channel = transport::channel(&connection).await?;
    let deadline = Instant::now() + wait;
    loop {
        let (_, consumers) = transport::queue_counts(&channel, &endpoints.queue).await?;
        if consumers == 0 {
            break;
        }
        if Instant::now() >= deadline {
            // A consumer still holds deliveries the purge cannot see; it
            // would put them back after the purge. Not purging is the safe side.
            return Err(transport::TransportError::StillConsumed { queue: endpoints.queue.clone(), consumers });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deliveries = transport::take_all(&channel, &endpoints.queue).await?;
    Ok((connection, channel, deliveries))
}

/// Saves the events first seen since the backup (not the replay's), then
/// restores it. Returns the saved events, to be put back.
async fn restore_keeping(
    pool: &PgPool,
    endpoints: &Endpoints,
    path: &Path,
    plan_id: Option<PlanId>,
) -> Result<Vec<Event>, String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).map_err(|e| {
        format!("the backup {} cannot be read ({e}): pass --backup FILE with a dump that exists", path.display())
    })?;
    let margin = |d: Duration| chrono::Duration::from_std(d).unwrap_or_default();
    let since = match backup::created_at(path).await.map_err(|e| e.to_string())? {
        Some(created) => created - margin(SAVE_MARGIN),
        None => DateTime::<Utc>::from(modified) - margin(FILE_TIME_MARGIN),
    };
    let version = crate::store::database::schema_version(pool).await.map_err(|e| e.to_string())?;
    backup::check_schema(path, version).await.map_err(|e| e.to_string())?;
    let saved = ledger::first_seen_since(pool, since, plan_id.map(PlanId::as_uuid)).await.map_err(|e| e.to_string())?;
    backup::restore(&endpoints.database_url, path).await.map_err(|e| e.to_string())?;
    Ok(saved)
}

/// Adds kept events as pending and unreadable messages as dead letters, in one transaction.
async fn keep(pool: &PgPool, events: &[Event], dead: &[dead_letters::DeadLetter]) -> Result<u64, String> {
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    let added = ledger::insert_pending(&mut tx, events).await.map_err(|e| e.to_string())?;
    dead_letters::insert(&mut tx, dead).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(added)
}

async fn audit_stop(pool: &PgPool, report: &Report) -> Result<(), String> {
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    let entry = AuditEntry {
        operator: report.operator.clone(),
        action: "emergency.stop".into(),
        details: json!({
            "reason": report.reason,
            "plan_id": report.plan_id,
            "restored_from": report.restored_from,
            "purged_replay_messages": report.purged_replay_messages,
            "kept_messages": report.kept_messages,
            "kept_events": report.kept_events,
            "incident_report": report.report_path,
            "steps": report.steps,
        }),
    };
    audit::append(&mut tx, &entry).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(report_dir: Option<&str>) -> Request {
        Request {
            operator: "carol".into(),
            reason: "r".into(),
            restore: Restore::Nothing,
            wait: Duration::from_secs(1),
            report_dir: report_dir.map(PathBuf::from),
        }
    }

    #[test]
    fn the_report_goes_where_named_else_next_to_the_backup_else_to_backups() {
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("pre.dump");
        assert_eq!(report_dir(&request(Some("/tmp/incidents")), Some(&dump)), PathBuf::from("/tmp/incidents"));
        assert_eq!(report_dir(&request(None), Some(&dump)), dir.path());
        assert_eq!(report_dir(&request(None), Some(Path::new("pre.dump"))), PathBuf::from("."));
        // A missing backup's directory is not made up for its report.
        let missing = dir.path().join("gone").join("pre.dump");
        assert_eq!(report_dir(&request(None), Some(&missing)), PathBuf::from(DEFAULT_REPORT_DIR));
        assert_eq!(report_dir(&request(None), None), PathBuf::from(DEFAULT_REPORT_DIR));
    }
}
