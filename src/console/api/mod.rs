//! The JSON API, `/api/v1/`: what the CLI shows and does, one route per
//! question or action, each with the role it needs (`Caller::require`).
//! Reads are `viewer`'s; writes name the token as their audited operator.

mod control;
mod plans;
mod read;

use axum::routing::{get, post};
use axum::Router;

use super::Console;

pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/overview", get(read::overview))
        .route("/events", get(read::events))
        .route("/events/{event_id}", get(read::event))
        .route("/dlq", get(read::dlq))
        .route("/dlq/groups", get(read::dlq_groups))
        .route("/dlq/groups/resolve", post(control::resolve_group))
        .route("/dlq/{id}/resolve", post(control::resolve))
        .route("/audit", get(read::audit))
        .route("/plans", get(plans::list).post(plans::create))
        .route("/plans/{plan_id}", get(plans::show))
        .route("/plans/{plan_id}/approve", post(plans::approve))
        .route("/plans/{plan_id}/apply", post(plans::apply))
        .route("/plans/{plan_id}/status", get(plans::status))
        .route("/pause", post(control::pause))
        .route("/resume", post(control::resume))
        .route("/emergency-stop", post(control::emergency_stop))
        .route("/tokens", get(control::tokens).post(control::create_token))
        .route("/tokens/{name}", axum::routing::delete(control::revoke_token))
        .fallback(|| async { super::ApiError::not_found("no such API route: see the README's API section") })
}
