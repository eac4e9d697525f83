//! What the runner needs beyond the first columns (docs/domain.md, "Database tables"):
//! - `workflow_executions.sequence`: the number of the last event published
//!   for the execution, so subscribers get gap-free sequences that survive
//!   restarts;
//! - `workflow_execution_steps.definition`: the template step as it was when
//!   the run started, so editing or deleting steps never changes a run.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261129_000002_execution_runtime"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let json = if db.get_database_backend() == DbBackend::Postgres {
            "jsonb"
        } else {
            "text"
        };
        db.execute_unprepared(r#"ALTER TABLE workflow_executions ADD COLUMN "sequence" bigint NOT NULL DEFAULT 0"#)
            .await?;
        db.execute_unprepared(&format!(
            r#"ALTER TABLE workflow_execution_steps ADD COLUMN "definition" {json}"#
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(r#"ALTER TABLE workflow_execution_steps DROP COLUMN "definition""#)
            .await?;
        db.execute_unprepared(r#"ALTER TABLE workflow_executions DROP COLUMN "sequence""#)
            .await?;
        Ok(())
    }
}
