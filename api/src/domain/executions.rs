//! Reading workflow executions and their step records.

use entity::{ExecutionStatus, workflow_execution as execution, workflow_execution_step as exec_step};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

use super::pagination::{Cursor, Page};
use crate::access::ExecutionScope;

#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub drive_id: Option<String>,
    pub template_id: Option<String>,
    pub status: Vec<ExecutionStatus>,
    pub mine: bool,
}

pub async fn find(db: &impl ConnectionTrait, id: &str) -> Result<Option<execution::Model>, DbErr> {
    execution::Entity::find_by_id(id.to_owned()).one(db).await
}

/// An execution and its template, in one statement.
pub async fn find_with_template(
    db: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<(execution::Model, Option<entity::workflow_template::Model>)>, DbErr> {
    execution::Entity::find_by_id(id.to_owned())
        .find_also_related(entity::workflow_template::Entity)
        .one(db)
        .await
}

/// What the viewer may see, narrowed by the client's filter; `None` when
/// nothing can match.
pub fn list_condition(scope: &ExecutionScope, filter: &ExecutionFilter) -> Option<Condition> {
    let keep = |d: &String| filter.drive_id.as_ref().is_none_or(|f| f == d);
    let all_in: Vec<String> = if filter.mine {
        Vec::new()
    } else {
        scope.all_in.iter().filter(|d| keep(d)).cloned().collect()
    };
    let own_in: Vec<String> = if filter.mine {
        scope
            .all_in
            .iter()
            .chain(scope.own_in.iter())
            .filter(|d| keep(d))
            .cloned()
            .collect()
    } else {
        scope.own_in.iter().filter(|d| keep(d)).cloned().collect()
    };
    if all_in.is_empty() && own_in.is_empty() {
        return None;
    }
    let mut visible = Condition::any();
    if !all_in.is_empty() {
        visible = visible.add(execution::Column::DriveId.is_in(all_in));
    }
    if !own_in.is_empty() {
        visible = visible.add(
            Condition::all()
                .add(execution::Column::DriveId.is_in(own_in))
                .add(execution::Column::UserId.eq(scope.user_id.clone())),
        );
    }
    let mut cond = Condition::all().add(visible);
    if let Some(t) = &filter.template_id {
        cond = cond.add(execution::Column::WorkflowTemplateId.eq(t.clone()));
    }
    if !filter.status.is_empty() {
        cond = cond.add(execution::Column::Status.is_in(filter.status.clone()));
    }
    Some(cond)
}

pub async fn list(
    db: &impl ConnectionTrait,
    cond: Condition,
    first: u64,
    after: Option<&Cursor>,
) -> Result<Page<execution::Model>, DbErr> {
    let query = execution::Entity::find().filter(cond);
    super::pagination::newest_first(
        db,
        query,
        execution::Column::CreatedAt,
        execution::Column::Id,
        first,
        after,
    )
    .await
}

pub async fn count(db: &impl ConnectionTrait, cond: Condition) -> Result<u64, DbErr> {
    execution::Entity::find().filter(cond).count(db).await
}

/// The step records of many executions, each execution's in `stepOrder`.
pub async fn steps_of(db: &impl ConnectionTrait, execution_ids: &[String]) -> Result<Vec<exec_step::Model>, DbErr> {
    if execution_ids.is_empty() {
        return Ok(Vec::new());
    }
    exec_step::Entity::find()
        .filter(exec_step::Column::WorkflowExecutionId.is_in(execution_ids.iter().cloned()))
        .order_by_asc(exec_step::Column::WorkflowExecutionId)
        .order_by_asc(exec_step::Column::StepOrder)
        .all(db)
        .await
}
