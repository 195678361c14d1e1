//! `replay emergency-stop` with two workers and a replay mid-flight: the
//! workers pause, the apply exits 4, the replay's messages are gone, the
//! ledger (every column), the replay history, the effect probe's rows and the
//! domain are back to their pre-replay state, and nothing else is lost:
//! events that arrived after the backup are processed on resume.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use sqlx::PgPool;

const SKIPPED: &str = "SELECT count(*) FROM processed_events WHERE status = 'skipped'";
fn noted(n: usize, tag: &str) -> Vec<replay::wire::envelope::Event> {
    (0..n).map(|i| event("member.noted", json!({"n": i, "tag": tag}))).collect()
}

/// What a restore of the pre-replay backup must bring back, each as a digest
/// over `t::text` of every row (every column): the ledger (leaving out the
/// rows of events first seen after the backup, which the stop keeps), the
/// replay history and the effect probe. Handlers are idempotent, so the
/// domain alone cannot tell a restore from none; the probe can: it appends a
/// row per application with no unique key, so a replay's applications stay
/// there unless the backup is restored.
#[derive(Debug)]
struct Restorable {
    ledger: Option<String>,
    history: Option<String>,
    history_rows: i64,
    probe: Option<String>,
    probe_rows: i64,
}

impl Restorable {
    async fn of(world: &World, except: &[String]) -> Self {
        let ledger = sqlx::query_scalar(
            "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM processed_events t WHERE NOT event_id = ANY($1)",
        )
        .bind(except)
        .fetch_one(&world.pool)
        .await
        .unwrap();
        let (history_rows, history) =
            sqlx::query_as("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM replay_history t")
                .fetch_one(&world.pool)
                .await
                .unwrap();
        let (probe_rows, probe) =
            sqlx::query_as("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM effect_probe t")
                .fetch_one(&world.pool)
                .await
                .unwrap();
        Self { ledger, history, history_rows, probe, probe_rows }
    }

    /// Panics unless `world` (but for the `except` rows) is back to `self`.
    async fn assert_restored(&self, world: &World, except: &[String]) {
        let now = Self::of(world, except).await;
        assert_eq!(now.ledger, self.ledger, "every ledger row, every column, is back to its pre-replay state");
        assert_eq!(
            (now.history_rows, &now.history),
            (self.history_rows, &self.history),
            "the replay history is back to its pre-replay state"
        );
        assert_eq!(
            (now.probe_rows, &now.probe),
            (self.probe_rows, &self.probe),
            "the probe's rows are back to their pre-replay state: the replay's applications are undone"
        );
    }
}

const PROBE_ROWS: &str = "SELECT count(*) FROM effect_probe";

/// A reason unique to this test's world: its incident reports can then be
/// told from those of any other run, however many run side by side.
fn reason_for(world: &World, text: &str) -> String {
    format!("{text} [{}]", world.endpoints.queue)
}

/// The incident reports in `dir` (not below it) whose reason is `reason`.
fn reports_in(dir: &Path, reason: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("incident-") && name.ends_with(".json")
        })
        .filter(|path| {
            let report: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            report["reason"] == reason
        })
        .collect()
}

/// Panics unless `dir` holds `expected` incident reports of `reason` and the
/// repository's own `backups/` none: a test's files go to its temporary
/// directory only.
fn assert_reports(dir: &Path, reason: &str, expected: usize) {
    let found = reports_in(dir, reason);
    assert_eq!(found.len(), expected, "incident reports in {}: {found:?}", dir.display());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("backups");
    let stray = reports_in(&repo, reason);
    assert!(stray.is_empty(), "a test's incident report was written into the repository: {stray:?}");
}

/// Has a worker process `count` noted events ("before"), then stops it:
/// the state a stop's backup is taken in.
async fn process_before(world: &World, count: usize) {
    let worker = world.start_worker(world.worker_config("w1"));
    world.publish(&noted(count, "before")).await;
    world.wait_for_count(SKIPPED, count as i64, Duration::from_secs(20)).await;
    worker.stop().await;
}

#[sqlx::test]
async fn a_stop_mid_replay_restores_the_pre_replay_state_and_loses_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    let (plans, backups) = (dir.path().join("plans"), dir.path().join("backups"));
    let _w1 = world.spawn_worker_process("w1", &[]);
    let _w2 = world.spawn_worker_process("w2", &[]);
    world.cooperative().await;
    world.publish(&noted(200, "before")).await;
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(30)).await;
    world.wait_for_count(SKIPPED, 200, Duration::from_secs(30)).await;
    let domain_before = world.domain_digest().await;
    let before = Restorable::of(&world, &[]).await;
    assert_eq!((before.probe_rows, before.history_rows), (6, 0), "the cooperative applied once, nothing replayed");

    let out =
        world.replay(&["plan", "--all", "--reason", "INC-60", "--out-dir", plans.to_str().unwrap(), "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let plan: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let plan_path = plan["plan_path"].as_str().unwrap().to_string();
    let apply = world.spawn_apply(&plan_path, 20, &backups);
    world
        .wait_for_count(
            "SELECT count(*) FROM replay_control.replay_runs WHERE published >= 10",
            1,
            Duration::from_secs(30),
        )
        .await;
    // The replay is really under way: every row reset (with its history), and
    // the cooperative's six events, first in the plan's event-time order,
    // applied a second time by the workers, so the probe holds rows that
    // only the restore can take away.
    assert_eq!(world.scalar("SELECT count(*) FROM replay_history").await, plan["rows"].as_i64().unwrap());
    world.wait_for_count_at_least(PROBE_ROWS, 12, Duration::from_secs(30)).await;
    // Legitimate traffic after the backup: processed before the stop.
    let late = noted(5, "late");
    let late_ids: Vec<String> = late.iter().map(|e| e.event_id.clone()).collect();
    world.publish(&late).await;
    let late_done = format!(
        "SELECT count(*) FROM processed_events WHERE status = 'skipped' AND event_id IN ('{}')",
        late_ids.join("', '")
    );
    world.wait_for_count(&late_done, 5, Duration::from_secs(30)).await;

    let reason = reason_for(&world, "INC-61: wrong totals");
    let out = world.replay(&["emergency-stop", "--plan", &plan_path, "--reason", &reason, "--yes", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
    let report: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let out = apply.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(4), "the apply stops: {}", stderr_of(&out));

    // Paused, purged, restored.
    assert_eq!(report["pause"]["workers_paused"], json!(["w1", "w2"]), "{report}");
    eprintln!("pause latency: {} ms; steps: {}", report["pause"]["latency_ms"], report["steps"]);
    assert_eq!(world.queue_depth().await, 0, "none of the replay's messages is left");
    assert_eq!(world.domain_digest().await, domain_before);
    before.assert_restored(&world, &late_ids).await;
    let late_pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE event_id = ANY($1) AND status = 'pending'")
            .bind(&late_ids)
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert_eq!(late_pending, 5, "events first seen after the backup are kept, to be processed on resume");
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM replay_control.audit_log ORDER BY id")
        .fetch_all(&world.pool)
        .await
        .unwrap();
    assert_eq!(actions, ["replay.apply", "workers.pause", "emergency.stop"]);
    let incident = std::fs::read_to_string(report["report_path"].as_str().unwrap()).unwrap();
    assert!(incident.contains("\"restore\""), "{incident}");
    // Next to the pre-replay backup it restored.
    assert_eq!(reports_in(&backups, &reason), [PathBuf::from(report["report_path"].as_str().unwrap())]);
    assert_reports(&backups, &reason, 1);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.replay_runs WHERE state = 'stopped'").await, 1);

    // The pause survived the restore: new events wait in the queue.
    world.publish(&noted(3, "after")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(world.queue_depth().await, 3);

    let out = world.replay(&["resume", "--reason", "INC-61 understood"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    world.wait_for_count(SKIPPED, 208, Duration::from_secs(30)).await;
    assert_eq!(world.domain_digest().await, domain_before);
    assert_eq!(world.scalar(PROBE_ROWS).await, 6, "nothing of the stopped replay is applied on resume");
    // The stopped plan is never resumed.
    let out = world.replay(&["apply", &plan_path, "--yes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("stopped by an emergency stop"), "{}", stderr_of(&out));
    world.cleanup().await;
}

#[sqlx::test]
async fn a_stop_that_cannot_finish_says_why_keeps_the_pause_and_runs_again(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    let worker = world.start_worker(world.worker_config("w1"));
    world.cooperative().await;
    world.publish(&noted(10, "x")).await;
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(20)).await;
    world.wait_for_count(SKIPPED, 10, Duration::from_secs(20)).await;
    worker.stop().await;
    let report_dir = dir.path().to_str().unwrap();
    let reason = reason_for(&world, "r");
    let ledger_before = world.ledger_digest().await;

    // The backup is missing: the restore fails, says so, the pause stays.
    let out = world
        .replay(&[
            "emergency-stop",
            "--backup",
            "/nonexistent/pre-replay.dump",
            "--reason",
            &reason,
            "--yes",
            "--report-dir",
            report_dir,
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout_of(&out));
    assert!(stdout_of(&out).contains("restore") && stdout_of(&out).contains("FAILED"), "{}", stdout_of(&out));
    assert!(
        stderr_of(&out).contains("restore failed") && stderr_of(&out).contains("run the same command again"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.pause").await, 1);
    assert_eq!(world.scalar(SKIPPED).await, 10, "nothing was restored or lost");
    assert_eq!(world.ledger_digest().await, ledger_before, "nothing was restored or lost");
    // In the --report-dir named, not next to the missing backup.
    assert_reports(dir.path(), &reason, 1);
    assert!(reports_in(Path::new("/nonexistent"), &reason).is_empty(), "none next to the missing backup");

    // The broker is down: the purge fails and says so.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["--amqp-url", "amqp://guest:canary-secret@127.0.0.1:1/%2f"])
        .args([
            "emergency-stop",
            "--no-restore",
            "--reason",
            &reason,
            "--yes",
            "--wait",
            "1s",
            "--report-dir",
            report_dir,
        ])
        .envs(world.env().into_iter().filter(|(k, _)| *k != "AMQP_URL"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = stdout_of(&out);
    assert!(said.contains("purge") && said.contains("127.0.0.1:1") && !said.contains("canary-secret"), "{said}");

    // With a readable backup it completes, and a second run is harmless.
    let dump = dir.path().join("pre.dump");
    assert_eq!(world.replay(&["backup", "--out", dump.to_str().unwrap()]).await.status.code(), Some(0));
    let before = Restorable::of(&world, &[]).await;
    // A replay after the dump, applied by a worker: what the restore must undo.
    let out = world.replay(&["resume", "--reason", "r"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let plans = dir.path().join("plans");
    let plan_path = world.plan_all(&plans, "r").await;
    let backups = dir.path().join("backups");
    let out = world.replay(&["apply", &plan_path, "--yes", "--backup-dir", backups.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count_at_least(PROBE_ROWS, 12, Duration::from_secs(20)).await;
    world
        .wait_for_count("SELECT count(*) FROM processed_events WHERE status = 'pending'", 0, Duration::from_secs(20))
        .await;
    worker.stop().await;
    assert_eq!(world.scalar("SELECT count(*) FROM replay_history").await, 16, "the replay reset every row");
    for _ in 0..2 {
        let out =
            world.replay(&["emergency-stop", "--backup", dump.to_str().unwrap(), "--reason", &reason, "--yes"]).await;
        assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
        before.assert_restored(&world, &[]).await;
    }
    // Both next to the dump they restored, in the same directory as the first two.
    assert_reports(dir.path(), &reason, 4);
    assert_eq!(world.scalar(SKIPPED).await, 10);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.audit_log WHERE action = 'emergency.stop'").await, 4);
    world.cleanup().await;
}

#[sqlx::test]
async fn the_purge_removes_the_replays_messages_and_keeps_the_rest(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    process_before(&world, 40).await;

    let before = Restorable::of(&world, &[]).await;

    // No worker runs: the replay's messages and new traffic wait in the queue.
    let plans = dir.path().join("plans");
    let plan_path = world.plan_all(&plans, "r").await;
    let backups = dir.path().join("backups");
    let out = world.replay(&["apply", &plan_path, "--yes", "--backup-dir", backups.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(world.scalar("SELECT count(*) FROM replay_history").await, 40, "the replay reset every row");
    let legitimate = noted(3, "new");
    let legitimate_ids: Vec<String> = legitimate.iter().map(|e| e.event_id.clone()).collect();
    world.publish(&legitimate).await;
    world.publish_raw("member.noted", b"not json").await;
    assert_eq!(world.queue_depth().await, 44);

    let reason = reason_for(&world, "r");
    let out = world.replay(&["emergency-stop", "--plan", &plan_path, "--reason", &reason, "--yes", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
    let report: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(
        (report["purged_replay_messages"].clone(), report["kept_messages"].clone(), report["dead_lettered"].clone()),
        (json!(40), json!(3), json!(1)),
        "{report}"
    );
    assert_eq!(world.queue_depth().await, 0);
    assert_eq!(world.scalar(SKIPPED).await, 40, "the replayed rows are back to skipped");
    before.assert_restored(&world, &legitimate_ids).await;
    for event in &legitimate {
        assert_eq!(world.status_of(&event.event_id).await.unwrap().0, "pending");
    }
    assert_eq!(world.scalar("SELECT count(*) FROM dead_letters").await, 1);
    assert_reports(&backups, &reason, 1);
    world.cleanup().await;
}

/// Every message ready in the world's queue, as (message id, body), sorted;
/// taken unacked on a connection closed at once, so they all go back.
async fn messages_in_queue(world: &World) -> Vec<(String, String)> {
    use futures::StreamExt;
    let connection = replay::wire::transport::connect(&world.endpoints.amqp_url, "test reader").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let ready = replay::wire::transport::queue_depth(&channel, &world.endpoints.queue).await.unwrap();
    let mut consumer = channel
        .basic_consume(
            world.endpoints.queue.as_str().into(),
            "test reader".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let mut messages = Vec::new();
    while messages.len() < ready as usize {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.unwrap().unwrap().unwrap();
        let id = d.properties.message_id().as_ref().map(ToString::to_string).unwrap_or_default();
        messages.push((id, String::from_utf8_lossy(&d.data).into_owned()));
    }
    let _ = connection.close(200, "read".into()).await;
    messages.sort();
    messages
}

/// Waits up to 10 s for the queue to hold `depth` ready messages.
async fn wait_for_depth(world: &World, depth: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = world.queue_depth().await;
        if now == depth {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the queue holds {now} ready messages, not {depth}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test]
async fn a_queue_still_consumed_is_not_purged(pool: PgPool) {
    use futures::StreamExt;
    let world = World::new(pool).await;
    // Legitimate traffic waiting in the queue (no worker runs).
    let waiting = noted(5, "waiting");
    world.publish(&waiting).await;
    let mut published: Vec<(String, String)> =
        waiting.iter().map(|e| (e.event_id.clone(), e.payload_json.clone())).collect();
    published.sort();
    assert_eq!(world.queue_depth().await, 5);

    // A consumer that is no paused worker: it holds a delivery (prefetch 1,
    // never acked) that the purge cannot see and that would come back after it.
    let connection = replay::wire::transport::connect(&world.endpoints.amqp_url, "test stray consumer").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.basic_qos(1, lapin::options::BasicQosOptions::default()).await.unwrap();
    let mut consumer = channel
        .basic_consume(
            world.endpoints.queue.as_str().into(),
            "stray".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let held = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.unwrap().unwrap().unwrap();
    let held_id = held.properties.message_id().as_ref().map(ToString::to_string);
    assert!(published.iter().any(|(id, _)| Some(id) == held_id.as_ref()), "the stray holds one of them: {held_id:?}");
    wait_for_depth(&world, 4).await;

    let dir = tempfile::tempdir().unwrap();
    let reason = reason_for(&world, "r");
    let out = world
        .replay(&[
            "emergency-stop",
            "--no-restore",
            "--reason",
            &reason,
            "--yes",
            "--wait",
            "1s",
            "--report-dir",
            dir.path().to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout_of(&out));
    assert!(stdout_of(&out).contains("1 consumer(s) still hold queue"), "{}", stdout_of(&out));
    assert_reports(dir.path(), &reason, 1);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.pause").await, 1, "the pause stays");
    assert_eq!(world.queue_depth().await, 4, "the refused purge took none of the ready messages");
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, 0, "nor put any in the ledger");

    // The stray consumer goes: its delivery comes back, and the queue holds
    // exactly the messages published, ids and bodies.
    let _ = connection.close(200, "done".into()).await;
    wait_for_depth(&world, 5).await;
    assert_eq!(messages_in_queue(&world).await, published, "every waiting message is still in the queue");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_backup_of_another_schema_version_is_never_restored(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    process_before(&world, 10).await;
    let dump = dir.path().join("old.dump");
    assert_eq!(world.replay(&["backup", "--out", dump.to_str().unwrap()]).await.status.code(), Some(0));
    // An upgrade since the dump: the database's schema moved on.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99999999, 'a later release', true, '\\x00', 0)",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    world.publish(&noted(5, "after")).await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(SKIPPED, 15, Duration::from_secs(20)).await;
    worker.stop().await;
    let before = world.ledger_digest().await;

    let reason = reason_for(&world, "r");
    let out = world.replay(&["emergency-stop", "--backup", dump.to_str().unwrap(), "--reason", &reason, "--yes"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout_of(&out));
    assert_reports(dir.path(), &reason, 1);
    let said = stdout_of(&out);
    assert!(said.contains("restore") && said.contains("schema version"), "{said}");
    assert_eq!(world.ledger_digest().await, before, "nothing was restored");
    assert_eq!(world.scalar("SELECT count(*) FROM _sqlx_migrations WHERE version = 99999999").await, 1);

    // `apply --backup` refuses it as well, before changing anything.
    world.replay(&["resume", "--reason", "r"]).await;
    let plans = dir.path().join("plans");
    let plan_path = world.plan_all(&plans, "r").await;
    let out = world.replay(&["apply", &plan_path, "--yes", "--backup", dump.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("schema version"), "{}", stderr_of(&out));
    assert_eq!(world.ledger_digest().await, before);
    world.cleanup().await;
}

/// Messages of some replay (a plan id no one applied), as an apply republishes them.
fn replayed(n: usize) -> Vec<replay::wire::envelope::Event> {
    let plan = replay::replay::plan::PlanId::random();
    noted(n, "replayed").into_iter().map(|e| replay::wire::envelope::Event { replay_plan: Some(plan), ..e }).collect()
}

fn ids(events: &[replay::wire::envelope::Event]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

/// How many of `ids` the ledger holds with `status`, and how many ledger rows there are in all.
async fn ledger_rows_of(world: &World, ids: &[String], status: &str) -> (i64, i64) {
    let of: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE event_id = ANY($1) AND status = $2")
        .bind(ids)
        .bind(status)
        .fetch_one(&world.pool)
        .await
        .unwrap();
    (of, world.scalar("SELECT count(*) FROM processed_events").await)
}

const SAVED: &str = "SELECT (SELECT count(*) FROM replay_control.emergency_saved_events)
                          + (SELECT count(*) FROM replay_control.emergency_saved_dead_letters)";

/// `replay emergency-stop ARGS --reason … --yes --report-dir DIR`, spawned, its output piped.
fn spawn_stop(world: &World, args: &[&str], reason: &str, report_dir: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .arg("emergency-stop")
        .args(args)
        .args(["--reason", reason, "--yes", "--report-dir", report_dir.to_str().unwrap()])
        .envs(world.env())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[sqlx::test]
async fn a_deep_queue_is_taken_in_batches_and_each_legitimate_message_is_kept_once(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    process_before(&world, 10).await;
    let dump = dir.path().join("pre.dump");
    assert_eq!(world.replay(&["backup", "--out", dump.to_str().unwrap()]).await.status.code(), Some(0));

    // No worker runs: 20,000 legitimate messages, a replay's 500 and one
    // that is no event, interleaved in the queue.
    let legitimate = noted(20_000, "deep");
    let replay = replayed(500);
    for (chunk, replayed) in legitimate.chunks(2_000).zip(replay.chunks(50)) {
        world.publish(chunk).await;
        world.publish(replayed).await;
    }
    world.publish_raw("member.noted", b"not json").await;
    assert_eq!(world.queue_depth().await, 20_501);

    let reason = reason_for(&world, "deep");
    let out = world
        .replay(&["emergency-stop", "--backup", dump.to_str().unwrap(), "--reason", &reason, "--yes", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
    let report: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(
        [&report["purged_replay_messages"], &report["kept_messages"], &report["dead_lettered"], &report["kept_events"]],
        [&json!(500), &json!(20_000), &json!(1), &json!(20_000)],
        "{report}"
    );
    let purge = report["steps"].as_array().unwrap().iter().find(|s| s["name"] == "purge").unwrap();
    let batches: usize =
        purge["detail"].as_str().unwrap().rsplit("in ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
    eprintln!("steps: {}", report["steps"]);
    assert!(batches >= 11, "taken in batches of at most 2,000: {purge}");

    assert_eq!(world.queue_depth().await, 0, "the queue is empty");
    assert_eq!(
        ledger_rows_of(&world, &ids(&legitimate), "pending").await,
        (20_000, 20_010),
        "every legitimate message is in the ledger once, as pending; the replay's are not"
    );
    assert_eq!(world.scalar(SKIPPED).await, 10, "the backup's rows are as they were");
    assert_eq!(world.scalar("SELECT count(*) FROM dead_letters").await, 1);
    assert_eq!(world.scalar(SAVED).await, 0, "everything saved was put back");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_stop_killed_mid_take_then_run_again_loses_nothing_and_keeps_each_event_once(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    let (events, _period) = workload(5_000);
    world.publish(&events).await;
    world.publish(&replayed(300)).await;
    assert_eq!(world.queue_depth().await, 10_301);

    // Killed once its first batches are in the ledger, long before the last.
    let reason = reason_for(&world, "killed");
    let mut stop = spawn_stop(&world, &["--no-restore"], &reason, dir.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while world.scalar("SELECT count(*) FROM processed_events").await < 2_000 {
        assert!(std::time::Instant::now() < deadline, "the stop kept fewer than 2,000 events in 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&stop, "-KILL");
    let _ = stop.wait().await;
    let kept_before_kill = world.scalar("SELECT count(*) FROM processed_events").await;
    eprintln!("killed with {kept_before_kill} of 10,001 events kept");
    assert!(kept_before_kill < 10_001, "killed mid-take: {kept_before_kill} of 10,001 kept");
    // What it had not acked is back in the queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(world.queue_depth().await > 0, "the unacked rest went back to the queue");

    let out = spawn_stop(&world, &["--no-restore", "--json"], &reason, dir.path()).wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
    assert_eq!(world.queue_depth().await, 0);
    assert_eq!(
        ledger_rows_of(&world, &ids(&events), "pending").await,
        (10_001, 10_001),
        "every event once, none of the replay's"
    );

    // Resumed, the workers apply each event once.
    let out = world.replay(&["resume", "--reason", "understood"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let worker = world.start_worker(world.worker_config("w1"));
    assert_all_applied_once(&world, 10_001, 5_000).await;
    worker.stop().await;
    world.cleanup().await;
}

/// The pid of a restore's session blocked on a lock, once one is.
async fn blocked_restore(world: &World) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'replay restore' AND wait_event_type = 'Lock'",
        )
        .fetch_optional(&world.pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(std::time::Instant::now() < deadline, "no restore blocked within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test]
async fn a_stop_killed_while_pg_restore_runs_then_run_again_puts_back_what_it_saved(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    process_before(&world, 10).await;
    let dump = dir.path().join("pre.dump");
    assert_eq!(world.replay(&["backup", "--out", dump.to_str().unwrap()]).await.status.code(), Some(0));
    // Since the backup: five events processed (the restore would erase
    // them), seven waiting in the queue, and a replay's three.
    let late = noted(5, "late");
    let worker = world.start_worker(world.worker_config("w1"));
    world.publish(&late).await;
    world.wait_for_count(SKIPPED, 15, Duration::from_secs(20)).await;
    worker.stop().await;
    let queued = noted(7, "queued");
    world.publish(&queued).await;
    world.publish(&replayed(3)).await;

    // The restore is held on a lock this test takes, so the stop is killed while pg_restore runs.
    let mut hold = world.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE processed_events IN ACCESS SHARE MODE").execute(&mut *hold).await.unwrap();
    let reason = reason_for(&world, "killed in restore");
    let mut stop = spawn_stop(&world, &["--backup", dump.to_str().unwrap()], &reason, dir.path());
    let orphan = blocked_restore(&world).await;
    signal(&stop, "-KILL");
    let _ = stop.wait().await;

    // Taken and acked, saved where no restore reaches, not yet put back.
    assert_eq!(world.queue_depth().await, 0);
    let saved: Vec<String> = sqlx::query_scalar("SELECT event_id FROM replay_control.emergency_saved_events")
        .fetch_all(&world.pool)
        .await
        .unwrap();
    for id in ids(&late).iter().chain(&ids(&queued)) {
        assert!(saved.contains(id), "{id} is saved: {saved:?}");
    }
    // Resuming now would leave them unprocessed: refused.
    let out = world.replay(&["resume", "--reason", "too early"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("emergency stop did not finish"), "{}", stderr_of(&out));

    // Run again: it ends the restore the dead stop left running, restores, puts back.
    let again = spawn_stop(&world, &["--backup", dump.to_str().unwrap()], &reason, dir.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while world.scalar(&format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {orphan}")).await > 0 {
        assert!(std::time::Instant::now() < deadline, "the orphaned restore was not ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hold.commit().await.unwrap();
    let out = again.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
    assert!(stdout_of(&out).contains("1 restore(s) left running by a stop that died ended"), "{}", stdout_of(&out));

    let kept: Vec<String> = ids(&late).into_iter().chain(ids(&queued)).collect();
    assert_eq!(ledger_rows_of(&world, &kept, "pending").await, (12, 22), "each saved event put back once");
    assert_eq!(world.scalar(SKIPPED).await, 10, "the backup's rows are restored");
    assert_eq!(world.scalar(SAVED).await, 0);
    let out = world.replay(&["resume", "--reason", "done"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    world.cleanup().await;
}
