//! Builds a fresh world per test: the database `#[sqlx::test]` made, an
//! exchange and queue with a unique suffix on the shared RabbitMQ, workers in
//! process or as spawned binaries, and waits on real outcomes.
//!
//! One file per concern: `world` (the [`World`], its set-up, the binaries run
//! against it, its waits and assertions), `events` (event builders),
//! `process` (the probed binary, spawned processes' output and signals),
//! `http` (health endpoints, free ports), `console` (the console served
//! in process, tokens of each role, API calls), `browser` (headless
//! Chromium over WebDriver, for the console's pages), `desk` (one test's plans and
//! backups), `postgres` (a private
//! Postgres server, for a second server), `proxy` (a TCP proxy for injected faults) and `probe` (the
//! effect probe, also compiled into `examples/probed_replay.rs`). Everything
//! is re-exported here, so a test reads `use crate::common::*`.

mod browser;
mod console;
mod desk;
mod events;
mod http;
mod postgres;
mod probe;
mod process;
mod proxy;
mod world;

pub use browser::*;
pub use console::*;
pub use desk::*;
pub use events::*;
pub use http::*;
pub use postgres::*;
pub use process::*;
pub use proxy::*;
pub use world::*;
