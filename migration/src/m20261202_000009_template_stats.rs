//! Template analytics and retention (docs/statistics.md):
//! - `workflow_template_stats`: roll-ups per template, UTC day (of the run's
//!   start) and step (`stepOrder` -1 holds the run as a whole), added to in
//!   the same write that finishes a run or a step, so they outlive the rows
//!   the retention sweep deletes. `durations` maps a histogram bucket to its
//!   count (sparse, merged key by key); templateId CASCADE like the template's
//!   other rows, indexed by the unique key it leads. `shard` (0–63, from the
//!   run's id) splits each roll-up over 64 rows, so concurrent runs of one
//!   template do not all wait on one row's lock; reads sum the shards.
//! - an index on `workflow_executions (status, updatedAt)` for the sweep.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000009_template_stats"
    }
}

const POSTGRES: &str = r#"
CREATE TABLE workflow_template_stats (
    "id"               text PRIMARY KEY,
    "templateId"       text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "day"              date NOT NULL,
    "stepOrder"        integer NOT NULL,
    "shard"            integer NOT NULL DEFAULT 0,
    "completed"        bigint NOT NULL DEFAULT 0,
    "failed"           bigint NOT NULL DEFAULT 0,
    "cancelled"        bigint NOT NULL DEFAULT 0,
    "skipped"          bigint NOT NULL DEFAULT 0,
    "attempts"         bigint NOT NULL DEFAULT 0,
    "promptTokens"     bigint NOT NULL DEFAULT 0,
    "completionTokens" bigint NOT NULL DEFAULT 0,
    "durations"        jsonb NOT NULL DEFAULT '{}'::jsonb,
    "durationMaxMs"    bigint,
    "createdAt"        timestamp NOT NULL DEFAULT now(),
    "updatedAt"        timestamp NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX workflow_template_stats_template_id_day_step_key ON workflow_template_stats ("templateId", "day", "stepOrder", "shard");
CREATE INDEX workflow_executions_status_updated_at_idx ON workflow_executions ("status", "updatedAt");
"#;

const SQLITE: &str = r#"
CREATE TABLE workflow_template_stats (
    "id"               text PRIMARY KEY,
    "templateId"       text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "day"              text NOT NULL,
    "stepOrder"        integer NOT NULL,
    "shard"            integer NOT NULL DEFAULT 0,
    "completed"        integer NOT NULL DEFAULT 0,
    "failed"           integer NOT NULL DEFAULT 0,
    "cancelled"        integer NOT NULL DEFAULT 0,
    "skipped"          integer NOT NULL DEFAULT 0,
    "attempts"         integer NOT NULL DEFAULT 0,
    "promptTokens"     integer NOT NULL DEFAULT 0,
    "completionTokens" integer NOT NULL DEFAULT 0,
    "durations"        text NOT NULL DEFAULT '{}',
    "durationMaxMs"    integer,
    "createdAt"        text NOT NULL,
    "updatedAt"        text NOT NULL
);
CREATE UNIQUE INDEX workflow_template_stats_template_id_day_step_key ON workflow_template_stats ("templateId", "day", "stepOrder", "shard");
CREATE INDEX workflow_executions_status_updated_at_idx ON workflow_executions ("status", "updatedAt");
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let ddl = match db.get_database_backend() {
            DbBackend::Postgres => POSTGRES,
            _ => SQLITE,
        };
        for stmt in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            db.execute_unprepared(stmt).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for stmt in [
            "DROP INDEX workflow_executions_status_updated_at_idx",
            "DROP TABLE workflow_template_stats",
        ] {
            db.execute_unprepared(stmt).await?;
        }
        Ok(())
    }
}
