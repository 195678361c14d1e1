//! Browser sessions of the web pages: `POST /login` with a token, a session
//! cookie, `POST /logout`, and the two extractors every page handler uses —
//! [`Visitor`] (who is signed in, or a redirect to `/login`) and [`Posted`]
//! (a form whose CSRF field matched the session, or 403 and nothing done).
//!
//! Invariants: the token is checked once, at login, and never kept, shown
//! or logged; the server keeps only the SHA-256 of each session cookie, in
//! memory (a restart signs everyone out); the cookie is `HttpOnly;
//! SameSite=Strict; Path=/` (and `Secure` behind TLS); a form POST that
//! does not carry its session's CSRF token changes nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::CookieJar;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::pages::{self, PageError};
use super::{auth, lock, ApiError, Console};
use crate::control::tokens;
use crate::store::tokens::{self as stored_tokens, Role};

/// The session cookie's name.
const COOKIE: &str = "replay_session";
/// How long a session lasts from login.
const LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);
/// Failed logins one address may make within [`FAILED_LOGIN_WINDOW`]
/// before it must wait: enough for typos, too few to guess a token.
const FAILED_LOGINS_ALLOWED: usize = 5;
const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// The largest form the pages accept.
const MAX_FORM: usize = 64 * 1024;

/// What a form POST without its session's CSRF token gets (403).
pub(crate) const CSRF_REFUSED: &str = "the form expired or came from another site: reload the page and try again";

/// The SHA-256 of a session cookie: what the server keeps instead of it.
type SessionKey = [u8; 32];

/// The console's open sessions and recent failed logins.
#[derive(Default)]
pub(crate) struct Sessions {
    open: std::sync::Mutex<HashMap<SessionKey, Session>>,
    failed_logins: std::sync::Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

struct Session {
    name: String,
    role: Role,
    csrf: String,
    expires: Instant,
}

impl Sessions {
    /// A new session for a token's holder; the cookie's value, given out once.
    fn open(&self, name: String, role: Role) -> String {
        let cookie = hex::encode(rand::random::<[u8; 32]>());
        let csrf = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut open = lock(&self.open);
        open.retain(|_, s| s.expires > now);
        open.insert(key_of(&cookie), Session { name, role, csrf, expires: now + LIFETIME });
        cookie
    }

    fn find(&self, cookie: &str) -> Option<Visitor> {
        let key = key_of(cookie);
        let open = lock(&self.open);
        let session = open.get(&key).filter(|s| s.expires > Instant::now())?;
        Some(Visitor { name: session.name.clone(), role: session.role, csrf: session.csrf.clone(), key })
    }

    fn close(&self, key: &SessionKey) {
        lock(&self.open).remove(key);
    }

    /// How long `ip` must wait before it may try again, if it must.
    fn retry_after(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut failed = lock(&self.failed_logins);
        let recent = failed.entry(ip).or_default();
        recent.retain(|at| now.duration_since(*at) < FAILED_LOGIN_WINDOW);
        if recent.len() < FAILED_LOGINS_ALLOWED {
            return None;
        }
        let oldest = recent.iter().min().copied().unwrap_or(now);
        Some(FAILED_LOGIN_WINDOW.saturating_sub(now.duration_since(oldest)))
    }

    fn failed_login(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut failed = lock(&self.failed_logins);
        // Addresses whose failures all aged out are forgotten, so the map
        // holds only the last window's addresses.
        failed.retain(|_, at| {
            at.retain(|t| now.duration_since(*t) < FAILED_LOGIN_WINDOW);
            !at.is_empty()
        });
        failed.entry(ip).or_default().push(now);
    }
}

fn key_of(cookie: &str) -> SessionKey {
    Sha256::digest(cookie.as_bytes()).into()
}

/// Whether two secrets are equal, in a time that does not depend on where
/// they differ (a CSRF token must not be guessable byte by byte).
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

/// Who is signed in to the pages: the token's name and role, and the CSRF
/// token every form of this session carries.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub name: String,
    pub role: Role,
    /// Put in every form as the hidden field `csrf`.
    pub csrf: String,
    key: SessionKey,
}

impl Visitor {
    /// 403 unless the visitor's role includes `needed`, in the API's words.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        auth::require(&self.name, self.role, needed)
    }

    /// Whether the visitor's role includes `needed` (a page shows a form only then).
    pub fn may(&self, needed: Role) -> bool {
        self.role >= needed
    }
}

impl<S> FromRequestParts<S> for Visitor
where
    Console: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let console = Console::from_ref(state);
        let jar = CookieJar::from_headers(&parts.headers);
        let to_login = || Redirect::to("/login").into_response();
        let visitor =
            jar.get(COOKIE).and_then(|cookie| console.0.sessions.find(cookie.value())).ok_or_else(to_login)?;
        // A session lasts only as long as its token: one revoked since the
        // login (here or by `replay token revoke` anywhere) ends it.
        match stored_tokens::role_in_force(console.pool(), &visitor.name).await {
            Ok(Some(role)) if role == visitor.role => Ok(visitor),
            Ok(_) => {
                console.0.sessions.close(&visitor.key);
                Err(to_login())
            }
            Err(error) => Err(PageError::from(ApiError::from(error)).into_response()),
        }
    }
}

/// A form posted by a signed-in visitor whose `csrf` field matched the
/// session's. Page handlers take forms only through it, so none can
/// forget the check.
pub struct Posted<T> {
    pub visitor: Visitor,
    pub form: T,
}

#[derive(Default, Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl<S, T> FromRequest<S> for Posted<T>
where
    Console: FromRef<S>,
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let visitor = Visitor::from_request_parts(&mut parts, state).await?;
        let body = axum::body::to_bytes(body, MAX_FORM)
            .await
            .map_err(|_| PageError::from(ApiError::bad_request("the form is too large")).into_response())?;
        let csrf: CsrfField = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        if !same_secret(&csrf.csrf, &visitor.csrf) {
            tracing::warn!(visitor = %visitor.name, "a form without its session's CSRF token was refused");
            return Err(PageError::from(ApiError::new(StatusCode::FORBIDDEN, CSRF_REFUSED)).into_response());
        }
        let form = read_form(&body).map_err(IntoResponse::into_response)?;
        Ok(Self { visitor, form })
    }
}

fn read_form<T: DeserializeOwned>(body: &Bytes) -> Result<T, PageError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::bad_request(format!("the form is not as expected: {e}")).into())
}

/// `/login` and `/logout`.
pub(super) fn routes() -> Router<Console> {
    Router::new().route("/login", get(login_page).post(login)).route("/logout", post(logout))
}

async fn login_page() -> Response {
    pages::login::page(None).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /login`: a token in force opens a session; a wrong one counts
/// against the address it came from.
async fn login(
    State(console): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(LoginForm { token }): Form<LoginForm>,
) -> Result<Response, PageError> {
    let sessions = &console.0.sessions;
    if let Some(wait) = sessions.retry_after(peer.ip()) {
        let seconds = wait.as_secs().max(1);
        let message = format!(
            "too many failed sign-ins from this address: try again in {seconds} s (at most {FAILED_LOGINS_ALLOWED} a minute)"
        );
        let mut answer = (StatusCode::TOO_MANY_REQUESTS, pages::login::page(Some(&message))).into_response();
        answer.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(answer);
    }
    let Some(holder) = tokens::holder(console.pool(), token.trim()).await? else {
        sessions.failed_login(peer.ip());
        tracing::info!(peer = %peer.ip(), "a sign-in with a token not in force was refused");
        let message = "this token is not in force (unknown or revoked): `replay token list` shows the tokens";
        return Ok((StatusCode::UNAUTHORIZED, pages::login::page(Some(message))).into_response());
    };
    tracing::info!(name = %holder.name, role = %holder.role, "signed in to the console");
    let cookie = sessions.open(holder.name, holder.role);
    let secure = if console.settings().secure_cookies { "; Secure" } else { "" };
    let set = format!("{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", LIFETIME.as_secs());
    Ok(with_cookie(Redirect::to("/"), &set))
}

/// A form with no field but its CSRF token (logout, approve).
#[derive(Deserialize)]
pub(crate) struct Nothing {}

/// `POST /logout`: the session ends here, whatever the browser keeps.
async fn logout(State(console): State<Console>, posted: Posted<Nothing>) -> Response {
    console.0.sessions.close(&posted.visitor.key);
    let secure = if console.settings().secure_cookies { "; Secure" } else { "" };
    with_cookie(Redirect::to("/login"), &format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"))
}

fn with_cookie(redirect: Redirect, cookie: &str) -> Response {
    let mut answer = redirect.into_response();
    if let Ok(value) = HeaderValue::from_str(cookie) {
        answer.headers_mut().insert(header::SET_COOKIE, value);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn a_sixth_failed_login_within_the_minute_must_wait() {
        let sessions = Sessions::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..FAILED_LOGINS_ALLOWED {
            assert!(sessions.retry_after(ip).is_none());
            sessions.failed_login(ip);
        }
        assert!(sessions.retry_after(ip).is_some_and(|wait| wait <= FAILED_LOGIN_WINDOW));
        assert!(sessions.retry_after([10, 0, 0, 1].into()).is_none(), "another address is not held back");
    }
}
