//! Schedules (docs/schedules.md): cron schedules start one run per due time, as
//! their creator, with their context, however many instances are up; a due
//! time missed while no instance ran starts one run on recovery; a creator
//! who lost access gets `lastError` and no run.
//!
//! The servers here go by a manual clock: a test moves it to a due time and
//! has the scheduler look (`tick`), rather than waiting for seconds to pass.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use workflows::clock::ManualClock;
use workflows_tests::{TestApp, eventually, is_postgres, manual_clock, require_postgres};

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

const SECOND: chrono::Duration = chrono::Duration::seconds(1);

/// A server going by `clock` whose scheduler looks only when the test
/// calls `tick` (its own loop is off).
async fn app_on(clock: &ManualClock) -> TestApp {
    TestApp::spawn_with_clock(|c| c.schedule_poll_ms = 0, clock).await
}

/// Moves the clock on to `at` and has the scheduler look once; returns how
/// many due times it claimed.
async fn tick_at(app: &TestApp, clock: &ManualClock, at: DateTime<Utc>) -> usize {
    clock.advance_to(at.naive_utc());
    app.state
        .scheduler
        .tick()
        .await
        .expect("the scheduler reads the due schedules")
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
    let clock = manual_clock();
    let app = app_on(&clock).await;
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
    let now = clock.now().and_utc();
    assert!(next > now && next <= now + SECOND, "the next second after {now}: {s}");
    let previews: Vec<DateTime<Utc>> = s["nextRuns"].as_array().unwrap().iter().map(time).collect();
    assert_eq!(previews.len(), 3);
    assert!(
        previews[0] == next && previews.windows(2).all(|w| w[1] - w[0] == SECOND),
        "{previews:?}"
    );

    // Each due time starts one run when the clock reaches it: not a moment
    // before, and not again.
    for k in 0..3 {
        let due = next + SECOND * k;
        assert_eq!(tick_at(&app, &clock, due - chrono::Duration::milliseconds(1)).await, 0);
        assert_eq!(tick_at(&app, &clock, due).await, 1, "due at {due}");
        assert_eq!(app.state.scheduler.tick().await.unwrap(), 0, "fired once");
        let s = schedule(&app, &owner, &id).await;
        assert_eq!(s["executions"]["totalCount"], k + 1, "{s}");
        assert_eq!(time(&s["nextRunAt"]), due + SECOND, "{s}");
    }
    let s = schedule(&app, &owner, &id).await;
    let runs = runs_of(&s);
    let due: Vec<DateTime<Utc>> = runs.iter().map(|r| time(&r["scheduledFor"])).collect();
    assert_eq!(due, [next, next + SECOND, next + SECOND * 2], "one run per due time");
    assert!(
        due.iter().all(|d| d.timestamp_subsec_micros() == 0),
        "due times are whole seconds: {due:?}"
    );
    for r in &runs {
        assert_eq!(r["scheduleId"], json!(id), "{r}");
        assert_eq!(r["userId"], "owner", "runs start as the creator: {r}");
        assert_eq!(r["accumulatedContext"]["who"], "cron", "{r}");
    }
    assert!(!s["lastRunAt"].is_null() && s["lastError"].is_null(), "{s}");

    // A run goes like any other.
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
    assert_eq!(metric(&text, "workflows_schedule_fires_started_total"), 3.0, "{text}");

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
    // Its next due time passes without a run.
    assert_eq!(tick_at(&app, &clock, next + SECOND * 5).await, 0);
    let all = app
        .ok(
            &owner,
            "query($t: ID!) { workflowExecutions(filter: { templateId: $t }) { totalCount } }",
            json!({ "t": template }),
        )
        .await;
    assert_eq!(all["workflowExecutions"]["totalCount"], 3, "{all}");
}

/// The scheduler's own loop looks each time the server's clock has moved on
/// by `SCHEDULE_POLL_MS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_looks_whenever_its_clock_has_moved_on_by_the_poll_interval() {
    let clock = manual_clock();
    let app = TestApp::spawn_with_clock(|c| c.schedule_poll_ms = 100, &clock).await;
    let owner = app.user("owner").await;
    let (_, template) = drive_and_template(&app, &owner).await;
    let s = create(&app, &owner, json!({ "templateId": template, "cron": EVERY_SECOND })).await;
    let (id, next) = (s["id"].as_str().unwrap(), time(&s["nextRunAt"]));
    // Nothing but the clock moves time on (a look that is still going on
    // when it moves waits for the next move: moving on again wakes it).
    let run = eventually(Duration::from_secs(20), || async {
        clock.advance(Duration::from_millis(100));
        let s = schedule(&app, &owner, id).await;
        match runs_of(&s).first() {
            Some(run) => Ok(run.clone()),
            None => Err(s),
        }
    })
    .await;
    assert_eq!(time(&run["scheduledFor"]), next, "{run}");
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
    // Due an hour ago (on the system clock), with the next due time on the
    // first of January.
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
    let app = TestApp::spawn_with(|c| c.schedule_poll_ms = 0).await;
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
    let clock = manual_clock();
    let app = app_on(&clock).await;
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
    let due = time(&schedule(&app, &owner, &id).await["nextRunAt"]);

    assert_eq!(tick_at(&app, &clock, due).await, 1, "the due time is claimed");
    let s = schedule(&app, &owner, &id).await;
    assert!(
        s["lastError"].as_str().unwrap().contains("creator can no longer start"),
        "{s}"
    );
    assert_eq!(s["enabled"], true, "stays enabled: {s}");
    assert_eq!(time(&s["nextRunAt"]), due + SECOND, "moves on: {s}");
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
        metric(&text, "workflows_schedule_fires_skipped_total{reason=\"forbidden\"}") == 1.0,
        "{text}"
    );

    // Back in the drive: the next due time starts a run and clears the error.
    add_member(&app, &owner, &drive, "member", "VIEWER").await;
    assert_eq!(tick_at(&app, &clock, due + SECOND).await, 1);
    let s = schedule(&app, &owner, &id).await;
    assert_eq!(s["executions"]["totalCount"], 1, "{s}");
    assert!(s["lastError"].is_null(), "{s}");
    assert_eq!(runs_of(&s)[0]["userId"], "member", "{s}");
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_schedules_never_fire() {
    let clock = manual_clock();
    let app = app_on(&clock).await;
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
    let due = time(&on["nextRunAt"]);
    let on = on["id"].as_str().unwrap().to_owned();

    // While the enabled one fires twice, the disabled one never does.
    assert_eq!(tick_at(&app, &clock, due).await, 1);
    assert_eq!(tick_at(&app, &clock, due + SECOND).await, 1);
    assert_eq!(schedule(&app, &owner, &on).await["executions"]["totalCount"], 2);
    let s = schedule(&app, &owner, &off).await;
    assert_eq!(s["executions"]["totalCount"], 0, "{s}");
    assert!(s["nextRunAt"].is_null() && s["lastRunAt"].is_null(), "{s}");

    // Disabling stops one that was firing.
    let d = app
        .ok(&owner, UPDATE, json!({ "id": on, "i": { "enabled": false } }))
        .await;
    assert!(d["updateWorkflowSchedule"]["nextRunAt"].is_null(), "{d}");
    assert_eq!(tick_at(&app, &clock, due + SECOND * 5).await, 0);
    assert_eq!(schedule(&app, &owner, &on).await["executions"]["totalCount"], 2);
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

// --- Several servers on one database -----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run with TEST_DATABASE_URL=postgres://… and -- --include-ignored"]
async fn two_instances_start_one_run_per_due_time() {
    require_postgres();
    let clock = manual_clock();
    let a = app_on(&clock).await;
    let b = a.another(|c| c.schedule_poll_ms = 0, &clock).await;
    let owner = a.user("owner").await;
    let (_, template) = drive_and_template(&a, &owner).await;
    let s = create(
        &a,
        &owner,
        json!({ "templateId": template, "cron": EVERY_SECOND, "context": { "who": "both" } }),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let first = time(&s["nextRunAt"]);
    // Both look at every due time at once; one of them claims it.
    for k in 0..20 {
        clock.advance_to((first + SECOND * k).naive_utc());
        let (x, y) = tokio::join!(a.state.scheduler.tick(), b.state.scheduler.tick());
        assert_eq!(x.unwrap() + y.unwrap(), 1, "due time {k}: one claim of two");
    }
    b.ok(&owner, UPDATE, json!({ "id": id, "i": { "enabled": false } }))
        .await;

    let runs = runs_of(&schedule(&a, &owner, &id).await);
    let due: Vec<DateTime<Utc>> = runs.iter().map(|r| time(&r["scheduledFor"])).collect();
    let distinct: BTreeSet<_> = due.iter().collect();
    assert_eq!(distinct.len(), runs.len(), "a due time started twice: {due:?}");
    assert_eq!(runs.len(), 20, "one run for every due time: {due:?}");
    assert!(
        due.windows(2).all(|w| w[1] - w[0] == SECOND),
        "one run for every due time: {due:?}"
    );
    // Each instance counts the fires it claimed: together, one per run.
    let mut fired = 0.0;
    for app in [&a, &b] {
        fired += metric(&metrics(app).await, "workflows_schedule_fires_started_total");
    }
    assert_eq!(fired as usize, runs.len(), "fires counted across instances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_over_several_due_times_starts_one_run_on_restart() {
    let clock = manual_clock();
    let app = app_on(&clock).await;
    let owner = app.user("owner").await;
    let (_, template) = drive_and_template(&app, &owner).await;
    let s = create(
        &app,
        &owner,
        json!({ "templateId": template, "cron": EVERY_SECOND, "context": { "who": "x" } }),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    let first = time(&s["nextRunAt"]);
    assert_eq!(tick_at(&app, &clock, first).await, 1);
    let run = runs_of(&schedule(&app, &owner, &id).await)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::executions::wait_for(&app, &owner, &run, "COMPLETED").await;
    let db = app.stop().await;

    // Down over the next three due times.
    clock.advance_to((first + chrono::Duration::milliseconds(3500)).naive_utc());
    let app = TestApp::spawn_on(db, |c| c.schedule_poll_ms = 0, &clock).await;
    assert_eq!(
        app.state.scheduler.tick().await.unwrap(),
        1,
        "the missed due times start one run"
    );
    assert_eq!(app.state.scheduler.tick().await.unwrap(), 0);
    let s = schedule(&app, &owner, &id).await;
    let due: Vec<DateTime<Utc>> = runs_of(&s).iter().map(|r| time(&r["scheduledFor"])).collect();
    assert_eq!(
        due,
        [first, first + SECOND],
        "the earliest missed time stands for them: {s}"
    );
    // Then the schedule goes on from its next time after now.
    assert_eq!(time(&s["nextRunAt"]), first + SECOND * 4, "{s}");
    assert_eq!(tick_at(&app, &clock, first + SECOND * 4).await, 1);
    let s = schedule(&app, &owner, &id).await;
    let due: Vec<DateTime<Utc>> = runs_of(&s).iter().map(|r| time(&r["scheduledFor"])).collect();
    assert_eq!(due, [first, first + SECOND, first + SECOND * 4], "{s}");
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
