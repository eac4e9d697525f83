//! What every request handler shares: the application state.

use crate::auth::{JwtKeys, Viewer};
use crate::config::Limits;
use crate::db::StatementCounter;
use crate::domain::access::Access;
use crate::domain::users;
use crate::engine::agents::AgentRegistry;
use crate::engine::runner::Engine;
use crate::error::ApiError;
use crate::graphql::admission::QueryLimits;
use crate::graphql::fanout;
use crate::graphql::{AppSchema, RequestCtx};
use crate::jobs::retention::Retention;
use crate::jobs::scheduler::Scheduler;
use crate::jobs::stats_fold::StatsFold;
use crate::metrics::Metrics;
use sea_orm::DatabaseConnection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The name and email a user's token last carried.
type KnownClaims = (Option<String>, Option<String>);

/// Everything a request handler needs, shared by all of them.
pub struct AppState {
    pub db: DatabaseConnection,
    pub statements: Arc<StatementCounter>,
    pub keys: JwtKeys,
    pub schema: AppSchema,
    pub agents: Arc<AgentRegistry>,
    pub engine: Arc<Engine>,
    /// Fires due schedules (its background loop runs unless SCHEDULE_POLL_MS is 0).
    pub scheduler: Arc<Scheduler>,
    /// Cancelled when the server shuts down: WebSocket connections close.
    pub closing: tokio_util::sync::CancellationToken,
    /// Set when no `JWT_SECRET` was given: a token for the demo user,
    /// prefilled in GraphiQL.
    pub demo_token: Option<String>,
    pub limits: Limits,
    /// The operation limits every request is checked against before it runs.
    pub query_limits: QueryLimits,
    pub metrics: Arc<Metrics>,
    /// Deletes finished executions past `RETENTION_DAYS` (`sweep_now` runs one sweep).
    pub retention: Arc<Retention>,
    /// Folds finished runs' statistics into the hourly roll-ups (`fold_now` runs one fold).
    pub stats_fold: Arc<StatsFold>,
    /// Browser origins allowed by CORS (none: no CORS headers).
    pub cors_origins: Vec<String>,
    /// WebSocket connections per user.
    pub ws_connections: Arc<ConnectionCounts>,
    /// Subscriptions that share one rendering per event.
    pub fanout: Arc<fanout::Hub>,
    /// Claims last written to `users`, so a request whose token says nothing
    /// new skips the upsert.
    pub(super) known_users: Mutex<HashMap<String, KnownClaims>>,
}

impl AppState {
    /// Creates or updates the viewer's `users` row unless it is known to be current.
    pub async fn remember_user(&self, viewer: &Viewer) -> Result<(), ApiError> {
        let claims = (viewer.name.clone(), viewer.email.clone());
        let known = self.known_users.lock().expect("lock").get(&viewer.id) == Some(&claims);
        if !known {
            users::upsert(&self.db, viewer).await?;
            let mut cache = self.known_users.lock().expect("lock");
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(viewer.id.clone(), claims);
        }
        Ok(())
    }

    /// The request context of an authenticated viewer; `cache_rows` for one
    /// HTTP request (its memberships are read when a resolver first needs
    /// them), not for a long-lived WebSocket connection (read now: they
    /// name the connection's viewer for the subscriptions it shares).
    pub async fn request_ctx(&self, viewer: Viewer, cache_rows: bool) -> Result<RequestCtx, ApiError> {
        self.remember_user(&viewer).await?;
        let access = if cache_rows {
            None
        } else {
            Some(Access::new(
                viewer.id.clone(),
                users::memberships(&self.db, &viewer.id).await?,
            ))
        };
        Ok(RequestCtx::new(&self.db, viewer, access, cache_rows))
    }
}

/// Open connections per user, across the process.
#[derive(Default)]
pub struct ConnectionCounts(Mutex<HashMap<String, usize>>);

/// Holds one of a user's connection slots until dropped.
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    user: String,
}

impl ConnectionCounts {
    /// A slot for `user`, unless they already hold `max` connections.
    pub fn acquire(self: &Arc<Self>, user: &str, max: usize) -> Option<ConnectionSlot> {
        let mut map = self.0.lock().expect("connection counts lock");
        let n = map.entry(user.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            counts: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().expect("connection counts lock");
        if let Some(n) = map.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.user);
            }
        }
    }
}
