//! Pages of rows: `pageInfo`, Relay connections, cursors and what a page
//! costs in the complexity limit.

use async_graphql::SimpleObject;

use crate::domain::pagination::{DEFAULT_PAGE, MAX_PAGE};
use crate::error::ApiError;

/// A page costs its fields once per row it may hold (`first`, default 20; a
/// `first` over 100 is refused when the field runs, so it counts as 100).
pub(crate) fn page_complexity(first: Option<i32>, child_complexity: usize) -> usize {
    let rows = first.map_or(DEFAULT_PAGE, |n| n.clamp(1, MAX_PAGE as i32) as u64) as usize;
    rows.saturating_mul(child_complexity).saturating_add(1)
}

/// `pageInfo` of a page of rows with these cursors.
impl PageInfo {
    pub fn of<T>(page: &crate::domain::pagination::Page<T>, cursors: &[String]) -> Self {
        Self {
            has_next_page: page.has_next_page,
            has_previous_page: page.has_previous_page,
            start_cursor: cursors.first().cloned(),
            end_cursor: cursors.last().cloned(),
        }
    }
}

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

impl PageInfo {
    /// The `pageInfo` of a page with no rows.
    pub fn empty(has_previous_page: bool) -> Self {
        Self {
            has_next_page: false,
            has_previous_page,
            start_cursor: None,
            end_cursor: None,
        }
    }
}

/// Relay connection over a page of rows; `totalCount` runs its COUNT only
/// when a client asks for it.
macro_rules! connection {
    ($conn:ident, $edge:ident, $node:ident, $list:ident, $count:path) => {
        #[derive(SimpleObject)]
        pub struct $edge {
            pub cursor: String,
            pub node: $node,
        }

        pub struct $conn {
            pub(crate) nodes: Vec<$node>,
            pub(crate) cursors: Vec<String>,
            pub(crate) page_info: PageInfo,
            pub(crate) count_condition: Option<Condition>,
        }

        #[Object]
        impl $conn {
            async fn edges(&self) -> Vec<$edge> {
                self.nodes
                    .iter()
                    .zip(&self.cursors)
                    .map(|(n, c)| $edge {
                        cursor: c.clone(),
                        node: n.clone(),
                    })
                    .collect()
            }
            async fn nodes(&self) -> $list<$node> {
                self.nodes.iter().map(Clone::clone).collect::<Vec<_>>().into()
            }
            async fn page_info(&self) -> &PageInfo {
                &self.page_info
            }
            async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
                let Some(cond) = self.count_condition.clone() else {
                    return Ok(0);
                };
                let r = ctx.data_unchecked::<RequestCtx>();
                Ok($count(&r.db, cond).await.map_err(ApiError::from)? as i64)
            }
        }
    };
}

pub(crate) use connection;

pub(crate) fn version_cursor(version: i32) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("version:{version}"))
}

pub(crate) fn decode_version_cursor(s: &str) -> Result<i32, ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_input("after: not a cursor returned by this API");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    raw.strip_prefix("version:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)
}
