//! Running executions: prompt rendering, conditions and the agents that steps call.

pub mod agents;
pub mod condition;
pub mod definition;
pub mod prompt;
pub mod relay;
pub mod rollup;
pub mod runner;
pub mod state;
