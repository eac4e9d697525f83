//! Schedules (docs/schedules.md): cron schedules start one run per due time, as
//! their creator, with their context, however many instances are up; a due
//! time missed while no instance ran starts one run on recovery; a creator
//! who lost access gets `lastError` and no run.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use workflows_tests::process::{ServerProcess, token};
use workflows_tests::{TestApp, TestDb, is_postgres};

use crate::{add_member, create_drive, create_template, echo, expect_bad_input, expect_code};

const CREATE: &str = "mutation($i: CreateWorkflowScheduleInput!) { createWorkflowSchedule(input: $i) {
  id cron timezone context enabled nextRunAt lastRunAt lastError templateId driveId createdBy
  creator { id } template { id } nextRuns(count: 3) } }";

const UPDATE: &str =
    "mutation($id: ID!, $i: UpdateWorkflowScheduleInput!) { updateWorkflowSchedule(id: $id, input: $i) {
  id cron timezone context enabled nextRunAt lastError } }";

const DELETE: &str = "mutation($id: ID!) { deleteWorkflowSchedule(id: $id) }";

const SCHEDULE: &str = "query($id: ID!) { workflowSchedule(id: $id) {
  id enabled nextRunAt lastRunAt lastError
  executions(first: 100) { totalCount nodes { id scheduleId scheduledFor createdAt status accumulatedContext userId } } } }";

const EVERY_SECOND: &str = "* * * * * *";

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// A server whose scheduler looks every 100 ms (so a per-second schedule
/// fires within a tenth of its period).
async fn fast_app() -> TestApp {
    TestApp::spawn_with(|c| c.schedule_poll_ms = 100).await
}

/// A drive owned by `owner` with one public echo template; returns (drive, template).
async fn drive_and_template(app: &TestApp, owner: &str) -> (String, String) {
    let drive = create_drive(app, owner, "Scheduled").await;
    let t = create_template(
        app,
        owner,
        &drive,
        json!({ "name": "Nightly", "isPublic": true, "steps": [echo("hello {{who}}")] }),
    )
    .await;
    (drive, t["id"].as_str().unwrap().to_owned())
}

pub async fn create(app: &TestApp, token: &str, input: Value) -> Value {
    app.ok(token, CREATE, json!({ "i": input })).await["createWorkflowSchedule"].clone()
}

async fn schedule(app: &TestApp, token: &str, id: &str) -> Value {
    app.ok(token, SCHEDULE, json!({ "id": id })).await["workflowSchedule"].clone()
}

/// The schedule's runs the viewer sees, oldest due time first.
fn runs_of(s: &Value) -> Vec<Value> {
    let mut runs = s["executions"]["nodes"].as_array().cloned().unwrap_or_default();
    runs.sort_by_key(|r| time(&r["scheduledFor"]));
    runs
}

/// Polls the schedule until `done` holds (at most `within`).
async fn wait_schedule(app: &TestApp, token: &str, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let s = schedule(app, token, id).await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within {within:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Moves the due time of a schedule into the past, as if it had come due
/// while nobody looked.
pub async fn make_due(db: &sea_orm::DatabaseConnection, id: &str, ago: chrono::Duration) {
    let at = (Utc::now() - ago).naive_utc();
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => r#"UPDATE workflow_schedules SET "nextRunAt" = $1 WHERE id = $2"#,
        _ => r#"UPDATE workflow_schedules SET "nextRunAt" = ? WHERE id = ?"#,
    };
    db.execute_raw(Statement::from_sql_and_values(backend, sql, [at.into(), id.into()]))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_every_second_starts_one_run_a_second_with_its_context() {
    let app = fast_app().await;
    let owner = app.user("owner").await;
    let (drive, template) = drive_and_template(&app, &owner).await;

    let s = create(
        &app,
        &owner,
        json!({ "templateId": template, "cron": EVERY_SECOND, "context": { "who": "cron" } }),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (&s["cron"], &s["timezone"], &s["enabled"], &s["context"]),
        (
            &json!(EVERY_SECOND),
            &json!("UTC"),
            &json!(true),
            &json!({ "who": "cron" })
        ),
        "{s}"
    );
    assert_eq!(
        (&s["templateId"], &s["driveId"], &s["createdBy"]),
        (&json!(template), &json!(drive), &json!("owner"))
    );
    assert_eq!(
        (&s["creator"]["id"], &s["template"]["id"]),
        (&json!("owner"), &json!(template))
    );
    assert!(s["lastRunAt"].is_null() && s["lastError"].is_null(), "{s}");
    let next = time(&s["nextRunAt"]);
    assert!(next > Utc::now() - chrono::Duration::seconds(1) && next <= Utc::now() + chrono::Duration::seconds(1));
    let previews: Vec<DateTime<Utc>> = s["nextRuns"].as_array().unwrap().iter().map(time).collect();
    assert_eq!(previews.len(), 3);
    assert!(
        previews.windows(2).all(|w| w[1] - w[0] == chrono::Duration::seconds(1)),
        "{previews:?}"
    );

    let s = wait_schedule(&app, &owner, &id, Duration::from_secs(10), |s| {
        s["executions"]["totalCount"].as_i64().unwrap_or(0) >= 3
    })
    .await;
    let runs = runs_of(&s);
    let due: Vec<DateTime<Utc>> = runs.iter().map(|r| time(&r["scheduledFor"])).collect();
    assert!(
        due.windows(2).all(|w| w[1] - w[0] == chrono::Duration::seconds(1)),
        "one run per second, none twice: {due:?}"
    );
    assert!(
        due.iter().all(|d| d.timestamp_subsec_micros() == 0),
        "due times are whole seconds: {due:?}"
    );
    for r in &runs {
        assert_eq!(r["scheduleId"], json!(id), "{r}");
        assert_eq!(r["userId"], "owner", "runs start as the creator: {r}");
        assert_eq!(r["accumulatedContext"]["who"], "cron", "{r}");
        assert!(
            time(&r["createdAt"]) >= time(&r["scheduledFor"]),
            "never before its due time: {r}"
        );
    }
    assert!(!s["lastRunAt"].is_null() && s["lastError"].is_null(), "{s}");
    // (Read before the runs: a run fired in between may be for that time.)
    assert!(
        time(&s["nextRunAt"]) >= time(&runs.last().unwrap()["scheduledFor"]),
        "{s}"
    );

    // A run goes like any other: the first one has completed by now.
    let first = runs[0]["id"].as_str().unwrap();
    let done = crate::executions::wait_for(&app, &owner, first, "COMPLETED").await;
    assert_eq!(done["steps"][0]["agentOutput"]["text"], "hello cron", "{done}");

    // It is listed with the template and the drive, and counted in /metrics.
    let listed = app
        .ok(
            &owner,
            "query($d: ID!, $t: ID!) { workflowSchedules(driveId: $d) { totalCount nodes { id } }
               workflowTemplate(id: $t) { schedules { id cron } } }",
            json!({ "d": drive, "t": template }),
        )
        .await;
    assert_eq!(listed["workflowSchedules"]["totalCount"], 1, "{listed}");
    assert_eq!(listed["workflowSchedules"]["nodes"][0]["id"], json!(id));
    assert_eq!(listed["workflowTemplate"]["schedules"][0]["id"], json!(id));
    let text = metrics(&app).await;
    assert!(metric(&text, "workflows_schedule_fires_started_total") >= 3.0, "{text}");

    // Deleted: no more runs, and the runs it started stay without it.
    let del = app.ok(&owner, DELETE, json!({ "id": id })).await;
    assert_eq!(del["deleteWorkflowSchedule"], json!(id));
    assert!(schedule(&app, &owner, &id).await.is_null());
    let e = app
        .ok(
            &owner,
            "query($id: ID!) { workflowExecution(id: $id) { id scheduleId scheduledFor } }",
            json!({ "id": first }),
        )
        .await;
    assert!(e["workflowExecution"]["scheduleId"].is_null(), "{e}");
    assert!(!e["workflowExecution"]["scheduledFor"].is_null(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_instances_claiming_one_due_time_start_one_run() {
    // The scheduler's loop is off: the test fires by hand, eight at once.
    let app = TestApp::spawn_with(|c| c.schedule_poll_ms = 0).await;
    let owner = app.user("owner").await;
    let (_, template) = drive_and_template(&app, &owner).await;
    let s = create(
        &app,
        &owner,
        json!({ "templateId": template, "cron": "0 0 1 1 *", "context": { "who": "x" } }),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    // Due an hour ago, with the next due time on the first of January.
    make_due(app.db(), &id, chrono::Duration::hours(1)).await;

    let ticks = futures::future::join_all((0..8).map(|_| app.state.scheduler.tick())).await;
    let claimed: usize = ticks.into_iter().map(|t| t.expect("tick")).sum();
    assert_eq!(claimed, 1, "eight claims of one due time, one winner");
    let s = schedule(&app, &owner, &id).await;
    assert_eq!(s["executions"]["totalCount"], 1, "{s}");
    let next = time(&s["nextRunAt"]);
    assert!(next > Utc::now(), "moved on to a future time: {s}");
    assert_eq!(next.format("%m-%d %H:%M:%S").to_string(), "01-01 00:00:00", "{s}");
    // Nothing is due any more.
    assert_eq!(app.state.scheduler.tick().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cron_time_zone_or_context_is_refused_and_nothing_is_written() {
    let app = fast_app().await;
    let owner = app.user("owner").await;
    let (drive, template) = drive_and_template(&app, &owner).await;
    for (cron, tz) in [
        ("61 * * * *", "UTC"),
        ("* * *", "UTC"),
        ("* * * * * * *", "UTC"),
        ("0 0 31 2 *", "UTC"),
    ] {
        let body = app
            .gql(
                &owner,
                CREATE,
                json!({ "i": { "templateId": template, "cron": cron, "timezone": tz } }),
            )
            .await;
        expect_bad_input(&body, "input.cron");
        assert!(
            crate::expect_code(&body, "BAD_USER_INPUT").contains(cron),
            "names the expression: {body}"
        );
    }
    let body = app
        .gql(
            &owner,
            CREATE,
            json!({ "i": { "templateId": template, "cron": "0 9 * * *", "timezone": "Mars/Olympus" } }),
        )
        .await;
    expect_bad_input(&body, "input.timezone");
    assert!(expect_code(&body, "BAD_USER_INPUT").contains("Mars/Olympus"), "{body}");
    let body = app
        .gql(
            &owner,
            CREATE,
            json!({ "i": { "templateId": template, "cron": "0 9 * * *", "context": [1] } }),
        )
        .await;
    expect_bad_input(&body, "context");
    let count = "query($d: ID!) { workflowSchedules(driveId: $d) { totalCount } }";
    assert_eq!(
        app.ok(&owner, count, json!({ "d": drive })).await["workflowSchedules"]["totalCount"],
        0
    );

    // A good one, then bad changes to it leave it as it was.
    let s = create(
        &app,
        &owner,
        json!({ "templateId": template, "cron": "0 9 * * *", "timezone": "Europe/Paris", "context": { "a": 1 } }),
    )
    .await;
    let id = s["id"].as_str().unwrap();
    // 09:00 in Paris is 07:00 or 08:00 UTC.
    for t in s["nextRuns"].as_array().unwrap() {
        let t = time(t);
        assert!(
            t.format("%M:%S").to_string() == "00:00"
                && [7, 8].contains(&t.format("%H").to_string().parse::<i32>().unwrap()),
            "{s}"
        );
    }
    for input in [
        json!({ "cron": "not a cron" }),
        json!({ "timezone": "Europe/Atlantis" }),
        json!({ "context": "x" }),
    ] {
        let body = app.gql(&owner, UPDATE, json!({ "id": id, "i": input })).await;
        expect_code(&body, "BAD_USER_INPUT");
    }
    let after = app
        .ok(
            &owner,
            "query($id: ID!) { workflowSchedule(id: $id) { cron timezone context nextRunAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(after["workflowSchedule"]["cron"], "0 9 * * *");
    assert_eq!(after["workflowSchedule"]["timezone"], "Europe/Paris");
    assert_eq!(after["workflowSchedule"]["context"], json!({ "a": 1 }));
    assert_eq!(after["workflowSchedule"]["nextRunAt"], s["nextRunAt"]);
    // nextRuns' count is bounded.
    let body = app
        .gql(
            &owner,
            "query($id: ID!) { workflowSchedule(id: $id) { nextRuns(count: 101) } }",
            json!({ "id": id }),
        )
        .await;
    expect_bad_input(&body, "count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_removed_from_the_drive_gets_last_error_and_no_run() {
    let app = fast_app().await;
    let owner = app.user("owner").await;
    let member = app.user("member").await;
    let (drive, template) = drive_and_template(&app, &owner).await;
    add_member(&app, &owner, &drive, "member", "MEMBER").await;
    // Made disabled, so that nothing fires before the member is removed.
    let s = create(
        &app,
        &member,
        json!({ "templateId": template, "cron": EVERY_SECOND, "enabled": false }),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    assert!(s["nextRunAt"].is_null(), "no due time while disabled: {s}");
    let removed = app
        .ok(
            &owner,
            "mutation($d: ID!) { removeDriveMember(driveId: $d, userId: \"member\") }",
            json!({ "d": drive }),
        )
        .await;
    assert_eq!(removed["removeDriveMember"], true);
    app.ok(&owner, UPDATE, json!({ "id": id, "i": { "enabled": true } }))
        .await;

    let s = wait_schedule(&app, &owner, &id, Duration::from_secs(5), |s| !s["lastError"].is_null()).await;
    assert!(
        s["lastError"].as_str().unwrap().contains("creator can no longer start"),
        "{s}"
    );
    assert_eq!(s["enabled"], true, "stays enabled: {s}");
    assert!(
        time(&s["nextRunAt"]) > Utc::now() - chrono::Duration::seconds(1),
        "moves on: {s}"
    );
    assert!(s["lastRunAt"].is_null(), "{s}");
    assert_eq!(s["executions"]["totalCount"], 0, "no run: {s}");
    let all = app
        .ok(
            &owner,
            "query($t: ID!) { workflowExecutions(filter: { templateId: $t }) { totalCount } }",
            json!({ "t": template }),
        )
        .await;
    assert_eq!(all["workflowExecutions"]["totalCount"], 0, "{all}");
    let text = metrics(&app).await;
    assert!(
        metric(&text, "workflows_schedule_fires_skipped_total{reason=\"forbidden\"}") >= 1.0,
        "{text}"
    );

    // Back in the drive: the next due time starts a run and clears the error.
    add_member(&app, &owner, &drive, "member", "VIEWER").await;
    wait_schedule(&app, &owner, &id, Duration::from_secs(5), |s| {
        s["executions"]["totalCount"].as_i64().unwrap_or(0) >= 1
    })
    .await;
    let s = wait_schedule(&app, &owner, &id, Duration::from_secs(5), |s| s["lastError"].is_null()).await;
    assert_eq!(runs_of(&s)[0]["userId"], "member", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_schedules_never_fire() {
    let app = fast_app().await;
    let owner = app.user("owner").await;
    let (_, template) = drive_and_template(&app, &owner).await;
    let off = create(
        &app,
        &owner,
        json!({ "templateId": template, "cron": EVERY_SECOND, "enabled": false }),
    )
    .await;
    let off = off["id"].as_str().unwrap().to_owned();
    let on = create(&app, &owner, json!({ "templateId": template, "cron": EVERY_SECOND })).await;
    let on = on["id"].as_str().unwrap().to_owned();

    // While the enabled one fires twice, the disabled one never does.
    wait_schedule(&app, &owner, &on, Duration::from_secs(6), |s| {
        s["executions"]["totalCount"].as_i64().unwrap_or(0) >= 2
    })
    .await;
    let s = schedule(&app, &owner, &off).await;
    assert_eq!(s["executions"]["totalCount"], 0, "{s}");
    assert!(s["nextRunAt"].is_null() && s["lastRunAt"].is_null(), "{s}");

    // Disabling stops one that was firing.
    let d = app
        .ok(&owner, UPDATE, json!({ "id": on, "i": { "enabled": false } }))
        .await;
    assert!(d["updateWorkflowSchedule"]["nextRunAt"].is_null(), "{d}");
    let n = schedule(&app, &owner, &on).await["executions"]["totalCount"]
        .as_i64()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(schedule(&app, &owner, &on).await["executions"]["totalCount"], n);
    assert_eq!(schedule(&app, &owner, &off).await["executions"]["totalCount"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_create_see_change_and_delete_schedules() {
    let app = TestApp::spawn_with(|c| c.schedule_poll_ms = 0).await;
    let owner = app.user("owner").await;
    let admin = app.user("admin").await;
    let member = app.user("member").await;
    let other = app.user("other").await;
    let viewer = app.user("viewer").await;
    let outsider = app.user("outsider").await;
    let (drive, template) = drive_and_template(&app, &owner).await;
    add_member(&app, &owner, &drive, "admin", "ADMIN").await;
    add_member(&app, &owner, &drive, "member", "MEMBER").await;
    add_member(&app, &owner, &drive, "other", "MEMBER").await;
    add_member(&app, &owner, &drive, "viewer", "VIEWER").await;
    let input = json!({ "i": { "templateId": template, "cron": "0 9 * * 1-5" } });

    expect_code(&app.gql(&viewer, CREATE, input.clone()).await, "FORBIDDEN");
    expect_code(&app.gql(&outsider, CREATE, input.clone()).await, "NOT_FOUND");
    let s = create(&app, &member, input["i"].clone()).await;
    let id = s["id"].as_str().unwrap().to_owned();

    // A private template is not there for a member who did not make it.
    let private = create_template(&app, &other, &drive, json!({ "name": "Mine", "steps": [echo("x")] })).await;
    let body = app
        .gql(
            &member,
            CREATE,
            json!({ "i": { "templateId": private["id"], "cron": "0 9 * * *" } }),
        )
        .await;
    expect_code(&body, "NOT_FOUND");

    // Visible to whoever sees the template; absent for an outsider.
    for t in [&owner, &admin, &member, &other, &viewer] {
        assert_eq!(schedule(&app, t, &id).await["id"], json!(id));
    }
    assert!(schedule(&app, &outsider, &id).await.is_null());
    let list = "query($d: ID!) { workflowSchedules(driveId: $d) { totalCount nodes { id } } }";
    assert_eq!(
        app.ok(&outsider, list, json!({ "d": drive })).await["workflowSchedules"]["totalCount"],
        0
    );
    assert_eq!(
        app.ok(&viewer, list, json!({ "d": drive })).await["workflowSchedules"]["totalCount"],
        1
    );

    // Changed or deleted by its creator and ADMIN/OWNER; FORBIDDEN to other
    // members who see it, NOT_FOUND to those who do not.
    for t in [&other, &viewer] {
        expect_code(
            &app.gql(t, UPDATE, json!({ "id": id, "i": { "enabled": false } })).await,
            "FORBIDDEN",
        );
        expect_code(&app.gql(t, DELETE, json!({ "id": id })).await, "FORBIDDEN");
    }
    expect_code(
        &app.gql(&outsider, UPDATE, json!({ "id": id, "i": { "enabled": false } }))
            .await,
        "NOT_FOUND",
    );
    expect_code(&app.gql(&outsider, DELETE, json!({ "id": id })).await, "NOT_FOUND");
    assert_eq!(schedule(&app, &owner, &id).await["enabled"], true, "nothing changed");
    for (t, cron) in [(&member, "0 10 * * *"), (&admin, "0 11 * * *"), (&owner, "0 12 * * *")] {
        let u = app.ok(t, UPDATE, json!({ "id": id, "i": { "cron": cron } })).await;
        assert_eq!(u["updateWorkflowSchedule"]["cron"], cron);
    }
    let s2 = create(&app, &member, input["i"].clone()).await;
    assert_eq!(
        app.ok(&admin, DELETE, json!({ "id": s2["id"] })).await["deleteWorkflowSchedule"],
        s2["id"]
    );
    assert_eq!(
        app.ok(&member, DELETE, json!({ "id": id })).await["deleteWorkflowSchedule"],
        json!(id)
    );
    expect_code(&app.gql(&member, DELETE, json!({ "id": id })).await, "NOT_FOUND");
}

// --- Real server processes -------------------------------------------------

const FAST_POLL: [(&str, &str); 3] = [
    ("SCHEDULE_POLL_MS", "50"),
    ("LEASE_SECONDS", "3"),
    ("SWEEP_SECONDS", "1"),
];

/// A drive, a template and a schedule every second on `server`; returns
/// (owner token, schedule id).
async fn every_second_on(server: &ServerProcess) -> (String, String) {
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
            json!({"i": {"driveId": d["createDrive"]["id"], "name": "t", "steps": [echo("tick {{n}}")]}}),
        )
        .await;
    let s = server
        .ok(
            &owner,
            CREATE,
            json!({"i": {"templateId": t["createWorkflowTemplate"]["id"], "cron": EVERY_SECOND, "context": {"n": 1}}}),
        )
        .await;
    (owner, s["createWorkflowSchedule"]["id"].as_str().unwrap().to_owned())
}

async fn runs_on(server: &ServerProcess, owner: &str, id: &str) -> Vec<Value> {
    runs_of(&server.ok(owner, SCHEDULE, json!({ "id": id })).await["workflowSchedule"])
}

async fn wait_runs(server: &ServerProcess, owner: &str, id: &str, n: usize, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let runs = runs_on(server, owner, id).await;
        if runs.len() >= n {
            return runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} runs after {within:?}, not {n}; log:\n{}",
            runs.len(),
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_start_one_run_per_due_time() {
    if !is_postgres() {
        println!("several instances share a PostgreSQL database; skipped on SQLite");
        return;
    }
    let db = TestDb::create().await;
    let a = ServerProcess::start(&db.url, None, &FAST_POLL).await;
    let b = ServerProcess::start(&db.url, None, &FAST_POLL).await;
    let (owner, id) = every_second_on(&a).await;
    wait_runs(&b, &owner, &id, 20, Duration::from_secs(40)).await;
    b.ok(&owner, UPDATE, json!({ "id": id, "i": { "enabled": false } }))
        .await;

    let runs = runs_on(&a, &owner, &id).await;
    let due: Vec<DateTime<Utc>> = runs.iter().map(|r| time(&r["scheduledFor"])).collect();
    let distinct: BTreeSet<_> = due.iter().collect();
    assert_eq!(distinct.len(), runs.len(), "a due time started twice: {due:?}");
    assert!(
        due.windows(2).all(|w| w[1] - w[0] == chrono::Duration::seconds(1)),
        "one run for every due time: {due:?}"
    );
    assert!(runs.len() >= 20);
    // Each instance counts the fires it claimed: together, one per run.
    let client = reqwest::Client::new();
    let mut fired = 0.0;
    for s in [&a, &b] {
        let text = client
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        fired += metric(&text, "workflows_schedule_fires_started_total");
    }
    assert_eq!(fired as usize, runs.len(), "fires counted across instances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_over_several_due_times_starts_one_run_on_restart() {
    let db = TestDb::create().await;
    let mut server = ServerProcess::start(&db.url, None, &FAST_POLL).await;
    let (owner, id) = every_second_on(&server).await;
    wait_runs(&server, &owner, &id, 1, Duration::from_secs(10)).await;
    server.terminate();
    assert!(
        server
            .wait_exit(Duration::from_secs(20))
            .await
            .is_some_and(|s| s.success())
    );
    let stopped = Utc::now();
    // Down over at least three due times.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let restarted = Utc::now();
    let server = ServerProcess::start(&db.url, None, &FAST_POLL).await;
    let runs = wait_runs(&server, &owner, &id, 0, Duration::from_secs(1)).await;
    let before = runs.iter().filter(|r| time(&r["createdAt"]) < stopped).count();
    let runs = wait_runs(&server, &owner, &id, before + 3, Duration::from_secs(10)).await;

    let created = |r: &Value| time(&r["createdAt"]);
    let due = |r: &Value| time(&r["scheduledFor"]);
    assert!(
        runs.iter().all(|r| created(r) < stopped || created(r) >= restarted),
        "no run while stopped: {runs:?}"
    );
    let last_before = runs.iter().filter(|r| created(r) < stopped).map(due).max().unwrap();
    let recovered: Vec<&Value> = runs
        .iter()
        .filter(|r| due(r) > last_before && due(r) < restarted)
        .collect();
    assert_eq!(recovered.len(), 1, "the missed due times start one run: {runs:?}");
    assert!(created(recovered[0]) >= restarted, "{runs:?}");
    // Then the schedule goes on from its next time after now.
    let later: Vec<&Value> = runs
        .iter()
        .filter(|r| created(r) >= restarted && due(r) >= restarted)
        .collect();
    assert!(later.len() >= 2, "{runs:?}");
    let distinct: BTreeSet<_> = runs.iter().map(due).collect();
    assert_eq!(distinct.len(), runs.len(), "a due time started twice: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_table_has_its_foreign_keys_and_indexes() {
    let app = TestApp::spawn_with(|c| c.schedule_poll_ms = 0).await;
    let db = app.db();
    let backend = db.get_database_backend();
    let (fks, indexes) = if is_postgres() {
        (
            r#"SELECT c.conrelid::regclass::text AS tbl, a.attname::text AS col, c.confrelid::regclass::text AS ref,
                      CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' ELSE 'OTHER' END AS rule
               FROM pg_constraint c
               JOIN pg_namespace n ON n.oid = c.connamespace
               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
               WHERE c.contype = 'f' AND n.nspname = current_schema()"#,
            r#"SELECT i.relname::text AS name, string_agg(a.attname::text, ',' ORDER BY k.n) AS cols,
                      bool_or(x.indisunique) AS uniq
               FROM pg_index x
               JOIN pg_class i ON i.oid = x.indexrelid
               JOIN pg_class t ON t.oid = x.indrelid
               JOIN pg_namespace ns ON ns.oid = t.relnamespace
               CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
               WHERE ns.nspname = current_schema()
               GROUP BY i.relname"#,
        )
    } else {
        (
            r#"SELECT m.name AS tbl, p."from" AS col, p."table" AS ref, p.on_delete AS rule
               FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) p WHERE m.type = 'table'"#,
            r#"SELECT m.name AS name,
                      (SELECT group_concat(ii.name, ',') FROM
                         (SELECT name FROM pragma_index_info(m.name) ORDER BY seqno) ii) AS cols,
                      (SELECT "unique" FROM pragma_index_list(m.tbl_name) l WHERE l.name = m.name) = 1 AS uniq
               FROM sqlite_master m WHERE m.type = 'index' AND m.name NOT LIKE 'sqlite_autoindex%'"#,
        )
    };
    let rows = db
        .query_all_raw(Statement::from_string(backend, fks.to_owned()))
        .await
        .unwrap();
    let found: BTreeSet<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "tbl").unwrap(),
                r.try_get("", "col").unwrap(),
                r.try_get("", "ref").unwrap(),
                r.try_get("", "rule").unwrap(),
            )
        })
        .filter(|(t, c, ..): &(String, String, String, String)| t == "workflow_schedules" || c == "scheduleId")
        .collect();
    let expected: BTreeSet<(String, String, String, String)> = [
        ("workflow_schedules", "templateId", "workflow_templates", "CASCADE"),
        ("workflow_schedules", "driveId", "drives", "CASCADE"),
        ("workflow_schedules", "createdBy", "users", "CASCADE"),
        (
            "workflow_schedules",
            "lastExecutionId",
            "workflow_executions",
            "SET NULL",
        ),
        ("workflow_executions", "scheduleId", "workflow_schedules", "SET NULL"),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    assert_eq!(found, expected);

    let rows = db
        .query_all_raw(Statement::from_string(backend, indexes.to_owned()))
        .await
        .unwrap();
    let found: BTreeSet<(String, String, bool)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "name").unwrap(),
                r.try_get("", "cols").unwrap(),
                r.try_get("", "uniq").unwrap(),
            )
        })
        .collect();
    for (name, cols, unique) in [
        ("workflow_schedules_template_id_idx", "templateId", false),
        ("workflow_schedules_drive_id_idx", "driveId", false),
        ("workflow_schedules_created_by_idx", "createdBy", false),
        ("workflow_schedules_last_execution_id_idx", "lastExecutionId", false),
        ("workflow_schedules_enabled_next_run_at_idx", "enabled,nextRunAt", false),
        ("workflow_executions_schedule_id_idx", "scheduleId", false),
        (
            "workflow_executions_schedule_id_scheduled_for_idx",
            "scheduleId,scheduledFor",
            true,
        ),
    ] {
        assert!(
            found.contains(&(name.to_owned(), cols.to_owned(), unique)),
            "index {name} on ({cols}) missing: {found:?}"
        );
    }
}
