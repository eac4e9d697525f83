//! `workflow_templates.searchName` and `searchDescription`: name and
//! description folded by `entity::workflow_template::search_text`, so the
//! case-insensitive template search compares texts folded in Rust on both
//! databases instead of SQL `lower()` (ASCII-only on SQLite). Existing rows
//! are folded here, in Rust, for the same reason; the column add, the
//! backfill and the migration record commit together.

use entity::workflow_template::search_text;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000007_template_search"
    }
}

/// Rows read and rewritten per round trip of the backfill.
const BATCH: u64 = 500;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// In a transaction on SQLite too: a backfill cut short must not leave
    /// the columns behind without the migration recorded.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(r#"ALTER TABLE workflow_templates ADD COLUMN "searchName" text NOT NULL DEFAULT ''"#)
            .await?;
        db.execute_unprepared(
            r#"ALTER TABLE workflow_templates ADD COLUMN "searchDescription" text NOT NULL DEFAULT ''"#,
        )
        .await?;
        backfill(db).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(r#"ALTER TABLE workflow_templates DROP COLUMN "searchDescription""#)
            .await?;
        db.execute_unprepared(r#"ALTER TABLE workflow_templates DROP COLUMN "searchName""#)
            .await?;
        Ok(())
    }
}

/// Folds every template's name and description, `BATCH` rows at a time in
/// id order.
async fn backfill(db: &SchemaManagerConnection<'_>) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let mut after: Option<String> = None;
    loop {
        let mut select = Query::select();
        select
            .columns([Alias::new("id"), Alias::new("name"), Alias::new("description")])
            .from(Alias::new("workflow_templates"))
            .order_by(Alias::new("id"), Order::Asc)
            .limit(BATCH);
        if let Some(id) = &after {
            select.and_where(Expr::col(Alias::new("id")).gt(id.clone()));
        }
        let rows = db.query_all_raw(backend.build(&select)).await?;
        for row in &rows {
            let id: String = row.try_get("", "id")?;
            let name: String = row.try_get("", "name")?;
            let description: Option<String> = row.try_get("", "description")?;
            let update = Query::update()
                .table(Alias::new("workflow_templates"))
                .value(Alias::new("searchName"), search_text(&name))
                .value(
                    Alias::new("searchDescription"),
                    search_text(description.as_deref().unwrap_or_default()),
                )
                .and_where(Expr::col(Alias::new("id")).eq(id.clone()))
                .to_owned();
            db.execute_raw(backend.build(&update)).await?;
            after = Some(id);
        }
        if (rows.len() as u64) < BATCH {
            return Ok(());
        }
    }
}
