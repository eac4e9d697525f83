//! Fail closed: a stored setting the engine cannot read stops the run at its
//! step (never "no setting"), and an error nobody coded reaches the client as
//! INTERNAL_SERVER_ERROR with a request id and none of its internal text.

use entity::{workflow_execution_step as exec_step, workflow_step as step};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use workflows_tests::{TestApp, error_code};

use crate::executions::{execution, start, submit, wait_for};
use crate::{create_drive, create_template, echo};

async fn owner_and_drive(app: &TestApp) -> (String, String) {
    let owner = app.user("owner").await;
    let drive = create_drive(app, &owner, "Gates").await;
    (owner, drive)
}

/// Writes `definition` over the stored definition of step `order` of a run.
async fn corrupt_definition(app: &TestApp, execution: &str, order: i32, edit: impl FnOnce(&mut Value)) {
    let row = exec_step::Entity::find()
        .filter(exec_step::Column::WorkflowExecutionId.eq(execution))
        .filter(exec_step::Column::StepOrder.eq(order))
        .one(app.db())
        .await
        .unwrap()
        .unwrap();
    let mut def = row.definition.clone().unwrap();
    edit(&mut def);
    exec_step::Entity::update_many()
        .col_expr(exec_step::Column::Definition, Expr::value(def))
        .filter(exec_step::Column::Id.eq(row.id))
        .exec(app.db())
        .await
        .unwrap();
}

/// A run paused for input at step 0, with `second` as step 1.
async fn paused_before(app: &TestApp, owner: &str, drive: &str, second: Value) -> String {
    let t = create_template(
        app,
        owner,
        drive,
        json!({"name": "gated", "steps": [
            {"agentId": "echo", "promptTemplate": "first", "requiresUserInput": true},
            second,
            echo("after")
        ]}),
    )
    .await;
    let id = start(app, owner, t["id"].as_str().unwrap(), json!({})).await;
    wait_for(app, owner, &id, "PAUSED").await;
    id
}

/// The run FAILED at step 1 without running it or anything after it.
fn stopped_at_step_1(e: &Value, cause: &str) {
    assert_eq!(e["status"], "FAILED", "{e}");
    let msg = e["errorMessage"].as_str().unwrap();
    assert!(msg.starts_with("step 1 failed: its ") && msg.contains(cause), "{msg}");
    assert!(msg.contains("the step was not run"), "{msg}");
    assert_eq!(e["steps"][0]["status"], "COMPLETED");
    assert_eq!(e["steps"][1]["status"], "FAILED");
    assert_eq!(e["steps"][1]["agentOutput"], Value::Null, "the step never ran");
    assert_eq!(e["steps"][1]["errorMessage"], e["errorMessage"]);
    assert_eq!(e["steps"][2]["status"], "PENDING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_approval_rule_in_a_run_stops_it_at_that_step() {
    let app = TestApp::spawn().await;
    let (owner, drive) = owner_and_drive(&app).await;
    let id = paused_before(
        &app,
        &owner,
        &drive,
        json!({"agentId": "echo", "promptTemplate": "gated", "approval": {"required": 1}}),
    )
    .await;
    // A rule that does not parse: before the fix it read as "no approval".
    corrupt_definition(&app, &id, 1, |d| d["approval"] = json!({"required": "two"})).await;
    assert!(submit(&app, &owner, &id, json!({})).await.get("errors").is_none());
    let e = wait_for(&app, &owner, &id, "FAILED").await;
    stopped_at_step_1(&e, "definition cannot be read");

    // A rule with a field this version does not know is unreadable too.
    let id = paused_before(
        &app,
        &owner,
        &drive,
        json!({"agentId": "echo", "promptTemplate": "gated", "approval": {"required": 1}}),
    )
    .await;
    corrupt_definition(&app, &id, 1, |d| d["approval"]["quorum"] = json!("all")).await;
    submit(&app, &owner, &id, json!({})).await;
    let e = wait_for(&app, &owner, &id, "FAILED").await;
    stopped_at_step_1(&e, "unknown field `quorum`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_retry_metadata_or_an_unknown_setting_stop_the_run() {
    let app = TestApp::spawn().await;
    let (owner, drive) = owner_and_drive(&app).await;
    let id = paused_before(
        &app,
        &owner,
        &drive,
        json!({"agentId": "echo", "promptTemplate": "x", "metadata": {"retry": {"maxAttempts": 3}}}),
    )
    .await;
    corrupt_definition(&app, &id, 1, |d| d["metadata"]["retry"]["maxAttempts"] = json!("many")).await;
    submit(&app, &owner, &id, json!({})).await;
    let e = wait_for(&app, &owner, &id, "FAILED").await;
    stopped_at_step_1(&e, "metadata cannot be read (retry.maxAttempts");

    // A setting of a newer version (say, routes) is not silently ignored.
    let id = paused_before(&app, &owner, &drive, echo("x")).await;
    corrupt_definition(&app, &id, 1, |d| d["routes"] = json!([{"goto": 0}])).await;
    submit(&app, &owner, &id, json!({})).await;
    let e = wait_for(&app, &owner, &id, "FAILED").await;
    stopped_at_step_1(&e, "unknown field `routes`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_rule_on_a_template_step_stops_every_run_at_it() {
    let app = TestApp::spawn().await;
    let (owner, drive) = owner_and_drive(&app).await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({"name": "gated", "steps": [
            echo("first"),
            {"agentId": "echo", "promptTemplate": "gated", "approval": {"required": 1}},
            echo("after")
        ]}),
    )
    .await;
    let template = t["id"].as_str().unwrap();
    step::Entity::update_many()
        .col_expr(
            step::Column::Approval,
            Expr::value(json!({"required": 1, "minRole": "SUPREME"})),
        )
        .filter(step::Column::WorkflowTemplateId.eq(template))
        .filter(step::Column::StepOrder.eq(1))
        .exec(app.db())
        .await
        .unwrap();

    // Reading the rule is an error on that field, not "no approval".
    let body = app
        .gql(
            &owner,
            "query($id: ID!) { workflowTemplate(id: $id) { steps { stepOrder approval { required } } } }",
            json!({"id": template}),
        )
        .await;
    assert_eq!(error_code(&body), "INTERNAL_SERVER_ERROR", "{body}");
    assert!(!body.to_string().contains("SUPREME"), "{body}");

    // A run copies the step as it is and stops there.
    let id = start(&app, &owner, template, json!({})).await;
    let e = wait_for(&app, &owner, &id, "FAILED").await;
    stopped_at_step_1(&e, "approval rule cannot be read");

    // Duplicating it does not copy it as a step without approval.
    let body = app
        .gql(
            &owner,
            "mutation($id: ID!) { duplicateWorkflowTemplate(id: $id) { id } }",
            json!({"id": template}),
        )
        .await;
    assert_eq!(error_code(&body), "INTERNAL_SERVER_ERROR", "{body}");
    let copies = app
        .ok(
            &owner,
            "query($d: ID!) { workflowTemplates(driveId: $d) { totalCount } }",
            json!({"d": drive}),
        )
        .await;
    assert_eq!(copies["workflowTemplates"]["totalCount"], 1, "{copies}");
}

/// Requests `query` and returns the response's `x-request-id` and body.
async fn post(app: &TestApp, token: &str, query: &str, variables: Value) -> (String, Value) {
    let resp = reqwest::Client::new()
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    (id, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_error_is_internal_with_a_request_id_and_no_sql() {
    let app = TestApp::spawn().await;
    let (owner, drive) = owner_and_drive(&app).await;
    let t = create_template(&app, &owner, &drive, json!({"name": "t", "steps": [echo("x")]})).await;
    // The user's own mistakes keep their codes and their words.
    let (_, body) = post(
        &app,
        &owner,
        "query($id: ID!, $s: DateTime) { workflowTemplate(id: $id) { stats(since: $s) { runs } } }",
        json!({"id": t["id"], "s": "not a date"}),
    )
    .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert!(body.to_string().contains("DateTime"), "{body}");
    let (_, body) = post(
        &app,
        &owner,
        "mutation($id: ID!) { deleteWorkflowTemplate(id: $id) }",
        json!({"id": "nope"}),
    )
    .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");

    app.db()
        .execute_unprepared("ALTER TABLE workflow_templates RENAME TO workflow_templates_gone")
        .await
        .unwrap();
    let (request_id, body) = post(
        &app,
        &owner,
        "query($d: ID!) { workflowTemplates(driveId: $d) { nodes { id } } }",
        json!({"d": drive}),
    )
    .await;
    assert_eq!(error_code(&body), "INTERNAL_SERVER_ERROR", "{body}");
    let err = &body["errors"][0];
    assert_eq!(err["extensions"]["requestId"], request_id.as_str(), "{body}");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains(&request_id), "{message}");
    let text = body.to_string().to_lowercase();
    for internal in [
        "workflow_templates",
        "select",
        "relation",
        "no such table",
        "sqlx",
        "error returned",
    ] {
        assert!(!text.contains(internal), "{internal} leaked: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_definition_read_by_a_client_is_internal_not_no_approval() {
    let app = TestApp::spawn().await;
    let (owner, drive) = owner_and_drive(&app).await;
    let id = paused_before(
        &app,
        &owner,
        &drive,
        json!({"agentId": "echo", "promptTemplate": "x", "requiresUserInput": true}),
    )
    .await;
    corrupt_definition(&app, &id, 0, |d| d["approval"] = json!("yes")).await;
    let body = app
        .gql(
            &owner,
            "query($id: ID!) { workflowExecution(id: $id) { steps { awaiting } } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(error_code(&body), "INTERNAL_SERVER_ERROR", "{body}");
    assert_eq!(execution(&app, &owner, &id).await["status"], "PAUSED");
}
