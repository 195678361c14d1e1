//! The events filters the API (`GET /api/v1/events`) and the events page
//! share: the query string, read into a [`Selector`] by one function so a
//! page and an API call with the same filters select the same rows.

use serde::Deserialize;

use super::ApiError;
use crate::replay::selector::{parse_statuses, parse_time, Bound, PayloadField, Selector, SelectorError, TimeRange};
use crate::store::ledger;

/// Most rows a listing returns in one page.
const MAX_PAGE: i64 = 500;
/// Rows a listing returns when not told.
const DEFAULT_PAGE: i64 = 50;

/// A page size as asked, within bounds.
pub(crate) fn page_size(limit: Option<i64>) -> i64 {
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

/// The filters of `GET /events`; lists are comma-separated. A field left
/// empty (as a page's form sends it) filters nothing.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventFilters {
    pub status: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `KEY=VALUE`.
    pub payload: Option<String>,
    pub limit: Option<i64>,
    /// The `next` of the page before: rows older than it.
    pub after: Option<i64>,
}

fn list(text: &Option<String>) -> Vec<String> {
    text.iter().flat_map(|t| t.split(',')).map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect()
}

/// The field as given, `None` when it is absent or blank.
fn given(text: &Option<String>) -> Option<&str> {
    text.as_deref().filter(|t| !t.trim().is_empty())
}

impl EventFilters {
    /// The selector these filters describe, a page of them; 400 with the
    /// selector's own words when one is wrong.
    pub(crate) fn selector(&self) -> Result<Selector, ApiError> {
        let bad = |e: SelectorError| ApiError::bad_request(e.to_string());
        let time = |flag, text: &Option<String>, bound| given(text).map(|t| parse_time(flag, t, bound)).transpose();
        let selector = Selector {
            event_types: list(&self.event_type),
            statuses: parse_statuses(&list(&self.status)).map_err(bad)?,
            occurred: TimeRange {
                from: time("from", &self.from, Bound::From).map_err(bad)?,
                to: time("to", &self.to, Bound::To).map_err(bad)?,
            },
            payload: given(&self.payload)
                .map(PayloadField::parse)
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(bad)?,
            limit: Some(page_size(self.limit)),
            ..Selector::default()
        };
        selector.validate().map_err(bad)?;
        Ok(selector)
    }

    /// One page of the rows these filters select, latest event time first,
    /// and the `after` of the next page (`None` on the last).
    pub(crate) async fn page(&self, pool: &sqlx::PgPool) -> Result<EventPage, ApiError> {
        let selector = self.selector()?;
        let order = ledger::Order::LatestFirst { after: self.after };
        let rows = ledger::select(pool, &selector, order).await?;
        let full = Some(rows.len() as i64) == selector.limit;
        let next = rows.last().filter(|_| full).map(|r| r.id);
        Ok(EventPage { rows, next })
    }
}

/// A page of the events browser.
pub(crate) struct EventPage {
    pub rows: Vec<ledger::LedgerRow>,
    /// The `after` of the next page.
    pub next: Option<i64>,
}
