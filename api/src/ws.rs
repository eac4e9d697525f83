//! Subscriptions over WebSocket, both `graphql-transport-ws` and the legacy
//! `graphql-ws`. async-graphql runs the operations; this module guards the
//! connection around it: `connection_init` must come (with a valid token)
//! within the init timeout, a user holds a bounded number of connections and
//! a connection a bounded number of subscriptions, idle connections are
//! pinged, and every refusal closes with the protocol's close code:
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

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::http::{WebSocketProtocols, WsMessage};
use async_graphql::{Data, ErrorExtensions};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::HeaderMap;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::app::{AppState, token_from_init};

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
fn subscription_error(protocol: WebSocketProtocols, id: &str, message: &str, code: &str) -> Message {
    let err = json!({"message": message, "extensions": {"code": code}});
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

struct Conn {
    state: Arc<AppState>,
    protocol: WebSocketProtocols,
    acknowledged: bool,
    /// Ids of the subscriptions open now.
    active: HashSet<String>,
    slot: Option<ConnectionSlot>,
    /// Hands the authenticated context to async-graphql's init callback.
    init_data: Arc<Mutex<Option<Data>>>,
}

impl Conn {
    /// Checks the token and the user's connection count for `connection_init`.
    async fn init(&mut self, payload: &Value) -> Result<(), Refusal> {
        if self.acknowledged || self.slot.is_some() {
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
        let mut data = Data::default();
        data.insert(ctx);
        *self.init_data.lock().expect("init data lock") = Some(data);
        self.slot = Some(slot);
        Ok(())
    }

    /// Inspects one client message: `Ok(true)` forwards it to async-graphql,
    /// `Ok(false)` drops it (an answer was queued in `replies`).
    async fn inbound(&mut self, raw: &[u8], replies: &mut Vec<Message>) -> Result<bool, Refusal> {
        let msg: Value = serde_json::from_slice(raw)
            .map_err(|e| Refusal::Close(4400, format!("Invalid message received: not JSON ({e})")))?;
        let kind = msg
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Refusal::Close(4400, "Invalid message received: no `type`".into()))?;
        match kind {
            "connection_init" => {
                self.init(msg.get("payload").unwrap_or(&Value::Null)).await?;
                Ok(true)
            }
            "subscribe" | "start" => {
                if !self.acknowledged {
                    return Err(Refusal::Close(4401, "Unauthorized".into()));
                }
                let id = msg.get("id").and_then(Value::as_str).ok_or_else(|| {
                    Refusal::Close(4400, "Invalid message received: `subscribe` without an id".into())
                })?;
                if self.active.contains(id) {
                    return Err(Refusal::Close(4409, format!("Subscriber for {id} already exists")));
                }
                let max = self.state.limits.max_subscriptions_per_connection;
                if self.active.len() >= max {
                    replies.push(subscription_error(
                        self.protocol,
                        id,
                        &format!(
                            "this connection already has {max} subscriptions open (MAX_SUBSCRIPTIONS_PER_CONNECTION); \
                             complete one or open another connection"
                        ),
                        "BAD_USER_INPUT",
                    ));
                    return Ok(false);
                }
                self.active.insert(id.to_owned());
                self.state.metrics.subscription_opened();
                Ok(true)
            }
            "complete" | "stop" => {
                if let Some(id) = msg.get("id").and_then(Value::as_str) {
                    self.ended(id);
                }
                Ok(true)
            }
            "ping" | "pong" | "connection_terminate" => Ok(true),
            other => Err(Refusal::Close(
                4400,
                format!("Invalid message received: unknown type '{other}'"),
            )),
        }
    }

    fn ended(&mut self, id: &str) {
        if self.active.remove(id) {
            self.state.metrics.subscriptions_closed(1);
        }
    }

    /// Notes what async-graphql sends: acks and completed subscriptions.
    fn outbound(&mut self, text: &str) {
        if text.starts_with(r#"{"type":"connection_ack""#) {
            self.acknowledged = true;
        } else if text.starts_with(r#"{"type":"complete""#) {
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                if let Some(id) = v.get("id").and_then(Value::as_str) {
                    self.ended(id);
                }
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
    let (to_gql, from_client) = mpsc::unbounded_channel::<Vec<u8>>();
    let init_data: Arc<Mutex<Option<Data>>> = Arc::default();
    let handoff = init_data.clone();
    let gql =
        async_graphql::http::WebSocket::new(
            state.schema.clone(),
            UnboundedReceiverStream::new(from_client),
            protocol,
        )
        .on_connection_init(move |_| async move {
            // `Conn::init` authenticated the connection before forwarding it.
            handoff.lock().expect("init data lock").take().ok_or_else(|| {
                async_graphql::Error::new("Forbidden").extend_with(|_, e| e.set("code", "UNAUTHENTICATED"))
            })
        });
    futures::pin_mut!(gql);
    let mut conn = Conn {
        state: state.clone(),
        protocol,
        acknowledged: false,
        active: HashSet::new(),
        slot: None,
        init_data,
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
                    Ok(true) => {
                        if to_gql.send(raw).is_err() {
                            break;
                        }
                        replies
                    }
                    Ok(false) => replies,
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
            outgoing = gql.next() => {
                // A burst (streamed deltas) goes out in one write: take what
                // else is ready now, and flush once.
                let mut batch = Vec::new();
                let mut next = outgoing;
                let mut end = false;
                loop {
                    match next {
                        Some(WsMessage::Text(t)) => {
                            conn.outbound(&t);
                            batch.push(Message::Text(t.into()));
                        }
                        Some(WsMessage::Close(code, reason)) => {
                            batch.push(close(code, &reason));
                            end = true;
                            break;
                        }
                        None => {
                            end = true;
                            break;
                        }
                    }
                    if batch.len() >= 256 {
                        break;
                    }
                    match gql.next().now_or_never() {
                        Some(n) => next = n,
                        None => break,
                    }
                }
                if end {
                    let _ = send_all(&mut sink, batch).await;
                    break;
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
            _ = ping.tick(), if conn.acknowledged && !limits.ws_ping_interval.is_zero() => {
                vec![text(ping_message.clone())]
            }
        };
        if send_all(&mut sink, out).await.is_err() {
            break;
        }
    }
    state.metrics.subscriptions_closed(conn.active.len());
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
