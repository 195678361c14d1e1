//! Contributions: `contribution.submitted`, `.approved`, `.rejected`. These are
//! the bulk of the traffic, so each applies a whole run of events in one
//! set-based statement. All SQL on `contributions` and `members` lives here.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{payload, payload_period_key, period_key, Handler, HandlerError, Keys, Outcomes};
use crate::wire::envelope::Event;

pub(super) fn handlers() -> Vec<Arc<dyn Handler>> {
    vec![
        Arc::new(Submitted),
        Arc::new(Decided { event_type: "contribution.approved", to: "approved" }),
        Arc::new(Decided { event_type: "contribution.rejected", to: "rejected" }),
    ]
}

#[derive(Deserialize)]
struct SubmittedPayload {
    contribution_id: Uuid,
    member_id: Uuid,
    period_id: Uuid,
    #[serde(rename = "type")]
    kind: String,
    amount: serde_json::Number,
}

#[derive(Deserialize)]
struct DecidedPayload {
    contribution_id: Uuid,
    #[serde(default)]
    reason: Option<String>,
}

/// Parses every payload, keeping the outcome slot of the ones that fail.
fn parse_all<T: serde::de::DeserializeOwned>(
    events: &[&Event],
    check: impl Fn(&T) -> Result<(), HandlerError>,
) -> (Outcomes, Vec<(usize, T)>) {
    let mut outcomes = vec![Ok(()); events.len()];
    let mut valid = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        match payload::<T>(event).and_then(|p| check(&p).map(|()| p)) {
            Ok(p) => valid.push((i, p)),
            Err(e) => outcomes[i] = Err(e),
        }
    }
    (outcomes, valid)
}

struct Submitted;

#[async_trait]
impl Handler for Submitted {
    fn event_type(&self) -> &'static str {
        "contribution.submitted"
    }

    async fn sequence_keys(&self, _conn: &mut PgConnection, events: &[&Event]) -> Result<Keys, sqlx::Error> {
        Ok(events.iter().map(|event| payload_period_key(event)).collect())
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[&Event]) -> Result<Outcomes, sqlx::Error> {
        let (mut outcomes, valid) = parse_all::<SubmittedPayload>(events, |p| {
            if p.amount.as_f64().is_some_and(|a| a >= 0.0) {
                Ok(())
            } else {
                Err(HandlerError::Invalid(format!("amount {} is not a non-negative number", p.amount)))
            }
        });
        if valid.is_empty() {
            return Ok(outcomes);
        }
        let ids: Vec<Uuid> = valid.iter().map(|(_, p)| p.contribution_id).collect();
        let members: Vec<Uuid> = valid.iter().map(|(_, p)| p.member_id).collect();
        let periods: Vec<Uuid> = valid.iter().map(|(_, p)| p.period_id).collect();
        let kinds: Vec<&str> = valid.iter().map(|(_, p)| p.kind.as_str()).collect();
        // As text, so Postgres parses the decimal exactly.
        let amounts: Vec<String> = valid.iter().map(|(_, p)| p.amount.to_string()).collect();
        let ats: Vec<_> = valid.iter().map(|(i, _)| events[*i].occurred_at).collect();
        // A contribution whose period is unknown is left out (and retried);
        // one that exists already is a replay and stays as it is.
        let inserted: HashSet<Uuid> = sqlx::query_scalar(
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[])
                     AS x(id, member_id, period_id, kind, amount, at)
             ), placed AS (
                 SELECT i.* FROM input i WHERE EXISTS (SELECT 1 FROM allocation_periods p WHERE p.id = i.period_id)
             ), joined AS (
                 INSERT INTO members (id, joined_at)
                 SELECT DISTINCT ON (member_id) member_id, at FROM placed ORDER BY member_id, at
                 ON CONFLICT (id) DO NOTHING
             )
             INSERT INTO contributions (id, member_id, period_id, kind, amount, status, submitted_at)
             SELECT id, member_id, period_id, kind, amount::numeric, 'submitted', at FROM placed
             ON CONFLICT (id) DO NOTHING
             RETURNING id",
        )
        .bind(&ids)
        .bind(&members)
        .bind(&periods)
        .bind(&kinds)
        .bind(&amounts)
        .bind(&ats)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        // Not inserted: either a replay of a contribution that exists, or one
        // whose period is unknown yet. Only then is a second look needed.
        let missing: Vec<Uuid> = ids.iter().filter(|id| !inserted.contains(id)).copied().collect();
        let present: HashSet<Uuid> = if missing.is_empty() {
            HashSet::new()
        } else {
            sqlx::query_scalar("SELECT id FROM contributions WHERE id = ANY($1)")
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect()
        };
        for (i, p) in &valid {
            if !inserted.contains(&p.contribution_id) && !present.contains(&p.contribution_id) {
                outcomes[*i] = Err(HandlerError::NotReady(format!(
                    "period {} does not exist yet (no period.opened processed)",
                    p.period_id
                )));
            }
        }
        Ok(outcomes)
    }
}

/// Approval and rejection: a decision on a submitted contribution. Deciding
/// the same way again is a replay and changes nothing; deciding the other way
/// is refused.
struct Decided {
    event_type: &'static str,
    to: &'static str,
}

#[async_trait]
impl Handler for Decided {
    fn event_type(&self) -> &'static str {
        self.event_type
    }

    /// A decision belongs to its contribution's period. A contribution not
    /// submitted yet has no known period: its decision is not ready
    /// (waiting), which holds nothing behind it.
    async fn sequence_keys(&self, conn: &mut PgConnection, events: &[&Event]) -> Result<Keys, sqlx::Error> {
        let (_, valid) = parse_all::<DecidedPayload>(events, |_| Ok(()));
        let ids: Vec<Uuid> = valid.iter().map(|(_, p)| p.contribution_id).collect();
        let periods: std::collections::HashMap<Uuid, Uuid> =
            sqlx::query_as::<_, (Uuid, Uuid)>("SELECT id, period_id FROM contributions WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect();
        let mut keys = vec![None; events.len()];
        for (i, p) in &valid {
            keys[*i] = periods.get(&p.contribution_id).copied().map(period_key);
        }
        Ok(keys)
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[&Event]) -> Result<Outcomes, sqlx::Error> {
        let (mut outcomes, valid) = parse_all::<DecidedPayload>(events, |_| Ok(()));
        if valid.is_empty() {
            return Ok(outcomes);
        }
        let ids: Vec<Uuid> = valid.iter().map(|(_, p)| p.contribution_id).collect();
        let ats: Vec<_> = valid.iter().map(|(i, _)| events[*i].occurred_at).collect();
        let reasons: Vec<Option<String>> = valid.iter().map(|(_, p)| p.reason.clone()).collect();
        sqlx::query(
            "UPDATE contributions c
                SET status = $4,
                    decided_at = COALESCE(c.decided_at, d.at),
                    rejection_reason = CASE WHEN $4 = 'rejected' THEN COALESCE(c.rejection_reason, d.reason) END
               FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS d(id, at, reason)
              WHERE c.id = d.id AND c.status IN ('submitted', $4)",
        )
        .bind(&ids)
        .bind(&ats)
        .bind(&reasons)
        .bind(self.to)
        .execute(&mut *conn)
        .await?;
        let states: std::collections::HashMap<Uuid, String> =
            sqlx::query_as::<_, (Uuid, String)>("SELECT id, status FROM contributions WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect();
        for (i, p) in &valid {
            outcomes[*i] = match states.get(&p.contribution_id) {
                Some(status) if status == self.to => Ok(()),
                Some(status) => Err(HandlerError::Refused(format!(
                    "contribution {} is already {status}; it cannot become {}",
                    p.contribution_id, self.to
                ))),
                None => Err(HandlerError::NotReady(format!(
                    "contribution {} has not been submitted yet",
                    p.contribution_id
                ))),
            };
        }
        Ok(outcomes)
    }
}
