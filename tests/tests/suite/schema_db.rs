//! The database schema is the one docs/domain.md ("Database tables")
//! describes: enums, columns, the eight foreign keys with their CASCADE / SET
//! NULL rules, and the sixteen indexes; and the rules act as it says.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use workflows_tests::{TestApp, is_postgres};

use crate::{create_drive, create_template, echo};

async fn rows(app: &TestApp, sql: &str) -> Vec<sea_orm::QueryResult> {
    let db = app.db();
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn exec(app: &TestApp, sql: &str) -> Result<(), sea_orm::DbErr> {
    let db = app.db();
    db.execute_raw(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .map(|_| ())
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let r = rows(app, sql).await;
    r[0].try_get::<i64>("", "n").unwrap()
}

fn s(r: &sea_orm::QueryResult, col: &str) -> String {
    r.try_get::<String>("", col)
        .unwrap_or_else(|e| panic!("column {col}: {e}"))
}

/// (table, column) -> (referenced table, delete rule)
const FOREIGN_KEYS: [(&str, &str, &str, &str); 8] = [
    ("workflow_templates", "driveId", "drives", "CASCADE"),
    ("workflow_templates", "createdBy", "users", "CASCADE"),
    ("workflow_steps", "workflowTemplateId", "workflow_templates", "CASCADE"),
    (
        "workflow_executions",
        "workflowTemplateId",
        "workflow_templates",
        "CASCADE",
    ),
    ("workflow_executions", "userId", "users", "CASCADE"),
    ("workflow_executions", "driveId", "drives", "CASCADE"),
    (
        "workflow_execution_steps",
        "workflowExecutionId",
        "workflow_executions",
        "CASCADE",
    ),
    (
        "workflow_execution_steps",
        "workflowStepId",
        "workflow_steps",
        "SET NULL",
    ),
];

/// The foreign keys the later features add (docs/domain.md, "Database
/// tables"), each with its rule and its index.
const ROADMAP_FOREIGN_KEYS: [(&str, &str, &str, &str, &str); 9] = [
    (
        "workflow_execution_approvals",
        "executionStepId",
        "workflow_execution_steps",
        "CASCADE",
        "workflow_execution_approvals_step_user_key",
    ),
    (
        "workflow_execution_approvals",
        "userId",
        "users",
        "CASCADE",
        "workflow_execution_approvals_user_id_idx",
    ),
    (
        "workflow_executions",
        "scheduleId",
        "workflow_schedules",
        "SET NULL",
        "workflow_executions_schedule_id_idx",
    ),
    (
        "workflow_templates",
        "parentTemplateId",
        "workflow_templates",
        "SET NULL",
        "workflow_templates_parent_template_id_idx",
    ),
    (
        "workflow_template_versions",
        "templateId",
        "workflow_templates",
        "CASCADE",
        "workflow_template_versions_template_id_version_key",
    ),
    (
        "workflow_template_versions",
        "createdBy",
        "users",
        "CASCADE",
        "workflow_template_versions_created_by_idx",
    ),
    (
        "workflow_executions",
        "retryOfExecutionId",
        "workflow_executions",
        "SET NULL",
        "workflow_executions_retry_of_execution_id_idx",
    ),
    (
        "workflow_template_stats",
        "templateId",
        "workflow_templates",
        "CASCADE",
        "workflow_template_stats_template_id_hour_step_key",
    ),
    (
        "workflow_execution_stats",
        "templateId",
        "workflow_templates",
        "CASCADE",
        "workflow_execution_stats_template_id_started_at_idx",
    ),
];

const WORKFLOW_TABLES: [&str; 8] = [
    "workflow_templates",
    "workflow_steps",
    "workflow_executions",
    "workflow_execution_steps",
    "workflow_template_versions",
    "workflow_template_stats",
    "workflow_execution_stats",
    "workflow_execution_approvals",
];

/// index name -> (table, columns)
const INDEXES: [(&str, &str, &str); 16] = [
    ("workflow_templates_drive_id_idx", "workflow_templates", "driveId"),
    ("workflow_templates_created_by_idx", "workflow_templates", "createdBy"),
    ("workflow_templates_is_public_idx", "workflow_templates", "isPublic"),
    ("workflow_templates_category_idx", "workflow_templates", "category"),
    ("workflow_steps_template_id_idx", "workflow_steps", "workflowTemplateId"),
    (
        "workflow_steps_template_id_order_idx",
        "workflow_steps",
        "workflowTemplateId,stepOrder",
    ),
    (
        "workflow_executions_template_id_idx",
        "workflow_executions",
        "workflowTemplateId",
    ),
    ("workflow_executions_user_id_idx", "workflow_executions", "userId"),
    ("workflow_executions_drive_id_idx", "workflow_executions", "driveId"),
    ("workflow_executions_status_idx", "workflow_executions", "status"),
    (
        "workflow_executions_user_id_status_idx",
        "workflow_executions",
        "userId,status",
    ),
    (
        "workflow_executions_drive_id_status_idx",
        "workflow_executions",
        "driveId,status",
    ),
    (
        "workflow_execution_steps_execution_id_idx",
        "workflow_execution_steps",
        "workflowExecutionId",
    ),
    (
        "workflow_execution_steps_step_id_idx",
        "workflow_execution_steps",
        "workflowStepId",
    ),
    (
        "workflow_execution_steps_status_idx",
        "workflow_execution_steps",
        "status",
    ),
    (
        "workflow_execution_steps_execution_id_order_idx",
        "workflow_execution_steps",
        "workflowExecutionId,stepOrder",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_have_the_designed_delete_rules() {
    let app = TestApp::spawn().await;
    let sql = if is_postgres() {
        r#"SELECT c.conrelid::regclass::text AS tbl, a.attname::text AS col,
                  c.confrelid::regclass::text AS ref,
                  CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL'
                       WHEN 'a' THEN 'NO ACTION' WHEN 'r' THEN 'RESTRICT' WHEN 'd' THEN 'SET DEFAULT' END AS rule
           FROM pg_constraint c
           JOIN pg_namespace n ON n.oid = c.connamespace
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
           WHERE c.contype = 'f' AND n.nspname = current_schema()"#
    } else {
        r#"SELECT m.name AS tbl, p."from" AS col, p."table" AS ref, p.on_delete AS rule
           FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) p
           WHERE m.type = 'table'"#
    };
    let found: BTreeSet<(String, String, String, String)> = rows(&app, sql)
        .await
        .iter()
        .map(|r| (s(r, "tbl"), s(r, "col"), s(r, "ref"), s(r, "rule")))
        .collect();
    let on_workflow_tables: BTreeSet<_> = found
        .iter()
        .filter(|(t, ..)| WORKFLOW_TABLES.contains(&t.as_str()))
        .cloned()
        .collect();
    let expected: BTreeSet<(String, String, String, String)> = FOREIGN_KEYS
        .iter()
        .copied()
        .chain(ROADMAP_FOREIGN_KEYS.iter().map(|(t, c, r, d, _)| (*t, *c, *r, *d)))
        .map(|(t, c, r, d)| (t.to_string(), c.to_string(), r.to_string(), d.to_string()))
        .collect();
    assert_eq!(
        on_workflow_tables, expected,
        "the eight foreign keys of the design and those of the roadmap"
    );
    // And the tables the foreign keys need exist with their own keys.
    for (t, c, r) in [
        ("drives", "ownerId", "users"),
        ("drive_members", "driveId", "drives"),
        ("drive_members", "userId", "users"),
    ] {
        assert!(
            found.iter().any(|f| f.0 == t && f.1 == c && f.2 == r),
            "{t}.{c} -> {r} missing: {found:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixteen_design_indexes_exist() {
    let app = TestApp::spawn().await;
    let sql = if is_postgres() {
        r#"SELECT i.relname::text AS name, t.relname::text AS tbl,
                  string_agg(a.attname::text, ',' ORDER BY k.n) AS cols
           FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid
           JOIN pg_class t ON t.oid = x.indrelid
           JOIN pg_namespace ns ON ns.oid = t.relnamespace
           CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
           JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
           WHERE ns.nspname = current_schema()
           GROUP BY i.relname, t.relname"#
    } else {
        r#"SELECT m.name AS name, m.tbl_name AS tbl,
                  (SELECT group_concat(ii.name, ',') FROM
                     (SELECT name FROM pragma_index_info(m.name) ORDER BY seqno) ii) AS cols
           FROM sqlite_master m WHERE m.type = 'index' AND m.name NOT LIKE 'sqlite_autoindex%'"#
    };
    let found: BTreeMap<String, (String, String)> = rows(&app, sql)
        .await
        .iter()
        .map(|r| (s(r, "name"), (s(r, "tbl"), s(r, "cols"))))
        .collect();
    let mut missing = Vec::new();
    // Each later feature's foreign key is the first column of an index.
    for (table, col, _, _, name) in ROADMAP_FOREIGN_KEYS {
        match found.get(name) {
            Some((t, c)) => assert!(
                t == table && c.split(',').next() == Some(col),
                "index {name} does not lead with {table}.{col}: {t} {c}"
            ),
            None => missing.push(name),
        }
    }
    for (name, table, cols) in INDEXES {
        match found.get(name) {
            Some((t, c)) => assert_eq!(
                (t.as_str(), c.as_str()),
                (table, cols),
                "index {name} covers the wrong columns"
            ),
            None => missing.push(name),
        }
    }
    assert!(missing.is_empty(), "missing indexes {missing:?}; found {found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_enums_have_the_designed_values() {
    let app = TestApp::spawn().await;
    if is_postgres() {
        let found = rows(
            &app,
            r#"SELECT t.typname::text AS name, string_agg(e.enumlabel::text, ',' ORDER BY e.enumsortorder) AS labels
               FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
               GROUP BY t.typname"#,
        )
        .await;
        let found: BTreeMap<String, String> = found.iter().map(|r| (s(r, "name"), s(r, "labels"))).collect();
        assert_eq!(
            found.get("WorkflowExecutionStatus").map(String::as_str),
            Some("running,paused,completed,failed,cancelled"),
            "{found:?}"
        );
        assert_eq!(
            found.get("WorkflowExecutionStepStatus").map(String::as_str),
            Some("pending,running,completed,failed,skipped"),
            "{found:?}"
        );
        // The status columns use them, and the JSON columns are jsonb.
        let cols = rows(
            &app,
            r#"SELECT table_name::text AS tbl, column_name::text AS col, udt_name::text AS udt, is_nullable::text AS nullable
               FROM information_schema.columns WHERE table_schema = current_schema()"#,
        )
        .await;
        let cols: BTreeMap<(String, String), (String, String)> = cols
            .iter()
            .map(|r| ((s(r, "tbl"), s(r, "col")), (s(r, "udt"), s(r, "nullable"))))
            .collect();
        for (t, c, udt, nullable) in [
            ("workflow_executions", "status", "WorkflowExecutionStatus", "NO"),
            (
                "workflow_execution_steps",
                "status",
                "WorkflowExecutionStepStatus",
                "NO",
            ),
            ("workflow_templates", "tags", "_text", "YES"),
            ("workflow_templates", "isPublic", "bool", "NO"),
            ("workflow_templates", "createdAt", "timestamp", "NO"),
            ("workflow_steps", "stepOrder", "int4", "NO"),
            ("workflow_steps", "inputSchema", "jsonb", "YES"),
            ("workflow_steps", "metadata", "jsonb", "YES"),
            ("workflow_steps", "condition", "jsonb", "YES"),
            ("workflow_executions", "accumulatedContext", "jsonb", "NO"),
            ("workflow_executions", "currentStepOrder", "int4", "YES"),
            ("workflow_execution_steps", "workflowStepId", "text", "YES"),
            ("workflow_execution_steps", "agentInput", "jsonb", "YES"),
            ("workflow_execution_steps", "agentOutput", "jsonb", "YES"),
            ("workflow_execution_steps", "userInput", "jsonb", "YES"),
        ] {
            assert_eq!(
                cols.get(&(t.to_string(), c.to_string())),
                Some(&(udt.to_string(), nullable.to_string())),
                "{t}.{c}"
            );
        }
    } else {
        println!("SQLite: no enum types; checking the status CHECK constraints instead");
    }
    // On both databases a status outside the enum is refused.
    let (drive, template) = seed(&app).await;
    let bad = format!(
        r#"INSERT INTO workflow_executions ("id", "workflowTemplateId", "userId", "driveId", "status", "accumulatedContext", "createdAt", "updatedAt")
           VALUES ('bad-status', '{template}', 'owner', '{drive}', 'bogus', '{{}}', '{TS}', '{TS}')"#
    );
    assert!(exec(&app, &bad).await.is_err(), "status 'bogus' was accepted");
    for status in ["running", "paused", "completed", "failed", "cancelled"] {
        let ok = format!(
            r#"INSERT INTO workflow_executions ("id", "workflowTemplateId", "userId", "driveId", "status", "accumulatedContext", "createdAt", "updatedAt")
               VALUES ('e-{status}', '{template}', 'owner', '{drive}', '{status}', '{{}}', '{TS}', '{TS}')"#
        );
        exec(&app, &ok).await.unwrap_or_else(|e| panic!("{status}: {e}"));
    }
    let bad_step = format!(
        r#"INSERT INTO workflow_execution_steps ("id", "workflowExecutionId", "stepOrder", "status", "createdAt", "updatedAt")
           VALUES ('bad-step', 'e-running', 0, 'done', '{TS}', '{TS}')"#
    );
    assert!(exec(&app, &bad_step).await.is_err(), "step status 'done' was accepted");
    for status in ["pending", "running", "completed", "failed", "skipped"] {
        let ok = format!(
            r#"INSERT INTO workflow_execution_steps ("id", "workflowExecutionId", "stepOrder", "status", "createdAt", "updatedAt")
               VALUES ('s-{status}', 'e-running', 0, '{status}', '{TS}', '{TS}')"#
        );
        exec(&app, &ok).await.unwrap_or_else(|e| panic!("{status}: {e}"));
    }
}

const TS: &str = "2025-01-01 12:00:00";

/// A drive and a template with two steps, made through the API by `owner`.
async fn seed(app: &TestApp) -> (String, String) {
    let owner = app.user("owner").await;
    let drive = create_drive(app, &owner, "Drive").await;
    let t = create_template(
        app,
        &owner,
        &drive,
        json!({ "name": "T", "steps": [echo("a"), echo("b")] }),
    )
    .await;
    (drive, t["id"].as_str().unwrap().to_owned())
}

/// An execution of `template` by `owner` with one step record per template
/// step, written directly (executions cannot be started through the API yet).
async fn insert_execution(app: &TestApp, id: &str, drive: &str, template: &str, steps: &[String]) {
    exec(
        app,
        &format!(
            r#"INSERT INTO workflow_executions ("id", "workflowTemplateId", "userId", "driveId", "status", "currentStepOrder", "accumulatedContext", "startedAt", "pausedAt", "createdAt", "updatedAt")
               VALUES ('{id}', '{template}', 'owner', '{drive}', 'paused', 0, '{{}}', '{TS}', '{TS}', '{TS}', '{TS}')"#
        ),
    )
    .await
    .unwrap();
    for (i, step) in steps.iter().enumerate() {
        exec(
            app,
            &format!(
                r#"INSERT INTO workflow_execution_steps ("id", "workflowExecutionId", "workflowStepId", "stepOrder", "status", "createdAt", "updatedAt")
                   VALUES ('{id}-{i}', '{id}', '{step}', {i}, 'pending', '{TS}', '{TS}')"#
            ),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_cascade_and_a_deleted_step_is_set_null() {
    let app = TestApp::spawn().await;
    let (drive, template) = seed(&app).await;
    let owner = app.token("owner");
    let steps: Vec<String> = crate::steps_of(&app, &owner, &template)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    insert_execution(&app, "exec-1", &drive, &template, &steps).await;

    let query = "query($id: ID!) { workflowExecution(id: $id) { id status steps { stepOrder workflowStepId stepDefinition { id } } } }";
    let data = app.ok(&owner, query, json!({ "id": "exec-1" })).await;
    assert_eq!(data["workflowExecution"]["status"], "PAUSED", "{data}");
    assert_eq!(
        data["workflowExecution"]["steps"][0]["workflowStepId"],
        steps[0].as_str(),
        "{data}"
    );
    assert_eq!(
        data["workflowExecution"]["steps"][0]["stepDefinition"]["id"],
        steps[0].as_str(),
        "{data}"
    );

    // Deleting the template step: the execution step stays, workflowStepId NULL.
    app.ok(
        &owner,
        "mutation($id: ID!) { deleteWorkflowStep(id: $id) }",
        json!({ "id": steps[0] }),
    )
    .await;
    let null_refs = count(
        &app,
        r#"SELECT COUNT(*) AS n FROM workflow_execution_steps WHERE "id" = 'exec-1-0' AND "workflowStepId" IS NULL"#,
    )
    .await;
    assert_eq!(null_refs, 1, "workflowStepId set to NULL");
    let still = count(
        &app,
        &format!(
            r#"SELECT COUNT(*) AS n FROM workflow_execution_steps WHERE "id" = 'exec-1-1' AND "workflowStepId" = '{}'"#,
            steps[1]
        ),
    )
    .await;
    assert_eq!(still, 1, "the other step record is untouched");
    let data = app.ok(&owner, query, json!({ "id": "exec-1" })).await;
    let s = &data["workflowExecution"]["steps"];
    assert_eq!(s.as_array().unwrap().len(), 2, "{data}");
    assert!(s[0]["workflowStepId"].is_null(), "{data}");
    assert!(s[0]["stepDefinition"].is_null(), "{data}");
    assert_eq!(s[1]["stepDefinition"]["id"], steps[1].as_str(), "{data}");

    // Deleting the template takes its steps, executions and their step records.
    app.ok(
        &owner,
        "mutation($id: ID!) { deleteWorkflowTemplate(id: $id) }",
        json!({ "id": template }),
    )
    .await;
    for (table, col) in [
        ("workflow_steps", "workflowTemplateId"),
        ("workflow_executions", "workflowTemplateId"),
    ] {
        let n = count(
            &app,
            &format!(r#"SELECT COUNT(*) AS n FROM {table} WHERE "{col}" = '{template}'"#),
        )
        .await;
        assert_eq!(n, 0, "{table} rows of the deleted template");
    }
    let n = count(
        &app,
        r#"SELECT COUNT(*) AS n FROM workflow_execution_steps WHERE "workflowExecutionId" = 'exec-1'"#,
    )
    .await;
    assert_eq!(n, 0, "execution step records of the deleted template");
    let data = app.ok(&owner, query, json!({ "id": "exec-1" })).await;
    assert!(data["workflowExecution"].is_null(), "{data}");

    // Deleting a drive (no API for it yet) takes its templates and executions;
    // deleting a user takes their templates and executions.
    let t2 = create_template(&app, &owner, &drive, json!({ "name": "T2", "steps": [echo("x")] })).await;
    let t2_id = t2["id"].as_str().unwrap().to_owned();
    let t2_steps = vec![t2["steps"][0]["id"].as_str().unwrap().to_owned()];
    insert_execution(&app, "exec-2", &drive, &t2_id, &t2_steps).await;
    exec(&app, &format!(r#"DELETE FROM drives WHERE "id" = '{drive}'"#))
        .await
        .unwrap();
    for table in [
        "workflow_templates",
        "workflow_steps",
        "workflow_executions",
        "workflow_execution_steps",
    ] {
        assert_eq!(
            count(&app, &format!("SELECT COUNT(*) AS n FROM {table}")).await,
            0,
            "{table} after deleting the drive"
        );
    }

    let other = app.user("other").await;
    let drive2 = create_drive(&app, &other, "Other's").await;
    add_owner_member(&app, &other, &drive2).await;
    let t3 = create_template(&app, &owner, &drive2, json!({ "name": "T3", "steps": [echo("y")] })).await;
    let t3_id = t3["id"].as_str().unwrap().to_owned();
    let t3_steps = vec![t3["steps"][0]["id"].as_str().unwrap().to_owned()];
    insert_execution(&app, "exec-3", &drive2, &t3_id, &t3_steps).await;
    exec(&app, r#"DELETE FROM users WHERE "id" = 'owner'"#).await.unwrap();
    for table in [
        "workflow_templates",
        "workflow_steps",
        "workflow_executions",
        "workflow_execution_steps",
    ] {
        assert_eq!(
            count(&app, &format!("SELECT COUNT(*) AS n FROM {table}")).await,
            0,
            "{table} after deleting the user"
        );
    }
    assert_eq!(
        count(
            &app,
            &format!(r#"SELECT COUNT(*) AS n FROM drives WHERE "id" = '{drive2}'"#)
        )
        .await,
        1
    );
}

/// Makes `owner` (the user) a MEMBER of `drive` owned by `by`.
async fn add_owner_member(app: &TestApp, by: &str, drive: &str) {
    crate::add_member(app, by, drive, "owner", "MEMBER").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_is_the_one_asked_for() {
    let app = TestApp::spawn().await;
    let expected = if is_postgres() {
        DbBackend::Postgres
    } else {
        DbBackend::Sqlite
    };
    assert_eq!(app.db().get_database_backend(), expected);
    if !is_postgres() {
        println!("running on SQLite; set TEST_DATABASE_URL=postgres://… for the PostgreSQL checks");
    }
}
