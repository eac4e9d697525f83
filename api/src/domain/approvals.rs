//! Decisions on steps that await approval (`workflow_execution_approvals`),
//! and the runs that wait for a viewer's decision.

use entity::{
    ExecutionStatus, StepStatus, workflow_execution as execution, workflow_execution_approval as approval,
    workflow_execution_step as exec_step,
};
use sea_orm::sea_query::{InsertStatement, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

use super::{new_id, now};

/// Approvals (not rejections) recorded for one step record.
pub async fn approvals_of(db: &impl ConnectionTrait, step_id: &str) -> Result<u32, DbErr> {
    let n = approval::Entity::find()
        .filter(approval::Column::ExecutionStepId.eq(step_id))
        .filter(approval::Column::Approve.eq(true))
        .count(db)
        .await?;
    Ok(n as u32)
}

/// The decisions on many step records, each step's oldest first.
pub async fn of_steps(db: &impl ConnectionTrait, step_ids: &[String]) -> Result<Vec<approval::Model>, DbErr> {
    if step_ids.is_empty() {
        return Ok(Vec::new());
    }
    approval::Entity::find()
        .filter(approval::Column::ExecutionStepId.is_in(step_ids.iter().cloned()))
        .order_by_asc(approval::Column::CreatedAt)
        .order_by_asc(approval::Column::Id)
        .all(db)
        .await
}

/// The row a decision writes, with the change it makes to the run.
pub fn insert(step_id: &str, user_id: &str, approve: bool, comment: Option<String>) -> InsertStatement {
    let at = now();
    Query::insert()
        .into_table(approval::Entity)
        .columns([
            approval::Column::Id,
            approval::Column::ExecutionStepId,
            approval::Column::UserId,
            approval::Column::Approve,
            approval::Column::Comment,
            approval::Column::CreatedAt,
            approval::Column::UpdatedAt,
        ])
        .values_panic([
            new_id().into(),
            step_id.to_owned().into(),
            user_id.to_owned().into(),
            approve.into(),
            comment.into(),
            at.into(),
            at.into(),
        ])
        .to_owned()
}

/// PAUSED runs in `drive_ids` with the step each waits at (still PENDING),
/// newest first: the candidates for a viewer's pending approvals.
pub async fn paused_at_steps(
    db: &impl ConnectionTrait,
    drive_ids: &[String],
) -> Result<Vec<(execution::Model, exec_step::Model)>, DbErr> {
    if drive_ids.is_empty() {
        return Ok(Vec::new());
    }
    let runs = execution::Entity::find()
        .filter(execution::Column::DriveId.is_in(drive_ids.iter().cloned()))
        .filter(execution::Column::Status.eq(ExecutionStatus::Paused))
        .order_by_desc(execution::Column::CreatedAt)
        .order_by_desc(execution::Column::Id)
        .find_with_related(exec_step::Entity)
        .all(db)
        .await?;
    Ok(runs
        .into_iter()
        .filter_map(|(e, steps)| {
            let step = steps
                .into_iter()
                .find(|s| Some(s.step_order) == e.current_step_order && s.status == StepStatus::Pending)?;
            Some((e, step))
        })
        .collect())
}
