//! A minimal GraphQL-over-WebSocket client for both subprotocols:
//! `graphql-transport-ws` and the legacy `graphql-ws`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    TransportWs,
    LegacyWs,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::LegacyWs => "graphql-ws",
        }
    }
}

/// What the server sent for a subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A result: `payload` (with `data` and maybe `errors`).
    Next(Value),
    /// An `error` message for the subscription.
    Error(Value),
    Complete,
}

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: Protocol,
}

impl WsClient {
    /// Opens a connection and sends `connection_init` with `payload`.
    /// Err holds why the server refused (close frame or error message).
    pub async fn connect(base: &str, protocol: Protocol, payload: Value) -> Result<Self, String> {
        let url = format!("{}/graphql/ws", base.replacen("http://", "ws://", 1));
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.name().parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(req).await.map_err(|e| e.to_string())?;
        let mut client = WsClient { stream, protocol };
        client
            .send(json!({"type": "connection_init", "payload": payload}))
            .await;
        loop {
            match client.recv_raw(Duration::from_secs(10)).await {
                Some(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    match v["type"].as_str() {
                        Some("connection_ack") => return Ok(client),
                        Some("ka") | Some("ping") | Some("pong") => continue,
                        _ => return Err(format!("refused: {v}")),
                    }
                }
                Some(Message::Close(frame)) => return Err(format!("closed: {frame:?}")),
                Some(_) => continue,
                None => return Err("connection ended".into()),
            }
        }
    }

    /// Connects with `{"Authorization": "Bearer <token>"}`.
    pub async fn connect_with_token(base: &str, protocol: Protocol, token: &str) -> Self {
        Self::connect(base, protocol, json!({"Authorization": format!("Bearer {token}")}))
            .await
            .expect("connection accepted")
    }

    async fn send(&mut self, v: Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    async fn recv_raw(&mut self, timeout: Duration) -> Option<Message> {
        match tokio::time::timeout(timeout, self.stream.next()).await {
            Ok(Some(Ok(m))) => Some(m),
            _ => None,
        }
    }

    /// Sends any protocol message as it is.
    pub async fn send_raw(&mut self, message: Value) {
        self.send(message).await;
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = match self.protocol {
            Protocol::TransportWs => "subscribe",
            Protocol::LegacyWs => "start",
        };
        self.send(json!({"id": id, "type": kind, "payload": {"query": query, "variables": variables}}))
            .await;
    }

    /// The next message for subscription `id`; None after `timeout` or when
    /// the connection ends.
    pub async fn next(&mut self, id: &str, timeout: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.recv_raw(left).await?;
            let Message::Text(t) = msg else {
                if let Message::Close(_) = msg {
                    return None;
                }
                continue;
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"].as_str() != Some(id) {
                if v["type"] == "ping" {
                    self.send(json!({"type": "pong"})).await;
                }
                continue;
            }
            return Some(match v["type"].as_str() {
                Some("next") | Some("data") => Incoming::Next(v["payload"].clone()),
                Some("complete") => Incoming::Complete,
                _ => Incoming::Error(v["payload"].clone()),
            });
        }
    }

    /// Every `data` payload of subscription `id` until it completes.
    pub async fn collect(&mut self, id: &str, timeout: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            match self.next(id, timeout).await {
                Some(Incoming::Next(p)) => out.push(p),
                Some(Incoming::Complete) => return out,
                Some(Incoming::Error(e)) => panic!("subscription error: {e}"),
                None => panic!(
                    "subscription {id} did not complete within {timeout:?}; got {} events: {out:?}",
                    out.len()
                ),
            }
        }
    }

    /// Whether the server closed the connection (within `timeout`).
    pub async fn closed(&mut self, timeout: Duration) -> bool {
        loop {
            match tokio::time::timeout(timeout, self.stream.next()).await {
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
                Err(_) => return false,
            }
        }
    }
}
