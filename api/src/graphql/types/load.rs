//! What every resolver shares: loading related rows, and times in UTC.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::error::ApiError;
use crate::graphql::loaders::LoadError;

pub(crate) fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

pub(crate) fn load_err(e: LoadError) -> async_graphql::Error {
    ApiError::Internal(format!("loading related rows failed: {e}")).into()
}

pub(crate) fn missing(what: &str, id: &str) -> async_graphql::Error {
    ApiError::Internal(format!("{what} {id} is referenced but missing")).into()
}
