//! Replays: selecting ledger rows (`selector`), the sealed plan file an
//! operator reads (`plan`), making a plan from a request and showing it
//! (`planning`, shared by `replay plan` and the console), the domain
//! workflows a plan may carry (`workflows`) and applying a plan (`apply`).

pub mod apply;
pub mod plan;
pub mod planning;
pub mod selector;
pub mod workflows;
