//! The integration tests, one binary: a module per area, each test against
//! the real `replay` binary or library, a fresh database and its own broker
//! names (see `common`). One binary compiles and links once; the slow fault
//! suite is the `faults` binary, so `cargo test --test it` runs these alone.

#[path = "../common/mod.rs"]
mod common;

mod apply;
mod approval;
mod audit;
mod backup;
mod browser;
mod canary;
mod console;
mod destination;
mod emergency;
mod ledger;
mod monitoring;
mod notify;
mod operate;
mod ordering;
mod partitions;
mod pause;
mod plan;
mod process;
mod rehearse;
mod scale;
mod sessions;
mod worker;
