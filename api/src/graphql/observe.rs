//! Runs one query or mutation the way every HTTP request is run: checked and
//! parsed first (`QueryLimits::admit`), executed in a tracing span (name,
//! type, outcome, duration), its uncoded errors given their code, one log
//! line when it ends, and the request metrics.
//!
//! This is done around the schema rather than as an async-graphql extension:
//! with any extension installed, async-graphql resolves every field through
//! its extension chain, which costs more than the field itself.

use std::time::Instant;

use async_graphql::{Request, Response};
use tracing::Instrument;
use tracing::field::Empty;

use super::AppSchema;
use crate::error::Code;
use crate::graphql::admission::{Admitted, QueryLimits};
use crate::metrics::Metrics;

/// The code of the first error, or `ok`.
pub fn outcome(resp: &Response) -> String {
    match resp.errors.first() {
        None => "ok".into(),
        Some(e) => crate::error::code_of(e)
            .unwrap_or(Code::InternalServerError.as_str())
            .to_owned(),
    }
}

/// Checks, runs, codes, logs and counts one request.
pub async fn execute(
    schema: &AppSchema,
    limits: &QueryLimits,
    metrics: Option<&Metrics>,
    mut request: Request,
    request_id: Option<&str>,
) -> Response {
    let span = tracing::info_span!(
        "graphql",
        operation = Empty,
        kind = Empty,
        outcome = Empty,
        duration_ms = Empty
    );
    let started = Instant::now();
    let (admitted, resp) = match limits.admit(&mut request) {
        Ok(admitted) => {
            let mut resp = schema.execute(request).instrument(span.clone()).await;
            limits.code_errors(&mut resp.errors, request_id);
            (admitted, resp)
        }
        Err(e) => (Admitted::default(), Response::from_errors(vec![e])),
    };
    let took = started.elapsed();
    let outcome = outcome(&resp);
    let label = match metrics {
        Some(m) => m.operation_label(admitted.name.as_deref()),
        None => admitted.name.clone().unwrap_or_else(|| "anonymous".into()),
    };
    span.record("operation", label.as_str());
    span.record(
        "kind",
        if admitted.kind.is_empty() {
            "unknown"
        } else {
            admitted.kind
        },
    );
    span.record("outcome", outcome.as_str());
    span.record("duration_ms", took.as_secs_f64() * 1000.0);
    span.in_scope(|| {
        if resp.errors.is_empty() {
            tracing::info!("graphql operation finished");
        } else {
            let first = resp.errors.first().map(|e| e.message.as_str()).unwrap_or_default();
            tracing::info!(error = first, "graphql operation failed");
        }
    });
    if let Some(m) = metrics {
        m.request(&label, &outcome, took);
    }
    resp
}
