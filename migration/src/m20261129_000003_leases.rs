//! Ownership of running executions across instances and restarts:
//! - `leaseOwner` / `leaseExpiresAt`: the instance working on a RUNNING
//!   execution and until when; an expired lease may be taken over.
//! - `sequenceReserved`: the highest event number an owner may have handed
//!   out for streamed output (not stored one by one), so a new owner never
//!   reuses a number subscribers have seen.
//! - an index to find expired leases.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261129_000003_leases"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let ts = if db.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Postgres {
            "timestamp"
        } else {
            "text"
        };
        db.execute_unprepared(r#"ALTER TABLE workflow_executions ADD COLUMN "leaseOwner" text"#)
            .await?;
        db.execute_unprepared(&format!(
            r#"ALTER TABLE workflow_executions ADD COLUMN "leaseExpiresAt" {ts}"#
        ))
        .await?;
        db.execute_unprepared(
            r#"ALTER TABLE workflow_executions ADD COLUMN "sequenceReserved" bigint NOT NULL DEFAULT 0"#,
        )
        .await?;
        db.execute_unprepared(
            r#"CREATE INDEX workflow_executions_status_lease_idx ON workflow_executions ("status", "leaseExpiresAt")"#,
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX workflow_executions_status_lease_idx")
            .await?;
        for col in ["sequenceReserved", "leaseExpiresAt", "leaseOwner"] {
            db.execute_unprepared(&format!(r#"ALTER TABLE workflow_executions DROP COLUMN "{col}""#))
                .await?;
        }
        Ok(())
    }
}
