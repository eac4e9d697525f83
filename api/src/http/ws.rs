//! Subscriptions over WebSocket, both `graphql-transport-ws` and the legacy
//! `graphql-ws`: this module speaks both protocols and guards the connection.
//! `connection_init` must come (with a valid token) within the init timeout,
//! a user holds a bounded number of connections and a connection a bounded
//! number of subscriptions, idle connections are pinged, and every refusal
//! closes with the protocol's close code. Each subscription is checked like
//! an HTTP request (`QueryLimits::admit`); one that follows a single
//! execution joins its group in `graphql::fanout`, any other runs on its own.
//!
//! | code | when |
//! | --- | --- |
//! | 4400 | a message that is not JSON or not part of the protocol |
//! | 4401 | `subscribe` before the connection was acknowledged |
//! | 4403 | `connection_init` without a valid token |
//! | 4408 | no `connection_init` within the init timeout |
//! | 4409 | `subscribe` with the id of a subscription still open |
//! | 4429 | a second `connection_init`, or too many connections of one user |
//! | 1001 | the server is shutting down |

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::WebSocketProtocols;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::HeaderMap;
use futures::stream::BoxStream;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_stream::StreamMap;

use super::state::{AppState, ConnectionSlot};
use crate::error::{ApiError, Code};
use crate::graphql::fanout::{self, Payload};
use crate::graphql::subscription::Abort;

/// The subprotocol the client asked for, as `GraphQLProtocol` reads it.
pub fn protocol(headers: &HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|list| {
            list.split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        })
}

/// Close reasons are at most 123 bytes.
fn close(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].to_owned().into(),
    }))
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

/// An error for one subscription, as each protocol spells it.
fn subscription_error(protocol: WebSocketProtocols, id: &str, message: &str, code: Code) -> Message {
    let err = json!({"message": message, "extensions": {"code": code.as_str()}});
    match protocol {
        WebSocketProtocols::GraphQLWS => text(json!({"type": "error", "id": id, "payload": [err]})),
        WebSocketProtocols::SubscriptionsTransportWS => text(json!({"type": "error", "id": id, "payload": err})),
    }
}

enum Refusal {
    /// Close with this code and reason (the legacy protocol first gets a
    /// `connection_error` with the reason).
    Close(u16, String),
}

/// What a subscription's stream yields.
enum Out {
    Payload(Payload),
    /// The stream ended: the client gets `complete`.
    Done,
    /// The stream could not go on: the client gets an `error` message.
    Failed(ApiError),
}

/// The authenticated side of a connection, once `connection_init` passed.
struct Session {
    /// The viewer's request context, as every operation's session data.
    data: Arc<Data>,
    /// The viewer and their roles: subscriptions share a group only when
    /// this matches too.
    viewer_key: String,
}

struct Conn {
    state: Arc<AppState>,
    protocol: WebSocketProtocols,
    session: Option<Session>,
    slot: Option<ConnectionSlot>,
    /// The subscriptions open now, by id.
    subs: StreamMap<String, BoxStream<'static, Out>>,
}

impl Conn {
    fn acknowledged(&self) -> bool {
        self.session.is_some()
    }

    /// Checks the token and the user's connection count for `connection_init`.
    async fn init(&mut self, payload: &Value) -> Result<(), Refusal> {
        if self.acknowledged() || self.slot.is_some() {
            return Err(Refusal::Close(4429, "Too many initialisation requests".into()));
        }
        let header = token_from_init(payload);
        let viewer = self
            .state
            .keys
            .verify_header(header.as_deref())
            .map_err(|e| Refusal::Close(4403, format!("Forbidden: {}", e.message())))?;
        let max = self.state.limits.max_connections_per_user;
        let slot = self.state.ws_connections.acquire(&viewer.id, max).ok_or_else(|| {
            Refusal::Close(
                4429,
                format!("too many connections: a user may hold {max} at once (MAX_CONNECTIONS_PER_USER)"),
            )
        })?;
        let ctx = self.state.request_ctx(viewer, false).await.map_err(|e| {
            tracing::error!(error = ?e, "could not load the viewer of a WebSocket connection");
            Refusal::Close(1011, "internal server error".into())
        })?;
        let viewer_key = ctx
            .access()
            .await
            .map_err(|e| {
                tracing::error!(error = ?e, "could not load the viewer of a WebSocket connection");
                Refusal::Close(1011, "internal server error".into())
            })?
            .fingerprint();
        let mut data = Data::default();
        data.insert(ctx);
        self.session = Some(Session {
            data: Arc::new(data),
            viewer_key,
        });
        self.slot = Some(slot);
        Ok(())
    }

    /// Handles one client message; what to answer is pushed to `replies`.
    /// `Ok(false)`: the client is leaving (`connection_terminate`).
    async fn inbound(&mut self, raw: &[u8], replies: &mut Vec<Message>) -> Result<bool, Refusal> {
        let mut msg: Value = serde_json::from_slice(raw)
            .map_err(|e| Refusal::Close(4400, format!("Invalid message received: not JSON ({e})")))?;
        let kind = msg
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Refusal::Close(4400, "Invalid message received: no `type`".into()))?;
        match kind {
            "connection_init" => {
                self.init(msg.get("payload").unwrap_or(&Value::Null)).await?;
                replies.push(text(json!({"type": "connection_ack"})));
                Ok(true)
            }
            "subscribe" | "start" => {
                let Some(session) = &self.session else {
                    return Err(Refusal::Close(4401, "Unauthorized".into()));
                };
                let id = msg.get("id").and_then(Value::as_str).ok_or_else(|| {
                    Refusal::Close(4400, "Invalid message received: `subscribe` without an id".into())
                })?;
                let id = id.to_owned();
                if self.subs.contains_key(&id) {
                    return Err(Refusal::Close(4409, format!("Subscriber for {id} already exists")));
                }
                let max = self.state.limits.max_subscriptions_per_connection;
                if self.subs.len() >= max {
                    replies.push(subscription_error(
                        self.protocol,
                        &id,
                        &format!(
                            "this connection already has {max} subscriptions open (MAX_SUBSCRIPTIONS_PER_CONNECTION); \
                             complete one or open another connection"
                        ),
                        Code::BadUserInput,
                    ));
                    return Ok(true);
                }
                let payload = msg.get_mut("payload").map(Value::take).unwrap_or(Value::Null);
                let request: async_graphql::Request = serde_json::from_value(payload)
                    .map_err(|e| Refusal::Close(4400, format!("Invalid message received: `subscribe` payload: {e}")))?;
                let stream = self.start(session, request);
                self.subs.insert(id, stream);
                self.state.metrics.subscription_opened();
                Ok(true)
            }
            "complete" | "stop" => {
                if let Some(id) = msg.get("id").and_then(Value::as_str)
                    && self.subs.remove(id).is_some()
                {
                    self.state.metrics.subscriptions_closed(1);
                }
                Ok(true)
            }
            "ping" => {
                replies.push(text(json!({"type": "pong"})));
                Ok(true)
            }
            "pong" => Ok(true),
            "connection_terminate" => Ok(false),
            other => Err(Refusal::Close(
                4400,
                format!("Invalid message received: unknown type '{other}'"),
            )),
        }
    }

    /// The stream of one subscription: refused by the limits (one result
    /// with the error), shared with its group, or on its own.
    fn start(&self, session: &Session, mut request: async_graphql::Request) -> BoxStream<'static, Out> {
        let state = &self.state;
        // How the stream ended, read once it has.
        let abort = Abort::default();
        let ended = abort.clone();
        let done = futures::stream::once(async move { ended.take().map_or(Out::Done, Out::Failed) });
        if let Err(e) = state.query_limits.admit(&mut request) {
            let resp = async_graphql::Response::from_errors(vec![e]);
            return futures::stream::once(std::future::ready(Out::Payload(fanout::payload(&resp))))
                .chain(done)
                .boxed();
        }
        let parsed = request.parsed_query().ok().cloned();
        let target = parsed
            .as_ref()
            .and_then(|doc| fanout::shared_target(doc, request.operation_name.as_deref(), &request.variables));
        if let (Some(parsed), Some(execution_id)) = (parsed, target) {
            let doc = fanout::Document {
                query: request.query,
                operation_name: request.operation_name,
                variables: request.variables,
                parsed,
            };
            return state
                .fanout
                .subscribe(&session.viewer_key, session.data.clone(), doc, execution_id, abort)
                .map(Out::Payload)
                .chain(done)
                .boxed();
        }
        let limits = state.query_limits;
        state
            .schema
            .execute_stream_with_session_data(request.data(abort), session.data.clone())
            .map(move |mut resp| {
                limits.code_errors(&mut resp.errors, None);
                Out::Payload(fanout::payload(&resp))
            })
            .chain(done)
            .boxed()
    }

    /// The message for one item of subscription `id`.
    fn outbound(&mut self, id: &str, item: Out) -> Message {
        let id_json = serde_json::to_string(id).expect("a string serializes");
        match item {
            Out::Payload(p) => {
                let kind = match self.protocol {
                    WebSocketProtocols::GraphQLWS => "next",
                    WebSocketProtocols::SubscriptionsTransportWS => "data",
                };
                let mut s = String::with_capacity(p.len() + id_json.len() + 40);
                s.push_str(r#"{"type":""#);
                s.push_str(kind);
                s.push_str(r#"","id":"#);
                s.push_str(&id_json);
                s.push_str(r#","payload":"#);
                s.push_str(&p);
                s.push('}');
                Message::Text(s.into())
            }
            Out::Done => {
                self.subs.remove(id);
                self.state.metrics.subscriptions_closed(1);
                Message::Text(format!(r#"{{"type":"complete","id":{id_json}}}"#).into())
            }
            Out::Failed(e) => {
                self.subs.remove(id);
                self.state.metrics.subscriptions_closed(1);
                subscription_error(self.protocol, id, &e.message(), e.code())
            }
        }
    }
}

/// Serves one upgraded connection until either side closes it, or until
/// `shutdown` resolves (then it closes with 1001, going away).
pub async fn serve(
    state: Arc<AppState>,
    socket: WebSocket,
    protocol: WebSocketProtocols,
    shutdown: impl std::future::Future<Output = ()>,
) {
    state.metrics.connection_opened();
    let limits = state.limits.clone();
    let (mut sink, mut source) = socket.split();
    let mut conn = Conn {
        state: state.clone(),
        protocol,
        session: None,
        slot: None,
        subs: StreamMap::new(),
    };
    let init_deadline = tokio::time::sleep(limits.ws_init_timeout);
    tokio::pin!(init_deadline);
    let ping_every = if limits.ws_ping_interval.is_zero() {
        Duration::from_secs(3600 * 24 * 365)
    } else {
        limits.ws_ping_interval
    };
    tokio::pin!(shutdown);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let ping_message = match protocol {
        WebSocketProtocols::GraphQLWS => json!({"type": "ping"}),
        WebSocketProtocols::SubscriptionsTransportWS => json!({"type": "ka"}),
    };

    loop {
        let out: Vec<Message> = tokio::select! {
            incoming = source.next() => {
                let raw = match incoming {
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                let mut replies = Vec::new();
                match conn.inbound(&raw, &mut replies).await {
                    Ok(true) => replies,
                    Ok(false) => break,
                    Err(Refusal::Close(code, reason)) => {
                        let mut msgs = Vec::new();
                        if protocol == WebSocketProtocols::SubscriptionsTransportWS && code != 4400 {
                            msgs.push(text(json!({"type": "connection_error", "payload": {"message": reason}})));
                        }
                        msgs.push(close(code, &reason));
                        let _ = send_all(&mut sink, msgs).await;
                        break;
                    }
                }
            }
            Some((id, item)) = conn.subs.next(), if !conn.subs.is_empty() => {
                // A burst (streamed deltas, several subscriptions) goes out
                // in one write: take what else is ready now, and flush once.
                let mut batch = vec![conn.outbound(&id, item)];
                while batch.len() < 256 {
                    match conn.subs.next().now_or_never() {
                        Some(Some((id, item))) => batch.push(conn.outbound(&id, item)),
                        _ => break,
                    }
                }
                batch
            }
            _ = &mut init_deadline, if conn.slot.is_none() => {
                let _ = send_all(&mut sink, vec![close(4408, "Connection initialisation timeout")]).await;
                break;
            }
            _ = &mut shutdown => {
                let _ = send_all(&mut sink, vec![close(1001, "server shutting down")]).await;
                break;
            }
            _ = ping.tick(), if conn.acknowledged() && !limits.ws_ping_interval.is_zero() => {
                vec![text(ping_message.clone())]
            }
        };
        if send_all(&mut sink, out).await.is_err() {
            break;
        }
    }
    state.metrics.subscriptions_closed(conn.subs.len());
    state.metrics.connection_closed();
}

async fn send_all(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    msgs: Vec<Message>,
) -> Result<(), axum::Error> {
    if msgs.is_empty() {
        return Ok(());
    }
    for m in msgs {
        sink.feed(m).await?;
    }
    sink.flush().await
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
