//! Which ledger rows an operator means: the selectors of `replay plan`
//! (event ids, types, event-time and processing-time ranges, statuses,
//! top-level payload fields, a limit), parsed and checked before any query.
//!
//! Architecture invariant: this module does no I/O. Values never become SQL
//! text; `ledger::select` binds every one of them.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::ledger::status::Status;

/// Why a selector is not usable; nothing was read or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("{flag} '{value}' is not a time: use RFC 3339 (2026-01-31T12:00:00Z) or a date (2026-01-31)")]
    BadTime { flag: &'static str, value: String },
    #[error("{from_flag} ({from}) is after {to_flag} ({to}): swap them")]
    Inverted { from_flag: &'static str, from: DateTime<Utc>, to_flag: &'static str, to: DateTime<Utc> },
    #[error("--status '{0}' is not a ledger status: use one of pending, processing, processed, error, skipped")]
    BadStatus(String),
    #[error("--payload '{0}' is not KEY=VALUE (e.g. --payload contribution_id=123e4567-...)")]
    BadPayload(String),
    #[error("--limit must be at least 1")]
    BadLimit,
}

/// A half-open time range `[from, to)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRange {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A field of the payload that must equal a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadField {
    pub key: String,
    pub value: String,
}

impl PayloadField {
    /// Parses `KEY=VALUE`; the value may itself contain `=`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        match text.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok(Self { key: key.trim().to_string(), value: value.to_string() })
            }
            _ => Err(SelectorError::BadPayload(text.to_string())),
        }
    }

    /// The JSON documents a matching payload contains: the value as a
    /// string, and also as a number or boolean when it reads as one, so
    /// `amount=100` finds `{"amount": 100}` and `{"amount": "100"}` alike.
    pub fn containments(&self) -> Vec<Value> {
        let mut documents = vec![serde_json::json!({ &self.key: &self.value })];
        if let Ok(typed @ (Value::Number(_) | Value::Bool(_))) = serde_json::from_str::<Value>(&self.value) {
            documents.push(serde_json::json!({ &self.key: typed }));
        }
        documents
    }
}

/// Everything `replay plan` selects rows by; empty parts select everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub event_ids: Vec<String>,
    pub event_types: Vec<String>,
    /// The event's own time (`occurred_at`).
    pub occurred: TimeRange,
    /// When it was processed (`processed_at`), as the runbook's queries select.
    pub processed: TimeRange,
    pub statuses: Vec<Status>,
    pub payload: Vec<PayloadField>,
    pub limit: Option<i64>,
    /// Rows the ledger received at or after this time (`events list --since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_from: Option<DateTime<Utc>>,
}

impl Selector {
    /// Checks what a parser cannot: ranges the right way round, a positive
    /// limit. (Statuses are checked as they are read: [`parse_statuses`].)
    pub fn validate(&self) -> Result<(), SelectorError> {
        for (range, from_flag, to_flag) in
            [(&self.occurred, "--from", "--to"), (&self.processed, "--processed-from", "--processed-to")]
        {
            if let (Some(from), Some(to)) = (range.from, range.to) {
                if from > to {
                    return Err(SelectorError::Inverted { from_flag, from, to_flag, to });
                }
            }
        }
        if self.limit.is_some_and(|l| l < 1) {
            return Err(SelectorError::BadLimit);
        }
        Ok(())
    }
}

/// A selector as an operator gives it, before parsing: `replay plan`'s
/// flags and the console's JSON body both become one, so both are read by
/// [`SelectorInput::selector`] alone. Errors name the CLI's flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectorInput {
    pub event_ids: Vec<String>,
    pub types: Vec<String>,
    pub statuses: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub processed_from: Option<String>,
    pub processed_to: Option<String>,
    /// `KEY=VALUE`, as `--payload` takes it.
    pub payload: Vec<String>,
    pub limit: Option<i64>,
    /// Select the whole ledger when nothing else is given.
    pub all: bool,
}

impl SelectorInput {
    /// The selector these inputs describe, checked; `None` when no field
    /// but `limit` is given and `all` is not set: nothing was selected.
    pub fn selector(&self) -> Result<Option<Selector>, SelectorError> {
        let time = |flag, text: &Option<String>, bound| text.as_deref().map(|t| parse_time(flag, t, bound)).transpose();
        let selector = Selector {
            event_ids: self.event_ids.clone(),
            event_types: self.types.clone(),
            occurred: TimeRange {
                from: time("--from", &self.from, Bound::From)?,
                to: time("--to", &self.to, Bound::To)?,
            },
            processed: TimeRange {
                from: time("--processed-from", &self.processed_from, Bound::From)?,
                to: time("--processed-to", &self.processed_to, Bound::To)?,
            },
            statuses: parse_statuses(&self.statuses)?,
            payload: self.payload.iter().map(|p| PayloadField::parse(p)).collect::<Result<_, _>>()?,
            limit: self.limit,
            received_from: None,
        };
        selector.validate()?;
        let everything = Selector { limit: selector.limit, ..Selector::default() };
        Ok((self.all || selector != everything).then_some(selector))
    }
}

/// Reads `--status` values by name.
pub fn parse_statuses(names: &[String]) -> Result<Vec<Status>, SelectorError> {
    names.iter().map(|name| Status::parse(name).ok_or_else(|| SelectorError::BadStatus(name.clone()))).collect()
}

/// Which end of a range a time bounds: a plain date means the start of that
/// day for `From`, and the start of the next day for `To`, so
/// `--from 2026-01-01 --to 2026-01-31` covers all of January 31st.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    From,
    To,
}

/// Reads an RFC 3339 time or a plain date (UTC).
pub fn parse_time(flag: &'static str, text: &str, bound: Bound) -> Result<DateTime<Utc>, SelectorError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| SelectorError::BadTime { flag, value: text.to_string() })?;
    let day = match bound {
        Bound::From => Some(date),
        Bound::To => date.succ_opt(),
    }
    .ok_or_else(|| SelectorError::BadTime { flag, value: text.to_string() })?;
    Ok(day.and_time(NaiveTime::MIN).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_dates_cover_whole_days() {
        let from = parse_time("--from", "2026-01-31", Bound::From).unwrap();
        let to = parse_time("--to", "2026-01-31", Bound::To).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-01-31T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-02-01T00:00:00+00:00");
        let exact = parse_time("--from", "2026-01-31T12:30:00+02:00", Bound::From).unwrap();
        assert_eq!(exact.to_rfc3339(), "2026-01-31T10:30:00+00:00");
        let bad = parse_time("--from", "last tuesday", Bound::From).unwrap_err();
        assert!(bad.to_string().contains("--from 'last tuesday' is not a time"), "{bad}");
    }

    #[test]
    fn validation_names_the_problem() {
        let inverted = Selector {
            occurred: TimeRange {
                from: Some(parse_time("--from", "2026-02-01", Bound::From).unwrap()),
                to: Some(parse_time("--to", "2026-01-01", Bound::To).unwrap()),
            },
            ..Selector::default()
        };
        assert!(matches!(inverted.validate(), Err(SelectorError::Inverted { from_flag: "--from", .. })));
        assert_eq!(parse_statuses(&["failed".into()]), Err(SelectorError::BadStatus("failed".into())));
        assert_eq!(parse_statuses(&["error".into(), "pending".into()]), Ok(vec![Status::Error, Status::Pending]));
        assert_eq!(Selector { limit: Some(0), ..Selector::default() }.validate(), Err(SelectorError::BadLimit));
        assert!(Selector::default().validate().is_ok());
    }

    #[test]
    fn selector_input_reads_a_json_body_as_the_flags_are_read() {
        let input: SelectorInput =
            serde_json::from_value(serde_json::json!({"types": ["period.close"], "from": "2026-01-01", "limit": 5}))
                .unwrap();
        let selector = input.selector().unwrap().unwrap();
        assert_eq!(selector.event_types, vec!["period.close".to_string()]);
        assert_eq!(selector.occurred.from, Some(parse_time("--from", "2026-01-01", Bound::From).unwrap()));
        assert_eq!(selector.limit, Some(5));
        // A limit alone selects nothing in particular; `all` says the whole ledger is meant.
        assert_eq!(SelectorInput { limit: Some(5), ..SelectorInput::default() }.selector(), Ok(None));
        let all = SelectorInput { all: true, ..SelectorInput::default() }.selector().unwrap();
        assert_eq!(all, Some(Selector::default()));
        let bad = SelectorInput { to: Some("soon".into()), ..SelectorInput::default() }.selector().unwrap_err();
        assert!(bad.to_string().starts_with("--to 'soon' is not a time"), "{bad}");
        assert!(serde_json::from_value::<SelectorInput>(serde_json::json!({"type": ["x"]})).is_err());
    }

    #[test]
    fn payload_fields_match_strings_and_typed_values() {
        let id = PayloadField::parse("contribution_id=abc=def").unwrap();
        assert_eq!(id.value, "abc=def");
        assert_eq!(id.containments(), vec![serde_json::json!({"contribution_id": "abc=def"})]);
        let amount = PayloadField::parse("amount=100").unwrap();
        assert_eq!(
            amount.containments(),
            vec![serde_json::json!({"amount": "100"}), serde_json::json!({"amount": 100})]
        );
        assert!(PayloadField::parse("=x").is_err());
        assert!(PayloadField::parse("novalue").is_err());
    }
}
