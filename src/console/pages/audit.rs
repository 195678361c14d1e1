//! `/audit`: the newest audit entries, a page at a time, and whether the
//! whole hash chain verifies (`store::audit::recent` and `verify`, as
//! `replay audit` and the API read them).

use axum::extract::{Query, State};
use maud::{html, Markup};
use serde::Deserialize;

use super::{layout, time, PageError};
use crate::console::filters::page_size;
use crate::console::{Console, Visitor};
use crate::store::audit::{self, Verdict};

#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditPage {
    after: Option<i64>,
}

pub(super) async fn page(
    visitor: Visitor,
    State(console): State<Console>,
    Query(AuditPage { after }): Query<AuditPage>,
) -> Result<Markup, PageError> {
    let limit = page_size(None);
    let entries = audit::recent(console.pool(), after, limit).await?;
    let verdict = audit::verify(console.pool()).await?;
    let older = entries.last().filter(|_| entries.len() as i64 == limit).map(|e| e.id);
    let body = html! {
        h1 { "Audit log" }
        @match &verdict {
            Verdict::Intact { entries } => p.notice #chain { "The chain verifies: " (entries) " entries, each linked to the one before." },
            Verdict::Broken { id, problem } => p.error #chain role="alert" { "The chain is broken at entry " (id) ": " (problem) },
        }
        table #audit {
            tr { th.num { "id" } th { "at" } th { "operator" } th { "action" } th { "details" } }
            @for e in &entries {
                tr {
                    td.num { (e.id) } td { (time(&e.at)) } td.operator { (e.operator) } td.action { (e.action) }
                    td { code { (e.details.to_string()) } }
                }
            }
            @if entries.is_empty() { tr { td colspan="5" .muted { "no entry yet" } } }
        }
        @if let Some(older) = older { p { a href={ "/audit?after=" (older) } { "Older →" } } }
    };
    Ok(layout::render(&console, &visitor, "/audit", "Audit log", body).await)
}
