//! The GraphQL schema: object types, resolvers (thin: check access, call the
//! domain, map the result), DataLoaders, and the per-request context.

pub mod inputs;
pub mod loaders;
pub mod mutation;
mod observe;
pub mod query;
pub mod subscription;
pub mod types;

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Schema, ServerError, ServerResult, ValidationResult, Variables};
use sea_orm::DatabaseConnection;

use crate::access::Access;
use crate::auth::Viewer;
use crate::config::Limits;
use crate::engine::agents::AgentRegistry;
use crate::engine::runner::Engine;
use crate::limits::{DataLimits, QueryLimits, with_code};
use crate::metrics::Metrics;
use loaders::Loaders;

pub type AppSchema = Schema<query::Query, mutation::Mutation, subscription::Subscription>;

/// Shared by every request: put into the schema once.
pub struct SchemaData {
    pub db: DatabaseConnection,
    pub agents: Arc<AgentRegistry>,
    pub engine: Arc<Engine>,
    pub limits: DataLimits,
}

/// One request's viewer, permissions and loaders.
pub struct RequestCtx {
    pub viewer: Viewer,
    pub access: Access,
    pub loaders: Loaders,
    pub db: DatabaseConnection,
}

impl RequestCtx {
    /// `cache_rows`: see `Loaders::new`.
    pub fn new(db: &DatabaseConnection, viewer: Viewer, access: Access, cache_rows: bool) -> Self {
        Self {
            viewer,
            access,
            loaders: Loaders::new(db, cache_rows),
            db: db.clone(),
        }
    }
}

/// The schema with the default limits and no metrics.
pub fn build_schema(data: Option<SchemaData>) -> AppSchema {
    build_schema_with(data, &Limits::default(), None)
}

/// The schema with the operation limits of `limits`; `metrics` counts and
/// times every operation (and each gets a tracing span either way).
pub fn build_schema_with(data: Option<SchemaData>, limits: &Limits, metrics: Option<Arc<Metrics>>) -> AppSchema {
    // Extensions wrap in order: the observer sees every outcome, the limits
    // run before the schema's own validation, and ErrorCodes gives whatever
    // is left without a code its code.
    let mut builder = Schema::build(query::Query, mutation::Mutation, subscription::Subscription)
        .extension(observe::Observe { metrics })
        .extension(QueryLimits::from(limits))
        .extension(ErrorCodes);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    if let Some(data) = data {
        builder = builder.data(data);
    }
    builder.finish()
}

/// The SDL that `workflows schema` writes to `schema.graphql`.
pub fn sdl() -> String {
    build_schema(None).sdl()
}

/// Gives requests refused before they run an `extensions.code`:
/// `GRAPHQL_PARSE_FAILED` or `GRAPHQL_VALIDATION_FAILED`; and errors that
/// async-graphql raises while running (a variable or argument that does not
/// fit its type) `BAD_USER_INPUT`. Resolver errors carry their own code.
struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExt)
    }
}

struct ErrorCodesExt;

#[async_trait::async_trait]
impl Extension for ErrorCodesExt {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, "GRAPHQL_PARSE_FAILED"))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errs| {
            errs.into_iter()
                .map(|e| with_code(e, "GRAPHQL_VALIDATION_FAILED"))
                .collect()
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        let mut resp = next.run(ctx, operation_name).await;
        resp.errors = std::mem::take(&mut resp.errors)
            .into_iter()
            .map(|e| with_code(e, "BAD_USER_INPUT"))
            .collect();
        resp
    }
}
