//! The workflows server: multi-step AI agent workflows over GraphQL.

pub mod access;
pub mod app;
pub mod auth;
pub mod bench;
pub mod clock;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod error;
pub mod events;
pub mod fanout;
pub mod graphiql;
pub mod graphql;
pub mod limits;
pub mod metrics;
pub mod retention;
pub mod telemetry;
pub mod ws;
