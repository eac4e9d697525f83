//! The GraphQL schema: object types, resolvers (thin: check access, call the
//! domain, map the result), DataLoaders, and the per-request context.

pub mod inputs;
pub mod loaders;
pub mod mutation;
pub mod query;
pub mod subscription;
pub mod types;

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ErrorExtensions, Schema, ServerError, ServerResult, ValidationResult, Variables};
use sea_orm::DatabaseConnection;

use crate::access::Access;
use crate::auth::Viewer;
use crate::engine::agents::AgentRegistry;
use crate::engine::runner::Engine;
use loaders::Loaders;

pub type AppSchema = Schema<query::Query, mutation::Mutation, subscription::Subscription>;

/// Shared by every request: put into the schema once.
pub struct SchemaData {
    pub db: DatabaseConnection,
    pub agents: Arc<AgentRegistry>,
    pub engine: Arc<Engine>,
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

pub fn build_schema(data: Option<SchemaData>) -> AppSchema {
    let mut builder = Schema::build(query::Query, mutation::Mutation, subscription::Subscription).extension(ErrorCodes);
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
/// `GRAPHQL_PARSE_FAILED` or `GRAPHQL_VALIDATION_FAILED`.
struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExt)
    }
}

struct ErrorCodesExt;

fn with_code(err: ServerError, code: &'static str) -> ServerError {
    let mut err = err;
    let has_code = err.extensions.as_ref().is_some_and(|e| e.get("code").is_some());
    if !has_code {
        let e = async_graphql::Error::new(err.message.clone()).extend_with(|_, ext| ext.set("code", code));
        err.extensions = e.extensions;
    }
    err
}

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
}
