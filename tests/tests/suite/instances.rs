//! Several `workflows` processes on one database, crashes and restarts:
//! runs are never lost, events reach every instance in order, and a step
//! that completed never runs again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use workflows_tests::process::{ServerProcess, token};
use workflows_tests::stub::{Reply, Stub, stub};
use workflows_tests::ws::{Incoming, Protocol, WsClient};
use workflows_tests::{TestDb, eventually, require_postgres};

const FAST: [(&str, &str); 2] = [("LEASE_SECONDS", "3"), ("SWEEP_SECONDS", "1")];

const EXECUTION: &str = "query($id: ID!) { workflowExecution(id: $id) {
  status errorMessage steps { stepOrder status startedAt completedAt agentOutput } } }";

const EVENTS: &str = "subscription($id: ID!) { workflowExecutionEvents(executionId: $id) {
  kind sequence delta execution { status } step { stepOrder status } } }";

/// An agents file with `slowpoke`, an `openai` agent backed by the stub.
fn agents_file(url: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("workflows-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("agents-{}.toml", &cuid2::create_id()[..10]));
    std::fs::write(
        &path,
        format!(
            "[agents.slowpoke]\nprovider = \"openai\"\nbase_url = \"{url}\"\nmodel = \"m\"\ndescription = \"stub\"\n"
        ),
    )
    .unwrap();
    path
}

fn pieces(n: usize, delay_ms: u64) -> Reply {
    let words: Vec<&'static str> = ["one ", "two ", "three ", "four ", "five ", "six ", "seven ", "eight "]
        .into_iter()
        .cycle()
        .take(n)
        .collect();
    Reply::Sse {
        pieces: words,
        delay: Duration::from_millis(delay_ms),
    }
}

/// A drive and a template; returns (owner token, template id).
async fn template(server: &ServerProcess, steps: Value) -> (String, String) {
    let owner = token("owner");
    let d = server
        .ok(
            &owner,
            "mutation { createDrive(input: { name: \"d\" }) { id } }",
            json!({}),
        )
        .await;
    let t = server
        .ok(
            &owner,
            "mutation($i: CreateWorkflowTemplateInput!) { createWorkflowTemplate(input: $i) { id } }",
            json!({"i": {"driveId": d["createDrive"]["id"], "name": "t", "isPublic": true, "steps": steps}}),
        )
        .await;
    (owner, t["createWorkflowTemplate"]["id"].as_str().unwrap().to_owned())
}

async fn start(server: &ServerProcess, owner: &str, template: &str, context: Value) -> String {
    let r = server
        .ok(
            owner,
            "mutation($t: ID!, $c: JSON) { startWorkflowExecution(templateId: $t, context: $c) { id } }",
            json!({"t": template, "c": context}),
        )
        .await;
    r["startWorkflowExecution"]["id"].as_str().unwrap().to_owned()
}

async fn execution(server: &ServerProcess, owner: &str, id: &str) -> Value {
    server.ok(owner, EXECUTION, json!({"id": id})).await["workflowExecution"].clone()
}

async fn wait_for(server: &ServerProcess, owner: &str, id: &str, status: &str, within: Duration) -> Value {
    eventually(within, || async {
        let e = execution(server, owner, id).await;
        if e["status"] == status {
            Ok(e)
        } else {
            Err(format!("not {status}: {e}"))
        }
    })
    .await
}

async fn wait_requests(stub: &Arc<Stub>, n: usize) {
    eventually(Duration::from_secs(10), || async {
        match stub.request_count() {
            got if got >= n => Ok(()),
            got => Err(format!("the stub got {got} requests, not {n}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run with TEST_DATABASE_URL=postgres://… and -- --include-ignored"]
async fn a_subscriber_on_one_instance_sees_a_run_on_another_in_order() {
    require_postgres();
    let db = TestDb::create().await;
    let (stub, url) = stub(vec![pieces(6, 150)]).await;
    let agents = agents_file(&url);
    let a = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let b = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let (owner, t) = template(
        &a,
        json!([
            {"agentId": "slowpoke", "promptTemplate": "think about {{topic}}"},
            {"agentId": "echo", "promptTemplate": "ask", "requiresUserInput": true},
            {"agentId": "echo", "promptTemplate": "done with {{step_1_input.answer}}"}
        ]),
    )
    .await;
    let id = start(&a, &owner, &t, json!({"topic": "leases"})).await;
    wait_requests(&stub, 1).await;

    let mut ws = WsClient::connect_with_token(&b.base, Protocol::TransportWs, &owner).await;
    ws.subscribe("1", EVENTS, json!({"id": id})).await;
    let mut events = Vec::new();
    let mut submitted = false;
    loop {
        match ws.next("1", Duration::from_secs(20)).await {
            Some(Incoming::Next(p)) => {
                let e = p["data"]["workflowExecutionEvents"].clone();
                assert!(p.get("errors").is_none(), "{p}");
                let paused = e["execution"]["status"] == "PAUSED";
                events.push(e);
                if paused && !submitted {
                    submitted = true;
                    let r = b
                        .gql(
                            &owner,
                            "mutation($e: ID!) { submitWorkflowUserInput(executionId: $e, input: { answer: \"yes\" }) { status } }",
                            json!({"e": id}),
                        )
                        .await;
                    assert!(r.get("errors").is_none(), "{r}");
                }
            }
            Some(Incoming::Complete) => break,
            other => {
                let state = execution(&a, &owner, &id).await;
                panic!(
                    "unexpected {other:?} after {events:?}\nstate: {state}\nA:\n{}\nB:\n{}",
                    a.log_text(),
                    b.log_text()
                )
            }
        }
    }
    // Every event follows the one before by one; only a SNAPSHOT (a resync)
    // may jump ahead, never back.
    let seqs: Vec<(i64, bool)> = events
        .iter()
        .map(|e| (e["sequence"].as_i64().unwrap(), e["kind"] == "SNAPSHOT"))
        .collect();
    assert!(
        seqs.windows(2)
            .all(|w| if w[1].1 { w[1].0 >= w[0].0 } else { w[1].0 == w[0].0 + 1 }),
        "gaps or disorder: {seqs:?}"
    );
    assert_eq!(events[0]["kind"], "SNAPSHOT");
    assert!(
        events.iter().any(|e| e["kind"] == "STEP_OUTPUT_DELTA"),
        "no delta crossed instances: {events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["execution"]["status"].as_str()),
        (Some("EXECUTION_UPDATED"), Some("COMPLETED"))
    );
    let e = execution(&a, &owner, &id).await;
    assert_eq!(e["steps"][2]["agentOutput"]["text"], "done with yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run with TEST_DATABASE_URL=postgres://… and -- --include-ignored"]
async fn a_killed_instance_s_run_is_finished_by_another() {
    require_postgres();
    let db = TestDb::create().await;
    let (stub, url) = stub(vec![pieces(40, 250), pieces(2, 0)]).await;
    let agents = agents_file(&url);
    let mut a = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let b = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let (owner, t) = template(
        &a,
        json!([{"agentId": "echo", "promptTemplate": "first"}, {"agentId": "slowpoke", "promptTemplate": "slow"}, {"agentId": "echo", "promptTemplate": "last"}]),
    )
    .await;
    let id = start(&a, &owner, &t, json!({})).await;
    wait_requests(&stub, 1).await;
    let before = execution(&b, &owner, &id).await;
    assert_eq!(before["steps"][0]["status"], "COMPLETED");
    assert_eq!(before["steps"][1]["status"], "RUNNING");
    a.kill9().await;

    let done = wait_for(&b, &owner, &id, "COMPLETED", Duration::from_secs(20)).await;
    assert_eq!(stub.request_count(), 2, "the interrupted step runs again, once");
    assert_eq!(
        done["steps"][0]["completedAt"], before["steps"][0]["completedAt"],
        "a completed step never reruns"
    );
    assert_eq!(done["steps"][0]["startedAt"], before["steps"][0]["startedAt"]);
    assert_ne!(
        done["steps"][1]["startedAt"], before["steps"][1]["startedAt"],
        "the rerun has a new startedAt"
    );
    assert_eq!(done["steps"][1]["agentOutput"]["text"], "one two ");
    assert_eq!(done["steps"][2]["status"], "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_finishes_the_run() {
    let db = TestDb::create().await;
    let (stub, url) = stub(vec![pieces(40, 250), pieces(3, 0)]).await;
    let agents = agents_file(&url);
    let mut a = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let (owner, t) = template(
        &a,
        json!([{"agentId": "echo", "promptTemplate": "first"}, {"agentId": "slowpoke", "promptTemplate": "slow"}]),
    )
    .await;
    let id = start(&a, &owner, &t, json!({})).await;
    wait_requests(&stub, 1).await;
    a.kill9().await;
    let again = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let done = wait_for(&again, &owner, &id, "COMPLETED", Duration::from_secs(20)).await;
    assert_eq!(done["steps"][1]["agentOutput"]["text"], "one two three ");
    assert_eq!(stub.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run with TEST_DATABASE_URL=postgres://… and -- --include-ignored"]
async fn sigterm_finishes_the_step_in_flight_and_hands_the_run_over() {
    require_postgres();
    let db = TestDb::create().await;
    let (stub, url) = stub(vec![pieces(8, 200)]).await;
    let agents = agents_file(&url);
    let mut a = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let b = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let (owner, t) = template(
        &a,
        json!([{"agentId": "slowpoke", "promptTemplate": "slow"}, {"agentId": "echo", "promptTemplate": "after {{step_0_output.text}}"}]),
    )
    .await;
    let id = start(&a, &owner, &t, json!({})).await;
    let mut ws = WsClient::connect_with_token(&a.base, Protocol::TransportWs, &owner).await;
    ws.subscribe("1", EVENTS, json!({"id": id})).await;
    wait_requests(&stub, 1).await;
    a.terminate();
    assert!(
        ws.closed(Duration::from_secs(15)).await,
        "subscriptions are closed on shutdown"
    );
    let status = a.wait_exit(Duration::from_secs(20)).await.expect("the server exits");
    assert!(status.success(), "exit status {status:?}\n{}", a.log_text());

    let done = wait_for(&b, &owner, &id, "COMPLETED", Duration::from_secs(15)).await;
    assert_eq!(
        stub.request_count(),
        1,
        "the step in flight finished on the stopping instance"
    );
    assert_eq!(
        done["steps"][1]["agentOutput"]["text"],
        "after one two three four five six seven eight "
    );
}

/// A run whose lease ran out while its own instance still worked on it (its
/// renewal came late, or another instance held the lease a moment) is swept
/// back by that instance: the runner already at work goes on, and no second
/// one repeats the step in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_swept_back_by_its_own_instance_runs_each_step_once() {
    use sea_orm::ConnectionTrait;
    let db = TestDb::create().await;
    let (stub, url) = stub(vec![pieces(12, 250)]).await;
    let agents = agents_file(&url);
    let a = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let (owner, t) = template(
        &a,
        json!([{"agentId": "slowpoke", "promptTemplate": "slow"}, {"agentId": "echo", "promptTemplate": "after {{step_0_output.text}}"}]),
    )
    .await;
    let id = start(&a, &owner, &t, json!({})).await;
    wait_requests(&stub, 1).await;
    // As if the lease had lapsed to someone else, who is gone too: this
    // instance's renewals leave it alone, its sweep takes it back.
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let lapsed = conn
        .execute_unprepared(&format!(
            r#"UPDATE workflow_executions SET "leaseOwner" = 'gone', "leaseExpiresAt" = '2000-01-01 00:00:00' WHERE id = '{id}'"#
        ))
        .await
        .unwrap();
    assert_eq!(lapsed.rows_affected(), 1);
    drop(conn);
    let done = wait_for(&a, &owner, &id, "COMPLETED", Duration::from_secs(20)).await;
    assert!(a.log_text().contains("a lease ran out"), "{}", a.log_text());
    assert_eq!(stub.request_count(), 1, "the step in flight ran once");
    assert_eq!(
        done["steps"][0]["agentOutput"]["text"],
        "one two three four five six seven eight one two three four "
    );
    assert_eq!(
        done["steps"][1]["agentOutput"]["text"],
        "after one two three four five six seven eight one two three four "
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run with TEST_DATABASE_URL=postgres://… and -- --include-ignored"]
async fn many_runs_split_across_two_instances_each_step_once() {
    require_postgres();
    let db = TestDb::create().await;
    let (stub, url) = stub(vec![]).await;
    *stub.fallback.lock().unwrap() = Some(pieces(1, 0));
    let agents = agents_file(&url);
    let a = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let b = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let (owner, t) = template(
        &a,
        json!([{"agentId": "echo", "promptTemplate": "a {{n}}"}, {"agentId": "slowpoke", "promptTemplate": "run-{{n}}-x"}, {"agentId": "echo", "promptTemplate": "c"}]),
    )
    .await;
    let runs = 200;
    let ids = futures::future::join_all((0..runs).map(|n| {
        let server = if n % 2 == 0 { &a } else { &b };
        let (owner, t) = (&owner, &t);
        async move { start(server, owner, t, json!({"n": n})).await }
    }))
    .await;
    for id in &ids {
        wait_for(&a, &owner, id, "COMPLETED", Duration::from_secs(60)).await;
    }
    // What the instances said about leases, should a step have run twice.
    let leases = || {
        [&a, &b]
            .iter()
            .flat_map(|s| {
                s.log_text()
                    .lines()
                    .filter(|l| l.contains("lease") || l.contains("taking over"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(stub.request_count(), runs, "{}", leases());
    for n in 0..runs {
        assert_eq!(
            stub.requests_mentioning(&format!("run-{n}-x")),
            1,
            "run {n}\n{}",
            leases()
        );
    }
}

/// The drive feed on one instance, for a run on another: every event shows
/// the state after it (not the rows as they are when it is relayed), in
/// order, sequences rising by one from the run's first event, including a
/// step whose prompt and output are too large to travel in a NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run with TEST_DATABASE_URL=postgres://… and -- --include-ignored"]
async fn the_drive_feed_on_another_instance_shows_each_event_s_own_state() {
    require_postgres();
    let db = TestDb::create().await;
    let a = ServerProcess::start(&db.url, None, &FAST).await;
    let b = ServerProcess::start(&db.url, None, &FAST).await;
    let (owner, t) = template(
        &a,
        json!([
            {"agentId": "echo", "promptTemplate": "a {{topic}}"},
            {"agentId": "echo", "promptTemplate": "b {{step_0_output.text}}"},
            {"agentId": "echo", "promptTemplate": "{{big}}"},
            {"agentId": "echo", "promptTemplate": "d {{step_1_output.text}}"}
        ]),
    )
    .await;
    let drive = a
        .ok(
            &owner,
            "query($t: ID!) { workflowTemplate(id: $t) { driveId } }",
            json!({"t": t}),
        )
        .await["workflowTemplate"]["driveId"]
        .clone();
    let mut ws = WsClient::connect_with_token(&b.base, Protocol::TransportWs, &owner).await;
    ws.subscribe(
        "1",
        "subscription($d: ID!) { driveWorkflowExecutionEvents(driveId: $d) {
           kind sequence execution { id status currentStepOrder accumulatedContext }
           step { stepOrder status agentInput agentOutput } } }",
        json!({"d": drive}),
    )
    .await;
    // The subscription is in place, and B follows the drive's runs on A,
    // once a run on A shows up in it: start small runs until one does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut probes = Vec::new();
    loop {
        probes.push(start(&a, &owner, &t, json!({"topic": "probe", "big": "-"})).await);
        if let Some(Incoming::Next(_)) = ws.next("1", Duration::from_millis(500)).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B shows none of A's runs\nA:\n{}\nB:\n{}",
            a.log_text(),
            b.log_text()
        );
    }
    let big = "é".repeat(5000); // 10,000 bytes: more than a NOTIFY carries
    let id = start(&a, &owner, &t, json!({"topic": "x", "big": big})).await;

    let mut events = Vec::new();
    loop {
        match ws.next("1", Duration::from_secs(20)).await {
            Some(Incoming::Next(p)) => {
                assert!(p.get("errors").is_none(), "{p}");
                let e = p["data"]["driveWorkflowExecutionEvents"].clone();
                if probes.iter().any(|p| e["execution"]["id"] == p.as_str()) {
                    continue;
                }
                assert_eq!(e["execution"]["id"], id.as_str());
                let done = e["kind"] == "EXECUTION_UPDATED" && e["execution"]["status"] == "COMPLETED";
                events.push(e);
                if done {
                    break;
                }
            }
            other => panic!(
                "unexpected {other:?} after {events:?}\nA:\n{}\nB:\n{}",
                a.log_text(),
                b.log_text()
            ),
        }
    }
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e["step"]["stepOrder"].as_i64() {
            Some(n) => format!("{n}:{}", e["step"]["status"].as_str().unwrap()),
            None => format!(
                "{}:{}",
                e["kind"].as_str().unwrap(),
                e["execution"]["status"].as_str().unwrap()
            ),
        })
        .collect();
    let seqs: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "{kinds:?}");
    assert_eq!(
        kinds,
        [
            "EXECUTION_UPDATED:RUNNING",
            "0:RUNNING",
            "0:COMPLETED",
            "1:RUNNING",
            "1:COMPLETED",
            "2:RUNNING",
            "2:COMPLETED",
            "3:RUNNING",
            "3:COMPLETED",
            "EXECUTION_UPDATED:COMPLETED"
        ]
    );
    // The context after each event: a step's output appears with its
    // COMPLETED event, never before.
    for e in &events {
        let ctx = e["execution"]["accumulatedContext"].as_object().unwrap();
        let outputs: Vec<&String> = ctx.keys().filter(|k| k.starts_with("step_")).collect();
        let completed = match (e["step"]["stepOrder"].as_i64(), e["step"]["status"].as_str()) {
            (Some(n), Some("COMPLETED")) => n + 1,
            (Some(n), _) => n,
            (None, _) if e["execution"]["status"] == "COMPLETED" => 4,
            (None, _) => 0,
        };
        let expected: Vec<String> = (0..completed).map(|n| format!("step_{n}_output")).collect();
        assert_eq!(outputs, expected.iter().collect::<Vec<_>>(), "{e}");
        if e["kind"] == "STEP_UPDATED" {
            // A step's RUNNING event points at it; its COMPLETED at the next.
            let order = e["step"]["stepOrder"].as_i64().unwrap();
            let current = if e["step"]["status"] == "RUNNING" {
                order
            } else {
                (order + 1).min(3)
            };
            assert_eq!(e["execution"]["currentStepOrder"], current, "{e}");
        }
    }
    assert_eq!(
        events[0]["execution"]["accumulatedContext"],
        json!({"topic": "x", "big": big})
    );
    // The large step's prompt and output, left out of the notes, are right.
    assert_eq!(events[5]["step"]["agentInput"]["prompt"], big.as_str());
    assert!(events[5]["step"]["agentOutput"].is_null());
    assert_eq!(events[6]["step"]["agentOutput"]["text"], big.as_str());
    assert_eq!(
        events[6]["execution"]["accumulatedContext"]["step_2_output"]["text"],
        big.as_str()
    );
    assert_eq!(
        events[9]["execution"]["accumulatedContext"]["step_3_output"]["text"],
        "d b a x"
    );
}

/// A run taken over in the middle of a parallel group re-runs only the
/// group's steps that had not COMPLETED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run with TEST_DATABASE_URL=postgres://… and -- --include-ignored"]
async fn a_group_taken_over_reruns_only_its_unfinished_steps() {
    require_postgres();
    let db = TestDb::create().await;
    let (stub, url) = stub(vec![pieces(40, 250), pieces(40, 250), pieces(2, 0), pieces(2, 0)]).await;
    let agents = agents_file(&url);
    let mut a = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let b = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let (owner, t) = template(
        &a,
        json!([
            {"agentId": "echo", "promptTemplate": "quick", "parallelGroup": "g"},
            {"agentId": "slowpoke", "promptTemplate": "slow one", "parallelGroup": "g"},
            {"agentId": "slowpoke", "promptTemplate": "slow two", "parallelGroup": "g"},
            {"agentId": "echo", "promptTemplate": "after {{step_0_output.text}}"}
        ]),
    )
    .await;
    let id = start(&a, &owner, &t, json!({})).await;
    wait_requests(&stub, 2).await;
    // The quick step's answer is stored a moment after the slow ones were
    // asked (later still on a loaded machine); they take 10 s.
    let before = eventually(Duration::from_secs(6), || async {
        let e = execution(&b, &owner, &id).await;
        let statuses: Vec<&str> = e["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        if statuses == ["COMPLETED", "RUNNING", "RUNNING", "PENDING"] {
            return Ok(e);
        }
        assert_eq!(statuses, ["RUNNING", "RUNNING", "RUNNING", "PENDING"], "{e}");
        Err(e)
    })
    .await;
    a.kill9().await;

    let done = wait_for(&b, &owner, &id, "COMPLETED", Duration::from_secs(30)).await;
    assert_eq!(stub.request_count(), 4, "each interrupted step runs again, once");
    assert_eq!(
        done["steps"][0]["startedAt"], before["steps"][0]["startedAt"],
        "a completed step never reruns"
    );
    for k in [1, 2] {
        assert_ne!(done["steps"][k]["startedAt"], before["steps"][k]["startedAt"]);
        assert_eq!(done["steps"][k]["agentOutput"]["text"], "one two ");
    }
    assert_eq!(done["steps"][3]["agentOutput"]["text"], "after quick");
}

/// Takes the test's PostgreSQL database away from the servers, as a restart
/// of PostgreSQL does, without touching the server other tests share: every
/// connection to it is cut (`pg_terminate_backend`) and, while `refusing`,
/// new ones are refused (`ALLOW_CONNECTIONS false`) until `end`.
struct Outage {
    admin: sea_orm::DatabaseConnection,
    name: String,
    refusing: bool,
}

impl Outage {
    async fn begin(db: &TestDb, refusing: bool) -> Self {
        use sea_orm::ConnectionTrait;
        let admin_url = workflows_tests::backend_url().expect("PostgreSQL");
        let name = db.url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
        let admin = sea_orm::Database::connect(&admin_url).await.expect("admin connection");
        if refusing {
            admin
                .execute_unprepared(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"))
                .await
                .unwrap();
        }
        // The admin connection is to another database, and is spared anyway.
        admin
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .await
            .unwrap();
        Outage { admin, name, refusing }
    }

    async fn end(self) {
        use sea_orm::ConnectionTrait;
        if self.refusing {
            self.admin
                .execute_unprepared(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", self.name))
                .await
                .unwrap();
        }
        self.admin.close().await.ok();
    }
}

/// `workflowExecutionEvents` with a directive: not shared, it runs on its own.
const LONE_EVENTS: &str = "subscription($id: ID!) { workflowExecutionEvents(executionId: $id) @include(if: true) {
  kind sequence execution { status } step { stepOrder status } } }";

const DRIVE_EVENTS: &str = "subscription($d: ID!) { driveWorkflowExecutionEvents(driveId: $d) {
  kind sequence execution { id status } } }";

/// Three subscribers on `server`, each on its own connection, to `id` (in
/// drive `drive`): one in a shared group, one on its own, and the drive
/// feed; returned once each has shown it is in place (a SNAPSHOT, or the
/// drive feed's first event of the run).
async fn watchers(server: &ServerProcess, owner: &str, id: &str, drive: &Value) -> [(WsClient, Vec<Value>); 3] {
    let mut out = Vec::new();
    for (doc, vars, field) in [
        (EVENTS, json!({"id": id}), "workflowExecutionEvents"),
        (LONE_EVENTS, json!({"id": id}), "workflowExecutionEvents"),
        (DRIVE_EVENTS, json!({"d": drive}), "driveWorkflowExecutionEvents"),
    ] {
        let mut ws = WsClient::connect_with_token(&server.base, Protocol::TransportWs, owner).await;
        ws.subscribe("1", doc, vars).await;
        let first = match ws.next("1", Duration::from_secs(20)).await {
            Some(Incoming::Next(p)) if p.get("errors").is_none() => p["data"][field].clone(),
            other => panic!("{doc}: got {other:?}\n{}", server.log_text()),
        };
        if field == "workflowExecutionEvents" {
            assert_eq!(first["kind"], "SNAPSHOT", "{first}");
        }
        out.push((ws, vec![first]));
    }
    out.try_into().map_err(|_| ()).unwrap()
}

/// How often the server's log says a subscription group's SNAPSHOT failed.
fn group_snapshot_failures(server: &ServerProcess) -> usize {
    server
        .log_text()
        .matches("snapshot for a subscription group failed")
        .count()
}

/// Issue 20, defect 4. Two instances on one PostgreSQL database, a run on A,
/// subscribers on B, and every connection to the database cut while the run
/// goes on: once while B is left to reconnect at once, once with the
/// database refusing connections until B's subscription group has tried
/// (and failed) to read the SNAPSHOT it resyncs with. Each subscriber sees
/// the run to COMPLETED without a gap (a fresh SNAPSHOT may jump ahead),
/// never a stream that stops quietly mid-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run with TEST_DATABASE_URL=postgres://… and -- --include-ignored"]
async fn subscribers_see_the_run_to_its_end_across_the_database_going_away() {
    require_postgres();
    let db = TestDb::create().await;
    let (stub, url) = stub(vec![]).await;
    // A step cut off by the outage runs again, quickly.
    *stub.fallback.lock().unwrap() = Some(pieces(3, 20));
    let agents = agents_file(&url);
    for (round, refusing) in [(1, false), (2, true)] {
        // Fresh processes each round: a pooled connection the last outage
        // cut may fail one request, which is not what this test is about.
        let a = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
        let b = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
        let (owner, t) = template(
            &a,
            json!([
                {"agentId": "echo", "promptTemplate": "first"},
                {"agentId": "slowpoke", "promptTemplate": "slow"},
                {"agentId": "echo", "promptTemplate": "last"}
            ]),
        )
        .await;
        let drive = a
            .ok(
                &owner,
                "query($t: ID!) { workflowTemplate(id: $t) { driveId } }",
                json!({"t": t}),
            )
            .await["workflowTemplate"]["driveId"]
            .clone();
        // The slow step streams for four seconds: the outage falls inside it.
        stub.replies.lock().unwrap().push_back(pieces(40, 100));
        let before = stub.request_count();
        let id = start(&a, &owner, &t, json!({})).await;
        wait_requests(&stub, before + 1).await;
        let mut subs = watchers(&b, &owner, &id, &drive).await;

        let failures = group_snapshot_failures(&b);
        let outage = Outage::begin(&db, refusing).await;
        if refusing {
            // B's relay lost its connection: its group resyncs, and cannot
            // read while the database refuses.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while group_snapshot_failures(&b) == failures {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "B's group never tried a SNAPSHOT during the outage:\n{}",
                    b.log_text()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        outage.end().await;

        for (n, (ws, events)) in subs.iter_mut().enumerate() {
            let field = if n == 2 {
                "driveWorkflowExecutionEvents"
            } else {
                "workflowExecutionEvents"
            };
            loop {
                // The run's last event, or a SNAPSHOT of it finished.
                let done = events.last().is_some_and(|e: &Value| {
                    (e["kind"] == "EXECUTION_UPDATED" || e["kind"] == "SNAPSHOT")
                        && e["execution"]["status"] == "COMPLETED"
                        && (n < 2 || e["execution"]["id"] == id.as_str())
                });
                if done {
                    break;
                }
                match ws.next("1", Duration::from_secs(40)).await {
                    Some(Incoming::Next(p)) => {
                        assert!(p.get("errors").is_none(), "round {round}, subscriber {n}: {p}");
                        events.push(p["data"][field].clone());
                    }
                    other => panic!(
                        "round {round}, subscriber {n}: the stream stopped before the run did: {other:?} after {events:?}\n\
                         state: {}\nA:\n{}\nB:\n{}",
                        a.gql(&owner, EXECUTION, json!({"id": id})).await,
                        a.log_text(),
                        b.log_text()
                    ),
                }
            }
            if n < 2 {
                assert_eq!(ws.next("1", Duration::from_secs(10)).await, Some(Incoming::Complete));
            }
            // Every event follows the one before by one; a SNAPSHOT (a
            // resync) may jump ahead, never back.
            let seqs: Vec<(i64, bool)> = events
                .iter()
                .filter(|e| n < 2 || e["execution"]["id"] == id.as_str())
                .map(|e| (e["sequence"].as_i64().unwrap(), e["kind"] == "SNAPSHOT"))
                .collect();
            assert!(
                seqs.windows(2)
                    .all(|w| if w[1].1 { w[1].0 >= w[0].0 } else { w[1].0 == w[0].0 + 1 }),
                "round {round}, subscriber {n}: gaps or disorder: {seqs:?}"
            );
        }
    }
}

/// Issue 20, defect 4: a database that stays away longer than
/// `SUBSCRIPTION_RETRY_SECONDS` ends each subscription that needed a fresh
/// SNAPSHOT with a coded `error` telling the client to resubscribe, never
/// with `complete`; resubscribed once the database is back, the subscriber
/// sees the run to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run with TEST_DATABASE_URL=postgres://… and -- --include-ignored"]
async fn subscriptions_end_with_an_error_when_the_database_stays_away() {
    require_postgres();
    let db = TestDb::create().await;
    let (stub, url) = stub(vec![pieces(40, 100)]).await;
    *stub.fallback.lock().unwrap() = Some(pieces(3, 20));
    let agents = agents_file(&url);
    let a = ServerProcess::start(&db.url, Some(&agents), &FAST).await;
    let b = ServerProcess::start(
        &db.url,
        Some(&agents),
        &[FAST[0], FAST[1], ("SUBSCRIPTION_RETRY_SECONDS", "1")],
    )
    .await;
    let (owner, t) = template(
        &a,
        json!([{"agentId": "slowpoke", "promptTemplate": "slow"}, {"agentId": "echo", "promptTemplate": "last"}]),
    )
    .await;
    let drive = a
        .ok(
            &owner,
            "query($t: ID!) { workflowTemplate(id: $t) { driveId } }",
            json!({"t": t}),
        )
        .await["workflowTemplate"]["driveId"]
        .clone();
    let id = start(&a, &owner, &t, json!({})).await;
    wait_requests(&stub, 1).await;
    let mut subs = watchers(&b, &owner, &id, &drive).await;

    let outage = Outage::begin(&db, true).await;
    for (n, (ws, events)) in subs.iter_mut().enumerate() {
        // Events already on their way may come first; then the error.
        let error = loop {
            match ws.next("1", Duration::from_secs(30)).await {
                Some(Incoming::Next(p)) if p.get("errors").is_none() => events.push(p),
                Some(Incoming::Error(e)) => break e,
                other => panic!(
                    "subscriber {n}: expected an error, got {other:?} after {events:?}\nB:\n{}",
                    b.log_text()
                ),
            }
        };
        assert_eq!(error[0]["extensions"]["code"], "INTERNAL_SERVER_ERROR", "{error}");
        let message = error[0]["message"].as_str().unwrap();
        assert!(message.contains("resubscribe"), "{message}");
        // The error ended the subscription: nothing follows it.
        assert_eq!(ws.next("1", Duration::from_millis(300)).await, None);
    }
    outage.end().await;

    // As a client acts on the error: resubscribe. A pooled connection cut
    // by the outage may still fail one read (a coded error before any
    // SNAPSHOT): resubscribe again.
    let mut ws = WsClient::connect_with_token(&b.base, Protocol::TransportWs, &owner).await;
    for attempt in 0.. {
        let sub = format!("again-{attempt}");
        ws.subscribe(&sub, EVENTS, json!({"id": id})).await;
        let events = ws.collect(&sub, Duration::from_secs(40)).await;
        if events[0].get("errors").is_some() && attempt < 5 {
            assert_eq!(
                events[0]["errors"][0]["extensions"]["code"], "INTERNAL_SERVER_ERROR",
                "{events:?}"
            );
            continue;
        }
        let last = &events.last().unwrap()["data"]["workflowExecutionEvents"];
        assert_eq!(last["execution"]["status"], "COMPLETED", "{events:?}");
        break;
    }
}
