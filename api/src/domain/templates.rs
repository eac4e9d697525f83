//! Workflow templates: create (with steps, in one transaction), update,
//! delete, and the filtered, paginated list.

use entity::Tags;
use entity::user;
use entity::workflow_template::{self as template, search_text};
use sea_orm::sea_query::extension::postgres::PgBinOper;
use sea_orm::sea_query::{Expr, ExprTrait, Func, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use super::pagination::{Cursor, Page, older_than};
use super::steps::{self, NewStep};
use super::{new_id, now, versions};

/// A validated template ready to be written.
#[derive(Debug, Clone)]
pub struct NewTemplate {
    pub drive_id: String,
    pub created_by: String,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub is_public: bool,
    pub steps: Vec<NewStep>,
    /// The template this one is a copy of.
    pub parent_template_id: Option<String>,
}

/// Validated changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TemplateChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub category: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub is_public: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct TemplateFilter {
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub is_public: Option<bool>,
    pub search: Option<String>,
    pub created_by: Option<String>,
}

pub async fn create(db: &DatabaseConnection, new: NewTemplate) -> Result<template::Model, DbErr> {
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    let at = now();
    let search_name = search_text(&new.name);
    let search_description = search_text(new.description.as_deref().unwrap_or_default());
    let row = template::Model {
        id: new_id(),
        name: new.name,
        description: new.description,
        drive_id: new.drive_id,
        created_by: new.created_by,
        category: new.category,
        tags: Tags(new.tags),
        is_public: new.is_public,
        version: 1,
        parent_template_id: new.parent_template_id,
        created_at: at,
        updated_at: at,
        search_name,
        search_description,
    };
    let insert = Query::insert()
        .into_table(template::Entity)
        .columns([
            template::Column::Id,
            template::Column::Name,
            template::Column::Description,
            template::Column::DriveId,
            template::Column::CreatedBy,
            template::Column::Category,
            template::Column::Tags,
            template::Column::IsPublic,
            template::Column::Version,
            template::Column::ParentTemplateId,
            template::Column::CreatedAt,
            template::Column::UpdatedAt,
            template::Column::SearchName,
            template::Column::SearchDescription,
        ])
        .values_panic([
            row.id.clone().into(),
            row.name.clone().into(),
            row.description.clone().into(),
            row.drive_id.clone().into(),
            row.created_by.clone().into(),
            row.category.clone().into(),
            row.tags.to_value(backend).into(),
            row.is_public.into(),
            row.version.into(),
            row.parent_template_id.clone().into(),
            at.into(),
            at.into(),
            row.search_name.clone().into(),
            row.search_description.clone().into(),
        ])
        .to_owned();
    txn.execute(&insert).await?;
    let steps = steps::insert_all(&txn, &row.id, new.steps, at).await?;
    versions::store(&txn, &row, &steps, &row.created_by).await?;
    txn.commit().await?;
    Ok(row)
}

/// Applies the changes as a new version, by `editor`.
pub async fn update(
    db: &DatabaseConnection,
    current: &template::Model,
    changes: TemplateChanges,
    editor: &str,
) -> Result<template::Model, DbErr> {
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    let mut stmt = Query::update();
    stmt.table(template::Entity)
        .and_where(template::Column::Id.eq(current.id.clone()))
        .value(template::Column::Version, Expr::col(template::Column::Version).add(1));
    // The search columns change in the same statement as what they fold.
    if let Some(name) = changes.name {
        stmt.value(template::Column::SearchName, search_text(&name));
        stmt.value(template::Column::Name, name);
    }
    if let Some(d) = changes.description {
        stmt.value(
            template::Column::SearchDescription,
            search_text(d.as_deref().unwrap_or_default()),
        );
        stmt.value(template::Column::Description, d);
    }
    if let Some(c) = changes.category {
        stmt.value(template::Column::Category, c);
    }
    if let Some(t) = changes.tags {
        stmt.value(template::Column::Tags, Tags(t).to_value(backend));
    }
    if let Some(p) = changes.is_public {
        stmt.value(template::Column::IsPublic, p);
    }
    stmt.value(template::Column::UpdatedAt, now());
    let res = txn.execute(&stmt).await?;
    if res.rows_affected() == 0 {
        return Err(DbErr::RecordNotFound(format!("workflow template {}", current.id)));
    }
    let next = versions::store_current(&txn, &current.id, editor).await?;
    txn.commit().await?;
    Ok(next)
}

/// Deletes the template; its steps and executions go with it (FK CASCADE).
pub async fn delete(db: &impl ConnectionTrait, id: &str) -> Result<bool, DbErr> {
    let res = template::Entity::delete_by_id(id.to_owned()).exec(db).await?;
    Ok(res.rows_affected > 0)
}

pub async fn find(db: &impl ConnectionTrait, id: &str) -> Result<Option<template::Model>, DbErr> {
    template::Entity::find_by_id(id.to_owned()).one(db).await
}

pub async fn find_many(db: &impl ConnectionTrait, ids: &[String]) -> Result<Vec<template::Model>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    template::Entity::find()
        .filter(template::Column::Id.is_in(ids.iter().cloned()))
        .all(db)
        .await
}

/// The WHERE clause of a template list: the drive, what `viewer` may see
/// (`visible_to`), and the client's filter.
pub fn list_condition(backend: DbBackend, drive_id: &str, viewer: &str, filter: &TemplateFilter) -> Condition {
    let mut cond = Condition::all()
        .add(template::Column::DriveId.eq(drive_id))
        .add(visible_to(backend, viewer));
    if let Some(c) = &filter.category {
        cond = cond.add(template::Column::Category.eq(c.clone()));
    }
    if let Some(p) = filter.is_public {
        cond = cond.add(template::Column::IsPublic.eq(p));
    }
    if let Some(u) = &filter.created_by {
        cond = cond.add(template::Column::CreatedBy.eq(u.clone()));
    }
    if let Some(s) = filter.search.as_deref().filter(|s| !s.is_empty()) {
        // Case-insensitive substring: the search, folded like the stored
        // columns, is found in one of them. A plain substring search, so `%`,
        // `_` and `\` are literal and no LIKE pattern limit applies.
        let needle = search_text(s);
        let position = match backend {
            DbBackend::Postgres => "strpos",
            _ => "instr",
        };
        let found = |col: template::Column| {
            Expr::expr(
                Func::cust(position)
                    .arg(Expr::col((template::Entity, col)))
                    .arg(needle.clone()),
            )
            .gt(0)
        };
        cond = cond.add(
            Condition::any()
                .add(found(template::Column::SearchName))
                .add(found(template::Column::SearchDescription)),
        );
    }
    if !filter.tags.is_empty() {
        match backend {
            DbBackend::Postgres => {
                let wanted = Tags(filter.tags.clone()).to_value(DbBackend::Postgres);
                cond = cond.add(Expr::col(template::Column::Tags).binary(PgBinOper::Contains, Expr::val(wanted)));
            }
            _ => {
                for tag in &filter.tags {
                    cond = cond.add(Expr::cust_with_values(
                        r#"EXISTS (SELECT 1 FROM json_each("workflow_templates"."tags") WHERE json_each.value = ?)"#,
                        [tag.clone()],
                    ));
                }
            }
        }
    }
    cond
}

/// The templates `user_id` may see, as the stored memberships say
/// (`Access::can_see_template`, decided in the statement rather than from
/// memberships read before it): any member sees the public ones, the
/// creator theirs, ADMIN and OWNER all.
fn visible_to(backend: DbBackend, user_id: &str) -> Condition {
    let sql = match backend {
        DbBackend::Postgres => {
            r#"EXISTS (SELECT 1 FROM "drive_members" m WHERE m."driveId" = "workflow_templates"."driveId" AND m."userId" = $1 AND (m."role" IN ('ADMIN', 'OWNER') OR "workflow_templates"."isPublic" OR "workflow_templates"."createdBy" = $1))"#
        }
        _ => {
            r#"EXISTS (SELECT 1 FROM "drive_members" m WHERE m."driveId" = "workflow_templates"."driveId" AND m."userId" = ? AND (m."role" IN ('ADMIN', 'OWNER') OR "workflow_templates"."isPublic" OR "workflow_templates"."createdBy" = ?))"#
        }
    };
    Condition::all().add(Expr::cust_with_values(sql, [user_id.to_owned(), user_id.to_owned()]))
}

/// A row of a page read by `page`: the template and its creator.
pub struct PageRow {
    pub template: template::Model,
    pub creator: Option<user::Model>,
}

/// One page, newest first, after `after`, in one statement, each template
/// with its creator (joined). Its steps are a second statement
/// (`steps::of_templates`): nested as JSON in this one, PostgreSQL spent
/// more building the JSON than the statement saved (BENCHMARKS.md).
pub async fn page(
    db: &impl ConnectionTrait,
    cond: Condition,
    first: u64,
    after: Option<&Cursor>,
) -> Result<Page<PageRow>, DbErr> {
    let mut query = template::Entity::find().filter(cond);
    if let Some(c) = after {
        query = query.filter(older_than(template::Column::CreatedAt, template::Column::Id, c));
    }
    let rows = query
        .find_also_related(user::Entity)
        .order_by_desc(template::Column::CreatedAt)
        .order_by_desc(template::Column::Id)
        .limit(first + 1)
        .all(db)
        .await?;
    let rows = rows
        .into_iter()
        .map(|(template, creator)| PageRow { template, creator })
        .collect();
    Ok(Page::of(rows, first, after))
}

pub async fn count(db: &impl ConnectionTrait, cond: Condition) -> Result<u64, DbErr> {
    template::Entity::find().filter(cond).count(db).await
}
