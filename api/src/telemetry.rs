//! Logging: `tracing` to stdout, as text or one JSON object per line
//! (`LOG_FORMAT`), filtered by `RUST_LOG`. Spans carry the request id (`http`)
//! and the GraphQL operation (`graphql`), so every line of a request has them.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn,tower_http=warn";

/// Installs the global subscriber (once per process); `default_filter`
/// applies when `RUST_LOG` is not set.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
