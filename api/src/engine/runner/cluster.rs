//! Several instances on one database: renewing this instance's leases,
//! sweeping for runs nobody works on, and replaying other instances' events
//! (the relay) for local subscribers.

use super::*;

impl Engine {
    /// Starts the background work: renewing this instance's leases, sweeping
    /// for runs nobody works on, and (PostgreSQL) relaying other instances'
    /// events. On SQLite (one process per file) every RUNNING run is taken
    /// over at once, since the process that ran it is gone.
    pub fn start_background(self: &Arc<Self>) {
        let engine = self.clone();
        tokio::spawn(async move {
            let every = engine.settings.lease / 3;
            loop {
                tokio::select! {
                    _ = engine.stopping.cancelled() => return,
                    _ = engine.clock.sleep(every) => {}
                }
                if let Err(e) = engine.renew().await {
                    tracing::warn!(error = %e, "renewing leases failed");
                }
            }
        });
        let engine = self.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                match engine
                    .sweep(first && engine.db.get_database_backend() == DbBackend::Sqlite)
                    .await
                {
                    Ok(ids) => {
                        for id in ids {
                            if engine.runs_here(&id) {
                                // This instance's own run, whose lease ran out
                                // while it worked (renewing was late): the
                                // sweep renewed it, and its runner goes on. A
                                // second runner would repeat its steps.
                                tracing::warn!(execution = %id, "a lease ran out while this instance held it; renewed");
                                continue;
                            }
                            tracing::info!(execution = %id, "taking over a run nobody was working on");
                            engine.forget(&id);
                            engine.spawn(id, None);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "sweeping for orphaned runs failed"),
                }
                first = false;
                tokio::select! {
                    _ = engine.stopping.cancelled() => return,
                    _ = engine.clock.sleep(engine.settings.sweep) => {}
                }
            }
        });
        if self.relay.is_some() {
            let engine = self.clone();
            tokio::spawn(async move { engine.listen().await });
        }
    }

    /// Whether a runner of this process works on `id` now.
    pub(super) fn runs_here(&self, id: &str) -> bool {
        self.live
            .lock()
            .expect("live lock")
            .get(id)
            .is_some_and(|l| l.runner.load(Ordering::SeqCst))
    }

    /// Extends this instance's leases. On PostgreSQL a run whose row is
    /// locked is left out rather than waited for: the lock is this
    /// instance's own write to it, which renews its lease itself (nobody
    /// else writes a RUNNING run whose lease holds), and waiting would hold
    /// up every other lease behind it.
    pub(super) async fn renew(&self) -> Result<(), DbErr> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            let sql = r#"UPDATE workflow_executions SET "leaseExpiresAt" = $1
                WHERE id IN (SELECT id FROM workflow_executions
                             WHERE "leaseOwner" = $2 AND status = 'running'
                             FOR UPDATE SKIP LOCKED)"#;
            let values = vec![self.lease_until().into(), self.instance.clone().into()];
            self.db
                .execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
                .await?;
            return Ok(());
        }
        execution::Entity::update_many()
            .set(execution::ActiveModel {
                lease_expires_at: Set(Some(self.lease_until())),
                ..Default::default()
            })
            .filter(execution::Column::LeaseOwner.eq(self.instance.clone()))
            .filter(execution::Column::Status.eq(ExecutionStatus::Running))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Claims up to 100 RUNNING executions whose lease expired (or all
    /// RUNNING ones when `all`); returns their ids.
    pub(super) async fn sweep(&self, all: bool) -> Result<Vec<String>, DbErr> {
        if self.stopping.is_cancelled() {
            return Ok(Vec::new());
        }
        let backend = self.db.get_database_backend();
        let expired = if all {
            ""
        } else {
            r#"AND ("leaseExpiresAt" IS NULL OR "leaseExpiresAt" < {now})"#
        };
        let (sql, values): (String, Vec<sea_orm::Value>) = match backend {
            DbBackend::Postgres => (
                format!(
                    r#"UPDATE workflow_executions SET "leaseOwner" = $1, "leaseExpiresAt" = $2
                       WHERE id IN (SELECT id FROM workflow_executions WHERE status = 'running' {}
                                    ORDER BY "updatedAt" LIMIT 100 FOR UPDATE SKIP LOCKED)
                       RETURNING id"#,
                    expired.replace("{now}", "$3")
                ),
                vec![
                    self.instance.clone().into(),
                    self.lease_until().into(),
                    self.clock.now().into(),
                ],
            ),
            _ => (
                format!(
                    r#"UPDATE workflow_executions SET "leaseOwner" = ?, "leaseExpiresAt" = ?
                       WHERE id IN (SELECT id FROM workflow_executions WHERE status = 'running' {}
                                    ORDER BY "updatedAt" LIMIT 100)
                       RETURNING id"#,
                    expired.replace("{now}", "?")
                ),
                vec![
                    self.instance.clone().into(),
                    self.lease_until().into(),
                    self.clock.now().into(),
                ],
            ),
        };
        let values = if all { values[..2].to_vec() } else { values };
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        rows.iter().map(|r| r.try_get::<String>("", "id")).collect()
    }

    /// Receives other instances' notes and republishes what local
    /// subscribers follow; carries out cancel requests for runs this
    /// instance owns.
    pub(super) async fn listen(self: Arc<Self>) {
        let relay = self.relay.clone().expect("listen runs on PostgreSQL");
        let pool = self.db.get_postgres_connection_pool().clone();
        loop {
            let mut listener = match sea_orm::sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "event relay: cannot connect; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(relay::CHANNEL).await {
                tracing::warn!(error = %e, "event relay: LISTEN failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Anything sent while not listening is lost: streams resync,
            // and the copies of runs are read afresh.
            relay.missed_some();
            let mut copies: HashMap<String, RunState> = HashMap::new();
            loop {
                let received = tokio::select! {
                    _ = self.stopping.cancelled() => return,
                    r = listener.try_recv() => r,
                };
                match received {
                    Ok(Some(n)) => {
                        if let Ok(note) = serde_json::from_str::<Note>(n.payload())
                            && note.i != relay.instance
                        {
                            self.receive(&relay, &mut copies, note).await;
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("event relay: connection lost; reconnecting");
                        relay.missed_some();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event relay failed; reconnecting");
                        relay.missed_some();
                        break;
                    }
                }
            }
        }
    }

    pub(super) async fn receive(
        self: &Arc<Self>,
        relay: &Arc<Relay>,
        copies: &mut HashMap<String, RunState>,
        note: Note,
    ) {
        if note.k == 'C' {
            if self.runs_here(&note.e) {
                let engine = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = engine.cancel(&note.e).await {
                        tracing::info!(execution = %note.e, error = ?e, "cancel requested by another instance");
                    }
                });
            }
            return;
        }
        let Some(kind) = note.kind() else { return };
        // A run finished elsewhere while this instance still works on it
        // (it lost its lease): stop here.
        if kind == EventKind::ExecutionUpdated
            && let Some(live) = self.live.lock().expect("live lock").get(&note.e)
            && live.runner.load(Ordering::SeqCst)
        {
            live.cancel.cancel();
        }
        relay.record(&note.e, note.s);
        if !relay.follows(&note) {
            copies.remove(&note.e);
            return;
        }
        let event = match self.replay(copies, kind, &note).await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "event relay: reading the execution failed");
                copies.remove(&note.e);
                relay.missed_some();
                return;
            }
        };
        if copies.len() > 10_000 {
            // Bounded: forgetting a copy only costs reading the rows again.
            copies.clear();
        }
        if !event.execution.status.is_terminal() {
            copies.insert(
                note.e.clone(),
                RunState::new(event.execution.clone(), event.steps.clone()),
            );
        }
        self.bus.publish(event);
    }

    /// The event another instance's note tells of, with the state after it,
    /// as the writer published it: the note's change applied to this
    /// instance's copy of the run when the copy is at the event before; the
    /// run's first state rebuilt from the rows for its first event; the rows
    /// themselves when they are still at this event. When they have moved
    /// on, that event's state is gone: a SNAPSHOT of the rows stands for it.
    /// `None` for a note already applied.
    pub(super) async fn replay(
        &self,
        copies: &mut HashMap<String, RunState>,
        kind: EventKind,
        note: &Note,
    ) -> Result<Option<ExecutionEvent>, DbErr> {
        let event = |kind, sequence, at, state: RunState| {
            let step = note
                .t
                .as_ref()
                .and_then(|t| state.steps.iter().find(|s| &s.id == t).cloned());
            ExecutionEvent {
                kind,
                sequence,
                at,
                execution: state.exec,
                steps: state.steps,
                step,
                delta: note.x.clone(),
            }
        };
        let patch = note
            .p
            .as_ref()
            .and_then(|p| serde_json::from_str::<relay::Patch>(p.get()).ok());
        match copies.remove(&note.e) {
            Some(copy) if copy.exec.sequence >= note.s => {
                copies.insert(note.e.clone(), copy);
                return Ok(None);
            }
            Some(mut copy) if copy.exec.sequence + 1 == note.s && patch.is_some() => {
                let mut patch = patch.expect("checked");
                let at = match patch.a {
                    Some(at) => {
                        self.read_left_out(&note.e, &mut patch).await?;
                        let steps: Vec<(usize, &StepPatch)> = patch
                            .s
                            .iter()
                            .filter_map(|c| copy.steps.iter().position(|s| s.id == c.t).map(|i| (i, &c.p)))
                            .collect();
                        copy.apply(&patch.e, &steps, note.s, at, "");
                        at
                    }
                    None => {
                        // A delta, or a change's later event: nothing stored changed.
                        Arc::make_mut(&mut copy.exec).sequence = note.s;
                        now()
                    }
                };
                return Ok(Some(event(kind, note.s, at, copy)));
            }
            _ => {}
        }
        let Some(mut rows) = self.load(&note.e).await? else {
            return Ok(None);
        };
        if note.s == 1 {
            let first = RunState::as_started(&rows.exec, &rows.steps);
            let at = first.exec.created_at;
            return Ok(Some(event(kind, 1, at, first)));
        }
        let stored = rows.exec.sequence;
        // Deltas are not stored: rows older than a delta are its state.
        if stored == note.s || (kind == EventKind::StepOutputDelta && stored < note.s) {
            Arc::make_mut(&mut rows.exec).sequence = note.s;
            let at = rows.exec.updated_at;
            return Ok(Some(event(kind, note.s, at, rows)));
        }
        if stored > note.s {
            let mut snap = event(EventKind::Snapshot, stored, now(), rows);
            snap.step = None;
            snap.delta = None;
            return Ok(Some(snap));
        }
        Ok(None)
    }

    /// Fills in the values a note left out for their size, from the rows:
    /// a later change never rewrites them (a step's input, output and
    /// message, a context key, the execution's message).
    pub(super) async fn read_left_out(&self, id: &str, patch: &mut relay::Patch) -> Result<(), DbErr> {
        use relay::Field;
        let left_out = std::mem::take(&mut patch.r);
        if (left_out.contains(&Field::Context) || left_out.contains(&Field::Error))
            && let Some(row) = execution::Entity::find_by_id(id.to_owned()).one(&self.db).await?
        {
            if let (true, Some((key, value))) = (left_out.contains(&Field::Context), patch.e.context_add.as_mut()) {
                *value = row
                    .accumulated_context
                    .get(key.as_str())
                    .cloned()
                    .unwrap_or(Value::Null);
            }
            if left_out.contains(&Field::Error) {
                patch.e.error_message = row.error_message;
            }
        }
        for change in patch.s.iter_mut().filter(|c| !c.r.is_empty()) {
            let Some(row) = exec_step::Entity::find_by_id(change.t.clone()).one(&self.db).await? else {
                continue;
            };
            for field in std::mem::take(&mut change.r) {
                let sp = &mut change.p;
                match field {
                    Field::AgentInput => sp.agent_input = row.agent_input.clone(),
                    Field::AgentOutput => sp.agent_output = row.agent_output.clone(),
                    Field::UserInput => sp.user_input = row.user_input.clone(),
                    Field::StepError => sp.error_message = row.error_message.clone(),
                    Field::Context | Field::Error => {}
                }
            }
        }
        Ok(())
    }
}
