//! The GraphQL schema: object types, resolvers (thin: check access, call the
//! domain, map the result), DataLoaders, and the per-request context.

pub mod admission;
pub mod fanout;
pub mod inputs;
pub mod json;
pub mod loaders;
pub mod mutation;
pub mod observe;
pub mod query;
pub mod render;
pub mod subscription;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::Schema;
use entity::DriveRole;
use sea_orm::DatabaseConnection;
use tokio::sync::OnceCell;

use crate::auth::Viewer;
use crate::config::Limits;
use crate::core::limits::DataLimits;
use crate::domain::access::Access;
use crate::engine::agents::AgentRegistry;
use crate::engine::runner::Engine;
use crate::error::{ApiError, ApiResult};
use loaders::Loaders;

pub type AppSchema = Schema<query::Query, mutation::Mutation, subscription::Subscription>;

/// Shared by every request: put into the schema once.
pub struct SchemaData {
    pub db: DatabaseConnection,
    pub agents: Arc<AgentRegistry>,
    pub engine: Arc<Engine>,
    pub limits: DataLimits,
    /// `RETENTION_DAYS`: how far back `stats(since:)` is exact to the instant.
    pub retention_days: u32,
}

/// One request's viewer, permissions and loaders.
pub struct RequestCtx {
    pub viewer: Viewer,
    /// Loaded when a resolver first asks (`access`), or given by a resolver
    /// whose own statement read the memberships with its rows (`seed_access`),
    /// so a read such as the execution detail costs one statement in all.
    access: OnceCell<Access>,
    pub loaders: Loaders,
    pub db: DatabaseConnection,
}

impl RequestCtx {
    /// `access`: the viewer's permissions when already known, else loaded
    /// on first use. `cache_rows`: see `Loaders::new`.
    pub fn new(db: &DatabaseConnection, viewer: Viewer, access: Option<Access>, cache_rows: bool) -> Self {
        Self {
            viewer,
            access: OnceCell::new_with(access),
            loaders: Loaders::new(db, cache_rows),
            db: db.clone(),
        }
    }

    /// The viewer's role in each drive, read once per request.
    pub async fn access(&self) -> ApiResult<&Access> {
        self.access
            .get_or_try_init(|| async {
                let roles = crate::domain::users::memberships(&self.db, &self.viewer.id).await?;
                Ok::<_, ApiError>(Access::new(self.viewer.id.clone(), roles))
            })
            .await
    }

    /// Whether the memberships are loaded yet.
    pub fn has_access(&self) -> bool {
        self.access.initialized()
    }

    /// The memberships as a resolver's own statement read them; kept unless
    /// they were loaded already (or are being loaded by another field).
    pub async fn seed_access(&self, roles: HashMap<String, DriveRole>) -> ApiResult<&Access> {
        let _ = self.access.set(Access::new(self.viewer.id.clone(), roles));
        self.access().await
    }

    /// Whether the viewer sees the run: as `Access::can_see_execution` says,
    /// or as an approver of a step it awaits or awaited (its step records
    /// are read only then).
    pub async fn sees_execution(&self, e: &entity::workflow_execution::Model) -> crate::error::ApiResult<bool> {
        let access = self.access().await?;
        if access.can_see_execution(e) {
            return Ok(true);
        }
        if access.role(&e.drive_id).is_none() {
            return Ok(false);
        }
        let steps = crate::domain::executions::steps_of(&self.db, std::slice::from_ref(&e.id)).await?;
        Ok(access.can_see_execution_with_steps(e, &steps))
    }
}

/// The schema with the default limits.
pub fn build_schema(data: Option<SchemaData>) -> AppSchema {
    build_schema_with(data, &Limits::default())
}

/// The schema with the complexity limit and introspection setting of
/// `limits`. It has no extensions (they would slow down every field): the
/// other operation limits, error codes, spans and metrics are applied around
/// it, by `observe::execute` for HTTP and by `ws` for subscriptions.
pub fn build_schema_with(data: Option<SchemaData>, limits: &Limits) -> AppSchema {
    let mut builder = Schema::build(query::Query, mutation::Mutation, subscription::Subscription)
        .limit_complexity(limits.max_query_complexity);
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
