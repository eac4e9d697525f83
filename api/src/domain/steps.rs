//! Workflow steps. Every change runs in one transaction that first locks the
//! template (bumping its version), keeps `stepOrder` contiguous from 0,
//! re-checks every prompt's `step_K_output` references against the new order,
//! and stores the template as its new version before committing.

use chrono::NaiveDateTime;
use entity::workflow_step as step;
use sea_orm::sea_query::{CaseStatement, Expr, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    TransactionTrait,
};
use serde_json::Value;

pub use super::step_rows::{JsonColumns, find, find_many, of_templates, of_templates_reading};
use super::validation::{self, OrderedPrompt};
use super::{new_id, now, versions};
use crate::core::definition::ApprovalRule;
use crate::error::{ApiError, ApiResult};

/// A validated step ready to be written.
#[derive(Debug, Clone)]
pub struct NewStep {
    pub agent_id: String,
    pub prompt_template: String,
    pub requires_user_input: bool,
    pub input_schema: Option<Value>,
    pub metadata: Option<Value>,
    pub condition: Option<Value>,
    pub parallel_group: Option<String>,
    pub approval: Option<ApprovalRule>,
}

/// Validated changes; `None` leaves a field, `Some(None)` clears a JSON field.
#[derive(Debug, Clone, Default)]
pub struct StepChanges {
    pub agent_id: Option<String>,
    pub prompt_template: Option<String>,
    pub requires_user_input: Option<bool>,
    pub input_schema: Option<Option<Value>>,
    pub metadata: Option<Option<Value>>,
    pub condition: Option<Option<Value>>,
    pub parallel_group: Option<Option<String>>,
    pub approval: Option<Option<ApprovalRule>>,
}

impl TryFrom<&step::Model> for NewStep {
    type Error = ApiError;

    /// A stored step to copy: one whose approval rule cannot be read is an
    /// internal error, never copied as a step without approval.
    fn try_from(s: &step::Model) -> ApiResult<Self> {
        let approval = s
            .approval
            .as_ref()
            .map(ApprovalRule::parse)
            .transpose()
            .map_err(|e| ApiError::Internal(format!("step {} has an unreadable approval rule: {e}", s.id)))?;
        Ok(Self {
            agent_id: s.agent_id.clone(),
            prompt_template: s.prompt_template.clone(),
            requires_user_input: s.requires_user_input,
            input_schema: s.input_schema.clone(),
            metadata: s.metadata.clone(),
            condition: s.condition.clone(),
            parallel_group: s.parallel_group.clone(),
            approval,
        })
    }
}

impl NewStep {
    pub fn into_row(self, id: String, template_id: &str, order: i32, at: NaiveDateTime) -> step::Model {
        step::Model {
            id,
            workflow_template_id: template_id.to_owned(),
            step_order: order,
            agent_id: self.agent_id,
            prompt_template: self.prompt_template,
            requires_user_input: self.requires_user_input,
            input_schema: self.input_schema,
            metadata: self.metadata,
            condition: self.condition,
            parallel_group: self.parallel_group,
            approval: self.approval.as_ref().map(ApprovalRule::to_json),
            created_at: at,
            updated_at: at,
        }
    }

    /// What this step adds to its template's size (`MAX_TEMPLATE_BYTES`).
    pub fn bytes(&self) -> usize {
        step_bytes(
            &self.agent_id,
            &self.prompt_template,
            [&self.input_schema, &self.metadata, &self.condition],
        )
    }
}

fn step_bytes(agent_id: &str, prompt: &str, json: [&Option<Value>; 3]) -> usize {
    let json: usize = json
        .iter()
        .filter_map(|v| v.as_ref())
        .map(crate::core::limits::json_bytes)
        .sum();
    agent_id.len() + prompt.len() + json
}

fn model_bytes(s: &step::Model) -> usize {
    step_bytes(
        &s.agent_id,
        &s.prompt_template,
        [&s.input_schema, &s.metadata, &s.condition],
    )
}

/// A template's size is that of its steps: prompts, agent ids and JSON fields.
pub fn check_template_size(total: usize, max: usize) -> ApiResult<()> {
    if total > max {
        return Err(ApiError::bad_input(format!(
            "steps: the template's steps would take {total} bytes; at most {max} are allowed (MAX_TEMPLATE_BYTES)"
        )));
    }
    Ok(())
}

fn field_for_step(order: i32) -> String {
    format!("steps[{order}].promptTemplate")
}

/// Checks the parallel groups of a template's steps, in their final order.
pub fn check_groups(steps: &[step::Model]) -> ApiResult<()> {
    let view: Vec<validation::GroupedStep<'_>> = steps
        .iter()
        .map(|s| validation::GroupedStep {
            prompt: &s.prompt_template,
            group: s.parallel_group.as_deref(),
            requires_input: s.requires_user_input,
            approval: s.approval.is_some(),
        })
        .collect();
    validation::parallel_groups(&view)
}

/// Checks new steps' parallel groups, in their order.
pub fn check_new_groups(steps: &[NewStep]) -> ApiResult<()> {
    let view: Vec<validation::GroupedStep<'_>> = steps
        .iter()
        .map(|s| validation::GroupedStep {
            prompt: &s.prompt_template,
            group: s.parallel_group.as_deref(),
            requires_input: s.requires_user_input,
            approval: s.approval.is_some(),
        })
        .collect();
    validation::parallel_groups(&view)
}

/// Checks a whole template's prompts, in their final order.
pub fn check_references<'a>(prompts: impl Iterator<Item = &'a str>) -> ApiResult<()> {
    let list: Vec<OrderedPrompt<'_>> = prompts
        .enumerate()
        .map(|(i, prompt)| OrderedPrompt {
            order: i as i32,
            prompt,
        })
        .collect();
    validation::step_references(&list, field_for_step)
}

/// Inserts the steps in this order; returns them as stored.
pub(super) async fn insert_all(
    db: &impl ConnectionTrait,
    template_id: &str,
    steps: Vec<NewStep>,
    at: NaiveDateTime,
) -> Result<Vec<step::Model>, DbErr> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<step::Model> = steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.into_row(new_id(), template_id, i as i32, at))
        .collect();
    step::Entity::insert_many(rows.iter().cloned().map(step::ActiveModel::from))
        .exec_without_returning(db)
        .await?;
    Ok(rows)
}

/// Starts a transaction holding the template's lock, its version bumped,
/// and reads its steps.
async fn begin(db: &DatabaseConnection, template_id: &str) -> ApiResult<(DatabaseTransaction, Vec<step::Model>)> {
    let txn = db.begin().await?;
    if !versions::bump(&txn, template_id).await? {
        return Err(ApiError::not_found("workflow template", template_id));
    }
    let steps = of_templates(&txn, &[template_id.to_owned()]).await?;
    Ok((txn, steps))
}

/// Writes `stepOrder` = position for every step whose order changed, in one statement.
async fn renumber(txn: &DatabaseTransaction, ordered: &[step::Model], at: NaiveDateTime) -> Result<(), DbErr> {
    let changed: Vec<(&str, i32)> = ordered
        .iter()
        .enumerate()
        .filter(|(i, s)| s.step_order != *i as i32)
        .map(|(i, s)| (s.id.as_str(), i as i32))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let mut case = CaseStatement::new();
    for (id, order) in &changed {
        case = case.case(step::Column::Id.eq(*id), *order);
    }
    let stmt = Query::update()
        .table(step::Entity)
        .value(step::Column::StepOrder, Expr::Case(Box::new(case)))
        .value(step::Column::UpdatedAt, at)
        .and_where(step::Column::Id.is_in(changed.iter().map(|(id, _)| id.to_string())))
        .to_owned();
    txn.execute(&stmt).await?;
    Ok(())
}

/// Appends, or inserts at `position` and shifts the rest.
/// `max_bytes` bounds the whole template's size after the change.
pub async fn add(
    db: &DatabaseConnection,
    template_id: &str,
    new: NewStep,
    position: Option<i32>,
    max_bytes: usize,
    editor: &str,
) -> ApiResult<step::Model> {
    let (txn, mut steps) = begin(db, template_id).await?;
    let count = steps.len() as i32;
    let position = position.unwrap_or(count);
    if !(0..=count).contains(&position) {
        return Err(ApiError::bad_input(format!(
            "stepOrder: must be between 0 and {count} (the number of steps)"
        )));
    }
    let at = now();
    let row = new.into_row(new_id(), template_id, position, at);
    steps.insert(position as usize, row.clone());
    check_template_size(steps.iter().map(model_bytes).sum(), max_bytes)?;
    check_references(steps.iter().map(|s| s.prompt_template.as_str()))?;
    check_groups(&steps)?;
    // Shift the later steps (the new row already sits at its index), then fill the gap.
    renumber(&txn, &steps, at).await?;
    step::Entity::insert(step::ActiveModel::from(row.clone()))
        .exec_without_returning(&txn)
        .await?;
    versions::store_current(&txn, template_id, editor).await?;
    txn.commit().await?;
    Ok(row)
}

pub async fn update(
    db: &DatabaseConnection,
    current: &step::Model,
    changes: StepChanges,
    max_bytes: usize,
    editor: &str,
) -> ApiResult<step::Model> {
    let (txn, steps) = begin(db, &current.workflow_template_id).await?;
    let Some(mut next) = steps.iter().find(|s| s.id == current.id).cloned() else {
        return Err(ApiError::not_found("workflow step", &current.id));
    };
    if let Some(v) = changes.agent_id {
        next.agent_id = v;
    }
    if let Some(v) = changes.prompt_template {
        next.prompt_template = v;
    }
    if let Some(v) = changes.requires_user_input {
        next.requires_user_input = v;
    }
    if let Some(v) = changes.input_schema {
        next.input_schema = v;
    }
    if let Some(v) = changes.metadata {
        next.metadata = v;
    }
    if let Some(v) = changes.condition {
        next.condition = v;
    }
    if let Some(v) = changes.parallel_group {
        next.parallel_group = v;
    }
    if let Some(v) = changes.approval {
        next.approval = v.as_ref().map(ApprovalRule::to_json);
    }
    next.updated_at = now();
    let total = steps
        .iter()
        .map(|s| {
            if s.id == next.id {
                model_bytes(&next)
            } else {
                model_bytes(s)
            }
        })
        .sum();
    check_template_size(total, max_bytes)?;
    check_references(steps.iter().map(|s| {
        if s.id == next.id {
            next.prompt_template.as_str()
        } else {
            s.prompt_template.as_str()
        }
    }))?;
    let after: Vec<step::Model> = steps
        .iter()
        .map(|s| if s.id == next.id { next.clone() } else { s.clone() })
        .collect();
    check_groups(&after)?;
    step::Entity::update(step::ActiveModel {
        id: sea_orm::ActiveValue::Unchanged(next.id.clone()),
        agent_id: Set(next.agent_id.clone()),
        prompt_template: Set(next.prompt_template.clone()),
        requires_user_input: Set(next.requires_user_input),
        input_schema: Set(next.input_schema.clone()),
        metadata: Set(next.metadata.clone()),
        condition: Set(next.condition.clone()),
        parallel_group: Set(next.parallel_group.clone()),
        approval: Set(next.approval.clone()),
        updated_at: Set(next.updated_at),
        ..Default::default()
    })
    .exec(&txn)
    .await?;
    versions::store_current(&txn, &current.workflow_template_id, editor).await?;
    txn.commit().await?;
    Ok(next)
}

/// Deletes a step and closes the gap. Execution steps that ran it keep their
/// record with `workflowStepId` set to NULL (FK SET NULL).
pub async fn delete(db: &DatabaseConnection, current: &step::Model, editor: &str) -> ApiResult<()> {
    let (txn, steps) = begin(db, &current.workflow_template_id).await?;
    let remaining: Vec<step::Model> = steps.into_iter().filter(|s| s.id != current.id).collect();
    check_references(remaining.iter().map(|s| s.prompt_template.as_str()))?;
    check_groups(&remaining)?;
    step::Entity::delete_by_id(current.id.clone()).exec(&txn).await?;
    renumber(&txn, &remaining, now()).await?;
    versions::store_current(&txn, &current.workflow_template_id, editor).await?;
    txn.commit().await?;
    Ok(())
}

/// Puts the steps in the order of `ids`, which must name each step once.
pub async fn reorder(db: &DatabaseConnection, template_id: &str, ids: &[String], editor: &str) -> ApiResult<()> {
    let (txn, steps) = begin(db, template_id).await?;
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        if !seen.insert(id.as_str()) {
            return Err(ApiError::bad_input(format!(
                "stepIds: step {id} is listed more than once"
            )));
        }
        if !steps.iter().any(|s| &s.id == id) {
            return Err(ApiError::bad_input(format!(
                "stepIds: {id} is not a step of this template"
            )));
        }
    }
    if ids.len() != steps.len() {
        return Err(ApiError::bad_input(format!(
            "stepIds: must list every step of the template exactly once ({} given, {} steps)",
            ids.len(),
            steps.len()
        )));
    }
    let ordered: Vec<step::Model> = ids
        .iter()
        .filter_map(|id| steps.iter().find(|s| &s.id == id).cloned())
        .collect();
    check_references(ordered.iter().map(|s| s.prompt_template.as_str()))?;
    check_groups(&ordered)?;
    renumber(&txn, &ordered, now()).await?;
    versions::store_current(&txn, template_id, editor).await?;
    txn.commit().await?;
    Ok(())
}
