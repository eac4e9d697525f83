//! Template versions: every change to a template or its steps bumps its
//! `version` and stores the whole template as it now is, in the change's own
//! transaction (a change that fails stores no version). A run may start from
//! any stored version; a version may be made current again (restore).

use entity::{workflow_step as step, workflow_template as template, workflow_template_version as version};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, QueryFilter,
    Statement,
};
use serde::{Deserialize, Serialize};

use super::{new_id, now};
use crate::core::definition::{ApprovalRule, StepDefinition};

/// One step as a version stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionStep {
    /// The template step it was (it may have been deleted since).
    pub id: String,
    pub step_order: i32,
    #[serde(flatten)]
    pub definition: StepDefinition,
}

impl From<&step::Model> for VersionStep {
    fn from(s: &step::Model) -> Self {
        Self {
            id: s.id.clone(),
            step_order: s.step_order,
            definition: StepDefinition::from(s),
        }
    }
}

/// A stored version's steps.
pub fn steps_of(v: &version::Model) -> Result<Vec<VersionStep>, DbErr> {
    serde_json::from_value(v.steps.clone()).map_err(|e| {
        DbErr::Custom(format!(
            "version {} of template {} has unreadable steps: {e}",
            v.version, v.template_id
        ))
    })
}

/// Bumps the template's version (taking its row lock for the rest of the
/// transaction); false when the template is gone.
pub async fn bump(db: &impl ConnectionTrait, template_id: &str) -> Result<bool, DbErr> {
    let stmt = Query::update()
        .table(template::Entity)
        .value(template::Column::Version, Expr::col(template::Column::Version).add(1))
        .value(template::Column::UpdatedAt, now())
        .and_where(template::Column::Id.eq(template_id))
        .to_owned();
    Ok(db.execute(&stmt).await?.rows_affected() > 0)
}

/// Stores the template as it now is (after the change's writes, in its
/// transaction) as its current version; returns the template row.
pub async fn store_current(
    db: &impl ConnectionTrait,
    template_id: &str,
    editor: &str,
) -> Result<template::Model, DbErr> {
    let row = template::Entity::find_by_id(template_id.to_owned())
        .one(db)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("workflow template {template_id}")))?;
    let steps = super::step_rows::of_templates(db, &[template_id.to_owned()]).await?;
    store(db, &row, &steps, editor).await?;
    Ok(row)
}

/// Stores `row` with `steps` as version `row.version`.
pub async fn store(
    db: &impl ConnectionTrait,
    row: &template::Model,
    steps: &[step::Model],
    editor: &str,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let steps: Vec<VersionStep> = steps.iter().map(VersionStep::from).collect();
    let at = now();
    let insert = Query::insert()
        .into_table(version::Entity)
        .columns([
            version::Column::Id,
            version::Column::TemplateId,
            version::Column::Version,
            version::Column::Name,
            version::Column::Description,
            version::Column::Category,
            version::Column::Tags,
            version::Column::Steps,
            version::Column::CreatedBy,
            version::Column::CreatedAt,
            version::Column::UpdatedAt,
        ])
        .values_panic([
            new_id().into(),
            row.id.clone().into(),
            row.version.into(),
            row.name.clone().into(),
            row.description.clone().into(),
            row.category.clone().into(),
            row.tags.to_value(backend).into(),
            serde_json::to_value(&steps).expect("steps serialize").into(),
            editor.to_owned().into(),
            at.into(),
            at.into(),
        ])
        .to_owned();
    db.execute(&insert).await?;
    Ok(())
}

pub async fn find(db: &impl ConnectionTrait, template_id: &str, number: i32) -> Result<Option<version::Model>, DbErr> {
    version::Entity::find()
        .filter(version::Column::TemplateId.eq(template_id))
        .filter(version::Column::Version.eq(number))
        .one(db)
        .await
}

/// For each template, its versions newest first: at most `first + 1` below
/// version `before` (all when `None`), in one statement for all templates.
pub async fn pages(
    db: &impl ConnectionTrait,
    template_ids: &[String],
    first: u64,
    before: Option<i32>,
) -> Result<Vec<version::Model>, DbErr> {
    if template_ids.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let mut values: Vec<sea_orm::Value> = Vec::new();
    let param = |v: sea_orm::Value, values: &mut Vec<sea_orm::Value>| {
        values.push(v);
        match backend {
            DbBackend::Postgres => format!("${}", values.len()),
            _ => "?".to_owned(),
        }
    };
    let ids: Vec<String> = template_ids
        .iter()
        .map(|id| param(id.clone().into(), &mut values))
        .collect();
    let before_clause = match before {
        Some(b) => format!(r#"AND "version" < {}"#, param(b.into(), &mut values)),
        None => String::new(),
    };
    let limit = param(((first + 1) as i64).into(), &mut values);
    let sql = format!(
        r#"SELECT "id", "templateId", "version", "name", "description", "category", "tags", "steps",
                  "createdBy", "createdAt", "updatedAt"
           FROM (SELECT v.*, ROW_NUMBER() OVER (PARTITION BY "templateId" ORDER BY "version" DESC) AS rn
                 FROM workflow_template_versions v
                 WHERE "templateId" IN ({}) {before_clause}) ranked
           WHERE rn <= {limit}
           ORDER BY "templateId", "version" DESC"#,
        ids.join(", ")
    );
    version::Model::find_by_statement(Statement::from_sql_and_values(backend, sql, values))
        .all(db)
        .await
}

/// Makes version `v` current again, as a new version by `editor`: the
/// template's fields as `v` had them, and its steps — those that still exist
/// keep their ids (runs that ran them stay linked), the others come back
/// under theirs, and steps added since are deleted.
pub async fn restore(
    db: &sea_orm::DatabaseConnection,
    template_id: &str,
    v: &version::Model,
    editor: &str,
) -> Result<template::Model, DbErr> {
    use sea_orm::TransactionTrait;
    let steps = steps_of(v)?;
    let txn = db.begin().await?;
    if !bump(&txn, template_id).await? {
        return Err(DbErr::RecordNotFound(format!("workflow template {template_id}")));
    }
    let backend = txn.get_database_backend();
    let at = now();
    let fields = Query::update()
        .table(template::Entity)
        .value(template::Column::Name, v.name.clone())
        .value(template::Column::SearchName, template::search_text(&v.name))
        .value(template::Column::Description, v.description.clone())
        .value(
            template::Column::SearchDescription,
            template::search_text(v.description.as_deref().unwrap_or_default()),
        )
        .value(template::Column::Category, v.category.clone())
        .value(template::Column::Tags, v.tags.to_value(backend))
        .and_where(template::Column::Id.eq(template_id))
        .to_owned();
    txn.execute(&fields).await?;
    let current = super::step_rows::of_templates(&txn, &[template_id.to_owned()]).await?;
    let keep: std::collections::HashSet<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    let gone: Vec<String> = current
        .iter()
        .filter(|s| !keep.contains(s.id.as_str()))
        .map(|s| s.id.clone())
        .collect();
    if !gone.is_empty() {
        step::Entity::delete_many()
            .filter(step::Column::Id.is_in(gone))
            .exec(&txn)
            .await?;
    }
    for s in steps {
        let existing = current.iter().find(|c| c.id == s.id);
        let d = s.definition;
        let row = step::Model {
            id: s.id,
            workflow_template_id: template_id.to_owned(),
            step_order: s.step_order,
            agent_id: d.agent_id,
            prompt_template: d.prompt_template,
            requires_user_input: d.requires_user_input,
            input_schema: d.input_schema,
            metadata: d.metadata,
            condition: d.condition,
            parallel_group: d.parallel_group,
            approval: d.approval.as_ref().map(ApprovalRule::to_json),
            created_at: existing.map_or(at, |c| c.created_at),
            updated_at: at,
        };
        if existing.is_some() {
            step::Entity::update(step::ActiveModel::from(row).reset_all())
                .exec(&txn)
                .await?;
        } else {
            step::Entity::insert(step::ActiveModel::from(row))
                .exec_without_returning(&txn)
                .await?;
        }
    }
    let restored = store_current(&txn, template_id, editor).await?;
    txn.commit().await?;
    Ok(restored)
}
