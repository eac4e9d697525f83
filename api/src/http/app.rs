//! Builds the shared state and the HTTP router. `main.rs` and the tests build
//! the server the same way: `Application::build` binds (port 0 in tests).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::time::Instant;

use async_graphql::BatchRequest;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use axum::body::Body;
use axum::extract::State;
use axum::extract::WebSocketUpgrade;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub use super::state::AppState;
use super::{graphiql, ws};
use crate::auth::JwtKeys;
use crate::clock::Clock;
use crate::config::Config;
use crate::core::limits::DataLimits;
use crate::db::{self};
use crate::domain::demo::DEMO_USER_ID;
use crate::engine::agents::AgentRegistry;
use crate::engine::runner::{Engine, EngineSettings};
use crate::error::{ApiError, Code};
use crate::events::EventBus;
use crate::graphql::admission::QueryLimits;
use crate::graphql::fanout;
use crate::graphql::{self, SchemaData};
use crate::jobs::retention::Retention;
use crate::jobs::scheduler::Scheduler;
use crate::jobs::stats_fold::StatsFold;
use crate::metrics::Metrics;

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
        Self::build_with_clock(config, agents, Clock::system()).await
    }

    /// Like `build_with_agents`, with the clock that the scheduler, leases
    /// and retention go by (tests move a manual one).
    pub async fn build_with_clock(config: Config, agents: AgentRegistry, clock: Clock) -> anyhow::Result<Self> {
        let agents = Arc::new(agents);
        let (db, statements) = db::connect(&config.database_url, config.database_max_connections).await?;
        db::migrate(&db).await?;
        let (keys, demo_token) = match &config.jwt_secret {
            Some(secret) if !secret.is_empty() => (JwtKeys::with_settings(secret.as_bytes(), &config.tokens), None),
            _ => {
                let secret: [u8; 32] = rand::random();
                let keys = JwtKeys::with_settings(&secret, &config.tokens);
                let token = keys.issue(DEMO_USER_ID, Some("Demo User"), None, Duration::from_secs(24 * 3600));
                (keys, Some(token))
            }
        };
        if demo_token.is_some() {
            crate::domain::demo::seed_if_empty(&db).await?;
        }
        let bus = EventBus::new(config.event_buffer.max(1));
        let settings = EngineSettings {
            lease: Duration::from_secs(config.lease_seconds.max(1)),
            sweep: Duration::from_secs(config.sweep_seconds.max(1)),
            max_parallel_steps: config.max_parallel_steps.max(1),
            snapshot_retry: Duration::from_secs(config.subscription_retry_seconds),
        };
        let engine = Engine::new(db.clone(), agents.clone(), bus, settings, clock.clone());
        // Limits first: runs taken over in the background obey them too.
        let data_limits = DataLimits::from(&config.limits);
        engine.set_limits(data_limits);
        let metrics = Metrics::new();
        let observer = metrics.clone();
        engine.set_step_observer(Box::new(move |step| observer.step_written(step)));
        engine.start_background();
        let scheduler = Scheduler::new(
            engine.clone(),
            metrics.clone(),
            Duration::from_millis(config.schedule_poll_ms),
        );
        scheduler.start();
        let schema = graphql::build_schema_with(
            Some(SchemaData {
                db: db.clone(),
                agents: agents.clone(),
                engine: engine.clone(),
                limits: data_limits,
                retention_days: config.retention_days,
            }),
            &config.limits,
        );
        let query_limits = QueryLimits::from(&config.limits);
        let closing = tokio_util::sync::CancellationToken::new();
        let retention = Arc::new(Retention::new(
            db.clone(),
            config.retention_days,
            Duration::from_secs(config.retention_sweep_seconds),
            metrics.clone(),
            clock,
        ));
        retention.clone().spawn(closing.clone());
        let stats_fold = Arc::new(StatsFold::new(db.clone(), config.stats_fold_seconds));
        stats_fold.clone().spawn(closing.clone());
        let fanout = fanout::Hub::new(
            fanout::Renderer {
                schema: schema.clone(),
                limits: query_limits,
                engine: engine.clone(),
            },
            config.event_buffer,
        );
        let state = Arc::new(AppState {
            db,
            statements,
            keys,
            schema,
            agents,
            engine,
            scheduler,
            closing,
            demo_token,
            limits: config.limits.clone(),
            query_limits,
            metrics,
            retention,
            stats_fold,
            cors_origins: config.http.cors_origins.clone(),
            ws_connections: Arc::default(),
            fanout,
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
        let cors = cors_layer(&state.cors_origins);
        let router = Router::new()
            .route("/graphql", get(graphiql::page).post(graphql_post))
            .route(
                &format!("{}/{{version}}/{{file}}", graphiql::ASSETS_PREFIX),
                get(graphiql::asset),
            )
            .route("/graphql/ws", get(graphql_ws))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            // `graphql_post` reads the body itself, to answer an oversize
            // one with a GraphQL error.
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state);
        let router = match cors {
            Some(c) => router.layer(c),
            None => router,
        };
        let x_request_id = HeaderName::from_static(REQUEST_ID);
        // Outermost last: every response carries the security headers and the
        // request id, and every log line of a request carries its id.
        router
            .layer(SetResponseHeaderLayer::if_not_present(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("DENY"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
            ))
            .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
            .layer(
                TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<Body>| {
                    let id = req
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }),
            )
            .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
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

/// CORS for the configured origins; `None` (no CORS headers, so browsers
/// keep other origins out) when there are none.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&str> = origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(REQUEST_ID),
            ])
            .expose_headers([HeaderName::from_static(REQUEST_ID)])
            .max_age(Duration::from_secs(3600)),
    )
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = state.metrics.render(&state.db, &state.statements).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The header that carries each request's id (set when the client sent none).
const REQUEST_ID: &str = "x-request-id";

/// A GraphQL response carrying one error and no data.
pub fn error_response(status: StatusCode, message: &str, code: Code) -> Response {
    let body = async_graphql::Response::from_errors(vec![code.error(message, None)]);
    let mut resp = (status, Json(body)).into_response();
    if code == Code::Unauthenticated {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    resp
}

/// Queries and mutations: one request, or a batch (a JSON array) run one
/// after another, each with a fresh view of the viewer's permissions.
async fn graphql_post(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let refuse = |status: StatusCode, message: &str, code: Code| {
        state.metrics.refused(code.as_str(), started.elapsed());
        error_response(status, message, code)
    };
    let max_body = state.limits.max_body_bytes;
    let too_large =
        || format!("the request body is larger than {max_body} bytes (MAX_BODY_BYTES); send a smaller request");
    let body = match read_body(body, max_body).await {
        Some(b) => b,
        None => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &too_large(),
                Code::GraphqlValidationFailed,
            );
        }
    };
    let request_id = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let viewer = match state.keys.verify_header(auth) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, &e.message(), Code::Unauthenticated),
    };
    let (requests, is_batch) = match parse_requests(&body, state.limits.max_batch_size) {
        Ok(parsed) => parsed,
        Err((status, message, code)) => return refuse(status, &message, code),
    };
    let run = async {
        let mut responses = Vec::with_capacity(requests.len());
        for request in requests {
            let ctx = state.request_ctx(viewer.clone(), true).await?;
            let request = request.data(ctx);
            responses.push(
                graphql::observe::execute(
                    &state.schema,
                    &state.query_limits,
                    Some(&state.metrics),
                    request,
                    request_id.as_deref(),
                )
                .await,
            );
        }
        Ok::<_, ApiError>(responses)
    };
    let timeout = state.limits.request_timeout;
    let result = if timeout.is_zero() {
        Ok(run.await)
    } else {
        tokio::time::timeout(timeout, run).await
    };
    match result {
        Ok(Ok(responses)) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            graphql::json::batch_to_bytes(&responses, !is_batch),
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = ?e, "could not load the viewer");
            let mut errors = [Code::InternalServerError.error("", None)];
            crate::error::code_errors(&mut errors, 0, request_id.as_deref());
            state
                .metrics
                .refused(Code::InternalServerError.as_str(), started.elapsed());
            let [err] = errors;
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(async_graphql::Response::from_errors(vec![err])),
            )
                .into_response()
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "request stopped at its timeout"
            );
            state.metrics.request("unknown", "timeout", started.elapsed());
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "the request did not finish within {} ms and was stopped (REQUEST_TIMEOUT); \
                     a mutation stopped before it committed changed nothing",
                    timeout.as_millis()
                ),
                Code::InternalServerError,
            )
        }
    }
}

/// The requests of a body, and whether it was a batch (a JSON array); else
/// the refusal. Parsed as the shape it claims to be, so the error names the
/// real problem.
fn parse_requests(
    body: &[u8],
    max_batch: usize,
) -> Result<(Vec<async_graphql::Request>, bool), (StatusCode, String, Code)> {
    let is_batch = body.trim_ascii_start().starts_with(b"[");
    let parsed = if is_batch {
        serde_json::from_slice::<Vec<async_graphql::Request>>(body).map(BatchRequest::Batch)
    } else {
        serde_json::from_slice::<async_graphql::Request>(body).map(BatchRequest::Single)
    };
    let batch = parsed.map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("the request body is not a GraphQL request in JSON: {e}"),
            Code::GraphqlParseFailed,
        )
    })?;
    match batch {
        BatchRequest::Single(r) => Ok((vec![r], false)),
        BatchRequest::Batch(list) if list.is_empty() => Err((
            StatusCode::BAD_REQUEST,
            "the batch is empty: send at least one operation".to_owned(),
            Code::GraphqlValidationFailed,
        )),
        BatchRequest::Batch(list) if list.len() > max_batch => Err((
            StatusCode::BAD_REQUEST,
            format!(
                "the batch holds {} operations; at most {max_batch} are allowed (MAX_BATCH_SIZE)",
                list.len()
            ),
            Code::GraphqlValidationFailed,
        )),
        BatchRequest::Batch(list) => Ok((list, true)),
    }
}

/// The body, or `None` when it is larger than `max` bytes. An oversize body
/// is still read (not kept) for a while, up to 64 times the limit, so a client
/// that is still sending gets the 413 instead of a broken connection.
async fn read_body(body: Body, max: usize) -> Option<axum::body::Bytes> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        if kept.len() + chunk.len() > max {
            let drain_cap = max.saturating_mul(64).max(64 * 1024 * 1024);
            let mut seen = kept.len() + chunk.len();
            let drain = async {
                while let Some(Ok(c)) = stream.next().await {
                    seen += c.len();
                    if seen > drain_cap {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
            return None;
        }
        kept.extend_from_slice(&chunk);
    }
    Some(kept.into())
}

/// Subscriptions over WebSocket, both `graphql-transport-ws` and the legacy
/// `graphql-ws`; `ws::serve` authenticates `connection_init`, guards the
/// connection, and closes it with 1001 when the server shuts down.
async fn graphql_ws(State(state): State<Arc<AppState>>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    let Some(protocol) = ws::protocol(&headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "ask for the graphql-transport-ws or graphql-ws subprotocol (Sec-WebSocket-Protocol)",
        )
            .into_response();
    };
    let max = state.limits.max_body_bytes;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(max)
        .max_frame_size(max)
        // Clients send small messages: a 4 KiB read buffer instead of the
        // default 128 KiB keeps an idle subscription at a few KiB. Frames
        // are gathered until `ws::serve` flushes its batch, so a burst of
        // events to one subscriber is one write, not one per frame (the
        // buffer keeps the capacity it grew to either way).
        .read_buffer_size(4 * 1024)
        .write_buffer_size(64 * 1024)
        .on_upgrade(move |socket| {
            let closing = state.closing.clone().cancelled_owned();
            ws::serve(state, socket, protocol, closing)
        })
}
