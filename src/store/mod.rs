//! The store: the Postgres pool and migrations, and one module per table
//! (the ledger, the audit log, dead letters, heartbeats, the outbox, replay
//! runs, the pause). All SQL on a table lives in its module.

pub mod audit;
pub mod database;
pub mod dead_letters;
pub mod heartbeats;
pub mod ledger;
pub mod outbox;
pub mod pause;
pub mod runs;
