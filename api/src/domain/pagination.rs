//! Relay cursors for lists ordered newest first by (`createdAt`, `id`).
//! The cursor is opaque to clients: base64 of the row's time and id.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDateTime};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};

use crate::error::ApiError;

pub const DEFAULT_PAGE: u64 = 20;
pub const MAX_PAGE: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: NaiveDateTime,
    pub id: String,
}

impl Cursor {
    pub fn encode(created_at: NaiveDateTime, id: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", created_at.and_utc().timestamp_micros(), id))
    }

    pub fn decode(s: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::bad_input("after: not a cursor returned by this API");
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (micros, id) = raw.split_once(':').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?.naive_utc();
        Ok(Self {
            created_at,
            id: id.to_owned(),
        })
    }
}

/// Validates `first` (default 20, 0..=100).
pub fn page_size(first: Option<i32>) -> Result<u64, ApiError> {
    match first {
        None => Ok(DEFAULT_PAGE),
        Some(n) if n < 0 => Err(ApiError::bad_input("first: must not be negative")),
        Some(n) if n as u64 > MAX_PAGE => Err(ApiError::bad_input(format!("first: may not exceed {MAX_PAGE}"))),
        Some(n) => Ok(n as u64),
    }
}

/// One page of rows plus what `pageInfo` needs.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub has_next_page: bool,
    pub has_previous_page: bool,
}

/// The page of `query` after `after`, newest first by (`created_at`, `id`):
/// keyset pagination, one query for `first` rows plus one to learn whether
/// there is a next page.
pub async fn newest_first<E: EntityTrait>(
    db: &impl ConnectionTrait,
    query: Select<E>,
    created_at: E::Column,
    id: E::Column,
    first: u64,
    after: Option<&Cursor>,
) -> Result<Page<E::Model>, DbErr> {
    let mut query = query;
    if let Some(c) = after.map(|c| older_than(created_at, id, c)) {
        query = query.filter(c);
    }
    let rows = query
        .order_by_desc(created_at)
        .order_by_desc(id)
        .limit(first + 1)
        .all(db)
        .await?;
    Ok(Page::of(rows, first, after))
}

/// The rows after cursor `c`, newest first by (`created_at`, `id`).
pub fn older_than<C: ColumnTrait>(created_at: C, id: C, c: &Cursor) -> Condition {
    Condition::any().add(created_at.lt(c.created_at)).add(
        Condition::all()
            .add(created_at.eq(c.created_at))
            .add(id.lt(c.id.clone())),
    )
}

impl<T> Page<T> {
    /// A page from up to `first + 1` rows read after `after`: the extra
    /// row only tells that there is a next page.
    pub fn of(mut rows: Vec<T>, first: u64, after: Option<&Cursor>) -> Self {
        let has_next_page = rows.len() as u64 > first;
        rows.truncate(first as usize);
        Page {
            rows,
            has_next_page,
            has_previous_page: after.is_some(),
        }
    }

    /// The same page with each row turned into another.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            rows: self.rows.into_iter().map(f).collect(),
            has_next_page: self.has_next_page,
            has_previous_page: self.has_previous_page,
        }
    }
}
