//! Nested queries cost a constant number of SQL statements, however many
//! templates a page holds (DataLoaders batch each level).

use serde_json::json;
use workflows_tests::{TestApp, eventually};

use crate::executions::{start, wait_for};
use crate::{add_member, create_drive, create_template, echo};

const NESTED: &str = "query($d: ID!, $first: Int) {
  workflowTemplates(driveId: $d, first: $first) {
    nodes {
      id name tags
      creator { id name }
      drive { id name }
      steps { id stepOrder agentId promptTemplate }
    }
  }
}";

/// Statements sent for one request (the fewest of three tries, so a
/// background task of the server cannot inflate the number).
async fn statements_for(app: &TestApp, token: &str, drive: &str, first: i64) -> (u64, usize) {
    let mut best = u64::MAX;
    let mut nodes = 0;
    for _ in 0..3 {
        let before = app.statements();
        let data = app.ok(token, NESTED, json!({ "d": drive, "first": first })).await;
        let after = app.statements();
        best = best.min(after - before);
        let list = data["workflowTemplates"]["nodes"].as_array().unwrap();
        nodes = list.len();
        for t in list {
            assert_eq!(t["steps"].as_array().unwrap().len(), 3, "{t}");
            assert_eq!(t["drive"]["id"], drive);
            assert!(t["creator"]["name"].is_string(), "{t}");
            for (i, s) in t["steps"].as_array().unwrap().iter().enumerate() {
                assert_eq!(s["stepOrder"], i);
            }
        }
    }
    (best, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_template_lists_use_a_constant_number_of_statements() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let member = app.user("member").await;
    let drive = create_drive(&app, &owner, "Big drive").await;
    add_member(&app, &owner, &drive, "member", "MEMBER").await;
    for i in 0..50 {
        // Two creators, so `creator` has more than one user to load.
        let token = if i % 2 == 0 { &owner } else { &member };
        create_template(
            &app,
            token,
            &drive,
            json!({
                "name": format!("Template {i}"),
                "tags": ["t", format!("n{i}")],
                "isPublic": true,
                "steps": [echo("one"), echo("two {{step_0_output}}"), echo("three {{step_1_output}}")]
            }),
        )
        .await;
    }

    let (five, n5) = statements_for(&app, &owner, &drive, 5).await;
    let (fifty, n50) = statements_for(&app, &owner, &drive, 50).await;
    assert_eq!((n5, n50), (5, 50));
    println!("statements: first 5 -> {five}, first 50 -> {fifty}");
    assert_eq!(
        five, fifty,
        "statement count grows with the page size (5: {five}, 50: {fifty})"
    );
    assert!(
        fifty <= 6,
        "{fifty} statements for one nested list (at most 6 expected)"
    );

    // The same holds for a MEMBER (whose list is filtered by visibility).
    let (m5, _) = statements_for(&app, &member, &drive, 5).await;
    let (m50, _) = statements_for(&app, &member, &drive, 50).await;
    assert_eq!(m5, m50, "member: 5 -> {m5}, 50 -> {m50}");
    assert!(m50 <= 6, "member: {m50} statements");

    // The page peerbench and `workflows-bench` measure (creators and steps,
    // no drive): the page, which decides what the viewer may see from the
    // stored memberships and joins the creators, and its steps; once the
    // steps of those template versions were read, the page alone.
    let page = "query($d: ID!, $first: Int) { workflowTemplates(driveId: $d, first: $first) {
      nodes { id name tags isPublic createdAt creator { id name } steps { id stepOrder agentId promptTemplate inputSchema } } } }";
    for first in [1, 50] {
        // The first read of these steps (a statement the background work
        // makes at the same moment may add one).
        let before = app.statements();
        let data = app.ok(&owner, page, json!({ "d": drive, "first": first })).await;
        let cold = app.statements() - before;
        assert_eq!(data["workflowTemplates"]["nodes"].as_array().unwrap().len(), first);
        assert!(
            (2..=3).contains(&cold),
            "first {first}, steps not yet read: {cold} statements (2 expected)"
        );
        let mut best = u64::MAX;
        for _ in 0..3 {
            let before = app.statements();
            let data = app.ok(&owner, page, json!({ "d": drive, "first": first })).await;
            best = best.min(app.statements() - before);
            assert_eq!(
                data["workflowTemplates"]["nodes"][0]["steps"].as_array().unwrap().len(),
                3
            );
        }
        assert_eq!(
            best, 1,
            "first {first}, steps read before: {best} statements (1 expected)"
        );
    }
}

/// A page's steps are read without the JSON columns the document never
/// selects; a document that selects one anywhere, even on another field
/// reading the same steps, gets them as stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_leaves_out_only_the_step_columns_no_field_reads() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "d").await;
    let condition = json!({ "==": [{ "var": "go" }, true] });
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({
            "name": "t",
            "steps": [{
                "agentId": "echo", "promptTemplate": "p",
                "inputSchema": { "type": "object" },
                "metadata": { "timeoutMs": 1000 },
                "condition": condition
            }]
        }),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    let lean = app
        .ok(
            &owner,
            "query($d: ID!) { workflowTemplates(driveId: $d) { nodes { steps { id promptTemplate } } } }",
            json!({ "d": drive }),
        )
        .await;
    assert_eq!(lean["workflowTemplates"]["nodes"][0]["steps"][0]["promptTemplate"], "p");
    // The steps kept from that page lack those columns: a page that reads
    // them reads the steps again.
    let full = app
        .ok(
            &owner,
            "query($d: ID!) { workflowTemplates(driveId: $d) { nodes { steps { metadata } } } }",
            json!({ "d": drive }),
        )
        .await;
    assert_eq!(
        full["workflowTemplates"]["nodes"][0]["steps"][0]["metadata"],
        json!({ "timeoutMs": 1000 }),
        "{full}"
    );
    let both = app
        .ok(
            &owner,
            "query($d: ID!, $t: ID!) {
               workflowTemplates(driveId: $d) { nodes { steps { id } } }
               workflowTemplate(id: $t) { steps { inputSchema metadata condition } }
               again: workflowTemplates(driveId: $d) { nodes { ...S } }
             }
             fragment S on WorkflowTemplate { steps { metadata } }",
            json!({ "d": drive, "t": id }),
        )
        .await;
    let step = &both["workflowTemplate"]["steps"][0];
    assert_eq!(step["inputSchema"], json!({ "type": "object" }), "{both}");
    assert_eq!(step["metadata"], json!({ "timeoutMs": 1000 }), "{both}");
    assert_eq!(step["condition"], condition, "{both}");
    assert_eq!(
        both["again"]["nodes"][0]["steps"][0]["metadata"],
        json!({ "timeoutMs": 1000 }),
        "{both}"
    );
}

/// The execution detail of peerbench and `workflows-bench`: every column of
/// one execution, its template's name, and its step records.
const EXECUTION_DETAIL: &str = "query($id: ID!) {
  workflowExecution(id: $id) {
    id workflowTemplateId userId driveId status currentStepOrder accumulatedContext
    startedAt pausedAt completedAt failedAt errorMessage createdAt updatedAt
    template { name }
    steps {
      id workflowExecutionId workflowStepId stepOrder status agentInput agentOutput userInput
      startedAt completedAt errorMessage createdAt updatedAt
    }
  }
}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_detail_uses_a_constant_number_of_statements() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Runs").await;
    let steps: Vec<_> = (0..5).map(|i| echo(&format!("step {i} of {{{{ticket}}}}"))).collect();
    let template = create_template(&app, &owner, &drive, json!({ "name": "Five steps", "steps": steps })).await;
    let id = start(
        &app,
        &owner,
        template["id"].as_str().unwrap(),
        json!({ "ticket": "PS-1" }),
    )
    .await;
    wait_for(&app, &owner, &id, "COMPLETED").await;

    let mut best = u64::MAX;
    for _ in 0..3 {
        let before = app.statements();
        let data = app.ok(&owner, EXECUTION_DETAIL, json!({ "id": id })).await;
        best = best.min(app.statements() - before);
        let e = &data["workflowExecution"];
        assert_eq!(e["template"]["name"], "Five steps", "{e}");
        let steps = e["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 5, "{e}");
        for (i, s) in steps.iter().enumerate() {
            assert_eq!(s["stepOrder"], i);
            assert_eq!(s["status"], "COMPLETED");
            assert_eq!(s["agentOutput"]["text"], format!("step {i} of PS-1"));
        }
    }
    println!("statements: execution detail -> {best}");
    // The execution with its template, its steps and the viewer's
    // memberships: one statement (`executions::detail`).
    assert_eq!(best, 1, "{best} statements for one execution detail (1 expected)");
}

/// The fewest statements of three tries of one request.
async fn fewest(app: &TestApp, token: &str, query: &str, vars: serde_json::Value) -> (u64, serde_json::Value) {
    let mut best = u64::MAX;
    let mut data = serde_json::Value::Null;
    for _ in 0..3 {
        let before = app.statements();
        data = app.ok(token, query, vars.clone()).await;
        best = best.min(app.statements() - before);
    }
    (best, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_retry_links_use_a_constant_number_of_statements() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "History").await;
    for i in 0..20 {
        let t = create_template(
            &app,
            &owner,
            &drive,
            json!({ "name": format!("T{i}"), "steps": [echo("one")] }),
        )
        .await;
        for n in 0..2 {
            app.ok(
                &owner,
                "mutation($id: ID!, $n: String!) { updateWorkflowTemplate(id: $id, input: { name: $n }) { version } }",
                json!({ "id": t["id"], "n": format!("T{i} v{}", n + 2) }),
            )
            .await;
        }
    }
    let page = "query($d: ID!, $first: Int) { workflowTemplates(driveId: $d, first: $first) {
      nodes { id version versions(first: 2) { totalCount pageInfo { hasNextPage } nodes { version name creator { id } } } } } }";
    let (three, d3) = fewest(&app, &owner, page, json!({ "d": drive, "first": 3 })).await;
    let (twenty, d20) = fewest(&app, &owner, page, json!({ "d": drive, "first": 20 })).await;
    for data in [&d3, &d20] {
        for t in data["workflowTemplates"]["nodes"].as_array().unwrap() {
            assert_eq!(t["version"], 3, "{t}");
            let v = &t["versions"];
            assert_eq!(
                (v["totalCount"].as_i64(), v["pageInfo"]["hasNextPage"].as_bool()),
                (Some(3), Some(true))
            );
            let numbers: Vec<i64> = v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["version"].as_i64().unwrap())
                .collect();
            assert_eq!(numbers, [3, 2]);
        }
    }
    println!("statements: versions page 3 -> {three}, 20 -> {twenty}");
    assert_eq!(three, twenty, "versions: 3 -> {three}, 20 -> {twenty}");
    assert!(twenty <= 5, "{twenty} statements for templates with their versions");

    // Runs that failed, each retried once: the links cost one statement each way.
    let failing = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "Fails", "steps": [echo("ok"), { "agentId": "fail", "promptTemplate": "no" }] }),
    )
    .await;
    for _ in 0..6 {
        let id = start(&app, &owner, failing["id"].as_str().unwrap(), json!({})).await;
        wait_for(&app, &owner, &id, "FAILED").await;
        let r = app
            .ok(
                &owner,
                "mutation($e: ID!) { retryWorkflowExecution(executionId: $e) { id } }",
                json!({ "e": id }),
            )
            .await;
        wait_for(
            &app,
            &owner,
            r["retryWorkflowExecution"]["id"].as_str().unwrap(),
            "FAILED",
        )
        .await;
    }
    let runs = "query($first: Int) { workflowExecutions(first: $first) {
      nodes { id retryOf { id status } retries { id status } } } }";
    let (small, _) = fewest(&app, &owner, runs, json!({ "first": 3 })).await;
    let (large, data) = fewest(&app, &owner, runs, json!({ "first": 12 })).await;
    let nodes = data["workflowExecutions"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 12);
    assert_eq!(nodes.iter().filter(|n| !n["retryOf"].is_null()).count(), 6);
    assert_eq!(
        nodes
            .iter()
            .filter(|n| n["retries"].as_array().unwrap().len() == 1)
            .count(),
        6
    );
    println!("statements: retry links 3 -> {small}, 12 -> {large}");
    assert_eq!(small, large, "retry links: 3 -> {small}, 12 -> {large}");
    assert!(large <= 5, "{large} statements for executions with their retry links");
}

const SCHEDULES: &str = "query($d: ID!, $first: Int) {
  workflowSchedules(driveId: $d, first: $first) {
    nodes {
      id cron nextRunAt
      template { id name }
      creator { id name }
      executions(first: 5) { nodes { id scheduleId status } }
    }
  }
  workflowTemplates(driveId: $d, first: $first) { nodes { id schedules { id cron } } }
}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_lists_use_a_constant_number_of_statements() {
    // No background scheduler: the one look below fires every schedule once.
    let app = TestApp::spawn_with(|c| c.schedule_poll_ms = 0).await;
    let owner = app.user("owner").await;
    let member = app.user("member").await;
    let drive = create_drive(&app, &owner, "Scheduled").await;
    add_member(&app, &owner, &drive, "member", "MEMBER").await;
    let mut templates = Vec::new();
    for i in 0..20 {
        let t = create_template(
            &app,
            &owner,
            &drive,
            json!({ "name": format!("T{i}"), "isPublic": true, "steps": [echo("one")] }),
        )
        .await;
        templates.push(t["id"].as_str().unwrap().to_owned());
    }
    for (i, t) in templates.iter().enumerate() {
        let token = if i % 2 == 0 { &owner } else { &member };
        let s = crate::schedules::create(&app, token, json!({ "templateId": t, "cron": "0 0 1 1 *" })).await;
        crate::schedules::make_due(app.db(), s["id"].as_str().unwrap(), chrono::Duration::minutes(5)).await;
    }
    assert_eq!(app.state.scheduler.tick().await.unwrap(), 20);
    // The fired runs write as they go: count only once they are done.
    eventually(std::time::Duration::from_secs(10), || async {
        let done = app
            .ok(
                &owner,
                "query($d: ID!) { workflowExecutions(filter: { driveId: $d, status: [COMPLETED] }) { totalCount } }",
                json!({ "d": drive }),
            )
            .await;
        let n = &done["workflowExecutions"]["totalCount"];
        if n == 20 {
            Ok(())
        } else {
            Err(format!("{n} of 20 runs completed"))
        }
    })
    .await;

    let mut counts = Vec::new();
    for first in [5, 20] {
        let mut best = u64::MAX;
        for _ in 0..3 {
            let before = app.statements();
            let data = app.ok(&owner, SCHEDULES, json!({ "d": drive, "first": first })).await;
            best = best.min(app.statements() - before);
            let nodes = data["workflowSchedules"]["nodes"].as_array().unwrap();
            assert_eq!(nodes.len(), first);
            for s in nodes {
                assert!(
                    s["template"]["name"].is_string() && s["creator"]["name"].is_string(),
                    "{s}"
                );
                let runs = s["executions"]["nodes"].as_array().unwrap();
                assert_eq!(runs.len(), 1, "{s}");
                assert_eq!(runs[0]["scheduleId"], s["id"]);
            }
            let templates = data["workflowTemplates"]["nodes"].as_array().unwrap();
            assert!(
                templates.iter().all(|t| t["schedules"].as_array().unwrap().len() == 1),
                "{data}"
            );
        }
        counts.push(best);
    }
    println!("statements: schedules 5 -> {}, 20 -> {}", counts[0], counts[1]);
    assert_eq!(
        counts[0], counts[1],
        "statement count grows with the page size: {counts:?}"
    );
    // Memberships, the schedule page, templates, creators, runs, the
    // template page, its schedules.
    assert!(counts[1] <= 7, "{} statements", counts[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_stats_on_a_page_use_a_constant_number_of_statements() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Measured drive").await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let t = create_template(
            &app,
            &owner,
            &drive,
            json!({ "name": format!("T{i}"), "steps": [echo("one"), echo("two")] }),
        )
        .await;
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    // Runs on a few of them, so there are roll-ups to read.
    for t in ids.iter().step_by(10) {
        let id = start(&app, &owner, t, json!({})).await;
        wait_for(&app, &owner, &id, "COMPLETED").await;
    }
    let page = "query($d: ID!, $first: Int, $since: DateTime) { workflowTemplates(driveId: $d, first: $first) {
      nodes { id stats(since: $since) { runs completed active successRate durationMs { p50 p95 max }
              tokens { prompt } steps { stepOrder runs attempts durationMs { p95 } } } } } }";
    // No `since`, a whole hour, and one inside an hour (its partial first
    // hour is counted from the rows, in the same statements).
    for since in [
        serde_json::Value::Null,
        json!("2020-01-01T00:00:00Z"),
        json!("2020-01-01T00:30:00Z"),
    ] {
        let (five, _) = fewest(&app, &owner, page, json!({ "d": drive, "first": 5, "since": since })).await;
        let (fifty, data) = fewest(&app, &owner, page, json!({ "d": drive, "first": 50, "since": since })).await;
        let nodes = data["workflowTemplates"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 50);
        let counted: i64 = nodes.iter().map(|n| n["stats"]["completed"].as_i64().unwrap()).sum();
        assert_eq!(counted, 5, "{data}");
        for n in nodes.iter().filter(|n| n["stats"]["completed"] == 1) {
            assert_eq!(n["stats"]["steps"].as_array().unwrap().len(), 2, "{n}");
        }
        println!("statements: stats page 5 -> {five}, 50 -> {fifty}");
        assert_eq!(five, fifty, "stats: 5 -> {five}, 50 -> {fifty}");
        assert!(
            fifty <= 5,
            "{fifty} statements for a page of templates with their stats"
        );
    }
}

/// A page shows a template's steps as they are now: a change to them bumps
/// the template's version, and the steps kept from an earlier page are for
/// the version before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_shows_steps_changed_since_the_last_page() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "d").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "t", "steps": [echo("first"), echo("second")] }),
    )
    .await;
    let page = "query($d: ID!) { workflowTemplates(driveId: $d) { nodes { steps { id promptTemplate } } } }";
    let prompts = |data: &serde_json::Value| -> Vec<String> {
        data["workflowTemplates"]["nodes"][0]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["promptTemplate"].as_str().unwrap().to_owned())
            .collect()
    };
    let before = app.ok(&owner, page, json!({ "d": drive })).await;
    assert_eq!(prompts(&before), ["first", "second"]);
    let step = before["workflowTemplates"]["nodes"][0]["steps"][0]["id"].clone();
    app.ok(
        &owner,
        "mutation($id: ID!) { updateWorkflowStep(id: $id, input: { promptTemplate: \"changed\" }) { id } }",
        json!({ "id": step }),
    )
    .await;
    assert_eq!(
        prompts(&app.ok(&owner, page, json!({ "d": drive })).await),
        ["changed", "second"]
    );
    app.ok(
        &owner,
        "mutation($t: ID!, $s: WorkflowStepInput!) { addWorkflowStep(templateId: $t, input: $s) { id } }",
        json!({ "t": t["id"], "s": echo("third") }),
    )
    .await;
    assert_eq!(
        prompts(&app.ok(&owner, page, json!({ "d": drive })).await),
        ["changed", "second", "third"]
    );
}
