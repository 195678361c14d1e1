//! The wire format: how an event travels on the broker, in one place.
//!
//! The message body is the event's payload and nothing else, so a message
//! published by hand (`rabbitmqadmin publish routing_key=contribution.submitted
//! payload='{...}'`) and one published by `replay` read the same. The event's
//! identity rides in AMQP properties: `message_id` is the event id, `type` the
//! event type, `timestamp` and the `occurred_at` header its time. A replayed
//! message also carries the `x-replay-plan` header naming its plan, as the
//! plan id's text (hyphenated, lowercase); this module alone writes and reads
//! it ([`Event::properties`], [`replay_plan`]).
//!
//! A message without a `message_id` gets an id derived from its routing key and
//! body, so a redelivered copy of it is recognised as the same event.

use chrono::{DateTime, TimeZone, Utc};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::replay::plan::id::PlanId;

/// Header with the event's time at full precision (the AMQP timestamp has seconds).
pub const OCCURRED_AT_HEADER: &str = "occurred_at";
/// Header naming the replay plan a republished event belongs to.
pub const REPLAY_PLAN_HEADER: &str = "x-replay-plan";
pub use super::transport::PARTITION_KEY_HEADER;
/// Default largest message body a worker accepts as an event.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Namespace of derived event ids (uuid v5 over routing key and body).
const DERIVED_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5f0c_93a1_0d1e_4b7a_9c55_2e4f_7b1d_3a60);

/// One domain event, as read off the wire or a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: Value,
    /// The payload exactly as received, for the ledger.
    pub payload_json: String,
    /// The replay plan a republished message belongs to (its `x-replay-plan`
    /// header): such a message may take its parked ledger row.
    pub replay_plan: Option<PlanId>,
    /// Set on an event taken from a ledger row that a `--force` plan reset:
    /// its handler skips its idempotency guards (an external effect runs again).
    pub forced_by: Option<uuid::Uuid>,
    /// The key that picks its partition (`x-partition-key`): events with the
    /// same key are applied in publish order. `None`: it travels unkeyed, to
    /// the one partition the hash of no key picks.
    pub partition_key: Option<String>,
}

impl Event {
    /// Builds an event from its parts, checking the payload can be stored.
    pub fn new(
        event_id: String,
        event_type: String,
        occurred_at: DateTime<Utc>,
        payload: Value,
    ) -> Result<Self, Rejection> {
        check_storable(&payload)?;
        let payload_json = payload.to_string();
        Ok(Self {
            event_id,
            event_type,
            occurred_at,
            payload,
            payload_json,
            replay_plan: None,
            forced_by: None,
            partition_key: None,
        })
    }

    /// The AMQP properties `replay` publishes this event with.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(OCCURRED_AT_HEADER.into(), AMQPValue::LongString(self.occurred_at.to_rfc3339().into()));
        if let Some(plan) = self.replay_plan {
            headers.insert(REPLAY_PLAN_HEADER.into(), AMQPValue::LongString(plan.to_string().into()));
        }
        if let Some(key) = &self.partition_key {
            headers.insert(PARTITION_KEY_HEADER.into(), AMQPValue::LongString(key.as_str().into()));
        }
        BasicProperties::default()
            .with_message_id(ShortString::from(self.event_id.as_str()))
            .with_type(ShortString::from(self.event_type.as_str()))
            .with_timestamp(u64::try_from(self.occurred_at.timestamp()).unwrap_or(0))
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(headers)
    }
}

/// The line format of `replay publish --file`: one JSON object per line.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeLine {
    #[serde(default)]
    pub event_id: Option<String>,
    pub event_type: String,
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    pub payload: Value,
}

impl EnvelopeLine {
    pub fn into_event(self) -> Result<Event, Rejection> {
        if self.event_type.trim().is_empty() {
            return Err(Rejection::new("event_type is empty"));
        }
        let event_id = self.event_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if event_id.trim().is_empty() {
            return Err(Rejection::new("event_id is empty"));
        }
        Event::new(event_id, self.event_type, self.occurred_at.unwrap_or_else(Utc::now), self.payload)
    }
}

/// Why a message or line cannot be taken as an event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

impl Rejection {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// What arrived on the broker, before it is known to be an event.
pub struct Received<'a> {
    pub routing_key: &'a str,
    pub properties: &'a BasicProperties,
    pub body: &'a [u8],
}

impl Received<'_> {
    /// Reads the message as an event, or says why it is not one.
    pub fn parse(&self, max_bytes: usize) -> Result<Event, Rejection> {
        if self.body.len() > max_bytes {
            return Err(Rejection(format!(
                "message body of {} bytes is over the limit of {max_bytes} bytes",
                self.body.len()
            )));
        }
        let text = std::str::from_utf8(self.body).map_err(|e| Rejection(format!("message body is not UTF-8: {e}")))?;
        let payload: Value =
            serde_json::from_str(text).map_err(|e| Rejection(format!("message body is not JSON: {e}")))?;
        check_storable(&payload)?;

        let event_type = match self.properties.kind() {
            Some(kind) if !kind.as_str().is_empty() => kind.to_string(),
            _ if !self.routing_key.is_empty() => self.routing_key.to_string(),
            _ => {
                return Err(Rejection::new("no event type: the message has neither a type property nor a routing key"))
            }
        };
        let event_id = match self.properties.message_id() {
            Some(id) if !id.as_str().is_empty() => id.to_string(),
            _ => derived_event_id(self.routing_key, self.body),
        };
        let occurred_at = self.occurred_at().unwrap_or_else(Utc::now);
        let replay_plan = replay_plan(self.properties).plan();
        let partition_key = self.header_text(PARTITION_KEY_HEADER).filter(|k| !k.is_empty());
        Ok(Event {
            event_id,
            event_type,
            occurred_at,
            payload,
            payload_json: text.to_string(),
            replay_plan,
            forced_by: None,
            partition_key,
        })
    }

    fn header_text(&self, name: &str) -> Option<String> {
        self.properties.headers().as_ref().and_then(|headers| match headers.inner().get(name) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        })
    }

    fn occurred_at(&self) -> Option<DateTime<Utc>> {
        let from_header = self
            .header_text(OCCURRED_AT_HEADER)
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok().map(|t| t.with_timezone(&Utc)));
        from_header.or_else(|| {
            self.properties
                .timestamp()
                .and_then(|secs| i64::try_from(secs).ok())
                .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
        })
    }

    /// The headers as JSON, for the dead-letter table.
    pub fn headers_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        if let Some(headers) = self.properties.headers() {
            for (key, value) in headers.inner() {
                map.insert(key.to_string(), amqp_to_json(value));
            }
        }
        if let Some(id) = self.properties.message_id() {
            map.insert("message_id".into(), Value::String(id.to_string()));
        }
        if let Some(kind) = self.properties.kind() {
            map.insert("type".into(), Value::String(kind.to_string()));
        }
        Value::Object(map)
    }
}

/// What a message's `x-replay-plan` header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayHeader {
    /// No such header: not a replayed message.
    Absent,
    /// The header as `replay` writes it: this plan's id.
    Plan(PlanId),
    /// A header of that name that is not a plan id as `replay` writes it
    /// (another type, or text in another form): a replay's message, of no
    /// plan that can be named.
    Unreadable,
}

impl ReplayHeader {
    /// The plan named, if one is.
    pub fn plan(self) -> Option<PlanId> {
        match self {
            Self::Plan(plan) => Some(plan),
            Self::Absent | Self::Unreadable => None,
        }
    }
}

/// Reads a message's replay plan from its `x-replay-plan` header. Only the
/// exact text [`Event::properties`] writes names a plan, as before the id had
/// a type: a parked row was matched by that text, so a uuid written any other
/// way (upper case, braces) never took a row and names no plan here either.
pub fn replay_plan(properties: &BasicProperties) -> ReplayHeader {
    let Some(value) = properties.headers().as_ref().and_then(|h| h.inner().get(REPLAY_PLAN_HEADER)) else {
        return ReplayHeader::Absent;
    };
    let AMQPValue::LongString(text) = value else { return ReplayHeader::Unreadable };
    let text = text.to_string();
    match text.parse::<PlanId>() {
        Ok(plan) if plan.to_string() == text => ReplayHeader::Plan(plan),
        _ => ReplayHeader::Unreadable,
    }
}

/// The id of an event that arrived without one: stable across redeliveries.
pub fn derived_event_id(routing_key: &str, body: &[u8]) -> String {
    let mut name = Vec::with_capacity(routing_key.len() + 1 + body.len());
    name.extend_from_slice(routing_key.as_bytes());
    name.push(0);
    name.extend_from_slice(body);
    uuid::Uuid::new_v5(&DERIVED_ID_NAMESPACE, &name).to_string()
}

/// Postgres `jsonb` refuses the NUL character; such a payload is rejected here
/// instead of failing a whole batch insert later.
fn check_storable(value: &Value) -> Result<(), Rejection> {
    let has_nul = |s: &str| s.contains('\0');
    let bad = match value {
        Value::String(s) => has_nul(s),
        Value::Array(items) => return items.iter().try_for_each(check_storable),
        Value::Object(map) => {
            for (key, item) in map {
                if has_nul(key) {
                    return Err(nul_rejection());
                }
                check_storable(item)?;
            }
            false
        }
        _ => false,
    };
    if bad {
        Err(nul_rejection())
    } else {
        Ok(())
    }
}

fn nul_rejection() -> Rejection {
    Rejection::new("payload contains a \\u0000 character, which Postgres jsonb cannot store")
}

fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::LongString(s) => Value::String(s.to_string()),
        AMQPValue::ShortString(s) => Value::String(s.to_string()),
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        other => Value::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received<'a>(key: &'a str, props: &'a BasicProperties, body: &'a [u8]) -> Received<'a> {
        Received { routing_key: key, properties: props, body }
    }

    #[test]
    fn hand_published_message_gets_a_stable_id() {
        let props = BasicProperties::default();
        let body = br#"{"contribution_id":"c1"}"#;
        let a = received("contribution.submitted", &props, body).parse(1024).unwrap();
        let b = received("contribution.submitted", &props, body).parse(1024).unwrap();
        assert_eq!(a.event_id, b.event_id);
        assert_eq!(a.event_type, "contribution.submitted");
    }

    #[test]
    fn published_properties_round_trip() {
        let event = Event::new(
            "e-1".into(),
            "period.opened".into(),
            "2026-01-02T03:04:05.678Z".parse().unwrap(),
            serde_json::json!({"period_id": "p"}),
        )
        .unwrap();
        let event = Event { replay_plan: Some(PlanId::random()), ..event };
        let props = event.properties();
        let body = event.payload_json.clone();
        let parsed = received("ignored", &props, body.as_bytes()).parse(1024).unwrap();
        assert_eq!(parsed, event);
    }

    fn with_header(value: AMQPValue) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(REPLAY_PLAN_HEADER.into(), value);
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn the_replay_header_is_the_plan_ids_text_and_reads_back() {
        let plan: PlanId = "0b6c7f7e-3d0a-4a53-9a43-2f5a1f0e9c11".parse().unwrap();
        let event = Event::new("e-1".into(), "period.opened".into(), Utc::now(), serde_json::json!({})).unwrap();
        let props = Event { replay_plan: Some(plan), ..event.clone() }.properties();
        let written = props.headers().as_ref().and_then(|h| h.inner().get("x-replay-plan").cloned());
        assert_eq!(written, Some(AMQPValue::LongString("0b6c7f7e-3d0a-4a53-9a43-2f5a1f0e9c11".into())));
        assert_eq!(replay_plan(&props), ReplayHeader::Plan(plan));
        // An event that is not a replay's carries no such header.
        let plain = event.properties();
        assert!(plain.headers().as_ref().is_some_and(|h| !h.inner().contains_key("x-replay-plan")));
        assert_eq!(replay_plan(&plain), ReplayHeader::Absent);
        assert_eq!(replay_plan(&BasicProperties::default()), ReplayHeader::Absent);
    }

    #[test]
    fn a_replay_header_not_written_by_replay_names_no_plan() {
        let upper = with_header(AMQPValue::LongString("0B6C7F7E-3D0A-4A53-9A43-2F5A1F0E9C11".into()));
        assert_eq!(replay_plan(&upper), ReplayHeader::Unreadable);
        assert_eq!(replay_plan(&with_header(AMQPValue::LongString("plan-9".into()))), ReplayHeader::Unreadable);
        assert_eq!(replay_plan(&with_header(AMQPValue::ShortString("x".into()))), ReplayHeader::Unreadable);
        assert_eq!(replay_plan(&with_header(AMQPValue::Boolean(true))).plan(), None);
        // Such a message is still parsed as an event, with no plan to take a parked row for.
        let parsed = received("period.opened", &upper, b"{}").parse(1024).unwrap();
        assert_eq!(parsed.replay_plan, None);
    }

    #[test]
    fn rejects_what_cannot_be_stored() {
        let props = BasicProperties::default();
        let nul = received("x", &props, br#"{"a":"b\u0000"}"#).parse(1024).unwrap_err();
        assert!(nul.0.contains("\\u0000"), "{nul}");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = received("x", &props, deep.as_bytes()).parse(4096).unwrap_err();
        assert!(err.0.contains("recursion limit"), "{err}");
        let big = received("x", &props, b"[1,2,3]").parse(3).unwrap_err();
        assert!(big.0.contains("over the limit"), "{big}");
        let no_type = received("", &props, b"{}").parse(10).unwrap_err();
        assert!(no_type.0.contains("no event type"), "{no_type}");
    }
}
