//! Persistence: every change to a run is one conditional write (one
//! statement on PostgreSQL, one transaction on SQLite) that bumps the stored
//! `sequence`; only once it commits are its events published here and
//! announced to other instances. Creating a run is one write too.

use super::*;

impl Engine {
    /// Writes a change in one transaction and publishes its events. Returns
    /// false (and writes nothing) when the execution's status no longer
    /// allows it.
    pub(super) async fn apply(
        &self,
        seq: &mut Option<i64>,
        state: &mut RunState,
        mut change: Change,
    ) -> Result<bool, DbErr> {
        if change.owned && change.exec.lease.is_none() {
            // A runner's write is the surest sign it is alive: it renews the
            // lease, whatever the renewal loop is waiting on.
            change.exec.lease = Some(Some(self.lease_until()));
        }
        // This instance's own count when it has one; otherwise the stored
        // one, above anything a previous owner may have handed out.
        let base = match *seq {
            Some(n) => n.max(state.exec.sequence),
            None => state.exec.sequence.max(state.exec.sequence_reserved),
        };
        let new_seq = base + change.events.len() as i64;
        let at = now();
        let p = &change.exec;
        let exec_row = execution::ActiveModel {
            status: p.status.map_or(NotSet, Set),
            current_step_order: p.current_step_order.map_or(NotSet, Set),
            paused_at: p.paused_at.map_or(NotSet, |t| Set(Some(t))),
            completed_at: p.completed_at.map_or(NotSet, |t| Set(Some(t))),
            failed_at: p.failed_at.map_or(NotSet, |t| Set(Some(t))),
            error_message: p.error_message.clone().map_or(NotSet, |m| Set(Some(m))),
            lease_owner: p.lease.map_or(NotSet, |l| Set(l.map(|_| self.instance.clone()))),
            lease_expires_at: p.lease.map_or(NotSet, Set),
            sequence: Set(new_seq),
            sequence_reserved: Set(new_seq),
            updated_at: Set(at),
            ..Default::default()
        };
        let mut exec_update = execution::Entity::update_many()
            .set(exec_row)
            .filter(execution::Column::Id.eq(state.exec.id.clone()))
            .filter(execution::Column::Status.is_in(change.expect.iter().copied()));
        if change.owned {
            // Fenced twice: this instance holds the lease, and nobody wrote
            // since this runner last did. A new owner numbers its first write
            // above every sequence handed out here (deltas included, through
            // `sequenceReserved`), so a runner that lost the lease while an
            // agent answered, even one whose instance has taken the lease
            // back since, finds its write refused and stops.
            exec_update = exec_update
                .filter(execution::Column::LeaseOwner.eq(self.instance.clone()))
                .filter(execution::Column::Sequence.lte(state.exec.sequence));
        }
        if let Some((key, value)) = &p.context_add {
            exec_update = exec_update.col_expr(
                execution::Column::AccumulatedContext,
                merge_into_context(self.db.get_database_backend(), key, value),
            );
        }
        let step_updates: Vec<_> = change
            .steps
            .iter()
            .map(|(idx, sp)| {
                let step_row = exec_step::ActiveModel {
                    status: sp.status.map_or(NotSet, Set),
                    agent_input: sp.agent_input.clone().map_or(NotSet, |v| Set(Some(v))),
                    agent_output: sp.agent_output.clone().map_or(NotSet, |v| Set(Some(v))),
                    user_input: sp.user_input.clone().map_or(NotSet, |v| Set(Some(v))),
                    started_at: sp.started_at.map_or(NotSet, |t| Set(Some(t))),
                    completed_at: sp.completed_at.map_or(NotSet, |t| Set(Some(t))),
                    error_message: sp.error_message.clone().map_or(NotSet, |m| Set(Some(m))),
                    updated_at: Set(at),
                    ..Default::default()
                };
                exec_step::Entity::update_many()
                    .set(step_row)
                    .filter(exec_step::Column::Id.eq(state.steps[*idx].id.clone()))
            })
            .collect();
        // Which changed step each event carries: the n-th event about a step
        // the n-th changed step (the last one once they run out: a decision
        // and the status change it makes are about the same step).
        let mut about = change.steps.iter().map(|(idx, _)| *idx);
        let mut last = None;
        let carried: Vec<Option<usize>> = change
            .events
            .iter()
            .map(|k| {
                if !k.is_about_a_step() {
                    return None;
                }
                last = about.next().or(last);
                last
            })
            .collect();
        let notes: Vec<Note> = match &self.relay {
            Some(relay) => change
                .events
                .iter()
                .enumerate()
                .map(|(i, kind)| Note {
                    i: relay.instance.clone(),
                    e: state.exec.id.clone(),
                    d: state.exec.drive_id.clone(),
                    s: base + i as i64 + 1,
                    k: Note::letter(*kind),
                    t: carried[i].map(|idx| state.steps[idx].id.clone()),
                    x: None,
                    // The change goes with its first event; the state after
                    // the others is the same.
                    p: Some(if i == 0 {
                        let steps: Vec<(&str, &StepPatch)> = change
                            .steps
                            .iter()
                            .map(|(idx, sp)| (state.steps[*idx].id.as_str(), sp))
                            .collect();
                        relay::patch(at, &change.exec, &steps)
                    } else {
                        relay::unchanged()
                    }),
                })
                .collect(),
            None => Vec::new(),
        };
        // What the change finishes, for the template's statistics: written
        // with the change, so it counts exactly when the change applies.
        let patches: Vec<(usize, &StepPatch)> = change.steps.iter().map(|(i, sp)| (*i, sp)).collect();
        let rollup = Rollup::of_change(state, &change.exec, &patches, at);
        let applied = if self.db.get_database_backend() == DbBackend::Postgres {
            self.write_in_one_statement(exec_update, step_updates, change.also.clone(), rollup.as_ref(), &notes)
                .await?
        } else {
            let txn = self.db.begin().await?;
            if exec_update.exec(&txn).await?.rows_affected == 0 {
                txn.rollback().await?;
                false
            } else {
                for u in step_updates {
                    u.exec(&txn).await?;
                }
                if let Some(insert) = &change.also {
                    txn.execute(insert).await?;
                }
                if let Some(r) = &rollup {
                    let (sql, values) = r.insert(DbBackend::Sqlite, 1, None);
                    txn.execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
                        .await?;
                }
                txn.commit().await?;
                true
            }
        };
        if !applied {
            return Ok(false);
        }

        // The rows as now stored, built from what was just written.
        let steps: Vec<(usize, &StepPatch)> = change.steps.iter().map(|(idx, sp)| (*idx, sp)).collect();
        let changed_steps = state.apply(&change.exec, &steps, new_seq, at, &self.instance);
        for s in &changed_steps {
            if let Some(observe) = self.step_observer.get() {
                observe(s);
            }
        }
        *seq = Some(new_seq);
        for (i, kind) in change.events.iter().enumerate() {
            let event = ExecutionEvent {
                kind: *kind,
                sequence: base + i as i64 + 1,
                at,
                execution: state.exec.clone(),
                steps: state.steps.clone(),
                step: carried[i].map(|idx| state.steps[idx].clone()),
                delta: None,
            };
            self.bus.publish(event);
        }
        if state.exec.status.is_terminal() {
            self.forget(&state.exec.id);
        }
        Ok(true)
    }

    pub(super) async fn write(&self, live: &Live, state: &mut RunState, change: Change) -> Result<bool, DbErr> {
        let mut seq = live.seq.lock().await;
        self.apply(&mut seq, state, change).await
    }

    /// PostgreSQL: the execution update, the step update and the NOTIFYs in
    /// one statement (one round trip, atomic): data-modifying CTEs, the step
    /// and the notes applied only when the fenced execution update matched.
    pub(super) async fn write_in_one_statement(
        &self,
        exec_update: sea_orm::UpdateMany<execution::Entity>,
        step_updates: Vec<sea_orm::UpdateMany<exec_step::Entity>>,
        also: Option<sea_orm::sea_query::InsertStatement>,
        rollup: Option<&Rollup>,
        notes: &[Note],
    ) -> Result<bool, DbErr> {
        use sea_orm::QueryTrait;
        use sea_orm::sea_query::{Expr, PostgresQueryBuilder};
        let mut e = exec_update.into_query();
        e.returning_col(execution::Column::Id);
        let (e_sql, values) = e.build(PostgresQueryBuilder);
        let mut values = values.0;
        let mut sql = format!("WITH e AS ({e_sql})");
        for (n, u) in step_updates.into_iter().enumerate() {
            let mut u = u.into_query();
            u.and_where(Expr::cust("EXISTS (SELECT 1 FROM e)"));
            let (s_sql, s_values) = u.build(PostgresQueryBuilder);
            sql.push_str(&format!(", s{n} AS ({})", shift_placeholders(&s_sql, values.len())));
            values.extend(s_values.0);
        }
        if let Some(insert) = also {
            // Only when the fenced update matched: INSERT … SELECT … WHERE.
            let (a_sql, a_values) = insert.build(PostgresQueryBuilder);
            let a_sql = a_sql.replacen(" VALUES (", " SELECT ", 1);
            let a_sql = match a_sql.rfind(')') {
                Some(end) => format!("{} WHERE EXISTS (SELECT 1 FROM e){}", &a_sql[..end], &a_sql[end + 1..]),
                None => a_sql,
            };
            sql.push_str(&format!(", a AS ({})", shift_placeholders(&a_sql, values.len())));
            values.extend(a_values.0);
        }
        if let Some(r) = rollup {
            let (r_sql, r_values) = r.insert(DbBackend::Postgres, values.len() + 1, Some("EXISTS (SELECT 1 FROM e)"));
            sql.push_str(&format!(", r AS ({r_sql})"));
            values.extend(r_values);
        }
        let mut columns = vec!["e.id".to_owned()];
        for note in notes {
            values.push(serde_json::to_string(note).expect("note serializes").into());
            columns.push(format!("pg_notify('{}', ${})::text", relay::CHANNEL, values.len()));
        }
        sql.push_str(&format!(" SELECT {} FROM e", columns.join(", ")));
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
            .await?;
        Ok(!rows.is_empty())
    }

    /// Creates the execution (RUNNING) and its step records — a PENDING one
    /// per step to run, carrying a copy of its definition, and those a retry
    /// reuses as they ended — then runs it in the background.
    pub async fn start(self: &Arc<Self>, launch: Launch) -> ApiResult<execution::Model> {
        let run = self.prepare(launch)?;
        if self.relay.is_some() {
            // PostgreSQL: one statement, atomic by itself.
            self.insert_run(&self.db, &run).await?;
        } else {
            let txn = self.db.begin().await?;
            self.insert_run(&txn, &run).await?;
            txn.commit().await?;
        }
        Ok(self.run_inserted(run).await)
    }

    /// The rows of a new run, not yet written: `insert_run` writes them (in
    /// the caller's transaction, if it has one), and `run_inserted` runs
    /// them once committed.
    pub fn prepare(&self, launch: Launch) -> ApiResult<NewRun> {
        if launch.steps.is_empty() {
            return Err(ApiError::bad_input("templateId: the template has no steps to run"));
        }
        let at = now();
        let id = new_id();
        let (schedule_id, scheduled_for) = launch.schedule.unzip();
        // The context as the reused steps left it: the starting context plus
        // their inputs and outputs, in step order.
        let mut context = launch.context.clone();
        if let Some(map) = context.as_object_mut() {
            for seed in &launch.steps {
                if let Seed::Reused(r) = seed {
                    if let Some(input) = &r.user_input {
                        map.insert(format!("step_{}_input", r.step_order), input.clone());
                    }
                    if let (StepStatus::Completed, Some(output)) = (r.status, &r.agent_output) {
                        map.insert(format!("step_{}_output", r.step_order), output.clone());
                    }
                }
            }
        }
        let records: Vec<exec_step::Model> = launch
            .steps
            .into_iter()
            .map(|seed| match seed {
                Seed::Run {
                    workflow_step_id,
                    step_order,
                    definition,
                } => exec_step::Model {
                    id: new_id(),
                    workflow_execution_id: id.clone(),
                    workflow_step_id,
                    step_order,
                    status: StepStatus::Pending,
                    agent_input: None,
                    agent_output: None,
                    user_input: None,
                    started_at: None,
                    completed_at: None,
                    error_message: None,
                    definition: Some(serde_json::to_value(definition).expect("definition serializes")),
                    reused: false,
                    created_at: at,
                    updated_at: at,
                },
                Seed::Reused(r) => exec_step::Model {
                    id: new_id(),
                    workflow_execution_id: id.clone(),
                    reused: true,
                    created_at: at,
                    updated_at: at,
                    ..r
                },
            })
            .collect();
        let exec = execution::Model {
            id,
            workflow_template_id: launch.template_id,
            user_id: launch.user_id,
            drive_id: launch.drive_id,
            status: ExecutionStatus::Running,
            current_step_order: records.iter().find(|r| !r.reused).map(|r| r.step_order),
            initial_context: launch.context,
            accumulated_context: context,
            started_at: Some(at),
            paused_at: None,
            completed_at: None,
            failed_at: None,
            error_message: None,
            sequence: 1,
            sequence_reserved: 0,
            lease_owner: Some(self.instance.clone()),
            lease_expires_at: Some(self.lease_until()),
            template_version: launch.version,
            retry_of_execution_id: launch.retry_of,
            schedule_id,
            scheduled_for,
            created_at: at,
            updated_at: at,
        };
        Ok(NewRun {
            event: ExecutionEvent {
                kind: EventKind::ExecutionUpdated,
                sequence: 1,
                at,
                execution: Arc::new(exec),
                steps: Arc::new(records),
                step: None,
                delta: None,
            },
        })
    }

    /// Writes a prepared run's execution and step records on `conn`. On
    /// SQLite these are two statements: give a transaction. On PostgreSQL
    /// they and the note to other instances are one statement (the note is
    /// delivered when the surrounding transaction commits).
    pub async fn insert_run(&self, conn: &impl ConnectionTrait, run: &NewRun) -> Result<(), DbErr> {
        let event = &run.event;
        let insert_exec = execution::Entity::insert(execution::ActiveModel::from((*event.execution).clone()));
        let insert_steps =
            exec_step::Entity::insert_many(event.steps.iter().cloned().map(exec_step::ActiveModel::from));
        match &self.relay {
            // PostgreSQL: both inserts and the note in one statement.
            Some(relay) => {
                use sea_orm::QueryTrait;
                use sea_orm::sea_query::PostgresQueryBuilder;
                let mut e = insert_exec.into_query();
                e.returning_col(execution::Column::Id);
                let (e_sql, values) = e.build(PostgresQueryBuilder);
                let mut values = values.0;
                let (s_sql, s_values) = insert_steps.into_query().build(PostgresQueryBuilder);
                let sql_steps = shift_placeholders(&s_sql, values.len());
                values.extend(s_values.0);
                values.push(
                    serde_json::to_string(&Note::of(&relay.instance, event))
                        .expect("note")
                        .into(),
                );
                let sql = format!(
                    "WITH e AS ({e_sql}), s AS ({sql_steps}) SELECT pg_notify('{}', ${})::text FROM e",
                    relay::CHANNEL,
                    values.len()
                );
                conn.query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
                    .await?;
            }
            None => {
                insert_exec.exec_without_returning(conn).await?;
                insert_steps.exec_without_returning(conn).await?;
            }
        }
        Ok(())
    }

    /// Publishes a run's first event and runs it in the background; call
    /// once its rows are committed.
    pub async fn run_inserted(self: &Arc<Self>, run: NewRun) -> execution::Model {
        let event = run.event;
        let exec = (*event.execution).clone();
        let state = RunState::new(event.execution.clone(), event.steps.clone());
        let live = self.live(&exec.id);
        {
            let mut seq = live.seq.lock().await;
            *seq = Some(1);
            self.bus.publish(event);
        }
        self.spawn(exec.id.clone(), Some(state));
        exec
    }

    /// Sends the event to other instances (PostgreSQL only).
    pub(super) async fn tell_others(&self, event: &ExecutionEvent) {
        if let Some(relay) = &self.relay {
            self.notify(&Note::of(&relay.instance, event)).await;
        }
    }

    pub(super) async fn notify(&self, note: &Note) {
        let payload = serde_json::to_string(note).expect("note serializes");
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [relay::CHANNEL.into(), payload.into()],
        );
        if let Err(e) = self.db.execute_raw(stmt).await {
            tracing::warn!(error = %e, "could not notify other instances");
        }
    }
}

/// Renumbers `$n` placeholders by `offset` (values are always bound, so a
/// `$` followed by digits is a placeholder).
fn shift_placeholders(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut n = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            out.push('$');
            out.push_str(&(n.parse::<usize>().unwrap_or(0) + offset).to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// `accumulatedContext` with one more key, computed by the database.
fn merge_into_context(backend: DbBackend, key: &str, value: &Value) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::Expr;
    match backend {
        DbBackend::Postgres => Expr::cust_with_values(
            r#""accumulatedContext" || jsonb_build_object($1::text, $2::jsonb)"#,
            [
                sea_orm::Value::from(key.to_owned()),
                sea_orm::Value::from(value.clone()),
            ],
        ),
        _ => Expr::cust_with_values(
            r#"json_set("accumulatedContext", ?, json(?))"#,
            [
                sea_orm::Value::from(format!("$.\"{key}\"")),
                sea_orm::Value::from(value.to_string()),
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    pub(super) fn shifts_placeholders() {
        assert_eq!(
            super::shift_placeholders(r#"UPDATE "t" SET "a" = $1, "b" = $12"#, 3),
            r#"UPDATE "t" SET "a" = $4, "b" = $15"#
        );
    }
}
