//! Background work beside the runs: schedules that start runs when they
//! are due, and the retention sweep.

pub mod retention;
pub mod scheduler;
pub mod stats_fold;
