//! Template statistics and the retention sweep (docs/statistics.md): exact counts and bucketed percentiles from known
//! runs, tokens from an `openai` agent, the same numbers after the fold and
//! after the sweep deleted the runs, `since` exact to the instant (inside an
//! hour, in the future, on a UTC day boundary, after the sweep, and what a
//! `since` older than the retention period counts), and the sweep leaving
//! RUNNING and PAUSED runs alone.

use std::time::Duration;

use chrono::{NaiveDateTime, Timelike, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value as DbValue};
use serde_json::{Value, json};
use workflows::clock::ManualClock;
use workflows_tests::stub::{Reply, stub};
use workflows_tests::{TestApp, agents, eventually, manual_clock};

use crate::executions::{cancel, start, wait_for};
use crate::{add_member, create_drive, create_template};

const STATS: &str = "query($id: ID!, $since: DateTime) { workflowTemplate(id: $id) { stats(since: $since) {
  runs completed failed cancelled active successRate
  durationMs { p50 p95 max } tokens { prompt completion }
  steps { stepOrder runs completed failed skipped attempts durationMs { p50 p95 max } }
} } }";

async fn stats(app: &TestApp, token: &str, template: &str, since: Option<&str>) -> Value {
    app.ok(token, STATS, json!({ "id": template, "since": since })).await["workflowTemplate"]["stats"].clone()
}

/// A server with the test agents, an `openai` agent `reviewer` answering
/// from the stub (usage: 5 prompt, 3 completion tokens), and retention on
/// (one day; the tests sweep with `sweep_now`, the server's own sweep waits
/// 30 days); going by `clock` when one is given, configured by `configure`.
async fn server_on(clock: Option<&ManualClock>, configure: impl FnOnce(&mut workflows::config::Config)) -> TestApp {
    let (stub, url) = stub(vec![]).await;
    *stub.fallback.lock().unwrap() = Some(Reply::Sse {
        pieces: vec!["ok"],
        delay: Duration::from_millis(1),
    });
    let mut registry = agents::registry();
    registry
        .add_from_toml(
            &format!("[agents.reviewer]\nprovider = \"openai\"\nbase_url = \"{url}\"\nmodel = \"m1\"\n"),
            |_| None,
        )
        .unwrap();
    let configure = |c: &mut workflows::config::Config| {
        c.retention_days = 1;
        c.retention_sweep_seconds = 30 * 24 * 3600;
        configure(c);
    };
    match clock {
        Some(clock) => TestApp::spawn_with_agents_and_clock(configure, registry, clock).await,
        None => TestApp::spawn_with_agents(configure, registry).await,
    }
}

async fn server() -> TestApp {
    server_on(None, |_| {}).await
}

/// `server()`, configured further by `configure`.
async fn server_with(configure: impl FnOnce(&mut workflows::config::Config)) -> TestApp {
    server_on(None, configure).await
}

/// Runs `sql` with `values` (written with `$n` placeholders) on the server's database.
async fn exec(app: &TestApp, sql: &str, values: Vec<DbValue>) -> u64 {
    let backend = app.db().get_database_backend();
    let sql = if backend == DbBackend::Postgres {
        sql.to_owned()
    } else {
        (1..=values.len())
            .rev()
            .fold(sql.to_owned(), |s, i| s.replace(&format!("${i}"), "?"))
    };
    app.db()
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .unwrap()
        .rows_affected()
}

/// Moves the server's clock on two days: every run finished so far is past
/// the retention age.
fn two_days_later(clock: &ManualClock) {
    clock.advance(Duration::from_secs(2 * 24 * 3600));
}

fn ms(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not a number of ms: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_runs_give_exact_counts_and_survive_the_sweep() {
    let clock = manual_clock();
    let app = server_on(Some(&clock), |_| {}).await;
    let owner = app.user("owner").await;
    let viewer = app.user("viewer").await;
    let outsider = app.user("outsider").await;
    let drive = create_drive(&app, &owner, "Stats").await;
    add_member(&app, &owner, &drive, "viewer", "VIEWER").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "Measured", "isPublic": true, "steps": [
            { "agentId": "slow", "promptTemplate": "{{ms}}" },
            { "agentId": "flaky", "promptTemplate": "{{fails}}|{{tag}}",
              "metadata": { "retry": { "maxAttempts": 3, "backoffMs": 5 } } },
            { "agentId": "echo", "promptTemplate": "maybe", "condition": { "!": { "var": "skip" } } },
            { "agentId": "reviewer", "promptTemplate": "Review {{tag}}" }
        ] }),
    )
    .await;
    let t = t["id"].as_str().unwrap().to_owned();
    let cancelled_t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "Cancelled", "steps": [{ "agentId": "slow", "promptTemplate": "60000" }] }),
    )
    .await;
    let cancelled_t = cancelled_t["id"].as_str().unwrap().to_owned();

    // Three completed runs (one with a skipped step and two retried
    // attempts), one failed at step 1 after three attempts.
    let runs = [
        (50, 0, false, "COMPLETED"),
        (200, 2, true, "COMPLETED"),
        (800, 0, false, "COMPLETED"),
        (10, 5, false, "FAILED"),
    ];
    for (i, (ms, fails, skip, end)) in runs.iter().enumerate() {
        let id = start(
            &app,
            &owner,
            &t,
            json!({ "ms": ms.to_string(), "fails": fails, "skip": skip, "tag": format!("stats-{i}") }),
        )
        .await;
        wait_for(&app, &owner, &id, end).await;
    }
    let c = start(&app, &owner, &cancelled_t, json!({})).await;
    // Cancelled while its step is in flight.
    crate::executions::wait_for_step(&app, &owner, &c, 0).await;
    assert!(cancel(&app, &owner, &c).await.get("errors").is_none());

    let s = stats(&app, &owner, &t, None).await;
    assert_eq!(
        (&s["runs"], &s["completed"], &s["failed"], &s["cancelled"], &s["active"]),
        (&json!(4), &json!(3), &json!(1), &json!(0), &json!(0)),
        "{s}"
    );
    assert_eq!(s["successRate"], json!(0.75), "{s}");
    assert_eq!(s["tokens"], json!({ "prompt": 15, "completion": 9 }), "{s}");
    let steps = s["steps"].as_array().unwrap();
    let orders: Vec<i64> = steps.iter().map(|x| x["stepOrder"].as_i64().unwrap()).collect();
    assert_eq!(orders, [0, 1, 2, 3], "{s}");
    let counts = |x: &Value| {
        [&x["runs"], &x["completed"], &x["failed"], &x["skipped"], &x["attempts"]].map(|v| v.as_i64().unwrap())
    };
    assert_eq!(counts(&steps[0]), [4, 4, 0, 0, 4], "{s}");
    assert_eq!(counts(&steps[1]), [4, 3, 1, 0, 1 + 3 + 1 + 3], "{s}");
    assert_eq!(counts(&steps[2]), [3, 2, 0, 1, 2], "{s}");
    assert_eq!(counts(&steps[3]), [3, 3, 0, 0, 3], "{s}");

    // Step 0 waited 10, 50, 200 and 800 ms: the median (rank 2 of 4) is in
    // the 50 ms sample's bucket, p95 in the 800 ms one, which is the max's,
    // so it is reported as the exact max.
    let d = &steps[0]["durationMs"];
    let (p50, p95, max) = (ms(&d["p50"]), ms(&d["p95"]), ms(&d["max"]));
    assert!((50..200).contains(&p50), "p50 {p50}: {d}");
    assert!((800..1000).contains(&max), "max {max}: {d}");
    assert_eq!(p95, max, "{d}");
    // A skipped step is not timed: two timed runs of step 2.
    assert!(steps[2]["durationMs"]["max"].is_number(), "{s}");
    let run = &s["durationMs"];
    assert!(ms(&run["max"]) >= 800 && ms(&run["p95"]) == ms(&run["max"]), "{run}");
    assert!(ms(&run["p50"]) >= 50 && ms(&run["p50"]) < ms(&run["max"]), "{run}");

    let sc = stats(&app, &owner, &cancelled_t, None).await;
    assert_eq!(
        (&sc["runs"], &sc["cancelled"], &sc["successRate"]),
        (&json!(1), &json!(1), &json!(0.0)),
        "{sc}"
    );
    assert_eq!(counts(&sc["steps"][0]), [1, 0, 1, 0, 1], "{sc}");
    assert!(sc["durationMs"]["max"].is_number(), "{sc}");

    // The fold moves the rows into the hourly roll-ups: the numbers stay.
    app.state.stats_fold.fold_now().await.unwrap();
    let unfolded = r#"SELECT COUNT(*) AS n FROM workflow_execution_stats WHERE "templateId" = $1 AND NOT "folded""#;
    assert_eq!(count(&app, unfolded, t.clone()).await, 0);
    assert_eq!(stats(&app, &owner, &t, None).await, s);
    assert_eq!(stats(&app, &owner, &cancelled_t, None).await, sc);

    // Whoever sees the template sees every run in the drive; others nothing.
    assert_eq!(stats(&app, &viewer, &t, None).await, s);
    let hidden = app.ok(&outsider, STATS, json!({ "id": t })).await;
    assert!(hidden["workflowTemplate"].is_null(), "{hidden}");

    // The sweep deletes the five finished runs and their steps; the
    // statistics do not move.
    assert_eq!(app.state.retention.sweep_now().await.unwrap(), 0, "nothing is old yet");
    clock.advance(Duration::from_secs(24 * 3600 - 60));
    assert_eq!(app.state.retention.sweep_now().await.unwrap(), 0, "less than a day old");
    two_days_later(&clock);
    assert_eq!(app.state.retention.sweep_now().await.unwrap(), 5);
    let left = app
        .ok(&owner, "{ workflowExecutions(first: 50) { totalCount } }", json!({}))
        .await;
    assert_eq!(left["workflowExecutions"]["totalCount"], 0, "{left}");
    let steps_left = app
        .db()
        .query_one_raw(Statement::from_string(
            app.db().get_database_backend(),
            "SELECT COUNT(*) AS n FROM workflow_execution_steps",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(steps_left, 0);
    assert_eq!(stats(&app, &owner, &t, None).await, s);
    assert_eq!(stats(&app, &owner, &cancelled_t, None).await, sc);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("workflows_retention_deleted_total 5"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("retention"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Deleting the template still takes its statistics with it.
    let rows = |table: &str| format!(r#"SELECT COUNT(*) AS n FROM {table} WHERE "templateId" = $1"#);
    let tables = ["workflow_template_stats", "workflow_execution_stats"];
    // The sweep took the folded rows of the runs it deleted; the roll-ups stay.
    assert_eq!(count(&app, &rows(tables[1]), cancelled_t.clone()).await, 0);
    assert!(count(&app, &rows(tables[0]), cancelled_t.clone()).await > 0);
    app.ok(
        &owner,
        "mutation($id: ID!) { deleteWorkflowTemplate(id: $id) }",
        json!({ "id": cancelled_t }),
    )
    .await;
    for table in tables {
        assert_eq!(
            count(&app, &rows(table), cancelled_t.clone()).await,
            0,
            "{table} went with it"
        );
    }
}

/// `n` of `sql` (written with `$1`) for `value`.
async fn count(app: &TestApp, sql: &str, value: String) -> i64 {
    let backend = app.db().get_database_backend();
    let sql = if backend == DbBackend::Postgres {
        sql.to_owned()
    } else {
        sql.replace("$1", "?")
    };
    app.db()
        .query_one_raw(Statement::from_sql_and_values(backend, sql, [value.into()]))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap()
}

/// The UTC hour `t` is in.
fn hour_of(t: NaiveDateTime) -> NaiveDateTime {
    t.date().and_hms_opt(t.hour(), 0, 0).unwrap()
}

fn rfc3339(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339()
}

/// A template whose runs tell apart in their statistics: run i makes i + 1
/// agent calls at step 1 (`flaky`, retried), and step 2 (`reviewer`) uses
/// 5 prompt and 3 completion tokens.
async fn telling_template(app: &TestApp, owner: &str, drive: &str, name: &str) -> String {
    let t = create_template(
        app,
        owner,
        drive,
        json!({ "name": name, "steps": [
            { "agentId": "echo", "promptTemplate": "hi" },
            { "agentId": "flaky", "promptTemplate": "{{fails}}|{{tag}}",
              "metadata": { "retry": { "maxAttempts": 5, "backoffMs": 1 } } },
            { "agentId": "reviewer", "promptTemplate": "Review {{tag}}" }
        ] }),
    )
    .await;
    t["id"].as_str().unwrap().to_owned()
}

/// Runs `template` to completion as run number `i` (see `telling_template`),
/// then moves its start to `at`: its execution and the statistics rows it
/// left, none folded yet (the fold is off), so they agree as if it had
/// started then. Returns the execution's id.
async fn run_started_at(app: &TestApp, owner: &str, template: &str, i: usize, at: NaiveDateTime) -> String {
    let id = start(
        app,
        owner,
        template,
        json!({ "fails": i, "tag": format!("{template}-{i}") }),
    )
    .await;
    wait_for(app, owner, &id, "COMPLETED").await;
    let moved = exec(
        app,
        r#"UPDATE workflow_executions SET "startedAt" = $1, "createdAt" = $2 WHERE "id" = $3"#,
        vec![at.into(), at.into(), id.clone().into()],
    )
    .await;
    assert_eq!(moved, 1);
    let moved = exec(
        app,
        r#"UPDATE workflow_execution_stats SET "startedAt" = $1 WHERE "executionId" = $2 AND NOT "folded""#,
        vec![at.into(), id.clone().into()],
    )
    .await;
    assert_eq!(moved, 4, "the run and its three steps, none folded");
    id
}

/// Asserts that `stats(since:)` of `template` counts exactly the runs
/// `runs` (their numbers, see `telling_template`), steps included.
async fn assert_counts(app: &TestApp, owner: &str, template: &str, since: Option<&str>, runs: &[usize]) {
    let s = stats(app, owner, template, since).await;
    let n = runs.len() as i64;
    let what = format!("since {since:?}, runs {runs:?}: {s}");
    assert_eq!(
        (&s["runs"], &s["completed"], &s["active"]),
        (&json!(n), &json!(n), &json!(0)),
        "{what}"
    );
    assert_eq!(s["tokens"], json!({ "prompt": 5 * n, "completion": 3 * n }), "{what}");
    if runs.is_empty() {
        assert_eq!(s["steps"], json!([]), "{what}");
        assert_eq!(s["durationMs"]["max"], Value::Null, "{what}");
        return;
    }
    let steps = s["steps"].as_array().unwrap();
    let per_step: Vec<(i64, i64)> = steps
        .iter()
        .map(|x| (x["runs"].as_i64().unwrap(), x["attempts"].as_i64().unwrap()))
        .collect();
    let calls: i64 = runs.iter().map(|i| *i as i64 + 1).sum();
    assert_eq!(per_step, [(n, n), (n, calls), (n, n)], "{what}");
    assert!(s["durationMs"]["max"].is_number(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_is_exact_inside_an_hour_and_in_the_future() {
    let app = server_with(|c| c.stats_fold_seconds = 0).await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Hours").await;
    let t = telling_template(&app, &owner, &drive, "Hourly").await;
    let now = Utc::now().naive_utc();
    let hour = hour_of(now);
    let m = chrono::Duration::minutes;
    // Two runs in the previous hour, two in this one (their starts may be
    // minutes ahead of the clock: a start is all the statistics look at).
    let starts = [hour - m(50), hour - m(20), hour + m(2), hour + m(4)];
    for (i, at) in starts.iter().enumerate().take(2) {
        run_started_at(&app, &owner, &t, i, *at).await;
    }
    // Those two folded into their hour, the next two still rows.
    assert_eq!(app.state.stats_fold.fold_now().await.unwrap(), 8);
    for (i, at) in starts.iter().enumerate().skip(2) {
        run_started_at(&app, &owner, &t, i, *at).await;
    }
    let s = chrono::Duration::seconds;
    let cases: [(Option<NaiveDateTime>, &[usize]); 9] = [
        (None, &[0, 1, 2, 3]),
        // Inside the previous hour: its later run, and this hour's.
        (Some(hour - m(30)), &[1, 2, 3]),
        (Some(hour - m(20)), &[1, 2, 3]),
        (Some(hour - m(20) + s(1)), &[2, 3]),
        (Some(hour), &[2, 3]),
        // Inside this hour: only the run started after it.
        (Some(hour + m(3)), &[3]),
        (Some(hour + m(4)), &[3]),
        (Some(hour + m(4) + s(1)), &[]),
        // An hour from now.
        (Some(now + chrono::Duration::hours(1)), &[]),
    ];
    for round in ["two runs folded", "all folded"] {
        for (since, runs) in cases {
            let since = since.map(rfc3339);
            assert_counts(&app, &owner, &t, since.as_deref(), runs).await;
        }
        if round == "two runs folded" {
            assert_eq!(app.state.stats_fold.fold_now().await.unwrap(), 8, "{round}");
        }
    }
    // Not a DateTime: refused before it runs, with a code.
    let bad = app.gql(&owner, STATS, json!({ "id": t, "since": "yesterday" })).await;
    assert!(bad["errors"][0]["extensions"]["code"].is_string(), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_on_a_utc_day_boundary() {
    let app = server_with(|c| c.stats_fold_seconds = 0).await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Days").await;
    let t = telling_template(&app, &owner, &drive, "Daily").await;
    let midnight = Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap();
    let s = chrono::Duration::seconds;
    let starts = [midnight - s(1), midnight, midnight + s(1)];
    for (i, at) in starts.iter().enumerate() {
        run_started_at(&app, &owner, &t, i, *at).await;
    }
    let cases: [(NaiveDateTime, &[usize]); 5] = [
        (midnight - chrono::Duration::days(1), &[0, 1, 2]),
        (midnight - s(1), &[0, 1, 2]),
        (midnight, &[1, 2]),
        (midnight + s(1), &[2]),
        (midnight + chrono::Duration::hours(1), &[]),
    ];
    for round in ["rows", "roll-ups"] {
        for (since, runs) in cases {
            assert_counts(&app, &owner, &t, Some(&rfc3339(since)), runs).await;
        }
        // The same instant written with another offset.
        let plus_two = (midnight + s(1) + chrono::Duration::hours(2)).format("%Y-%m-%dT%H:%M:%S+02:00");
        assert_counts(&app, &owner, &t, Some(&plus_two.to_string()), &[2]).await;
        if round == "rows" {
            assert_eq!(app.state.stats_fold.fold_now().await.unwrap(), 12);
        }
    }
}

/// Retention (one day here) deletes runs and, once folded, the rows they
/// left; a `since` within the day stays exact, and one older than that is
/// answered from its next whole hour, before and after the sweep alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_after_the_sweep_is_exact_within_the_retention_period() {
    let app = server_with(|c| c.stats_fold_seconds = 0).await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Kept").await;
    let t = telling_template(&app, &owner, &drive, "Retained").await;
    let hour = hour_of(Utc::now().naive_utc());
    let m = chrono::Duration::minutes;
    let old_hour = hour - chrono::Duration::days(3);
    let old = run_started_at(&app, &owner, &t, 0, old_hour + m(10)).await;
    exec(
        &app,
        r#"UPDATE workflow_executions SET "updatedAt" = $1 WHERE "id" = $2"#,
        vec![(old_hour + m(11)).into(), old.clone().into()],
    )
    .await;
    let recent = run_started_at(&app, &owner, &t, 1, hour - m(50)).await;
    run_started_at(&app, &owner, &t, 2, hour - m(20)).await;

    let rows_of_run = |id: String| {
        count(
            &app,
            r#"SELECT COUNT(*) AS n FROM workflow_execution_stats WHERE "executionId" = $1"#,
            id,
        )
    };
    let cases: [(Option<NaiveDateTime>, &[usize]); 6] = [
        (None, &[0, 1, 2]),
        // Within the day kept: exact, inside an hour too.
        (Some(hour - m(30)), &[2]),
        (Some(hour - m(50)), &[1, 2]),
        // Three days back: a whole hour is exact; inside one, the count
        // starts at the next whole hour, leaving out the run at :10.
        (Some(old_hour), &[0, 1, 2]),
        (Some(old_hour + m(5)), &[1, 2]),
        (Some(old_hour + m(10)), &[1, 2]),
    ];
    for (since, runs) in cases {
        assert_counts(&app, &owner, &t, since.map(rfc3339).as_deref(), runs).await;
    }
    // The sweep deletes the old run; the rows it left are not folded yet,
    // so they stay, and so do the numbers.
    assert_eq!(app.state.retention.sweep_now().await.unwrap(), 1);
    let run = count(
        &app,
        r#"SELECT COUNT(*) AS n FROM workflow_executions WHERE "id" = $1"#,
        old.clone(),
    );
    assert_eq!(run.await, 0);
    assert_eq!(rows_of_run(old.clone()).await, 4);
    for (since, runs) in cases {
        assert_counts(&app, &owner, &t, since.map(rfc3339).as_deref(), runs).await;
    }
    // Folded, the old run's rows go with the next sweep; the recent ones stay.
    assert_eq!(app.state.stats_fold.fold_now().await.unwrap(), 12);
    assert_eq!(app.state.retention.sweep_now().await.unwrap(), 0);
    assert_eq!(rows_of_run(old).await, 0);
    assert_eq!(rows_of_run(recent).await, 4);
    for (since, runs) in cases {
        assert_counts(&app, &owner, &t, since.map(rfc3339).as_deref(), runs).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_never_deletes_running_or_paused_runs() {
    let clock = manual_clock();
    // The server's own sweep, every hour on its clock.
    let app = TestApp::spawn_with_clock(
        |c| {
            c.retention_days = 1;
            c.retention_sweep_seconds = 3600;
        },
        &clock,
    )
    .await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Keep").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "Waits", "steps": [
            { "agentId": "slow", "promptTemplate": "{{ms}}" },
            { "agentId": "echo", "promptTemplate": "ok", "requiresUserInput": true }
        ] }),
    )
    .await;
    let t = t["id"].as_str().unwrap().to_owned();
    let running = start(&app, &owner, &t, json!({ "ms": "60000" })).await;
    let paused = start(&app, &owner, &t, json!({ "ms": "1" })).await;
    wait_for(&app, &owner, &paused, "PAUSED").await;
    let finished = start(&app, &owner, &t, json!({ "ms": "1" })).await;
    wait_for(&app, &owner, &finished, "PAUSED").await;
    assert!(cancel(&app, &owner, &finished).await.get("errors").is_none());

    let s = stats(&app, &owner, &t, None).await;
    assert_eq!(
        (&s["runs"], &s["active"], &s["cancelled"], &s["successRate"]),
        (&json!(3), &json!(2), &json!(1), &json!(0.0)),
        "{s}"
    );

    two_days_later(&clock);
    let ids: Vec<String> = eventually(Duration::from_secs(10), || async {
        let ids: Vec<String> = app
            .ok(
                &owner,
                "{ workflowExecutions(first: 50) { nodes { id status } } }",
                json!({}),
            )
            .await["workflowExecutions"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect();
        if ids.contains(&finished) {
            Err(format!("{ids:?}"))
        } else {
            Ok(ids)
        }
    })
    .await;
    assert!(ids.contains(&running) && ids.contains(&paused), "{ids:?}");
    assert_eq!(app.state.retention.sweep_now().await.unwrap(), 0, "nothing else goes");
    assert_eq!(stats(&app, &owner, &t, None).await, s);
    assert!(cancel(&app, &owner, &running).await.get("errors").is_none());
}

/// Cancels racing steps that finish: whichever write wins, the roll-ups
/// agree with the rows, each run and step counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_cancels_are_counted_once() {
    let app = server().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Races").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "Race", "steps": [{ "agentId": "slow", "promptTemplate": "{{ms}}" }] }),
    )
    .await;
    let t = t["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = start(&app, &owner, &t, json!({ "ms": (i * 3).to_string() })).await;
        // Not synchronization: the cancels land at different points of
        // steps of different lengths, some before and some after the end.
        tokio::time::sleep(Duration::from_millis(i * 2)).await;
        let _ = cancel(&app, &owner, &id).await;
        ids.push(id);
    }
    let (mut completed, mut cancelled, mut step_ended) = (0, 0, 0);
    for id in &ids {
        let e = wait_for_end(&app, &owner, id).await;
        match e["status"].as_str().unwrap() {
            "COMPLETED" => completed += 1,
            "CANCELLED" => cancelled += 1,
            other => panic!("{other}: {e}"),
        }
        if matches!(e["steps"][0]["status"].as_str(), Some("COMPLETED" | "FAILED")) {
            step_ended += 1;
        }
    }
    let s = stats(&app, &owner, &t, None).await;
    assert_eq!(
        (&s["completed"], &s["cancelled"], &s["active"]),
        (&json!(completed), &json!(cancelled), &json!(0)),
        "{s}"
    );
    assert_eq!(s["steps"][0]["completed"].as_i64().unwrap_or(0), completed, "{s}");
    assert_eq!(s["steps"][0]["runs"].as_i64().unwrap_or(0), step_ended, "{s}");
}

async fn wait_for_end(app: &TestApp, token: &str, id: &str) -> Value {
    eventually(Duration::from_secs(10), || async {
        let e = crate::executions::execution(app, token, id).await;
        if matches!(e["status"].as_str(), Some("COMPLETED" | "CANCELLED" | "FAILED")) {
            Ok(e)
        } else {
            Err(e)
        }
    })
    .await
}

/// The upgrade to hourly roll-ups (and back): each day's 64 shard rows
/// become one roll-up at 00:00 UTC of that day, their histograms merged, so
/// those runs count as started at that midnight; nothing counted is lost
/// either way, rows not yet folded included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_roll_ups_become_their_midnight_hour() {
    use migration::{Migrator, MigratorTrait};

    let app = server_with(|c| c.stats_fold_seconds = 0).await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Upgraded").await;
    let t = telling_template(&app, &owner, &drive, "Upgraded").await;
    // One run folded, one not.
    let hour = hour_of(Utc::now().naive_utc());
    run_started_at(&app, &owner, &t, 0, hour).await;
    assert_eq!(app.state.stats_fold.fold_now().await.unwrap(), 4);
    run_started_at(&app, &owner, &t, 1, hour).await;
    let before = stats(&app, &owner, &t, None).await;

    // Back to daily roll-ups: both runs in today's shard 0.
    let names: Vec<String> = Migrator::migrations().iter().map(|m| m.name().to_owned()).collect();
    assert_eq!(names.last().map(String::as_str), Some("m20261208_000011_hourly_stats"));
    Migrator::down(app.db(), Some(1)).await.unwrap();
    let daily = r#"SELECT COUNT(*) AS n FROM workflow_template_stats WHERE "templateId" = $1 AND "shard" = 0 AND "completed" = 2"#;
    assert_eq!(count(&app, daily, t.clone()).await, 4, "the run and its three steps");

    // Rows of the old kind five days back: two shards of the run, one of a step.
    let day = hour.date() - chrono::Duration::days(5);
    let insert = r#"INSERT INTO workflow_template_stats ("id", "templateId", "day", "stepOrder", "shard", "completed",
        "failed", "attempts", "durations", "durationMaxMs", "createdAt", "updatedAt")
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"#;
    let at = Utc::now().naive_utc();
    for (id, step, shard, completed, failed, attempts, durations, max) in [
        ("old-run-3", -1_i32, 3_i32, 1, 0, 0, json!({ "10": 1 }), 12),
        ("old-run-7", -1, 7, 0, 1, 0, json!({ "10": 1, "20": 1 }), 30),
        ("old-step-3", 0, 3, 1, 0, 2, json!({ "5": 1 }), 2),
    ] {
        let values: Vec<DbValue> = vec![
            id.into(),
            t.clone().into(),
            day.into(),
            step.into(),
            shard.into(),
            (completed as i64).into(),
            (failed as i64).into(),
            (attempts as i64).into(),
            durations.into(),
            (max as i64).into(),
            at.into(),
            at.into(),
        ];
        assert_eq!(exec(&app, insert, values).await, 1);
    }
    Migrator::up(app.db(), None).await.unwrap();

    // The old day is one row per step at its midnight, histograms merged.
    let midnight = day.and_hms_opt(0, 0, 0).unwrap();
    let backend = app.db().get_database_backend();
    let sql = if backend == DbBackend::Postgres {
        r#"SELECT "completed", "failed", "durationMaxMs", CAST("durations" AS text) AS d FROM workflow_template_stats
           WHERE "templateId" = $1 AND "stepOrder" = -1 AND "hour" = $2"#
    } else {
        r#"SELECT "completed", "failed", "durationMaxMs", "durations" AS d FROM workflow_template_stats
           WHERE "templateId" = ? AND "stepOrder" = -1 AND "hour" = ?"#
    };
    let rows = app
        .db()
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [t.clone().into(), midnight.into()],
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    let d: Value = serde_json::from_str(&r.try_get::<String>("", "d").unwrap()).unwrap();
    assert_eq!(
        (
            r.try_get::<i64>("", "completed").unwrap(),
            r.try_get::<i64>("", "failed").unwrap(),
            r.try_get::<i64>("", "durationMaxMs").unwrap(),
            d
        ),
        (1, 1, 30, json!({ "10": 2, "20": 1 }))
    );

    // Every run counts as before; the old ones, and today's (which the way
    // down made daily too), from their midnight.
    let after = stats(&app, &owner, &t, None).await;
    assert_eq!(
        (&after["runs"], &after["completed"], &after["failed"]),
        (&json!(4), &json!(3), &json!(1)),
        "{after}"
    );
    let today = hour.date().and_hms_opt(0, 0, 0).unwrap();
    assert_eq!(stats(&app, &owner, &t, Some(&rfc3339(today))).await, before);
    let from = |t0: NaiveDateTime| {
        let app = &app;
        let (owner, t) = (owner.clone(), t.clone());
        async move { stats(app, &owner, &t, Some(&rfc3339(t0))).await }
    };
    let old = from(midnight).await;
    assert_eq!(
        (&old["runs"], &old["steps"][0]["runs"], &old["steps"][0]["attempts"]),
        (&json!(4), &json!(3), &json!(4)),
        "{old}"
    );
    let later = from(midnight + chrono::Duration::seconds(1)).await;
    assert_eq!(later["runs"], 2, "{later}");
}
