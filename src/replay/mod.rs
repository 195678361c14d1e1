//! Replays: selecting ledger rows (`selector`), the sealed plan file an
//! operator reads (`plan`), making a plan from a request and showing it
//! (`planning`, shared by `replay plan` and the console), the domain
//! workflows a plan may carry (`workflows`), applying a plan (`apply`),
//! rehearsing one on a scratch copy of the database (`rehearse`) and
//! how far its replay got (`progress`, shared by `replay status` and the
//! console).

pub mod apply;
pub mod plan;
pub mod planning;
pub mod progress;
pub mod rehearse;
pub mod selector;
pub mod workflows;
