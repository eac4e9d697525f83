//! The GraphQL object types of API.md. Each wraps an entity model; nested
//! fields go through the request's DataLoaders.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, NaiveDateTime, Utc};
use entity::workflow_schedule as schedule;
use entity::{drive, drive_member, user, workflow_execution as execution, workflow_execution_step as exec_step};
use entity::{workflow_step as step, workflow_template as template, workflow_template_version as version};
use std::sync::Arc;

use sea_orm::{ColumnTrait, Condition};

use super::json::StoredJson;
pub use super::render::{Direct, DirectList};
use super::{RequestCtx, loaders::LoadError};
use crate::error::ApiError;

pub(crate) fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

pub(crate) fn load_err(e: LoadError) -> async_graphql::Error {
    ApiError::Internal(format!("loading related rows failed: {e}")).into()
}

fn missing(what: &str, id: &str) -> async_graphql::Error {
    ApiError::Internal(format!("{what} {id} is referenced but missing")).into()
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "DriveRole")]
pub enum DriveRoleGql {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl From<entity::DriveRole> for DriveRoleGql {
    fn from(r: entity::DriveRole) -> Self {
        match r {
            entity::DriveRole::Owner => Self::Owner,
            entity::DriveRole::Admin => Self::Admin,
            entity::DriveRole::Member => Self::Member,
            entity::DriveRole::Viewer => Self::Viewer,
        }
    }
}

impl From<DriveRoleGql> for entity::DriveRole {
    fn from(r: DriveRoleGql) -> Self {
        match r {
            DriveRoleGql::Owner => Self::Owner,
            DriveRoleGql::Admin => Self::Admin,
            DriveRoleGql::Member => Self::Member,
            DriveRoleGql::Viewer => Self::Viewer,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "WorkflowExecutionStatus")]
pub enum ExecutionStatusGql {
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl From<entity::ExecutionStatus> for ExecutionStatusGql {
    fn from(s: entity::ExecutionStatus) -> Self {
        use entity::ExecutionStatus as S;
        match s {
            S::Running => Self::Running,
            S::Paused => Self::Paused,
            S::Completed => Self::Completed,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
        }
    }
}

impl From<ExecutionStatusGql> for entity::ExecutionStatus {
    fn from(s: ExecutionStatusGql) -> Self {
        match s {
            ExecutionStatusGql::Running => Self::Running,
            ExecutionStatusGql::Paused => Self::Paused,
            ExecutionStatusGql::Completed => Self::Completed,
            ExecutionStatusGql::Failed => Self::Failed,
            ExecutionStatusGql::Cancelled => Self::Cancelled,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "WorkflowExecutionStepStatus")]
pub enum StepStatusGql {
    Pending,
    Running,
    Completed,
    Failed,
    Skipped,
}

impl From<entity::StepStatus> for StepStatusGql {
    fn from(s: entity::StepStatus) -> Self {
        use entity::StepStatus as S;
        match s {
            S::Pending => Self::Pending,
            S::Running => Self::Running,
            S::Completed => Self::Completed,
            S::Failed => Self::Failed,
            S::Skipped => Self::Skipped,
        }
    }
}

pub struct User(pub user::Model);

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }
}

async fn load_user(ctx: &Context<'_>, id: &str) -> Result<User> {
    let r = ctx.data_unchecked::<RequestCtx>();
    r.loaders
        .users
        .load_one(id.to_owned())
        .await
        .map_err(load_err)?
        .map(User)
        .ok_or_else(|| missing("user", id))
}

pub struct Drive(pub drive::Model);

#[Object]
impl Drive {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn owner(&self, ctx: &Context<'_>) -> Result<User> {
        load_user(ctx, &self.0.owner_id).await
    }
    /// The viewer's role in this drive.
    async fn my_role(&self, ctx: &Context<'_>) -> Result<DriveRoleGql> {
        let r = ctx.data_unchecked::<RequestCtx>();
        r.access()
            .await?
            .role(&self.0.id)
            .map(Into::into)
            .ok_or_else(|| ApiError::not_found("drive", &self.0.id).into())
    }
    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<DriveMember>> {
        let r = ctx.data_unchecked::<RequestCtx>();
        let rows = r
            .loaders
            .members_of_drive
            .load_one(self.0.id.clone())
            .await
            .map_err(load_err)?
            .unwrap_or_default();
        Ok(rows.into_iter().map(DriveMember).collect())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        utc(self.0.created_at)
    }
}

pub struct DriveMember(pub drive_member::Model);

#[Object]
impl DriveMember {
    async fn user(&self, ctx: &Context<'_>) -> Result<User> {
        load_user(ctx, &self.0.user_id).await
    }
    async fn role(&self) -> DriveRoleGql {
        self.0.role.into()
    }
}

#[derive(SimpleObject)]
pub struct Agent {
    pub id: ID,
    pub description: Option<String>,
    pub provider: String,
}

#[derive(Clone)]
pub struct WorkflowTemplate(pub template::Model);

#[Object]
impl WorkflowTemplate {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    async fn drive_id(&self) -> ID {
        ID(self.0.drive_id.clone())
    }
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
    async fn created_by(&self) -> ID {
        ID(self.0.created_by.clone())
    }
    async fn creator(&self, ctx: &Context<'_>) -> Result<Direct<User>> {
        load_user(ctx, &self.0.created_by).await.map(Direct)
    }
    async fn category(&self) -> Option<&str> {
        self.0.category.as_deref()
    }
    async fn tags(&self) -> &[String] {
        &self.0.tags.0
    }
    async fn is_public(&self) -> bool {
        self.0.is_public
    }
    /// Bumped by every change to the template or its steps (from 1).
    async fn version(&self) -> i32 {
        self.0.version
    }
    /// The template this one was duplicated from.
    async fn parent_template_id(&self) -> Option<ID> {
        self.0.parent_template_id.clone().map(ID)
    }
    /// The template as each change left it, newest first.
    #[graphql(complexity = "super::query::page_complexity(first, child_complexity)")]
    async fn versions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<WorkflowTemplateVersionConnection> {
        let r = ctx.data_unchecked::<RequestCtx>();
        let first = crate::domain::pagination::page_size(first)?;
        let before = after.as_deref().map(decode_version_cursor).transpose()?;
        let key = super::loaders::VersionPage {
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
    /// (whoever started them) that started on `since`'s UTC day or later
    /// (default: all). Kept as runs and steps finish, so they survive the
    /// retention sweep; see the README for what each number means.
    async fn stats(&self, ctx: &Context<'_>, since: Option<DateTime<Utc>>) -> Result<WorkflowTemplateStats> {
        let r = ctx.data_unchecked::<RequestCtx>();
        if !r.access().await?.can_see_template_stats(&self.0) {
            return Err(ApiError::not_found("workflow template", &self.0.id).into());
        }
        let key = super::loaders::StatsKey {
            template_id: self.0.id.clone(),
            since: since.map(|t| t.date_naive()),
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
    async fn created_at(&self) -> DateTime<Utc> {
        utc(self.0.created_at)
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        utc(self.0.updated_at)
    }
}

fn version_cursor(version: i32) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("version:{version}"))
}

fn decode_version_cursor(s: &str) -> Result<i32, ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_input("after: not a cursor returned by this API");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    raw.strip_prefix("version:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)
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

#[Object]
impl WorkflowStep {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn workflow_template_id(&self) -> ID {
        ID(self.0.workflow_template_id.clone())
    }
    async fn template(&self, ctx: &Context<'_>) -> Result<WorkflowTemplate> {
        load_template(ctx, &self.0.workflow_template_id).await
    }
    async fn step_order(&self) -> i32 {
        self.0.step_order
    }
    async fn agent_id(&self) -> &str {
        &self.0.agent_id
    }
    async fn prompt_template(&self) -> &str {
        &self.0.prompt_template
    }
    async fn requires_user_input(&self) -> bool {
        self.0.requires_user_input
    }
    async fn input_schema(&self) -> Option<StoredJson<'_>> {
        self.0.input_schema.as_ref().map(StoredJson)
    }
    async fn metadata(&self) -> Option<StoredJson<'_>> {
        self.0.metadata.as_ref().map(StoredJson)
    }
    async fn condition(&self) -> Option<StoredJson<'_>> {
        self.0.condition.as_ref().map(StoredJson)
    }
    /// Adjacent steps sharing a group run side by side.
    async fn parallel_group(&self) -> Option<&str> {
        self.0.parallel_group.as_deref()
    }
    /// Who must approve the step before it runs.
    async fn approval(&self) -> Result<Option<WorkflowApprovalRule>> {
        // A stored rule that cannot be read is an error, never "no approval".
        let rule = self
            .0
            .approval
            .as_ref()
            .map(crate::engine::definition::ApprovalRule::parse);
        match rule.transpose() {
            Ok(rule) => Ok(rule.map(Into::into)),
            Err(e) => {
                Err(ApiError::Internal(format!("step {} has an unreadable approval rule: {e}", self.0.id)).into())
            }
        }
    }
    async fn created_at(&self) -> DateTime<Utc> {
        utc(self.0.created_at)
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        utc(self.0.updated_at)
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

#[Object]
impl WorkflowExecution {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn workflow_template_id(&self) -> ID {
        ID(self.0.workflow_template_id.clone())
    }
    async fn template(&self, ctx: &Context<'_>) -> Result<WorkflowTemplate> {
        load_template(ctx, &self.0.workflow_template_id).await
    }
    async fn user_id(&self) -> ID {
        ID(self.0.user_id.clone())
    }
    async fn user(&self, ctx: &Context<'_>) -> Result<User> {
        load_user(ctx, &self.0.user_id).await
    }
    async fn drive_id(&self) -> ID {
        ID(self.0.drive_id.clone())
    }
    async fn status(&self) -> ExecutionStatusGql {
        self.0.status.into()
    }
    async fn current_step_order(&self) -> Option<i32> {
        self.0.current_step_order
    }
    async fn accumulated_context(&self) -> StoredJson<'_> {
        StoredJson(&self.0.accumulated_context)
    }
    /// The context the run started with.
    async fn initial_context(&self) -> StoredJson<'_> {
        StoredJson(&self.0.initial_context)
    }
    /// The template version the run executes.
    async fn template_version(&self) -> i32 {
        self.0.template_version
    }
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
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at.map(utc)
    }
    async fn paused_at(&self) -> Option<DateTime<Utc>> {
        self.0.paused_at.map(utc)
    }
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at.map(utc)
    }
    async fn failed_at(&self) -> Option<DateTime<Utc>> {
        self.0.failed_at.map(utc)
    }
    async fn error_message(&self) -> Option<&str> {
        self.0.error_message.as_deref()
    }
    /// The schedule that started this run; null for runs started by hand
    /// (and once the schedule is deleted).
    async fn schedule_id(&self) -> Option<ID> {
        self.0.schedule_id.clone().map(ID)
    }
    /// For a scheduled run, the due time it was started for.
    async fn scheduled_for(&self) -> Option<DateTime<Utc>> {
        self.0.scheduled_for.map(utc)
    }
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
    async fn created_at(&self) -> DateTime<Utc> {
        utc(self.0.created_at)
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        utc(self.0.updated_at)
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

/// What a step the run is paused at waits for.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "WorkflowExecutionStepAwaiting")]
pub enum Awaiting {
    Approval,
    Input,
}

/// Who may decide on a step, and how many approvals it needs.
#[derive(SimpleObject)]
pub struct WorkflowApprovalRule {
    pub required: i32,
    /// Drive members of at least this role decide (MEMBER when not set)…
    pub min_role: Option<DriveRoleGql>,
    /// …or only these users, when set.
    pub user_ids: Option<Vec<ID>>,
    pub allow_starter: bool,
}

impl From<crate::engine::definition::ApprovalRule> for WorkflowApprovalRule {
    fn from(r: crate::engine::definition::ApprovalRule) -> Self {
        Self {
            required: r.required as i32,
            min_role: r.min_role.map(Into::into),
            user_ids: r.user_ids.map(|ids| ids.into_iter().map(ID).collect()),
            allow_starter: r.allow_starter,
        }
    }
}

/// One person's decision on a step.
pub struct WorkflowApproval(pub entity::workflow_execution_approval::Model);

#[Object]
impl WorkflowApproval {
    async fn user(&self, ctx: &Context<'_>) -> Result<User> {
        load_user(ctx, &self.0.user_id).await
    }
    async fn approve(&self) -> bool {
        self.0.approve
    }
    async fn comment(&self) -> Option<&str> {
        self.0.comment.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        utc(self.0.created_at)
    }
}

#[Object]
impl WorkflowExecutionStep {
    /// While the run is PAUSED at this step: APPROVAL until enough people
    /// approved, then INPUT when it also needs input; else null.
    async fn awaiting(&self, ctx: &Context<'_>) -> Result<Option<Awaiting>> {
        if !self.1 {
            return Ok(None);
        }
        let Some(stored) = &self.0.definition else {
            return Ok(None);
        };
        let def = crate::engine::definition::StepDefinition::read(stored)
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
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn workflow_execution_id(&self) -> ID {
        ID(self.0.workflow_execution_id.clone())
    }
    async fn workflow_step_id(&self) -> Option<ID> {
        self.0.workflow_step_id.clone().map(ID)
    }
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
    async fn step_order(&self) -> i32 {
        self.0.step_order
    }
    async fn status(&self) -> StepStatusGql {
        self.0.status.into()
    }
    async fn agent_input(&self) -> Option<StoredJson<'_>> {
        self.0.agent_input.as_ref().map(StoredJson)
    }
    async fn agent_output(&self) -> Option<StoredJson<'_>> {
        self.0.agent_output.as_ref().map(StoredJson)
    }
    async fn user_input(&self) -> Option<StoredJson<'_>> {
        self.0.user_input.as_ref().map(StoredJson)
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at.map(utc)
    }
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at.map(utc)
    }
    async fn error_message(&self) -> Option<&str> {
        self.0.error_message.as_deref()
    }
    /// Copied, as it ended, from the run this one retries; it did not run again.
    async fn reused(&self) -> bool {
        self.0.reused
    }
    async fn created_at(&self) -> DateTime<Utc> {
        utc(self.0.created_at)
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        utc(self.0.updated_at)
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
        let spec = crate::domain::cron::Schedule::parse("", &self.0.cron, &self.0.timezone)?;
        Ok(spec
            .upcoming(
                ctx.data_unchecked::<super::SchemaData>().engine.clock().now(),
                count as usize,
            )
            .into_iter()
            .map(utc)
            .collect())
    }
    /// The runs this schedule started that the viewer may see (their own;
    /// every one for ADMIN/OWNER), newest first.
    #[graphql(complexity = "super::query::page_complexity(first, child_complexity)")]
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
            .load_one(super::loaders::ScheduleRunsKey {
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

/// `pageInfo` of a page of rows with these cursors.
impl PageInfo {
    pub fn of<T>(page: &crate::domain::pagination::Page<T>, cursors: &[String]) -> Self {
        Self {
            has_next_page: page.has_next_page,
            has_previous_page: page.has_previous_page,
            start_cursor: cursors.first().cloned(),
            end_cursor: cursors.last().cloned(),
        }
    }
}

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

/// Relay connection over a page of rows; `totalCount` runs its COUNT only
/// when a client asks for it.
macro_rules! connection {
    ($conn:ident, $edge:ident, $node:ident, $list:ident, $count:path) => {
        #[derive(SimpleObject)]
        pub struct $edge {
            pub cursor: String,
            pub node: $node,
        }

        pub struct $conn {
            pub(crate) nodes: Vec<$node>,
            pub(crate) cursors: Vec<String>,
            pub(crate) page_info: PageInfo,
            pub(crate) count_condition: Option<Condition>,
        }

        #[Object]
        impl $conn {
            async fn edges(&self) -> Vec<$edge> {
                self.nodes
                    .iter()
                    .zip(&self.cursors)
                    .map(|(n, c)| $edge {
                        cursor: c.clone(),
                        node: n.clone(),
                    })
                    .collect()
            }
            async fn nodes(&self) -> $list<$node> {
                self.nodes.iter().map(Clone::clone).collect::<Vec<_>>().into()
            }
            async fn page_info(&self) -> &PageInfo {
                &self.page_info
            }
            async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
                let Some(cond) = self.count_condition.clone() else {
                    return Ok(0);
                };
                let r = ctx.data_unchecked::<RequestCtx>();
                Ok($count(&r.db, cond).await.map_err(ApiError::from)? as i64)
            }
        }
    };
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

/// A template's runs in numbers (API.md "Analytics").
#[derive(SimpleObject)]
pub struct WorkflowTemplateStats {
    /// Runs that started in the period: finished ones plus `active`.
    pub runs: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// RUNNING or PAUSED now.
    pub active: i64,
    /// completed / (completed + failed + cancelled); null when none finished.
    pub success_rate: Option<f64>,
    /// Finished runs, from `startedAt` to the end (time paused included).
    pub duration_ms: WorkflowDurationStats,
    /// From the `usage` of agent outputs (`openai` agents), over completed steps.
    pub tokens: WorkflowTokenStats,
    /// Each `stepOrder` that has ended in the period, in order.
    pub steps: Vec<WorkflowStepStats>,
}

/// Percentiles from fixed buckets (at most 9.1% above the true value, never
/// below it, never above `max`); `max` is exact. Null when nothing was timed.
#[derive(SimpleObject)]
pub struct WorkflowDurationStats {
    pub p50: Option<i64>,
    pub p95: Option<i64>,
    pub max: Option<i64>,
}

#[derive(SimpleObject)]
pub struct WorkflowTokenStats {
    pub prompt: i64,
    pub completion: i64,
}

/// One step of a template, over the runs in which it ended.
#[derive(SimpleObject)]
pub struct WorkflowStepStats {
    pub step_order: i32,
    /// completed + failed + skipped.
    pub runs: i64,
    pub completed: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Agent calls, retries included.
    pub attempts: i64,
    /// From the step starting to it ending (skipped steps are not timed).
    pub duration_ms: WorkflowDurationStats,
}

impl From<&crate::domain::stats::Totals> for WorkflowDurationStats {
    fn from(t: &crate::domain::stats::Totals) -> Self {
        Self {
            p50: t.percentile(0.5),
            p95: t.percentile(0.95),
            max: t.max_ms,
        }
    }
}

impl From<&crate::domain::stats::TemplateStats> for WorkflowTemplateStats {
    fn from(s: &crate::domain::stats::TemplateStats) -> Self {
        let r = &s.runs;
        let finished = r.completed + r.failed + r.cancelled;
        Self {
            runs: finished + s.active,
            completed: r.completed,
            failed: r.failed,
            cancelled: r.cancelled,
            active: s.active,
            success_rate: (finished > 0).then(|| r.completed as f64 / finished as f64),
            duration_ms: r.into(),
            tokens: WorkflowTokenStats {
                prompt: s.steps.values().map(|t| t.prompt_tokens).sum(),
                completion: s.steps.values().map(|t| t.completion_tokens).sum(),
            },
            steps: s
                .steps
                .iter()
                .map(|(order, t)| WorkflowStepStats {
                    step_order: *order,
                    runs: t.completed + t.failed + t.skipped,
                    completed: t.completed,
                    failed: t.failed,
                    skipped: t.skipped,
                    attempts: t.attempts,
                    duration_ms: t.into(),
                })
                .collect(),
        }
    }
}

/// The plain fields of the types the big reads return, written as text
/// (`render`). Each arm writes what the field's resolver above returns.
mod plain {
    use std::io::Write;

    use async_graphql::resolver_utils::enum_value;
    use chrono::NaiveDateTime;

    use super::*;
    use crate::graphql::json::{write_str, write_value};
    use crate::graphql::render::Plain;

    fn str_or_null(s: Option<&str>, out: &mut Vec<u8>) {
        match s {
            Some(s) => write_str(s, out),
            None => out.extend_from_slice(b"null"),
        }
    }

    fn int(n: i32, out: &mut Vec<u8>) {
        write!(out, "{n}").expect("writing to a Vec");
    }

    fn int_or_null(n: Option<i32>, out: &mut Vec<u8>) {
        match n {
            Some(n) => int(n, out),
            None => out.extend_from_slice(b"null"),
        }
    }

    fn boolean(b: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(if b { b"true" } else { b"false" });
    }

    fn time(t: NaiveDateTime, out: &mut Vec<u8>) {
        write_str(&utc(t).to_rfc3339(), out);
    }

    fn time_or_null(t: Option<NaiveDateTime>, out: &mut Vec<u8>) {
        match t {
            Some(t) => time(t, out),
            None => out.extend_from_slice(b"null"),
        }
    }

    fn json(v: &serde_json::Value, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, v).expect("a JSON value serializes");
    }

    fn json_or_null(v: Option<&serde_json::Value>, out: &mut Vec<u8>) {
        match v {
            Some(v) => json(v, out),
            None => out.extend_from_slice(b"null"),
        }
    }

    impl Plain for User {
        fn write_plain(&self, name: &str, out: &mut Vec<u8>) -> bool {
            let u = &self.0;
            match name {
                "id" => write_str(&u.id, out),
                "name" => str_or_null(u.name.as_deref(), out),
                "email" => str_or_null(u.email.as_deref(), out),
                _ => return false,
            }
            true
        }
    }

    impl Plain for WorkflowTemplate {
        fn write_plain(&self, name: &str, out: &mut Vec<u8>) -> bool {
            let t = &self.0;
            match name {
                "id" => write_str(&t.id, out),
                "name" => write_str(&t.name, out),
                "description" => str_or_null(t.description.as_deref(), out),
                "driveId" => write_str(&t.drive_id, out),
                "createdBy" => write_str(&t.created_by, out),
                "category" => str_or_null(t.category.as_deref(), out),
                "tags" => {
                    out.push(b'[');
                    for (i, tag) in t.tags.0.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_str(tag, out);
                    }
                    out.push(b']');
                }
                "isPublic" => boolean(t.is_public, out),
                "version" => int(t.version, out),
                "parentTemplateId" => str_or_null(t.parent_template_id.as_deref(), out),
                "createdAt" => time(t.created_at, out),
                "updatedAt" => time(t.updated_at, out),
                _ => return false,
            }
            true
        }
    }

    impl Plain for WorkflowStep {
        fn write_plain(&self, name: &str, out: &mut Vec<u8>) -> bool {
            let s = &self.0;
            match name {
                "id" => write_str(&s.id, out),
                "workflowTemplateId" => write_str(&s.workflow_template_id, out),
                "stepOrder" => int(s.step_order, out),
                "agentId" => write_str(&s.agent_id, out),
                "promptTemplate" => write_str(&s.prompt_template, out),
                "requiresUserInput" => boolean(s.requires_user_input, out),
                "inputSchema" => json_or_null(s.input_schema.as_ref(), out),
                "metadata" => json_or_null(s.metadata.as_ref(), out),
                "condition" => json_or_null(s.condition.as_ref(), out),
                "parallelGroup" => str_or_null(s.parallel_group.as_deref(), out),
                "createdAt" => time(s.created_at, out),
                "updatedAt" => time(s.updated_at, out),
                _ => return false,
            }
            true
        }
    }

    impl Plain for WorkflowExecution {
        fn write_plain(&self, name: &str, out: &mut Vec<u8>) -> bool {
            let e = &self.0;
            match name {
                "id" => write_str(&e.id, out),
                "workflowTemplateId" => write_str(&e.workflow_template_id, out),
                "userId" => write_str(&e.user_id, out),
                "driveId" => write_str(&e.drive_id, out),
                "status" => write_value(&enum_value(ExecutionStatusGql::from(e.status)), out),
                "currentStepOrder" => int_or_null(e.current_step_order, out),
                "accumulatedContext" => json(&e.accumulated_context, out),
                "initialContext" => json(&e.initial_context, out),
                "templateVersion" => int(e.template_version, out),
                "startedAt" => time_or_null(e.started_at, out),
                "pausedAt" => time_or_null(e.paused_at, out),
                "completedAt" => time_or_null(e.completed_at, out),
                "failedAt" => time_or_null(e.failed_at, out),
                "errorMessage" => str_or_null(e.error_message.as_deref(), out),
                "scheduleId" => str_or_null(e.schedule_id.as_deref(), out),
                "scheduledFor" => time_or_null(e.scheduled_for, out),
                "createdAt" => time(e.created_at, out),
                "updatedAt" => time(e.updated_at, out),
                _ => return false,
            }
            true
        }
    }

    impl Plain for WorkflowExecutionStep {
        fn write_plain(&self, name: &str, out: &mut Vec<u8>) -> bool {
            let s = &self.0;
            match name {
                "id" => write_str(&s.id, out),
                "workflowExecutionId" => write_str(&s.workflow_execution_id, out),
                "workflowStepId" => str_or_null(s.workflow_step_id.as_deref(), out),
                "stepOrder" => int(s.step_order, out),
                "status" => write_value(&enum_value(StepStatusGql::from(s.status)), out),
                "agentInput" => json_or_null(s.agent_input.as_ref(), out),
                "agentOutput" => json_or_null(s.agent_output.as_ref(), out),
                "userInput" => json_or_null(s.user_input.as_ref(), out),
                "startedAt" => time_or_null(s.started_at, out),
                "completedAt" => time_or_null(s.completed_at, out),
                "errorMessage" => str_or_null(s.error_message.as_deref(), out),
                "reused" => boolean(s.reused, out),
                "createdAt" => time(s.created_at, out),
                "updatedAt" => time(s.updated_at, out),
                _ => return false,
            }
            true
        }
    }
}
