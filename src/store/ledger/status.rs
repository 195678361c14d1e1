//! A ledger row's status as a type. A leaf: the selector (which does no
//! I/O) names it without reaching into the ledger's queries.

/// A ledger row's status, stored as its lowercase name (the table's CHECK
/// constraint lists the same five).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type, serde::Serialize, serde::Deserialize,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Processing,
    Processed,
    Error,
    Skipped,
}

impl Status {
    /// Every status, in the order a row moves through them.
    pub const ALL: [Status; 5] = [Self::Pending, Self::Processing, Self::Processed, Self::Error, Self::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Processed => "processed",
            Self::Error => "error",
            Self::Skipped => "skipped",
        }
    }

    /// Reads a status by its name, as an operator types it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
