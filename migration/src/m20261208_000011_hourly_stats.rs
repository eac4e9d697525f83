//! Template statistics exact to the instant (docs/statistics.md:
//! `stats(since:)` counts the runs that started since `since`), replacing
//! the daily roll-ups of m20261202_000009:
//! - `workflow_execution_stats`: what each finished run (`stepOrder` -1) and
//!   step adds, with the run's exact `startedAt`; inserted by the write that
//!   finishes it (a plain insert: concurrent runs share no row, which is
//!   what the 64 shards were for). `folded` once added to its hour below.
//!   templateId CASCADE; no foreign key to the execution, so the retention
//!   sweep deleting a run leaves what it added.
//! - `workflow_template_stats` now per template, UTC *hour* of the run's
//!   start and step, one row each (no shards: only the fold writes it).
//!   Each day's 64 daily shard rows become one row at 00:00 UTC of the day.
//!
//! Indexes: (templateId, startedAt) for the partial first hour of a `since`;
//! the rows not yet folded by template (what reads add to the roll-ups, and
//! what the fold takes); the folded ones by start (what the retention sweep
//! deletes).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261208_000011_hourly_stats"
    }
}

/// Column types by backend: (bigint, json, timestamp, boolean, empty JSON).
fn types(pg: bool) -> (&'static str, &'static str, &'static str, &'static str, &'static str) {
    if pg {
        ("bigint", "jsonb", "timestamp", "boolean", "'{}'::jsonb")
    } else {
        ("integer", "text", "text", "boolean", "'{}'")
    }
}

fn roll_up_table(pg: bool, key: &str, key_type: &str, shard: bool) -> String {
    let (int, json, ts, _, empty) = types(pg);
    let now = if pg { " DEFAULT now()" } else { "" };
    let shard = if shard {
        "\n    \"shard\"            integer NOT NULL DEFAULT 0,".to_owned()
    } else {
        String::new()
    };
    format!(
        r#"CREATE TABLE workflow_template_stats (
    "id"               text PRIMARY KEY,
    "templateId"       text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "{key}"            {key_type} NOT NULL,
    "stepOrder"        integer NOT NULL,{shard}
    "completed"        {int} NOT NULL DEFAULT 0,
    "failed"           {int} NOT NULL DEFAULT 0,
    "cancelled"        {int} NOT NULL DEFAULT 0,
    "skipped"          {int} NOT NULL DEFAULT 0,
    "attempts"         {int} NOT NULL DEFAULT 0,
    "promptTokens"     {int} NOT NULL DEFAULT 0,
    "completionTokens" {int} NOT NULL DEFAULT 0,
    "durations"        {json} NOT NULL DEFAULT {empty},
    "durationMaxMs"    {int},
    "createdAt"        {ts} NOT NULL{now},
    "updatedAt"        {ts} NOT NULL{now}
)"#
    )
}

/// The sums of `src` rows grouped by (templateId, `key`, stepOrder), their
/// duration histograms merged bucket by bucket, as the values of an insert
/// into workflow_template_stats (`id`, the key, then the columns).
/// `src` has the roll-up columns plus `k` (the new key).
fn merged(pg: bool, src: &str) -> String {
    let each = if pg {
        r#"SELECT d.key AS b, SUM(CAST(d.value AS bigint)) AS n FROM src i, jsonb_each_text(i."durations") d"#
    } else {
        r#"SELECT d.key AS b, SUM(d.value) AS n FROM src i, json_each(i."durations") d"#
    };
    let agg = if pg {
        "COALESCE(jsonb_object_agg(b, n), '{}'::jsonb)"
    } else {
        "COALESCE(json_group_object(b, n), '{}')"
    };
    let id = if pg {
        r#"o."templateId" || ':' || CAST(o.k AS text) || ':' || CAST(o."stepOrder" AS text)"#
    } else {
        r#"o."templateId" || ':' || o.k || ':' || o."stepOrder""#
    };
    format!(
        r#"WITH src AS ({src})
        SELECT {id}, o."templateId", o.k, o."stepOrder",
               SUM(o."completed"), SUM(o."failed"), SUM(o."cancelled"), SUM(o."skipped"), SUM(o."attempts"),
               SUM(o."promptTokens"), SUM(o."completionTokens"),
               (SELECT {agg} FROM ({each}
                  WHERE i."templateId" = o."templateId" AND i.k = o.k AND i."stepOrder" = o."stepOrder"
                  GROUP BY d.key) x),
               MAX(o."durationMaxMs"), MIN(o."createdAt"), MAX(o."updatedAt")
        FROM src o GROUP BY o."templateId", o.k, o."stepOrder""#
    )
}

const COLUMNS: &str = r#""completed", "failed", "cancelled", "skipped", "attempts", "promptTokens", "completionTokens", "durations", "durationMaxMs", "createdAt", "updatedAt""#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let pg = db.get_database_backend() == DbBackend::Postgres;
        let (int, _, ts, boolean, _) = types(pg);
        let now = if pg { " DEFAULT now()" } else { "" };
        let midnight = if pg {
            r#"CAST("day" AS timestamp)"#
        } else {
            r#""day" || ' 00:00:00'"#
        };
        let mut stmts = vec![
            format!(
                r#"CREATE TABLE workflow_execution_stats (
    "id"               text PRIMARY KEY,
    "templateId"       text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "executionId"      text NOT NULL,
    "startedAt"        {ts} NOT NULL,
    "stepOrder"        integer NOT NULL,
    "completed"        {int} NOT NULL DEFAULT 0,
    "failed"           {int} NOT NULL DEFAULT 0,
    "cancelled"        {int} NOT NULL DEFAULT 0,
    "skipped"          {int} NOT NULL DEFAULT 0,
    "attempts"         {int} NOT NULL DEFAULT 0,
    "promptTokens"     {int} NOT NULL DEFAULT 0,
    "completionTokens" {int} NOT NULL DEFAULT 0,
    "durationMs"       {int},
    "durationBucket"   integer,
    "folded"           {boolean} NOT NULL DEFAULT false,
    "createdAt"        {ts} NOT NULL{now}
)"#
            ),
            r#"CREATE INDEX workflow_execution_stats_template_id_started_at_idx ON workflow_execution_stats ("templateId", "startedAt")"#.to_owned(),
            r#"CREATE INDEX workflow_execution_stats_unfolded_idx ON workflow_execution_stats ("templateId") WHERE NOT "folded""#.to_owned(),
            r#"CREATE INDEX workflow_execution_stats_folded_started_at_idx ON workflow_execution_stats ("startedAt") WHERE "folded""#.to_owned(),
            "ALTER TABLE workflow_template_stats RENAME TO workflow_template_daily_stats".to_owned(),
        ];
        if pg {
            // The new table's primary key takes the old one's name.
            stmts.push(
                "ALTER INDEX workflow_template_stats_pkey RENAME TO workflow_template_daily_stats_pkey".to_owned(),
            );
        }
        stmts.extend([
            roll_up_table(pg, "hour", ts, false),
            format!(
                r#"INSERT INTO workflow_template_stats ("id", "templateId", "hour", "stepOrder", {COLUMNS}) {}"#,
                merged(pg, &format!(r#"SELECT *, {midnight} AS k FROM workflow_template_daily_stats"#))
            ),
            "DROP TABLE workflow_template_daily_stats".to_owned(),
            r#"CREATE UNIQUE INDEX workflow_template_stats_template_id_hour_step_key ON workflow_template_stats ("templateId", "hour", "stepOrder")"#.to_owned(),
        ]);
        for stmt in stmts {
            db.execute_unprepared(&stmt).await?;
        }
        Ok(())
    }

    /// Back to daily roll-ups (all in shard 0), the rows not yet folded
    /// added in, so nothing counted is lost.
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let pg = db.get_database_backend() == DbBackend::Postgres;
        let (day_of_hour, day_of_start, one_bucket) = if pg {
            (
                r#"CAST("hour" AS date)"#,
                r#"CAST("startedAt" AS date)"#,
                r#"CASE WHEN "durationBucket" IS NULL THEN '{}'::jsonb ELSE jsonb_build_object(CAST("durationBucket" AS text), 1) END"#,
            )
        } else {
            (
                r#"substr("hour", 1, 10)"#,
                r#"substr("startedAt", 1, 10)"#,
                r#"CASE WHEN "durationBucket" IS NULL THEN '{}' ELSE json_object(CAST("durationBucket" AS text), 1) END"#,
            )
        };
        let src = format!(
            r#"SELECT "templateId", "stepOrder", {COLUMNS}, {day_of_hour} AS k FROM workflow_template_hourly_stats
               UNION ALL
               SELECT "templateId", "stepOrder", "completed", "failed", "cancelled", "skipped", "attempts",
                      "promptTokens", "completionTokens", {one_bucket}, "durationMs", "createdAt", "createdAt",
                      {day_of_start}
               FROM workflow_execution_stats WHERE NOT "folded""#
        );
        let mut stmts = vec![
            "DROP INDEX workflow_template_stats_template_id_hour_step_key".to_owned(),
            "ALTER TABLE workflow_template_stats RENAME TO workflow_template_hourly_stats".to_owned(),
        ];
        if pg {
            stmts.push(
                "ALTER INDEX workflow_template_stats_pkey RENAME TO workflow_template_hourly_stats_pkey".to_owned(),
            );
        }
        stmts.extend([
            roll_up_table(pg, "day", if pg { "date" } else { "text" }, true),
            format!(
                r#"INSERT INTO workflow_template_stats ("id", "templateId", "day", "stepOrder", {COLUMNS}) {}"#,
                merged(pg, &src)
            ),
            "DROP TABLE workflow_template_hourly_stats".to_owned(),
            "DROP TABLE workflow_execution_stats".to_owned(),
            r#"CREATE UNIQUE INDEX workflow_template_stats_template_id_day_step_key ON workflow_template_stats ("templateId", "day", "stepOrder", "shard")"#.to_owned(),
        ]);
        for stmt in stmts {
            db.execute_unprepared(&stmt).await?;
        }
        Ok(())
    }
}
