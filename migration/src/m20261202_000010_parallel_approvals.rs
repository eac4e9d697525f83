//! Parallel step groups and approvals (docs/runs.md, "Parallel groups", "Approvals"):
//! - `workflow_steps.parallelGroup`: adjacent steps sharing it run together;
//! - `workflow_steps.approval`: the rule of who must approve the step;
//! - `workflow_execution_approvals`: each decision on a step of a run
//!   (executionStepId CASCADE, userId CASCADE, one per step and user).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000010_parallel_approvals"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let pg = db.get_database_backend() == DbBackend::Postgres;
        let (json, ts, boolean) = if pg {
            ("jsonb", "timestamp NOT NULL DEFAULT now()", "boolean")
        } else {
            ("text", "text NOT NULL", "boolean")
        };
        for stmt in [
            r#"ALTER TABLE workflow_steps ADD COLUMN "parallelGroup" text"#.to_owned(),
            format!(r#"ALTER TABLE workflow_steps ADD COLUMN "approval" {json}"#),
            format!(
                r#"CREATE TABLE workflow_execution_approvals (
                    "id"              text PRIMARY KEY,
                    "executionStepId" text NOT NULL REFERENCES workflow_execution_steps ("id") ON DELETE CASCADE,
                    "userId"          text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
                    "approve"         {boolean} NOT NULL,
                    "comment"         text,
                    "createdAt"       {ts},
                    "updatedAt"       {ts}
                )"#
            ),
            r#"CREATE UNIQUE INDEX workflow_execution_approvals_step_user_key ON workflow_execution_approvals ("executionStepId", "userId")"#.to_owned(),
            r#"CREATE INDEX workflow_execution_approvals_user_id_idx ON workflow_execution_approvals ("userId")"#.to_owned(),
        ] {
            db.execute_unprepared(&stmt).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for stmt in [
            "DROP TABLE workflow_execution_approvals",
            r#"ALTER TABLE workflow_steps DROP COLUMN "approval""#,
            r#"ALTER TABLE workflow_steps DROP COLUMN "parallelGroup""#,
        ] {
            db.execute_unprepared(stmt).await?;
        }
        Ok(())
    }
}
