//! A parallel group: adjacent steps sharing `parallelGroup` start together
//! (at most `MAX_PARALLEL_STEPS` of a run in flight), each storing its own
//! changes, with their own sequence numbers, as they happen; the run moves
//! past the group when all have ended. The first step that fails stops the
//! others in flight and fails the run, in one change.

use super::*;

/// How one step of a group ended.
enum Ended {
    Completed,
    /// This step failed the group (and the run).
    Failed,
    /// Stopped from outside: cancel, shutdown, or a sibling's failure.
    Stopped,
}

impl Engine {
    /// Runs the group `group` that step `first` belongs to: the group's
    /// steps from there that have not ended (after a takeover, those that
    /// had not COMPLETED). True when the run goes on after the group.
    pub(super) async fn run_group(
        &self,
        live: &Live,
        state: &mut RunState,
        first: usize,
        group: &str,
    ) -> Result<bool, DbErr> {
        let first_order = state.steps[first].step_order;
        let mut members = Vec::new();
        for idx in first..state.steps.len() {
            let def = match self.definition(&state.steps[idx]).await? {
                Ok(d) => d,
                Err(why) => {
                    self.fail(live, state, idx, why).await?;
                    return Ok(false);
                }
            };
            if def.parallel_group.as_deref() != Some(group) {
                break;
            }
            if matches!(state.steps[idx].status, StepStatus::Pending | StepStatus::Running) {
                members.push((idx, def));
            }
        }

        // Conditions and prompts, against the context as the group starts
        // (no step of a group reads another's output).
        let mut ready = Vec::new();
        for (idx, def) in members {
            if let Some(rule) = &def.condition {
                match condition::evaluate(rule, &state.exec.accumulated_context) {
                    Ok(true) => {}
                    Ok(false) => {
                        let at = now();
                        let skip = Change::new(&[ExecutionStatus::Running], true, ExecPatch::default())
                            .step(
                                idx,
                                StepPatch {
                                    status: Some(StepStatus::Skipped),
                                    completed_at: Some(at),
                                    ..Default::default()
                                },
                            )
                            .events(&[EventKind::StepUpdated]);
                        if !self.write(live, state, skip).await? {
                            return Ok(false);
                        }
                        continue;
                    }
                    Err(e) => {
                        self.fail(live, state, idx, format!("its condition could not be evaluated: {e}"))
                            .await?;
                        return Ok(false);
                    }
                }
            }
            match self.prepare_call(&def, &state.exec.accumulated_context, None) {
                Ok((rendered, agent)) => ready.push((idx, def, rendered, agent)),
                Err(why) => {
                    self.fail(live, state, idx, why).await?;
                    return Ok(false);
                }
            }
        }

        let cell = tokio::sync::Mutex::new(state.clone());
        let stop = CancellationToken::new();
        let permits = tokio::sync::Semaphore::new(self.settings.max_parallel_steps.max(1));
        let ends = futures::future::join_all(ready.into_iter().map(|(idx, def, rendered, agent)| {
            self.run_member(live, &cell, &stop, &permits, first_order, idx, def, rendered, agent)
        }))
        .await;
        *state = cell.into_inner();
        let mut goes_on = true;
        for end in ends {
            if !matches!(end?, Ended::Completed) {
                goes_on = false;
            }
        }
        Ok(goes_on && state.exec.status == ExecutionStatus::Running)
    }

    /// One step of a group, from waiting for its turn to its outcome.
    #[allow(clippy::too_many_arguments)]
    async fn run_member(
        &self,
        live: &Live,
        cell: &tokio::sync::Mutex<RunState>,
        stop: &CancellationToken,
        permits: &tokio::sync::Semaphore,
        first_order: i32,
        idx: usize,
        def: StepDefinition,
        rendered: String,
        agent: Arc<dyn crate::engine::agents::Agent>,
    ) -> Result<Ended, DbErr> {
        let _turn = tokio::select! {
            p = permits.acquire() => p.ok(),
            _ = stop.cancelled() => None,
            _ = live.cancel.cancelled() => None,
        };
        if _turn.is_none() || stop.is_cancelled() || live.cancel.is_cancelled() || self.stopping.is_cancelled() {
            return Ok(Ended::Stopped);
        }
        let running = Change::new(
            &[ExecutionStatus::Running],
            true,
            ExecPatch {
                current_step_order: Some(Some(first_order)),
                ..Default::default()
            },
        )
        .step(
            idx,
            StepPatch {
                status: Some(StepStatus::Running),
                started_at: Some(now()),
                agent_input: Some(json!({"prompt": rendered, "agentId": def.agent_id})),
                ..Default::default()
            },
        )
        .events(&[EventKind::StepUpdated]);
        if !self.write(live, &mut *cell.lock().await, running).await? {
            return Ok(Ended::Stopped);
        }
        let outcome = self
            .call_agent(live, cell, idx, agent.as_ref(), &def, &rendered, stop)
            .await?;
        let output = match outcome {
            AgentOutcome::Stopped => return Ok(Ended::Stopped),
            AgentOutcome::Failed(cause) => {
                self.fail_group(live, cell, stop, idx, format!("agent '{}': {cause}", def.agent_id))
                    .await?;
                return Ok(Ended::Failed);
            }
            AgentOutcome::Done(output) => output,
        };
        let mut state = cell.lock().await;
        let order = state.steps[idx].step_order;
        let key = format!("step_{order}_output");
        let base = state.context_bytes();
        if let Err(why) = self
            .limits()
            .output_fits(&output, &state.exec.accumulated_context, base, &key)
        {
            drop(state);
            self.fail_group(live, cell, stop, idx, why).await?;
            return Ok(Ended::Failed);
        }
        let at = now();
        let done = Change::new(
            &[ExecutionStatus::Running],
            true,
            ExecPatch {
                context_add: Some((key, output.clone())),
                ..Default::default()
            },
        )
        .step(
            idx,
            StepPatch {
                status: Some(StepStatus::Completed),
                agent_output: Some(output),
                completed_at: Some(at),
                ..Default::default()
            },
        )
        .events(&[EventKind::StepUpdated]);
        Ok(if self.write(live, &mut state, done).await? {
            Ended::Completed
        } else {
            Ended::Stopped
        })
    }

    /// The first failure of a group: that step FAILED, every sibling still in
    /// flight FAILED ("cancelled: step K failed"), and the run FAILED naming
    /// step K, in one change; then the siblings' calls are stopped. A later
    /// failure finds the group already stopped and writes nothing.
    async fn fail_group(
        &self,
        live: &Live,
        cell: &tokio::sync::Mutex<RunState>,
        stop: &CancellationToken,
        idx: usize,
        cause: String,
    ) -> Result<(), DbErr> {
        let mut state = cell.lock().await;
        if stop.is_cancelled() {
            return Ok(());
        }
        stop.cancel();
        let at = now();
        let order = state.steps[idx].step_order;
        let message = format!("step {order} failed: {cause}");
        let mut change = Change::new(
            &[ExecutionStatus::Running],
            true,
            ExecPatch {
                status: Some(ExecutionStatus::Failed),
                lease: Some(None),
                failed_at: Some(at),
                error_message: Some(message.clone()),
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
        .events(&[EventKind::StepUpdated]);
        let siblings: Vec<usize> = state
            .steps
            .iter()
            .enumerate()
            .filter(|(j, s)| *j != idx && s.status == StepStatus::Running)
            .map(|(j, _)| j)
            .collect();
        for j in siblings {
            change = change
                .step(
                    j,
                    StepPatch {
                        status: Some(StepStatus::Failed),
                        completed_at: Some(at),
                        error_message: Some(format!("cancelled: step {order} failed")),
                        ..Default::default()
                    },
                )
                .events(&[EventKind::StepUpdated]);
        }
        let change = change.events(&[EventKind::ExecutionUpdated]);
        self.write(live, &mut state, change).await?;
        Ok(())
    }
}
