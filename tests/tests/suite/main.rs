//! Black-box integration tests of the workflows server (issue 2: the
//! foundation). Every test starts its own server on its own database:
//! SQLite by default, PostgreSQL when `TEST_DATABASE_URL` is a postgres URL.

mod auth;
mod citations;
mod direct;
mod executions;
mod fail_closed;
mod graphiql;
mod hostile;
mod instances;
mod limits;
mod observability;
mod openai;
mod parallel;
mod permissions;
mod props;
mod schedules;
mod schema_db;
mod schema_file;
mod statements;
mod stats;
mod subscriptions;
mod templates;
mod versions;
mod ws_guard;

use serde_json::{Value, json};
use workflows_tests::{TestApp, error_code, error_message};

/// Creates a drive as the owner of `token`; returns its id.
pub async fn create_drive(app: &TestApp, token: &str, name: &str) -> String {
    let data = app
        .ok(
            token,
            "mutation($n: String!) { createDrive(input: { name: $n }) { id name myRole } }",
            json!({ "n": name }),
        )
        .await;
    assert_eq!(data["createDrive"]["myRole"], "OWNER", "{data}");
    data["createDrive"]["id"].as_str().unwrap().to_owned()
}

/// Adds (or re-roles) a member; asserts success.
pub async fn add_member(app: &TestApp, token: &str, drive: &str, user: &str, role: &str) {
    let data = app
        .ok(
            token,
            "mutation($d: ID!, $u: ID!, $r: DriveRole!) { addDriveMember(driveId: $d, userId: $u, role: $r) { user { id } role } }",
            json!({ "d": drive, "u": user, "r": role }),
        )
        .await;
    assert_eq!(data["addDriveMember"]["user"]["id"], user, "{data}");
    assert_eq!(data["addDriveMember"]["role"], role, "{data}");
}

pub const CREATE_TEMPLATE: &str = "mutation($input: CreateWorkflowTemplateInput!) {
  createWorkflowTemplate(input: $input) {
    id name description driveId createdBy category tags isPublic
    steps { id stepOrder agentId promptTemplate }
  }
}";

/// Creates a template from `input` (driveId is filled in); returns the
/// template as `createWorkflowTemplate` answered.
pub async fn create_template(app: &TestApp, token: &str, drive: &str, mut input: Value) -> Value {
    input["driveId"] = json!(drive);
    let data = app.ok(token, CREATE_TEMPLATE, json!({ "input": input })).await;
    data["createWorkflowTemplate"].clone()
}

/// A step input with the echo agent and the given prompt.
pub fn echo(prompt: &str) -> Value {
    json!({ "agentId": "echo", "promptTemplate": prompt })
}

/// The template's steps as the owner of `token` sees them, asserting that
/// `stepOrder` runs 0..n in list order. Returns (id, promptTemplate) pairs.
pub async fn steps_of(app: &TestApp, token: &str, template: &str) -> Vec<(String, String)> {
    let data = app
        .ok(
            token,
            "query($id: ID!) { workflowTemplate(id: $id) { steps { id stepOrder promptTemplate } } }",
            json!({ "id": template }),
        )
        .await;
    let steps = data["workflowTemplate"]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("template {template} not visible: {data}"));
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            assert_eq!(s["stepOrder"], json!(i), "stepOrder not contiguous: {data}");
            (
                s["id"].as_str().unwrap().to_owned(),
                s["promptTemplate"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Only the prompts of `steps_of`.
pub async fn prompts_of(app: &TestApp, token: &str, template: &str) -> Vec<String> {
    steps_of(app, token, template)
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// Asserts one error with `code`; returns its message.
#[track_caller]
pub fn expect_code(body: &Value, code: &str) -> String {
    assert_eq!(error_code(body), code, "{body}");
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    assert!(
        data.is_null() || data.as_object().is_some_and(|o| o.values().all(Value::is_null)),
        "a failed operation returned data: {body}"
    );
    error_message(body)
}

/// Asserts a BAD_USER_INPUT error whose message names `field`.
#[track_caller]
pub fn expect_bad_input(body: &Value, field: &str) {
    let message = expect_code(body, "BAD_USER_INPUT");
    assert!(message.contains(field), "the message should name `{field}`: {message}");
}
