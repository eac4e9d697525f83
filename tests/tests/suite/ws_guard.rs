//! Issue 6: the WebSocket connection's guards: init timeout, caps on
//! subscriptions and connections, keep-alive pings, and the protocol's close
//! codes, on both subprotocols.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use workflows_tests::ws::{Incoming, Protocol, WsClient};
use workflows_tests::{TestApp, eventually};

type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(app: &TestApp, protocol: &str) -> Raw {
    let url = format!("{}/graphql/ws", app.base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn send(ws: &mut Raw, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text message, skipping pings; None when closed or timed out.
async fn next_text(ws: &mut Raw) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "ping" || v["type"] == "ka" {
                    continue;
                }
                return Some(v);
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The close code the server ends the connection with.
async fn close_code(ws: &mut Raw) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

async fn init(ws: &mut Raw, token: &str) {
    send(
        ws,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    let ack = next_text(ws).await.expect("an answer to connection_init");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
}

const WATCH: &str = "subscription($d: ID!) { driveWorkflowExecutionEvents(driveId: $d) { sequence } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_of_the_transport_protocol() {
    let app = TestApp::spawn_with(|c| c.limits.ws_init_timeout = Duration::from_millis(300)).await;
    let token = app.user("ana").await;

    // No connection_init in time: 4408.
    let mut ws = open(&app, "graphql-transport-ws").await;
    assert_eq!(close_code(&mut ws).await, Some(4408));

    // A bad token: 4403.
    let mut ws = open(&app, "graphql-transport-ws").await;
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": {"token": "nope"}}),
    )
    .await;
    assert_eq!(close_code(&mut ws).await, Some(4403));

    // subscribe before the ack: 4401.
    let mut ws = open(&app, "graphql-transport-ws").await;
    send(
        &mut ws,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "{ me { id } }"}}),
    )
    .await;
    assert_eq!(close_code(&mut ws).await, Some(4401));

    // Not JSON, or not a protocol message: 4400.
    let mut ws = open(&app, "graphql-transport-ws").await;
    init(&mut ws, &token).await;
    ws.send(Message::Text("{oops".into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(4400));
    let mut ws = open(&app, "graphql-transport-ws").await;
    init(&mut ws, &token).await;
    send(&mut ws, json!({"type": "launch_missiles"})).await;
    assert_eq!(close_code(&mut ws).await, Some(4400));

    // A second connection_init: 4429.
    let mut ws = open(&app, "graphql-transport-ws").await;
    init(&mut ws, &token).await;
    send(&mut ws, json!({"type": "connection_init", "payload": {"token": token}})).await;
    assert_eq!(close_code(&mut ws).await, Some(4429));

    // A subscription id still in use: 4409.
    let drive = crate::create_drive(&app, &token, "D").await;
    let mut ws = open(&app, "graphql-transport-ws").await;
    init(&mut ws, &token).await;
    let sub = json!({"id": "s", "type": "subscribe", "payload": {"query": WATCH, "variables": {"d": drive}}});
    send(&mut ws, sub.clone()).await;
    send(&mut ws, sub).await;
    assert_eq!(close_code(&mut ws).await, Some(4409));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_protocol_is_told_why_before_the_close() {
    let app = TestApp::spawn_with(|c| c.limits.ws_init_timeout = Duration::from_millis(300)).await;
    let mut ws = open(&app, "graphql-ws").await;
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": {"token": "nope"}}),
    )
    .await;
    let msg = next_text(&mut ws).await.unwrap();
    assert_eq!(msg["type"], "connection_error", "{msg}");
    assert!(
        msg["payload"]["message"].as_str().unwrap().contains("Unauthenticated"),
        "{msg}"
    );
    let mut ws = open(&app, "graphql-ws").await;
    assert_eq!(close_code(&mut ws).await, Some(4408));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_connection_are_capped() {
    let app = TestApp::spawn_with(|c| c.limits.max_subscriptions_per_connection = 2).await;
    let token = app.user("ana").await;
    let drive = crate::create_drive(&app, &token, "D").await;
    for protocol in [Protocol::TransportWs, Protocol::LegacyWs] {
        let mut ws = WsClient::connect_with_token(&app.base, protocol, &token).await;
        ws.subscribe("a", WATCH, json!({"d": drive})).await;
        ws.subscribe("b", WATCH, json!({"d": drive})).await;
        ws.subscribe("c", WATCH, json!({"d": drive})).await;
        match ws.next("c", Duration::from_secs(10)).await {
            Some(Incoming::Error(e)) => {
                let text = e.to_string();
                assert!(
                    text.contains("MAX_SUBSCRIPTIONS_PER_CONNECTION") && text.contains("BAD_USER_INPUT"),
                    "{text}"
                );
            }
            other => panic!("{protocol:?}: expected an error for the third subscription, got {other:?}"),
        }
        // Closing one frees its slot; the connection itself stays usable.
        let stop = match protocol {
            Protocol::TransportWs => "complete",
            Protocol::LegacyWs => "stop",
        };
        // The server handles a connection's messages in order: "d" comes
        // after "a" is gone.
        ws.send_raw(json!({"id": "a", "type": stop})).await;
        ws.subscribe("d", WATCH, json!({"d": drive})).await;
        // Start a run: "d" (and "b") see its first event.
        let t = crate::create_template(&app, &token, &drive, json!({"name": "T", "steps": [crate::echo("x")]})).await;
        app.ok(
            &token,
            "mutation($t: ID!) { startWorkflowExecution(templateId: $t) { id } }",
            json!({"t": t["id"]}),
        )
        .await;
        match ws.next("d", Duration::from_secs(10)).await {
            Some(Incoming::Next(p)) => assert!(p["data"]["driveWorkflowExecutionEvents"]["sequence"].is_number()),
            other => panic!("{protocol:?}: expected an event for d, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_are_capped() {
    let app = TestApp::spawn_with(|c| c.limits.max_connections_per_user = 2).await;
    let token = app.user("ana").await;
    let other = app.user("bob").await;
    let first = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &token).await;
    let _second = WsClient::connect_with_token(&app.base, Protocol::LegacyWs, &token).await;
    let mut third = open(&app, "graphql-transport-ws").await;
    send(
        &mut third,
        json!({"type": "connection_init", "payload": {"token": token}}),
    )
    .await;
    assert_eq!(close_code(&mut third).await, Some(4429));
    // Another user is not affected, and a closed connection frees its slot.
    let _bob = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &other).await;
    drop(first);
    // Freed once the server has seen the connection close.
    eventually(Duration::from_secs(10), || async {
        WsClient::connect(&app.base, Protocol::TransportWs, json!({"token": token}))
            .await
            .map_err(|e| format!("the slot of a closed connection was not freed: {e:?}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_get_keep_alive_pings() {
    let app = TestApp::spawn_with(|c| c.limits.ws_ping_interval = Duration::from_millis(200)).await;
    let token = app.user("ana").await;
    for (protocol, ping) in [("graphql-transport-ws", "ping"), ("graphql-ws", "ka")] {
        let mut ws = open(&app, protocol).await;
        init(&mut ws, &token).await;
        let mut pings = 0;
        while pings < 2 {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["type"], ping, "{protocol}: {v}");
                    pings += 1;
                    if ping == "ping" {
                        send(&mut ws, json!({"type": "pong"})).await;
                    }
                }
                other => panic!("{protocol}: no keep-alive: {other:?}"),
            }
        }
        // The client may ping too, and is answered.
        if protocol == "graphql-transport-ws" {
            send(&mut ws, json!({"type": "ping"})).await;
            loop {
                let v = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
                let Ok(Some(Ok(Message::Text(t)))) = v else {
                    panic!("no pong")
                };
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "pong" {
                    break;
                }
            }
        }
    }
}
