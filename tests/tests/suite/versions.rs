//! Template versions, duplicating templates, and re-running a failed run from
//! a step (docs/domain.md, "Template versions"; docs/runs.md, "Re-running
//! from a step").

use std::time::Duration;

use serde_json::{Value, json};
use workflows_tests::TestApp;
use workflows_tests::agents::counter_calls;
use workflows_tests::ws::{Protocol, WsClient};

use crate::executions::{cancel, execution, start, submit, wait_for};
use crate::{add_member, create_drive, create_template, echo, expect_bad_input, expect_code};

const VERSIONS: &str = "query($id: ID!, $first: Int, $after: String) { workflowTemplate(id: $id) {
  version name
  versions(first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { cursor }
    nodes { version name description category tags steps creator { id } createdAt }
  } } }";

async fn versions(app: &TestApp, token: &str, template: &str, first: i64, after: Option<&str>) -> Value {
    app.ok(token, VERSIONS, json!({"id": template, "first": first, "after": after}))
        .await["workflowTemplate"]
        .clone()
}

/// The prompts of a stored version's steps, in order.
fn prompts(version: &Value) -> Vec<String> {
    let steps = version["steps"].as_array().unwrap();
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["stepOrder"], i, "{version}");
    }
    steps
        .iter()
        .map(|s| s["promptTemplate"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_stores_a_version_and_a_failed_one_stores_none() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Versions").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "T", "category": "c1", "tags": ["a"], "steps": [echo("one"), echo("two")]}),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    let step0 = t["steps"][0]["id"].as_str().unwrap().to_owned();
    let step1 = t["steps"][1]["id"].as_str().unwrap().to_owned();

    // 2: fields; 3: a step added; 4: a prompt changed; 5: reordered; 6: a step deleted.
    app.ok(
        &owner,
        "mutation($id: ID!) { updateWorkflowTemplate(id: $id, input: { name: \"T2\", tags: [\"b\"] }) { version } }",
        json!({"id": id}),
    )
    .await;
    let added = app
        .ok(
            &owner,
            "mutation($id: ID!) { addWorkflowStep(templateId: $id, input: { agentId: \"echo\", promptTemplate: \"three\" }) { id } }",
            json!({"id": id}),
        )
        .await;
    let step2 = added["addWorkflowStep"]["id"].as_str().unwrap().to_owned();
    app.ok(
        &owner,
        "mutation($id: ID!) { updateWorkflowStep(id: $id, input: { promptTemplate: \"ONE\" }) { id } }",
        json!({"id": step0}),
    )
    .await;
    app.ok(
        &owner,
        "mutation($id: ID!, $s: [ID!]!) { reorderWorkflowSteps(templateId: $id, stepIds: $s) { version } }",
        json!({"id": id, "s": [step2, step0, step1]}),
    )
    .await;
    app.ok(
        &owner,
        "mutation($id: ID!) { deleteWorkflowStep(id: $id) }",
        json!({"id": step1}),
    )
    .await;
    // Refused changes store nothing: a forward reference, an unknown agent.
    let bad = app
        .gql(
            &owner,
            "mutation($id: ID!) { updateWorkflowStep(id: $id, input: { promptTemplate: \"{{step_1_output}}\" }) { id } }",
            json!({"id": step2}),
        )
        .await;
    expect_bad_input(&bad, "promptTemplate");
    let bad = app
        .gql(
            &owner,
            "mutation($id: ID!) { addWorkflowStep(templateId: $id, input: { agentId: \"nobody\", promptTemplate: \"x\" }) { id } }",
            json!({"id": id}),
        )
        .await;
    expect_code(&bad, "BAD_USER_INPUT");

    let all = versions(&app, &owner, id, 10, None).await;
    assert_eq!(all["version"], 6, "{all}");
    assert_eq!(all["versions"]["totalCount"], 6);
    let nodes = all["versions"]["nodes"].as_array().unwrap();
    let numbers: Vec<i64> = nodes.iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [6, 5, 4, 3, 2, 1]);
    let history: Vec<Vec<String>> = nodes.iter().rev().map(prompts).collect();
    assert_eq!(
        history,
        [
            vec!["one", "two"],
            vec!["one", "two"],
            vec!["one", "two", "three"],
            vec!["ONE", "two", "three"],
            vec!["three", "ONE", "two"],
            vec!["three", "ONE"],
        ]
    );
    let names: Vec<&str> = nodes.iter().rev().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["T", "T2", "T2", "T2", "T2", "T2"]);
    assert_eq!(nodes[5]["tags"], json!(["a"]));
    assert_eq!(nodes[0]["tags"], json!(["b"]));
    assert_eq!(nodes[5]["category"], "c1");
    assert_eq!(nodes[0]["creator"]["id"], "owner");
    assert_eq!(nodes[0]["steps"][0]["id"], step2.as_str());
    assert_eq!(nodes[0]["steps"][0]["agentId"], "echo");

    // Pages: newest first, two at a time.
    let p1 = versions(&app, &owner, id, 2, None).await;
    assert_eq!(p1["versions"]["pageInfo"]["hasNextPage"], true);
    assert_eq!(p1["versions"]["pageInfo"]["hasPreviousPage"], false);
    let after = p1["versions"]["pageInfo"]["endCursor"].as_str().unwrap().to_owned();
    let p2 = versions(&app, &owner, id, 2, Some(&after)).await;
    let n2: Vec<i64> = p2["versions"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(n2, [4, 3]);
    assert_eq!(p2["versions"]["pageInfo"]["hasPreviousPage"], true);
    let bad = app
        .gql(&owner, VERSIONS, json!({"id": id, "first": 2, "after": "nonsense"}))
        .await;
    assert_eq!(workflows_tests::error_code(&bad), "BAD_USER_INPUT", "{bad}");
    assert!(workflows_tests::error_message(&bad).contains("after"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_version_runs_as_it_was_and_can_be_restored() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Versions").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "Greeter", "description": "first", "steps": [echo("v1 hello {{who}}"), echo("v1 bye")]}),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_owned();
    let first_step = t["steps"][0]["id"].as_str().unwrap().to_owned();
    app.ok(
        &owner,
        "mutation($id: ID!) { updateWorkflowStep(id: $id, input: { promptTemplate: \"v2 hi {{who}}\" }) { id } }",
        json!({"id": first_step}),
    )
    .await;
    app.ok(
        &owner,
        "mutation($id: ID!) { addWorkflowStep(templateId: $id, input: { agentId: \"echo\", promptTemplate: \"v3 extra\" }) { id } }",
        json!({"id": id}),
    )
    .await;

    app.ok(
        &owner,
        "mutation($id: ID!) { updateWorkflowTemplate(id: $id, input: { name: \"Renamed\" }) { version } }",
        json!({"id": id}),
    )
    .await;
    let found = |search: &'static str| {
        let app = &app;
        let owner = &owner;
        let drive = &drive;
        async move {
            app.ok(
                owner,
                "query($d: ID!, $s: String) { workflowTemplates(driveId: $d, filter: { search: $s }) { totalCount } }",
                json!({"d": drive, "s": search}),
            )
            .await["workflowTemplates"]["totalCount"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!((found("GREETER").await, found("renamed").await), (0, 1));

    let run = |version: Option<i64>| {
        let app = &app;
        let owner = &owner;
        let id = &id;
        async move {
            let data = app
                .ok(
                    owner,
                    "mutation($t: ID!, $v: Int) { startWorkflowExecution(templateId: $t, context: { who: \"ann\" }, version: $v) { id templateVersion initialContext } }",
                    json!({"t": id, "v": version}),
                )
                .await;
            let e = &data["startWorkflowExecution"];
            assert_eq!(e["initialContext"], json!({"who": "ann"}));
            let done = wait_for(app, owner, e["id"].as_str().unwrap(), "COMPLETED").await;
            let prompts: Vec<String> = done["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["agentInput"]["prompt"].as_str().unwrap().to_owned())
                .collect();
            (e["templateVersion"].as_i64().unwrap(), prompts, done)
        }
    };
    let (v, p, done) = run(Some(1)).await;
    assert_eq!((v, p), (1, vec!["v1 hello ann".to_owned(), "v1 bye".to_owned()]));
    // The template step that still exists stays linked; it shows today's prompt.
    assert_eq!(done["steps"][0]["stepDefinition"]["id"], first_step.as_str());
    let (v, p, _) = run(None).await;
    assert_eq!(
        (v, p),
        (
            4,
            vec!["v2 hi ann".to_owned(), "v1 bye".to_owned(), "v3 extra".to_owned()]
        )
    );
    let bad = app
        .gql(
            &owner,
            "mutation($t: ID!) { startWorkflowExecution(templateId: $t, version: 9) { id } }",
            json!({"t": id}),
        )
        .await;
    expect_bad_input(&bad, "version");

    // Restoring version 1 makes it current again, as version 5, name and all.
    let restored = app
        .ok(
            &owner,
            "mutation($t: ID!) { restoreWorkflowTemplateVersion(templateId: $t, version: 1) {
               version name description steps { id stepOrder promptTemplate } } }",
            json!({"t": id}),
        )
        .await["restoreWorkflowTemplateVersion"]
        .clone();
    assert_eq!(
        (
            restored["version"].as_i64(),
            restored["name"].as_str(),
            restored["description"].as_str()
        ),
        (Some(5), Some("Greeter"), Some("first"))
    );
    assert_eq!((found("GREETER").await, found("renamed").await), (1, 0));
    let prompts: Vec<&str> = restored["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["promptTemplate"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["v1 hello {{who}}", "v1 bye"]);
    assert_eq!(
        restored["steps"][0]["id"],
        first_step.as_str(),
        "a step that still exists keeps its id"
    );
    let latest = versions(&app, &owner, &id, 1, None).await;
    assert_eq!(prompts_of_version(&latest), ["v1 hello {{who}}", "v1 bye"]);
    let (v, p, _) = run(None).await;
    assert_eq!((v, p), (5, vec!["v1 hello ann".to_owned(), "v1 bye".to_owned()]));
    let bad = app
        .gql(
            &owner,
            "mutation($t: ID!) { restoreWorkflowTemplateVersion(templateId: $t, version: 0) { id } }",
            json!({"t": id}),
        )
        .await;
    expect_bad_input(&bad, "version");
    assert_eq!(
        versions(&app, &owner, &id, 1, None).await["version"],
        5,
        "a refused restore stores nothing"
    );
}

fn prompts_of_version(t: &Value) -> Vec<String> {
    prompts(&t["versions"]["nodes"][0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_copies_into_drives_where_the_viewer_may_create() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let bob = app.user("bob").await;
    let source_drive = create_drive(&app, &owner, "Source").await;
    let bobs_drive = create_drive(&app, &bob, "Bob's").await;
    let viewer_drive = create_drive(&app, &owner, "Bob views").await;
    let foreign = create_drive(&app, &owner, "Not Bob's").await;
    add_member(&app, &owner, &source_drive, "bob", "VIEWER").await;
    add_member(&app, &owner, &viewer_drive, "bob", "VIEWER").await;
    let public = create_template(
        &app,
        &owner,
        &source_drive,
        json!({"name": "Shared", "description": "d", "category": "c", "tags": ["x", "y"], "isPublic": true,
               "steps": [echo("a {{k}}"), echo("b {{step_0_output.text}}")]}),
    )
    .await;
    let private = create_template(
        &app,
        &owner,
        &source_drive,
        json!({"name": "Mine", "steps": [echo("p")]}),
    )
    .await;
    const DUP: &str =
        "mutation($id: ID!, $d: ID, $n: String) { duplicateWorkflowTemplate(id: $id, driveId: $d, name: $n) {
      id name description category tags isPublic driveId createdBy version parentTemplateId
      steps { id stepOrder agentId promptTemplate }
      versions { totalCount nodes { version steps } } } }";
    let copy = app
        .ok(
            &bob,
            DUP,
            json!({"id": public["id"], "d": bobs_drive, "n": "Bob's copy"}),
        )
        .await["duplicateWorkflowTemplate"]
        .clone();
    assert_eq!(copy["name"], "Bob's copy");
    assert_eq!(
        (
            copy["driveId"].as_str(),
            copy["createdBy"].as_str(),
            copy["version"].as_i64()
        ),
        (Some(bobs_drive.as_str()), Some("bob"), Some(1))
    );
    assert_eq!(copy["parentTemplateId"], public["id"]);
    assert_eq!(
        (
            &copy["description"],
            &copy["category"],
            &copy["tags"],
            &copy["isPublic"]
        ),
        (&json!("d"), &json!("c"), &json!(["x", "y"]), &json!(true))
    );
    let prompts: Vec<&str> = copy["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["promptTemplate"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["a {{k}}", "b {{step_0_output.text}}"]);
    assert_ne!(
        copy["steps"][0]["id"], public["steps"][0]["id"],
        "the copy has steps of its own"
    );
    assert_eq!(copy["versions"]["totalCount"], 1);
    assert_eq!(copy["versions"]["nodes"][0]["steps"].as_array().unwrap().len(), 2);

    // By default: the same drive and name; a MEMBER there may.
    add_member(&app, &owner, &source_drive, "bob", "MEMBER").await;
    let same = app.ok(&bob, DUP, json!({"id": public["id"]})).await["duplicateWorkflowTemplate"].clone();
    assert_eq!(
        (same["driveId"].as_str(), same["name"].as_str()),
        (Some(source_drive.as_str()), Some("Shared"))
    );

    // A VIEWER of the target drive may not; a drive Bob is not in does not exist for him.
    let r = app.gql(&bob, DUP, json!({"id": public["id"], "d": viewer_drive})).await;
    expect_code(&r, "FORBIDDEN");
    let r = app.gql(&bob, DUP, json!({"id": public["id"], "d": foreign})).await;
    expect_code(&r, "NOT_FOUND");
    // A template Bob cannot see does not exist for him.
    let r = app.gql(&bob, DUP, json!({"id": private["id"], "d": bobs_drive})).await;
    expect_code(&r, "NOT_FOUND");
    let r = app
        .gql(&bob, DUP, json!({"id": public["id"], "d": bobs_drive, "n": "  "}))
        .await;
    expect_bad_input(&r, "name");
    // The owner duplicates a private template of its own.
    let own = app.ok(&owner, DUP, json!({"id": private["id"]})).await["duplicateWorkflowTemplate"].clone();
    assert_eq!(own["isPublic"], false);
    let count: Value = app
        .ok(
            &bob,
            "query($d: ID!) { workflowTemplates(driveId: $d) { totalCount } }",
            json!({"d": bobs_drive}),
        )
        .await;
    assert_eq!(
        count["workflowTemplates"]["totalCount"], 1,
        "refused copies wrote nothing"
    );
}

const RETRY: &str = "mutation($e: ID!, $from: Int) { retryWorkflowExecution(executionId: $e, fromStepOrder: $from) {
  id status templateVersion initialContext retryOf { id } } }";

const RUN: &str = "query($id: ID!) { workflowExecution(id: $id) {
  id status errorMessage accumulatedContext initialContext templateVersion
  retryOf { id status } retries { id }
  steps { stepOrder status reused agentInput agentOutput startedAt completedAt } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_retried_from_its_failed_step_or_an_earlier_one() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Retries").await;
    let tag = cuid2::create_id();
    // Step 2's agent fails its first call with that prompt, then succeeds.
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "Flaky pipeline", "steps": [
            {"agentId": "counter", "promptTemplate": format!("a {tag} {{{{x}}}}")},
            {"agentId": "counter", "promptTemplate": "b {{step_0_output.text}}"},
            {"agentId": "flaky", "promptTemplate": "1|c {{step_1_output.text}}"},
            {"agentId": "counter", "promptTemplate": "d {{step_2_output.text}}"}
        ]}),
    )
    .await;
    let a = format!("a {tag} 1");
    let b = format!("b {a}");
    let c = format!("1|c {b}");
    let d = format!("d {c}");
    let original = start(&app, &owner, t["id"].as_str().unwrap(), json!({"x": 1})).await;
    wait_for(&app, &owner, &original, "FAILED").await;
    let before = app.ok(&owner, RUN, json!({"id": original})).await["workflowExecution"].clone();
    assert!(
        before["errorMessage"].as_str().unwrap().starts_with("step 2 failed"),
        "{before}"
    );
    assert_eq!((counter_calls(&a), counter_calls(&b)), (1, 1));

    // Someone who cannot see the run cannot retry it.
    let stranger = app.user("stranger").await;
    expect_code(&app.gql(&stranger, RETRY, json!({"e": original})).await, "NOT_FOUND");
    // Out of range: after the failed step, or negative.
    for from in [3, -1] {
        let r = app.gql(&owner, RETRY, json!({"e": original, "from": from})).await;
        expect_bad_input(&r, "fromStepOrder");
    }

    let retry = app.ok(&owner, RETRY, json!({"e": original})).await["retryWorkflowExecution"].clone();
    assert_eq!(retry["status"], "RUNNING");
    assert_eq!(retry["retryOf"]["id"], original.as_str());
    assert_eq!(retry["initialContext"], json!({"x": 1}));
    assert_eq!(retry["templateVersion"], 1);
    let id = retry["id"].as_str().unwrap().to_owned();
    wait_for(&app, &owner, &id, "COMPLETED").await;
    let r = app.ok(&owner, RUN, json!({"id": id})).await["workflowExecution"].clone();
    let steps = r["steps"].as_array().unwrap();
    let reused: Vec<bool> = steps.iter().map(|s| s["reused"].as_bool().unwrap()).collect();
    assert_eq!(reused, [true, true, false, false]);
    // The reused steps are the original's records, as they ended.
    for i in 0..2 {
        for field in ["status", "agentInput", "agentOutput", "startedAt", "completedAt"] {
            assert_eq!(steps[i][field], before["steps"][i][field], "step {i} {field}");
        }
    }
    let prompts: Vec<&str> = steps
        .iter()
        .map(|s| s["agentInput"]["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, [a.as_str(), b.as_str(), c.as_str(), d.as_str()]);
    // Steps 0 and 1 never ran again; step 2 ran a second time, 3 once.
    assert_eq!((counter_calls(&a), counter_calls(&b), counter_calls(&d)), (1, 1, 1));
    assert_eq!(steps[2]["agentOutput"], json!({"text": c, "attempts": 2}));
    assert_eq!(
        r["accumulatedContext"],
        json!({
            "x": 1,
            "step_0_output": {"text": a, "calls": 1},
            "step_1_output": {"text": b, "calls": 1},
            "step_2_output": {"text": c, "attempts": 2},
            "step_3_output": {"text": d, "calls": 1}
        })
    );
    // The original is unchanged, and links to its retry.
    let after = app.ok(&owner, RUN, json!({"id": original})).await["workflowExecution"].clone();
    assert_eq!(after["status"], "FAILED");
    assert_eq!(after["steps"], before["steps"]);
    assert_eq!(after["retries"], json!([{"id": id}]));

    // From an earlier step: step 1 runs again (its second call), step 0 is reused.
    let again = app.ok(&owner, RETRY, json!({"e": original, "from": 1})).await["retryWorkflowExecution"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(&app, &owner, &again, "COMPLETED").await;
    let r = app.ok(&owner, RUN, json!({"id": again})).await["workflowExecution"].clone();
    let reused: Vec<bool> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reused"].as_bool().unwrap())
        .collect();
    assert_eq!(reused, [true, false, false, false]);
    assert_eq!((counter_calls(&a), counter_calls(&b)), (1, 2));
    assert_eq!(r["accumulatedContext"]["step_1_output"], json!({"text": b, "calls": 2}));
    assert_eq!(r["accumulatedContext"]["step_0_output"], json!({"text": a, "calls": 1}));
    let links = app.ok(&owner, RUN, json!({"id": original})).await["workflowExecution"]["retries"].clone();
    assert_eq!(links, json!([{"id": id}, {"id": again}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_streams_like_any_run_and_keeps_paused_input() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Retries").await;
    let tag = cuid2::create_id();
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "Ask then fail", "steps": [
            {"agentId": "echo", "promptTemplate": "ask {{input.q}}", "requiresUserInput": true},
            {"agentId": "flaky", "promptTemplate": format!("1|{tag} {{{{step_0_input.q}}}}")},
            {"agentId": "slow", "promptTemplate": "1000"}
        ]}),
    )
    .await;
    let original = start(&app, &owner, t["id"].as_str().unwrap(), json!({})).await;
    wait_for(&app, &owner, &original, "PAUSED").await;
    // Retrying a PAUSED run is refused.
    expect_code(&app.gql(&owner, RETRY, json!({"e": original})).await, "CONFLICT");
    let r = submit(&app, &owner, &original, json!({"q": "why"})).await;
    assert!(r.get("errors").is_none(), "{r}");
    wait_for(&app, &owner, &original, "FAILED").await;

    let retry = app.ok(&owner, RETRY, json!({"e": original})).await["retryWorkflowExecution"].clone();
    let id = retry["id"].as_str().unwrap().to_owned();
    let mut ws = WsClient::connect_with_token(&app.base, Protocol::TransportWs, &owner).await;
    ws.subscribe(
        "1",
        "subscription($id: ID!) { workflowExecutionEvents(executionId: $id) {
           kind sequence execution { status } step { stepOrder status reused } } }",
        json!({"id": id}),
    )
    .await;
    let events: Vec<Value> = ws
        .collect("1", Duration::from_secs(20))
        .await
        .into_iter()
        .map(|p| p["data"]["workflowExecutionEvents"].clone())
        .collect();
    assert_eq!(events[0]["kind"], "SNAPSHOT");
    let seqs: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let last = events.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["execution"]["status"].as_str()),
        (Some("EXECUTION_UPDATED"), Some("COMPLETED"))
    );
    // The reused step never shows up as running.
    assert!(
        events.iter().all(|e| e["step"]["stepOrder"] != 0),
        "the reused step had events: {events:?}"
    );
    let done = execution(&app, &owner, &id).await;
    assert_eq!(done["accumulatedContext"]["step_0_input"], json!({"q": "why"}));
    assert_eq!(done["steps"][0]["userInput"], json!({"q": "why"}));
    assert_eq!(done["steps"][1]["agentInput"]["prompt"], format!("1|{tag} why"));

    // A COMPLETED run cannot be retried.
    expect_code(&app.gql(&owner, RETRY, json!({"e": id})).await, "CONFLICT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_runs_are_not_retried_and_cancelled_ones_are() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Retries").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "Slow", "steps": [echo("first"), {"agentId": "slow", "promptTemplate": "5000"}, echo("last")]}),
    )
    .await;
    let run = start(&app, &owner, t["id"].as_str().unwrap(), json!({"k": "v"})).await;
    // Wait for the slow step to be in flight.
    crate::executions::wait_for_step(&app, &owner, &run, 1).await;
    expect_code(&app.gql(&owner, RETRY, json!({"e": run})).await, "CONFLICT");
    let c = cancel(&app, &owner, &run).await;
    assert!(c.get("errors").is_none(), "{c}");
    // By default from the step that was in flight.
    let retry = app.ok(&owner, RETRY, json!({"e": run})).await["retryWorkflowExecution"].clone();
    let e = execution(&app, &owner, retry["id"].as_str().unwrap()).await;
    let statuses: Vec<&str> = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[0], "COMPLETED");
    assert_ne!(statuses[1], "FAILED", "the cancelled step runs again: {e}");
    assert_eq!(e["accumulatedContext"]["step_0_output"], json!({"text": "first"}));
    assert_eq!(e["accumulatedContext"]["k"], "v");
    let c = cancel(&app, &owner, retry["id"].as_str().unwrap()).await;
    assert!(c.get("errors").is_none(), "{c}");
}
