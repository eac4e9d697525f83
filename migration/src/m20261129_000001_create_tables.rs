//! The four workflow tables, two enums, eight foreign keys and sixteen
//! indexes of docs/domain.md ("Database tables"), plus `users`, `drives`
//! and `drive_members`.
//!
//! Written as SQL per backend because the two differ where it matters:
//! PostgreSQL gets native enums, `text[]` tags and JSONB; SQLite stores enums
//! as text and tags/JSON as JSON text. Names, columns and FK rules are the same.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261129_000001_create_tables"
    }
}

const POSTGRES_UP: &str = r#"
CREATE TYPE "WorkflowExecutionStatus" AS ENUM ('running', 'paused', 'completed', 'failed', 'cancelled');
CREATE TYPE "WorkflowExecutionStepStatus" AS ENUM ('pending', 'running', 'completed', 'failed', 'skipped');

CREATE TABLE users (
    "id"    text PRIMARY KEY,
    "name"  text,
    "email" text
);

CREATE TABLE drives (
    "id"        text PRIMARY KEY,
    "name"      text NOT NULL,
    "ownerId"   text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "createdAt" timestamp NOT NULL DEFAULT now()
);
CREATE INDEX drives_owner_id_idx ON drives ("ownerId");

CREATE TABLE drive_members (
    "id"        text PRIMARY KEY,
    "driveId"   text NOT NULL REFERENCES drives ("id") ON DELETE CASCADE,
    "userId"    text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "role"      text NOT NULL CHECK ("role" IN ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER')),
    "createdAt" timestamp NOT NULL DEFAULT now(),
    UNIQUE ("driveId", "userId")
);
CREATE INDEX drive_members_user_id_idx ON drive_members ("userId");

CREATE TABLE workflow_templates (
    "id"          text PRIMARY KEY,
    "name"        text NOT NULL,
    "description" text,
    "driveId"     text NOT NULL REFERENCES drives ("id") ON DELETE CASCADE,
    "createdBy"   text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "category"    text,
    "tags"        text[],
    "isPublic"    boolean NOT NULL DEFAULT false,
    "createdAt"   timestamp NOT NULL DEFAULT now(),
    "updatedAt"   timestamp NOT NULL DEFAULT now()
);
CREATE INDEX workflow_templates_drive_id_idx   ON workflow_templates ("driveId");
CREATE INDEX workflow_templates_created_by_idx ON workflow_templates ("createdBy");
CREATE INDEX workflow_templates_is_public_idx  ON workflow_templates ("isPublic");
CREATE INDEX workflow_templates_category_idx   ON workflow_templates ("category");

CREATE TABLE workflow_steps (
    "id"                 text PRIMARY KEY,
    "workflowTemplateId" text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "stepOrder"          integer NOT NULL,
    "agentId"            text NOT NULL,
    "promptTemplate"     text NOT NULL,
    "requiresUserInput"  boolean NOT NULL DEFAULT false,
    "inputSchema"        jsonb,
    "metadata"           jsonb,
    "condition"          jsonb,
    "createdAt"          timestamp NOT NULL DEFAULT now(),
    "updatedAt"          timestamp NOT NULL DEFAULT now()
);
CREATE INDEX workflow_steps_template_id_idx       ON workflow_steps ("workflowTemplateId");
CREATE INDEX workflow_steps_template_id_order_idx ON workflow_steps ("workflowTemplateId", "stepOrder");

CREATE TABLE workflow_executions (
    "id"                 text PRIMARY KEY,
    "workflowTemplateId" text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "userId"             text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "driveId"            text NOT NULL REFERENCES drives ("id") ON DELETE CASCADE,
    "status"             "WorkflowExecutionStatus" NOT NULL DEFAULT 'running',
    "currentStepOrder"   integer,
    "accumulatedContext" jsonb NOT NULL DEFAULT '{}'::jsonb,
    "startedAt"          timestamp,
    "pausedAt"           timestamp,
    "completedAt"        timestamp,
    "failedAt"           timestamp,
    "errorMessage"       text,
    "createdAt"          timestamp NOT NULL DEFAULT now(),
    "updatedAt"          timestamp NOT NULL DEFAULT now()
);
CREATE INDEX workflow_executions_template_id_idx     ON workflow_executions ("workflowTemplateId");
CREATE INDEX workflow_executions_user_id_idx         ON workflow_executions ("userId");
CREATE INDEX workflow_executions_drive_id_idx        ON workflow_executions ("driveId");
CREATE INDEX workflow_executions_status_idx          ON workflow_executions ("status");
CREATE INDEX workflow_executions_user_id_status_idx  ON workflow_executions ("userId", "status");
CREATE INDEX workflow_executions_drive_id_status_idx ON workflow_executions ("driveId", "status");

CREATE TABLE workflow_execution_steps (
    "id"                  text PRIMARY KEY,
    "workflowExecutionId" text NOT NULL REFERENCES workflow_executions ("id") ON DELETE CASCADE,
    "workflowStepId"      text REFERENCES workflow_steps ("id") ON DELETE SET NULL,
    "stepOrder"           integer NOT NULL,
    "status"              "WorkflowExecutionStepStatus" NOT NULL DEFAULT 'pending',
    "agentInput"          jsonb,
    "agentOutput"         jsonb,
    "userInput"           jsonb,
    "startedAt"           timestamp,
    "completedAt"         timestamp,
    "errorMessage"        text,
    "createdAt"           timestamp NOT NULL DEFAULT now(),
    "updatedAt"           timestamp NOT NULL DEFAULT now()
);
CREATE INDEX workflow_execution_steps_execution_id_idx       ON workflow_execution_steps ("workflowExecutionId");
CREATE INDEX workflow_execution_steps_step_id_idx            ON workflow_execution_steps ("workflowStepId");
CREATE INDEX workflow_execution_steps_status_idx             ON workflow_execution_steps ("status");
CREATE INDEX workflow_execution_steps_execution_id_order_idx ON workflow_execution_steps ("workflowExecutionId", "stepOrder");
"#;

const SQLITE_UP: &str = r#"
CREATE TABLE users (
    "id"    text PRIMARY KEY,
    "name"  text,
    "email" text
);

CREATE TABLE drives (
    "id"        text PRIMARY KEY,
    "name"      text NOT NULL,
    "ownerId"   text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "createdAt" text NOT NULL
);
CREATE INDEX drives_owner_id_idx ON drives ("ownerId");

CREATE TABLE drive_members (
    "id"        text PRIMARY KEY,
    "driveId"   text NOT NULL REFERENCES drives ("id") ON DELETE CASCADE,
    "userId"    text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "role"      text NOT NULL CHECK ("role" IN ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER')),
    "createdAt" text NOT NULL,
    UNIQUE ("driveId", "userId")
);
CREATE INDEX drive_members_user_id_idx ON drive_members ("userId");

CREATE TABLE workflow_templates (
    "id"          text PRIMARY KEY,
    "name"        text NOT NULL,
    "description" text,
    "driveId"     text NOT NULL REFERENCES drives ("id") ON DELETE CASCADE,
    "createdBy"   text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "category"    text,
    "tags"        text CHECK ("tags" IS NULL OR json_type("tags") = 'array'),
    "isPublic"    boolean NOT NULL DEFAULT 0,
    "createdAt"   text NOT NULL,
    "updatedAt"   text NOT NULL
);
CREATE INDEX workflow_templates_drive_id_idx   ON workflow_templates ("driveId");
CREATE INDEX workflow_templates_created_by_idx ON workflow_templates ("createdBy");
CREATE INDEX workflow_templates_is_public_idx  ON workflow_templates ("isPublic");
CREATE INDEX workflow_templates_category_idx   ON workflow_templates ("category");

CREATE TABLE workflow_steps (
    "id"                 text PRIMARY KEY,
    "workflowTemplateId" text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "stepOrder"          integer NOT NULL,
    "agentId"            text NOT NULL,
    "promptTemplate"     text NOT NULL,
    "requiresUserInput"  boolean NOT NULL DEFAULT 0,
    "inputSchema"        text,
    "metadata"           text,
    "condition"          text,
    "createdAt"          text NOT NULL,
    "updatedAt"          text NOT NULL
);
CREATE INDEX workflow_steps_template_id_idx       ON workflow_steps ("workflowTemplateId");
CREATE INDEX workflow_steps_template_id_order_idx ON workflow_steps ("workflowTemplateId", "stepOrder");

CREATE TABLE workflow_executions (
    "id"                 text PRIMARY KEY,
    "workflowTemplateId" text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "userId"             text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "driveId"            text NOT NULL REFERENCES drives ("id") ON DELETE CASCADE,
    "status"             text NOT NULL DEFAULT 'running'
                         CHECK ("status" IN ('running', 'paused', 'completed', 'failed', 'cancelled')),
    "currentStepOrder"   integer,
    "accumulatedContext" text NOT NULL DEFAULT '{}',
    "startedAt"          text,
    "pausedAt"           text,
    "completedAt"        text,
    "failedAt"           text,
    "errorMessage"       text,
    "createdAt"          text NOT NULL,
    "updatedAt"          text NOT NULL
);
CREATE INDEX workflow_executions_template_id_idx     ON workflow_executions ("workflowTemplateId");
CREATE INDEX workflow_executions_user_id_idx         ON workflow_executions ("userId");
CREATE INDEX workflow_executions_drive_id_idx        ON workflow_executions ("driveId");
CREATE INDEX workflow_executions_status_idx          ON workflow_executions ("status");
CREATE INDEX workflow_executions_user_id_status_idx  ON workflow_executions ("userId", "status");
CREATE INDEX workflow_executions_drive_id_status_idx ON workflow_executions ("driveId", "status");

CREATE TABLE workflow_execution_steps (
    "id"                  text PRIMARY KEY,
    "workflowExecutionId" text NOT NULL REFERENCES workflow_executions ("id") ON DELETE CASCADE,
    "workflowStepId"      text REFERENCES workflow_steps ("id") ON DELETE SET NULL,
    "stepOrder"           integer NOT NULL,
    "status"              text NOT NULL DEFAULT 'pending'
                          CHECK ("status" IN ('pending', 'running', 'completed', 'failed', 'skipped')),
    "agentInput"          text,
    "agentOutput"         text,
    "userInput"           text,
    "startedAt"           text,
    "completedAt"         text,
    "errorMessage"        text,
    "createdAt"           text NOT NULL,
    "updatedAt"           text NOT NULL
);
CREATE INDEX workflow_execution_steps_execution_id_idx       ON workflow_execution_steps ("workflowExecutionId");
CREATE INDEX workflow_execution_steps_step_id_idx            ON workflow_execution_steps ("workflowStepId");
CREATE INDEX workflow_execution_steps_status_idx             ON workflow_execution_steps ("status");
CREATE INDEX workflow_execution_steps_execution_id_order_idx ON workflow_execution_steps ("workflowExecutionId", "stepOrder");
"#;

const DOWN: &str = r#"
DROP TABLE workflow_execution_steps;
DROP TABLE workflow_executions;
DROP TABLE workflow_steps;
DROP TABLE workflow_templates;
DROP TABLE drive_members;
DROP TABLE drives;
DROP TABLE users;
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
        db.execute_unprepared(DOWN).await?;
        if db.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(r#"DROP TYPE "WorkflowExecutionStepStatus"; DROP TYPE "WorkflowExecutionStatus";"#)
                .await?;
        }
        Ok(())
    }
}
