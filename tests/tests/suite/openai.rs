//! The `openai` provider against a real HTTP server: an OpenAI-compatible
//! stub served by axum on a loopback port inside this test binary.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use workflows::engine::agents::AgentRegistry;
use workflows_tests::stub::{Reply, Stub, stub};
use workflows_tests::ws::{Protocol, WsClient};
use workflows_tests::{TestApp, eventually};

use crate::create_drive;
use crate::create_template;
use crate::executions::{cancel, execution, start, submit, wait_for};

const KEY: &str = "sk-test-SECRET-4f1c9a";

async fn server_with_reviewer(base_url: &str) -> (TestApp, String, String) {
    let mut registry = AgentRegistry::builtin();
    registry
        .add_from_toml(
            &format!(
                r#"
[agents.reviewer]
provider = "openai"
base_url = "{base_url}"
model = "m1"
api_key_env = "STUB_KEY"
system_prompt = "You review code for bugs."
temperature = 0.2
description = "Reviews code"
"#
            ),
            |name| (name == "STUB_KEY").then(|| KEY.to_owned()),
        )
        .unwrap();
    let app = TestApp::spawn_with_agents(|_| {}, registry).await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Models").await;
    (app, owner, drive)
}

async fn reviewer_template(app: &TestApp, owner: &str, drive: &str, metadata: Value) -> String {
    let t = create_template(
        app,
        owner,
        drive,
        json!({"name": "review", "steps": [
            {"agentId": "echo", "promptTemplate": "start", "requiresUserInput": true},
            {"agentId": "reviewer", "promptTemplate": "Review {{code}}", "metadata": metadata}
        ]}),
    )
    .await;
    t["id"].as_str().unwrap().to_owned()
}

/// Starts a run and gives it its input, so a subscriber can attach first.
async fn paused_run(app: &TestApp, owner: &str, template: &str) -> String {
    let id = start(app, owner, template, json!({"code": "fn x() {}"})).await;
    wait_for(app, owner, &id, "PAUSED").await;
    id
}

const EVENTS: &str = "subscription($id: ID!) { workflowExecutionEvents(executionId: $id) {
  kind sequence delta step { stepOrder status agentOutput } execution { status } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_the_answer_to_subscribers_and_stores_it_once() {
    let (stub, url) = stub(vec![Reply::Sse {
        pieces: vec!["Looks ", "fine", ", ship it."],
        delay: Duration::from_millis(20),
    }])
    .await;
    let (app, owner, drive) = server_with_reviewer(&url).await;
    let agents = app
        .ok(&owner, "{ agents { id provider description } }", json!({}))
        .await;
    assert!(
        agents["agents"]
            .as_array()
            .unwrap()
            .contains(&json!({"id": "reviewer", "provider": "openai", "description": "Reviews code"}))
    );

    let t = reviewer_template(&app, &owner, &drive, Value::Null).await;
    let id = paused_run(&app, &owner, &t).await;
    let mut ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &owner).await;
    let listening = app.subscribers();
    ws.subscribe("1", EVENTS, json!({"id": id})).await;
    // Deltas are not stored: a subscriber that comes late misses them.
    app.wait_subscribed(listening, 1).await;
    assert!(submit(&app, &owner, &id, json!({})).await.get("errors").is_none());
    let events: Vec<Value> = ws
        .collect("1", Duration::from_secs(10))
        .await
        .into_iter()
        .map(|p| p["data"]["workflowExecutionEvents"].clone())
        .collect();
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "STEP_OUTPUT_DELTA")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["Looks ", "fine", ", ship it."]);
    let e = wait_for(&app, &owner, &id, "COMPLETED").await;
    let out = &e["steps"][1]["agentOutput"];
    assert_eq!(out["text"], deltas.concat());
    assert_eq!(out["model"], "stub-model");
    assert_eq!(out["usage"]["total_tokens"], 8);

    let requests = stub.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    assert_eq!(headers["authorization"], format!("Bearer {KEY}").as_str());
    assert_eq!(body["model"], "m1");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "You review code for bugs."}, {"role": "user", "content": "Review fn x() {}"}])
    );
}

/// A reply in several scripts, each piece's event written in two network
/// writes cut inside one of its characters.
const SPLIT_PIECES: [&str; 4] = ["Grüße, ", "東京 and ", "naïve café — ", "🎉🚀 ✓"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn characters_split_between_network_reads_arrive_whole() {
    let (_stub, url) = stub(vec![Reply::SplitSse {
        pieces: SPLIT_PIECES.to_vec(),
        delay: Duration::from_millis(30),
    }])
    .await;
    let (app, owner, drive) = server_with_reviewer(&url).await;
    let t = reviewer_template(&app, &owner, &drive, Value::Null).await;
    let id = paused_run(&app, &owner, &t).await;
    let mut ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &owner).await;
    let listening = app.subscribers();
    ws.subscribe("1", EVENTS, json!({"id": id})).await;
    // Deltas are not stored: a subscriber that comes late misses them.
    app.wait_subscribed(listening, 1).await;
    assert!(submit(&app, &owner, &id, json!({})).await.get("errors").is_none());
    let events = ws.collect("1", Duration::from_secs(10)).await;
    let deltas: String = events
        .iter()
        .map(|p| &p["data"]["workflowExecutionEvents"])
        .filter(|e| e["kind"] == "STEP_OUTPUT_DELTA")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    let original = SPLIT_PIECES.concat();
    assert_eq!(deltas, original);
    let e = wait_for(&app, &owner, &id, "COMPLETED").await;
    assert_eq!(e["steps"][1]["agentOutput"]["text"], original);
    assert_eq!(e["accumulatedContext"]["step_1_output"]["text"], original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_never_ends_fails_the_attempt_instead_of_filling_memory() {
    // 3 MiB without a line ending: past the 1 MiB an event may hold.
    let (stub, url) = stub(vec![Reply::Unterminated { bytes: 3 * 1024 * 1024 }]).await;
    let (app, owner, drive) = server_with_reviewer(&url).await;
    let t = reviewer_template(&app, &owner, &drive, Value::Null).await;
    let id = paused_run(&app, &owner, &t).await;
    submit(&app, &owner, &id, json!({})).await;
    let e = wait_for(&app, &owner, &id, "FAILED").await;
    let msg = e["steps"][1]["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("event of more than 1048576 bytes without ending it"),
        "{msg}"
    );
    // The client stopped reading and went away.
    dropped(&stub, "the client still reads the endless event").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_whole_json_answer_when_the_server_does_not_stream() {
    let (_stub, url) = stub(vec![Reply::Json(json!({
        "model": "plain-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "No issues."}}],
        "usage": {"total_tokens": 4}
    }))])
    .await;
    let (app, owner, drive) = server_with_reviewer(&url).await;
    let t = reviewer_template(&app, &owner, &drive, Value::Null).await;
    let id = paused_run(&app, &owner, &t).await;
    submit(&app, &owner, &id, json!({})).await;
    let e = wait_for(&app, &owner, &id, "COMPLETED").await;
    assert_eq!(
        e["steps"][1]["agentOutput"],
        json!({"text": "No issues.", "model": "plain-model", "usage": {"total_tokens": 4}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_server_errors_and_rate_limits_then_succeeds() {
    let (stub, url) = stub(vec![
        Reply::Status {
            code: 500,
            body: "oops",
            retry_after: None,
        },
        Reply::Status {
            code: 429,
            body: r#"{"error": {"message": "slow down"}}"#,
            retry_after: Some("0"),
        },
        Reply::Sse {
            pieces: vec!["ok"],
            delay: Duration::ZERO,
        },
    ])
    .await;
    let (app, owner, drive) = server_with_reviewer(&url).await;
    let t = reviewer_template(
        &app,
        &owner,
        &drive,
        json!({"retry": {"maxAttempts": 3, "backoffMs": 10}}),
    )
    .await;
    let id = paused_run(&app, &owner, &t).await;
    submit(&app, &owner, &id, json!({})).await;
    let e = wait_for(&app, &owner, &id, "COMPLETED").await;
    assert_eq!(e["steps"][1]["agentOutput"]["text"], "ok");
    assert_eq!(stub.requests.lock().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_when_retries_run_out() {
    let (stub, url) = stub(vec![
        Reply::Status {
            code: 503,
            body: "down",
            retry_after: None,
        },
        Reply::Status {
            code: 502,
            body: "still down",
            retry_after: None,
        },
        Reply::Sse {
            pieces: vec!["too late"],
            delay: Duration::ZERO,
        },
    ])
    .await;
    let (app, owner, drive) = server_with_reviewer(&url).await;
    let t = reviewer_template(
        &app,
        &owner,
        &drive,
        json!({"retry": {"maxAttempts": 2, "backoffMs": 1}}),
    )
    .await;
    let id = paused_run(&app, &owner, &t).await;
    submit(&app, &owner, &id, json!({})).await;
    let e = wait_for(&app, &owner, &id, "FAILED").await;
    let msg = e["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("step 1") && msg.contains("HTTP 502") && msg.contains("2 attempts"),
        "{msg}"
    );
    assert_eq!(stub.requests.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_fails_at_once_with_the_providers_message() {
    let (stub, url) = stub(vec![
        Reply::Status {
            code: 400,
            body: r#"{"error": {"message": "model 'm1' not found"}}"#,
            retry_after: None,
        },
        Reply::Sse {
            pieces: vec!["never"],
            delay: Duration::ZERO,
        },
    ])
    .await;
    let (app, owner, drive) = server_with_reviewer(&url).await;
    let t = reviewer_template(
        &app,
        &owner,
        &drive,
        json!({"retry": {"maxAttempts": 3, "backoffMs": 1}}),
    )
    .await;
    let id = paused_run(&app, &owner, &t).await;
    submit(&app, &owner, &id, json!({})).await;
    let e = wait_for(&app, &owner, &id, "FAILED").await;
    let msg = e["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("HTTP 400") && msg.contains("model 'm1' not found"),
        "{msg}"
    );
    assert_eq!(stub.requests.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_times_out() {
    let (stub, url) = stub(vec![Reply::Hang]).await;
    let (app, owner, drive) = server_with_reviewer(&url).await;
    let t = reviewer_template(&app, &owner, &drive, json!({"timeoutMs": 300})).await;
    let id = paused_run(&app, &owner, &t).await;
    submit(&app, &owner, &id, json!({})).await;
    let e = wait_for(&app, &owner, &id, "FAILED").await;
    assert!(
        e["errorMessage"].as_str().unwrap().contains("timed out after 300 ms"),
        "{e}"
    );
    dropped(&stub, "the timed-out request was not aborted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_aborts_the_request_in_flight() {
    let (stub, url) = stub(vec![Reply::Hang]).await;
    let (app, owner, drive) = server_with_reviewer(&url).await;
    let t = reviewer_template(&app, &owner, &drive, Value::Null).await;
    let id = paused_run(&app, &owner, &t).await;
    submit(&app, &owner, &id, json!({})).await;
    eventually(Duration::from_secs(10), || async {
        match stub.requests.lock().unwrap().len() {
            0 => Err("no request reached the provider"),
            _ => Ok(()),
        }
    })
    .await;
    // In flight (the stub never answers) until the cancel below.
    assert!(!stub.dropped.load(Ordering::SeqCst));
    let r = cancel(&app, &owner, &id).await;
    assert_eq!(r["data"]["cancelWorkflowExecution"]["status"], "CANCELLED", "{r}");
    dropped(&stub, "the request in flight was not aborted").await;
    let e = execution(&app, &owner, &id).await;
    assert_eq!(e["steps"][1]["status"], "FAILED");
    assert_eq!(e["steps"][1]["errorMessage"], "cancelled");
}

/// Waits until the server has dropped its request to the stub.
async fn dropped(stub: &Stub, otherwise: &str) {
    eventually(Duration::from_secs(10), || async {
        if stub.dropped.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(otherwise)
        }
    })
    .await
}

/// Everything the server logs, from the moment this is first called.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let make = move || LogWriter(writer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(make)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_is_never_stored_logged_or_returned() {
    let logs = captured_logs();
    let (_stub, url) = stub(vec![
        Reply::Sse {
            pieces: vec!["fine"],
            delay: Duration::ZERO,
        },
        Reply::Status {
            code: 401,
            body: r#"{"error": {"message": "bad key"}}"#,
            retry_after: None,
        },
    ])
    .await;
    let (app, owner, drive) = server_with_reviewer(&url).await;
    let t = reviewer_template(&app, &owner, &drive, Value::Null).await;
    for expected in ["COMPLETED", "FAILED"] {
        let id = paused_run(&app, &owner, &t).await;
        submit(&app, &owner, &id, json!({})).await;
        let e = wait_for(&app, &owner, &id, expected).await;
        assert!(!e.to_string().contains(KEY));
    }
    let everything = app
        .ok(&owner, "{ workflowExecutions { nodes { accumulatedContext errorMessage steps { agentInput agentOutput errorMessage } } } agents { id description provider } }", json!({}))
        .await;
    assert!(!everything.to_string().contains(KEY));
    use sea_orm::EntityTrait;
    let db = app.db();
    let dumps = [
        entity::workflow_execution::Entity::find()
            .into_json()
            .all(db)
            .await
            .unwrap(),
        entity::workflow_execution_step::Entity::find()
            .into_json()
            .all(db)
            .await
            .unwrap(),
        entity::workflow_step::Entity::find().into_json().all(db).await.unwrap(),
        entity::user::Entity::find().into_json().all(db).await.unwrap(),
    ];
    assert!(dumps[1].len() >= 4, "{dumps:?}");
    for rows in dumps {
        assert!(!Value::Array(rows).to_string().contains(KEY), "a row holds the key");
    }
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(!text.contains(KEY), "a log line holds the key");
}
