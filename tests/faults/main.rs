//! The fault suite, a binary of its own because it is slow: faults injected
//! through TCP proxies the tests control (`faults`), the load test with a
//! private RabbitMQ node (`load`), and a private three-node cluster losing
//! the node that leads the queue (`cluster`). `cargo test` runs it with the rest;
//! `cargo test --test faults` runs it alone.

// The fault suite uses a subset of the shared helpers. The `it` binary
// compiles them with no dead-code allowance, which proves none is dead.
#[allow(dead_code, unused_imports)]
#[path = "../common/mod.rs"]
mod common;

mod broker;
mod cluster;
mod proxy;

mod faults;
mod load;
mod partitions;
