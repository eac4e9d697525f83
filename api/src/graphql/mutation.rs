//! `Mutation`: every resolver checks access (access.rs), validates, then calls
//! the domain, which writes in one transaction. A failed mutation changes nothing.

use std::sync::Arc;

use async_graphql::{Context, ID, Object, Result};
use entity::DriveRole;

use super::inputs::*;
use super::types::*;
use super::{RequestCtx, SchemaData};
use crate::core::cron::Schedule;
use crate::domain::schedules::{self, NewSchedule, ScheduleChanges};
use crate::domain::steps::check_references;
use crate::domain::templates::{NewTemplate, TemplateChanges};
use crate::domain::validation as v;
use crate::domain::{drives, executions, steps, templates, users, versions};
use crate::error::{ApiError, ApiResult};

pub struct Mutation;

fn rctx<'a>(ctx: &'a Context<'_>) -> &'a RequestCtx {
    ctx.data_unchecked::<RequestCtx>()
}

fn agents<'a>(ctx: &'a Context<'_>) -> &'a crate::engine::agents::AgentRegistry {
    &ctx.data_unchecked::<SchemaData>().agents
}

fn limits<'a>(ctx: &'a Context<'_>) -> &'a crate::core::limits::DataLimits {
    &ctx.data_unchecked::<SchemaData>().limits
}

fn engine<'a>(ctx: &'a Context<'_>) -> &'a std::sync::Arc<crate::engine::runner::Engine> {
    &ctx.data_unchecked::<SchemaData>().engine
}

/// The template, if it exists and the viewer may see it.
async fn visible_template(r: &RequestCtx, id: &str) -> ApiResult<entity::workflow_template::Model> {
    let access = r.access().await?;
    templates::find(&r.db, id)
        .await?
        .filter(|t| access.can_see_template(t))
        .ok_or_else(|| ApiError::not_found("workflow template", id))
}

/// The step and its template, if the viewer may see the template.
async fn visible_step(
    r: &RequestCtx,
    id: &str,
) -> ApiResult<(entity::workflow_step::Model, entity::workflow_template::Model)> {
    let step = steps::find(&r.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow step", id))?;
    let access = r.access().await?;
    let template = templates::find(&r.db, &step.workflow_template_id)
        .await?
        .filter(|t| access.can_see_template(t))
        .ok_or_else(|| ApiError::not_found("workflow step", id))?;
    Ok((step, template))
}

#[Object]
impl Mutation {
    /// Creates a drive; the viewer becomes its OWNER.
    async fn create_drive(&self, ctx: &Context<'_>, input: CreateDriveInput) -> Result<Drive> {
        let r = rctx(ctx);
        let name = drive_name(&input.name)?;
        let row = drives::create(&r.db, &r.viewer.id, &name)
            .await
            .map_err(ApiError::from)?;
        r.access().await?.set_own_role(&row.id, Some(DriveRole::Owner));
        Ok(Drive(row))
    }

    /// Adds a member, or changes the role of one who already is.
    async fn add_drive_member(
        &self,
        ctx: &Context<'_>,
        drive_id: ID,
        user_id: ID,
        role: DriveRoleGql,
    ) -> Result<DriveMember> {
        let r = rctx(ctx);
        r.access().await?.check_manage_members(&drive_id)?;
        let role: DriveRole = role.into();
        if role == DriveRole::Owner {
            return Err(ApiError::bad_input(
                "role: a drive has one OWNER, its creator; choose ADMIN, MEMBER or VIEWER",
            )
            .into());
        }
        if users::find(&r.db, &user_id).await.map_err(ApiError::from)?.is_none() {
            return Err(ApiError::not_found("user", &user_id).into());
        }
        if let Some(existing) = drives::member(&r.db, &drive_id, &user_id)
            .await
            .map_err(ApiError::from)?
            && existing.role == DriveRole::Owner
        {
            return Err(ApiError::Forbidden("the drive's OWNER keeps that role".into()).into());
        }
        let row = drives::set_member(&r.db, &drive_id, &user_id, role)
            .await
            .map_err(ApiError::from)?;
        if user_id.0 == r.viewer.id {
            r.access().await?.set_own_role(&drive_id, Some(role));
        }
        Ok(DriveMember(row))
    }

    /// Removes a member; false when the user was not a member. The OWNER cannot be removed.
    async fn remove_drive_member(&self, ctx: &Context<'_>, drive_id: ID, user_id: ID) -> Result<bool> {
        let r = rctx(ctx);
        r.access().await?.check_manage_members(&drive_id)?;
        match drives::member(&r.db, &drive_id, &user_id)
            .await
            .map_err(ApiError::from)?
        {
            None => Ok(false),
            Some(m) if m.role == DriveRole::Owner => {
                Err(ApiError::Forbidden("the drive's OWNER cannot be removed".into()).into())
            }
            Some(_) => {
                let removed = drives::remove_member(&r.db, &drive_id, &user_id)
                    .await
                    .map_err(ApiError::from)?;
                if user_id.0 == r.viewer.id {
                    r.access().await?.set_own_role(&drive_id, None);
                }
                Ok(removed)
            }
        }
    }

    async fn create_workflow_template(
        &self,
        ctx: &Context<'_>,
        input: CreateWorkflowTemplateInput,
    ) -> Result<WorkflowTemplate> {
        let r = rctx(ctx);
        r.access().await?.check_create_template(&input.drive_id)?;
        let name = v::template_name("input.name", &input.name)?;
        let description = description("input.description", input.description)?;
        let category = category("input.category", input.category)?;
        let tags = v::tags("input.tags", input.tags.unwrap_or_default())?;
        let mut new_steps = Vec::new();
        for (i, s) in input.steps.unwrap_or_default().into_iter().enumerate() {
            new_steps.push(s.validate(&format!("input.steps[{i}]"), agents(ctx), limits(ctx))?);
        }
        steps::check_template_size(
            new_steps.iter().map(steps::NewStep::bytes).sum(),
            limits(ctx).max_template_bytes,
        )
        .map_err(|e| prefix_steps_field(e, "input."))?;
        check_references(new_steps.iter().map(|s| s.prompt_template.as_str()))
            .map_err(|e| prefix_steps_field(e, "input."))?;
        steps::check_new_groups(&new_steps).map_err(|e| prefix_steps_field(e, "input."))?;
        for (i, s) in new_steps.iter().enumerate() {
            approvers_are_members(r, &input.drive_id, s.approval.as_ref(), &format!("input.steps[{i}]")).await?;
        }
        let row = templates::create(
            &r.db,
            NewTemplate {
                drive_id: input.drive_id.0,
                created_by: r.viewer.id.clone(),
                name,
                description,
                category,
                tags,
                is_public: input.is_public.unwrap_or(false),
                steps: new_steps,
                parent_template_id: None,
            },
        )
        .await
        .map_err(ApiError::from)?;
        Ok(WorkflowTemplate(row))
    }

    async fn update_workflow_template(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateWorkflowTemplateInput,
    ) -> Result<WorkflowTemplate> {
        let r = rctx(ctx);
        let current = visible_template(r, &id).await?;
        r.access().await?.check_change_template(&current)?;
        let changes = TemplateChanges {
            name: input
                .name
                .as_deref()
                .map(|n| v::template_name("input.name", n))
                .transpose()?,
            description: changed_text(input.description, |d| description("input.description", d))?,
            category: changed_text(input.category, |c| category("input.category", c))?,
            tags: input.tags.map(|t| v::tags("input.tags", t)).transpose()?,
            is_public: input.is_public,
        };
        let row = templates::update(&r.db, &current, changes, &r.viewer.id)
            .await
            .map_err(ApiError::from)?;
        Ok(WorkflowTemplate(row))
    }

    /// Deletes the template with its steps and executions; returns its id.
    async fn delete_workflow_template(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let r = rctx(ctx);
        let current = visible_template(r, &id).await?;
        r.access().await?.check_change_template(&current)?;
        if !templates::delete(&r.db, &id).await.map_err(ApiError::from)? {
            return Err(ApiError::not_found("workflow template", &id).into());
        }
        Ok(id)
    }

    /// Appends a step, or inserts it at `stepOrder` and shifts the rest.
    async fn add_workflow_step(
        &self,
        ctx: &Context<'_>,
        template_id: ID,
        input: WorkflowStepInput,
        step_order: Option<i32>,
    ) -> Result<WorkflowStep> {
        let r = rctx(ctx);
        let template = visible_template(r, &template_id).await?;
        r.access().await?.check_change_template(&template)?;
        let new = input.validate("input", agents(ctx), limits(ctx))?;
        approvers_are_members(r, &template.drive_id, new.approval.as_ref(), "input").await?;
        let row = steps::add(
            &r.db,
            &template.id,
            new,
            step_order,
            limits(ctx).max_template_bytes,
            &r.viewer.id,
        )
        .await?;
        Ok(WorkflowStep(Arc::new(row)))
    }

    async fn update_workflow_step(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateWorkflowStepInput,
    ) -> Result<WorkflowStep> {
        let r = rctx(ctx);
        let (step, template) = visible_step(r, &id).await?;
        r.access().await?.check_change_template(&template)?;
        let changes = input.validate(agents(ctx), limits(ctx))?;
        if let Some(Some(rule)) = &changes.approval {
            approvers_are_members(r, &template.drive_id, Some(rule), "input").await?;
        }
        let row = steps::update(&r.db, &step, changes, limits(ctx).max_template_bytes, &r.viewer.id).await?;
        Ok(WorkflowStep(Arc::new(row)))
    }

    /// Deletes a step and renumbers the rest; returns its id.
    async fn delete_workflow_step(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let r = rctx(ctx);
        let (step, template) = visible_step(r, &id).await?;
        r.access().await?.check_change_template(&template)?;
        steps::delete(&r.db, &step, &r.viewer.id).await?;
        Ok(id)
    }

    /// Puts the template's steps in the given order (every step id exactly once).
    async fn reorder_workflow_steps(
        &self,
        ctx: &Context<'_>,
        template_id: ID,
        step_ids: Vec<ID>,
    ) -> Result<WorkflowTemplate> {
        let r = rctx(ctx);
        let template = visible_template(r, &template_id).await?;
        r.access().await?.check_change_template(&template)?;
        let ids: Vec<String> = step_ids.into_iter().map(|i| i.0).collect();
        steps::reorder(&r.db, &template.id, &ids, &r.viewer.id).await?;
        let row = templates::find(&r.db, &template.id)
            .await
            .map_err(ApiError::from)?
            .unwrap_or(template);
        Ok(WorkflowTemplate(row))
    }

    /// Makes a stored version's fields and steps current again, as a new version.
    async fn restore_workflow_template_version(
        &self,
        ctx: &Context<'_>,
        template_id: ID,
        version: i32,
    ) -> Result<WorkflowTemplate> {
        let r = rctx(ctx);
        let template = visible_template(r, &template_id).await?;
        r.access().await?.check_change_template(&template)?;
        let stored = versions::find(&r.db, &template.id, version)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| {
                ApiError::bad_input(format!(
                    "version: template {} has no version {version} (its versions are 1 to {})",
                    template.id, template.version
                ))
            })?;
        let steps = versions::steps_of(&stored).map_err(ApiError::from)?;
        known_agents(
            agents(ctx),
            steps.iter().map(|s| s.definition.agent_id.as_str()),
            "version",
        )?;
        let row = versions::restore(&r.db, &template.id, &stored, &r.viewer.id)
            .await
            .map_err(ApiError::from)?;
        Ok(WorkflowTemplate(row))
    }

    /// Copies a template the viewer can see into a drive where they are
    /// MEMBER or higher (default: the same drive), as version 1.
    async fn duplicate_workflow_template(
        &self,
        ctx: &Context<'_>,
        id: ID,
        drive_id: Option<ID>,
        name: Option<String>,
    ) -> Result<WorkflowTemplate> {
        let r = rctx(ctx);
        let source = visible_template(r, &id).await?;
        let drive_id = drive_id.map_or_else(|| source.drive_id.clone(), |d| d.0);
        r.access().await?.check_create_template(&drive_id)?;
        let name = match name {
            Some(n) => v::template_name("name", &n)?,
            None => source.name.clone(),
        };
        let source_steps = steps::of_templates(&r.db, std::slice::from_ref(&source.id))
            .await
            .map_err(ApiError::from)?;
        known_agents(agents(ctx), source_steps.iter().map(|s| s.agent_id.as_str()), "id")?;
        let row = templates::create(
            &r.db,
            NewTemplate {
                drive_id,
                created_by: r.viewer.id.clone(),
                name,
                description: source.description.clone(),
                category: source.category.clone(),
                tags: source.tags.0.clone(),
                is_public: source.is_public,
                steps: source_steps
                    .iter()
                    .map(steps::NewStep::try_from)
                    .collect::<ApiResult<_>>()?,
                parent_template_id: Some(source.id.clone()),
            },
        )
        .await
        .map_err(ApiError::from)?;
        Ok(WorkflowTemplate(row))
    }

    /// Starts a run of the template (of `version`, default the current one);
    /// it goes on in the background.
    async fn start_workflow_execution(
        &self,
        ctx: &Context<'_>,
        template_id: ID,
        context: Option<async_graphql::Json<serde_json::Value>>,
        version: Option<i32>,
    ) -> Result<WorkflowExecution> {
        let r = rctx(ctx);
        let template = visible_template(r, &template_id).await?;
        r.access().await?.check_start_execution(&template)?;
        let context = context_object(context, limits(ctx))?;
        let launch = executions::launch(&r.db, &template, &r.viewer.id, context, version).await?;
        let row = engine(ctx).start(launch).await?;
        Ok(WorkflowExecution::new(row))
    }

    /// Starts a new run of a FAILED or CANCELLED execution's template
    /// version from `fromStepOrder` (default: the step where it stopped),
    /// reusing the steps before it as they ended.
    async fn retry_workflow_execution(
        &self,
        ctx: &Context<'_>,
        execution_id: ID,
        from_step_order: Option<i32>,
    ) -> Result<WorkflowExecution> {
        let r = rctx(ctx);
        let original = visible_execution(r, &execution_id).await?;
        let records = executions::steps_of(&r.db, std::slice::from_ref(&original.id))
            .await
            .map_err(ApiError::from)?;
        let launch = executions::retry(&original, &records, from_step_order, &r.viewer.id)?;
        let row = engine(ctx).start(launch).await?;
        Ok(WorkflowExecution::new(row))
    }

    /// Gives a PAUSED execution the input its current step waits for.
    async fn submit_workflow_user_input(
        &self,
        ctx: &Context<'_>,
        execution_id: ID,
        input: async_graphql::Json<serde_json::Value>,
    ) -> Result<WorkflowExecution> {
        let r = rctx(ctx);
        let exec = visible_execution(r, &execution_id).await?;
        limits(ctx).input("input", &input.0)?;
        let row = engine(ctx).submit_input(&exec.id, input.0).await?;
        Ok(WorkflowExecution::new(row))
    }

    /// Records the viewer's decision on the step the execution awaits
    /// approval at: enough approvals resume it, one rejection fails it.
    async fn decide_workflow_approval(
        &self,
        ctx: &Context<'_>,
        execution_id: ID,
        approve: bool,
        comment: Option<String>,
    ) -> Result<WorkflowExecution> {
        let r = rctx(ctx);
        let exec = crate::domain::executions::find(&r.db, &execution_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("workflow execution", &execution_id))?;
        if !r.sees_execution(&exec).await? {
            return Err(ApiError::not_found("workflow execution", &execution_id).into());
        }
        let comment = description("comment", comment)?;
        let name = users::find(&r.db, &r.viewer.id)
            .await
            .map_err(ApiError::from)?
            .and_then(|u| u.name)
            .unwrap_or_else(|| r.viewer.id.clone());
        let decision = crate::engine::runner::Decision {
            user_id: &r.viewer.id,
            user_name: &name,
            approve,
            comment,
        };
        let access = r.access().await?;
        let row = engine(ctx)
            .decide(&exec.id, decision, |rule, e, steps| access.check_decide(rule, e, steps))
            .await?;
        Ok(WorkflowExecution::new(row))
    }

    /// Stops a RUNNING or PAUSED execution.
    async fn cancel_workflow_execution(&self, ctx: &Context<'_>, execution_id: ID) -> Result<WorkflowExecution> {
        let r = rctx(ctx);
        let exec = visible_execution(r, &execution_id).await?;
        let row = engine(ctx).cancel(&exec.id).await?;
        Ok(WorkflowExecution::new(row))
    }

    /// Schedules runs of a template, started as the viewer (MEMBER or higher
    /// who can see the template).
    async fn create_workflow_schedule(
        &self,
        ctx: &Context<'_>,
        input: CreateWorkflowScheduleInput,
    ) -> Result<WorkflowSchedule> {
        let r = rctx(ctx);
        let template = visible_template(r, &input.template_id).await?;
        r.access().await?.check_create_schedule(&template)?;
        let schedule = Schedule::parse("input.", &input.cron, input.timezone.as_deref().unwrap_or("UTC"))?;
        let context = context_object(input.context, limits(ctx))?;
        let row = schedules::create(
            &r.db,
            NewSchedule {
                template,
                created_by: r.viewer.id.clone(),
                schedule,
                context,
                enabled: input.enabled.unwrap_or(true),
            },
            engine(ctx).clock().now(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(WorkflowSchedule(Arc::new(row)))
    }

    /// Changes a schedule (its creator, or ADMIN/OWNER).
    async fn update_workflow_schedule(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateWorkflowScheduleInput,
    ) -> Result<WorkflowSchedule> {
        let r = rctx(ctx);
        let (current, template) = visible_schedule(r, &id).await?;
        r.access().await?.check_change_schedule(&current, &template)?;
        let cron = input.cron.as_deref().unwrap_or(&current.cron);
        let timezone = match &input.timezone {
            async_graphql::MaybeUndefined::Undefined => current.timezone.as_str(),
            async_graphql::MaybeUndefined::Null => "UTC",
            async_graphql::MaybeUndefined::Value(tz) => tz.as_str(),
        };
        let schedule = Schedule::parse("input.", cron, timezone)?;
        let context = match input.context {
            async_graphql::MaybeUndefined::Undefined => None,
            async_graphql::MaybeUndefined::Null => Some(serde_json::json!({})),
            async_graphql::MaybeUndefined::Value(c) => Some(context_object(Some(c), limits(ctx))?),
        };
        let timing_changed = schedule.expression() != current.cron || schedule.timezone() != current.timezone;
        let row = schedules::update(
            &r.db,
            &current,
            ScheduleChanges {
                schedule,
                timing_changed,
                context,
                enabled: input.enabled,
            },
            engine(ctx).clock().now(),
        )
        .await
        .map_err(ApiError::from)?;
        r.loaders.templates.feed_one(template.id.clone(), template).await;
        Ok(WorkflowSchedule(Arc::new(row)))
    }

    /// Deletes a schedule (its creator, or ADMIN/OWNER); its runs stay, with
    /// `scheduleId` null. Returns its id.
    async fn delete_workflow_schedule(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let r = rctx(ctx);
        let (current, template) = visible_schedule(r, &id).await?;
        r.access().await?.check_change_schedule(&current, &template)?;
        if !schedules::delete(&r.db, &id).await.map_err(ApiError::from)? {
            return Err(ApiError::not_found("workflow schedule", &id).into());
        }
        Ok(id)
    }
}

/// The schedule and its template, if the viewer may see the template.
async fn visible_schedule(
    r: &RequestCtx,
    id: &str,
) -> ApiResult<(entity::workflow_schedule::Model, entity::workflow_template::Model)> {
    let access = r.access().await?;
    schedules::find_with_template(&r.db, id)
        .await?
        .filter(|(_, t)| access.can_see_schedule(t))
        .ok_or_else(|| ApiError::not_found("workflow schedule", id))
}

/// The execution, if it exists and the viewer may act on it.
async fn visible_execution(r: &RequestCtx, id: &str) -> ApiResult<entity::workflow_execution::Model> {
    let exec = crate::domain::executions::find(&r.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow execution", id))?;
    r.access().await?.check_act_on_execution(&exec)?;
    Ok(exec)
}

/// A rule's `userIds` must each be a member of the drive when it is saved.
async fn approvers_are_members(
    r: &RequestCtx,
    drive_id: &str,
    approval: Option<&crate::core::definition::ApprovalRule>,
    field: &str,
) -> ApiResult<()> {
    let Some(ids) = approval.and_then(|rule| rule.user_ids.as_ref()) else {
        return Ok(());
    };
    let members = drives::members_of(&r.db, &[drive_id.to_owned()]).await?;
    let members = members.get(drive_id).map(Vec::as_slice).unwrap_or_default();
    for id in ids {
        if !members.iter().any(|m| m.user_id == *id) {
            return Err(ApiError::bad_input(format!(
                "{field}.approval.userIds: {id} is not a member of this drive"
            )));
        }
    }
    Ok(())
}

/// Every agent a copied or restored template names must still be configured
/// (the rule of saving a template).
fn known_agents<'a>(
    registry: &crate::engine::agents::AgentRegistry,
    ids: impl Iterator<Item = &'a str>,
    field: &str,
) -> ApiResult<()> {
    for (i, id) in ids.enumerate() {
        if registry.get(id).is_none() {
            return Err(ApiError::bad_input(format!(
                "{field}: step {i} names agent '{id}', which is not configured on this server"
            )));
        }
    }
    Ok(())
}

/// `None` leaves a text field alone; null or blank clears it.
fn changed_text(
    value: async_graphql::MaybeUndefined<String>,
    check: impl Fn(Option<String>) -> ApiResult<Option<String>>,
) -> ApiResult<Option<Option<String>>> {
    match value {
        async_graphql::MaybeUndefined::Undefined => Ok(None),
        async_graphql::MaybeUndefined::Null => Ok(Some(None)),
        async_graphql::MaybeUndefined::Value(s) => check(Some(s)).map(Some),
    }
}

/// Reference errors name `steps[k]…`; in a create they are `input.steps[k]…`.
fn prefix_steps_field(e: ApiError, prefix: &str) -> ApiError {
    match e {
        ApiError::BadUserInput {
            message,
            validation_errors,
        } => ApiError::BadUserInput {
            message: format!("{prefix}{message}"),
            validation_errors,
        },
        other => other,
    }
}
