//! `/plans` and `/plans/{plan_id}`: the plans of the plan directory, and a
//! plan's page — the five-second read (`planning::human`), its warnings,
//! where its run stands with live progress (`console::live`, the API's
//! status stream, here on the session), its approval (the two-person rule:
//! an Approve form for operators other than its maker), the apply form with
//! a typed confirmation (operator; under `--require-approval` only once the
//! plan is approved), and the emergency stop (admin).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;
use serde_json::Value;

use super::{csrf, layout, number, see, status_label, time, PageError};
use crate::console::session::{Nothing, Posted};
use crate::console::{canary_of, live, reason, ApiError, Console, Visitor, PAUSE_WAIT};
use crate::control::approvals;
use crate::control::emergency::{self, Restore};
use crate::replay::apply;
use crate::replay::plan::PlanId;
use crate::replay::planning;
use crate::store::approvals::Approval;
use crate::store::tokens::Role;
use crate::store::{approvals as approval_rows, runs};

/// How many characters of the plan id the operator types to confirm.
const CONFIRM_CHARS: usize = 8;

pub(super) async fn list(visitor: Visitor, State(console): State<Console>) -> Result<Markup, PageError> {
    let mut rows = Vec::new();
    for plan in console.plans()? {
        let run = runs::find(console.pool(), plan.header.plan_id).await?;
        rows.push((plan, run));
    }
    let body = html! {
        h1 { "Plans" }
        p.muted { "Plans are made from the dead-letters page or with " code { "replay plan" } " into " code { (console.settings().plan_dir.display()) } "." }
        table #plans {
            tr { th { "plan" } th { "made" } th { "by" } th { "reason" } th.num { "rows" } th.num { "events" } th { "state" } }
            @for (plan, run) in &rows {
                tr {
                    td { a href={ "/plans/" (plan.header.plan_id) } { code { (plan.header.plan_id) } } }
                    td { (time(&plan.header.created_at)) } td { (plan.header.created_by) } td { (plan.header.reason) }
                    td.num { (plan.summary.rows) } td.num { (plan.events()) }
                    td { (status_label(run.as_ref().map_or("not applied", |r| r.state.as_str()))) }
                }
            }
            @if rows.is_empty() { tr { td colspan="7" .muted { "no plan yet" } } }
        }
    };
    Ok(layout::render(&console, &visitor, "/plans", "Plans", body).await)
}

/// Updates the progress fields from the plan's event stream; text only,
/// never markup, so nothing in a report can become a tag.
const PROGRESS_SCRIPT: &str = r#"
(function () {
  var source = new EventSource(location.pathname.replace(/\/$/, "") + "/events");
  function set(id, v) { var e = document.getElementById(id); if (e) e.textContent = v; }
  function show(r) {
    var by = r.by_status || {};
    var failures = (r.failures || []).reduce(function (n, f) { return n + f.count; }, 0);
    set("progress-state", r.state);
    set("progress-processed", by.processed || 0);
    set("progress-total", r.events);
    set("progress-published", r.published);
    set("progress-rate", r.rate_per_second == null ? "—" : r.rate_per_second.toFixed(1) + " events/s");
    set("progress-eta", r.eta_seconds == null ? "—" : Math.ceil(r.eta_seconds) + " s");
    set("progress-failures", failures);
    var f = document.getElementById("progress-failures");
    if (f) f.className = failures > 0 ? "status error" : "status";
    if (r.console_apply) set("progress-ending", r.console_apply.finished ? "finished" : "stopped: " + r.console_apply.error);
  }
  source.addEventListener("progress", function (e) { show(JSON.parse(e.data)); });
  source.addEventListener("settled", function (e) {
    show(JSON.parse(e.data));
    set("progress-settled", "settled");
    source.close();
  });
})();
"#;

pub(super) async fn page(
    visitor: Visitor,
    State(console): State<Console>,
    Path(plan_id): Path<PlanId>,
) -> Result<Markup, PageError> {
    let plan = console.plan(plan_id)?;
    let (report, settled) = live::report(&console, &plan).await?;
    let state = report["state"].as_str().unwrap_or("unknown").to_string();
    let open = !settled && state != "done";
    let id = plan_id.to_string();
    let failures: i64 = report["failures"].as_array().into_iter().flatten().filter_map(|f| f["count"].as_i64()).sum();
    let approval = approval_rows::find(console.pool(), plan_id).await?;
    let maker = plan.header.created_by.as_str();
    let approved = approval.as_ref().is_some_and(|a| a.plan_digest == plan.digest);
    let required = console.settings().require_approval;
    let may_apply = visitor.may(Role::Operator) && state != "done";
    // Once applied, the data differs from the rehearsed by design: shown
    // only while the question "what would it change" is still open.
    let rehearsal = match state.as_str() {
        "not applied" => apply::rehearsal_of(console.pool(), &plan).await.map_err(ApiError::from)?.describe(&plan.path),
        _ => Vec::new(),
    };
    let body = html! {
        h1 { "Plan " code #plan-id { (id) } }
        h2 { "What it replays" }
        pre #plan-human { (planning::human(&plan, None)) }
        @if !plan.summary.warnings.is_empty() {
            h2 { "Warnings" }
            ul #warnings { @for w in &plan.summary.warnings { li.error { (w) } } }
        }
        @if !rehearsal.is_empty() {
            h2 { "Rehearsal" }
            pre #rehearsal { (rehearsal.join("\n")) }
        }
        h2 { "Progress" }
        table #progress {
            tr { th { "state" } td { span #progress-state { (state) } " " span #progress-settled .muted { @if settled { "settled" } } } }
            tr { th { "processed" } td { span #progress-processed { (count(&report["by_status"]["processed"])) } " of " span #progress-total { (count(&report["events"])) } } }
            tr { th { "published" } td #progress-published { (count(&report["published"])) } }
            tr { th { "rate" } td #progress-rate { (report["rate_per_second"].as_f64().map_or("—".into(), |r| format!("{r:.1} events/s"))) } }
            tr { th { "time left" } td #progress-eta { (report["eta_seconds"].as_f64().map_or("—".into(), |s| format!("{} s", s.ceil()))) } }
            tr { th { "new failures" } td { span #progress-failures class=(if failures > 0 { "status error" } else { "status" }) { (failures) } } }
            tr { th { "console apply" } td #progress-ending { (ending(&report["console_apply"])) } }
        }
        @if report["failures"].as_array().is_some_and(|f| !f.is_empty()) {
            pre #failures { (serde_json::to_string_pretty(&report["failures"]).unwrap_or_default()) }
        }
        h2 { "Approval" }
        p #approval-state { (approval_state(approval.as_ref(), approved, maker, required)) }
        @if visitor.may(Role::Operator) && visitor.name != maker && approval.is_none() {
            form #approve method="post" action={ "/plans/" (id) "/approve" } {
                (csrf(&visitor))
                p.inline {
                    "You did not make this plan: approving it says you read it and agree it may be applied. "
                    button #approve-button type="submit" { "Approve this plan" }
                }
            }
        }
        @if may_apply && required && !approved {
            p #apply-blocked .muted { "Apply opens once an operator other than " (maker) " approved this plan (two-person rule)." }
        }
        @if may_apply && (approved || !required) {
            h2 { "Apply" }
            form #apply method="post" action={ "/plans/" (id) "/apply" } {
                (csrf(&visitor))
                p { "Every check of " code { "replay apply" } " runs first; a refusal changes nothing. "
                    "To confirm, type the plan's first " (CONFIRM_CHARS) " characters, " code { (id.chars().take(CONFIRM_CHARS).collect::<String>()) } "." }
                p.inline {
                    label { "confirm " input #confirm name="confirm" size="10" autocomplete="off" required; }
                    " " label { "rate (events/s, empty: unpaced) " input name="rate" size="6"; }
                    " " label { input type="checkbox" name="allow_external_effects" value="yes"; " allow external effects" }
                }
                p.inline {
                    "Canary (optional): publish the first "
                    label { input #canary name="canary" size="6" placeholder="N"; " events" }
                    ", wait up to " label { input #canary-wait name="canary_wait" size="5" placeholder="60s"; }
                    " for them to settle, go on only if at most "
                    label { input #max-failure-rate name="max_failure_rate" size="5" placeholder="0"; }
                    " of them failed (0 to 1, or 5%). A halt leaves the rest unpublished and resumable."
                }
                p.inline { button #apply-button type="submit" { "Apply this plan" } }
            }
        }
        @if visitor.may(Role::Admin) && state != "not applied" {
            h2 { "Emergency stop" }
            form #emergency-stop method="post" action={ "/plans/" (id) "/stop" } {
                (csrf(&visitor))
                p { "Pauses the workers, takes this replay's messages off the queue and restores the pre-replay backup." }
                p.inline {
                    label { "reason " input name="reason" size="40" required; }
                    " " button.danger type="submit" { "Emergency stop" }
                }
            }
        }
        @if open { script { (PreEscaped(PROGRESS_SCRIPT)) } }
    };
    Ok(layout::render(&console, &visitor, "/plans", &format!("Plan {id}"), body).await)
}

/// The plan's approval in words: who approved it and when, or who may.
fn approval_state(approval: Option<&Approval>, approved: bool, maker: &str, required: bool) -> String {
    match approval {
        Some(a) if approved => format!("approved by {} at {}", a.approved_by, time(&a.approved_at)),
        Some(a) => format!(
            "approved by {} for another file (digest {}): this file changed after it was approved; make a new plan",
            a.approved_by, a.plan_digest
        ),
        None if required => format!("needs approval by an operator other than {maker} before it is applied"),
        None => format!(
            "not approved (an operator other than {maker} may approve it; this console applies plans without approval)"
        ),
    }
}

fn count(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

/// `GET /plans/{plan_id}/events`: the API's status stream, on the session.
pub(super) async fn progress(
    _: Visitor,
    State(console): State<Console>,
    Path(plan_id): Path<PlanId>,
) -> Result<Response, PageError> {
    let plan = console.plan(plan_id)?;
    Ok(live::stream(console, plan).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ApplyForm {
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    rate: String,
    allow_external_effects: Option<String>,
    /// The canary: events first, their failure rate allowed, how long to
    /// wait for them to settle; empty fields are `replay apply`'s defaults.
    #[serde(default)]
    canary: String,
    #[serde(default)]
    max_failure_rate: String,
    #[serde(default)]
    canary_wait: String,
}

/// `POST /plans/{plan_id}/apply` (operator): with the typed confirmation,
/// the console's apply (the API's), then back to the plan's page.
pub(super) async fn apply(
    State(console): State<Console>,
    Path(plan_id): Path<PlanId>,
    posted: Posted<ApplyForm>,
) -> Result<Response, PageError> {
    let Posted { visitor, form } = posted;
    visitor.require(Role::Operator)?;
    let expected: String = plan_id.to_string().chars().take(CONFIRM_CHARS).collect();
    if form.confirm.trim() != expected {
        return Err(ApiError::bad_request(format!(
            "the confirmation does not match: type the plan's first {CONFIRM_CHARS} characters ({expected}); nothing was applied"
        ))
        .into());
    }
    let rate = number::<u32>("rate", &form.rate)?;
    let max_failure_rate = match form.max_failure_rate.trim() {
        "" => None,
        text => Some(apply::parse_failure_rate(text).map_err(ApiError::bad_request)?),
    };
    let wait = Some(form.canary_wait.trim()).filter(|w| !w.is_empty());
    let canary = canary_of(number::<u64>("canary", &form.canary)?, max_failure_rate, wait)?;
    console.apply_plan(plan_id, &visitor.name, rate, form.allow_external_effects.is_some(), canary).await?;
    Ok(see(&format!("/plans/{plan_id}")))
}

/// `POST /plans/{plan_id}/approve` (operator, not the maker): the API's
/// approval, then back to the plan's page.
pub(super) async fn approve(
    State(console): State<Console>,
    Path(plan_id): Path<PlanId>,
    posted: Posted<Nothing>,
) -> Result<Response, PageError> {
    let Posted { visitor, .. } = posted;
    visitor.require(Role::Operator)?;
    let plan = console.plan(plan_id)?;
    approvals::approve(console.pool(), &plan, &visitor.name).await?;
    Ok(see(&format!("/plans/{plan_id}")))
}

#[derive(Debug, Deserialize)]
pub(super) struct StopForm {
    #[serde(default)]
    reason: String,
}

/// `POST /plans/{plan_id}/stop` (admin): `replay emergency-stop --plan`,
/// and its report.
pub(super) async fn emergency_stop(
    State(console): State<Console>,
    Path(plan_id): Path<PlanId>,
    posted: Posted<StopForm>,
) -> Result<Markup, PageError> {
    let Posted { visitor, form } = posted;
    visitor.require(Role::Admin)?;
    let reason = reason(&form.reason, "the replay is stopped")?;
    let restore = Restore::of_plan(console.pool(), plan_id)
        .await?
        .ok_or_else(|| ApiError::bad_request(Restore::never_applied(plan_id)))?;
    let request =
        emergency::Request { operator: visitor.name.clone(), reason, restore, wait: PAUSE_WAIT, report_dir: None };
    let report = emergency::stop(console.pool(), console.endpoints(), &request).await;
    let failed = report.failed();
    let body = html! {
        h1 { "Emergency stop of " code { (plan_id) } }
        @if failed.is_empty() { p.notice { "Every step passed. The workers stay paused until resumed." } }
        @else { p.error { "Steps failed: " @for s in &failed { (s.name) " (" (s.detail) ") " } "— the pause stays; submit the stop again to go on." } }
        pre { (serde_json::to_string_pretty(&report).unwrap_or_default()) }
        p { a href={ "/plans/" (plan_id) } { "Back to the plan" } }
    };
    Ok(layout::render(&console, &visitor, "/plans", "Emergency stop", body).await)
}

/// How this console's last apply of the plan ended, as the progress table
/// shows it (the script writes the same words).
fn ending(ended: &serde_json::Value) -> String {
    match (ended["finished"].as_bool(), ended["error"].as_str()) {
        (Some(true), _) => "finished".to_string(),
        (Some(false), Some(error)) => format!("stopped: {error}"),
        _ => "— (not applied from this console since it started)".to_string(),
    }
}
