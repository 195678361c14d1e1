//! The id of a replay plan, one type wherever it goes: the plan file's
//! header, the run record, the ledger's parked rows, the outbox's label and
//! the `x-replay-plan` header of a republished message.
//!
//! It is a uuid and prints as one (hyphenated, lowercase), in JSON too, so
//! files, reports and headers read exactly as before it had a type. It maps
//! to a `uuid` column (`store::runs` binds it as is; the ledger's functions
//! still take its [`PlanId::as_uuid`]); where the id is stored or compared as
//! text (the outbox's label, the ledger's match of a message to its parked
//! row), that table's module binds its `to_string()`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A replay plan's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct PlanId(Uuid);

impl PlanId {
    /// A new plan's id (uuid v4).
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The uuid itself, for what derives ids from it or binds it by hand.
    pub fn as_uuid(self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for PlanId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for PlanId {
    /// Hyphenated lowercase, as `Uuid` prints: what the header and the text columns hold.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for PlanId {
    type Err = uuid::Error;

    /// Any form a uuid is written in; [`crate::wire::envelope`] is stricter
    /// with the header.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_serializes_as_the_uuid_it_is() {
        let uuid = Uuid::parse_str("0b6c7f7e-3d0a-4a53-9a43-2f5a1f0e9c11").unwrap();
        let id = PlanId::from(uuid);
        assert_eq!(id.to_string(), uuid.to_string());
        assert_eq!(serde_json::to_value(id).unwrap(), serde_json::json!(uuid.to_string()));
        assert_eq!(serde_json::from_value::<PlanId>(serde_json::json!(uuid)).unwrap(), id);
        assert_eq!(uuid.to_string().parse::<PlanId>().unwrap(), id);
    }
}
