//! The console's JSON API on real services: every route with no token, a
//! wrong one, a role too low and the right one; a plan made, applied and
//! processed over the API and audited under the token's name; tokens kept
//! only as hashes and never printed; hostile filters harmless.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::Duration;

use crate::common::*;
use replay::store::tokens::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Every route, what it needs, and a body it accepts.
fn routes() -> Vec<(&'static str, &'static str, Role, Option<Value>)> {
    vec![
        ("GET", "/api/v1/overview", Role::Viewer, None),
        ("GET", "/api/v1/events", Role::Viewer, None),
        ("GET", "/api/v1/dlq", Role::Viewer, None),
        ("GET", "/api/v1/dlq/groups", Role::Viewer, None),
        ("GET", "/api/v1/audit", Role::Viewer, None),
        ("GET", "/api/v1/plans", Role::Viewer, None),
        ("POST", "/api/v1/pause", Role::Operator, Some(json!({"reason": "roles test", "wait_seconds": 1}))),
        ("POST", "/api/v1/resume", Role::Operator, Some(json!({"reason": "roles test"}))),
        ("POST", "/api/v1/plans", Role::Operator, Some(json!({"type": ["nothing.matches"], "reason": "roles test"}))),
        ("GET", "/api/v1/tokens", Role::Admin, None),
        ("POST", "/api/v1/tokens", Role::Admin, Some(json!({"name": "made-by-admin", "role": "viewer"}))),
    ]
}

#[sqlx::test]
async fn every_route_refuses_a_missing_or_wrong_token_and_a_role_below_its_own(pool: PgPool) {
    let world = World::new(pool).await;
    let console = RunningConsole::start(&world).await;
    let viewer = console.token(&world, "vera", Role::Viewer).await;
    let operator = console.token(&world, "otto", Role::Operator).await;
    let admin = console.token(&world, "ada", Role::Admin).await;
    let revoked = console.token(&world, "gone", Role::Admin).await;
    replay::control::tokens::revoke(&world.pool, "gone", "test-admin").await.unwrap();

    for (method, path, needed, body) in routes() {
        let none = call(&console, None, method, path, body.clone()).await;
        assert_eq!(none.status, 401, "{method} {path} without a token: {:?}", none.body);
        assert!(none.body["error"].as_str().unwrap().contains("Authorization: Bearer"), "{:?}", none.body);
        for wrong in ["rpl_0000", "not-a-token", revoked.as_str()] {
            let answer = call(&console, Some(wrong), method, path, body.clone()).await;
            assert_eq!(answer.status, 401, "{method} {path} with a wrong token: {:?}", answer.body);
        }
        for (token, role) in [(&viewer, Role::Viewer), (&operator, Role::Operator), (&admin, Role::Admin)] {
            let answer = call(&console, Some(token), method, path, body.clone()).await;
            if role < needed {
                assert_eq!(answer.status, 403, "{method} {path} as {role}: {:?}", answer.body);
                let error = answer.body["error"].as_str().unwrap();
                assert!(error.contains(&format!("this needs {needed}")), "{error}");
            } else {
                assert!(
                    (200..300).contains(&answer.status),
                    "{method} {path} as {role} answered {}: {:?}",
                    answer.status,
                    answer.body
                );
            }
        }
    }
    // Only the admin's write happened, once, audited under the admin token's name.
    let made: Vec<(String, String)> = sqlx::query_as(
        "SELECT operator, details->>'name' FROM replay_control.audit_log WHERE action = 'token.create' AND details->>'name' = 'made-by-admin'",
    )
    .fetch_all(&world.pool)
    .await
    .unwrap();
    assert_eq!(made, vec![("ada".to_string(), "made-by-admin".to_string())]);
    // The operator paused and resumed first; the admin's calls found the
    // pause in force, then none to lift, and changed (and audited) nothing.
    let controls: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, operator FROM replay_control.audit_log WHERE action LIKE 'workers.%' ORDER BY id",
    )
    .fetch_all(&world.pool)
    .await
    .unwrap();
    let by = |action: &str, who: &str| (action.to_string(), who.to_string());
    assert_eq!(controls, vec![by("workers.pause", "otto"), by("workers.resume", "otto")]);
    // The emergency stop and revoking are the admin's too.
    let stop = json!({"reason": "roles test", "no_restore": true, "wait_seconds": 1});
    assert_eq!(call(&console, Some(&operator), "POST", "/api/v1/emergency-stop", Some(stop)).await.status, 403);
    assert_eq!(call(&console, Some(&operator), "DELETE", "/api/v1/tokens/vera", None).await.status, 403);
    let revoked = call(&console, Some(&admin), "DELETE", "/api/v1/tokens/vera", None).await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    assert_eq!(call(&console, Some(&viewer), "GET", "/api/v1/overview", None).await.status, 401);
    // The admin's stop runs (no restore asked): every step passed, the pause
    // is in force, and the stop is audited under the admin token's name.
    let stop = json!({"reason": "roles test: stop", "no_restore": true, "wait_seconds": 1});
    let stopped = call(&console, Some(&admin), "POST", "/api/v1/emergency-stop", Some(stop)).await;
    assert_eq!(stopped.status, 200, "{:?}", stopped.body);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.pause").await, 1);
    let stopped_by: String = sqlx::query_scalar(
        "SELECT operator FROM replay_control.audit_log WHERE action LIKE 'emergency%' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(stopped_by, "ada");
    console.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn a_plan_made_and_applied_over_the_api_is_processed_once_and_audited_under_the_token(pool: PgPool) {
    let world = World::new(pool).await;
    let worker = world.start_worker(world.worker_config("w1"));
    let (period, member) = (Uuid::new_v4(), Uuid::new_v4());
    let mut events = vec![period_opened(period)];
    events.extend((0..5).map(|n| submitted(Uuid::new_v4(), member, period, 10 + n)));
    world.publish(&events).await;
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(20)).await;
    let console = RunningConsole::start(&world).await;
    let operator = console.token(&world, "otto", Role::Operator).await;

    // Bad input: named, 400, nothing written.
    let bad = call(&console, Some(&operator), "POST", "/api/v1/plans", Some(json!({"reason": "x"}))).await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert!(bad.body["error"].as_str().unwrap().contains("nothing selected"), "{:?}", bad.body);
    let unknown =
        call(&console, Some(&operator), "POST", "/api/v1/plans", Some(json!({"reason": "x", "typo": 1}))).await;
    assert_eq!(unknown.status, 422, "{:?}", unknown.body);

    let body = json!({"type": ["contribution.submitted"], "reason": "INC-9: recompute over the API"});
    let made = call(&console, Some(&operator), "POST", "/api/v1/plans", Some(body)).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(made.body["rows"], 5);
    let plan_id = made.body["plan_id"].as_str().unwrap().to_string();
    let shown = call(&console, Some(&operator), "GET", &format!("/api/v1/plans/{plan_id}"), None).await;
    assert_eq!((shown.status, shown.body["rows"].clone()), (200, json!(5)));
    assert!(shown.body["human"].as_str().unwrap().contains("INC-9"), "{:?}", shown.body);
    let listed = call(&console, Some(&operator), "GET", "/api/v1/plans", None).await;
    assert_eq!(listed.body["plans"][0]["plan_id"], plan_id.as_str());

    // Paused: the apply's own check refuses with 409, and nothing changes.
    let pause =
        call(&console, Some(&operator), "POST", "/api/v1/pause", Some(json!({"reason": "hold", "wait_seconds": 5})))
            .await;
    assert_eq!(pause.status, 200, "{:?}", pause.body);
    let refused = call(&console, Some(&operator), "POST", &format!("/api/v1/plans/{plan_id}/apply"), None).await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert!(refused.body["error"].as_str().unwrap().contains("paused"), "{:?}", refused.body);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.audit_log WHERE action = 'replay.apply'").await, 0);
    let resume = call(&console, Some(&operator), "POST", "/api/v1/resume", Some(json!({"reason": "go"}))).await;
    assert_eq!((resume.status, resume.body["resumed"].clone()), (200, json!(true)));

    let applied =
        call(&console, Some(&operator), "POST", &format!("/api/v1/plans/{plan_id}/apply"), Some(json!({}))).await;
    assert_eq!(applied.status, 202, "{:?}", applied.body);
    let status_path = applied.body["status_url"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = call(&console, Some(&operator), "GET", &status_path, None).await;
        assert_eq!(status.status, 200, "{:?}", status.body);
        if status.body["state"] == "done" && status.body["by_status"] == json!({"processed": 5}) {
            break status.body;
        }
        assert!(std::time::Instant::now() < deadline, "the replay never settled: {:?}", status.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["published"], 5);
    world.assert_applied(&events[1..], 2).await;
    world.assert_applied(&events[..1], 1).await;
    let operator_of: String = sqlx::query_scalar(
        "SELECT operator FROM replay_control.audit_log WHERE action = 'replay.apply' AND details->>'plan_id' = $1",
    )
    .bind(&plan_id)
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(operator_of, "otto");
    let again = call(&console, Some(&operator), "POST", &format!("/api/v1/plans/{plan_id}/apply"), None).await;
    assert_eq!((again.status, again.body["already_applied"].clone()), (200, json!(true)));
    let audit = call(&console, Some(&operator), "GET", "/api/v1/audit", None).await;
    assert_eq!(audit.body["chain"]["intact"], true, "{:?}", audit.body);
    assert_eq!(audit.body["entries"][0]["action"], "replay.apply");
    console.stop().await;
    worker.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn events_are_filtered_and_paged_and_hostile_filters_select_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let worker = world.start_worker(world.worker_config("w1"));
    let (period, member) = (Uuid::new_v4(), Uuid::new_v4());
    let mut events = vec![period_opened(period)];
    events.extend((0..7).map(|n| submitted(Uuid::new_v4(), member, period, 10 + n)));
    world.publish(&events).await;
    world.wait_for_count(PROCESSED, 8, Duration::from_secs(20)).await;
    worker.stop().await;
    let console = RunningConsole::start(&world).await;
    let viewer = console.token(&world, "vera", Role::Viewer).await;

    // Three pages of three, latest event time first, each row once.
    let mut seen: Vec<(String, i64)> = Vec::new();
    let mut path = "/api/v1/events?type=contribution.submitted&limit=3".to_string();
    loop {
        let page = call(&console, Some(&viewer), "GET", &path, None).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        for e in page.body["events"].as_array().unwrap() {
            seen.push((e["occurred_at"].as_str().unwrap().to_string(), e["id"].as_i64().unwrap()));
        }
        match page.body["next"].as_i64() {
            Some(next) => path = format!("/api/v1/events?type=contribution.submitted&limit=3&after={next}"),
            None => break,
        }
    }
    let timestamp = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
    let mut sorted = seen.clone();
    sorted.sort_by_key(|(at, id)| std::cmp::Reverse((timestamp(at), *id)));
    sorted.dedup();
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(seen, sorted, "seven rows, latest event time first, none twice");

    let member_filter = format!("/api/v1/events?payload=member_id={member}&status=processed");
    let by_member = call(&console, Some(&viewer), "GET", &member_filter, None).await;
    assert_eq!(by_member.body["events"].as_array().unwrap().len(), 7, "{:?}", by_member.body);
    let one = &events[3];
    let shown = call(&console, Some(&viewer), "GET", &format!("/api/v1/events/{}", one.event_id), None).await;
    assert_eq!((shown.status, shown.body["event"]["status"].clone()), (200, json!("processed")));
    assert_eq!(call(&console, Some(&viewer), "GET", "/api/v1/events/no-such-event", None).await.status, 404);

    // Hostile values select nothing and harm nothing; bad ones are named.
    for hostile in [
        "/api/v1/events?type=x'%20OR%20'1'='1",
        "/api/v1/events?payload=member_id=1'%3B%20DROP%20TABLE%20processed_events%3B--",
        "/api/v1/events?type=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    ] {
        let answer = call(&console, Some(&viewer), "GET", hostile, None).await;
        assert_eq!((answer.status, answer.body["events"].clone()), (200, json!([])), "{hostile}");
    }
    let bad = call(&console, Some(&viewer), "GET", "/api/v1/events?status=lost", None).await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert!(bad.body["error"].as_str().unwrap().contains("lost"), "{:?}", bad.body);
    let bad = call(&console, Some(&viewer), "GET", "/api/v1/events?from=yesterday", None).await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, 8);
    console.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn tokens_are_kept_only_as_hashes_and_never_printed(pool: PgPool) {
    let world = World::new(pool).await;
    let out = world.replay(&["token", "create", "--name", "ci-bot", "--role", "operator", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let made: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let token = made["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("rpl_") && token.len() == 68, "{token}");
    // Stored: a hash, not the token, in any table of the database.
    let stored: String = sqlx::query_scalar("SELECT token_sha256 FROM replay_control.api_tokens WHERE name = 'ci-bot'")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_ne!(stored, token);
    assert_eq!(stored.len(), 64);
    let dump = std::process::Command::new("pg_dump").arg(&world.database_url).output().unwrap();
    assert!(dump.status.success());
    assert!(!String::from_utf8_lossy(&dump.stdout).contains(&token), "the token is nowhere in the database");
    // Listed without it; a second token of that name is refused (exit 3).
    let list = world.replay(&["token", "list"]).await;
    assert!(stdout_of(&list).contains("ci-bot") && !stdout_of(&list).contains(&token), "{}", stdout_of(&list));
    let again = world.replay(&["token", "create", "--name", "ci-bot", "--role", "admin"]).await;
    assert_eq!(again.status.code(), Some(3), "{}", stderr_of(&again));
    assert!(stderr_of(&again).contains("exists already"), "{}", stderr_of(&again));
    let bad = world.replay(&["token", "create", "--name", "<b>", "--role", "admin"]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", stderr_of(&bad));

    // A console logging everything, used with the token: it never prints it.
    let port = free_port();
    let mut console = tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["console", "--listen", &format!("127.0.0.1:{port}")])
        .envs(world.env())
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Its output is read from the start: at trace level it would fill a pipe.
    let stdout = tokio::spawn(read_all(console.stdout.take().unwrap()));
    let stderr = tokio::spawn(read_all(console.stderr.take().unwrap()));
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let answer = loop {
        match client.get(format!("http://127.0.0.1:{port}/api/v1/overview")).bearer_auth(&token).send().await {
            Ok(answer) => break answer,
            Err(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => panic!("the console never answered: {error}"),
        }
    };
    assert_eq!(answer.status(), 200);
    let wrong =
        client.get(format!("http://127.0.0.1:{port}/api/v1/overview")).bearer_auth("rpl_guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    signal(&console, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), console.wait()).await.unwrap().unwrap();
    let output = format!("{}{}", stdout.await.unwrap(), stderr.await.unwrap());
    assert!(status.success(), "{status:?}: {output}");
    assert!(output.contains("console on http://"), "{output}");
    assert!(!output.contains(&token) && !output.contains("rpl_guess"), "a token was printed:\n{output}");
    let audit: String =
        sqlx::query_scalar("SELECT string_agg(details::text || operator, ' ') FROM replay_control.audit_log")
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert!(audit.contains("ci-bot") && !audit.contains(&token), "{audit}");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_dlq_group_is_resolved_whole_by_its_normalized_error_and_audited_once(pool: PgPool) {
    let world = World::new(pool).await;
    let failed = |n: u32, error: String| {
        format!(
            "('fail-{n}', 'payment.initiated', '{{}}', now(), 'error', now(), '{error}', now() - interval '{n} seconds')"
        )
    };
    let mut rows: Vec<String> =
        (1..=3).map(|n| failed(n, format!("provider timeout for payment {} after {n}0 ms", Uuid::new_v4()))).collect();
    rows.push(failed(4, "provider refused the card".into()));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, processed_at, error_message, updated_at) VALUES {}",
        rows.join(", ")
    )))
    .execute(&world.pool)
    .await
    .unwrap();
    let console = RunningConsole::start(&world).await;
    let viewer = console.token(&world, "vera", Role::Viewer).await;
    let operator = console.token(&world, "otto", Role::Operator).await;

    let groups = call(&console, Some(&viewer), "GET", "/api/v1/dlq/groups", None).await;
    let groups = groups.body["groups"].as_array().unwrap().clone();
    let timeouts = groups.iter().find(|g| g["count"] == 3).unwrap_or_else(|| panic!("{groups:?}"));
    assert_eq!(timeouts["error"], "provider timeout for payment <id> after <n> ms");
    let body = json!({"type": "payment.initiated", "error": timeouts["error"], "note": "provider fixed, INC-12"});
    assert_eq!(
        call(&console, Some(&viewer), "POST", "/api/v1/dlq/groups/resolve", Some(body.clone())).await.status,
        403
    );
    let resolved = call(&console, Some(&operator), "POST", "/api/v1/dlq/groups/resolve", Some(body.clone())).await;
    assert_eq!((resolved.status, resolved.body["resolved"].clone()), (200, json!(3)), "{:?}", resolved.body);
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT event_id FROM processed_events WHERE status = 'error' AND resolved_at IS NULL ORDER BY event_id",
    )
    .fetch_all(&world.pool)
    .await
    .unwrap();
    assert_eq!(left, vec!["fail-4".to_string()], "only the other group is left");
    let audited: Vec<(String, Value)> =
        sqlx::query_as("SELECT operator, details FROM replay_control.audit_log WHERE action = 'dlq.resolve_group'")
            .fetch_all(&world.pool)
            .await
            .unwrap();
    assert_eq!(audited.len(), 1);
    assert_eq!((audited[0].0.as_str(), audited[0].1["resolved"].clone()), ("otto", json!(3)));
    let again = call(&console, Some(&operator), "POST", "/api/v1/dlq/groups/resolve", Some(body)).await;
    assert_eq!(again.status, 404, "{:?}", again.body);
    console.stop().await;
    world.cleanup().await;
}

/// Everything `pipe` gives until it closes.
async fn read_all(mut pipe: impl tokio::io::AsyncRead + Unpin) -> String {
    use tokio::io::AsyncReadExt;
    let mut text = String::new();
    pipe.read_to_string(&mut text).await.unwrap();
    text
}
