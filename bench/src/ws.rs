//! WebSocket subscribers speaking `graphql-transport-ws`: many at once, to
//! time how fast one run's events reach all of them, and to hold thousands
//! of idle subscriptions open while the server's memory is read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use workflows::events::EventBus;

use crate::load::percentile;

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects, authenticates in `connection_init`, subscribes as id "1" and
/// waits for the first result (the SNAPSHOT).
pub async fn subscribe(base: &str, token: &str, query: &str, variables: &Value) -> anyhow::Result<WsStream> {
    let url = format!("{}/graphql/ws", base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .context("WebSocket connect")?;
    let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    ws.send(Message::Text(init.to_string().into())).await?;
    loop {
        let v = next_json(&mut ws).await?.context("closed before connection_ack")?;
        match v["type"].as_str() {
            Some("connection_ack") => break,
            Some("ping") => ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await?,
            _ => bail!("refused: {v}"),
        }
    }
    let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}});
    ws.send(Message::Text(sub.to_string().into())).await?;
    loop {
        let v = next_json(&mut ws).await?.context("closed before the first event")?;
        match v["type"].as_str() {
            Some("next") if v["payload"].get("errors").is_none() => return Ok(ws),
            Some("ping") => ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await?,
            _ => bail!("subscription failed: {v}"),
        }
    }
}

async fn next_json(ws: &mut WsStream) -> anyhow::Result<Option<Value>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Err(_) => bail!("no message within 60 s"),
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Ok(None),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(Some(serde_json::from_str(&t)?)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(e.into()),
        }
    }
}

/// Opens `n` subscriptions, `concurrency` handshakes at a time.
pub async fn open_many(
    base: &str,
    token: &str,
    query: &str,
    variables: &Value,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<WsStream>> {
    futures::stream::iter(0..n)
        .map(|_| subscribe(base, token, query, variables))
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

/// The part of a server message the fan-out reader needs.
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    payload: Option<FramePayload>,
}

#[derive(serde::Deserialize)]
struct FramePayload {
    data: Option<FrameData>,
}

#[derive(serde::Deserialize)]
struct FrameData {
    #[serde(rename = "workflowExecutionEvents")]
    event: FrameEvent,
}

#[derive(serde::Deserialize)]
struct FrameEvent {
    sequence: i64,
}

#[derive(Debug, Clone)]
pub struct FanoutResult {
    pub subscribers: usize,
    pub events: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Records when each event of `execution_id` was published on the bus —
/// right after its transaction committed — until the terminal one.
pub fn watch_commits(bus: &EventBus, execution_id: &str) -> tokio::task::JoinHandle<HashMap<i64, Instant>> {
    let mut rx = bus.subscribe();
    let id = execution_id.to_owned();
    tokio::spawn(async move {
        let mut seen = HashMap::new();
        loop {
            match rx.recv().await {
                Ok(ev) if ev.execution.id == id => {
                    seen.insert(ev.sequence, Instant::now());
                    if ev.is_terminal() {
                        return seen;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return seen,
            }
        }
    })
}

/// Reads every subscriber's events until its stream completes, stamping
/// each `sequence` on arrival; returns the latencies from `commits`.
pub async fn deliver(
    streams: Vec<WsStream>,
    commits: tokio::task::JoinHandle<HashMap<i64, Instant>>,
    trigger: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<FanoutResult> {
    let subscribers = streams.len();
    let arrivals = Arc::new(Mutex::new(Vec::<(i64, Instant)>::with_capacity(subscribers * 64)));
    let mut readers = Vec::with_capacity(subscribers);
    for mut ws in streams {
        let arrivals = arrivals.clone();
        readers.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(64);
            loop {
                let msg = match tokio::time::timeout(Duration::from_secs(120), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => t,
                    Ok(Some(Ok(Message::Close(_)))) | Ok(None) => break,
                    Ok(Some(Ok(_))) => continue,
                    Ok(Some(Err(e))) => return Err(anyhow::Error::from(e)),
                    Err(_) => bail!("a subscriber waited 120 s for the next event"),
                };
                let now = Instant::now();
                // Read without building the whole message: on two shared
                // cores the subscribers' parsing competes with the server.
                let frame: Frame<'_> = serde_json::from_str(&msg)?;
                match frame.kind {
                    "next" => {
                        let seq = frame
                            .payload
                            .and_then(|p| p.data)
                            .map(|d| d.event.sequence)
                            .context("an event without sequence")?;
                        mine.push((seq, now));
                    }
                    "complete" => break,
                    "ping" => ws.send(Message::Text(r#"{"type":"pong"}"#.into())).await?,
                    _ => bail!("unexpected message: {msg}"),
                }
            }
            let _ = ws.close(None).await;
            arrivals.lock().expect("arrivals").extend(mine);
            Ok(())
        }));
    }
    trigger.await?;
    for r in readers {
        r.await??;
    }
    let commits = commits.await?;
    let arrivals = std::mem::take(&mut *arrivals.lock().expect("arrivals"));
    let mut latencies = Vec::with_capacity(arrivals.len());
    for (seq, at) in &arrivals {
        let Some(committed) = commits.get(seq) else {
            bail!("event {seq} reached a subscriber but was never seen on the bus");
        };
        latencies.push(at.saturating_duration_since(*committed));
    }
    latencies.sort_unstable();
    Ok(FanoutResult {
        subscribers,
        events: arrivals.len() / subscribers.max(1),
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
    })
}
