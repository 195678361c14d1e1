//! `/pause`: whether the workers are paused, by whom and why, and the
//! forms to pause or resume with a reason (operator) — the same
//! `control::pause` calls as `replay pause` / `replay resume`, audited under
//! the visitor's token name.

use axum::extract::State;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::{csrf, layout, see, time, PageError};
use crate::console::session::Posted;
use crate::console::{reason, ApiError, Console, Visitor, PAUSE_WAIT};
use crate::control::pause::{self, ResumeError};
use crate::store::pause as pause_store;
use crate::store::tokens::Role;

pub(super) async fn page(visitor: Visitor, State(console): State<Console>) -> Result<Markup, PageError> {
    let current = pause_store::current(console.pool()).await?;
    let operator = visitor.may(Role::Operator);
    let body = html! {
        h1 { "Pause" }
        @match &current {
            Some(p) => p #pause-state { "The workers are paused since " (time(&p.paused_at)) " by " (p.operator) ": " (p.reason) "." },
            None => p #pause-state { "The workers are running." },
        }
        @if operator {
            @if current.is_some() {
                form.inline #resume method="post" action="/resume" {
                    (csrf(&visitor))
                    label { "reason " input name="reason" size="40" required; }
                    button type="submit" { "Resume the workers" }
                }
            } @else {
                form.inline #pause method="post" action="/pause" {
                    (csrf(&visitor))
                    label { "reason " input name="reason" size="40" required; }
                    button.danger type="submit" { "Pause the workers" }
                }
                p.muted { "A pause stops every worker taking work and any apply publishing; it waits up to " (PAUSE_WAIT.as_secs()) " s for the workers to say they paused." }
            }
        } @else {
            p.muted { "Pausing and resuming need the operator role." }
        }
    };
    Ok(layout::render(&console, &visitor, "/pause", "Pause", body).await)
}

#[derive(Debug, Deserialize)]
pub(super) struct ReasonForm {
    #[serde(default)]
    reason: String,
}

/// `POST /pause` (operator).
pub(super) async fn pause(State(console): State<Console>, posted: Posted<ReasonForm>) -> Result<Response, PageError> {
    let Posted { visitor, form } = posted;
    visitor.require(Role::Operator)?;
    let reason = reason(&form.reason, "the workers are paused")?;
    pause::pause_workers(console.pool(), &visitor.name, &reason, PAUSE_WAIT).await?;
    Ok(see("/pause"))
}

/// `POST /resume` (operator); 409 while an emergency stop has not put back
/// what it saved.
pub(super) async fn resume(State(console): State<Console>, posted: Posted<ReasonForm>) -> Result<Response, PageError> {
    let Posted { visitor, form } = posted;
    visitor.require(Role::Operator)?;
    let reason = reason(&form.reason, "the workers may resume")?;
    match pause::resume_workers(console.pool(), &visitor.name, &reason).await {
        Ok(_) => Ok(see("/pause")),
        Err(error @ ResumeError::StopUnfinished { .. }) => Err(ApiError::refused(error.to_string()).into()),
        Err(ResumeError::Store(error)) => Err(error.into()),
    }
}
