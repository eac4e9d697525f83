//! Workflow executions: reading them and their step records, and what a new
//! run (a start, or a retry of a run that failed) is made of.

use entity::{ExecutionStatus, StepStatus, workflow_execution as execution, workflow_execution_step as exec_step};
use std::collections::HashMap;
use std::sync::LazyLock;

use entity::DriveRole;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveEnum, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};

use super::pagination::{Cursor, Page};
use super::{nested, steps, versions};
use crate::core::definition::StepDefinition;
use crate::domain::access::ExecutionScope;
use crate::error::{ApiError, ApiResult};

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

/// An execution as its detail page reads it: the row, its template, its
/// step records (ordered by `stepOrder`) and, when asked for, the viewer's
/// memberships.
pub struct Detail {
    pub execution: execution::Model,
    pub template: Option<entity::workflow_template::Model>,
    pub steps: Option<Vec<exec_step::Model>>,
    pub roles: Option<HashMap<String, DriveRole>>,
}

/// `Detail` in one statement: the step records and memberships ride in the
/// execution's row as JSON arrays. One statement reads one snapshot, so the
/// step records are exactly as the execution row last left them (a
/// COMPLETED run never comes with a step unfinished), and the whole read is
/// one round trip. `roles_of`: the viewer whose memberships to read too.
pub async fn detail(
    db: &impl ConnectionTrait,
    id: &str,
    with_steps: bool,
    roles_of: Option<&str>,
) -> Result<Option<Detail>, DbErr> {
    let backend = db.get_database_backend();
    let mut select = execution::Entity::find_by_id(id.to_owned()).find_also_related(entity::workflow_template::Entity);
    if with_steps {
        select = select.expr_as(Expr::cust(steps_json_sql(backend)), "detail_steps");
    }
    if let Some(user) = roles_of {
        let sql = match backend {
            DbBackend::Postgres => {
                r#"(SELECT json_agg(json_build_array(m."driveId", m."role"))::text FROM "drive_members" m WHERE m."userId" = $1)"#
            }
            _ => {
                r#"(SELECT json_group_array(json_array(m."driveId", m."role")) FROM "drive_members" m WHERE m."userId" = ?)"#
            }
        };
        select = select.expr_as(Expr::cust_with_values(sql, [user.to_owned()]), "detail_roles");
    }
    let Some(row) = db.query_one_raw(select.build(backend)).await? else {
        return Ok(None);
    };
    let execution = execution::Model::from_query_result(&row, "A_")?;
    let template = entity::workflow_template::Model::from_query_result_optional(&row, "B_")?;
    let steps = if with_steps {
        let text: Option<String> = row.try_get("", "detail_steps")?;
        let mut steps = match text {
            Some(t) => serde_json::from_str::<Vec<StepJson>>(&t)
                .map_err(|e| DbErr::Type(format!("the step records of execution {id}: {e}")))?
                .into_iter()
                .map(StepJson::into_model)
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        steps.sort_by_key(|s| s.step_order);
        Some(steps)
    } else {
        None
    };
    let roles = match roles_of {
        None => None,
        Some(_) => {
            let text: Option<String> = row.try_get("", "detail_roles")?;
            let pairs: Vec<(String, DriveRole)> = match text {
                Some(t) => serde_json::from_str(&t).map_err(|e| DbErr::Type(format!("memberships: {e}")))?,
                None => Vec::new(),
            };
            Some(pairs.into_iter().collect())
        }
    };
    Ok(Some(Detail {
        execution,
        template,
        steps,
        roles,
    }))
}

/// The correlated subquery that gives an execution's step records as one
/// JSON array (in no particular order).
fn steps_json_sql(backend: DbBackend) -> &'static str {
    static POSTGRES: LazyLock<String> = LazyLock::new(|| steps_json(DbBackend::Postgres));
    static SQLITE: LazyLock<String> = LazyLock::new(|| steps_json(DbBackend::Sqlite));
    fn steps_json(backend: DbBackend) -> String {
        nested::array_sql::<exec_step::Column>(
            backend,
            "workflow_execution_steps",
            "workflowExecutionId",
            r#""workflow_executions"."id""#,
        )
    }
    match backend {
        DbBackend::Postgres => POSTGRES.as_str(),
        _ => SQLITE.as_str(),
    }
}

/// A step record as `steps_json_sql` writes it: PostgreSQL's `row_to_json`
/// (timestamps `2026-12-01T10:00:00.123456`, booleans) or SQLite's
/// `json_object` (timestamps as stored, `2026-12-01 10:00:00.123456`,
/// booleans as 0 and 1).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StepJson {
    id: String,
    workflow_execution_id: String,
    workflow_step_id: Option<String>,
    step_order: i32,
    status: String,
    agent_input: Option<serde_json::Value>,
    agent_output: Option<serde_json::Value>,
    user_input: Option<serde_json::Value>,
    started_at: Option<String>,
    completed_at: Option<String>,
    error_message: Option<String>,
    definition: Option<serde_json::Value>,
    reused: serde_json::Value,
    created_at: String,
    updated_at: String,
}

impl StepJson {
    fn into_model(self) -> Result<exec_step::Model, DbErr> {
        let bad = |e: String| DbErr::Type(format!("step record {}: {e}", self.id));
        Ok(exec_step::Model {
            status: StepStatus::try_from_value(&self.status)?,
            started_at: nested::opt_time(self.started_at.as_deref()).map_err(bad)?,
            completed_at: nested::opt_time(self.completed_at.as_deref()).map_err(bad)?,
            created_at: nested::time(&self.created_at).map_err(bad)?,
            updated_at: nested::time(&self.updated_at).map_err(bad)?,
            reused: nested::flag(&self.reused).map_err(|e| bad(format!("reused: {e}")))?,
            agent_input: nested::json(self.agent_input),
            agent_output: nested::json(self.agent_output),
            user_input: nested::json(self.user_input),
            definition: nested::json(self.definition),
            id: self.id,
            workflow_execution_id: self.workflow_execution_id,
            workflow_step_id: self.workflow_step_id,
            step_order: self.step_order,
            error_message: self.error_message,
        })
    }
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

/// A run of `template` by `user_id`: its `version` (the current one when
/// `None`; an unknown one is `BAD_USER_INPUT`), starting from `context`.
pub async fn launch(
    db: &impl ConnectionTrait,
    template: &entity::workflow_template::Model,
    user_id: &str,
    context: serde_json::Value,
    version: Option<i32>,
) -> ApiResult<Launch> {
    let steps = match version {
        None => steps::of_templates(db, std::slice::from_ref(&template.id))
            .await?
            .iter()
            .map(|s| Seed::Run {
                workflow_step_id: Some(s.id.clone()),
                step_order: s.step_order,
                definition: StepDefinition::from(s),
            })
            .collect(),
        Some(n) => {
            let stored = versions::find(db, &template.id, n).await?.ok_or_else(|| {
                ApiError::bad_input(format!(
                    "version: template {} has no version {n} (its versions are 1 to {})",
                    template.id, template.version
                ))
            })?;
            let steps = versions::steps_of(&stored)?;
            // A run links to the template steps that still exist.
            let ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
            let live: std::collections::HashSet<String> = steps::find_many(db, &ids)
                .await?
                .into_iter()
                .filter(|s| s.workflow_template_id == template.id)
                .map(|s| s.id)
                .collect();
            steps
                .into_iter()
                .map(|s| Seed::Run {
                    workflow_step_id: live.contains(&s.id).then_some(s.id),
                    step_order: s.step_order,
                    definition: s.definition,
                })
                .collect()
        }
    };
    Ok(Launch {
        template_id: template.id.clone(),
        drive_id: template.drive_id.clone(),
        user_id: user_id.to_owned(),
        version: version.unwrap_or(template.version),
        context,
        retry_of: None,
        schedule: None,
        steps,
    })
}

/// A re-run of the FAILED or CANCELLED `original` by `user_id`, from step
/// `from` (default: the first step that did not end well): the steps before
/// it are reused as they ended, the rest run as the original's copies of
/// their definitions say (the same template version).
pub fn retry(
    original: &execution::Model,
    records: &[exec_step::Model],
    from: Option<i32>,
    user_id: &str,
) -> ApiResult<Launch> {
    if !matches!(original.status, ExecutionStatus::Failed | ExecutionStatus::Cancelled) {
        return Err(ApiError::Conflict(format!(
            "only a FAILED or CANCELLED execution can be retried; this one is {}",
            status_name(original.status)
        )));
    }
    let stopped_at = records
        .iter()
        .find(|r| !matches!(r.status, StepStatus::Completed | StepStatus::Skipped))
        .map(|r| r.step_order)
        .or_else(|| records.last().map(|r| r.step_order))
        .unwrap_or(0);
    let from = from.unwrap_or(stopped_at);
    if !(0..=stopped_at).contains(&from) {
        return Err(ApiError::bad_input(format!(
            "fromStepOrder: must be between 0 and {stopped_at} (the step where the execution stopped)"
        )));
    }
    let steps = records
        .iter()
        .map(|r| {
            if r.step_order < from {
                return Ok(Seed::Reused(r.clone()));
            }
            let definition = r
                .definition
                .clone()
                .ok_or_else(|| ApiError::Internal(format!("step {} has no definition to run again", r.step_order)))
                .and_then(|d| {
                    serde_json::from_value::<StepDefinition>(d).map_err(|e| {
                        ApiError::Internal(format!("step {} has an unreadable definition: {e}", r.step_order))
                    })
                })?;
            Ok(Seed::Run {
                workflow_step_id: r.workflow_step_id.clone(),
                step_order: r.step_order,
                definition,
            })
        })
        .collect::<ApiResult<Vec<Seed>>>()?;
    Ok(Launch {
        template_id: original.workflow_template_id.clone(),
        drive_id: original.drive_id.clone(),
        user_id: user_id.to_owned(),
        version: original.template_version,
        context: original.initial_context.clone(),
        retry_of: Some(original.id.clone()),
        schedule: None,
        steps,
    })
}

/// Executions that retry any of `ids`, oldest first.
pub async fn retries_of(db: &impl ConnectionTrait, ids: &[String]) -> Result<Vec<execution::Model>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    execution::Entity::find()
        .filter(execution::Column::RetryOfExecutionId.is_in(ids.iter().cloned()))
        .order_by_asc(execution::Column::CreatedAt)
        .order_by_asc(execution::Column::Id)
        .all(db)
        .await
}

pub async fn find_many(db: &impl ConnectionTrait, ids: &[String]) -> Result<Vec<execution::Model>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    execution::Entity::find()
        .filter(execution::Column::Id.is_in(ids.iter().cloned()))
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

/// A run about to be created (made here; the engine writes it).
pub struct Launch {
    pub template_id: String,
    pub drive_id: String,
    /// Who starts it: the run is theirs.
    pub user_id: String,
    /// The template version it executes.
    pub version: i32,
    /// The context it starts with (`initialContext`).
    pub context: serde_json::Value,
    pub retry_of: Option<String>,
    /// The schedule and due time a scheduled run is started for.
    pub schedule: Option<(String, chrono::NaiveDateTime)>,
    /// Its step records, in `stepOrder`.
    pub steps: Vec<Seed>,
}

/// One step record of a new run.
pub enum Seed {
    /// A step to run, as its template version defines it.
    Run {
        workflow_step_id: Option<String>,
        step_order: i32,
        definition: StepDefinition,
    },
    /// A step record of the run being retried, copied as it ended and never
    /// run again.
    Reused(exec_step::Model),
}

/// The API name of an execution status, for messages.
pub fn status_name(s: ExecutionStatus) -> &'static str {
    match s {
        ExecutionStatus::Running => "RUNNING",
        ExecutionStatus::Paused => "PAUSED",
        ExecutionStatus::Completed => "COMPLETED",
        ExecutionStatus::Failed => "FAILED",
        ExecutionStatus::Cancelled => "CANCELLED",
    }
}
