//! `replay`: an event-sourcing replay engine on RabbitMQ and Postgres.
//! See ARCHITECTURE.md for the map of the modules.

pub mod apply;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod database;
pub mod dead_letters;
pub mod emergency;
pub mod envelope;
pub mod exit;
pub mod handlers;
pub mod health;
pub mod heartbeats;
pub mod ledger;
pub mod metrics;
pub mod outbox;
pub mod pause;
pub mod plan;
pub mod publisher;
pub mod runs;
pub mod selector;
pub mod telemetry;
pub mod topology;
pub mod transport;
pub mod worker;
pub mod workflows;
