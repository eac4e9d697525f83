//! Issue 6: every query and data limit refuses with a clear code and names
//! its setting; each can be changed; GraphiQL still works under the defaults.

use serde_json::{Value, json};
use workflows_tests::{TestApp, error_code, eventually};

use crate::{create_drive, create_template, echo, expect_bad_input, expect_code};

/// The introspection query GraphiQL 3 sends (graphql-js 16's
/// `getIntrospectionQuery({ inputValueDeprecation: true })`).
pub const GRAPHIQL_INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description locations args(includeDeprecated: true) { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description
    args(includeDeprecated: true) { ...InputValue }
    type { ...TypeRef }
    isDeprecated deprecationReason
  }
  inputFields(includeDeprecated: true) { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue {
  name description type { ...TypeRef } defaultValue isDeprecated deprecationReason
}
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;

/// `{ drives { owner { ... } } }` style nesting `levels` fields deep.
fn nested(levels: usize) -> String {
    // workflowTemplate -> steps -> template -> steps -> … -> id
    let mut q = String::from("query($id: ID!) { workflowTemplate(id: $id) {");
    let mut open = 1;
    let mut on_template = true;
    while open < levels - 1 {
        q.push_str(if on_template { " steps {" } else { " template {" });
        on_template = !on_template;
        open += 1;
    }
    q.push_str(" id");
    q.push_str(&" }".repeat(open));
    q.push_str(" }");
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_introspection_works_under_the_defaults() {
    let app = TestApp::spawn().await;
    let token = app.user("ana").await;
    let data = app.ok(&token, GRAPHIQL_INTROSPECTION, json!({})).await;
    assert_eq!(data["__schema"]["queryType"]["name"], "Query");
    let types = data["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "WorkflowTemplate"), "{data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_can_be_turned_off() {
    let app = TestApp::spawn_with(|c| c.limits.introspection = false).await;
    let token = app.user("ana").await;
    let body = app.gql(&token, GRAPHIQL_INTROSPECTION, json!({})).await;
    assert!(body["errors"].is_array(), "{body}");
    assert!(
        body["data"].is_null() || body["data"]["__schema"].is_null(),
        "introspection answered while turned off: {body}"
    );
    for e in body["errors"].as_array().unwrap() {
        assert!(e["extensions"]["code"].is_string(), "error without a code: {body}");
    }
    // Ordinary queries are unaffected.
    app.ok(&token, "{ me { id } }", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_limit_default_and_setting() {
    let app = TestApp::spawn().await;
    let token = app.user("ana").await;
    let drive = create_drive(&app, &token, "D").await;
    let t = create_template(&app, &token, &drive, json!({"name": "T", "steps": [echo("x")]})).await;
    let vars = json!({ "id": t["id"] });
    app.ok(&token, &nested(12), vars.clone()).await;
    let body = app.gql(&token, &nested(13), vars.clone()).await;
    let message = expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
    assert!(
        message.contains("13") && message.contains("MAX_QUERY_DEPTH"),
        "{message}"
    );

    let app = TestApp::spawn_with(|c| c.limits.max_query_depth = 3).await;
    let token = app.user("ana").await;
    app.ok(&token, "{ drives { owner { id } } }", json!({})).await;
    let body = app
        .gql(&token, "{ drives { members { user { id } } } }", json!({}))
        .await;
    assert!(expect_code(&body, "GRAPHQL_VALIDATION_FAILED").contains("at most 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complexity_weighs_pages_by_first() {
    let app = TestApp::spawn_with(|c| c.limits.max_query_complexity = 100).await;
    let token = app.user("ana").await;
    let drive = create_drive(&app, &token, "D").await;
    let q = "query($d: ID!, $n: Int) { workflowTemplates(driveId: $d, first: $n) { nodes { id name tags steps { id promptTemplate } } } }";
    // 7 per row: 10 rows fit in 100, 50 do not (the variable counts too).
    app.ok(&token, q, json!({"d": drive, "n": 10})).await;
    let body = app.gql(&token, q, json!({"d": drive, "n": 50})).await;
    let message = expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
    assert!(
        message.contains("MAX_QUERY_COMPLEXITY") && message.contains("first"),
        "{message}"
    );
    // Without `first`, a page counts as 20 rows.
    let body = app
        .gql(
            &token,
            "query($d: ID!) { workflowTemplates(driveId: $d) { nodes { id name tags steps { id promptTemplate } } } }",
            json!({"d": drive}),
        )
        .await;
    expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_and_root_field_limits() {
    let app = TestApp::spawn().await;
    let token = app.user("ana").await;
    let aliases = |n: usize| {
        let fields: Vec<String> = (0..n).map(|i| format!("a{i}: me {{ id }}")).collect();
        format!("{{ {} }}", fields.join(" "))
    };
    // 20 root fields is the default maximum, and 30 aliases.
    app.ok(&token, &aliases(20), json!({})).await;
    let body = app.gql(&token, &aliases(21), json!({})).await;
    assert!(expect_code(&body, "GRAPHQL_VALIDATION_FAILED").contains("MAX_ROOT_FIELDS"));
    let nested_aliases: Vec<String> = (0..31).map(|i| format!("n{i}: id")).collect();
    let body = app
        .gql(
            &token,
            &format!("{{ me {{ {} }} }}", nested_aliases.join(" ")),
            json!({}),
        )
        .await;
    assert!(expect_code(&body, "GRAPHQL_VALIDATION_FAILED").contains("31 aliases"));

    let app = TestApp::spawn_with(|c| {
        c.limits.max_query_aliases = 2;
        c.limits.max_root_fields = 3;
    })
    .await;
    let token = app.user("ana").await;
    app.ok(&token, "{ a: me { id } b: me { id } drives { id } }", json!({}))
        .await;
    let body = app
        .gql(&token, "{ a: me { id } b: me { id } c: me { id } }", json!({}))
        .await;
    assert!(expect_code(&body, "GRAPHQL_VALIDATION_FAILED").contains("at most 2"));
    let body = app
        .gql(
            &token,
            "{ me { id } drives { id } agents { id } x: me { id } }",
            json!({}),
        )
        .await;
    assert!(expect_code(&body, "GRAPHQL_VALIDATION_FAILED").contains("MAX_ROOT_FIELDS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_run_in_order_up_to_the_limit() {
    let app = TestApp::spawn_with(|c| c.limits.max_batch_size = 3).await;
    let token = app.user("ana").await;
    let auth = format!("Bearer {token}");
    let batch = json!([
        {"query": "mutation { createDrive(input: { name: \"B1\" }) { id } }"},
        {"query": "{ drives { name } }"},
        {"query": "{ nope }"}
    ]);
    let (status, body) = app.gql_raw(Some(&auth), &batch.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let list = body
        .as_array()
        .unwrap_or_else(|| panic!("a batch answers with a list: {body}"));
    assert_eq!(list.len(), 3);
    assert!(list[0]["data"]["createDrive"]["id"].is_string(), "{body}");
    // The second saw the first's drive: they ran one after another.
    assert_eq!(list[1]["data"]["drives"][0]["name"], "B1", "{body}");
    assert_eq!(error_code(&list[2]), "GRAPHQL_VALIDATION_FAILED");

    let four: Vec<Value> = (0..4).map(|_| json!({"query": "{ me { id } }"})).collect();
    let (status, body) = app.gql_raw(Some(&auth), &Value::Array(four).to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(expect_code(&body, "GRAPHQL_VALIDATION_FAILED").contains("MAX_BATCH_SIZE"));
    let (status, body) = app.gql_raw(Some(&auth), "[]").await;
    assert_eq!(status, 400, "{body}");
    expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_size_limit_is_a_413_with_a_code() {
    let app = TestApp::spawn_with(|c| c.limits.max_body_bytes = 2_000).await;
    let token = app.user("ana").await;
    let big = "x".repeat(3_000);
    let (status, body) = app
        .gql_raw(
            Some(&format!("Bearer {token}")),
            &json!({"query": "mutation($n: String!) { createDrive(input: { name: $n }) { id } }", "variables": {"n": big}})
                .to_string(),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    let message = expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
    assert!(message.contains("MAX_BODY_BYTES"), "{message}");
    let drives = app.ok(&token, "{ drives { id } }", json!({})).await;
    assert_eq!(drives["drives"], json!([]));

    // Without a Content-Length (chunked), the limit holds too.
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok("{\"query\":\"".into()), Ok("y".repeat(3_000))];
    let resp = app
        .client
        .post(app.url("/graphql"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.unwrap();
    expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_stops_a_stuck_mutation_and_leaves_nothing() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let app = TestApp::spawn_with(|c| c.limits.request_timeout = std::time::Duration::from_millis(400)).await;
    let token = app.user("ana").await;
    // Hold the write lock on drives, so the mutation waits until its timeout.
    let blocker = app.db().begin().await.unwrap();
    if workflows_tests::is_postgres() {
        blocker
            .execute_unprepared("LOCK TABLE drives IN EXCLUSIVE MODE")
            .await
            .unwrap();
    } else {
        blocker
            .execute_unprepared("UPDATE users SET name = name")
            .await
            .unwrap();
    }
    let (status, body) = app
        .gql_raw(
            Some(&format!("Bearer {token}")),
            r#"{"query":"mutation { createDrive(input: { name: \"stuck\" }) { id } }"}"#,
        )
        .await;
    blocker.rollback().await.unwrap();
    assert_eq!(status, 503, "{body}");
    let message = expect_code(&body, "INTERNAL_SERVER_ERROR");
    assert!(message.contains("REQUEST_TIMEOUT"), "{message}");
    let drives = app.ok(&token, "{ drives { name } }", json!({})).await;
    assert_eq!(drives["drives"], json!([]), "the stopped mutation left a row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_and_prompt_size_limits() {
    let app = TestApp::spawn_with(|c| {
        c.limits.max_prompt_bytes = 100;
        c.limits.max_template_bytes = 195;
    })
    .await;
    let token = app.user("ana").await;
    let drive = create_drive(&app, &token, "D").await;
    let body = app
        .gql(
            &token,
            crate::CREATE_TEMPLATE,
            json!({"input": {"driveId": drive, "name": "T", "steps": [echo(&"p".repeat(101))]}}),
        )
        .await;
    let message = expect_code(&body, "BAD_USER_INPUT");
    assert!(
        message.contains("input.steps[0].promptTemplate") && message.contains("MAX_PROMPT_BYTES"),
        "{message}"
    );
    let three = vec![echo(&"p".repeat(90)); 3];
    let body = app
        .gql(
            &token,
            crate::CREATE_TEMPLATE,
            json!({"input": {"driveId": drive, "name": "T", "steps": three}}),
        )
        .await;
    assert!(expect_code(&body, "BAD_USER_INPUT").contains("MAX_TEMPLATE_BYTES"));

    // Built up step by step, the template stops at the limit; nothing is written.
    let t = create_template(
        &app,
        &token,
        &drive,
        json!({"name": "T", "steps": [echo(&"p".repeat(90))]}),
    )
    .await;
    let add = "mutation($t: ID!, $i: WorkflowStepInput!) { addWorkflowStep(templateId: $t, input: $i) { id } }";
    app.ok(&token, add, json!({"t": t["id"], "i": echo(&"q".repeat(90))}))
        .await;
    let body = app
        .gql(&token, add, json!({"t": t["id"], "i": echo(&"r".repeat(90))}))
        .await;
    expect_bad_input(&body, "MAX_TEMPLATE_BYTES");
    let steps = crate::steps_of(&app, &token, t["id"].as_str().unwrap()).await;
    assert_eq!(steps.len(), 2);
    let update = "mutation($s: ID!, $p: String!) { updateWorkflowStep(id: $s, input: { promptTemplate: $p }) { id } }";
    let body = app
        .gql(&token, update, json!({"s": steps[0].0, "p": "p".repeat(100)}))
        .await;
    expect_bad_input(&body, "MAX_TEMPLATE_BYTES");
    let body = app
        .gql(&token, update, json!({"s": steps[0].0, "p": "p".repeat(101)}))
        .await;
    expect_bad_input(&body, "MAX_PROMPT_BYTES");
    assert_eq!(
        crate::prompts_of(&app, &token, t["id"].as_str().unwrap()).await[0],
        "p".repeat(90)
    );
}

async fn wait_status(app: &TestApp, token: &str, id: &str, want: &str) -> Value {
    eventually(std::time::Duration::from_secs(10), || async {
        let data = app
            .ok(
                token,
                "query($id: ID!) { workflowExecution(id: $id) { status errorMessage accumulatedContext
                   steps { stepOrder status agentOutput userInput errorMessage } } }",
                json!({"id": id}),
            )
            .await;
        let e = data["workflowExecution"].clone();
        if e["status"] == want { Ok(e) } else { Err(e) }
    })
    .await
}

const START: &str = "mutation($t: ID!, $c: JSON) { startWorkflowExecution(templateId: $t, context: $c) { id status } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_and_input_limits_fail_clearly_and_truncate_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.limits.max_context_bytes = 300;
        c.limits.max_input_bytes = 120;
    })
    .await;
    let token = app.user("ana").await;
    let drive = create_drive(&app, &token, "D").await;

    // A starting context over the limit is refused; nothing starts.
    let t = create_template(&app, &token, &drive, json!({"name": "T", "steps": [echo("{{text}}")]})).await;
    let body = app
        .gql(&token, START, json!({"t": t["id"], "c": {"text": "x".repeat(400)}}))
        .await;
    expect_bad_input(&body, "MAX_CONTEXT_BYTES");
    let runs = app.ok(&token, "{ workflowExecutions { totalCount } }", json!({})).await;
    assert_eq!(runs["workflowExecutions"]["totalCount"], 0);

    // A step whose output would push the context over fails, naming the limit;
    // its output is not stored and the context keeps its size.
    let data = app
        .ok(&token, START, json!({"t": t["id"], "c": {"text": "y".repeat(200)}}))
        .await;
    let id = data["startWorkflowExecution"]["id"].as_str().unwrap().to_owned();
    let run = wait_status(&app, &token, &id, "FAILED").await;
    let message = run["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with("step 0 failed") && message.contains("MAX_CONTEXT_BYTES"),
        "{message}"
    );
    assert_eq!(run["steps"][0]["status"], "FAILED");
    assert!(run["steps"][0]["agentOutput"].is_null(), "{run}");
    assert_eq!(run["accumulatedContext"], json!({"text": "y".repeat(200)}));

    // User input: over its own limit, or pushing the context over, is refused
    // and the run stays PAUSED without input.
    let schema = json!({"type": "object"});
    let t = create_template(
        &app,
        &token,
        &drive,
        json!({"name": "P", "steps": [{"agentId": "echo", "promptTemplate": "ok", "requiresUserInput": true, "inputSchema": schema}]}),
    )
    .await;
    let data = app
        .ok(&token, START, json!({"t": t["id"], "c": {"pad": "z".repeat(200)}}))
        .await;
    let id = data["startWorkflowExecution"]["id"].as_str().unwrap().to_owned();
    wait_status(&app, &token, &id, "PAUSED").await;
    let submit = "mutation($e: ID!, $i: JSON!) { submitWorkflowUserInput(executionId: $e, input: $i) { status } }";
    let body = app
        .gql(&token, submit, json!({"e": id, "i": {"note": "n".repeat(200)}}))
        .await;
    expect_bad_input(&body, "MAX_INPUT_BYTES");
    let body = app
        .gql(&token, submit, json!({"e": id, "i": {"note": "n".repeat(100)}}))
        .await;
    expect_bad_input(&body, "MAX_CONTEXT_BYTES");
    let run = wait_status(&app, &token, &id, "PAUSED").await;
    assert!(run["steps"][0]["userInput"].is_null(), "{run}");
    app.ok(&token, submit, json!({"e": id, "i": {"note": "short"}})).await;
    wait_status(&app, &token, &id, "COMPLETED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_prompt_over_the_limit_fails_the_step() {
    let app = TestApp::spawn_with(|c| c.limits.max_prompt_bytes = 50).await;
    let token = app.user("ana").await;
    let drive = create_drive(&app, &token, "D").await;
    let t = create_template(
        &app,
        &token,
        &drive,
        json!({"name": "T", "steps": [echo("say {{text}}")]}),
    )
    .await;
    let data = app
        .ok(&token, START, json!({"t": t["id"], "c": {"text": "w".repeat(60)}}))
        .await;
    let id = data["startWorkflowExecution"]["id"].as_str().unwrap();
    let run = wait_status(&app, &token, id, "FAILED").await;
    let message = run["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("rendered prompt is 64 bytes") && message.contains("MAX_PROMPT_BYTES"),
        "{message}"
    );
}
