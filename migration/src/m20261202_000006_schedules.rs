//! Schedules (docs/schedules.md): `workflow_schedules`, cron schedules that start
//! runs of a template as their creator, and on `workflow_executions` the
//! schedule a run was started by (`scheduleId`, SET NULL) and the due time it
//! was started for (`scheduledFor`).
//!
//! The unique index on (`scheduleId`, `scheduledFor`) backs up the
//! scheduler's conditional claim: whatever happens, one due time of one
//! schedule has at most one run. The scheduler finds due schedules through
//! (`enabled`, `nextRunAt`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000006_schedules"
    }
}

const POSTGRES_UP: &str = r#"
CREATE TABLE workflow_schedules (
    "id"              text PRIMARY KEY,
    "templateId"      text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "driveId"         text NOT NULL REFERENCES drives ("id") ON DELETE CASCADE,
    "createdBy"       text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "cron"            text NOT NULL,
    "timezone"        text NOT NULL DEFAULT 'UTC',
    "context"         jsonb NOT NULL DEFAULT '{}'::jsonb,
    "enabled"         boolean NOT NULL DEFAULT true,
    "nextRunAt"       timestamp,
    "lastRunAt"       timestamp,
    "lastExecutionId" text REFERENCES workflow_executions ("id") ON DELETE SET NULL,
    "lastError"       text,
    "createdAt"       timestamp NOT NULL DEFAULT now(),
    "updatedAt"       timestamp NOT NULL DEFAULT now()
);
CREATE INDEX workflow_schedules_template_id_idx       ON workflow_schedules ("templateId");
CREATE INDEX workflow_schedules_drive_id_idx          ON workflow_schedules ("driveId");
CREATE INDEX workflow_schedules_created_by_idx        ON workflow_schedules ("createdBy");
CREATE INDEX workflow_schedules_last_execution_id_idx ON workflow_schedules ("lastExecutionId");
CREATE INDEX workflow_schedules_enabled_next_run_at_idx ON workflow_schedules ("enabled", "nextRunAt");

ALTER TABLE workflow_executions ADD COLUMN "scheduleId" text REFERENCES workflow_schedules ("id") ON DELETE SET NULL;
ALTER TABLE workflow_executions ADD COLUMN "scheduledFor" timestamp;
CREATE INDEX workflow_executions_schedule_id_idx ON workflow_executions ("scheduleId");
CREATE UNIQUE INDEX workflow_executions_schedule_id_scheduled_for_idx
    ON workflow_executions ("scheduleId", "scheduledFor");
"#;

const SQLITE_UP: &str = r#"
CREATE TABLE workflow_schedules (
    "id"              text PRIMARY KEY,
    "templateId"      text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "driveId"         text NOT NULL REFERENCES drives ("id") ON DELETE CASCADE,
    "createdBy"       text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "cron"            text NOT NULL,
    "timezone"        text NOT NULL DEFAULT 'UTC',
    "context"         text NOT NULL DEFAULT '{}',
    "enabled"         boolean NOT NULL DEFAULT 1,
    "nextRunAt"       text,
    "lastRunAt"       text,
    "lastExecutionId" text REFERENCES workflow_executions ("id") ON DELETE SET NULL,
    "lastError"       text,
    "createdAt"       text NOT NULL,
    "updatedAt"       text NOT NULL
);
CREATE INDEX workflow_schedules_template_id_idx       ON workflow_schedules ("templateId");
CREATE INDEX workflow_schedules_drive_id_idx          ON workflow_schedules ("driveId");
CREATE INDEX workflow_schedules_created_by_idx        ON workflow_schedules ("createdBy");
CREATE INDEX workflow_schedules_last_execution_id_idx ON workflow_schedules ("lastExecutionId");
CREATE INDEX workflow_schedules_enabled_next_run_at_idx ON workflow_schedules ("enabled", "nextRunAt");

ALTER TABLE workflow_executions ADD COLUMN "scheduleId" text REFERENCES workflow_schedules ("id") ON DELETE SET NULL;
ALTER TABLE workflow_executions ADD COLUMN "scheduledFor" text;
CREATE INDEX workflow_executions_schedule_id_idx ON workflow_executions ("scheduleId");
CREATE UNIQUE INDEX workflow_executions_schedule_id_scheduled_for_idx
    ON workflow_executions ("scheduleId", "scheduledFor");
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match db.get_database_backend() {
            DbBackend::Postgres => db.execute_unprepared(POSTGRES_UP).await?,
            DbBackend::Sqlite => db.execute_unprepared(SQLITE_UP).await?,
            other => return Err(DbErr::Migration(format!("unsupported database: {other:?}"))),
        };
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "DROP INDEX workflow_executions_schedule_id_scheduled_for_idx;
             DROP INDEX workflow_executions_schedule_id_idx;",
        )
        .await?;
        for col in ["scheduledFor", "scheduleId"] {
            db.execute_unprepared(&format!(r#"ALTER TABLE workflow_executions DROP COLUMN "{col}""#))
                .await?;
        }
        db.execute_unprepared("DROP TABLE workflow_schedules").await?;
        Ok(())
    }
}
