//! The GraphQL object types (docs/domain.md). Each wraps an entity model; nested fields go
//! through the request's DataLoaders. The types reference one another (a
//! template's schedules, a schedule's template), so they live together
//! here; their enums, pages, statistics and the plain-field table are the
//! modules beside this one.

use std::sync::Arc;

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use entity::workflow_schedule as schedule;
use entity::{workflow_execution as execution, workflow_execution_step as exec_step};
use entity::{workflow_step as step, workflow_template as template, workflow_template_version as version};
use sea_orm::{ColumnTrait, Condition};

use super::approvals::{WorkflowApproval, WorkflowApprovalRule};
use super::enums::Awaiting;
use super::load::{load_err, missing, utc};
use super::page::{PageInfo, connection, decode_version_cursor, page_complexity, version_cursor};
use super::people::{Drive, User, load_user};
use super::plain::plain_object;
use super::stats::WorkflowTemplateStats;
use crate::error::ApiError;
use crate::graphql::RequestCtx;
use crate::graphql::json::StoredJson;
use crate::graphql::render::{Direct, DirectList};

#[derive(Clone)]
pub struct WorkflowTemplate(pub template::Model);

plain_object! {
    #[Object]
    WorkflowTemplate(row) {
        plain "id" id: id(row.id),
        plain "name" name: str(row.name),
        plain "description" description: opt_str(row.description),
        plain "driveId" drive_id: id(row.drive_id),
        resolvers {
            async fn drive(&self, ctx: &Context<'_>) -> Result<Drive> {
                let r = ctx.data_unchecked::<RequestCtx>();
                r.loaders
                    .drives
                    .load_one(self.0.drive_id.clone())
                    .await
                    .map_err(load_err)?
                    .map(Drive)
                    .ok_or_else(|| missing("drive", &self.0.drive_id))
        }
        }
        plain "createdBy" created_by: id(row.created_by),
        resolvers {
            async fn creator(&self, ctx: &Context<'_>) -> Result<Direct<User>> {
                load_user(ctx, &self.0.created_by).await.map(Direct)
        }
        }
        plain "category" category: opt_str(row.category),
        plain "tags" tags: strings(row.tags.0),
        plain "isPublic" is_public: boolean(row.is_public),
        /// Bumped by every change to the template or its steps (from 1).
        plain "version" version: int(row.version),
        /// The template this one was duplicated from.
        plain "parentTemplateId" parent_template_id: opt_id(row.parent_template_id),
        resolvers {
            /// The template as each change left it, newest first.
            #[graphql(complexity = "page_complexity(first, child_complexity)")]
            async fn versions(
                &self,
                ctx: &Context<'_>,
                first: Option<i32>,
                after: Option<String>,
            ) -> Result<WorkflowTemplateVersionConnection> {
                let r = ctx.data_unchecked::<RequestCtx>();
                let first = crate::domain::pagination::page_size(first)?;
                let before = after.as_deref().map(decode_version_cursor).transpose()?;
                let key = crate::graphql::loaders::VersionPage {
                    template_id: self.0.id.clone(),
                    first,
                    before,
                };
                let mut rows = r
                    .loaders
                    .versions_of_template
                    .load_one(key)
                    .await
                    .map_err(load_err)?
                    .unwrap_or_default();
                let has_next_page = rows.len() as u64 > first;
                rows.truncate(first as usize);
                Ok(WorkflowTemplateVersionConnection {
                    page_info: PageInfo {
                        has_next_page,
                        has_previous_page: before.is_some(),
                        start_cursor: rows.first().map(|v| version_cursor(v.version)),
                        end_cursor: rows.last().map(|v| version_cursor(v.version)),
                    },
                    nodes: rows.into_iter().map(|v| WorkflowTemplateVersion(Arc::new(v))).collect(),
                    // Versions are numbered 1, 2, 3 … and never deleted.
                    total_count: self.0.version as i64,
                })
        }
        /// Counts, durations and token use of this template's runs in the drive
        /// (whoever started them) that started at or after `since` (default:
        /// all). Kept as runs and steps finish, so they survive the retention
        /// sweep; a `since` older than the retention period counts from the next
        /// whole UTC hour. docs/statistics.md says what each number means.
        async fn stats(&self, ctx: &Context<'_>, since: Option<DateTime<Utc>>) -> Result<WorkflowTemplateStats> {
            let r = ctx.data_unchecked::<RequestCtx>();
            if !r.access().await?.can_see_template_stats(&self.0) {
                return Err(ApiError::not_found("workflow template", &self.0.id).into());
            }
            let retention_days = ctx.data_unchecked::<crate::graphql::SchemaData>().retention_days;
            let key = crate::graphql::loaders::StatsKey {
                template_id: self.0.id.clone(),
                since: since.map(|t| {
                    crate::domain::stats::effective_since(t.naive_utc(), retention_days, crate::domain::now())
                }),
            };
            let stats = r
                .loaders
                .stats_of_template
                .load_one(key)
                .await
                .map_err(load_err)?
                .unwrap_or_default();
            Ok(WorkflowTemplateStats::from(stats.as_ref()))
        }
        /// Ordered by `stepOrder`.
        async fn steps(&self, ctx: &Context<'_>) -> Result<DirectList<WorkflowStep>> {
            let r = ctx.data_unchecked::<RequestCtx>();
            let rows = r
                .loaders
                .steps_of_template
                .load_one(self.0.id.clone())
                .await
                .map_err(load_err)?
                .unwrap_or_default();
            Ok(DirectList(rows.into_iter().map(WorkflowStep).collect()))
        }
        /// The template's schedules, newest first.
        async fn schedules(&self, ctx: &Context<'_>) -> Result<Vec<WorkflowSchedule>> {
            let r = ctx.data_unchecked::<RequestCtx>();
            let rows = r
                .loaders
                .schedules_of_template
                .load_one(self.0.id.clone())
                .await
                .map_err(load_err)?
                .unwrap_or_default();
            Ok(rows.into_iter().map(WorkflowSchedule).collect())
        }
        }
        plain "createdAt" created_at: time(row.created_at),
        plain "updatedAt" updated_at: time(row.updated_at),
    }
}

/// A template as one version left it.
#[derive(Clone)]
pub struct WorkflowTemplateVersion(pub Arc<version::Model>);

#[Object]
impl WorkflowTemplateVersion {
    async fn version(&self) -> i32 {
        self.0.version
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    async fn category(&self) -> Option<&str> {
        self.0.category.as_deref()
    }
    async fn tags(&self) -> &[String] {
        &self.0.tags.0
    }
    /// The steps in `stepOrder`: `{ id, stepOrder, agentId, promptTemplate,
    /// requiresUserInput, inputSchema, metadata, condition }` each.
    async fn steps(&self) -> StoredJson<'_> {
        StoredJson(&self.0.steps)
    }
    /// Who made this version.
    async fn creator(&self, ctx: &Context<'_>) -> Result<User> {
        load_user(ctx, &self.0.created_by).await
    }
    async fn created_at(&self) -> DateTime<Utc> {
        utc(self.0.created_at)
    }
}

#[derive(SimpleObject)]
pub struct WorkflowTemplateVersionEdge {
    pub cursor: String,
    pub node: WorkflowTemplateVersion,
}

pub struct WorkflowTemplateVersionConnection {
    nodes: Vec<WorkflowTemplateVersion>,
    page_info: PageInfo,
    total_count: i64,
}

#[Object]
impl WorkflowTemplateVersionConnection {
    async fn edges(&self) -> Vec<WorkflowTemplateVersionEdge> {
        self.nodes
            .iter()
            .map(|n| WorkflowTemplateVersionEdge {
                cursor: version_cursor(n.0.version),
                node: n.clone(),
            })
            .collect()
    }
    async fn nodes(&self) -> Vec<WorkflowTemplateVersion> {
        self.nodes.clone()
    }
    async fn page_info(&self) -> &PageInfo {
        &self.page_info
    }
    async fn total_count(&self) -> i64 {
        self.total_count
    }
}

async fn load_template(ctx: &Context<'_>, id: &str) -> Result<WorkflowTemplate> {
    let r = ctx.data_unchecked::<RequestCtx>();
    r.loaders
        .templates
        .load_one(id.to_owned())
        .await
        .map_err(load_err)?
        .map(WorkflowTemplate)
        .ok_or_else(|| missing("workflow template", id))
}

/// Shared with the request's DataLoader cache: handing a step out does not copy its JSON.
pub struct WorkflowStep(pub Arc<step::Model>);

plain_object! {
    #[Object]
    WorkflowStep(row) {
        plain "id" id: id(row.id),
        plain "workflowTemplateId" workflow_template_id: id(row.workflow_template_id),
        resolvers {
            async fn template(&self, ctx: &Context<'_>) -> Result<WorkflowTemplate> {
                load_template(ctx, &self.0.workflow_template_id).await
        }
        }
        plain "stepOrder" step_order: int(row.step_order),
        plain "agentId" agent_id: str(row.agent_id),
        plain "promptTemplate" prompt_template: str(row.prompt_template),
        plain "requiresUserInput" requires_user_input: boolean(row.requires_user_input),
        plain "inputSchema" input_schema: opt_json(row.input_schema),
        plain "metadata" metadata: opt_json(row.metadata),
        plain "condition" condition: opt_json(row.condition),
        /// Adjacent steps sharing a group run side by side.
        plain "parallelGroup" parallel_group: opt_str(row.parallel_group),
        resolvers {
            /// Who must approve the step before it runs.
            async fn approval(&self) -> Result<Option<WorkflowApprovalRule>> {
                // A stored rule that cannot be read is an error, never "no approval".
                let rule = self
                    .0
                    .approval
                    .as_ref()
                    .map(crate::core::definition::ApprovalRule::parse);
                match rule.transpose() {
                    Ok(rule) => Ok(rule.map(Into::into)),
                    Err(e) => {
                        Err(ApiError::Internal(format!("step {} has an unreadable approval rule: {e}", self.0.id)).into())
                    }
                }
        }
        }
        plain "createdAt" created_at: time(row.created_at),
        plain "updatedAt" updated_at: time(row.updated_at),
    }
}

#[derive(Clone)]
/// An execution row, with its step records when the caller already has them
/// (subscription events carry the state after the event).
pub struct WorkflowExecution(pub Arc<execution::Model>, pub Option<KnownSteps>);

/// Step records that came with the execution row, so `steps` reads nothing.
#[derive(Clone)]
pub enum KnownSteps {
    /// An event's state, shared by every subscriber it is rendered for.
    Event(Arc<Vec<exec_step::Model>>),
    /// Read in the same statement as the row (`executions::detail`).
    Read(Arc<Vec<Arc<exec_step::Model>>>),
}

impl WorkflowExecution {
    pub fn new(row: execution::Model) -> Self {
        Self(Arc::new(row), None)
    }
}

plain_object! {
    #[Object]
    WorkflowExecution(row) {
        plain "id" id: id(row.id),
        plain "workflowTemplateId" workflow_template_id: id(row.workflow_template_id),
        resolvers {
            async fn template(&self, ctx: &Context<'_>) -> Result<WorkflowTemplate> {
                load_template(ctx, &self.0.workflow_template_id).await
        }
        }
        plain "userId" user_id: id(row.user_id),
        resolvers {
            async fn user(&self, ctx: &Context<'_>) -> Result<User> {
                load_user(ctx, &self.0.user_id).await
        }
        }
        plain "driveId" drive_id: id(row.drive_id),
        plain "status" status: exec_status(row.status),
        plain "currentStepOrder" current_step_order: opt_int(row.current_step_order),
        plain "accumulatedContext" accumulated_context: json(row.accumulated_context),
        /// The context the run started with.
        plain "initialContext" initial_context: json(row.initial_context),
        /// The template version the run executes.
        plain "templateVersion" template_version: int(row.template_version),
        resolvers {
            /// The run this one re-runs from a step (null when the viewer may not see it).
            async fn retry_of(&self, ctx: &Context<'_>) -> Result<Option<WorkflowExecution>> {
                let Some(id) = &self.0.retry_of_execution_id else {
                    return Ok(None);
                };
                let r = ctx.data_unchecked::<RequestCtx>();
                let access = r.access().await?;
                let row = r.loaders.executions.load_one(id.clone()).await.map_err(load_err)?;
                Ok(row.filter(|e| access.can_see_execution(e)).map(WorkflowExecution::new))
        }
        /// The runs that re-run this one, oldest first (those the viewer may see).
        async fn retries(&self, ctx: &Context<'_>) -> Result<Vec<WorkflowExecution>> {
            let r = ctx.data_unchecked::<RequestCtx>();
            let rows = r
                .loaders
                .retries_of
                .load_one(self.0.id.clone())
                .await
                .map_err(load_err)?
                .unwrap_or_default();
            let access = r.access().await?;
            Ok(rows
                .into_iter()
                .filter(|e| access.can_see_execution(e))
                .map(WorkflowExecution::new)
                .collect())
        }
        }
        plain "startedAt" started_at: opt_time(row.started_at),
        plain "pausedAt" paused_at: opt_time(row.paused_at),
        plain "completedAt" completed_at: opt_time(row.completed_at),
        plain "failedAt" failed_at: opt_time(row.failed_at),
        plain "errorMessage" error_message: opt_str(row.error_message),
        /// The schedule that started this run; null for runs started by hand
        /// (and once the schedule is deleted).
        plain "scheduleId" schedule_id: opt_id(row.schedule_id),
        /// For a scheduled run, the due time it was started for.
        plain "scheduledFor" scheduled_for: opt_time(row.scheduled_for),
        resolvers {
            /// Ordered by `stepOrder`.
            async fn steps(&self, ctx: &Context<'_>) -> Result<DirectList<WorkflowExecutionStep>> {
                // An event carries the steps as they were after it: no query per
                // subscriber per event, and the state matches the event.
                match &self.1 {
                    Some(KnownSteps::Event(steps)) => {
                        return Ok(DirectList(
                            steps
                                .iter()
                                .map(|s| WorkflowExecutionStep::of(Arc::new(s.clone()), &self.0))
                                .collect(),
                        ));
                    }
                    Some(KnownSteps::Read(steps)) => {
                        return Ok(DirectList(
                            steps
                                .iter()
                                .map(|s| WorkflowExecutionStep::of(s.clone(), &self.0))
                                .collect(),
                        ));
                    }
                    None => {}
                }
                let r = ctx.data_unchecked::<RequestCtx>();
                let rows = r
                    .loaders
                    .steps_of_execution
                    .load_one(self.0.id.clone())
                    .await
                    .map_err(load_err)?
                    .unwrap_or_default();
                Ok(DirectList(
                    rows.into_iter()
                        .map(|s| WorkflowExecutionStep::of(s, &self.0))
                        .collect(),
                ))
        }
        }
        plain "createdAt" created_at: time(row.created_at),
        plain "updatedAt" updated_at: time(row.updated_at),
    }
}

impl WorkflowExecutionStep {
    async fn decisions(&self, ctx: &Context<'_>) -> Result<Vec<entity::workflow_execution_approval::Model>> {
        let r = ctx.data_unchecked::<RequestCtx>();
        Ok(r.loaders
            .approvals_of_step
            .load_one(self.0.id.clone())
            .await
            .map_err(load_err)?
            .unwrap_or_default())
    }
}

/// Shared with the request's DataLoader cache, like `WorkflowStep`.
/// The bool: the run is PAUSED at this step.
pub struct WorkflowExecutionStep(pub Arc<exec_step::Model>, pub bool);

impl WorkflowExecutionStep {
    pub fn of(step: Arc<exec_step::Model>, exec: &execution::Model) -> Self {
        let paused_here = exec.status == entity::ExecutionStatus::Paused
            && exec.current_step_order == Some(step.step_order)
            && step.status == entity::StepStatus::Pending;
        Self(step, paused_here)
    }
}

plain_object! {
    #[Object]
    WorkflowExecutionStep(row) {
        resolvers {
            /// While the run is PAUSED at this step: APPROVAL until enough people
            /// approved, then INPUT when it also needs input; else null.
            async fn awaiting(&self, ctx: &Context<'_>) -> Result<Option<Awaiting>> {
                if !self.1 {
                    return Ok(None);
                }
                let Some(stored) = &self.0.definition else {
                    return Ok(None);
                };
                let def = crate::core::definition::StepDefinition::read(stored)
                    .map_err(|why| ApiError::Internal(format!("step record {}: {why}", self.0.id)))?;
                if let Some(rule) = &def.approval {
                    let approved = self.decisions(ctx).await?.iter().filter(|d| d.approve).count() as u32;
                    if approved < rule.required {
                        return Ok(Some(Awaiting::Approval));
                    }
                }
                Ok((def.requires_user_input && self.0.user_input.is_none()).then_some(Awaiting::Input))
        }
        /// The decisions on this step, oldest first.
        async fn approvals(&self, ctx: &Context<'_>) -> Result<Vec<WorkflowApproval>> {
            Ok(self.decisions(ctx).await?.into_iter().map(WorkflowApproval).collect())
        }
        }
        plain "id" id: id(row.id),
        plain "workflowExecutionId" workflow_execution_id: id(row.workflow_execution_id),
        plain "workflowStepId" workflow_step_id: opt_id(row.workflow_step_id),
        resolvers {
            /// The template step this record ran; null once that step was deleted.
            async fn step_definition(&self, ctx: &Context<'_>) -> Result<Option<WorkflowStep>> {
                let Some(id) = &self.0.workflow_step_id else {
                    return Ok(None);
                };
                let r = ctx.data_unchecked::<RequestCtx>();
                Ok(r.loaders
                    .steps
                    .load_one(id.clone())
                    .await
                    .map_err(load_err)?
                    .map(|s| WorkflowStep(Arc::new(s))))
        }
        }
        plain "stepOrder" step_order: int(row.step_order),
        plain "status" status: step_status(row.status),
        plain "agentInput" agent_input: opt_json(row.agent_input),
        plain "agentOutput" agent_output: opt_json(row.agent_output),
        plain "userInput" user_input: opt_json(row.user_input),
        plain "startedAt" started_at: opt_time(row.started_at),
        plain "completedAt" completed_at: opt_time(row.completed_at),
        plain "errorMessage" error_message: opt_str(row.error_message),
        /// Copied, as it ended, from the run this one retries; it did not run again.
        plain "reused" reused: boolean(row.reused),
        plain "createdAt" created_at: time(row.created_at),
        plain "updatedAt" updated_at: time(row.updated_at),
    }
}

/// Shared with the request's DataLoader cache, like `WorkflowStep`.
#[derive(Clone)]
pub struct WorkflowSchedule(pub Arc<schedule::Model>);

#[Object]
impl WorkflowSchedule {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn template_id(&self) -> ID {
        ID(self.0.template_id.clone())
    }
    async fn template(&self, ctx: &Context<'_>) -> Result<WorkflowTemplate> {
        load_template(ctx, &self.0.template_id).await
    }
    async fn drive_id(&self) -> ID {
        ID(self.0.drive_id.clone())
    }
    /// 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first.
    async fn cron(&self) -> &str {
        &self.0.cron
    }
    /// The IANA time zone the cron expression is read in.
    async fn timezone(&self) -> &str {
        &self.0.timezone
    }
    /// The context every run starts with.
    async fn context(&self) -> StoredJson<'_> {
        StoredJson(&self.0.context)
    }
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// The next due time; null while disabled.
    async fn next_run_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_run_at.map(utc)
    }
    /// When the schedule last started a run.
    async fn last_run_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_run_at.map(utc)
    }
    /// Why the last due time started no run; null after a run started.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    async fn created_by(&self) -> ID {
        ID(self.0.created_by.clone())
    }
    /// The user runs start as.
    async fn creator(&self, ctx: &Context<'_>) -> Result<User> {
        load_user(ctx, &self.0.created_by).await
    }
    /// The next `count` (0..=100) due times after now, whether or not the
    /// schedule is enabled.
    async fn next_runs(&self, ctx: &Context<'_>, #[graphql(default = 5)] count: i32) -> Result<Vec<DateTime<Utc>>> {
        if !(0..=100).contains(&count) {
            return Err(ApiError::bad_input("count: must be between 0 and 100").into());
        }
        let spec = crate::core::cron::Schedule::parse("", &self.0.cron, &self.0.timezone)?;
        Ok(spec
            .upcoming(
                ctx.data_unchecked::<crate::graphql::SchemaData>().engine.clock().now(),
                count as usize,
            )
            .into_iter()
            .map(utc)
            .collect())
    }
    /// The runs this schedule started that the viewer may see (their own;
    /// every one for ADMIN/OWNER), newest first.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn executions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<WorkflowExecutionConnection> {
        use crate::domain::pagination::{Cursor, page_size};
        let r = ctx.data_unchecked::<RequestCtx>();
        let first = page_size(first)?;
        let after = after.as_deref().map(Cursor::decode).transpose()?;
        let Some(user_id) = r.access().await?.schedule_runs_filter(&self.0.drive_id) else {
            return Ok(WorkflowExecutionConnection {
                nodes: Vec::new(),
                cursors: Vec::new(),
                page_info: PageInfo {
                    has_next_page: false,
                    has_previous_page: after.is_some(),
                    start_cursor: None,
                    end_cursor: None,
                },
                count_condition: None,
            });
        };
        let mut count_condition = Condition::all().add(execution::Column::ScheduleId.eq(self.0.id.clone()));
        if let Some(u) = &user_id {
            count_condition = count_condition.add(execution::Column::UserId.eq(u.clone()));
        }
        let page = r
            .loaders
            .runs_of_schedule
            .load_one(crate::graphql::loaders::ScheduleRunsKey {
                schedule_id: self.0.id.clone(),
                user_id,
                first,
                after: after.map(|c| (c.created_at, c.id)),
            })
            .await
            .map_err(load_err)?
            .ok_or_else(|| missing("runs of schedule", &self.0.id))?;
        let cursors: Vec<String> = page
            .rows
            .iter()
            .map(|e| crate::domain::pagination::Cursor::encode(e.created_at, &e.id))
            .collect();
        Ok(WorkflowExecutionConnection {
            page_info: PageInfo::of(&page, &cursors),
            cursors,
            nodes: page.rows.into_iter().map(WorkflowExecution::new).collect(),
            count_condition: Some(count_condition),
        })
    }
    async fn created_at(&self) -> DateTime<Utc> {
        utc(self.0.created_at)
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        utc(self.0.updated_at)
    }
}

connection!(
    WorkflowTemplateConnection,
    WorkflowTemplateEdge,
    WorkflowTemplate,
    DirectList,
    crate::domain::templates::count
);
connection!(
    WorkflowScheduleConnection,
    WorkflowScheduleEdge,
    WorkflowSchedule,
    Vec,
    crate::domain::schedules::count
);
connection!(
    WorkflowExecutionConnection,
    WorkflowExecutionEdge,
    WorkflowExecution,
    DirectList,
    crate::domain::executions::count
);
