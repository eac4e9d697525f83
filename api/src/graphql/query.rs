//! `Query`: reads. Anything the viewer may not see is absent.

use async_graphql::{Context, ID, Object, Result};

use super::RequestCtx;
use super::inputs::{WorkflowExecutionFilter, WorkflowTemplateFilter};
use super::render::Direct;
use super::types::*;
use crate::domain::executions::ExecutionFilter;
use crate::domain::pagination::{Cursor, page_size};
use crate::domain::templates::TemplateFilter;
use crate::domain::{self, drives, executions, schedules, templates, users};
use crate::error::ApiError;

pub struct Query;

fn rctx<'a>(ctx: &'a Context<'_>) -> &'a RequestCtx {
    ctx.data_unchecked::<RequestCtx>()
}

#[Object]
impl Query {
    /// The authenticated user.
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        let r = rctx(ctx);
        let row = users::find(&r.db, &r.viewer.id).await.map_err(ApiError::from)?;
        row.map(User)
            .ok_or_else(|| ApiError::Internal("the viewer's user row is missing".into()).into())
    }

    /// Drives the viewer belongs to, newest first.
    async fn drives(&self, ctx: &Context<'_>) -> Result<Vec<Drive>> {
        let r = rctx(ctx);
        let rows = drives::list(&r.db, &r.access().await?.drive_ids())
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(Drive).collect())
    }

    async fn drive(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Drive>> {
        let r = rctx(ctx);
        if !r.access().await?.can_see_drive(&id) {
            return Ok(None);
        }
        let row = r.loaders.drives.load_one(id.0).await.map_err(load_err)?;
        Ok(row.map(Drive))
    }

    /// Built-in agents and those of the agents file.
    async fn agents(&self, ctx: &Context<'_>) -> Vec<Agent> {
        let data = ctx.data_unchecked::<super::SchemaData>();
        data.agents
            .list()
            .map(|a| Agent {
                id: ID(a.id.clone()),
                description: a.description.clone(),
                provider: a.provider.clone(),
            })
            .collect()
    }

    /// The PAUSED executions whose step awaits the viewer's decision (in one
    /// drive, or every drive of the viewer), newest first.
    async fn pending_workflow_approvals(
        &self,
        ctx: &Context<'_>,
        drive_id: Option<ID>,
    ) -> Result<Vec<WorkflowExecution>> {
        let r = rctx(ctx);
        let drives: Vec<String> = match drive_id {
            Some(d) if r.access().await?.can_see_drive(&d) => vec![d.0],
            Some(_) => Vec::new(),
            None => r.access().await?.drive_ids(),
        };
        let candidates = domain::approvals::paused_at_steps(&r.db, &drives)
            .await
            .map_err(ApiError::from)?;
        let access = r.access().await?;
        let with_rules: Vec<_> = candidates
            .into_iter()
            .filter_map(|(e, s)| {
                let rule = crate::domain::access::approval_rule(&s)?;
                access.may_decide(&rule, &e).then_some((e, s, rule))
            })
            .collect();
        let step_ids: Vec<String> = with_rules.iter().map(|(_, s, _)| s.id.clone()).collect();
        let decisions = domain::approvals::of_steps(&r.db, &step_ids)
            .await
            .map_err(ApiError::from)?;
        Ok(with_rules
            .into_iter()
            .filter(|(_, s, rule)| {
                let mine = decisions
                    .iter()
                    .any(|d| d.execution_step_id == s.id && d.user_id == r.viewer.id);
                let approved = decisions
                    .iter()
                    .filter(|d| d.execution_step_id == s.id && d.approve)
                    .count() as u32;
                !mine && approved < rule.required
            })
            .map(|(e, _, _)| WorkflowExecution::new(e))
            .collect())
    }

    /// A drive's templates the viewer may see, newest first.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn workflow_templates(
        &self,
        ctx: &Context<'_>,
        drive_id: ID,
        filter: Option<WorkflowTemplateFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<WorkflowTemplateConnection> {
        let r = rctx(ctx);
        let first = page_size(first)?;
        let after = after.as_deref().map(Cursor::decode).transpose()?;
        let filter = filter
            .map(|f| TemplateFilter {
                category: f.category,
                tags: f.tags.unwrap_or_default(),
                is_public: f.is_public,
                search: f.search,
                created_by: f.created_by.map(|i| i.0),
            })
            .unwrap_or_default();
        // Who sees what is decided in the page's own statement, from the
        // stored memberships (no read of them before it); the creators are
        // joined in it, the steps one more statement.
        let cond = templates::list_condition(r.db.get_database_backend(), &drive_id, &r.viewer.id, &filter);
        let look = ctx.look_ahead();
        let wants =
            |f: &str| look.field("nodes").field(f).exists() || look.field("edges").field("node").field(f).exists();
        let page = templates::page(&r.db, cond.clone(), first, after.as_ref())
            .await
            .map_err(ApiError::from)?;
        let steps = wants("steps").then(|| {
            ctx.data_opt::<domain::steps::JsonColumns>()
                .copied()
                .unwrap_or(domain::steps::JsonColumns::ALL)
        });
        r.loaders
            .feed_template_page(&r.db, &page.rows, steps, wants("drive"))
            .await
            .map_err(ApiError::from)?;
        let page = page.map(|p| p.template);
        let cursors: Vec<String> = page.rows.iter().map(|t| Cursor::encode(t.created_at, &t.id)).collect();
        Ok(WorkflowTemplateConnection {
            page_info: PageInfo::of(&page, &cursors),
            cursors,
            nodes: page.rows.into_iter().map(WorkflowTemplate).collect(),
            count_condition: Some(cond),
        })
    }

    async fn workflow_template(&self, ctx: &Context<'_>, id: ID) -> Result<Option<WorkflowTemplate>> {
        let r = rctx(ctx);
        let access = r.access().await?;
        let row = r.loaders.templates.load_one(id.0).await.map_err(load_err)?;
        Ok(row.filter(|t| access.can_see_template(t)).map(WorkflowTemplate))
    }

    /// Executions the viewer may see, newest first.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn workflow_executions(
        &self,
        ctx: &Context<'_>,
        filter: Option<WorkflowExecutionFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<WorkflowExecutionConnection> {
        let r = rctx(ctx);
        let first = page_size(first)?;
        let after = after.as_deref().map(Cursor::decode).transpose()?;
        let filter = filter
            .map(|f| ExecutionFilter {
                drive_id: f.drive_id.map(|i| i.0),
                template_id: f.template_id.map(|i| i.0),
                status: f.status.unwrap_or_default().into_iter().map(Into::into).collect(),
                mine: f.mine.unwrap_or(false),
            })
            .unwrap_or_default();
        let Some(cond) = executions::list_condition(&r.access().await?.execution_scope(), &filter) else {
            return Ok(empty_executions());
        };
        let page = executions::list(&r.db, cond.clone(), first, after.as_ref())
            .await
            .map_err(ApiError::from)?;
        let cursors: Vec<String> = page.rows.iter().map(|e| Cursor::encode(e.created_at, &e.id)).collect();
        Ok(WorkflowExecutionConnection {
            page_info: PageInfo::of(&page, &cursors),
            cursors,
            nodes: page.rows.into_iter().map(WorkflowExecution::new).collect(),
            count_condition: Some(cond),
        })
    }

    /// A drive's schedules whose templates the viewer may see, newest first.
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn workflow_schedules(
        &self,
        ctx: &Context<'_>,
        drive_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<WorkflowScheduleConnection> {
        let r = rctx(ctx);
        let first = page_size(first)?;
        let after = after.as_deref().map(Cursor::decode).transpose()?;
        let Some(cond) = schedules::list_condition(&drive_id, &r.access().await?.schedule_scope(&drive_id)) else {
            return Ok(WorkflowScheduleConnection {
                nodes: Vec::new(),
                cursors: Vec::new(),
                page_info: PageInfo::empty(false),
                count_condition: None,
            });
        };
        let page = schedules::list(&r.db, cond.clone(), first, after.as_ref())
            .await
            .map_err(ApiError::from)?;
        let cursors: Vec<String> = page.rows.iter().map(|s| Cursor::encode(s.created_at, &s.id)).collect();
        Ok(WorkflowScheduleConnection {
            page_info: PageInfo::of(&page, &cursors),
            cursors,
            nodes: page
                .rows
                .into_iter()
                .map(|s| WorkflowSchedule(std::sync::Arc::new(s)))
                .collect(),
            count_condition: Some(cond),
        })
    }

    /// A schedule, when the viewer may see its template.
    async fn workflow_schedule(&self, ctx: &Context<'_>, id: ID) -> Result<Option<WorkflowSchedule>> {
        let r = rctx(ctx);
        let Some((row, template)) = schedules::find_with_template(&r.db, &id)
            .await
            .map_err(ApiError::from)?
        else {
            return Ok(None);
        };
        if !r.access().await?.can_see_schedule(&template) {
            return Ok(None);
        }
        r.loaders.templates.feed_one(template.id.clone(), template).await;
        Ok(Some(WorkflowSchedule(std::sync::Arc::new(row))))
    }

    async fn workflow_execution(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Direct<WorkflowExecution>>> {
        let r = rctx(ctx);
        // One statement: the execution, its template, its step records when
        // asked for, and the viewer's memberships unless this request has
        // them already (see `executions::detail` for why the step records
        // are consistent with the execution row).
        let look = ctx.look_ahead();
        let with_steps = look.field("steps").exists();
        let roles_of = (!r.has_access()).then_some(r.viewer.id.as_str());
        let Some(detail) = domain::executions::detail(&r.db, &id, with_steps, roles_of)
            .await
            .map_err(ApiError::from)?
        else {
            return Ok(None);
        };
        let access = match detail.roles {
            Some(roles) => r.seed_access(roles).await?,
            None => r.access().await?,
        };
        let row = detail.execution;
        let visible = match &detail.steps {
            Some(steps) => access.can_see_execution_with_steps(&row, steps),
            None => r.sees_execution(&row).await?,
        };
        if !visible {
            return Ok(None);
        }
        if let Some(t) = detail.template {
            r.loaders.templates.feed_one(t.id.clone(), t).await;
        }
        Ok(Some(Direct(WorkflowExecution(
            std::sync::Arc::new(row),
            detail
                .steps
                .map(|s| KnownSteps::Read(std::sync::Arc::new(s.into_iter().map(std::sync::Arc::new).collect()))),
        ))))
    }
}

fn empty_executions() -> WorkflowExecutionConnection {
    WorkflowExecutionConnection {
        nodes: Vec::new(),
        cursors: Vec::new(),
        page_info: PageInfo::empty(false),
        count_condition: None,
    }
}
