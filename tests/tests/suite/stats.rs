//! Template statistics and the retention sweep (API.md "Analytics (design
//! #5) and retention"): exact counts and bucketed percentiles from known
//! runs, tokens from an `openai` agent, the same numbers after the sweep
//! deleted the runs, `since` on UTC day boundaries, and the sweep leaving
//! RUNNING and PAUSED runs alone.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
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
/// (one day; the test sweeps with `sweep_now`, the server's own sweep waits
/// 30 days); going by `clock` when one is given.
async fn server_on(clock: Option<&ManualClock>) -> TestApp {
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
    };
    match clock {
        Some(clock) => TestApp::spawn_with_agents_and_clock(configure, registry, clock).await,
        None => TestApp::spawn_with_agents(configure, registry).await,
    }
}

async fn server() -> TestApp {
    server_on(None).await
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
    let app = server_on(Some(&clock)).await;
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
    app.ok(
        &owner,
        "mutation($id: ID!) { deleteWorkflowTemplate(id: $id) }",
        json!({ "id": cancelled_t }),
    )
    .await;
    let rows = exec(
        &app,
        r#"UPDATE workflow_template_stats SET "completed" = 0 WHERE "templateId" = $1"#,
        vec![cancelled_t.clone().into()],
    )
    .await;
    assert_eq!(rows, 0, "the template's roll-ups went with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_counts_whole_utc_days_from_its_day_on() {
    let app = server().await;
    let owner = app.user("owner").await;
    let drive = create_drive(&app, &owner, "Days").await;
    let t = create_template(
        &app,
        &owner,
        &drive,
        json!({ "name": "Daily", "steps": [{ "agentId": "echo", "promptTemplate": "hi" }] }),
    )
    .await;
    let t = t["id"].as_str().unwrap().to_owned();
    // One run, its roll-ups then moved three days back; another today.
    let today = Utc::now().date_naive();
    let back = today - chrono::Duration::days(3);
    let id = start(&app, &owner, &t, json!({})).await;
    wait_for(&app, &owner, &id, "COMPLETED").await;
    let moved = exec(
        &app,
        r#"UPDATE workflow_template_stats SET "day" = $1 WHERE "templateId" = $2"#,
        vec![back.into(), t.clone().into()],
    )
    .await;
    assert_eq!(moved, 2, "one row for the run, one for its step");
    let id = start(&app, &owner, &t, json!({})).await;
    wait_for(&app, &owner, &id, "COMPLETED").await;

    let at = |d: NaiveDate, time: &str| format!("{d}T{time}Z");
    let all = stats(&app, &owner, &t, None).await;
    assert_eq!((&all["runs"], &all["completed"]), (&json!(2), &json!(2)), "{all}");
    // Late on the day of the moved run: that whole day counts.
    let late = stats(&app, &owner, &t, Some(&at(back, "23:59:59"))).await;
    assert_eq!(late["completed"], 2, "{late}");
    // The next midnight: only today's run.
    let next = stats(
        &app,
        &owner,
        &t,
        Some(&at(back + chrono::Duration::days(1), "00:00:00")),
    )
    .await;
    assert_eq!(next["completed"], 1, "{next}");
    assert_eq!(next["steps"][0]["completed"], 1, "{next}");
    // Today, and an offset that is still today in UTC.
    let today_stats = stats(&app, &owner, &t, Some(&format!("{today}T23:30:00+00:00"))).await;
    assert_eq!(today_stats["completed"], 1, "{today_stats}");
    // Tomorrow: nothing, and a rate of nothing is null.
    let none = stats(
        &app,
        &owner,
        &t,
        Some(&at(today + chrono::Duration::days(1), "00:00:00")),
    )
    .await;
    assert_eq!(
        none,
        json!({ "runs": 0, "completed": 0, "failed": 0, "cancelled": 0, "active": 0, "successRate": null,
                "durationMs": { "p50": null, "p95": null, "max": null },
                "tokens": { "prompt": 0, "completion": 0 }, "steps": [] })
    );
    // Not a DateTime: refused before it runs, with a code.
    let bad = app.gql(&owner, STATS, json!({ "id": t, "since": "yesterday" })).await;
    assert!(bad["errors"][0]["extensions"]["code"].is_string(), "{bad}");
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
