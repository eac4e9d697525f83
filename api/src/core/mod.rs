//! Plain values and rules, with no database, no GraphQL and no I/O: a step as
//! a run sees it, approval rules, conditions, prompt rendering, cron
//! schedules and data limits. Every layer above may use them.

pub mod condition;
pub mod cron;
pub mod definition;
pub mod limits;
pub mod prompt;
