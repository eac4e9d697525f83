//! Parallel step groups and approvals (docs/runs.md, "Parallel groups", "Approvals").

use std::time::Duration;

use serde_json::{Value, json};
use workflows_tests::agents::counter_calls;
use workflows_tests::ws::{Protocol, WsClient};
use workflows_tests::{TestApp, eventually};

use crate::executions::{cancel, execution, start, submit, wait_for};
use crate::{add_member, create_drive, create_template, echo, expect_bad_input, expect_code};

const EVENTS: &str = "subscription($id: ID!) { workflowExecutionEvents(executionId: $id) {
  kind sequence execution { status currentStepOrder } step { stepOrder status awaiting approvals { approve } } } }";

fn slow(ms: u64, group: &str) -> Value {
    json!({"agentId": "slow", "promptTemplate": ms.to_string(), "parallelGroup": group})
}

const DRIVE_EVENTS: &str = "subscription($d: ID!) { driveWorkflowExecutionEvents(driveId: $d) {
  kind sequence execution { id status currentStepOrder } step { stepOrder status } } }";

/// Starts a run with the drive's feed already open: its every event, from
/// the first, with sequences rising by one.
async fn run_and_watch(app: &TestApp, token: &str, drive: &str, template: &str) -> (String, Vec<Value>) {
    let mut ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, token).await;
    let listening = app.subscribers();
    ws.subscribe("1", DRIVE_EVENTS, json!({"d": drive})).await;
    app.wait_subscribed(listening, 1).await;
    let id = start(app, token, template, json!({})).await;
    let mut events = Vec::new();
    loop {
        match ws.next("1", Duration::from_secs(30)).await {
            Some(workflows_tests::ws::Incoming::Next(p)) => {
                let e = p["data"]["driveWorkflowExecutionEvents"].clone();
                if e["execution"]["id"] != id.as_str() {
                    continue;
                }
                let end = e["kind"] == "EXECUTION_UPDATED"
                    && matches!(
                        e["execution"]["status"].as_str(),
                        Some("COMPLETED" | "FAILED" | "CANCELLED")
                    );
                events.push(e);
                if end {
                    break;
                }
            }
            other => panic!("unexpected {other:?} after {events:?}"),
        }
    }
    let seqs: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gaps: {seqs:?}");
    (id, events)
}

fn step_events(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "STEP_UPDATED")
        .map(|e| format!("{}:{}", e["step"]["stepOrder"], e["step"]["status"].as_str().unwrap()))
        .collect()
}

async fn setup() -> (TestApp, String, String) {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Parallel").await;
    (app, owner, drive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_runs_its_steps_side_by_side_then_moves_on() {
    let (app, owner, drive) = setup().await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "fan out", "steps": [
            echo("first"),
            slow(600, "g"), slow(600, "g"), slow(600, "g"),
            echo("after {{step_1_output.text}} {{step_2_output.text}} {{step_3_output.text}}")
        ]}),
    )
    .await;
    let (id, events) = run_and_watch(&app, &owner, &drive, t["id"].as_str().unwrap()).await;
    let steps = step_events(&events);
    // All three start before any of them ends.
    let first_done = steps
        .iter()
        .position(|s| s.ends_with("COMPLETED") && !s.starts_with("0:"))
        .unwrap();
    let running: Vec<&String> = steps[..first_done].iter().filter(|s| s.ends_with(":RUNNING")).collect();
    for k in 1..=3 {
        assert!(running.contains(&&format!("{k}:RUNNING")), "{steps:?}");
    }
    // The last step runs after all three.
    let last_running = steps.iter().position(|s| s == "4:RUNNING").unwrap();
    for k in 1..=3 {
        assert!(steps[..last_running].contains(&format!("{k}:COMPLETED")), "{steps:?}");
    }
    // While the group runs, currentStepOrder is its first step.
    for e in events.iter().filter(|e| e["kind"] == "STEP_UPDATED") {
        let order = e["step"]["stepOrder"].as_i64().unwrap();
        if (1..=3).contains(&order) && e["step"]["status"] == "RUNNING" {
            assert_eq!(e["execution"]["currentStepOrder"], 1, "{e}");
        }
    }
    let done = execution(&app, &owner, &id).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["steps"][4]["agentOutput"]["text"], "after 600 600 600");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_steps_bounds_a_group() {
    let app = TestApp::spawn_with(|c| c.max_parallel_steps = 2).await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Parallel").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "bounded", "steps": [slow(500, "g"), slow(500, "g"), slow(500, "g")]}),
    )
    .await;
    let (_, events) = run_and_watch(&app, &owner, &drive, t["id"].as_str().unwrap()).await;
    let steps = step_events(&events);
    let mut in_flight = 0;
    let mut most = 0;
    for s in &steps {
        if s.ends_with(":RUNNING") {
            in_flight += 1;
        } else {
            in_flight -= 1;
        }
        most = most.max(in_flight);
    }
    assert_eq!(most, 2, "{steps:?}");
    assert_eq!(steps.len(), 6, "{steps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_stops_its_siblings_and_fails_the_run() {
    let (app, owner, drive) = setup().await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "one fails", "steps": [
            slow(5000, "g"),
            {"agentId": "slow", "promptTemplate": "2000", "parallelGroup": "g", "metadata": {"timeoutMs": 300}},
            slow(5000, "g"),
            echo("never")
        ]}),
    )
    .await;
    let (id, events) = run_and_watch(&app, &owner, &drive, t["id"].as_str().unwrap()).await;
    let e = execution(&app, &owner, &id).await;
    assert_eq!(e["status"], "FAILED");
    assert_eq!(e["errorMessage"], "step 1 failed: agent 'slow': timed out after 300 ms");
    let statuses: Vec<(&str, &str)> = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["status"].as_str().unwrap(), s["errorMessage"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        statuses,
        [
            ("FAILED", "cancelled: step 1 failed"),
            ("FAILED", "step 1 failed: agent 'slow': timed out after 300 ms"),
            ("FAILED", "cancelled: step 1 failed"),
            ("PENDING", "")
        ]
    );
    let last = events.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["execution"]["status"].as_str()),
        (Some("EXECUTION_UPDATED"), Some("FAILED"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_every_step_of_a_group() {
    let (app, owner, drive) = setup().await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "cancel me", "steps": [slow(10000, "g"), slow(10000, "g"), slow(10000, "g")]}),
    )
    .await;
    let id = start(&app, &owner, t["id"].as_str().unwrap(), json!({})).await;
    eventually(Duration::from_secs(10), || async {
        let e = execution(&app, &owner, &id).await;
        let all = e["steps"].as_array().unwrap().iter().all(|s| s["status"] == "RUNNING");
        if all { Ok(()) } else { Err(e) }
    })
    .await;
    let r = cancel(&app, &owner, &id).await;
    assert_eq!(r["data"]["cancelWorkflowExecution"]["status"], "CANCELLED", "{r}");
    let e = execution(&app, &owner, &id).await;
    for s in e["steps"].as_array().unwrap() {
        assert_eq!(
            (s["status"].as_str(), s["errorMessage"].as_str()),
            (Some("FAILED"), Some("cancelled")),
            "{e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_approval_rules_are_checked_when_saved() {
    let (app, owner, drive) = setup().await;
    let cases = [
        (json!([slow(1, "g"), echo("between"), slow(1, "g")]), "must be adjacent"),
        (
            json!([slow(1, "g"), {"agentId": "echo", "promptTemplate": "x", "parallelGroup": "g", "requiresUserInput": true}]),
            "cannot wait for user input or approval",
        ),
        (
            json!([slow(1, "g"), {"agentId": "echo", "promptTemplate": "x", "parallelGroup": "g", "approval": {"required": 1}}]),
            "cannot wait for user input or approval",
        ),
        (
            json!([slow(1, "g"), {"agentId": "echo", "promptTemplate": "{{step_0_output.text}}", "parallelGroup": "g"}]),
            "runs at the same time",
        ),
        (
            json!([{"agentId": "echo", "promptTemplate": "x", "approval": {"required": 0}}]),
            "required",
        ),
        (
            json!([{"agentId": "echo", "promptTemplate": "x", "approval": {"required": 1, "userIds": ["stranger"]}}]),
            "not a member",
        ),
    ];
    for (steps, message) in cases {
        let r = app
            .gql(
                &owner,
                crate::CREATE_TEMPLATE,
                json!({"input": {"driveId": drive, "name": "bad", "steps": steps}}),
            )
            .await;
        expect_bad_input(&r, message);
    }
    // A change that would split a group is refused too.
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "ok", "steps": [slow(1, "g"), slow(1, "g"), echo("last")]}),
    )
    .await;
    let ids: Vec<&str> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let r = app
        .gql(
            &owner,
            "mutation($t: ID!, $s: [ID!]!) { reorderWorkflowSteps(templateId: $t, stepIds: $s) { id } }",
            json!({"t": t["id"], "s": [ids[0], ids[2], ids[1]]}),
        )
        .await;
    expect_bad_input(&r, "must be adjacent");
    let r = app
        .gql(
            &owner,
            "mutation($id: ID!) { updateWorkflowStep(id: $id, input: { parallelGroup: \"g\" }) { parallelGroup } }",
            json!({"id": ids[2]}),
        )
        .await;
    assert_eq!(r["data"]["updateWorkflowStep"]["parallelGroup"], "g", "{r}");
    let data = app
        .ok(
            &owner,
            "query($t: ID!) { workflowTemplate(id: $t) { version steps { parallelGroup } } }",
            json!({"t": t["id"]}),
        )
        .await;
    assert_eq!(data["workflowTemplate"]["version"], 2, "{data}");
}

/// A drive with an owner, an admin (bob), members alice and carol, a viewer
/// (dave), and a template whose step 1 needs `rule`.
async fn approval_setup(rule: Value, input: bool) -> (TestApp, String, Vec<String>) {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let tokens: Vec<String> = {
        let mut v = Vec::new();
        for u in ["alice", "bob", "carol", "dave"] {
            v.push(app.user(u).await);
        }
        v
    };
    let drive = create_drive(&app, &owner, "Reviews").await;
    add_member(&app, &owner, &drive, "alice", "MEMBER").await;
    add_member(&app, &owner, &drive, "bob", "ADMIN").await;
    add_member(&app, &owner, &drive, "carol", "MEMBER").await;
    add_member(&app, &owner, &drive, "dave", "VIEWER").await;
    let tag = cuid2::create_id();
    let mut gated = json!({"agentId": "counter", "promptTemplate": format!("ship {tag}"), "approval": rule});
    if input {
        gated["requiresUserInput"] = json!(true);
        gated["promptTemplate"] = json!(format!("ship {tag} {{{{input.note}}}}"));
    }
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "gated", "isPublic": true, "steps": [echo("build"), gated]}),
    )
    .await;
    let mut out = vec![t["id"].as_str().unwrap().to_owned(), tag];
    out.extend(tokens);
    (app, owner, out)
}

const DECIDE: &str = "mutation($e: ID!, $a: Boolean!, $c: String) {
  decideWorkflowApproval(executionId: $e, approve: $a, comment: $c) { id status } }";
const PENDING: &str = "{ pendingWorkflowApprovals { id } }";
const RUN: &str = "query($id: ID!) { workflowExecution(id: $id) { status errorMessage
  steps { stepOrder status awaiting errorMessage approvals { user { id } approve comment } } } }";

fn pending_ids(data: &Value) -> Vec<String> {
    data["pendingWorkflowApprovals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_approves_what_the_role_rule_allows() {
    let (app, _owner, v) = approval_setup(json!({"required": 1}), false).await;
    let (template, tag, alice, bob, carol, dave) = (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
    let id = start(&app, alice, template, json!({})).await;
    let paused = wait_for(&app, alice, &id, "PAUSED").await;
    assert_eq!(paused["currentStepOrder"], 1);
    let run = app.ok(alice, RUN, json!({"id": id})).await;
    assert_eq!(run["workflowExecution"]["steps"][1]["awaiting"], "APPROVAL", "{run}");
    // Who is asked: carol and bob (MEMBER or higher), not the starter, not a VIEWER.
    assert_eq!(
        pending_ids(&app.ok(carol, PENDING, json!({})).await),
        std::slice::from_ref(&id)
    );
    assert_eq!(
        pending_ids(&app.ok(bob, PENDING, json!({})).await),
        std::slice::from_ref(&id)
    );
    assert!(pending_ids(&app.ok(alice, PENDING, json!({})).await).is_empty());
    assert!(pending_ids(&app.ok(dave, PENDING, json!({})).await).is_empty());
    // Carol, an approver, may see the run she is asked about.
    let seen = app.ok(carol, RUN, json!({"id": id})).await;
    assert_eq!(seen["workflowExecution"]["status"], "PAUSED", "{seen}");
    expect_code(&app.gql(alice, DECIDE, json!({"e": id, "a": true})).await, "FORBIDDEN");
    expect_code(&app.gql(dave, DECIDE, json!({"e": id, "a": true})).await, "NOT_FOUND");
    assert_eq!(counter_calls(&format!("ship {tag}")), 0, "the gated step waits");

    let r = app
        .ok(carol, DECIDE, json!({"e": id, "a": true, "c": "looks good"}))
        .await;
    assert_eq!(r["decideWorkflowApproval"]["status"], "RUNNING");
    let done = wait_for(&app, alice, &id, "COMPLETED").await;
    assert_eq!(done["steps"][1]["status"], "COMPLETED");
    assert_eq!(counter_calls(&format!("ship {tag}")), 1);
    let run = app.ok(alice, RUN, json!({"id": id})).await;
    assert_eq!(
        run["workflowExecution"]["steps"][1]["approvals"],
        json!([{"user": {"id": "carol"}, "approve": true, "comment": "looks good"}])
    );
    assert!(run["workflowExecution"]["steps"][1]["awaiting"].is_null());
    expect_code(&app.gql(carol, DECIDE, json!({"e": id, "a": true})).await, "CONFLICT");
    assert!(pending_ids(&app.ok(carol, PENDING, json!({})).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_approvers_each_decide_once_and_the_starter_may_when_allowed() {
    let rule = json!({"required": 2, "userIds": ["alice", "carol"], "allowStarter": true});
    let (app, _owner, v) = approval_setup(rule, true).await;
    let (template, _tag, alice, bob, carol, _dave) = (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
    let id = start(&app, alice, template, json!({})).await;
    wait_for(&app, alice, &id, "PAUSED").await;
    // Bob (ADMIN) sees the run but is not on the list.
    expect_code(&app.gql(bob, DECIDE, json!({"e": id, "a": true})).await, "FORBIDDEN");
    let r = app.ok(alice, DECIDE, json!({"e": id, "a": true})).await;
    assert_eq!(r["decideWorkflowApproval"]["status"], "PAUSED", "one of two approvals");
    expect_code(&app.gql(alice, DECIDE, json!({"e": id, "a": true})).await, "CONFLICT");
    let r = app.ok(carol, DECIDE, json!({"e": id, "a": true})).await;
    assert_eq!(r["decideWorkflowApproval"]["status"], "RUNNING");
    // Approved; the step now waits for its input.
    wait_for(&app, alice, &id, "PAUSED").await;
    let run = app.ok(alice, RUN, json!({"id": id})).await;
    assert_eq!(run["workflowExecution"]["steps"][1]["awaiting"], "INPUT", "{run}");
    expect_code(&app.gql(carol, DECIDE, json!({"e": id, "a": true})).await, "CONFLICT");
    let r = submit(&app, alice, &id, json!({"note": "now"})).await;
    assert!(r.get("errors").is_none(), "{r}");
    let done = wait_for(&app, alice, &id, "COMPLETED").await;
    assert!(
        done["steps"][1]["agentOutput"]["text"]
            .as_str()
            .unwrap()
            .ends_with(" now")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_fails_the_step_and_the_run_with_its_comment() {
    let (app, _owner, v) = approval_setup(json!({"required": 1, "minRole": "ADMIN"}), false).await;
    let (template, tag, alice, bob, carol, _dave) = (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
    let id = start(&app, alice, template, json!({})).await;
    wait_for(&app, alice, &id, "PAUSED").await;
    // minRole ADMIN: carol (MEMBER) may not; she cannot see the run either.
    expect_code(&app.gql(carol, DECIDE, json!({"e": id, "a": false})).await, "NOT_FOUND");
    let mut ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, alice).await;
    ws.subscribe("1", EVENTS, json!({"id": id})).await;
    let Some(workflows_tests::ws::Incoming::Next(_)) = ws.next("1", Duration::from_secs(10)).await else {
        panic!("no snapshot")
    };
    let r = app
        .ok(bob, DECIDE, json!({"e": id, "a": false, "c": "not ready"}))
        .await;
    assert_eq!(r["decideWorkflowApproval"]["status"], "FAILED");
    let events: Vec<Value> = ws
        .collect("1", Duration::from_secs(10))
        .await
        .into_iter()
        .map(|p| p["data"]["workflowExecutionEvents"].clone())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["APPROVAL_DECIDED", "STEP_UPDATED", "EXECUTION_UPDATED"]);
    assert_eq!(events[0]["step"]["stepOrder"], 1);
    assert_eq!(events[0]["step"]["approvals"], json!([{"approve": false}]));
    let run = app.ok(alice, RUN, json!({"id": id})).await["workflowExecution"].clone();
    assert_eq!(run["status"], "FAILED");
    assert_eq!(run["errorMessage"], "step 1 rejected by User bob: not ready");
    assert_eq!(run["steps"][1]["status"], "FAILED");
    assert_eq!(counter_calls(&format!("ship {tag}")), 0, "a rejected step never runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_decisions_move_the_run_once_and_cancel_races_too() {
    let (app, _owner, v) = approval_setup(json!({"required": 1}), false).await;
    let (template, tag, alice, bob, carol, _dave) = (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
    for round in 0..3 {
        let id = start(&app, alice, template, json!({})).await;
        wait_for(&app, alice, &id, "PAUSED").await;
        let (a, b) = tokio::join!(
            app.gql(bob, DECIDE, json!({"e": id, "a": true})),
            app.gql(carol, DECIDE, json!({"e": id, "a": true}))
        );
        let wins = [&a, &b].iter().filter(|r| r.get("errors").is_none()).count();
        assert_eq!(wins, 1, "{a} {b}");
        for r in [&a, &b] {
            if r.get("errors").is_some() {
                expect_code(r, "CONFLICT");
            }
        }
        wait_for(&app, alice, &id, "COMPLETED").await;
        assert_eq!(
            counter_calls(&format!("ship {tag}")),
            round + 1,
            "the step ran once per run"
        );
    }
    // A cancel racing a decision: a cancel first leaves the decision
    // CONFLICT; a decision first moves the run on, and the cancel then
    // either stops it (both succeed) or finds it finished (CONFLICT).
    let id = start(&app, alice, template, json!({})).await;
    wait_for(&app, alice, &id, "PAUSED").await;
    let (d, c) = tokio::join!(
        app.gql(carol, DECIDE, json!({"e": id, "a": true})),
        cancel(&app, alice, &id)
    );
    let ok = [&d, &c].iter().filter(|r| r.get("errors").is_none()).count();
    assert!(ok >= 1, "{d} {c}");
    for r in [&d, &c] {
        if r.get("errors").is_some() {
            expect_code(r, "CONFLICT");
        }
    }
    if d.get("errors").is_some() {
        assert_eq!(c["data"]["cancelWorkflowExecution"]["status"], "CANCELLED", "{c}");
    }
    let e = execution(&app, alice, &id).await;
    assert!(
        matches!(e["status"].as_str(), Some("CANCELLED" | "RUNNING" | "COMPLETED")),
        "{e}"
    );
}
