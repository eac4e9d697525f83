//! Runs through the real server: the runner, input, rendering, conditions,
//! retries, timeouts, cancel, races, and runs keeping their definition.

use std::time::Duration;

use serde_json::{Value, json};
use workflows_tests::{TestApp, eventually};

use crate::{add_member, create_drive, create_template, echo, expect_bad_input, expect_code};

pub const EXECUTION: &str = "query($id: ID!) { workflowExecution(id: $id) {
  id status currentStepOrder accumulatedContext startedAt pausedAt completedAt failedAt errorMessage
  steps { id stepOrder status agentInput agentOutput userInput startedAt completedAt errorMessage workflowStepId stepDefinition { id } }
} }";

/// The README's "Code Review Workflow", with outputs read through `.text`.
pub fn code_review() -> Value {
    json!({
        "name": "Code Review Workflow",
        "description": "Automated code review with security analysis",
        "category": "code-review",
        "tags": ["security", "quality", "automated"],
        "isPublic": true,
        "steps": [
            echo("Review the following code for bugs and improvements: {{code}}"),
            echo("Analyze security vulnerabilities in: {{code}}. Previous review: {{step_0_output.text}}"),
            {
                "agentId": "echo",
                "promptTemplate": "Generate documentation based on review: {{step_0_output.text}} and security analysis: {{step_1_output.text}} at {{input.detailLevel}}",
                "requiresUserInput": true,
                "inputSchema": {
                    "type": "object",
                    "properties": {
                        "includeExamples": {"type": "boolean"},
                        "detailLevel": {"type": "string", "enum": ["basic", "detailed", "comprehensive"]}
                    },
                    "required": ["detailLevel"]
                }
            }
        ]
    })
}

pub async fn start(app: &TestApp, token: &str, template: &str, context: Value) -> String {
    let data = app
        .ok(
            token,
            "mutation($t: ID!, $c: JSON) { startWorkflowExecution(templateId: $t, context: $c) { id status currentStepOrder startedAt } }",
            json!({"t": template, "c": context}),
        )
        .await;
    assert_eq!(data["startWorkflowExecution"]["status"], "RUNNING", "{data}");
    data["startWorkflowExecution"]["id"].as_str().unwrap().to_owned()
}

pub async fn execution(app: &TestApp, token: &str, id: &str) -> Value {
    app.ok(token, EXECUTION, json!({"id": id})).await["workflowExecution"].clone()
}

/// Polls until the execution has `status` (10 s at most).
pub async fn wait_for(app: &TestApp, token: &str, id: &str, status: &str) -> Value {
    eventually(Duration::from_secs(10), || async {
        let e = execution(app, token, id).await;
        if e["status"] == status { Ok(e) } else { Err(e) }
    })
    .await
}

/// Polls until step `index` of the execution is RUNNING (10 s at most).
pub async fn wait_for_step(app: &TestApp, token: &str, id: &str, index: usize) -> Value {
    eventually(Duration::from_secs(10), || async {
        let e = execution(app, token, id).await;
        if e["steps"][index]["status"] == "RUNNING" {
            Ok(e)
        } else {
            Err(e)
        }
    })
    .await
}

pub async fn submit(app: &TestApp, token: &str, id: &str, input: Value) -> Value {
    app.gql(
        token,
        "mutation($e: ID!, $i: JSON!) { submitWorkflowUserInput(executionId: $e, input: $i) { id status } }",
        json!({"e": id, "i": input}),
    )
    .await
}

pub async fn cancel(app: &TestApp, token: &str, id: &str) -> Value {
    app.gql(
        token,
        "mutation($e: ID!) { cancelWorkflowExecution(executionId: $e) { id status } }",
        json!({"e": id}),
    )
    .await
}

async fn setup() -> (TestApp, String, String) {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Runs").await;
    (app, owner, drive)
}

/// Runs a one-off template and waits for it to end with `status`.
async fn run_steps(app: &TestApp, token: &str, drive: &str, steps: Value, context: Value, status: &str) -> Value {
    let t = create_template(app, token, drive, json!({"name": "t", "steps": steps})).await;
    let id = start(app, token, t["id"].as_str().unwrap(), context).await;
    wait_for(app, token, &id, status).await
}

const CODE: &str = "function hello() { console.log(\"world\"); }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn design_example_pauses_validates_input_and_completes() {
    let (app, owner, drive) = setup().await;
    let t = create_template(&app, &owner, &drive, code_review()).await;
    let id = start(&app, &owner, t["id"].as_str().unwrap(), json!({"code": CODE})).await;
    let e = wait_for(&app, &owner, &id, "PAUSED").await;

    let review = format!("Review the following code for bugs and improvements: {CODE}");
    let security = format!("Analyze security vulnerabilities in: {CODE}. Previous review: {review}");
    assert_eq!(e["currentStepOrder"], 2);
    assert!(e["pausedAt"].is_string());
    let steps = e["steps"].as_array().unwrap();
    assert_eq!(steps[0]["status"], "COMPLETED");
    assert_eq!(steps[0]["agentInput"]["prompt"], review);
    assert_eq!(steps[0]["agentOutput"], json!({"text": review}));
    assert_eq!(steps[1]["agentOutput"], json!({"text": security}));
    assert_eq!(steps[2]["status"], "PENDING");
    assert_eq!(e["accumulatedContext"]["step_0_output"], json!({"text": review}));
    // agentInput holds the prompt, not a copy of the context.
    assert!(steps[1]["agentInput"].get("context").is_none());

    // Invalid input: every problem listed, nothing changes.
    let bad = submit(
        &app,
        &owner,
        &id,
        json!({"detailLevel": "verbose", "includeExamples": "yes"}),
    )
    .await;
    expect_code(&bad, "BAD_USER_INPUT");
    let problems = bad["errors"][0]["extensions"]["validationErrors"].as_array().unwrap();
    let paths: Vec<&str> = problems.iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert!(
        paths.contains(&"/detailLevel") && paths.contains(&"/includeExamples"),
        "{bad}"
    );
    assert!(
        problems
            .iter()
            .all(|p| p["message"].as_str().is_some_and(|m| !m.is_empty()))
    );
    let missing = submit(&app, &owner, &id, json!({})).await;
    expect_code(&missing, "BAD_USER_INPUT");
    let still = execution(&app, &owner, &id).await;
    assert_eq!(still["status"], "PAUSED");
    assert_eq!(still["steps"][2]["userInput"], Value::Null);

    let ok = submit(&app, &owner, &id, json!({"detailLevel": "basic"})).await;
    assert!(ok.get("errors").is_none(), "{ok}");
    let done = wait_for(&app, &owner, &id, "COMPLETED").await;
    assert!(done["completedAt"].is_string());
    assert_eq!(done["steps"][2]["userInput"], json!({"detailLevel": "basic"}));
    assert_eq!(
        done["steps"][2]["agentOutput"]["text"],
        format!("Generate documentation based on review: {review} and security analysis: {security} at basic")
    );
    assert_eq!(
        done["accumulatedContext"]["step_2_input"],
        json!({"detailLevel": "basic"})
    );
    assert!(
        done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "COMPLETED")
    );

    // Finished: input and cancel conflict.
    expect_code(
        &submit(&app, &owner, &id, json!({"detailLevel": "basic"})).await,
        "CONFLICT",
    );
    expect_code(&cancel(&app, &owner, &id).await, "CONFLICT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_every_documented_form() {
    let (app, owner, drive) = setup().await;
    let ctx = json!({
        "name": "Ada", "items": ["x", {"k": 1}], "user": {"profile": {"city": "Paris"}},
        "obj": {"b": 2, "a": [true, null]}, "n": 4.5, "nothing": null
    });
    let e = run_steps(
        &app,
        &owner,
        &drive,
        json!([
            echo("{{name}}|{{ name }}|{{  user.profile.city }}|{{items.0}}|{{items.1}}|{{obj}}|{{n}}|{{nothing}}"),
            echo("{{step_0_output.text}}"),
            {"agentId": "echo", "promptTemplate": "{{input.choice}} {{input}}", "requiresUserInput": true},
        ]),
        ctx,
        "PAUSED",
    )
    .await;
    let expected = r#"Ada|Ada|Paris|x|{"k":1}|{"a":[true,null],"b":2}|4.5|null"#;
    assert_eq!(e["steps"][0]["agentOutput"]["text"], expected);
    assert_eq!(e["steps"][1]["agentOutput"]["text"], expected);
    let id = e["id"].as_str().unwrap().to_owned();
    let r = submit(&app, &owner, &id, json!({"choice": "yes", "z": 1, "a": 2})).await;
    assert!(r.get("errors").is_none(), "{r}");
    let done = wait_for(&app, &owner, &id, "COMPLETED").await;
    assert_eq!(
        done["steps"][2]["agentOutput"]["text"],
        r#"yes {"a":2,"choice":"yes","z":1}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_variable_fails_the_step_naming_it() {
    let (app, owner, drive) = setup().await;
    let e = run_steps(
        &app,
        &owner,
        &drive,
        json!([echo("ok"), echo("Hello {{user.missing}}"), echo("never")]),
        json!({"user": {}}),
        "FAILED",
    )
    .await;
    let msg = e["errorMessage"].as_str().unwrap();
    assert!(msg.contains("step 1") && msg.contains("user.missing"), "{msg}");
    assert!(e["failedAt"].is_string());
    assert_eq!(e["steps"][0]["status"], "COMPLETED");
    assert_eq!(e["steps"][1]["status"], "FAILED");
    assert!(e["steps"][1]["errorMessage"].as_str().unwrap().contains("user.missing"));
    assert_eq!(e["steps"][2]["status"], "PENDING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_and_json_agents() {
    let (app, owner, drive) = setup().await;
    let e = run_steps(
        &app,
        &owner,
        &drive,
        json!([{"agentId": "json", "promptTemplate": "{\"score\": {{n}}}"}, {"agentId": "fail", "promptTemplate": "score was {{step_0_output.score}}"}]),
        json!({"n": 7}),
        "FAILED",
    )
    .await;
    assert_eq!(e["steps"][0]["agentOutput"], json!({"score": 7}));
    let msg = e["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("step 1") && msg.contains("fail") && msg.contains("score was 7"),
        "{msg}"
    );
    assert_eq!(e["steps"][1]["errorMessage"], e["errorMessage"]);

    let e = run_steps(
        &app,
        &owner,
        &drive,
        json!([{"agentId": "json", "promptTemplate": "not json"}]),
        json!({}),
        "FAILED",
    )
    .await;
    assert!(e["errorMessage"].as_str().unwrap().contains("not JSON"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_condition_skips_the_step() {
    let (app, owner, drive) = setup().await;
    let e = run_steps(
        &app,
        &owner,
        &drive,
        json!([
            {"agentId": "echo", "promptTemplate": "big", "condition": {">": [{"var": "size"}, 10]}},
            {"agentId": "echo", "promptTemplate": "small", "condition": {"<=": [{"var": "size"}, 10]}},
            {"agentId": "echo", "promptTemplate": "last", "condition": {"==": [{"var": "step_1_output.text"}, "nope"]}},
        ]),
        json!({"size": 3}),
        "COMPLETED",
    )
    .await;
    let status: Vec<&str> = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["SKIPPED", "COMPLETED", "SKIPPED"]);
    assert!(e["accumulatedContext"].get("step_0_output").is_none());
    assert_eq!(e["accumulatedContext"]["step_1_output"], json!({"text": "small"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_then_succeeds_or_gives_up_and_times_out() {
    let (app, owner, drive) = setup().await;
    let e = run_steps(
        &app,
        &owner,
        &drive,
        json!([{"agentId": "flaky", "promptTemplate": "2|{{x}}", "metadata": {"retry": {"maxAttempts": 3, "backoffMs": 10}}}]),
        json!({"x": "a"}),
        "COMPLETED",
    )
    .await;
    assert_eq!(e["steps"][0]["agentOutput"], json!({"text": "2|a", "attempts": 3}));

    let e = run_steps(
        &app,
        &owner,
        &drive,
        json!([{"agentId": "flaky", "promptTemplate": "5|{{x}}", "metadata": {"retry": {"maxAttempts": 2, "backoffMs": 1}}}]),
        json!({"x": "b"}),
        "FAILED",
    )
    .await;
    let msg = e["errorMessage"].as_str().unwrap();
    assert!(msg.contains("flaky failure 2") && msg.contains("2 attempts"), "{msg}");

    // Without `retry`, one attempt.
    let e = run_steps(
        &app,
        &owner,
        &drive,
        json!([{"agentId": "flaky", "promptTemplate": "1|c"}]),
        json!({}),
        "FAILED",
    )
    .await;
    assert!(e["errorMessage"].as_str().unwrap().contains("flaky failure 1"));

    let e = run_steps(
        &app,
        &owner,
        &drive,
        json!([{"agentId": "slow", "promptTemplate": "5000", "metadata": {"timeoutMs": 100}}]),
        json!({}),
        "FAILED",
    )
    .await;
    assert!(
        e["errorMessage"].as_str().unwrap().contains("timed out after 100 ms"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_paused_and_running_runs() {
    let (app, owner, drive) = setup().await;
    let t = create_template(&app, &owner, &drive, code_review()).await;
    let id = start(&app, &owner, t["id"].as_str().unwrap(), json!({"code": "x"})).await;
    wait_for(&app, &owner, &id, "PAUSED").await;
    let r = cancel(&app, &owner, &id).await;
    assert_eq!(r["data"]["cancelWorkflowExecution"]["status"], "CANCELLED", "{r}");
    let e = execution(&app, &owner, &id).await;
    assert_eq!(e["status"], "CANCELLED");
    assert_eq!(e["steps"][2]["status"], "PENDING");
    expect_code(&cancel(&app, &owner, &id).await, "CONFLICT");
    expect_code(
        &submit(&app, &owner, &id, json!({"detailLevel": "basic"})).await,
        "CONFLICT",
    );

    // A step in flight is stopped at once and never completes.
    let slow = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "slow", "steps": [{"agentId": "slow", "promptTemplate": "60000"}, echo("after")]}),
    )
    .await;
    let id = start(&app, &owner, slow["id"].as_str().unwrap(), json!({})).await;
    wait_for_step(&app, &owner, &id, 0).await;
    let began = std::time::Instant::now();
    let r = cancel(&app, &owner, &id).await;
    assert_eq!(r["data"]["cancelWorkflowExecution"]["status"], "CANCELLED", "{r}");
    assert!(began.elapsed() < Duration::from_secs(5));
    // The cancel answered once its change was stored: read it at once (the
    // step's agent would take a minute to answer).
    let e = execution(&app, &owner, &id).await;
    assert_eq!(e["status"], "CANCELLED");
    assert_eq!(e["steps"][0]["status"], "FAILED");
    assert_eq!(e["steps"][0]["errorMessage"], "cancelled");
    assert_eq!(e["steps"][1]["status"], "PENDING");
    expect_code(&cancel(&app, &owner, &id).await, "CONFLICT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_template_mid_run_changes_nothing_for_the_run() {
    let (app, owner, drive) = setup().await;
    let t = create_template(&app, &owner, &drive, code_review()).await;
    let tid = t["id"].as_str().unwrap();
    let id = start(&app, &owner, tid, json!({"code": "x"})).await;
    let paused = wait_for(&app, &owner, &id, "PAUSED").await;

    let steps = t["steps"].as_array().unwrap();
    let (s0, s1, s2) = (
        steps[0]["id"].as_str().unwrap(),
        steps[1]["id"].as_str().unwrap(),
        steps[2]["id"].as_str().unwrap(),
    );
    let r = app
        .gql(
            &owner,
            "mutation($id: ID!) { updateWorkflowStep(id: $id, input: { promptTemplate: \"changed\", requiresUserInput: false, inputSchema: null }) { id } }",
            json!({"id": s2}),
        )
        .await;
    assert!(r.get("errors").is_none(), "{r}");
    let r = app
        .gql(
            &owner,
            "mutation($t: ID!, $ids: [ID!]!) { reorderWorkflowSteps(templateId: $t, stepIds: $ids) { id } }",
            json!({"t": tid, "ids": [s2, s0, s1]}),
        )
        .await;
    assert!(r.get("errors").is_none(), "{r}");
    let r = app
        .gql(
            &owner,
            "mutation($id: ID!) { deleteWorkflowStep(id: $id) }",
            json!({"id": s0}),
        )
        .await;
    assert!(r.get("errors").is_none(), "{r}");

    // The run still waits for the old step 2's input, validated by its old schema.
    expect_code(
        &submit(&app, &owner, &id, json!({"detailLevel": 5})).await,
        "BAD_USER_INPUT",
    );
    let r = submit(&app, &owner, &id, json!({"detailLevel": "detailed"})).await;
    assert!(r.get("errors").is_none(), "{r}");
    let done = wait_for(&app, &owner, &id, "COMPLETED").await;
    let text = done["steps"][2]["agentOutput"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Generate documentation based on review:") && text.ends_with("at detailed"),
        "{text}"
    );
    // The deleted step's record keeps its history, with no definition link.
    assert_eq!(done["steps"][0]["workflowStepId"], Value::Null);
    assert_eq!(done["steps"][0]["stepDefinition"], Value::Null);
    assert_eq!(done["steps"][0]["agentOutput"], paused["steps"][0]["agentOutput"]);
    assert_eq!(done["steps"][2]["stepDefinition"]["id"], s2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_have_exactly_one_winner() {
    let (app, owner, drive) = setup().await;
    let t = create_template(&app, &owner, &drive, code_review()).await;
    let id = start(&app, &owner, t["id"].as_str().unwrap(), json!({"code": "x"})).await;
    wait_for(&app, &owner, &id, "PAUSED").await;
    let attempts = futures::future::join_all((0..12).map(|i| {
        let (app, owner, id) = (&app, &owner, &id);
        async move {
            submit(
                app,
                owner,
                id,
                json!({"detailLevel": "basic", "includeExamples": i % 2 == 0}),
            )
            .await
        }
    }))
    .await;
    let wins = attempts.iter().filter(|r| r.get("errors").is_none()).count();
    let conflicts = attempts
        .iter()
        .filter(|r| r.get("errors").is_some() && crate::error_code(r) == "CONFLICT")
        .count();
    assert_eq!((wins, conflicts), (1, 11), "{attempts:?}");
    let done = wait_for(&app, &owner, &id, "COMPLETED").await;
    assert_eq!(done["steps"][2]["status"], "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_checks_input_and_access() {
    let (app, owner, drive) = setup().await;
    let viewer = app.user("viewer").await;
    let member = app.user("member").await;
    let admin = app.user("admin").await;
    let outsider = app.user("outsider").await;
    add_member(&app, &owner, &drive, "viewer", "VIEWER").await;
    add_member(&app, &owner, &drive, "member", "MEMBER").await;
    add_member(&app, &owner, &drive, "admin", "ADMIN").await;

    let empty = create_template(&app, &owner, &drive, json!({"name": "empty", "isPublic": true})).await;
    let r = app
        .gql(
            &owner,
            "mutation($t: ID!) { startWorkflowExecution(templateId: $t) { id } }",
            json!({"t": empty["id"]}),
        )
        .await;
    expect_bad_input(&r, "templateId");

    let t = create_template(&app, &owner, &drive, code_review()).await;
    let r = app
        .gql(
            &owner,
            "mutation($t: ID!) { startWorkflowExecution(templateId: $t, context: [1]) { id } }",
            json!({"t": t["id"]}),
        )
        .await;
    expect_bad_input(&r, "context");
    let r = app
        .gql(
            &outsider,
            "mutation($t: ID!) { startWorkflowExecution(templateId: $t) { id } }",
            json!({"t": t["id"]}),
        )
        .await;
    expect_code(&r, "NOT_FOUND");
    let private = create_template(&app, &owner, &drive, json!({"name": "mine", "steps": [echo("x")]})).await;
    let r = app
        .gql(
            &member,
            "mutation($t: ID!) { startWorkflowExecution(templateId: $t) { id } }",
            json!({"t": private["id"]}),
        )
        .await;
    expect_code(&r, "NOT_FOUND");

    // A VIEWER starts a public template; the run is theirs and the admins'.
    let id = start(&app, &viewer, t["id"].as_str().unwrap(), json!({"code": "x"})).await;
    wait_for(&app, &viewer, &id, "PAUSED").await;
    assert_eq!(
        app.ok(&member, EXECUTION, json!({"id": id})).await["workflowExecution"],
        Value::Null
    );
    assert_eq!(
        app.ok(&outsider, EXECUTION, json!({"id": id})).await["workflowExecution"],
        Value::Null
    );
    assert_eq!(
        app.ok(&admin, EXECUTION, json!({"id": id})).await["workflowExecution"]["id"],
        id.as_str()
    );
    expect_code(
        &submit(&app, &member, &id, json!({"detailLevel": "basic"})).await,
        "NOT_FOUND",
    );
    expect_code(&cancel(&app, &member, &id).await, "NOT_FOUND");

    let list = |token: String| {
        let app = &app;
        async move {
            app.ok(
                &token,
                "{ workflowExecutions { totalCount nodes { id user { id } template { name } } } }",
                json!({}),
            )
            .await["workflowExecutions"]
                .clone()
        }
    };
    assert_eq!(list(viewer.clone()).await["totalCount"], 1);
    assert_eq!(list(member.clone()).await["totalCount"], 0);
    assert_eq!(list(owner.clone()).await["nodes"][0]["user"]["id"], "viewer");
    let mine = app
        .ok(
            &owner,
            "{ workflowExecutions(filter: { mine: true }) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(mine["workflowExecutions"]["totalCount"], 0);
    let by_status = app
        .ok(
            &admin,
            "{ workflowExecutions(filter: { status: [PAUSED] }) { totalCount nodes { status } } }",
            json!({}),
        )
        .await;
    assert_eq!(by_status["workflowExecutions"]["totalCount"], 1, "{by_status}");
    let r = cancel(&app, &admin, &id).await;
    assert_eq!(r["data"]["cancelWorkflowExecution"]["status"], "CANCELLED", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_a_demo_is_ready_to_run() {
    let app = TestApp::spawn_with(|c| c.jwt_secret = None).await;
    let token = app.state.demo_token.clone().expect("a demo token is printed");
    let data = app
        .ok(&token, "{ me { id } drives { id name myRole } }", json!({}))
        .await;
    assert_eq!(data["me"]["id"], "demo-user");
    assert_eq!(data["drives"][0]["myRole"], "OWNER");
    let drive = data["drives"][0]["id"].as_str().unwrap();
    let t = app
        .ok(
            &token,
            "query($d: ID!) { workflowTemplates(driveId: $d) { nodes { id name steps { agentId } } } }",
            json!({"d": drive}),
        )
        .await;
    let template = &t["workflowTemplates"]["nodes"][0];
    assert_eq!(template["name"], "Code Review Workflow");
    let id = start(
        &app,
        &token,
        template["id"].as_str().unwrap(),
        json!({"code": "fn main() {}"}),
    )
    .await;
    wait_for(&app, &token, &id, "PAUSED").await;
    assert!(
        submit(&app, &token, &id, json!({"detailLevel": "basic"}))
            .await
            .get("errors")
            .is_none()
    );
    wait_for(&app, &token, &id, "COMPLETED").await;
    // GraphiQL sends the demo token with every request and subscription.
    let page = app
        .client
        .get(app.url("/graphql"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("Bearer {token}")) && page.contains("/graphql/ws"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_steps_each_add_50_kb_keeps_every_output() {
    let (app, owner, drive) = setup().await;
    let blob = "x".repeat(50_000);
    let steps: Vec<Value> = (0..20).map(|i| echo(&format!("{i}:{{{{blob}}}}"))).collect();
    let e = run_steps(&app, &owner, &drive, json!(steps), json!({"blob": blob}), "COMPLETED").await;
    let ctx = e["accumulatedContext"].as_object().unwrap();
    assert_eq!(ctx.len(), 21);
    for i in 0..20 {
        assert_eq!(
            ctx[&format!("step_{i}_output")]["text"],
            format!("{i}:{blob}"),
            "step {i}"
        );
    }
    assert!(e.to_string().len() > 2_000_000);
}
