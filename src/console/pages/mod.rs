//! The console's web pages: server-rendered HTML (maud), one file per page,
//! each calling the library functions the API handlers call. No page keeps
//! logic of its own about events, plans or pauses: it reads, shows, and
//! posts forms to the same `control`, `replay` and `store` functions.
//!
//! Invariants: every value shown is escaped (maud escapes by default, and
//! no page uses `PreEscaped` on anything but a constant of this module);
//! every form POST goes through [`Posted`](super::session::Posted), which
//! refuses one without the session's CSRF token; a form a role may not
//! use is not shown, and posting it anyway is 403 in the API's words.

mod audit;
mod dlq;
mod events;
mod layout;
pub(crate) mod login;
mod overview;
mod pause;
mod plans;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::{ApiError, Console};

/// Every page route.
pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/", get(overview::page))
        .route("/events", get(events::list))
        .route("/events/{event_id}", get(events::event))
        .route("/dlq", get(dlq::page))
        .route("/dlq/plan", post(dlq::plan_group))
        .route("/dlq/resolve-group", post(dlq::resolve_group))
        .route("/dlq/{id}/resolve", post(dlq::resolve))
        .route("/plans", get(plans::list))
        .route("/plans/{plan_id}", get(plans::page))
        .route("/plans/{plan_id}/events", get(plans::progress))
        .route("/plans/{plan_id}/approve", post(plans::approve))
        .route("/plans/{plan_id}/apply", post(plans::apply))
        .route("/plans/{plan_id}/stop", post(plans::emergency_stop))
        .route("/pause", get(pause::page).post(pause::pause))
        .route("/resume", post(pause::resume))
        .route("/audit", get(audit::page))
}

/// A page that could not do what was asked: the API's status and words,
/// as a page a person reads.
#[derive(Debug)]
pub(crate) struct PageError(ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let ApiError { status, message } = self.0;
        if status.is_server_error() {
            tracing::error!(status = %status, error = %message, "console page failed");
        }
        let title = status.canonical_reason().unwrap_or("error");
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { "replay console: " (title) } (layout::style()) }
                body {
                    main {
                        h1 { (status.as_u16()) " " (title) }
                        p.error role="alert" { (message) }
                        p { a href="/" { "Overview" } }
                    }
                }
            }
        };
        (status, body).into_response()
    }
}

/// 303 to `to`: where a form's result is shown.
fn see(to: &str) -> Response {
    axum::response::Redirect::to(to).into_response()
}

/// A time as the pages show it (UTC, to the second).
fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn maybe_time(at: &Option<DateTime<Utc>>) -> String {
    at.as_ref().map_or_else(|| "—".to_string(), time)
}

/// A path segment with everything but unreserved characters percent-encoded
/// (`form_urlencoded` writes a space as `+`, which a path keeps literally).
fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}

/// The hidden CSRF field every form carries.
fn csrf(visitor: &super::Visitor) -> Markup {
    html! { input type="hidden" name="csrf" value=(visitor.csrf); }
}

/// A status as a coloured label.
fn status_label(status: &str) -> Markup {
    html! { span class={ "status " (status) } { (status) } }
}

/// 400 for a form field that is not a number.
fn number<T: std::str::FromStr>(field: &str, text: &str) -> Result<Option<T>, PageError> {
    match text.trim() {
        "" => Ok(None),
        text => text.parse().map(Some).map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("{field} must be a whole number, not '{text}'")).into()
        }),
    }
}
