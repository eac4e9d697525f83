//! Running executions: prompt rendering, conditions and the agents that steps
//! call; the scheduler that starts runs of schedules when they come due.

pub mod agents;
pub mod relay;
pub mod rollup;
pub mod runner;
pub mod state;
