//! Templates and steps: create, validate, renumber, update, delete, filter,
//! paginate; and the agents query.

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use workflows_tests::TestApp;

use crate::{
    CREATE_TEMPLATE, create_drive, create_template, echo, expect_bad_input, expect_code, prompts_of, steps_of,
};

/// Like `expect_bad_input`, but returns the problem instead of panicking, so a
/// test can try every case and report all failures together.
fn bad_input_problem(what: &str, body: &Value, field: &str) -> Option<String> {
    let errors = body["errors"].as_array();
    let code = body["errors"][0]["extensions"]["code"].as_str().unwrap_or("none");
    let message = body["errors"][0]["message"].as_str().unwrap_or("");
    if errors.map_or(0, Vec::len) != 1 || code != "BAD_USER_INPUT" {
        return Some(format!("{what}: expected one BAD_USER_INPUT error, got {body}"));
    }
    if !message.contains(field) {
        return Some(format!("{what}: the message should name `{field}`: {message}"));
    }
    if !body.get("data").is_none_or(Value::is_null) {
        return Some(format!("{what}: a failed mutation returned data: {body}"));
    }
    None
}

async fn setup() -> (TestApp, String, String) {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Engineering").await;
    (app, owner, drive)
}

/// Rows in the database, whatever the API shows.
async fn row_counts(app: &TestApp) -> (u64, u64) {
    let templates = entity::workflow_template::Entity::find().count(app.db()).await.unwrap();
    let steps = entity::workflow_step::Entity::find().count(app.db()).await.unwrap();
    (templates, steps)
}

async fn step_rows_of(app: &TestApp, template: &str) -> u64 {
    entity::workflow_step::Entity::find()
        .filter(entity::workflow_step::Column::WorkflowTemplateId.eq(template))
        .count(app.db())
        .await
        .unwrap()
}

fn code_review_input(drive: &str) -> Value {
    json!({
        "driveId": drive,
        "name": "Code Review Workflow",
        "description": "Automated code review with security analysis",
        "category": "code-review",
        "tags": ["security", "quality", "automated"],
        "isPublic": true,
        "steps": [
            {
                "agentId": "echo",
                "promptTemplate": "Review the following code for bugs and improvements: {{code}}",
                "requiresUserInput": false,
                "metadata": { "timeoutMs": 30000, "retry": { "maxAttempts": 3, "backoffMs": 100 } }
            },
            {
                "agentId": "echo",
                "promptTemplate": "Analyze security vulnerabilities in: {{code}}. Previous review: {{step_0_output}}",
                "condition": { "!!": [{ "var": "code" }] }
            },
            {
                "agentId": "echo",
                "promptTemplate": "Generate documentation based on review: {{step_0_output}} and security analysis: {{step_1_output}}",
                "requiresUserInput": true,
                "inputSchema": {
                    "type": "object",
                    "properties": {
                        "includeExamples": { "type": "boolean" },
                        "detailLevel": { "type": "string", "enum": ["basic", "detailed", "comprehensive"] }
                    }
                }
            }
        ]
    })
}

const FULL_TEMPLATE: &str = "query($id: ID!) {
  workflowTemplate(id: $id) {
    id name description driveId drive { id name } createdBy creator { id name email }
    category tags isPublic createdAt updatedAt
    steps {
      id workflowTemplateId template { id name } stepOrder agentId promptTemplate
      requiresUserInput inputSchema metadata condition createdAt updatedAt
    }
  }
}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_review_workflow_is_created_and_read_back() {
    let (app, owner, drive) = setup().await;
    let input = code_review_input(&drive);
    let created = app.ok(&owner, CREATE_TEMPLATE, json!({ "input": input })).await;
    let id = created["createWorkflowTemplate"]["id"].as_str().unwrap().to_owned();
    assert!(
        id.len() >= 20 && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "CUID2 id: {id}"
    );

    let data = app.ok(&owner, FULL_TEMPLATE, json!({ "id": id })).await;
    let t = &data["workflowTemplate"];
    assert_eq!(t["id"], id.as_str());
    assert_eq!(t["name"], "Code Review Workflow");
    assert_eq!(t["description"], "Automated code review with security analysis");
    assert_eq!(t["driveId"], drive.as_str());
    assert_eq!(t["drive"], json!({ "id": drive, "name": "Engineering" }));
    assert_eq!(t["createdBy"], "owner");
    assert_eq!(
        t["creator"],
        json!({ "id": "owner", "name": "User owner", "email": "owner@example.com" })
    );
    assert_eq!(t["category"], "code-review");
    assert_eq!(t["tags"], json!(["security", "quality", "automated"]));
    assert_eq!(t["isPublic"], true);
    for f in ["createdAt", "updatedAt"] {
        let s = t[f].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{f} {s}: {e}"));
    }

    let steps = t["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["stepOrder"], i, "{data}");
        assert_eq!(s["workflowTemplateId"], id.as_str());
        assert_eq!(s["template"]["id"], id.as_str());
        assert_eq!(s["agentId"], "echo");
        assert_eq!(s["promptTemplate"], input["steps"][i]["promptTemplate"]);
        chrono::DateTime::parse_from_rfc3339(s["createdAt"].as_str().unwrap()).unwrap();
        chrono::DateTime::parse_from_rfc3339(s["updatedAt"].as_str().unwrap()).unwrap();
    }
    assert_eq!(steps[0]["requiresUserInput"], false);
    assert_eq!(steps[0]["metadata"], input["steps"][0]["metadata"]);
    assert_eq!(steps[0]["inputSchema"], Value::Null);
    assert_eq!(steps[0]["condition"], Value::Null);
    assert_eq!(steps[1]["requiresUserInput"], false, "default false");
    assert_eq!(steps[1]["condition"], input["steps"][1]["condition"]);
    assert_eq!(steps[1]["metadata"], Value::Null);
    assert_eq!(steps[2]["requiresUserInput"], true);
    assert_eq!(steps[2]["inputSchema"], input["steps"][2]["inputSchema"]);

    // The mutation's own answer agrees with the query.
    let answered = &created["createWorkflowTemplate"];
    assert_eq!(answered["steps"].as_array().unwrap().len(), 3);
    assert_eq!(answered["tags"], t["tags"]);

    assert_eq!(row_counts(&app).await, (1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_templates_are_refused_and_nothing_is_written() {
    let (app, owner, drive) = setup().await;
    let ok_step = echo("fine {{code}}");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("empty name", json!({ "name": "", "steps": [ok_step] }), "name"),
        ("blank name", json!({ "name": "   \t ", "steps": [ok_step] }), "name"),
        (
            "name of 201 chars",
            json!({ "name": "n".repeat(201), "steps": [ok_step] }),
            "name",
        ),
        (
            "unknown agent",
            json!({ "name": "x", "steps": [ok_step, { "agentId": "no-such-agent", "promptTemplate": "p" }] }),
            "agentId",
        ),
        (
            "inputSchema that does not compile",
            json!({ "name": "x", "steps": [ok_step, { "agentId": "echo", "promptTemplate": "p", "inputSchema": { "type": 12 } }] }),
            "inputSchema",
        ),
        (
            "condition that is not JSON Logic",
            json!({ "name": "x", "steps": [{ "agentId": "echo", "promptTemplate": "p", "condition": { "no_such_op": [1] } }] }),
            "condition",
        ),
        (
            "step 1 naming its own output",
            json!({ "name": "x", "steps": [ok_step, echo("see {{step_1_output}}")] }),
            "promptTemplate",
        ),
        (
            "step naming a later step's output",
            json!({ "name": "x", "steps": [echo("see {{ step_5_output.text }}"), ok_step] }),
            "promptTemplate",
        ),
        (
            "step 0 naming step_0_output",
            json!({ "name": "x", "steps": [echo("{{step_0_output}}")] }),
            "promptTemplate",
        ),
    ];
    let mut failures = Vec::new();
    for (what, mut input, field) in cases {
        input["driveId"] = json!(drive);
        let body = app.gql(&owner, CREATE_TEMPLATE, json!({ "input": input })).await;
        failures.extend(bad_input_problem(what, &body, field));
        if field == "promptTemplate" {
            let m = body["errors"][0]["message"].as_str().unwrap_or("");
            if !m.contains("step_") {
                failures.push(format!("{what}: the message should name the reference: {m}"));
            }
        }
        let counts = row_counts(&app).await;
        if counts != (0, 0) {
            failures.push(format!("{what}: rows were written (templates, steps) = {counts:?}"));
            // Start the next case from an empty drive again.
            if let Some(id) = body["data"]["createWorkflowTemplate"]["id"].as_str() {
                app.ok(
                    &owner,
                    "mutation($id: ID!) { deleteWorkflowTemplate(id: $id) }",
                    json!({ "id": id }),
                )
                .await;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let data = app
        .ok(
            &owner,
            "query($d: ID!) { workflowTemplates(driveId: $d) { totalCount nodes { id } } }",
            json!({ "d": drive }),
        )
        .await;
    assert_eq!(data["workflowTemplates"]["totalCount"], 0, "{data}");

    // 200 characters is fine, and so are references to earlier steps.
    let name = "n".repeat(200);
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": name, "steps": [echo("{{code}}"), echo("{{step_0_output.text}} {{ step_0_output }}")] }),
    )
    .await;
    assert_eq!(t["name"], name.as_str());
    assert_eq!(row_counts(&app).await, (1, 2));
}

const ADD: &str = "mutation($t: ID!, $input: WorkflowStepInput!, $at: Int) {
  addWorkflowStep(templateId: $t, input: $input, stepOrder: $at) { id stepOrder promptTemplate workflowTemplateId }
}";
const UPDATE_STEP: &str = "mutation($id: ID!, $input: UpdateWorkflowStepInput!) {
  updateWorkflowStep(id: $id, input: $input) { id stepOrder agentId promptTemplate requiresUserInput inputSchema metadata condition }
}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_mutations_validate_like_create() {
    let (app, owner, drive) = setup().await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "T", "steps": [echo("a {{code}}"), echo("b {{step_0_output}}")] }),
    )
    .await;
    let tid = t["id"].as_str().unwrap().to_owned();
    let before = steps_of(&app, &owner, &tid).await;
    let first_step = before[0].0.clone();
    let second_step = before[1].0.clone();

    let bad_steps: Vec<(&str, Value, Option<i32>, &str)> = vec![
        (
            "unknown agent",
            json!({ "agentId": "nope", "promptTemplate": "p" }),
            None,
            "agentId",
        ),
        (
            "bad inputSchema",
            json!({ "agentId": "echo", "promptTemplate": "p", "inputSchema": { "type": 12 } }),
            None,
            "inputSchema",
        ),
        (
            "bad condition",
            json!({ "agentId": "echo", "promptTemplate": "p", "condition": { "no_such_op": [1] } }),
            None,
            "condition",
        ),
        (
            "own output at the end",
            echo("{{step_2_output}}"),
            None,
            "promptTemplate",
        ),
        ("later output", echo("{{step_5_output}}"), None, "promptTemplate"),
        (
            "inserted at 0 naming step 0",
            echo("{{step_0_output}}"),
            Some(0),
            "promptTemplate",
        ),
        (
            "inserted at 1 naming step 1",
            echo("{{step_1_output}}"),
            Some(1),
            "promptTemplate",
        ),
    ];
    let mut failures = Vec::new();
    for (what, input, at, field) in bad_steps {
        let body = app
            .gql(&owner, ADD, json!({ "t": tid, "input": input, "at": at }))
            .await;
        failures.extend(bad_input_problem(&format!("addWorkflowStep {what}"), &body, field));
        if steps_of(&app, &owner, &tid).await != before {
            failures.push(format!("addWorkflowStep {what}: the steps changed"));
            if let Some(id) = body["data"]["addWorkflowStep"]["id"].as_str() {
                app.ok(&owner, DELETE_STEP, json!({ "id": id })).await;
            }
        }
    }

    let bad_updates: Vec<(&str, &str, Value, &str)> = vec![
        ("unknown agent", &first_step, json!({ "agentId": "nope" }), "agentId"),
        (
            "bad inputSchema",
            &first_step,
            json!({ "inputSchema": { "type": 12 } }),
            "inputSchema",
        ),
        (
            "bad condition",
            &first_step,
            json!({ "condition": { "no_such_op": [1] } }),
            "condition",
        ),
        (
            "step 0 naming step_1_output",
            &first_step,
            json!({ "promptTemplate": "{{step_1_output}}" }),
            "promptTemplate",
        ),
        (
            "step 1 naming step_1_output",
            &second_step,
            json!({ "promptTemplate": "{{step_1_output}}" }),
            "promptTemplate",
        ),
        (
            "step 1 naming step_5_output",
            &second_step,
            json!({ "promptTemplate": "{{step_5_output}}" }),
            "promptTemplate",
        ),
    ];
    for (what, id, input, field) in bad_updates {
        let body = app.gql(&owner, UPDATE_STEP, json!({ "id": id, "input": input })).await;
        failures.extend(bad_input_problem(&format!("updateWorkflowStep {what}"), &body, field));
        if steps_of(&app, &owner, &tid).await != before {
            failures.push(format!("updateWorkflowStep {what}: the steps changed"));
        }
    }
    let data = app.ok(&owner, FULL_TEMPLATE, json!({ "id": tid })).await;
    for s in data["workflowTemplate"]["steps"].as_array().unwrap() {
        if s["agentId"] != "echo" || !s["inputSchema"].is_null() || !s["condition"].is_null() {
            failures.push(format!("a refused update was stored: {s}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Valid updates: partial, and a JSON field cleared with null.
    let data = app
        .ok(
            &owner,
            UPDATE_STEP,
            json!({ "id": second_step, "input": {
                "agentId": "json", "requiresUserInput": true,
                "inputSchema": { "type": "object", "required": ["x"] },
                "metadata": { "timeoutMs": 100 },
                "condition": { "==": [1, 1] }
            } }),
        )
        .await;
    let s = &data["updateWorkflowStep"];
    assert_eq!(s["agentId"], "json");
    assert_eq!(s["promptTemplate"], "b {{step_0_output}}", "left alone");
    assert_eq!(s["requiresUserInput"], true);
    assert_eq!(s["inputSchema"], json!({ "type": "object", "required": ["x"] }));
    assert_eq!(s["metadata"], json!({ "timeoutMs": 100 }));
    assert_eq!(s["condition"], json!({ "==": [1, 1] }));
    assert_eq!(s["stepOrder"], 1);
    let data = app
        .ok(
            &owner,
            UPDATE_STEP,
            json!({ "id": second_step, "input": { "condition": null, "promptTemplate": "c {{ step_0_output.text }}" } }),
        )
        .await;
    let s = &data["updateWorkflowStep"];
    assert!(s["condition"].is_null(), "{data}");
    assert_eq!(s["metadata"], json!({ "timeoutMs": 100 }), "left alone");
    assert_eq!(s["promptTemplate"], "c {{ step_0_output.text }}");
    // Read back through the template.
    let data = app.ok(&owner, FULL_TEMPLATE, json!({ "id": tid })).await;
    let stored = &data["workflowTemplate"]["steps"][1];
    assert_eq!(stored["agentId"], "json");
    assert!(stored["condition"].is_null());
    assert_eq!(stored["inputSchema"], json!({ "type": "object", "required": ["x"] }));
}

const REORDER: &str = "mutation($t: ID!, $ids: [ID!]!) {
  reorderWorkflowSteps(templateId: $t, stepIds: $ids) { id steps { id stepOrder promptTemplate } }
}";
const DELETE_STEP: &str = "mutation($id: ID!) { deleteWorkflowStep(id: $id) }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorder_and_delete_may_not_break_a_reference() {
    let (app, owner, drive) = setup().await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "T", "steps": [echo("first {{code}}"), echo("second {{step_0_output}}"), echo("third")] }),
    )
    .await;
    let tid = t["id"].as_str().unwrap().to_owned();
    let before = steps_of(&app, &owner, &tid).await;
    let ids: Vec<&str> = before.iter().map(|(id, _)| id.as_str()).collect();

    // Moving the referencing step first: it would name its own output.
    let body = app
        .gql(&owner, REORDER, json!({ "t": tid, "ids": [ids[1], ids[0], ids[2]] }))
        .await;
    expect_bad_input(&body, "promptTemplate");
    assert_eq!(steps_of(&app, &owner, &tid).await, before);

    // Deleting step 0: step 1 would become step 0 naming step_0_output.
    let body = app.gql(&owner, DELETE_STEP, json!({ "id": ids[0] })).await;
    expect_bad_input(&body, "promptTemplate");
    assert_eq!(steps_of(&app, &owner, &tid).await, before);
    assert_eq!(step_rows_of(&app, &tid).await, 3);

    // A reorder that keeps the reference valid is fine.
    let data = app
        .ok(&owner, REORDER, json!({ "t": tid, "ids": [ids[2], ids[0], ids[1]] }))
        .await;
    let prompts: Vec<&str> = data["reorderWorkflowSteps"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["promptTemplate"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["third", "first {{code}}", "second {{step_0_output}}"]);
    // And deleting the step that is not referenced.
    let body = app.gql(&owner, DELETE_STEP, json!({ "id": ids[2] })).await;
    assert_eq!(body["data"]["deleteWorkflowStep"], ids[2], "{body}");
    assert_eq!(
        prompts_of(&app, &owner, &tid).await,
        ["first {{code}}", "second {{step_0_output}}"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_stay_numbered_0_to_n() {
    let (app, owner, drive) = setup().await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "T", "steps": [echo("A"), echo("B")] }),
    )
    .await;
    let tid = t["id"].as_str().unwrap().to_owned();
    let other = create_template(&app, &owner, &drive, json!({ "name": "Other", "steps": [echo("X")] })).await;
    let foreign = other["steps"][0]["id"].as_str().unwrap().to_owned();

    let add = |prompt: &'static str, at: Option<i32>| {
        let app = &app;
        let owner = &owner;
        let tid = &tid;
        async move {
            app.gql(owner, ADD, json!({ "t": tid, "input": echo(prompt), "at": at }))
                .await
        }
    };

    // Append without stepOrder.
    let body = add("C", None).await;
    assert_eq!(body["data"]["addWorkflowStep"]["stepOrder"], 2, "{body}");
    assert_eq!(body["data"]["addWorkflowStep"]["workflowTemplateId"], tid.as_str());
    assert_eq!(prompts_of(&app, &owner, &tid).await, ["A", "B", "C"]);
    // Insert at 0.
    let body = add("D", Some(0)).await;
    assert_eq!(body["data"]["addWorkflowStep"]["stepOrder"], 0, "{body}");
    assert_eq!(prompts_of(&app, &owner, &tid).await, ["D", "A", "B", "C"]);
    // Insert in the middle.
    let body = add("E", Some(2)).await;
    assert_eq!(body["data"]["addWorkflowStep"]["stepOrder"], 2, "{body}");
    let e_id = body["data"]["addWorkflowStep"]["id"].as_str().unwrap().to_owned();
    assert_eq!(prompts_of(&app, &owner, &tid).await, ["D", "A", "E", "B", "C"]);
    // Out of range: -1 and count + 1.
    for at in [-1, 6, 100] {
        let body = add("Z", Some(at)).await;
        expect_bad_input(&body, "stepOrder");
        assert_eq!(prompts_of(&app, &owner, &tid).await, ["D", "A", "E", "B", "C"]);
    }
    // stepOrder = count appends.
    let body = add("F", Some(5)).await;
    assert_eq!(body["data"]["addWorkflowStep"]["stepOrder"], 5, "{body}");
    assert_eq!(prompts_of(&app, &owner, &tid).await, ["D", "A", "E", "B", "C", "F"]);

    // Delete in the middle.
    let body = app.gql(&owner, DELETE_STEP, json!({ "id": e_id })).await;
    assert_eq!(body["data"]["deleteWorkflowStep"], e_id.as_str(), "{body}");
    assert_eq!(prompts_of(&app, &owner, &tid).await, ["D", "A", "B", "C", "F"]);
    // Deleting it again: NOT_FOUND.
    let body = app.gql(&owner, DELETE_STEP, json!({ "id": e_id })).await;
    expect_code(&body, "NOT_FOUND");
    // Delete the first and the last.
    let steps = steps_of(&app, &owner, &tid).await;
    app.ok(&owner, DELETE_STEP, json!({ "id": steps[0].0 })).await;
    app.ok(&owner, DELETE_STEP, json!({ "id": steps[4].0 })).await;
    assert_eq!(prompts_of(&app, &owner, &tid).await, ["A", "B", "C"]);
    app.ok(&owner, ADD, json!({ "t": tid, "input": echo("D"), "at": 3 }))
        .await;
    app.ok(&owner, ADD, json!({ "t": tid, "input": echo("F") })).await;
    assert_eq!(prompts_of(&app, &owner, &tid).await, ["A", "B", "C", "D", "F"]);

    // Reorder: valid.
    let steps = steps_of(&app, &owner, &tid).await;
    let ids: Vec<String> = steps.iter().map(|(id, _)| id.clone()).collect();
    let wanted = vec![&ids[4], &ids[2], &ids[0], &ids[3], &ids[1]];
    let data = app.ok(&owner, REORDER, json!({ "t": tid, "ids": wanted })).await;
    let answered: Vec<(i64, &str)> = data["reorderWorkflowSteps"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stepOrder"].as_i64().unwrap(), s["promptTemplate"].as_str().unwrap()))
        .collect();
    assert_eq!(answered, [(0, "F"), (1, "C"), (2, "A"), (3, "D"), (4, "B")]);
    assert_eq!(prompts_of(&app, &owner, &tid).await, ["F", "C", "A", "D", "B"]);

    // Reorder: invalid lists change nothing.
    let current = steps_of(&app, &owner, &tid).await;
    let cur: Vec<String> = current.iter().map(|(id, _)| id.clone()).collect();
    let invalid: Vec<(&str, Vec<String>)> = vec![
        (
            "duplicate id",
            vec![
                cur[0].clone(),
                cur[0].clone(),
                cur[2].clone(),
                cur[3].clone(),
                cur[4].clone(),
            ],
        ),
        ("duplicate id, one extra", {
            let mut v = cur.clone();
            v.push(cur[1].clone());
            v
        }),
        ("missing id", cur[1..].to_vec()),
        ("empty list", vec![]),
        ("foreign id", {
            let mut v = cur[1..].to_vec();
            v.insert(0, foreign.clone());
            v
        }),
        ("foreign id, one extra", {
            let mut v = cur.clone();
            v.push(foreign.clone());
            v
        }),
        ("unknown id", {
            let mut v = cur[1..].to_vec();
            v.push("no-such-step".into());
            v
        }),
    ];
    for (what, list) in invalid {
        let body = app.gql(&owner, REORDER, json!({ "t": tid, "ids": list })).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{what}: {body}"
        );
        expect_bad_input(&body, "stepIds");
        assert_eq!(steps_of(&app, &owner, &tid).await, current, "{what} changed the order");
    }
    // The other template was not touched.
    assert_eq!(prompts_of(&app, &owner, other["id"].as_str().unwrap()).await, ["X"]);
}

async fn read_template(app: &TestApp, owner: &str, id: &str) -> Value {
    app.ok(
        owner,
        "query($id: ID!) { workflowTemplate(id: $id) { id name description category tags isPublic createdAt updatedAt steps { promptTemplate } } }",
        json!({ "id": id }),
    )
    .await["workflowTemplate"]
        .clone()
}

const UPDATE_TEMPLATE: &str = "mutation($id: ID!, $input: UpdateWorkflowTemplateInput!) {
  updateWorkflowTemplate(id: $id, input: $input) { id name description category tags isPublic createdAt updatedAt }
}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_changes_only_what_is_given() {
    let (app, owner, drive) = setup().await;
    let created = app
        .ok(
            &owner,
            "mutation($input: CreateWorkflowTemplateInput!) { createWorkflowTemplate(input: $input) { id createdAt updatedAt } }",
            json!({ "input": {
                "driveId": drive, "name": "Original", "description": "Desc", "category": "cat",
                "tags": ["a", "b"], "isPublic": true, "steps": [echo("s")]
            } }),
        )
        .await;
    let id = created["createWorkflowTemplate"]["id"].as_str().unwrap().to_owned();
    let created_at = created["createWorkflowTemplate"]["createdAt"].clone();
    let first_updated = created["createWorkflowTemplate"]["updatedAt"]
        .as_str()
        .unwrap()
        .to_owned();

    // Only the name.
    let data = app
        .ok(
            &owner,
            UPDATE_TEMPLATE,
            json!({ "id": id, "input": { "name": "Renamed" } }),
        )
        .await;
    let t = &data["updateWorkflowTemplate"];
    assert_eq!(t["name"], "Renamed", "{data}");
    assert_eq!(t["description"], "Desc");
    assert_eq!(t["category"], "cat");
    assert_eq!(t["tags"], json!(["a", "b"]));
    assert_eq!(t["isPublic"], true);
    assert_eq!(t["createdAt"], created_at);
    let updated_at = t["updatedAt"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(updated_at).unwrap()
            > chrono::DateTime::parse_from_rfc3339(&first_updated).unwrap(),
        "updatedAt moves on: {first_updated} -> {updated_at}"
    );
    assert_eq!(read_template(&app, &owner, &id).await, {
        let mut v = t.clone();
        v["steps"] = json!([{ "promptTemplate": "s" }]);
        v
    });

    // null description clears it; nothing else changes.
    let data = app
        .ok(
            &owner,
            UPDATE_TEMPLATE,
            json!({ "id": id, "input": { "description": null } }),
        )
        .await;
    let t = &data["updateWorkflowTemplate"];
    assert!(t["description"].is_null(), "{data}");
    assert_eq!(t["name"], "Renamed");
    assert_eq!(t["category"], "cat");
    let stored = read_template(&app, &owner, &id).await;
    assert!(stored["description"].is_null(), "{stored}");
    assert_eq!(stored["category"], "cat");

    // Tags, visibility and category together.
    let data = app
        .ok(
            &owner,
            UPDATE_TEMPLATE,
            json!({ "id": id, "input": { "tags": ["z"], "isPublic": false, "category": null } }),
        )
        .await;
    let t = &data["updateWorkflowTemplate"];
    assert_eq!(t["tags"], json!(["z"]));
    assert_eq!(t["isPublic"], false);
    assert!(t["category"].is_null());
    assert_eq!(t["name"], "Renamed");
    let stored = read_template(&app, &owner, &id).await;
    assert_eq!(stored["tags"], json!(["z"]));
    assert_eq!(stored["isPublic"], false);
    assert!(stored["category"].is_null());

    // An empty input changes nothing visible.
    let data = app.ok(&owner, UPDATE_TEMPLATE, json!({ "id": id, "input": {} })).await;
    assert_eq!(data["updateWorkflowTemplate"]["name"], "Renamed");

    // Invalid names are refused and nothing changes.
    let before = read_template(&app, &owner, &id).await;
    for name in [json!(""), json!("   "), json!("x".repeat(201))] {
        let body = app
            .gql(
                &owner,
                UPDATE_TEMPLATE,
                json!({ "id": id, "input": { "name": name, "description": "new" } }),
            )
            .await;
        expect_bad_input(&body, "name");
        assert_eq!(read_template(&app, &owner, &id).await, before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_returns_the_id_and_the_template_is_gone() {
    let (app, owner, drive) = setup().await;
    let keep = create_template(&app, &owner, &drive, json!({ "name": "Keep", "steps": [echo("k")] })).await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "Doomed", "steps": [echo("a"), echo("b")] }),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    let step = t["steps"][0]["id"].as_str().unwrap();
    assert_eq!(row_counts(&app).await, (2, 3));

    let data = app
        .ok(
            &owner,
            "mutation($id: ID!) { deleteWorkflowTemplate(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(data["deleteWorkflowTemplate"], id);

    let data = app
        .ok(
            &owner,
            "query($id: ID!, $d: ID!) { workflowTemplate(id: $id) { id } workflowTemplates(driveId: $d) { nodes { id } totalCount } }",
            json!({ "id": id, "d": drive }),
        )
        .await;
    assert!(data["workflowTemplate"].is_null(), "{data}");
    assert_eq!(data["workflowTemplates"]["nodes"], json!([{ "id": keep["id"] }]));
    assert_eq!(data["workflowTemplates"]["totalCount"], 1);
    assert_eq!(step_rows_of(&app, id).await, 0, "its steps are gone");
    assert_eq!(row_counts(&app).await, (1, 1));

    // Its steps and itself are now NOT_FOUND.
    let body = app
        .gql(
            &owner,
            "mutation($id: ID!) { deleteWorkflowTemplate(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    expect_code(&body, "NOT_FOUND");
    let body = app
        .gql(
            &owner,
            UPDATE_STEP,
            json!({ "id": step, "input": { "promptTemplate": "x" } }),
        )
        .await;
    expect_code(&body, "NOT_FOUND");
    let body = app.gql(&owner, ADD, json!({ "t": id, "input": echo("x") })).await;
    expect_code(&body, "NOT_FOUND");
}

async fn names(app: &TestApp, token: &str, drive: &str, filter: Value) -> Vec<String> {
    match try_names(app, token, drive, filter).await {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    }
}

/// The sorted names a filtered list gives, or the error body.
async fn try_names(app: &TestApp, token: &str, drive: &str, filter: Value) -> Result<Vec<String>, String> {
    let body = app
        .gql(
            token,
            "query($d: ID!, $f: WorkflowTemplateFilter) { workflowTemplates(driveId: $d, filter: $f, first: 100) { nodes { name } totalCount } }",
            json!({ "d": drive, "f": filter }),
        )
        .await;
    if body.get("errors").is_some() {
        return Err(format!("filter {filter}: {body}"));
    }
    let data = &body["data"];
    let nodes = data["workflowTemplates"]["nodes"].as_array().unwrap();
    assert_eq!(
        data["workflowTemplates"]["totalCount"],
        nodes.len(),
        "totalCount for {filter}: {data}"
    );
    let mut out: Vec<String> = nodes.iter().map(|n| n["name"].as_str().unwrap().to_owned()).collect();
    out.sort();
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_filtered() {
    let (app, owner, drive) = setup().await;
    let other = app.user("other").await;
    crate::add_member(&app, &owner, &drive, "other", "MEMBER").await;
    let other_drive = create_drive(&app, &owner, "Elsewhere").await;

    create_template(
        &app,
        &owner,
        &drive,
        json!({
            "name": "Alpha 100% review", "description": "Checks code", "category": "code-review",
            "tags": ["security", "quality"], "isPublic": true
        }),
    )
    .await;
    create_template(
        &app,
        &owner,
        &drive,
        json!({
            "name": "Beta_docs", "description": "Writes DOCS", "category": "docs",
            "tags": ["quality"], "isPublic": false
        }),
    )
    .await;
    create_template(
        &app,
        &other,
        &drive,
        json!({
            "name": "Gamma", "description": "about 100 percent", "category": "code-review",
            "tags": ["security"], "isPublic": false
        }),
    )
    .await;
    create_template(
        &app,
        &other,
        &drive,
        json!({
            "name": "Data Dump", "category": "ops", "tags": [], "isPublic": true
        }),
    )
    .await;
    create_template(
        &app,
        &owner,
        &other_drive,
        json!({
            "name": "Alpha elsewhere", "category": "code-review", "tags": ["security"], "isPublic": true
        }),
    )
    .await;

    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            Value::Null,
            vec!["Alpha 100% review", "Beta_docs", "Data Dump", "Gamma"],
        ),
        (json!({}), vec!["Alpha 100% review", "Beta_docs", "Data Dump", "Gamma"]),
        (json!({ "category": "code-review" }), vec!["Alpha 100% review", "Gamma"]),
        (json!({ "category": "nothing" }), vec![]),
        (json!({ "tags": ["security"] }), vec!["Alpha 100% review", "Gamma"]),
        (json!({ "tags": ["quality"] }), vec!["Alpha 100% review", "Beta_docs"]),
        (json!({ "tags": ["security", "quality"] }), vec!["Alpha 100% review"]),
        (json!({ "tags": ["quality", "security"] }), vec!["Alpha 100% review"]),
        (json!({ "tags": ["security", "missing"] }), vec![]),
        (json!({ "isPublic": true }), vec!["Alpha 100% review", "Data Dump"]),
        (json!({ "isPublic": false }), vec!["Beta_docs", "Gamma"]),
        (json!({ "createdBy": "other" }), vec!["Data Dump", "Gamma"]),
        (json!({ "createdBy": "owner" }), vec!["Alpha 100% review", "Beta_docs"]),
        (json!({ "createdBy": "nobody" }), vec![]),
        // search: case-insensitive on name or description
        (json!({ "search": "ALPHA" }), vec!["Alpha 100% review"]),
        (json!({ "search": "docs" }), vec!["Beta_docs"]),
        (json!({ "search": "writes" }), vec!["Beta_docs"]),
        (json!({ "search": "CHECKS CODE" }), vec!["Alpha 100% review"]),
        (json!({ "search": "percent" }), vec!["Gamma"]),
        // % and _ are literal
        (json!({ "search": "%" }), vec!["Alpha 100% review"]),
        (json!({ "search": "100%" }), vec!["Alpha 100% review"]),
        (json!({ "search": "_" }), vec!["Beta_docs"]),
        (json!({ "search": "a_d" }), vec!["Beta_docs"]),
        (json!({ "search": "a%d" }), vec![]),
        (json!({ "search": "\\" }), vec![]),
        // combined
        (json!({ "category": "code-review", "isPublic": false }), vec!["Gamma"]),
        (
            json!({ "tags": ["quality"], "search": "beta", "createdBy": "owner" }),
            vec!["Beta_docs"],
        ),
    ];
    // Every case is tried; the failures are reported together.
    let mut failures = Vec::new();
    for (filter, expected) in cases {
        match try_names(&app, &owner, &drive, filter.clone()).await {
            Ok(got) if got == expected => {}
            Ok(got) => failures.push(format!("filter {filter}: expected {expected:?}, got {got:?}")),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} filter case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // A MEMBER's filtered list still leaves out others' private templates.
    assert_eq!(
        names(&app, &other, &drive, json!({ "isPublic": false })).await,
        ["Gamma"]
    );
    assert_eq!(
        names(&app, &other, &drive, json!({ "tags": ["quality"] })).await,
        ["Alpha 100% review"]
    );
    assert_eq!(
        names(&app, &other, &drive, json!({ "search": "docs" })).await,
        Vec::<String>::new()
    );
}

/// Tries every `(search, expected names)` case and reports the failures
/// together.
async fn check_searches(app: &TestApp, token: &str, drive: &str, cases: &[(&str, &[&str])]) {
    let mut failures = Vec::new();
    for &(search, expected) in cases {
        let shown: String = search.chars().take(40).collect();
        let shown = format!("search {shown:?} ({} characters)", search.chars().count());
        match try_names(app, token, drive, json!({ "search": search })).await {
            Ok(got) if got == expected => {}
            Ok(got) => failures.push(format!("{shown}: expected {expected:?}, got {got:?}")),
            Err(e) => {
                // The error repeats the search; its end is the response body.
                let body: String = e.chars().skip(e.chars().count().saturating_sub(300)).collect();
                failures.push(format!("{shown}: …{body}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} search case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_ignores_case_in_any_script_and_keeps_wildcards_literal() {
    let (app, owner, drive) = setup().await;
    for (name, description) in [
        ("Ünïcødé ñ 日本語 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 é", None),
        ("ÀÉÎÕÜ", None),
        ("ΣΊΣΥΦΟΣ", None),
        ("Greeting", Some("ПРИВЕТ, МИР")),
        ("100%_done", None),
        ("100 percent done", None),
        ("back\\slash", None),
        ("backslash", None),
    ] {
        create_template(
            &app,
            &owner,
            &drive,
            json!({ "name": name, "description": description }),
        )
        .await;
    }
    const UNICODE: &str = "Ünïcødé ñ 日本語 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 é";
    let long = "%".repeat(30_000);
    check_searches(
        &app,
        &owner,
        &drive,
        &[
            ("ünïcødé ñ 日本語", &[UNICODE]),
            ("ÜNÏCØDÉ Ñ 日本語 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 É", &[UNICODE]),
            ("日本語", &[UNICODE]),
            ("àéîõü", &["ÀÉÎÕÜ"]),
            ("ÀéÎõÜ", &["ÀÉÎÕÜ"]),
            ("ü", &["ÀÉÎÕÜ", UNICODE]),
            ("É", &["ÀÉÎÕÜ", UNICODE]),
            // Greek: lower case, with the final sigma as people type it, and
            // a piece from the middle of the word.
            ("σίσυφος", &["ΣΊΣΥΦΟΣ"]),
            ("ΣΊΣΥΦΟΣ", &["ΣΊΣΥΦΟΣ"]),
            ("ΊΣ", &["ΣΊΣΥΦΟΣ"]),
            ("ς", &["ΣΊΣΥΦΟΣ"]),
            // Cyrillic, in the description.
            ("привет, мир", &["Greeting"]),
            ("Привет", &["Greeting"]),
            // `%`, `_` and `\` are characters, not wildcards or escapes.
            ("%", &["100%_done"]),
            ("100%", &["100%_done"]),
            ("_", &["100%_done"]),
            ("100_", &[]),
            ("%_d", &["100%_done"]),
            ("%_", &["100%_done"]),
            ("0%_D", &["100%_done"]),
            ("\\", &["back\\slash"]),
            ("k\\s", &["back\\slash"]),
            ("K\\S", &["back\\slash"]),
            ("backslash", &["backslash"]),
            ("σ%", &[]),
            ("nothing", &[]),
            // Longer than SQLite's LIKE patterns may be: no match, no error.
            (&long, &[]),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_follows_renames_and_new_descriptions() {
    let (app, owner, drive) = setup().await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "Ålpha Øld", "description": "Ðescription ΠΑΛΙΆ" }),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    app.ok(
        &owner,
        UPDATE_TEMPLATE,
        json!({ "id": id, "input": { "name": "Ωmega Nëw" } }),
    )
    .await;
    check_searches(
        &app,
        &owner,
        &drive,
        &[
            ("ålpha", &[]),
            ("ØLD", &[]),
            ("ωMEGA", &["Ωmega Nëw"]),
            ("NËW", &["Ωmega Nëw"]),
            // The description was not changed and is still found.
            ("παλιά", &["Ωmega Nëw"]),
        ],
    )
    .await;

    app.ok(
        &owner,
        UPDATE_TEMPLATE,
        json!({ "id": id, "input": { "description": "НОВОЕ" } }),
    )
    .await;
    check_searches(
        &app,
        &owner,
        &drive,
        &[("новое", &["Ωmega Nëw"]), ("παλιά", &[]), ("ωmega", &["Ωmega Nëw"])],
    )
    .await;

    // A refused update changes neither the texts nor what finds them.
    let body = app
        .gql(
            &owner,
            UPDATE_TEMPLATE,
            json!({ "id": id, "input": { "name": "Ж".repeat(201), "description": "ЖЖЖ" } }),
        )
        .await;
    expect_bad_input(&body, "name");
    check_searches(
        &app,
        &owner,
        &drive,
        &[("ж", &[]), ("новое", &["Ωmega Nëw"]), ("ωmega", &["Ωmega Nëw"])],
    )
    .await;

    // Clearing the description stops it matching; other changes keep the name.
    app.ok(
        &owner,
        UPDATE_TEMPLATE,
        json!({ "id": id, "input": { "description": null, "category": "c", "tags": ["t"] } }),
    )
    .await;
    check_searches(&app, &owner, &drive, &[("новое", &[]), ("ΩMEGA NËW", &["Ωmega Nëw"])]).await;
}

/// Templates written before the search columns existed are found once the
/// migration has folded them (more rows than one backfill batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_templates_stored_before_the_search_columns() {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, Statement};

    let (app, owner, drive) = setup().await;
    let db = app.db();
    // Back to before the search columns (and whatever came after them).
    let names: Vec<String> = Migrator::migrations().iter().map(|m| m.name().to_owned()).collect();
    let from = names
        .iter()
        .position(|n| n == "m20261202_000007_template_search")
        .unwrap();
    Migrator::down(db, Some((names.len() - from) as u32)).await.unwrap();
    let pending: Vec<String> = Migrator::get_pending_migrations(db)
        .await
        .unwrap()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    assert_eq!(pending, names[from..], "rolled back the search columns");

    let rows: Vec<String> = (0..1100)
        .map(|i| {
            let (name, description) = match i {
                0 => ("ΣΊΣΥΦΟΣ Ünïcødé".to_owned(), "'ПРИВЕТ 100%_\\'".to_owned()),
                _ => (format!("Old ÀÉÎ {i:04}"), "NULL".to_owned()),
            };
            format!(
                "('old-{i:04}', '{name}', {description}, '{drive}', 'owner', false, '2025-01-01 12:00:00', '2025-01-01 12:00:00')"
            )
        })
        .collect();
    let insert = format!(
        r#"INSERT INTO workflow_templates ("id", "name", "description", "driveId", "createdBy", "isPublic", "createdAt", "updatedAt") VALUES {}"#,
        rows.join(", ")
    );
    db.execute_raw(Statement::from_string(db.get_database_backend(), insert))
        .await
        .unwrap();
    Migrator::up(db, None).await.unwrap();

    check_searches(
        &app,
        &owner,
        &drive,
        &[
            ("σίσυφος ünï", &["ΣΊΣΥΦΟΣ Ünïcødé"]),
            ("привет 100%_\\", &["ΣΊΣΥΦΟΣ Ünïcødé"]),
            ("old àéî 0001", &["Old ÀÉÎ 0001"]),
            ("old àéî 1099", &["Old ÀÉÎ 1099"]),
        ],
    )
    .await;
    let data = app
        .ok(
            &owner,
            "query($d: ID!) { workflowTemplates(driveId: $d, filter: { search: \"OLD àéî\" }) { totalCount } }",
            json!({ "d": drive }),
        )
        .await;
    assert_eq!(data["workflowTemplates"]["totalCount"], 1099, "{data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_paginated_newest_first() {
    let (app, owner, drive) = setup().await;
    for i in 0..25 {
        create_template(&app, &owner, &drive, json!({ "name": format!("T{i:02}") })).await;
    }
    let page = |after: Option<String>, first: Option<i64>| {
        let app = &app;
        let owner = &owner;
        let drive = &drive;
        async move {
            app.gql(
                owner,
                "query($d: ID!, $first: Int, $after: String) {
                   workflowTemplates(driveId: $d, first: $first, after: $after) {
                     edges { cursor node { name } }
                     nodes { name }
                     pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
                     totalCount
                   }
                 }",
                json!({ "d": drive, "first": first, "after": after }),
            )
            .await
        }
    };
    let expect_names =
        |range: std::ops::Range<i32>| -> Vec<String> { range.rev().map(|i| format!("T{i:02}")).collect() };

    let mut after = None;
    let mut seen = Vec::new();
    for (n, (range, has_next)) in [(15..25, true), (5..15, true), (0..5, false)].into_iter().enumerate() {
        let body = page(after.clone(), Some(10)).await;
        assert!(body.get("errors").is_none(), "{body}");
        let c = &body["data"]["workflowTemplates"];
        let nodes: Vec<String> = c["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(nodes, expect_names(range.clone()), "page {n}: {c}");
        let edges = c["edges"].as_array().unwrap();
        let edge_names: Vec<&str> = edges.iter().map(|e| e["node"]["name"].as_str().unwrap()).collect();
        assert_eq!(edge_names, nodes, "edges and nodes agree");
        assert_eq!(c["totalCount"], 25, "{c}");
        assert_eq!(c["pageInfo"]["hasNextPage"], has_next, "page {n}: {c}");
        if n > 0 {
            assert_eq!(c["pageInfo"]["hasPreviousPage"], true, "page {n}: {c}");
        } else {
            assert_eq!(c["pageInfo"]["hasPreviousPage"], false, "page {n}: {c}");
        }
        assert_eq!(c["pageInfo"]["startCursor"], edges[0]["cursor"]);
        assert_eq!(c["pageInfo"]["endCursor"], edges[edges.len() - 1]["cursor"]);
        seen.extend(nodes);
        after = c["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, expect_names(0..25), "every template once, newest first");

    // Past the end: an empty page.
    let body = page(after.clone(), Some(10)).await;
    let c = &body["data"]["workflowTemplates"];
    assert_eq!(c["nodes"], json!([]), "{body}");
    assert_eq!(c["pageInfo"]["hasNextPage"], false);

    // Default page size 20; 100 is allowed.
    let body = page(None, None).await;
    let c = &body["data"]["workflowTemplates"];
    assert_eq!(c["nodes"].as_array().unwrap().len(), 20, "{body}");
    assert_eq!(c["pageInfo"]["hasNextPage"], true);
    let body = page(None, Some(100)).await;
    let c = &body["data"]["workflowTemplates"];
    assert_eq!(c["nodes"].as_array().unwrap().len(), 25, "{body}");
    assert_eq!(c["pageInfo"]["hasNextPage"], false);

    // first > 100, negative first, garbage cursors: BAD_USER_INPUT.
    for first in [101, 1000, -1] {
        let body = page(None, Some(first)).await;
        expect_bad_input(&body, "first");
    }
    for garbage in ["garbage!!", "bm90LWEtY3Vyc29y", ""] {
        let body = page(Some(garbage.into()), Some(10)).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "cursor {garbage:?}: {body}"
        );
        expect_bad_input(&body, "after");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_lists_the_builtin_agents() {
    let app = TestApp::spawn().await;
    let token = app.user("someone").await;
    let data = app
        .ok(&token, "{ agents { id description provider } }", json!({}))
        .await;
    let agents = data["agents"].as_array().unwrap();
    for id in ["echo", "json", "fail"] {
        let a = agents
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("agent {id} missing: {data}"));
        assert_eq!(a["provider"], "builtin", "{a}");
        assert!(a["description"].as_str().is_some_and(|d| !d.is_empty()), "{a}");
    }
    // The test harness registers extra agents of its own (provider "test");
    // the built-in ones are exactly these three.
    let mut builtin: Vec<&str> = agents
        .iter()
        .filter(|a| a["provider"] == "builtin")
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    builtin.sort();
    assert_eq!(builtin, ["echo", "fail", "json"], "{data}");
}
