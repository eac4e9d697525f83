//! Builds the shared state and the HTTP router. `main.rs` and the tests build
//! the server the same way: `Application::build` binds (port 0 in tests).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::http::GraphiQLSource;
use async_graphql::{ErrorExtensions, ServerError};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::WebSocketUpgrade;
use axum::extract::ws::{CloseFrame, Message};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use sea_orm::DatabaseConnection;

use crate::access::Access;
use crate::auth::{JwtKeys, Viewer};
use crate::config::Config;
use crate::db::{self, StatementCounter};
use crate::domain::users;
use crate::engine::agents::AgentRegistry;
use crate::engine::runner::{Engine, EngineSettings};
use crate::error::ApiError;
use crate::events::EventBus;
use crate::graphql::{self, AppSchema, RequestCtx, SchemaData};

pub const DEMO_USER_ID: &str = "demo-user";

/// Everything a request handler needs, shared by all of them.
pub struct AppState {
    pub db: DatabaseConnection,
    pub statements: Arc<StatementCounter>,
    pub keys: JwtKeys,
    pub schema: AppSchema,
    pub agents: Arc<AgentRegistry>,
    pub engine: Arc<Engine>,
    /// Cancelled when the server shuts down: WebSocket connections close.
    pub closing: tokio_util::sync::CancellationToken,
    /// Set when no `JWT_SECRET` was given: a token for the demo user,
    /// prefilled in GraphiQL.
    pub demo_token: Option<String>,
    /// Claims last written to `users`, so a request whose token says nothing
    /// new skips the upsert.
    known_users: Mutex<HashMap<String, (Option<String>, Option<String>)>>,
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
    /// HTTP request, not for a long-lived WebSocket connection.
    pub async fn request_ctx(&self, viewer: Viewer, cache_rows: bool) -> Result<RequestCtx, ApiError> {
        self.remember_user(&viewer).await?;
        let roles = users::memberships(&self.db, &viewer.id).await?;
        let access = Access::new(viewer.id.clone(), roles);
        Ok(RequestCtx::new(&self.db, viewer, access, cache_rows))
    }
}

pub struct Application {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    grace: Duration,
}

impl Application {
    /// Connects, migrates, loads agents and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let agents = AgentRegistry::load(config.agents_file.as_deref())?;
        Self::build_with_agents(config, agents).await
    }

    /// Like `build`, with the agents given (tests add their own).
    pub async fn build_with_agents(config: Config, agents: AgentRegistry) -> anyhow::Result<Self> {
        let agents = Arc::new(agents);
        let (db, statements) = db::connect(&config.database_url, config.database_max_connections).await?;
        db::migrate(&db).await?;
        let (keys, demo_token) = match &config.jwt_secret {
            Some(secret) if !secret.is_empty() => (JwtKeys::new(secret.as_bytes()), None),
            _ => {
                let secret: [u8; 32] = rand::random();
                let keys = JwtKeys::new(&secret);
                let token = keys.issue(DEMO_USER_ID, Some("Demo User"), None, Duration::from_secs(24 * 3600));
                (keys, Some(token))
            }
        };
        if demo_token.is_some() {
            crate::demo::seed_if_empty(&db).await?;
        }
        let bus = EventBus::new(config.event_buffer.max(1));
        let settings = EngineSettings {
            lease: Duration::from_secs(config.lease_seconds.max(1)),
            sweep: Duration::from_secs(config.sweep_seconds.max(1)),
        };
        let engine = Engine::new(db.clone(), agents.clone(), bus, settings);
        engine.start_background();
        let schema = graphql::build_schema(Some(SchemaData {
            db: db.clone(),
            agents: agents.clone(),
            engine: engine.clone(),
        }));
        let state = Arc::new(AppState {
            db,
            statements,
            keys,
            schema,
            agents,
            engine,
            closing: tokio_util::sync::CancellationToken::new(),
            demo_token,
            known_users: Mutex::new(HashMap::new()),
        });
        let listener = tokio::net::TcpListener::bind(&config.listen_addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self {
            addr,
            state,
            listener,
            grace: Duration::from_secs(config.shutdown_grace_seconds),
        })
    }

    pub fn router(state: Arc<AppState>) -> Router {
        Router::new()
            .route("/graphql", get(graphiql).post(graphql_post))
            .route("/graphql/ws", get(graphql_ws))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(state)
    }

    /// Serves until `shutdown` resolves.
    /// Serves until `shutdown` resolves, then shuts down gracefully: stops
    /// accepting requests, closes WebSocket connections with a close frame,
    /// lets steps in flight finish for up to the grace period, and hands the other
    /// runs' leases back.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let grace = self.grace;
        let app = Self::router(self.state.clone());
        let state = self.state.clone();
        let signal = async move {
            shutdown.await;
            state.closing.cancel();
        };
        let served = axum::serve(
            // Small writes (subscription events, short answers) go out at
            // once instead of waiting on the previous segment's ACK.
            self.listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            app,
        )
        .with_graceful_shutdown(signal)
        .await;
        self.state.engine.shutdown(grace).await;
        served
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if db::ping(&state.db).await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
    }
}

async fn graphiql(State(state): State<Arc<AppState>>) -> Html<String> {
    let bearer = state.demo_token.as_ref().map(|t| format!("Bearer {t}"));
    let mut page = GraphiQLSource::build()
        .endpoint("/graphql")
        .subscription_endpoint("/graphql/ws")
        .title("Workflows");
    if let Some(b) = &bearer {
        page = page.header("Authorization", b).ws_connection_param("Authorization", b);
    }
    Html(page.finish())
}

/// A GraphQL response carrying one error and no data.
pub fn error_response(status: StatusCode, message: &str, code: &'static str) -> Response {
    let err = ServerError::new(message, None);
    let err = ServerError {
        extensions: async_graphql::Error::new(message)
            .extend_with(|_, e| e.set("code", code))
            .extensions,
        ..err
    };
    let body = async_graphql::Response::from_errors(vec![err]);
    let mut resp = (status, Json(body)).into_response();
    if code == "UNAUTHENTICATED" {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    resp
}

async fn graphql_post(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let viewer = match state.keys.verify_header(auth) {
        Ok(v) => v,
        Err(e) => return error_response(StatusCode::UNAUTHORIZED, &e.message(), "UNAUTHENTICATED"),
    };
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("the request body is not a GraphQL request in JSON: {e}"),
                "GRAPHQL_PARSE_FAILED",
            );
        }
    };
    let ctx = match state.request_ctx(viewer, true).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = ?e, "could not load the viewer");
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal server error",
                "INTERNAL_SERVER_ERROR",
            );
        }
    };
    let response = state.schema.execute(request.data(ctx)).await;
    Json(response).into_response()
}

/// Reads the token from a `connection_init` payload:
/// `{"Authorization": "Bearer …"}`, `authorization`, or `token` (bare JWT).
fn token_from_init(payload: &serde_json::Value) -> Option<String> {
    let header = payload
        .get("Authorization")
        .or_else(|| payload.get("authorization"))
        .and_then(|v| v.as_str());
    if let Some(h) = header {
        return Some(h.to_owned());
    }
    payload
        .get("token")
        .and_then(|v| v.as_str())
        .map(|t| format!("Bearer {t}"))
}

/// Subscriptions over WebSocket, both `graphql-transport-ws` and the legacy
/// `graphql-ws`; the viewer is authenticated from `connection_init`, and a
/// connection without a valid token is refused.
async fn graphql_ws(
    State(state): State<Arc<AppState>>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        // Clients send small messages: a 4 KiB read buffer instead of the
        // default 128 KiB keeps an idle subscription at a few KiB, and
        // frames are written as they come rather than gathered.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            use futures::{SinkExt, StreamExt};
            let schema = state.schema.clone();
            let closing = state.closing.clone();
            let (mut socket_tx, socket_rx) = socket.split();
            // The GraphQL side writes through a channel, so that on shutdown the
            // connection can still be closed with a proper close frame.
            let (tx, mut rx) = futures::channel::mpsc::channel::<Message>(16);
            let writer = tokio::spawn(async move {
                while let Some(msg) = rx.next().await {
                    if socket_tx.send(msg).await.is_err() {
                        return;
                    }
                }
                let _ = socket_tx
                    .send(Message::Close(Some(CloseFrame {
                        code: 1001,
                        reason: "server shutting down".into(),
                    })))
                    .await;
                let _ = socket_tx.close().await;
            });
            let input = socket_rx.take_until(closing.clone().cancelled_owned());
            let tx = tx.sink_map_err(|_| axum::Error::new("websocket writer stopped"));
            GraphQLWebSocket::new_with_pair(tx, input, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let header = token_from_init(&payload);
                    let viewer = state
                        .keys
                        .verify_header(header.as_deref())
                        .map_err(|e| async_graphql::Error::new(e.message()))?;
                    let ctx = state
                        .request_ctx(viewer, false)
                        .await
                        .map_err(|e| async_graphql::Error::new(e.message()))?;
                    let mut data = async_graphql::Data::default();
                    data.insert(ctx);
                    Ok(data)
                })
                .serve()
                .await;
            if closing.is_cancelled() {
                let _ = writer.await;
            } else {
                // The client went away or the protocol closed it: the close
                // frame, if any, was already sent.
                writer.abort();
            }
        })
}
