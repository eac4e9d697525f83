//! The workflows server: multi-step AI agent workflows over GraphQL.
//!
//! Layers, from the bottom up; a module uses only its own layer and those
//! below it (`tests/layers.rs` checks this, and that no modules import each
//! other around a circle):
//!
//! - `config`, `error`, `telemetry`: settings, the error type, logging;
//! - `core`: plain values and rules (no I/O);
//! - `auth`, `db`, `metrics`, `events`: tokens, the pool, metrics, the event bus;
//! - `domain`: reads and writes of the tables, and who may do what;
//! - `engine`: runs (the runner, agents, the relay between instances);
//! - `jobs`: schedules and retention;
//! - `graphql`: the API's shape (types, resolvers, loaders, admission, fan-out);
//! - `http`: the router, WebSocket and GraphiQL.

pub mod auth;
pub mod clock;
pub mod config;
pub mod core;
pub mod db;
pub mod domain;
pub mod engine;
pub mod error;
pub mod events;
pub mod graphql;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod telemetry;
