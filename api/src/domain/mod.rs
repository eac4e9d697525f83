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

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, NaiveDateTime, Utc};

/// A new CUID2 id.
pub fn new_id() -> String {
    cuid2::create_id()
}

static LAST_MICROS: AtomicI64 = AtomicI64::new(0);

/// The current time in UTC at microsecond precision, strictly increasing
/// within this process, so "newest first" has no ties among rows one server
/// wrote (and both databases store the same value).
pub fn now() -> NaiveDateTime {
    let wall = Utc::now().timestamp_micros();
    let mut last = LAST_MICROS.load(Ordering::Relaxed);
    loop {
        let next = wall.max(last + 1);
        match LAST_MICROS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                return DateTime::from_timestamp_micros(next).unwrap_or_default().naive_utc();
            }
            Err(seen) => last = seen,
        }
    }
}
