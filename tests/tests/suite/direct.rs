//! The big reads write plain fields straight to the response text
//! (`graphql/render.rs`); a document that selects a composite field twice
//! under one key is resolved the ordinary way. Both must give the same
//! answer: each query here is sent as it is, and again with one composite
//! field repeated (which changes nothing in the answer but forces the
//! ordinary path), and the two bodies are compared. They may differ in the
//! order of an object's keys only: async-graphql's executor writes them as
//! its field futures finish, the direct path in selection order (as the
//! GraphQL spec asks).

use serde_json::json;
use workflows_tests::TestApp;

use crate::executions::{start, wait_for};
use crate::{create_drive, create_template, echo};

/// `query` with `extra` inserted after the first occurrence of `anchor`.
fn with_repeat(query: &str, anchor: &str, extra: &str) -> String {
    let at = query.find(anchor).expect("anchor in query") + anchor.len();
    format!("{}{extra}{}", &query[..at], &query[at..])
}

async fn same_both_ways(
    app: &TestApp,
    token: &str,
    query: &str,
    anchor: &str,
    extra: &str,
    vars: serde_json::Value,
) -> String {
    let direct = app.gql_text(token, query, vars.clone()).await;
    let ordinary = app.gql_text(token, &with_repeat(query, anchor, extra), vars).await;
    let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
    assert_eq!(
        parse(&direct),
        parse(&ordinary),
        "the two renderings differ:\n{direct}\n{ordinary}"
    );
    direct
}

const PAGE: &str = "query($d: ID!, $yes: Boolean!) {
  workflowTemplates(driveId: $d, first: 10) {
    nodes {
      __typename
      key: id
      id id
      name description driveId createdBy category tags isPublic version parentTemplateId createdAt updatedAt
      ... on WorkflowTemplate { isPublic name }
      ...Extra
      hidden: name @skip(if: $yes)
      shown: name @include(if: $yes)
      creator { __typename id name email }
      drive { id name }
      steps {
        __typename id workflowTemplateId stepOrder
        ...StepFields
        approval { required }
        template { id name }
      }
      versions(first: 1000) { totalCount }
    }
    pageInfo { hasNextPage }
  }
}
fragment Extra on WorkflowTemplate { category tags }
fragment StepFields on WorkflowStep {
  agentId promptTemplate requiresUserInput inputSchema metadata condition parallelGroup createdAt updatedAt
}";

const RUNS: &str = "query($id: ID!) {
  workflowExecution(id: $id) {
    __typename id workflowTemplateId userId driveId status currentStepOrder accumulatedContext initialContext
    templateVersion startedAt pausedAt completedAt failedAt errorMessage scheduleId scheduledFor createdAt updatedAt
    template { name }
    user { id }
    steps {
      id workflowExecutionId workflowStepId stepOrder status agentInput agentOutput userInput
      startedAt completedAt errorMessage reused createdAt updatedAt awaiting
      stepDefinition { id }
      approvals { approve }
    }
  }
  workflowExecutions(first: 10) {
    nodes { id status steps { id status awaiting agentOutput } }
  }
}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_ordinary_rendering_write_the_same_bytes() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Rendering").await;
    let full = create_template(
        &app,
        &owner,
        &drive,
        json!({
            "name": "Ticket \"triage\" — é ✓",
            "description": "line\nbreak",
            "category": "support",
            "tags": ["a", "b\"c"],
            "isPublic": true,
            "steps": [
                {
                    "agentId": "echo",
                    "promptTemplate": "first {{ticket}}",
                    "metadata": {"z": 1, "a": [true, null, 2.5]},
                    "condition": {"==": [1, 1]}
                },
                {
                    "agentId": "echo",
                    "promptTemplate": "then {{input.choice}}",
                    "requiresUserInput": true,
                    "inputSchema": {"type": "object", "properties": {"choice": {"type": "string"}}}
                }
            ]
        }),
    )
    .await;
    let plain = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "Plain", "steps": [echo("only {{ticket}}")] }),
    )
    .await;

    let page = same_both_ways(
        &app,
        &owner,
        PAGE,
        "versions(first: 1000) { totalCount }",
        " steps { id }",
        json!({ "d": drive, "yes": true }),
    )
    .await;
    // The direct path did write what was asked for.
    let body: serde_json::Value = serde_json::from_str(&page).unwrap();
    let nodes = body["data"]["workflowTemplates"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{body}");
    let t = nodes.iter().find(|n| n["id"] == full["id"]).unwrap();
    assert_eq!(t["__typename"], "WorkflowTemplate");
    assert_eq!(t["key"], full["id"]);
    assert_eq!(t["shown"], "Ticket \"triage\" — é ✓");
    assert!(t.get("hidden").is_none(), "{t}");
    assert_eq!(t["tags"], json!(["a", "b\"c"]));
    assert_eq!(t["steps"][0]["metadata"], json!({"z": 1, "a": [true, null, 2.5]}));
    assert_eq!(t["steps"][1]["requiresUserInput"], true);
    assert_eq!(t["steps"][0]["template"]["name"], t["name"]);
    assert_eq!(t["creator"]["__typename"], "User");
    // `versions(first: 1000)` is refused on every template, in both ways alike.
    assert!(t.get("versions").is_none(), "{t}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "{body}");
    // In selection order.
    assert!(
        page.contains(r#"{"__typename":"WorkflowTemplate","key":"#)
            && page.contains(r#"[{"__typename":"WorkflowStep","id":"#),
        "{page}"
    );

    // A run paused for input, and one completed.
    let paused = start(&app, &owner, full["id"].as_str().unwrap(), json!({ "ticket": "PS-1" })).await;
    wait_for(&app, &owner, &paused, "PAUSED").await;
    let done = start(&app, &owner, plain["id"].as_str().unwrap(), json!({ "ticket": "PS-2" })).await;
    wait_for(&app, &owner, &done, "COMPLETED").await;
    for id in [&paused, &done] {
        let text = same_both_ways(
            &app,
            &owner,
            RUNS,
            "template { name }",
            " template { name }",
            json!({ "id": id }),
        )
        .await;
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(body.get("errors").is_none(), "{body}");
        let e = &body["data"]["workflowExecution"];
        assert_eq!(e["id"], **id);
        if *id == paused {
            assert_eq!(e["status"], "PAUSED");
            assert_eq!(e["steps"][1]["awaiting"], "INPUT");
            assert_eq!(e["steps"][0]["agentOutput"]["text"], "first PS-1");
        } else {
            assert_eq!(e["status"], "COMPLETED");
            assert_eq!(e["steps"][0]["status"], "COMPLETED");
        }
    }
}
