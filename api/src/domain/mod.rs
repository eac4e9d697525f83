//! Plain service functions over `&impl ConnectionTrait`: what the API does to
//! the data, independent of GraphQL. Callers check access first (`access.rs`).

pub mod access;
pub mod approvals;
pub mod demo;
pub mod drives;
pub mod executions;
pub mod nested;
pub mod pagination;
pub mod schedules;
pub mod stats;
pub mod step_rows;
pub mod steps;
pub mod templates;
pub mod users;
pub mod validation;
pub mod versions;

/// A new CUID2 id.
pub fn new_id() -> String {
    cuid2::create_id()
}

pub use crate::clock::now;
