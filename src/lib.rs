//! `replay`: an event-sourcing replay engine on RabbitMQ and Postgres.
//! See ARCHITECTURE.md for the map of the modules.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod control;
pub mod exit;
pub mod handlers;
pub mod replay;
pub mod store;
pub mod telemetry;
pub mod wire;
pub mod worker;
