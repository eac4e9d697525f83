//! What people do to a run from outside the runner: give a paused step its
//! input, cancel (here, or by asking the instance that runs it).

use super::*;

impl Engine {
    /// Validates `input` against the paused step's `inputSchema`, saves it,
    /// and resumes the run. Only one of several concurrent submissions wins.
    pub async fn submit_input(self: &Arc<Self>, id: &str, input: Value) -> ApiResult<execution::Model> {
        let live = self.live(id);
        let mut seq = live.seq.lock().await;
        let mut state = self
            .load(id)
            .await?
            .ok_or_else(|| ApiError::not_found("workflow execution", id))?;
        if state.exec.status != ExecutionStatus::Paused {
            return Err(not_paused(&state.exec));
        }
        let order = state.exec.current_step_order.unwrap_or(0);
        let idx = state
            .steps
            .iter()
            .position(|s| s.step_order == order && s.status == StepStatus::Pending)
            .ok_or_else(|| ApiError::Internal(format!("paused execution {id} has no pending step {order}")))?;
        let def = self
            .definition(&state.steps[idx])
            .await?
            .map_err(|why| ApiError::Internal(format!("execution {id}, step {order}: {why}")))?;
        validation::user_input(def.input_schema.as_ref(), &input)?;
        let base = state.context_bytes();
        self.limits().context_with(
            "input",
            &state.exec.accumulated_context,
            base,
            &format!("step_{order}_input"),
            &input,
        )?;
        let applied = self
            .apply(
                &mut seq,
                &mut state,
                Change {
                    expect: &[ExecutionStatus::Paused],
                    owned: false,
                    exec: ExecPatch {
                        status: Some(ExecutionStatus::Running),
                        context_add: Some((format!("step_{order}_input"), input.clone())),
                        lease: Some(Some(self.lease_until())),
                        ..Default::default()
                    },
                    steps: vec![(
                        idx,
                        StepPatch {
                            user_input: Some(input),
                            ..Default::default()
                        },
                    )],
                    events: vec![EventKind::ExecutionUpdated],
                    also: None,
                },
            )
            .await?;
        if !applied {
            return Err(ApiError::Conflict("the execution is no longer PAUSED".into()));
        }
        drop(seq);
        let exec = (*state.exec).clone();
        self.spawn(id.to_owned(), Some(state));
        Ok(exec)
    }

    /// Stops a RUNNING or PAUSED execution: CANCELLED, and a step in flight
    /// FAILED "cancelled". The agent call in flight is dropped.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> ApiResult<execution::Model> {
        let live = self.live(id);
        let mut seq = live.seq.lock().await;
        let Some(mut state) = self.load(id).await? else {
            return Err(ApiError::not_found("workflow execution", id));
        };
        if state.exec.status.is_terminal() {
            self.forget(id);
            return Err(ApiError::Conflict(format!(
                "the execution has already finished ({})",
                status_name(state.exec.status)
            )));
        }
        if let (ExecutionStatus::Running, Some(owner), Some(until)) =
            (state.exec.status, &state.exec.lease_owner, state.exec.lease_expires_at)
            && owner != &self.instance
            && until > self.clock.now()
        {
            // Another live instance runs it: it alone numbers its events.
            drop(seq);
            return Box::pin(self.cancel_elsewhere(id)).await;
        }
        let at = now();
        // Every step in flight (several in a parallel group) is stopped.
        let running: Vec<usize> = state
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.status == StepStatus::Running)
            .map(|(i, _)| i)
            .collect();
        let mut change = Change::new(
            &[ExecutionStatus::Running, ExecutionStatus::Paused],
            false,
            ExecPatch {
                status: Some(ExecutionStatus::Cancelled),
                lease: Some(None),
                ..Default::default()
            },
        );
        for idx in running {
            change = change
                .step(
                    idx,
                    StepPatch {
                        status: Some(StepStatus::Failed),
                        completed_at: Some(at),
                        error_message: Some("cancelled".into()),
                        ..Default::default()
                    },
                )
                .events(&[EventKind::StepUpdated]);
        }
        let change = change.events(&[EventKind::ExecutionUpdated]);
        if !self.apply(&mut seq, &mut state, change).await? {
            return Err(ApiError::Conflict("the execution has already finished".into()));
        }
        live.cancel.cancel();
        Ok((*state.exec).clone())
    }

    /// Asks the instance running `id` to cancel it and waits for the result;
    /// if that instance is gone (its lease runs out), takes the run over and
    /// cancels it here.
    pub(super) async fn cancel_elsewhere(self: &Arc<Self>, id: &str) -> ApiResult<execution::Model> {
        if let Some(relay) = &self.relay {
            let note = Note {
                i: relay.instance.clone(),
                e: id.to_owned(),
                d: String::new(),
                s: 0,
                k: 'C',
                t: None,
                x: None,
                p: None,
            };
            self.notify(&note).await;
        }
        let deadline = tokio::time::Instant::now() + self.settings.lease + Duration::from_secs(2);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Some(exec) = execution::Entity::find_by_id(id.to_owned()).one(&self.db).await? else {
                return Err(ApiError::not_found("workflow execution", id));
            };
            match exec.status {
                ExecutionStatus::Cancelled => return Ok(exec),
                s if s.is_terminal() => {
                    return Err(ApiError::Conflict(format!(
                        "the execution has already finished ({})",
                        status_name(s)
                    )));
                }
                _ => {}
            }
            let expired = exec.lease_expires_at.is_none_or(|t| t <= self.clock.now());
            if expired || tokio::time::Instant::now() >= deadline {
                // Whoever ran it is gone: take it over, then cancel it here.
                self.claim(id).await?;
                self.forget(id);
                return Box::pin(self.cancel(id)).await;
            }
        }
    }

    /// Takes the lease of a RUNNING execution whose lease expired.
    pub(super) async fn claim(&self, id: &str) -> Result<bool, DbErr> {
        let res = execution::Entity::update_many()
            .set(execution::ActiveModel {
                lease_owner: Set(Some(self.instance.clone())),
                lease_expires_at: Set(Some(self.lease_until())),
                ..Default::default()
            })
            .filter(execution::Column::Id.eq(id))
            .filter(execution::Column::Status.eq(ExecutionStatus::Running))
            .filter(
                sea_orm::Condition::any()
                    .add(execution::Column::LeaseExpiresAt.is_null())
                    .add(execution::Column::LeaseExpiresAt.lte(self.clock.now())),
            )
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected > 0)
    }
}

fn not_paused(e: &execution::Model) -> ApiError {
    ApiError::Conflict(format!(
        "the execution is {}, not PAUSED: there is no step waiting for input",
        status_name(e.status)
    ))
}

/// A person's decision on the step a run awaits approval at.
pub struct Decision<'a> {
    pub user_id: &'a str,
    /// How the rejection message names them.
    pub user_name: &'a str,
    pub approve: bool,
    pub comment: Option<String>,
}

impl Engine {
    /// Records a decision on the step `id` is PAUSED at for approval (in the
    /// change that numbers its APPROVAL_DECIDED event). The last approval
    /// needed resumes the run; a rejection fails the step and the run. Of
    /// two decisions racing for the run (or a decision and a cancel) the
    /// first to commit wins; the other changes nothing and is `CONFLICT`.
    /// `eligible` checks the viewer against the step's rule.
    pub async fn decide(
        self: &Arc<Self>,
        id: &str,
        decision: Decision<'_>,
        eligible: impl FnOnce(
            &crate::core::definition::ApprovalRule,
            &execution::Model,
            &[exec_step::Model],
        ) -> ApiResult<()>,
    ) -> ApiResult<execution::Model> {
        let live = self.live(id);
        let mut seq = live.seq.lock().await;
        let mut state = self
            .load(id)
            .await?
            .ok_or_else(|| ApiError::not_found("workflow execution", id))?;
        let awaiting = || ApiError::Conflict("the execution is not awaiting an approval".into());
        let idx = state.steps.iter().position(|s| {
            state.exec.status == ExecutionStatus::Paused
                && Some(s.step_order) == state.exec.current_step_order
                && s.status == StepStatus::Pending
        });
        let Some(idx) = idx else {
            return Err(awaiting());
        };
        let step = state.steps[idx].clone();
        let def = self
            .definition(&step)
            .await?
            .map_err(|why| ApiError::Internal(format!("step {}: {why}", step.step_order)))?;
        let Some(rule) = def.approval else {
            return Err(awaiting());
        };
        eligible(&rule, &state.exec, &state.steps)?;
        let decided = domain::approvals::of_steps(&self.db, std::slice::from_ref(&step.id)).await?;
        if decided.iter().any(|d| d.user_id == decision.user_id) {
            return Err(ApiError::Conflict("you have already decided on this step".into()));
        }
        let approvals = decided.iter().filter(|d| d.approve).count() as u32;
        if approvals >= rule.required {
            return Err(awaiting()); // Approved; it waits for input now.
        }
        let insert = domain::approvals::insert(&step.id, decision.user_id, decision.approve, decision.comment.clone());
        let resumes = decision.approve && approvals + 1 >= rule.required;
        let change = if decision.approve {
            self.approval_change(idx, resumes)
        } else {
            rejection_change(idx, step.step_order, &decision)
        };
        let change = Change {
            also: Some(insert),
            ..change
        };
        let applied = match self.apply(&mut seq, &mut state, change).await {
            Ok(applied) => applied,
            Err(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {
                return Err(ApiError::Conflict("you have already decided on this step".into()));
            }
            Err(e) => return Err(e.into()),
        };
        if !applied {
            return Err(awaiting());
        }
        drop(seq);
        let exec = (*state.exec).clone();
        if resumes {
            self.spawn(id.to_owned(), Some(state));
        }
        Ok(exec)
    }

    /// An approval: recorded, and the run resumes when it is the last needed.
    fn approval_change(&self, idx: usize, resumes: bool) -> Change {
        if resumes {
            Change::new(
                &[ExecutionStatus::Paused],
                false,
                ExecPatch {
                    status: Some(ExecutionStatus::Running),
                    lease: Some(Some(self.lease_until())),
                    ..Default::default()
                },
            )
            .step(idx, StepPatch::default())
            .events(&[EventKind::ApprovalDecided, EventKind::ExecutionUpdated])
        } else {
            Change::new(&[ExecutionStatus::Paused], false, ExecPatch::default())
                .step(idx, StepPatch::default())
                .events(&[EventKind::ApprovalDecided])
        }
    }
}

/// A rejection: the step and the run are FAILED, naming who rejected and why.
fn rejection_change(idx: usize, order: i32, decision: &Decision<'_>) -> Change {
    let at = now();
    let message = match decision.comment.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => format!("step {order} rejected by {}: {c}", decision.user_name),
        None => format!("step {order} rejected by {}", decision.user_name),
    };
    Change::new(
        &[ExecutionStatus::Paused],
        false,
        ExecPatch {
            status: Some(ExecutionStatus::Failed),
            failed_at: Some(at),
            error_message: Some(message.clone()),
            lease: Some(None),
            ..Default::default()
        },
    )
    .step(
        idx,
        StepPatch {
            status: Some(StepStatus::Failed),
            completed_at: Some(at),
            error_message: Some(message),
            ..Default::default()
        },
    )
    .events(&[
        EventKind::ApprovalDecided,
        EventKind::StepUpdated,
        EventKind::ExecutionUpdated,
    ])
}
