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

/// One page of runs for each of several schedules, newest first, in one
/// statement (a window over `scheduleId`). `user_id`: only runs started by
/// that user (a viewer who sees only their own runs).
pub async fn pages_of_schedules(
    db: &impl ConnectionTrait,
    schedule_ids: &[String],
    user_id: Option<&str>,
    first: u64,
    after: Option<&Cursor>,
) -> Result<std::collections::HashMap<String, Page<execution::Model>>, DbErr> {
    use sea_orm::sea_query::Expr;
    use sea_orm::{QuerySelect, QueryTrait, Statement};
    let mut map: std::collections::HashMap<String, Page<execution::Model>> = schedule_ids
        .iter()
        .map(|id| {
            (
                id.clone(),
                Page {
                    rows: Vec::new(),
                    has_next_page: false,
                    has_previous_page: after.is_some(),
                },
            )
        })
        .collect();
    if schedule_ids.is_empty() {
        return Ok(map);
    }
    let mut cond = Condition::all().add(execution::Column::ScheduleId.is_in(schedule_ids.iter().cloned()));
    if let Some(u) = user_id {
        cond = cond.add(execution::Column::UserId.eq(u));
    }
    if let Some(c) = after {
        cond = cond.add(
            Condition::any().add(execution::Column::CreatedAt.lt(c.created_at)).add(
                Condition::all()
                    .add(execution::Column::CreatedAt.eq(c.created_at))
                    .add(execution::Column::Id.lt(c.id.clone())),
            ),
        );
    }
    let backend = db.get_database_backend();
    let inner = execution::Entity::find()
        .filter(cond)
        .expr_as(
            Expr::cust(r#"ROW_NUMBER() OVER (PARTITION BY "scheduleId" ORDER BY "createdAt" DESC, "id" DESC)"#),
            "rn",
        )
        .build(backend);
    let sql = format!(
        r#"SELECT * FROM ({}) AS ranked WHERE rn <= {} ORDER BY "scheduleId", rn"#,
        inner.sql,
        first + 1
    );
    let rows = execution::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            backend,
            sql,
            inner.values.map(|v| v.0).unwrap_or_default(),
        ))
        .all(db)
        .await?;
    for row in rows {
        let Some(page) = row.schedule_id.as_ref().and_then(|s| map.get_mut(s)) else {
            continue;
        };
        if page.rows.len() as u64 == first {
            page.has_next_page = true;
        } else {
            page.rows.push(row);
        }
    }
    Ok(map)
}
