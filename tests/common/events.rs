//! Builders for the cooperative's events, one per event type the tests
//! publish most, and a workload of many.

use chrono::{DateTime, Utc};
use replay::wire::envelope::Event;
use serde_json::{json, Value};
use uuid::Uuid;

/// Builders for the cooperative's events.
pub fn event(event_type: &str, payload: Value) -> Event {
    event_at(event_type, payload, Utc::now())
}

pub fn event_at(event_type: &str, payload: Value, at: DateTime<Utc>) -> Event {
    Event::new(Uuid::new_v4().to_string(), event_type.to_string(), at, payload).expect("storable payload")
}

pub fn period_opened(period: Uuid) -> Event {
    event("period.opened", json!({"period_id": period, "start_date": "2026-01-01", "end_date": "2026-03-31"}))
}

pub fn submitted(contribution: Uuid, member: Uuid, period: Uuid, amount: u32) -> Event {
    event(
        "contribution.submitted",
        json!({"contribution_id": contribution, "member_id": member, "period_id": period, "type": "labor", "amount": amount}),
    )
}

pub fn approved(contribution: Uuid) -> Event {
    event("contribution.approved", json!({"contribution_id": contribution}))
}

/// The approval of a contribution of `period`, naming the period as a
/// producer does for the partition key (it read the contribution to decide it).
pub fn approved_in(contribution: Uuid, period: Uuid) -> Event {
    event("contribution.approved", json!({"contribution_id": contribution, "period_id": period}))
}

/// A period, then `n` contributions, each approved: 2n + 1 events.
pub fn workload(n: usize) -> (Vec<replay::wire::envelope::Event>, Uuid) {
    let period = Uuid::new_v4();
    let mut events = vec![period_opened(period)];
    let member = Uuid::new_v4();
    for _ in 0..n {
        let contribution = Uuid::new_v4();
        events.push(submitted(contribution, member, period, 3));
        events.push(approved(contribution));
    }
    (events, period)
}

/// Periods published back to back, as a producer closes them: each opened,
/// `n` contributions over a few members submitted, then all approved, then
/// the close. Amounts differ, so a close that misses one approval is seen.
pub fn closing_periods(periods: usize, n: usize) -> (Vec<Event>, Vec<Uuid>) {
    let mut events = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..periods {
        let period = Uuid::new_v4();
        ids.push(period);
        let members: Vec<Uuid> = (0..7).map(|_| Uuid::new_v4()).collect();
        events.push(period_opened(period));
        let contributions: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        for (i, c) in contributions.iter().enumerate() {
            events.push(submitted(*c, members[i % members.len()], period, 1 + (i % 50) as u32));
        }
        events.extend(contributions.iter().map(|c| approved_in(*c, period)));
        events.push(event("period.close", json!({"period_id": period})));
    }
    (events, ids)
}
