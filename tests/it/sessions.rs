//! The console's browser sessions over plain HTTP (no browser needed): the
//! session cookie's flags, CSRF refused and nothing changed, failed logins
//! rate-limited, logout ending the session, a role's limits on forms, and
//! no token anywhere in what the pages send.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use crate::common::*;
use replay::store::tokens::Role;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use sqlx::PgPool;

/// A client that shows redirects instead of following them, and sends
/// the cookie it is given by hand (so a test sees exactly what is sent).
fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

/// `POST path` with a form body.
async fn post_form(
    console: &RunningConsole,
    cookie: Option<&str>,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let mut request =
        client().post(console.at(path)).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

async fn get(console: &RunningConsole, cookie: &str, path: &str) -> reqwest::Response {
    client().get(console.at(path)).header(COOKIE, cookie).send().await.unwrap()
}

/// Signs in with `token`; the `Set-Cookie` header as sent, and the
/// `name=value` to send back.
async fn sign_in(console: &RunningConsole, token: &str) -> (String, String) {
    let answer = post_form(console, None, "/login", &[("token", token)]).await;
    assert_eq!(answer.status(), 303, "signing in with a good token");
    assert_eq!(answer.headers()[LOCATION], "/");
    let set = answer.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let pair = set.split(';').next().unwrap().trim().to_string();
    (set, pair)
}

/// The CSRF token a page's forms carry.
async fn csrf_of(console: &RunningConsole, cookie: &str) -> String {
    let page = get(console, cookie, "/pause").await.text().await.unwrap();
    let start = page.find(r#"name="csrf" value=""#).expect("a form with a csrf field") + r#"name="csrf" value=""#.len();
    page[start..].split('"').next().unwrap().to_string()
}

#[sqlx::test]
async fn the_session_cookie_is_http_only_same_site_strict_and_holds_no_token(pool: PgPool) {
    let world = World::new(pool).await;
    let console = RunningConsole::start(&world).await;
    let token = console.token(&world, "otto", Role::Operator).await;
    let (set, cookie) = sign_in(&console, &token).await;
    let flags: Vec<String> = set.split(';').map(|f| f.trim().to_ascii_lowercase()).collect();
    for wanted in ["httponly", "samesite=strict", "path=/"] {
        assert!(flags.iter().any(|f| f == wanted), "the session cookie lacks {wanted}: {set}");
    }
    assert!(!flags.iter().any(|f| f == "secure"), "plain HTTP: a Secure cookie would never come back: {set}");
    assert!(!set.contains(&token), "the cookie must not be the token: {set}");
    let value = cookie.split_once('=').unwrap().1;
    assert_eq!(value.len(), 64, "32 random bytes, hex: {cookie}");
    // Signed in, every page answers and none shows the token.
    for path in ["/", "/events", "/dlq", "/plans", "/pause", "/audit"] {
        let answer = get(&console, &cookie, path).await;
        assert_eq!(answer.status(), 200, "{path}");
        let page = answer.text().await.unwrap();
        assert!(page.contains("otto (operator)"), "{path} names who is signed in");
        assert!(!page.contains(&token), "{path} shows the token");
    }
    // The audit log never holds it either.
    let leaked = world
        .scalar(&format!("SELECT count(*) FROM replay_control.audit_log WHERE details::text LIKE '%{token}%'"))
        .await;
    assert_eq!(leaked, 0);
    console.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn a_form_without_its_csrf_token_is_refused_and_changes_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let console = RunningConsole::start(&world).await;
    let operator = console.token(&world, "otto", Role::Operator).await;
    let viewer = console.token(&world, "vera", Role::Viewer).await;
    let (_, cookie) = sign_in(&console, &operator).await;
    let csrf = csrf_of(&console, &cookie).await;

    for fields in [vec![("reason", "no csrf")], vec![("reason", "wrong csrf"), ("csrf", "0123abcd")]] {
        let answer = post_form(&console, Some(&cookie), "/pause", &fields).await;
        assert_eq!(answer.status(), 403, "{fields:?}");
        let page = answer.text().await.unwrap();
        assert!(page.contains("the form expired or came from another site: reload the page and try again"), "{page}");
    }
    // A session's token does not pass another session's form.
    let (_, other) = sign_in(&console, &operator).await;
    let answer = post_form(&console, Some(&other), "/pause", &[("reason", "other"), ("csrf", &csrf)]).await;
    assert_eq!(answer.status(), 403);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.pause").await, 0, "nothing paused");
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.audit_log WHERE action LIKE 'workers.%'").await, 0);

    // No session at all: to the login page, nothing done.
    let answer = post_form(&console, None, "/pause", &[("reason", "anonymous"), ("csrf", &csrf)]).await;
    assert_eq!((answer.status().as_u16(), answer.headers()[LOCATION].to_str().unwrap()), (303, "/login"));

    // A viewer's form, with its own good csrf: 403 in the API's words.
    let (_, viewer_cookie) = sign_in(&console, &viewer).await;
    let viewer_csrf = csrf_of(&console, &viewer_cookie).await;
    let pause_page = get(&console, &viewer_cookie, "/pause").await.text().await.unwrap();
    assert!(!pause_page.contains(r#"action="/pause""#), "a viewer sees no pause form");
    let answer = post_form(&console, Some(&viewer_cookie), "/pause", &[("reason", "x"), ("csrf", &viewer_csrf)]).await;
    assert_eq!(answer.status(), 403);
    let page = answer.text().await.unwrap();
    assert!(page.contains("token 'vera' has the role viewer; this needs operator"), "{page}");
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.pause").await, 0);

    // The right token: the same form works, audited under the token's name.
    let answer = post_form(&console, Some(&cookie), "/pause", &[("reason", "with csrf"), ("csrf", &csrf)]).await;
    assert_eq!(answer.status(), 303);
    let operator_of: String =
        sqlx::query_scalar("SELECT operator FROM replay_control.pause").fetch_one(&world.pool).await.unwrap();
    assert_eq!(operator_of, "otto");
    console.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn the_sixth_wrong_login_in_a_minute_is_429(pool: PgPool) {
    let world = World::new(pool).await;
    let console = RunningConsole::start(&world).await;
    let token = console.token(&world, "otto", Role::Operator).await;
    for attempt in 1..=5 {
        let answer = post_form(&console, None, "/login", &[("token", "rpl_guess")]).await;
        assert_eq!(answer.status(), 401, "wrong login {attempt}");
        assert!(answer.headers().get(SET_COOKIE).is_none());
        let page = answer.text().await.unwrap();
        assert!(page.contains("this token is not in force"), "{page}");
    }
    let answer = post_form(&console, None, "/login", &[("token", "rpl_guess")]).await;
    assert_eq!(answer.status(), 429);
    assert!(answer.headers().get("retry-after").is_some());
    assert!(answer.text().await.unwrap().contains("try again in"));
    // Even the right token waits: the limit is checked before any token is.
    let answer = post_form(&console, None, "/login", &[("token", &token)]).await;
    assert_eq!(answer.status(), 429);
    assert!(answer.headers().get(SET_COOKIE).is_none());
    console.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn logout_ends_the_session(pool: PgPool) {
    let world = World::new(pool).await;
    let console = RunningConsole::start(&world).await;
    let token = console.token(&world, "otto", Role::Operator).await;
    let anonymous = client().get(console.at("/")).send().await.unwrap();
    assert_eq!((anonymous.status().as_u16(), anonymous.headers()[LOCATION].to_str().unwrap()), (303, "/login"));
    let (_, cookie) = sign_in(&console, &token).await;
    assert_eq!(get(&console, &cookie, "/").await.status(), 200);
    let csrf = csrf_of(&console, &cookie).await;
    let answer = post_form(&console, Some(&cookie), "/logout", &[("csrf", &csrf)]).await;
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()[LOCATION], "/login");
    assert!(answer.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    // The browser may keep the old cookie: the server no longer knows it.
    let again = get(&console, &cookie, "/").await;
    assert_eq!((again.status().as_u16(), again.headers()[LOCATION].to_str().unwrap()), (303, "/login"));
    console.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn behind_tls_the_session_cookie_is_also_secure(pool: PgPool) {
    let world = World::new(pool).await;
    let console = RunningConsole::start_behind_tls(&world).await;
    let token = console.token(&world, "otto", Role::Operator).await;
    let (set, _) = sign_in(&console, &token).await;
    let flags: Vec<String> = set.split(';').map(|f| f.trim().to_ascii_lowercase()).collect();
    for wanted in ["secure", "httponly", "samesite=strict"] {
        assert!(flags.iter().any(|f| f == wanted), "the session cookie lacks {wanted}: {set}");
    }
    console.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn revoking_a_token_ends_its_open_sessions(pool: PgPool) {
    let world = World::new(pool).await;
    let console = RunningConsole::start(&world).await;
    let token = console.token(&world, "otto", Role::Operator).await;
    let other = console.token(&world, "olga", Role::Operator).await;
    let (_, cookie) = sign_in(&console, &token).await;
    let (_, kept) = sign_in(&console, &other).await;
    assert_eq!(get(&console, &cookie, "/").await.status(), 200);
    // Revoked by the CLI, another process: the console hears of it at once.
    let out = world.replay(&["token", "revoke", "otto"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let after = get(&console, &cookie, "/").await;
    assert_eq!((after.status().as_u16(), after.headers()[LOCATION].to_str().unwrap()), (303, "/login"));
    assert_eq!(get(&console, &kept, "/").await.status(), 200, "another token's session goes on");
    console.stop().await;
    world.cleanup().await;
}
