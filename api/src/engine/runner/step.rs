//! A step's life: the run loop takes the next step, evaluates its
//! condition, pauses for input, renders its prompt, calls its agent under
//! its timeout and retry policy (streaming deltas), and stores the outcome.

use super::*;

impl Engine {
    /// Marks step `idx` and the execution FAILED.
    pub(super) async fn fail(&self, live: &Live, state: &mut RunState, idx: usize, cause: String) -> Result<(), DbErr> {
        let at = now();
        let order = state.steps[idx].step_order;
        let message = format!("step {order} failed: {cause}");
        self.write(
            live,
            state,
            Change {
                expect: &[ExecutionStatus::Running],
                owned: true,
                exec: ExecPatch {
                    status: Some(ExecutionStatus::Failed),
                    lease: Some(None),
                    failed_at: Some(at),
                    error_message: Some(message.clone()),
                    ..Default::default()
                },
                steps: vec![(
                    idx,
                    StepPatch {
                        status: Some(StepStatus::Failed),
                        completed_at: Some(at),
                        error_message: Some(message),
                        ..Default::default()
                    },
                )],
                events: vec![EventKind::StepUpdated, EventKind::ExecutionUpdated],
                also: None,
            },
        )
        .await?;
        Ok(())
    }

    pub(super) async fn run(&self, live: &Live, id: &str, state: Option<RunState>) -> Result<(), DbErr> {
        let state = match state {
            Some(s) => Some(s),
            None => self.load(id).await?,
        };
        let Some(mut state) = state else {
            return Ok(());
        };
        loop {
            if state.exec.status != ExecutionStatus::Running || live.cancel.is_cancelled() {
                return Ok(());
            }
            if self.stopping.is_cancelled() {
                // Shutting down: the lease is handed back for another instance.
                return Ok(());
            }
            let Some(idx) = next_step(&state) else {
                // Nothing left (e.g. the last steps were skipped): done.
                self.complete(live, &mut state).await?;
                return Ok(());
            };
            let def = match self.definition(&state.steps[idx]).await? {
                Ok(d) => d,
                Err(why) => {
                    self.fail(live, &mut state, idx, why).await?;
                    return Ok(());
                }
            };
            let approvals = match &def.approval {
                Some(_) => Some(domain::approvals::approvals_of(&self.db, &state.steps[idx].id).await?),
                None => None,
            };
            let goes_on = match what_next(&def, &state, idx, approvals) {
                Next::Group(group) => self.run_group(live, &mut state, idx, &group).await?,
                Next::Skip => self.skip(live, &mut state, idx).await?,
                Next::Fail(why) => {
                    self.fail(live, &mut state, idx, why).await?;
                    false
                }
                Next::Pause => {
                    self.pause_at(live, &mut state, idx).await?;
                    false
                }
                Next::Call => self.run_step(live, &mut state, idx, &def).await?,
            };
            if !goes_on {
                return Ok(());
            }
        }
    }

    /// Marks the execution COMPLETED: no step is left to run.
    async fn complete(&self, live: &Live, state: &mut RunState) -> Result<(), DbErr> {
        let at = now();
        self.write(
            live,
            state,
            Change {
                expect: &[ExecutionStatus::Running],
                owned: true,
                exec: ExecPatch {
                    status: Some(ExecutionStatus::Completed),
                    completed_at: Some(at),
                    lease: Some(None),
                    ..Default::default()
                },
                steps: Vec::new(),
                events: vec![EventKind::ExecutionUpdated],
                also: None,
            },
        )
        .await?;
        Ok(())
    }

    /// Marks step `idx` SKIPPED (its condition is false); whether the run
    /// goes on.
    async fn skip(&self, live: &Live, state: &mut RunState, idx: usize) -> Result<bool, DbErr> {
        let at = now();
        let patch = StepPatch {
            status: Some(StepStatus::Skipped),
            completed_at: Some(at),
            ..Default::default()
        };
        let (applied, _) = self.finish_step(live, state, idx, at, patch, None).await?;
        Ok(applied)
    }

    /// Writes step `idx` as finished with `patch` (the run COMPLETED with it
    /// when no step is left): whether it was written, and whether it was the
    /// last step.
    async fn finish_step(
        &self,
        live: &Live,
        state: &mut RunState,
        idx: usize,
        at: NaiveDateTime,
        patch: StepPatch,
        context_add: Option<(String, Value)>,
    ) -> Result<(bool, bool), DbErr> {
        let (next_order, last) = after(state, idx);
        let change = step_finished(idx, next_order, last, at, patch, context_add);
        Ok((self.write(live, state, change).await?, last))
    }

    /// Pauses the run at step `idx`, which waits for approval or input.
    async fn pause_at(&self, live: &Live, state: &mut RunState, idx: usize) -> Result<(), DbErr> {
        let order = state.steps[idx].step_order;
        self.write(
            live,
            state,
            Change {
                expect: &[ExecutionStatus::Running],
                owned: true,
                exec: ExecPatch {
                    status: Some(ExecutionStatus::Paused),
                    lease: Some(None),
                    paused_at: Some(now()),
                    current_step_order: Some(Some(order)),
                    ..Default::default()
                },
                steps: Vec::new(),
                events: vec![EventKind::ExecutionUpdated],
                also: None,
            },
        )
        .await?;
        Ok(())
    }

    /// Runs step `idx`'s agent and stores what came of it; whether the run
    /// goes on to the next step.
    async fn run_step(
        &self,
        live: &Live,
        state: &mut RunState,
        idx: usize,
        def: &StepDefinition,
    ) -> Result<bool, DbErr> {
        let (rendered, agent) = match self.prepare_call(
            def,
            &state.exec.accumulated_context,
            state.steps[idx].user_input.as_ref(),
        ) {
            Ok(call) => call,
            Err(why) => {
                self.fail(live, state, idx, why).await?;
                return Ok(false);
            }
        };
        if !self.start_step(live, state, idx, def, &rendered).await? {
            return Ok(false);
        }
        // The call shares the state with the writes it makes while it streams.
        let cell = tokio::sync::Mutex::new(state.clone());
        let outcome = self
            .call_agent(
                live,
                &cell,
                idx,
                agent.as_ref(),
                def,
                &rendered,
                &CancellationToken::new(),
            )
            .await;
        *state = cell.into_inner();
        match outcome? {
            AgentOutcome::Stopped => Ok(false),
            AgentOutcome::Failed(cause) => {
                self.fail(live, state, idx, format!("agent '{}': {cause}", def.agent_id))
                    .await?;
                Ok(false)
            }
            AgentOutcome::Done(output) => self.store_output(live, state, idx, output).await,
        }
    }

    /// Marks step `idx` RUNNING with its rendered prompt; whether it was.
    async fn start_step(
        &self,
        live: &Live,
        state: &mut RunState,
        idx: usize,
        def: &StepDefinition,
        rendered: &str,
    ) -> Result<bool, DbErr> {
        let order = state.steps[idx].step_order;
        self.write(
            live,
            state,
            Change {
                expect: &[ExecutionStatus::Running],
                owned: true,
                exec: ExecPatch {
                    current_step_order: Some(Some(order)),
                    ..Default::default()
                },
                steps: vec![(
                    idx,
                    StepPatch {
                        status: Some(StepStatus::Running),
                        started_at: Some(now()),
                        agent_input: Some(json!({"prompt": rendered, "agentId": def.agent_id})),
                        ..Default::default()
                    },
                )],
                events: vec![EventKind::StepUpdated],
                also: None,
            },
        )
        .await
    }

    /// Stores the agent's output as step `idx`'s and in the context (or fails
    /// the step when it does not fit); whether the run goes on.
    async fn store_output(&self, live: &Live, state: &mut RunState, idx: usize, output: Value) -> Result<bool, DbErr> {
        let at = now();
        let key = format!("step_{}_output", state.steps[idx].step_order);
        let base = state.context_bytes();
        if let Err(why) = self
            .limits()
            .output_fits(&output, &state.exec.accumulated_context, base, &key)
        {
            self.fail(live, state, idx, why).await?;
            return Ok(false);
        }
        let patch = StepPatch {
            status: Some(StepStatus::Completed),
            agent_output: Some(output.clone()),
            completed_at: Some(at),
            ..Default::default()
        };
        let (applied, last) = self
            .finish_step(live, state, idx, at, patch, Some((key, output)))
            .await?;
        Ok(applied && !last)
    }

    /// Calls the agent under the step's timeout and retry policy, publishing
    /// streamed pieces as STEP_OUTPUT_DELTA events; stops at once on cancel.
    /// The step's prompt, rendered and within MAX_PROMPT_BYTES, and its
    /// agent; else why the step fails.
    pub(super) fn prepare_call(
        &self,
        def: &StepDefinition,
        context: &Value,
        input: Option<&Value>,
    ) -> Result<(String, Arc<dyn crate::engine::agents::Agent>), String> {
        let max = self.limits().max_prompt_bytes;
        let rendered = match prompt::render(&def.prompt_template, context, input) {
            Ok(p) if p.len() > max => {
                return Err(format!(
                    "its rendered prompt is {} bytes; at most {max} are allowed (MAX_PROMPT_BYTES)",
                    p.len()
                ));
            }
            Ok(p) => p,
            Err(missing) => return Err(format!("its prompt names a missing variable '{}'", missing.0)),
        };
        let agent = self
            .agents
            .get(&def.agent_id)
            .map(|a| a.agent.clone())
            .ok_or_else(|| format!("agent '{}' is not configured on this server", def.agent_id))?;
        Ok((rendered, agent))
    }

    /// `state` is shared with the other steps of a parallel group (each
    /// takes it only to write); `stop` ends the call when the group fails.
    #[allow(
        clippy::too_many_arguments,
        reason = "the run, its shared state, the step, and the call's three parts"
    )]
    pub(super) async fn call_agent(
        &self,
        live: &Live,
        state: &tokio::sync::Mutex<RunState>,
        idx: usize,
        agent: &dyn crate::engine::agents::Agent,
        def: &StepDefinition,
        rendered: &str,
        stop: &CancellationToken,
    ) -> Result<AgentOutcome, DbErr> {
        let policy = match def.attempts() {
            Ok(p) => p,
            Err(e) => return Ok(AgentOutcome::Failed(format!("its metadata cannot be read ({e})"))),
        };
        let mut attempt = 1;
        loop {
            *state.lock().await.attempts.entry(idx).or_default() += 1;
            let Some((result, streamed)) = self
                .attempt(live, state, idx, agent, rendered, policy.timeout, stop)
                .await?
            else {
                return Ok(AgentOutcome::Stopped);
            };
            let (message, retry_after) = match result {
                Ok(output) => return Ok(AgentOutcome::Done(output)),
                Err(AgentError::Fatal(m)) => return Ok(AgentOutcome::Failed(m)),
                Err(AgentError::Retryable { message, retry_after }) => (message, retry_after),
            };
            if attempt >= policy.max_attempts {
                let tries = if attempt > 1 {
                    format!(" (after {attempt} attempts)")
                } else {
                    String::new()
                };
                return Ok(AgentOutcome::Failed(format!("{message}{tries}")));
            }
            let wait = retry_after.unwrap_or(policy.backoff).max(policy.backoff);
            tracing::info!(step = idx, attempt, error = %message, "retrying agent call");
            tokio::select! {
                _ = live.cancel.cancelled() => return Ok(AgentOutcome::Stopped),
                _ = stop.cancelled() => return Ok(AgentOutcome::Stopped),
                _ = tokio::time::sleep(wait) => {}
            }
            if streamed && !self.restart(live, &mut *state.lock().await, idx).await? {
                return Ok(AgentOutcome::Stopped);
            }
            attempt += 1;
        }
    }

    /// One call of the agent under `timeout`, its streamed pieces published
    /// as they come: the result and whether any piece was streamed, or
    /// `None` when the run was cancelled or the call abandoned.
    #[allow(
        clippy::too_many_arguments,
        reason = "one attempt needs the run, its shared state, the step, the call and its bounds"
    )]
    async fn attempt(
        &self,
        live: &Live,
        state: &tokio::sync::Mutex<RunState>,
        idx: usize,
        agent: &dyn crate::engine::agents::Agent,
        rendered: &str,
        timeout: Option<Duration>,
        stop: &CancellationToken,
    ) -> Result<Option<(Result<Value, AgentError>, bool)>, DbErr> {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let mut streamed = false;
        let result = {
            let call = agent.call(rendered, Some(&tx));
            tokio::pin!(call);
            let deadline = async {
                match timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    biased;
                    _ = live.cancel.cancelled() => return Ok(None),
                    _ = self.abandon.cancelled() => return Ok(None),
                    _ = stop.cancelled() => return Ok(None),
                    Some(piece) = rx.recv() => {
                        streamed = true;
                        self.publish_delta(live, &mut *state.lock().await, idx, piece).await?;
                    }
                    r = &mut call => break r,
                    _ = &mut deadline => break Err(AgentError::Retryable {
                        message: format!("timed out after {} ms", timeout.map_or(0, |t| t.as_millis())),
                        retry_after: None,
                    }),
                }
            }
        };
        // Pieces sent just before the call returned.
        while let Ok(piece) = rx.try_recv() {
            streamed = true;
            self.publish_delta(live, &mut *state.lock().await, idx, piece).await?;
        }
        Ok(Some((result, streamed)))
    }

    /// A new RUNNING event with a new startedAt: tells subscribers to drop
    /// the pieces of the failed attempt. Whether it was written.
    async fn restart(&self, live: &Live, state: &mut RunState, idx: usize) -> Result<bool, DbErr> {
        self.write(
            live,
            state,
            Change {
                expect: &[ExecutionStatus::Running],
                owned: true,
                exec: ExecPatch::default(),
                steps: vec![(
                    idx,
                    StepPatch {
                        started_at: Some(now()),
                        ..Default::default()
                    },
                )],
                events: vec![EventKind::StepUpdated],
                also: None,
            },
        )
        .await
    }

    pub(super) async fn publish_delta(
        &self,
        live: &Live,
        state: &mut RunState,
        idx: usize,
        piece: String,
    ) -> Result<(), DbErr> {
        for part in relay::split_delta(piece) {
            let mut seq = live.seq.lock().await;
            let next = seq.unwrap_or(0).max(state.exec.sequence) + 1;
            if next > state.exec.sequence_reserved {
                // Deltas are not stored; reserve their numbers in blocks so an
                // instance taking over never hands out one already seen.
                let reserved = next + 63;
                execution::Entity::update_many()
                    .set(execution::ActiveModel {
                        sequence_reserved: Set(reserved),
                        ..Default::default()
                    })
                    .filter(execution::Column::Id.eq(state.exec.id.clone()))
                    .filter(execution::Column::LeaseOwner.eq(self.instance.clone()))
                    .exec(&self.db)
                    .await?;
                Arc::make_mut(&mut state.exec).sequence_reserved = reserved;
            }
            *seq = Some(next);
            Arc::make_mut(&mut state.exec).sequence = next;
            let event = ExecutionEvent {
                kind: EventKind::StepOutputDelta,
                sequence: next,
                at: now(),
                execution: state.exec.clone(),
                steps: state.steps.clone(),
                step: Some(state.steps[idx].clone()),
                delta: Some(part),
            };
            self.tell_others(&event).await;
            self.bus.publish(event);
        }
        Ok(())
    }
}

/// A step that ended well (COMPLETED or SKIPPED): the run moves on to the
/// next step, or is COMPLETED (and its lease let go) when it was the last.
/// What the run does at the step it reached, decided from the step's
/// definition, the run's state and the approvals recorded (`None` when the
/// step needs none): no I/O here, `run` carries it out.
#[derive(Debug, PartialEq)]
enum Next {
    /// The step opens a parallel group: run the group.
    Group(String),
    /// Its condition is false.
    Skip,
    /// It cannot run (its condition cannot be evaluated).
    Fail(String),
    /// It waits for approval or for input.
    Pause,
    /// Call its agent.
    Call,
}

fn what_next(def: &StepDefinition, state: &RunState, idx: usize, approvals: Option<u32>) -> Next {
    if let Some(group) = &def.parallel_group {
        return Next::Group(group.clone());
    }
    if let Some(rule) = &def.condition {
        match condition::evaluate(rule, &state.exec.accumulated_context) {
            Ok(true) => {}
            Ok(false) => return Next::Skip,
            Err(e) => return Next::Fail(format!("its condition could not be evaluated: {e}")),
        }
    }
    // Approval comes before input: a person decides whether the step runs
    // at all. A rejection fails the run where it is decided.
    let approved = match &def.approval {
        Some(rule) => approvals.unwrap_or(0) >= rule.required,
        None => true,
    };
    if !approved || (def.requires_user_input && state.steps[idx].user_input.is_none()) {
        return Next::Pause;
    }
    Next::Call
}

/// The first step still to run.
fn next_step(state: &RunState) -> Option<usize> {
    state
        .steps
        .iter()
        .position(|s| matches!(s.status, StepStatus::Pending | StepStatus::Running))
}

/// After step `idx`: the next step's order, and whether `idx` is the last
/// step left to run.
fn after(state: &RunState, idx: usize) -> (Option<i32>, bool) {
    let next_order = state.steps.get(idx + 1).map(|s| s.step_order);
    let last = state.steps[idx + 1..]
        .iter()
        .all(|s| !matches!(s.status, StepStatus::Pending | StepStatus::Running));
    (next_order, last)
}

fn step_finished(
    idx: usize,
    next_order: Option<i32>,
    last: bool,
    at: NaiveDateTime,
    step: StepPatch,
    context_add: Option<(String, Value)>,
) -> Change {
    Change {
        expect: &[ExecutionStatus::Running],
        owned: true,
        exec: ExecPatch {
            context_add,
            current_step_order: next_order.map(Some),
            status: last.then_some(ExecutionStatus::Completed),
            lease: last.then_some(None),
            completed_at: last.then_some(at),
            ..Default::default()
        },
        steps: vec![(idx, step)],
        events: if last {
            vec![EventKind::StepUpdated, EventKind::ExecutionUpdated]
        } else {
            vec![EventKind::StepUpdated]
        },
        also: None,
    }
}
