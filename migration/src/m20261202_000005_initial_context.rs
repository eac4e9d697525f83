//! `workflow_executions.initialContext`: the context a run started with.
//! Other instances rebuild a run's first state from it (the accumulated
//! context has moved on by the time they read it), and a retry starts from it.
//! Existing runs get their accumulated context without the keys steps added
//! (`step_N_output`, `step_N_input`): what they started with.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000005_initial_context"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(
                r#"ALTER TABLE workflow_executions ADD COLUMN "initialContext" jsonb NOT NULL DEFAULT '{}'::jsonb"#,
            )
            .await?;
            db.execute_unprepared(
                r#"UPDATE workflow_executions SET "initialContext" = (
                     SELECT COALESCE(jsonb_object_agg(key, value), '{}'::jsonb)
                     FROM jsonb_each("accumulatedContext")
                     WHERE key !~ '^step_[0-9]+_(output|input)$')"#,
            )
            .await?;
            if crate::m20261201_000004_lz4_json::lz4_available(db).await? {
                db.execute_unprepared(
                    r#"ALTER TABLE workflow_executions ALTER COLUMN "initialContext" SET COMPRESSION lz4"#,
                )
                .await?;
            }
        } else {
            db.execute_unprepared(
                r#"ALTER TABLE workflow_executions ADD COLUMN "initialContext" text NOT NULL DEFAULT '{}'"#,
            )
            .await?;
            db.execute_unprepared(
                r#"UPDATE workflow_executions SET "initialContext" = (
                     SELECT COALESCE(json_group_object(key, value), '{}')
                     FROM json_each("accumulatedContext")
                     WHERE NOT (key GLOB 'step_[0-9]*_output' OR key GLOB 'step_[0-9]*_input'))"#,
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(r#"ALTER TABLE workflow_executions DROP COLUMN "initialContext""#)
            .await?;
        Ok(())
    }
}
