//! Live updates over WebSocket: the event sequence of a run, many
//! subscribers, streamed deltas, the drive stream's filter, and refused tokens.

use std::time::Duration;

use serde_json::{Value, json};
use workflows_tests::ws::{Incoming, Protocol, WsClient};
use workflows_tests::{TestApp, eventually};

use crate::executions::{code_review, start, submit, wait_for};
use crate::{add_member, create_drive, create_template, echo};

const EVENTS: &str = "subscription($id: ID!) { workflowExecutionEvents(executionId: $id) {
  kind sequence at delta
  execution { id status currentStepOrder steps { stepOrder status } }
  step { stepOrder status agentOutput startedAt }
} }";

const DRIVE_EVENTS: &str = "subscription($d: ID!) { driveWorkflowExecutionEvents(driveId: $d) {
  kind sequence execution { id user { id } status }
} }";

fn events(payloads: &[Value], field: &str) -> Vec<Value> {
    payloads
        .iter()
        .map(|p| {
            assert!(p.get("errors").is_none(), "{p}");
            p["data"][field].clone()
        })
        .collect()
}

/// (kind, sequence, execution status, step order, step status) of each event.
/// An event as `(kind, sequence, execution status, step order, step status)`.
type Summary = (String, i64, String, Option<i64>, Option<String>);

fn summary(events: &[Value]) -> Vec<Summary> {
    events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["sequence"].as_i64().unwrap(),
                e["execution"]["status"].as_str().unwrap().to_owned(),
                e["step"]["stepOrder"].as_i64(),
                e["step"]["status"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn s(v: &str) -> String {
    v.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_streams_every_change_in_order_then_completes() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Live").await;
    let t = create_template(&app, &owner, &drive, code_review()).await;
    let id = start(&app, &owner, t["id"].as_str().unwrap(), json!({"code": "x"})).await;
    wait_for(&app, &owner, &id, "PAUSED").await;

    {
        let mut ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &owner).await;
        ws.subscribe("1", EVENTS, json!({"id": id})).await;
        let Some(Incoming::Next(first)) = ws.next("1", Duration::from_secs(10)).await else {
            panic!("no snapshot")
        };
        let snap = &first["data"]["workflowExecutionEvents"];
        assert_eq!(snap["kind"], "SNAPSHOT");
        // RUNNING at start, 2 x (step RUNNING, step COMPLETED), PAUSED.
        assert_eq!(snap["sequence"], 6, "{snap}");
        assert_eq!(snap["execution"]["status"], "PAUSED");
        assert_eq!(snap["execution"]["steps"].as_array().unwrap().len(), 3);
        let r = submit(&app, &owner, &id, json!({"detailLevel": "basic"})).await;
        assert!(r.get("errors").is_none(), "{r}");
        let rest = events(
            &ws.collect("1", Duration::from_secs(10)).await,
            "workflowExecutionEvents",
        );
        assert_eq!(
            summary(&rest),
            vec![
                (s("EXECUTION_UPDATED"), 7, s("RUNNING"), None, None),
                (s("STEP_UPDATED"), 8, s("RUNNING"), Some(2), Some(s("RUNNING"))),
                (s("STEP_UPDATED"), 9, s("COMPLETED"), Some(2), Some(s("COMPLETED"))),
                (s("EXECUTION_UPDATED"), 10, s("COMPLETED"), None, None),
            ]
        );
        let last = rest.last().unwrap();
        let statuses: Vec<&str> = last["execution"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["COMPLETED", "COMPLETED", "COMPLETED"]);
        assert!(
            rest[2]["step"]["agentOutput"]["text"]
                .as_str()
                .unwrap()
                .ends_with("at basic")
        );
    }

    // A finished run: the SNAPSHOT, then the stream completes.
    let mut ws = WsClient::connect_with_token(&app.base, Protocol::LegacyWs, &owner).await;
    ws.subscribe("2", EVENTS, json!({"id": id})).await;
    let all = events(
        &ws.collect("2", Duration::from_secs(10)).await,
        "workflowExecutionEvents",
    );
    assert_eq!(summary(&all), vec![(s("SNAPSHOT"), 10, s("COMPLETED"), None, None)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_subscribers_see_the_same_sequence() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Fan-out").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "fan", "steps": [
            {"agentId": "echo", "promptTemplate": "go", "requiresUserInput": true},
            echo("a {{step_0_input.x}}"), echo("b"), {"agentId": "echo", "promptTemplate": "skip", "condition": false}, echo("c")
        ]}),
    )
    .await;
    let id = start(&app, &owner, t["id"].as_str().unwrap(), json!({})).await;
    wait_for(&app, &owner, &id, "PAUSED").await;

    let mut clients = Vec::new();
    for i in 0..100 {
        let protocol = if i % 2 == 0 {
            Protocol::TransportWs
        } else {
            Protocol::LegacyWs
        };
        let mut ws = WsClient::connect_with_token(&app.base, protocol, &owner).await;
        ws.subscribe("s", EVENTS, json!({"id": id})).await;
        let Some(Incoming::Next(snap)) = ws.next("s", Duration::from_secs(10)).await else {
            panic!("no snapshot")
        };
        assert_eq!(snap["data"]["workflowExecutionEvents"]["kind"], "SNAPSHOT");
        clients.push(ws);
    }
    let r = submit(&app, &owner, &id, json!({"x": 1})).await;
    assert!(r.get("errors").is_none(), "{r}");
    let all = futures::future::join_all(clients.iter_mut().map(|ws| async move {
        summary(&events(
            &ws.collect("s", Duration::from_secs(20)).await,
            "workflowExecutionEvents",
        ))
    }))
    .await;
    let first = &all[0];
    assert!(all.iter().all(|seq| seq == first));
    let seqs: Vec<i64> = first.iter().map(|e| e.1).collect();
    let start_seq = seqs[0];
    assert_eq!(
        seqs,
        (start_seq..start_seq + seqs.len() as i64).collect::<Vec<_>>(),
        "gap-free"
    );
    assert_eq!(first.last().unwrap().0, "EXECUTION_UPDATED");
    assert_eq!(first.last().unwrap().2, "COMPLETED");
    assert!(first.iter().any(|e| e.4.as_deref() == Some("SKIPPED")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_output_arrives_as_deltas_that_add_up() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Stream").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "stream", "steps": [
            {"agentId": "echo", "promptTemplate": "wait", "requiresUserInput": true},
            {"agentId": "streamer", "promptTemplate": "the quick brown fox jumps over {{step_0_input.who}}"}
        ]}),
    )
    .await;
    let id = start(&app, &owner, t["id"].as_str().unwrap(), json!({})).await;
    wait_for(&app, &owner, &id, "PAUSED").await;
    let mut ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &owner).await;
    ws.subscribe("1", EVENTS, json!({"id": id})).await;
    // Deltas are not stored: a subscriber that comes late misses them. It
    // is in place once it has had its first event, the SNAPSHOT.
    match ws.next("1", Duration::from_secs(10)).await {
        Some(Incoming::Next(p)) => assert_eq!(p["data"]["workflowExecutionEvents"]["kind"], "SNAPSHOT", "{p}"),
        other => panic!("no snapshot: {other:?}"),
    }
    submit(&app, &owner, &id, json!({"who": "the lazy dog"})).await;
    let all = events(
        &ws.collect("1", Duration::from_secs(10)).await,
        "workflowExecutionEvents",
    );
    let deltas: String = all
        .iter()
        .filter(|e| e["kind"] == "STEP_OUTPUT_DELTA")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    let done = all
        .iter()
        .find(|e| e["kind"] == "STEP_UPDATED" && e["step"]["status"] == "COMPLETED" && e["step"]["stepOrder"] == 1)
        .unwrap();
    assert_eq!(deltas, "the quick brown fox jumps over the lazy dog");
    assert_eq!(done["step"]["agentOutput"]["text"], deltas.as_str());
    let seqs: Vec<i64> = all.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

/// (execution id, user id) of each drive event until the stream goes quiet.
async fn seen_by(ws: &mut WsClient) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    while let Some(Incoming::Next(p)) = ws.next("d", Duration::from_millis(700)).await {
        let e = &p["data"]["driveWorkflowExecutionEvents"];
        ids.push((
            e["execution"]["id"].as_str().unwrap().to_owned(),
            e["execution"]["user"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drive_stream_carries_only_what_the_subscriber_may_see() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let outsider = app.user("outsider").await;
    let drive = create_drive(&app, &owner, "Shared").await;
    add_member(&app, &owner, &drive, "alice", "MEMBER").await;
    add_member(&app, &owner, &drive, "bob", "MEMBER").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "t", "isPublic": true, "steps": [echo("hi")]}),
    )
    .await;
    let tid = t["id"].as_str().unwrap();

    let listening = app.subscribers();
    let mut bob_ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &bob).await;
    bob_ws.subscribe("d", DRIVE_EVENTS, json!({"d": drive})).await;
    let mut owner_ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &owner).await;
    owner_ws.subscribe("d", DRIVE_EVENTS, json!({"d": drive})).await;
    let mut out_ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &outsider).await;
    out_ws.subscribe("d", DRIVE_EVENTS, json!({"d": drive})).await;
    match out_ws.next("d", Duration::from_secs(5)).await {
        Some(Incoming::Error(e)) => assert!(e.to_string().contains("NOT_FOUND"), "{e}"),
        Some(Incoming::Next(p)) => assert!(p["errors"].to_string().contains("NOT_FOUND"), "{p}"),
        other => panic!("outsider got {other:?}"),
    }
    app.wait_subscribed(listening, 2).await;

    let a = start(&app, &alice, tid, json!({})).await;
    wait_for(&app, &alice, &a, "COMPLETED").await;
    let b = start(&app, &bob, tid, json!({})).await;
    wait_for(&app, &bob, &b, "COMPLETED").await;

    let bob_saw = seen_by(&mut bob_ws).await;
    assert!(!bob_saw.is_empty());
    assert!(
        bob_saw.iter().all(|(id, user)| id == &b && user == "bob"),
        "{bob_saw:?}"
    );
    let owner_saw = seen_by(&mut owner_ws).await;
    assert!(
        owner_saw.iter().any(|(id, _)| id == &a) && owner_saw.iter().any(|(id, _)| id == &b),
        "{owner_saw:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_need_a_valid_token() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let other = workflows::auth::JwtKeys::new(b"another secret").issue("owner", None, None, Duration::from_secs(60));
    for protocol in [Protocol::TransportWs, Protocol::LegacyWs] {
        assert!(WsClient::connect(&app.base, protocol, json!({})).await.is_err());
        assert!(
            WsClient::connect(&app.base, protocol, json!({"Authorization": format!("Bearer {other}")}))
                .await
                .is_err()
        );
        assert!(
            WsClient::connect(&app.base, protocol, json!({"token": "garbage"}))
                .await
                .is_err()
        );
        // The three accepted spellings.
        WsClient::connect(&app.base, protocol, json!({"Authorization": format!("Bearer {owner}")}))
            .await
            .unwrap();
        WsClient::connect(&app.base, protocol, json!({"authorization": format!("Bearer {owner}")}))
            .await
            .unwrap();
        WsClient::connect(&app.base, protocol, json!({"token": owner}))
            .await
            .unwrap();
    }
    // Subscribing to an execution one may not see is NOT_FOUND.
    let mut ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &owner).await;
    ws.subscribe("x", EVENTS, json!({"id": "nope"})).await;
    match ws.next("x", Duration::from_secs(5)).await {
        Some(Incoming::Error(e)) => assert!(e.to_string().contains("NOT_FOUND"), "{e}"),
        Some(Incoming::Next(p)) => assert!(p["errors"].to_string().contains("NOT_FOUND"), "{p}"),
        other => panic!("got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_gets_a_fresh_snapshot_not_a_gap() {
    let app = TestApp::spawn_with(|c| c.event_buffer = 8).await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Burst").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "burst", "steps": [
            {"agentId": "echo", "promptTemplate": "wait", "requiresUserInput": true},
            {"agentId": "burst", "promptTemplate": "3000"}
        ]}),
    )
    .await;
    let id = start(&app, &owner, t["id"].as_str().unwrap(), json!({})).await;
    wait_for(&app, &owner, &id, "PAUSED").await;
    let mut ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &owner).await;
    ws.subscribe("1", EVENTS, json!({"id": id})).await;
    let Some(Incoming::Next(_)) = ws.next("1", Duration::from_secs(10)).await else {
        panic!("no snapshot")
    };
    submit(&app, &owner, &id, json!({})).await;
    let all = events(
        &ws.collect("1", Duration::from_secs(30)).await,
        "workflowExecutionEvents",
    );
    let seqs: Vec<(i64, bool)> = all
        .iter()
        .map(|e| (e["sequence"].as_i64().unwrap(), e["kind"] == "SNAPSHOT"))
        .collect();
    // Each event follows the previous one by one; a SNAPSHOT may jump ahead.
    let mut last = seqs[0].0 - 1;
    for (seq, snapshot) in &seqs {
        if *snapshot {
            assert!(*seq > last, "a SNAPSHOT never goes back: {seqs:?}");
        } else {
            assert_eq!(*seq, last + 1, "a silent gap: {seqs:?}");
        }
        last = *seq;
    }
    assert!(
        seqs.iter().any(|(_, s)| *s),
        "the subscriber never lagged; make the burst bigger"
    );
    let end = all.last().unwrap();
    assert_eq!(end["execution"]["status"], "COMPLETED");
    let e = wait_for(&app, &owner, &id, "COMPLETED").await;
    assert_eq!(e["steps"][1]["agentOutput"]["text"].as_str().unwrap().len(), 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_with_one_document_share_a_group_and_see_what_each_would_alone() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let admin = app.user("admin").await;
    let drive = create_drive(&app, &owner, "Shared").await;
    add_member(&app, &owner, &drive, "admin", "ADMIN").await;
    let t = create_template(&app, &owner, &drive, code_review()).await;
    let id = start(&app, &owner, t["id"].as_str().unwrap(), json!({"code": "x"})).await;
    wait_for(&app, &owner, &id, "PAUSED").await;
    // The same selection written another way is another document.
    let other_doc = "subscription Other($id: ID!) { e: workflowExecutionEvents(executionId: $id) { kind sequence } }";
    let mut clients = Vec::new();
    for (token, protocol, doc) in [
        (&owner, Protocol::TransportWs, EVENTS),
        (&owner, Protocol::LegacyWs, EVENTS),
        (&owner, Protocol::TransportWs, EVENTS),
        (&admin, Protocol::TransportWs, EVENTS),
        (&owner, Protocol::TransportWs, other_doc),
    ] {
        let mut ws = WsClient::connect_with_token(&app.base, protocol, token).await;
        ws.subscribe("s", doc, json!({"id": id})).await;
        let Some(Incoming::Next(snap)) = ws.next("s", Duration::from_secs(10)).await else {
            panic!("no snapshot")
        };
        assert!(snap.get("errors").is_none(), "{snap}");
        clients.push(ws);
    }
    // Three groups: the owner's EVENTS (three subscribers), the admin's
    // EVENTS, the owner's other document.
    assert_eq!(app.state.fanout.groups(), 3);
    // Someone who may not see the run is refused, and joins no group.
    let outsider = app.user("outsider").await;
    let mut ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &outsider).await;
    ws.subscribe("s", EVENTS, json!({"id": id})).await;
    match ws.next("s", Duration::from_secs(10)).await {
        Some(Incoming::Next(p)) => assert_eq!(p["errors"][0]["extensions"]["code"], "NOT_FOUND", "{p}"),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    assert_eq!(ws.next("s", Duration::from_secs(10)).await, Some(Incoming::Complete));
    assert_eq!(app.state.fanout.groups(), 3);

    submit(&app, &owner, &id, json!({"detailLevel": "basic"})).await;
    let mut seen = Vec::new();
    for ws in clients.iter_mut() {
        seen.push(ws.collect("s", Duration::from_secs(10)).await);
    }
    let full: Vec<_> = seen[..4]
        .iter()
        .map(|p| summary(&events(p, "workflowExecutionEvents")))
        .collect();
    assert!(full.iter().all(|s| s == &full[0]), "{full:?}");
    assert_eq!(
        full[0].iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![7, 8, 9, 10],
        "{full:?}"
    );
    assert_eq!(full[0].last().unwrap().2, "COMPLETED");
    let other: Vec<i64> = events(&seen[4], "e")
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(other, vec![7, 8, 9, 10]);
    // Finished runs leave no group behind.
    drop(clients);
    eventually(Duration::from_secs(10), || async {
        match app.state.fanout.groups() {
            0 => Ok(()),
            n => Err(format!("{n} groups")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_checked_like_requests() {
    let app = TestApp::spawn_with(|c| c.limits.max_query_depth = 3).await;
    let owner = app.user("owner").await;
    let mut ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &owner).await;
    let cases = [
        (
            "deep",
            "subscription { workflowExecutionEvents(executionId: \"x\") { execution { template { steps { id } } } } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "syntax",
            "subscription { workflowExecutionEvents(",
            "GRAPHQL_PARSE_FAILED",
        ),
        ("unknown", "subscription { nope }", "GRAPHQL_VALIDATION_FAILED"),
        // A variable it needs and was not given: an error of that field.
        (
            "missing",
            "subscription($id: ID!) { workflowExecutionEvents(executionId: $id) { kind } }",
            "BAD_USER_INPUT",
        ),
    ];
    for (id, query, code) in cases {
        ws.subscribe(id, query, json!({})).await;
        match ws.next(id, Duration::from_secs(10)).await {
            Some(Incoming::Next(p)) => assert_eq!(p["errors"][0]["extensions"]["code"], code, "{id}: {p}"),
            other => panic!("{id}: expected an error, got {other:?}"),
        }
        assert_eq!(
            ws.next(id, Duration::from_secs(10)).await,
            Some(Incoming::Complete),
            "{id}"
        );
    }
    assert_eq!(app.state.fanout.groups(), 0);
}
