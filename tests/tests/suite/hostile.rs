//! Issue 6: hostile input. Each request below is answered with a clear error
//! code (or, for strings that merely look dangerous, taken literally), the
//! server stays healthy, and a refused request leaves no rows behind.

use entity::{drive, workflow_execution, workflow_execution_step, workflow_step, workflow_template};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};
use workflows_tests::{TestApp, eventually};

use crate::{CREATE_TEMPLATE, create_drive, create_template, echo, expect_code};

/// Rows in every table a mutation may write.
async fn rows(app: &TestApp) -> [u64; 5] {
    let db = app.db();
    [
        drive::Entity::find().count(db).await.unwrap(),
        workflow_template::Entity::find().count(db).await.unwrap(),
        workflow_step::Entity::find().count(db).await.unwrap(),
        workflow_execution::Entity::find().count(db).await.unwrap(),
        workflow_execution_step::Entity::find().count(db).await.unwrap(),
    ]
}

/// The process answers and a normal query still works.
async fn assert_healthy(app: &TestApp, token: &str) {
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let data = app.ok(token, "{ me { id } drives { id } }", json!({})).await;
    assert!(data["me"]["id"].is_string());
}

async fn post(app: &TestApp, token: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = app
        .client
        .post(app.url("/graphql"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the server answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON (HTTP {status}): {text}"));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_queries_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.user("eve").await;
    let before = rows(&app).await;
    // Just past the depth limit, past async-graphql's recursion guard, and
    // nesting that would overflow a recursive parser.
    for levels in [13usize, 40, 30_000] {
        let query = format!(
            "{}{}{}",
            "{ drives { owner ".repeat(levels / 2),
            "{ id }",
            " } }".repeat(levels / 2)
        );
        let (status, body) = post(&app, &token, json!({ "query": query }).to_string()).await;
        assert_eq!(status, 200, "{body}");
        expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
    }
    // Deep nesting inside an argument value.
    let deep_value = format!("{}1{}", "[".repeat(50_000), "]".repeat(50_000));
    let query = format!("{{ drive(id: {deep_value}) {{ id }} }}");
    let (_, body) = post(&app, &token, json!({ "query": query }).to_string()).await;
    expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
    // Introspection is cyclic: nesting it deeply is refused as well.
    let intro = format!(
        "{{ __schema {{ types {} name {} }} }}",
        "{ fields { type ".repeat(10),
        "} } ".repeat(10)
    );
    let (_, body) = post(&app, &token, json!({ "query": intro }).to_string()).await;
    let message = expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
    assert!(message.contains("MAX_INTROSPECTION_DEPTH"), "{message}");
    assert_eq!(rows(&app).await, before);
    assert_healthy(&app, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_and_fragment_bombs_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.user("eve").await;
    let drive = create_drive(&app, &token, "D").await;
    let before = rows(&app).await;
    // 10 000 aliased copies of an expensive field.
    let fields: String = (0..10_000)
        .map(|i| format!("a{i}: workflowTemplates(driveId: \"{drive}\") {{ totalCount }} "))
        .collect();
    let (status, body) = post(&app, &token, json!({ "query": format!("{{ {fields} }}") }).to_string()).await;
    assert_eq!(status, 200);
    expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
    // The same through fragments that double at every level (2^30 fields).
    let mut query = String::from("{ ...F0 }\n");
    for i in 0..30 {
        query.push_str(&format!("fragment F{i} on Query {{ ...F{n} ...F{n} }}\n", n = i + 1));
    }
    query.push_str("fragment F30 on Query { me { id } }\n");
    let (_, body) = post(&app, &token, json!({ "query": query }).to_string()).await;
    expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
    // Mutations in bulk: refused whole, nothing written.
    let creates: String = (0..50)
        .map(|i| format!("d{i}: createDrive(input: {{ name: \"bomb {i}\" }}) {{ id }} "))
        .collect();
    let (_, body) = post(
        &app,
        &token,
        json!({ "query": format!("mutation {{ {creates} }}") }).to_string(),
    )
    .await;
    expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
    assert_eq!(rows(&app).await, before);
    assert_healthy(&app, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_list_requests_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.user("eve").await;
    let drive = create_drive(&app, &token, "D").await;
    // Far past the page size: refused, naming `first`.
    let q = "query($d: ID!, $n: Int) { workflowTemplates(driveId: $d, first: $n) { nodes { id steps { id } } } }";
    for n in [101, 1_000_000, i32::MAX, -5] {
        let body = app.gql(&token, q, json!({"d": drive, "n": n})).await;
        let message = expect_code(&body, "BAD_USER_INPUT");
        assert!(message.contains("first"), "{message}");
    }
    // Many full pages at once: refused when validated (complexity), before running.
    let page = format!(
        "workflowTemplates(driveId: \"{drive}\", first: 100) {{ nodes {{ id name description tags steps {{ id promptTemplate }} creator {{ id name }} }} }}"
    );
    let pages: String = (0..10).map(|i| format!("p{i}: {page} ")).collect();
    let body = app.gql(&token, &format!("{{ {pages} }}"), json!({})).await;
    let message = expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
    assert!(message.contains("MAX_QUERY_COMPLEXITY"), "{message}");
    // A huge list of tags, and of step ids to reorder.
    let tags: Vec<String> = (0..100_000).map(|i| format!("t{i}")).collect();
    let before = rows(&app).await;
    let body = app
        .gql(
            &token,
            CREATE_TEMPLATE,
            json!({"input": {"driveId": drive, "name": "T", "tags": tags}}),
        )
        .await;
    expect_code(&body, "BAD_USER_INPUT");
    let t = create_template(&app, &token, &drive, json!({"name": "T", "steps": [echo("a")]})).await;
    let ids: Vec<String> = (0..50_000).map(|i| format!("id{i}")).collect();
    let body = app
        .gql(
            &token,
            "mutation($t: ID!, $s: [ID!]!) { reorderWorkflowSteps(templateId: $t, stepIds: $s) { id } }",
            json!({"t": t["id"], "s": ids}),
        )
        .await;
    expect_code(&body, "BAD_USER_INPUT");
    assert_eq!(rows(&app).await[1], before[1] + 1);
    assert_healthy(&app, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_invalid_bodies_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.user("eve").await;
    let before = rows(&app).await;
    // 2 MiB, over the 1 MiB default.
    let big = json!({"query": "mutation($n: String!) { createDrive(input: { name: $n }) { id } }",
                     "variables": {"n": "x".repeat(2 * 1024 * 1024)}});
    let (status, body) = post(&app, &token, big.to_string()).await;
    assert_eq!(status, 413, "{body}");
    expect_code(&body, "GRAPHQL_VALIDATION_FAILED");

    for bad in [
        "{\"query\": ",
        "not json at all",
        "",
        "42",
        "{\"query\": 7}",
        "[1, 2]",
        "[{\"query\": \"{ me { id } }\"}, 7]",
    ] {
        let (status, body) = post(&app, &token, bad.to_owned()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        expect_code(&body, "GRAPHQL_PARSE_FAILED");
    }
    // Valid JSON, invalid GraphQL (or none).
    for bad in [
        json!({"query": "{ me { id "}),
        json!({"variables": {}}),
        json!({"query": "}}}}"}),
    ] {
        let (status, body) = post(&app, &token, bad.to_string()).await;
        assert_eq!(status, 200);
        expect_code(&body, "GRAPHQL_PARSE_FAILED");
    }
    assert_eq!(rows(&app).await, before);
    assert_healthy(&app, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_variable_types_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.user("eve").await;
    let drive = create_drive(&app, &token, "D").await;
    let before = rows(&app).await;
    let cases = [
        (
            "query($id: ID!) { drive(id: $id) { id } }",
            json!({"id": {"nested": true}}),
        ),
        ("query($id: ID!) { drive(id: $id) { id } }", json!({"id": null})),
        ("query($id: ID!) { drive(id: $id) { id } }", json!({})),
        (
            "query($d: ID!, $n: Int) { workflowTemplates(driveId: $d, first: $n) { totalCount } }",
            json!({"d": drive, "n": "ten"}),
        ),
        (
            "query($d: ID!, $n: Int) { workflowTemplates(driveId: $d, first: $n) { totalCount } }",
            json!({"d": drive, "n": 1e40}),
        ),
        (CREATE_TEMPLATE, json!({"input": {"driveId": drive, "name": 5}})),
        (
            CREATE_TEMPLATE,
            json!({"input": {"driveId": drive, "name": "T", "isPublic": "yes"}}),
        ),
        (
            CREATE_TEMPLATE,
            json!({"input": {"driveId": drive, "name": "T", "steps": "all of them"}}),
        ),
        (
            CREATE_TEMPLATE,
            json!({"input": {"driveId": drive, "name": "T", "steps": [{"agentId": "echo"}]}}),
        ),
        (CREATE_TEMPLATE, json!({"input": "everything"})),
        (
            "query($s: [WorkflowExecutionStatus!]) { workflowExecutions(filter: { status: $s }) { totalCount } }",
            json!({"s": ["DONE"]}),
        ),
    ];
    for (query, vars) in cases {
        let body = app.gql(&token, query, vars.clone()).await;
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{vars}: no errors: {body}"));
        for e in errors {
            let code = e["extensions"]["code"].as_str().unwrap_or_default();
            assert!(
                code == "BAD_USER_INPUT" || code == "GRAPHQL_VALIDATION_FAILED",
                "{vars}: {code}: {body}"
            );
            assert!(!e["message"].as_str().unwrap_or_default().is_empty());
        }
        assert!(body["data"].is_null(), "{vars}: {body}");
    }
    assert_eq!(rows(&app).await, before);
    assert_healthy(&app, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_text_in_a_prompt_is_refused() {
    let app = TestApp::spawn().await;
    let token = app.user("eve").await;
    let drive = create_drive(&app, &token, "D").await;
    let before = rows(&app).await;
    let request = |prompt: &str| {
        format!(
            r#"{{"query":"mutation($i: CreateWorkflowTemplateInput!) {{ createWorkflowTemplate(input: $i) {{ id }} }}",
                "variables":{{"i":{{"driveId":"{drive}","name":"T","steps":[{{"agentId":"echo","promptTemplate":"{prompt}"}}]}}}}}}"#
        )
    };
    // Invalid UTF-8 bytes in the body.
    let mut bytes = request("before AFTER").into_bytes();
    let at = bytes.windows(5).position(|w| w == b"AFTER").unwrap();
    bytes.splice(at..at, [0xff, 0xfe, 0xc3]);
    let (status, body) = post(&app, &token, bytes).await;
    assert_eq!(status, 400, "{body}");
    expect_code(&body, "GRAPHQL_PARSE_FAILED");
    // A lone surrogate escape is not a character.
    let (status, body) = post(&app, &token, request(r"half \ud800 a pair")).await;
    assert_eq!(status, 400, "{body}");
    expect_code(&body, "GRAPHQL_PARSE_FAILED");
    // NUL cannot be stored (PostgreSQL text and JSONB refuse it): refused on both databases.
    let (status, body) = post(&app, &token, request(r"nul \u0000 inside")).await;
    assert_eq!(status, 200, "{body}");
    let message = expect_code(&body, "BAD_USER_INPUT");
    assert!(message.contains("NUL"), "{message}");
    let body = app
        .gql(
            &token,
            "mutation($d: ID!, $c: JSON) { createDrive(input: { name: \"x\" }) { id } }",
            json!({"d": drive, "c": {"k\u{0}": 1}}),
        )
        .await;
    expect_code(&body, "BAD_USER_INPUT");
    assert_eq!(rows(&app).await, before);
    // Other unusual but valid text is kept exactly.
    let odd = "emoji 🦀, RTL \u{202e}txet, zero-width \u{200b}, CRLF\r\n, tab\t, backslash \\ and quote \"";
    let t = create_template(&app, &token, &drive, json!({"name": odd, "steps": [echo(odd)]})).await;
    assert_eq!(t["name"], odd.trim());
    assert_eq!(t["steps"][0]["promptTemplate"], odd);
    assert_healthy(&app, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_input_is_refused() {
    let ten_mb = "i".repeat(10 * 1024 * 1024);
    // With the default body limit it never reaches the schema.
    let app = TestApp::spawn().await;
    let token = app.user("eve").await;
    let (status, body) = post(
        &app,
        &token,
        json!({"query": "mutation($e: ID!, $i: JSON!) { submitWorkflowUserInput(executionId: $e, input: $i) { id } }",
               "variables": {"e": "x", "i": {"text": ten_mb}}})
        .to_string(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    expect_code(&body, "GRAPHQL_VALIDATION_FAILED");
    assert_healthy(&app, &token).await;

    // With a body limit that lets it through, the input limit refuses it and
    // the paused run is untouched.
    let app = TestApp::spawn_with(|c| c.limits.max_body_bytes = 32 * 1024 * 1024).await;
    let token = app.user("eve").await;
    let drive = create_drive(&app, &token, "D").await;
    let t = create_template(
        &app,
        &token,
        &drive,
        json!({"name": "P", "steps": [{"agentId": "echo", "promptTemplate": "{{input.text}}", "requiresUserInput": true}]}),
    )
    .await;
    let data = app
        .ok(
            &token,
            "mutation($t: ID!) { startWorkflowExecution(templateId: $t) { id } }",
            json!({"t": t["id"]}),
        )
        .await;
    let id = data["startWorkflowExecution"]["id"].as_str().unwrap().to_owned();
    let run = settled(&app, &token, &id, "status").await;
    assert_eq!(run["status"], "PAUSED", "{run}");
    let before = rows(&app).await;
    let body = app
        .gql(
            &token,
            "mutation($e: ID!, $i: JSON!) { submitWorkflowUserInput(executionId: $e, input: $i) { id } }",
            json!({"e": id, "i": {"text": ten_mb}}),
        )
        .await;
    let message = expect_code(&body, "BAD_USER_INPUT");
    assert!(message.contains("MAX_INPUT_BYTES"), "{message}");
    let d = app
        .ok(
            &token,
            "query($id: ID!) { workflowExecution(id: $id) { status steps { userInput } } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(d["workflowExecution"]["status"], "PAUSED");
    assert!(d["workflowExecution"]["steps"][0]["userInput"].is_null());
    // A 10 MB starting context is refused the same way.
    let body = app
        .gql(
            &token,
            "mutation($t: ID!, $c: JSON) { startWorkflowExecution(templateId: $t, context: $c) { id } }",
            json!({"t": t["id"], "c": {"text": ten_mb}}),
        )
        .await;
    assert!(expect_code(&body, "BAD_USER_INPUT").contains("MAX_CONTEXT_BYTES"));
    assert_eq!(rows(&app).await, before);
    assert_healthy(&app, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_with_unbalanced_or_nested_braces_run_as_documented() {
    let app = TestApp::spawn().await;
    let token = app.user("eve").await;
    let drive = create_drive(&app, &token, "D").await;
    let context = json!({"code": "fn main() { }", "obj": {"b": [1, {"c": null}], "a": "x"}});
    let prompts = [
        "{{",
        "}}",
        "{{code",
        "code}}",
        "}}{{code}}{{",
        "{{{{code}}}}",
        "{ {{code}} }",
        "{{ {{code}} }}",
        "{{a b}} {{}} {{ }} {{.}} {{code.}} {{.code}}",
        "{{obj}} {{ obj.b.1 }} {{obj.b.1.c}}",
        "{\"json\": {\"nested\": {{obj.a}}}}",
        "{{{{{{{{{{{{{{{{{{{{",
        "}}}}}}}}}}}}}}}}}}}}{{code}}",
    ];
    let steps: Vec<Value> = prompts.iter().map(|p| echo(p)).collect();
    let t = create_template(&app, &token, &drive, json!({"name": "Braces", "steps": steps})).await;
    let data = app
        .ok(
            &token,
            "mutation($t: ID!, $c: JSON) { startWorkflowExecution(templateId: $t, context: $c) { id } }",
            json!({"t": t["id"], "c": context}),
        )
        .await;
    let id = data["startWorkflowExecution"]["id"].as_str().unwrap().to_owned();
    let run = settled(&app, &token, &id, "status errorMessage steps { agentOutput }").await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    let mut ctx = context.clone();
    for (i, p) in prompts.iter().enumerate() {
        let expected = workflows::core::prompt::render(p, &ctx, None).expect("renders");
        assert_eq!(run["steps"][i]["agentOutput"]["text"], expected, "prompt {p:?}");
        ctx[format!("step_{i}_output")] = json!({ "text": expected });
    }
    assert_eq!(run["steps"][5]["agentOutput"]["text"], "{{fn main() { }}}");
    assert_eq!(
        run["steps"][9]["agentOutput"]["text"],
        r#"{"a":"x","b":[1,{"c":null}]} {"c":null} null"#
    );
    // A brace-only name that is a missing variable fails the run with its name.
    let t = create_template(
        &app,
        &token,
        &drive,
        json!({"name": "Missing", "steps": [echo("{{ {{missing}} }}")]}),
    )
    .await;
    let data = app
        .ok(
            &token,
            "mutation($t: ID!) { startWorkflowExecution(templateId: $t) { id } }",
            json!({"t": t["id"]}),
        )
        .await;
    let id = data["startWorkflowExecution"]["id"].as_str().unwrap().to_owned();
    let run = settled(&app, &token, &id, "status errorMessage").await;
    assert_eq!(run["status"], "FAILED", "the run with a missing variable fails: {run}");
    assert!(run["errorMessage"].as_str().unwrap().contains("'missing'"), "{run}");
    assert_healthy(&app, &token).await
}

/// Polls the execution's `fields` until it is no longer RUNNING (10 s at most).
async fn settled(app: &TestApp, token: &str, id: &str, fields: &str) -> Value {
    let query = format!("query($id: ID!) {{ workflowExecution(id: $id) {{ {fields} }} }}");
    eventually(std::time::Duration::from_secs(10), || async {
        let run = app.ok(token, &query, json!({"id": id})).await["workflowExecution"].clone();
        if run["status"] == "RUNNING" { Err(run) } else { Ok(run) }
    })
    .await
}

/// Strings that break naive SQL, LIKE patterns or JSON paths.
const SQLISH: [&str; 8] = [
    "'; DROP TABLE workflow_templates; --",
    "\" OR \"1\"=\"1",
    "Robert'); DELETE FROM users WHERE ('1'='1",
    "%",
    "_",
    "100% \\ escaped \\% and \\_",
    "$1 ?? ->> '{a}' @> ::text",
    "/* comment */ UNION SELECT * FROM drive_members --",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_like_strings_are_plain_text_everywhere() {
    let app = TestApp::spawn().await;
    let token = app.user("eve").await;
    // Ids that look like SQL are unknown ids, not queries.
    for s in SQLISH {
        let data = app
            .ok(
                &token,
                "query($id: ID!) { drive(id: $id) { id } workflowTemplate(id: $id) { id } workflowExecution(id: $id) { id } }",
                json!({"id": s}),
            )
            .await;
        assert_eq!(
            data,
            json!({"drive": null, "workflowTemplate": null, "workflowExecution": null})
        );
        let body = app
            .gql(
                &token,
                "mutation($id: ID!) { deleteWorkflowTemplate(id: $id) }",
                json!({"id": s}),
            )
            .await;
        expect_code(&body, "NOT_FOUND");
        let body = app
            .gql(
                &token,
                "query($a: String) { workflowExecutions(after: $a) { totalCount } }",
                json!({"a": s}),
            )
            .await;
        expect_code(&body, "BAD_USER_INPUT");
    }
    // Every text field stores them literally.
    let mut ids = Vec::new();
    for (i, s) in SQLISH.iter().enumerate() {
        let drive = create_drive(&app, &token, s).await;
        let t = create_template(
            &app,
            &token,
            &drive,
            json!({
                "name": s, "description": s, "category": s, "tags": [s, "common"], "isPublic": true,
                "steps": [{"agentId": "echo", "promptTemplate": format!("{s} {{{{v}}}}"),
                           "metadata": {"note": s}, "inputSchema": {"type": "object", "description": s},
                           "condition": {"!=": [{"var": "v"}, s]}}]
            }),
        )
        .await;
        assert_eq!(t["name"], *s);
        assert_eq!(t["description"], *s);
        assert_eq!(t["category"], *s);
        assert_eq!(t["tags"], json!([s, "common"]));
        assert_eq!(t["steps"][0]["promptTemplate"], format!("{s} {{{{v}}}}"));
        ids.push((i, drive, t["id"].as_str().unwrap().to_owned()));
    }
    let list = "query($d: ID!, $f: WorkflowTemplateFilter) { workflowTemplates(driveId: $d, filter: $f) { nodes { id name } } }";
    for (i, drive, template) in &ids {
        let s = SQLISH[*i];
        // Each filter matches its own template by the literal text, and nothing
        // else: `%` and `_` are not wildcards.
        for filter in [
            json!({"category": s}),
            json!({"tags": [s]}),
            json!({"search": s}),
            json!({"tags": [s, "common"], "category": s, "search": s, "isPublic": true}),
        ] {
            let data = app.ok(&token, list, json!({"d": drive, "f": filter})).await;
            assert_eq!(
                data["workflowTemplates"]["nodes"],
                json!([{"id": template, "name": s}]),
                "filter {filter}"
            );
        }
        for filter in [
            json!({"createdBy": s}),
            json!({"category": format!("{s}x")}),
            json!({"tags": [s, "other"]}),
        ] {
            let data = app.ok(&token, list, json!({"d": drive, "f": filter})).await;
            assert_eq!(data["workflowTemplates"]["nodes"], json!([]), "filter {filter}");
        }
        // Runs carry them through context, prompts and input untouched.
        let data = app
            .ok(
                &token,
                "mutation($t: ID!, $c: JSON) { startWorkflowExecution(templateId: $t, context: $c) { id } }",
                json!({"t": template, "c": {"v": s, s: s}}),
            )
            .await;
        let id = data["startWorkflowExecution"]["id"].as_str().unwrap().to_owned();
        let done = settled(
            &app,
            &token,
            &id,
            "status accumulatedContext steps { status agentOutput }",
        )
        .await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        // The condition `v != s` is false: the step is skipped, and the context is as given.
        assert_eq!(done["steps"][0]["status"], "SKIPPED");
        assert_eq!(done["accumulatedContext"][s], s);
        let data = app
            .ok(
                &token,
                "query($d: ID!) { workflowExecutions(filter: { driveId: $d }) { totalCount } }",
                json!({"d": drive}),
            )
            .await;
        assert_eq!(data["workflowExecutions"]["totalCount"], 1);
    }
    // Every table is still there and holds what was written.
    assert_eq!(rows(&app).await, [8, 8, 8, 8, 8]);
    assert_healthy(&app, &token).await;
}
