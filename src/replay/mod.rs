//! Replays: selecting ledger rows (`selector`), the sealed plan file an
//! operator reads (`plan`), the domain workflows a plan may carry
//! (`workflows`) and applying a plan (`apply`).

pub mod apply;
pub mod plan;
pub mod selector;
pub mod workflows;
