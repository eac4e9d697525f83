//! One tracing span per GraphQL operation (name, type, outcome, duration),
//! one log line when it ends, and the request metrics.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Request, Response, ServerResult, Variables};
use tracing::Instrument;
use tracing::field::Empty;

use crate::metrics::Metrics;

pub struct Observe {
    pub metrics: Option<Arc<Metrics>>,
}

impl ExtensionFactory for Observe {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ObserveExt {
            metrics: self.metrics.clone(),
            requested: Mutex::new(None),
            operation: Mutex::new(None),
        })
    }
}

struct ObserveExt {
    metrics: Option<Arc<Metrics>>,
    /// The request's `operationName`, if given.
    requested: Mutex<Option<String>>,
    /// Name and type of the operation, once the document is parsed.
    operation: Mutex<Option<(Option<String>, &'static str)>>,
}

/// The code of the first error, or `ok`.
pub fn outcome(resp: &Response) -> String {
    match resp.errors.first() {
        None => "ok".into(),
        Some(e) => e
            .extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .and_then(|c| match c {
                async_graphql::Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "INTERNAL_SERVER_ERROR".into()),
    }
}

#[async_trait::async_trait]
impl Extension for ObserveExt {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let span = tracing::info_span!(
            "graphql",
            operation = Empty,
            kind = Empty,
            outcome = Empty,
            duration_ms = Empty
        );
        let started = Instant::now();
        let resp = next.run(ctx).instrument(span.clone()).await;
        let took = started.elapsed();
        let (name, kind) = self
            .operation
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or((None, "unknown"));
        let outcome = outcome(&resp);
        let label = match &self.metrics {
            Some(m) => m.operation_label(name.as_deref()),
            None => name.clone().unwrap_or_else(|| "anonymous".into()),
        };
        span.record("operation", label.as_str());
        span.record("kind", kind);
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
        if let Some(m) = &self.metrics {
            m.request(&label, &outcome, took);
        }
        resp
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        self.requested.lock().expect("lock").clone_from(&request.operation_name);
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let requested = self.requested.lock().expect("lock").clone();
        let op = doc.operations.iter().find(|(name, _)| match (&requested, name) {
            (Some(want), Some(n)) => n.as_str() == want,
            (Some(_), None) => false,
            (None, _) => true,
        });
        if let Some((name, op)) = op {
            let kind = match op.node.ty {
                OperationType::Query => "query",
                OperationType::Mutation => "mutation",
                OperationType::Subscription => "subscription",
            };
            *self.operation.lock().expect("lock") = Some((name.map(|n| n.to_string()), kind));
        }
        Ok(doc)
    }
}
