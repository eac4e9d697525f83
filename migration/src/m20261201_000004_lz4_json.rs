//! PostgreSQL: LZ4 instead of pglz for the JSON columns that grow with a run
//! (`accumulatedContext`, a step record's input and output). Every step
//! rewrites `accumulatedContext` whole, so its compression is paid once per
//! step on a value that can reach megabytes; LZ4 costs about half of pglz
//! there. Only where the server was built with LZ4 (PostgreSQL 14 and
//! later); elsewhere, and on SQLite, nothing changes. Values already stored
//! keep their compression until rewritten.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000004_lz4_json"
    }
}

const COLUMNS: [(&str, &str); 3] = [
    ("workflow_executions", "accumulatedContext"),
    ("workflow_execution_steps", "agentInput"),
    ("workflow_execution_steps", "agentOutput"),
];

pub(crate) async fn lz4_available(db: &SchemaManagerConnection<'_>) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)",
        ))
        .await?;
    Ok(row.map(|r| r.try_get::<i64>("", "n")).transpose()?.unwrap_or(0) > 0)
}

async fn set_compression(manager: &SchemaManager<'_>, method: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    if db.get_database_backend() != DbBackend::Postgres || !lz4_available(db).await? {
        return Ok(());
    }
    for (table, column) in COLUMNS {
        db.execute_unprepared(&format!(
            r#"ALTER TABLE {table} ALTER COLUMN "{column}" SET COMPRESSION {method}"#
        ))
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_compression(manager, "lz4").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_compression(manager, "pglz").await
    }
}
