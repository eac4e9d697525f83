//! Shared subscriptions: subscribers that send the same
//! `workflowExecutionEvents` document with the same variables, as the same
//! viewer with the same roles, form a group. The group follows the
//! execution's events once and runs the GraphQL selection on each event once;
//! every member gets the same serialized bytes. Without it, 1,000 watchers of
//! one run cost 1,000 executions of the selection set per event, and each
//! idle watcher held a whole async-graphql stream.
//!
//! Each member still subscribes on its own terms: it runs its own SNAPSHOT
//! (through the resolver, with its own access check), and follows the group
//! from that sequence on. A member that falls behind, or sees a gap, reads a
//! fresh SNAPSHOT of its own, exactly as a lone subscriber would. A resync
//! read that keeps failing (the database away for longer than
//! `SUBSCRIPTION_RETRY_SECONDS`) ends the group, and each member with it,
//! through its `Abort`: an error, never a quiet stop mid-run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection};
use async_graphql::{Data, Request, Value as GqlValue, Variables};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::engine::runner::Engine;
use crate::events::ExecutionEvent;
use crate::graphql::AppSchema;
use crate::graphql::admission::QueryLimits;
use crate::graphql::subscription::{Abort, Render, Seen, database_lost, resynced};

/// One result for the client: a serialized GraphQL response.
pub type Payload = Arc<str>;

/// At most this many frames a member may fall behind its group.
pub const MEMBER_LAG: usize = 64;

/// A response as a payload (see `graphql::json`: never `Serialize` directly).
pub fn payload(resp: &async_graphql::Response) -> Payload {
    let text = crate::graphql::json::to_bytes(resp);
    String::from_utf8(text).expect("JSON text is UTF-8").into()
}

/// What a group sends its members.
#[derive(Debug)]
struct Frame {
    sequence: i64,
    /// A SNAPSHOT: it may follow any earlier sequence.
    snapshot: bool,
    terminal: bool,
    /// `None`: the group stopped; members end (with an error when `failed`).
    payload: Option<Payload>,
    /// The group could not read the SNAPSHOT it needed to go on.
    failed: bool,
}

/// A subscription document, as every render of it needs it.
pub struct Document {
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: Variables,
    pub parsed: ExecutableDocument,
}

impl Document {
    fn request(&self, render: Render) -> Request {
        let mut req = Request::new(self.query.clone()).variables(self.variables.clone());
        if let Some(name) = &self.operation_name {
            req = req.operation_name(name.clone());
        }
        req.set_parsed_query(self.parsed.clone());
        req.data(render)
    }
}

/// What rendering needs, shared by all groups.
#[derive(Clone)]
pub struct Renderer {
    pub schema: AppSchema,
    pub limits: QueryLimits,
    pub engine: Arc<Engine>,
}

impl Renderer {
    /// Runs the document once in `render` mode: the first response, its
    /// errors coded, as JSON; `None` when the resolver yields nothing.
    async fn render(&self, session: &Arc<Data>, doc: &Document, render: Render) -> Option<Payload> {
        let mut stream = self
            .schema
            .execute_stream_with_session_data(doc.request(render), session.clone());
        let mut resp = stream.next().await?;
        self.limits.code_errors(&mut resp.errors, None);
        Some(payload(&resp))
    }

    /// The viewer's own SNAPSHOT, with its access check: the payload, and
    /// what it saw (`None` when it was refused or failed).
    async fn snapshot(&self, session: &Arc<Data>, doc: &Document) -> (Option<Payload>, Option<Seen>) {
        let cell = Arc::new(Mutex::new(None));
        let payload = self.render(session, doc, Render::Snapshot(cell.clone())).await;
        let seen = cell.lock().expect("snapshot cell").take();
        (payload, seen)
    }
}

/// The execution a subscription follows when its document can be shared:
/// the selected operation is a subscription whose only root selection is
/// `workflowExecutionEvents`, without directives, with `executionId` a string
/// literal or a variable the request gives as a string. Anything else runs
/// on its own.
pub fn shared_target(doc: &ExecutableDocument, operation_name: Option<&str>, variables: &Variables) -> Option<String> {
    let op = match (&doc.operations, operation_name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?,
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next()?,
        _ => return None,
    };
    if op.node.ty != OperationType::Subscription || !op.node.directives.is_empty() {
        return None;
    }
    let [item] = op.node.selection_set.node.items.as_slice() else {
        return None;
    };
    let Selection::Field(field) = &item.node else {
        return None;
    };
    if field.node.name.node != "workflowExecutionEvents" || !field.node.directives.is_empty() {
        return None;
    }
    let arg = field.node.get_argument("executionId")?;
    let value = arg
        .node
        .clone()
        .into_const_with(|name| variables.get(&name).cloned().ok_or(()))
        .ok()?;
    match value {
        GqlValue::String(s) => Some(s),
        _ => None,
    }
}

/// Groups by key; an entry whose group has gone is replaced when next asked for.
pub struct Hub {
    groups: Mutex<HashMap<String, Weak<Group>>>,
    renderer: Renderer,
    /// Frames a member may fall behind its group before it resyncs on its
    /// own. A broadcast channel allocates all its slots up front, so this is
    /// kept small: at 1,024 (the bus's default) a group cost ~48 KiB.
    buffer: usize,
}

struct Group {
    execution_id: String,
    doc: Document,
    tx: broadcast::Sender<Arc<Frame>>,
    /// Set once the group has sent its last frame: newcomers start another.
    ended: AtomicBool,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().expect("group task").take() {
            t.abort();
        }
    }
}

impl Hub {
    pub fn new(renderer: Renderer, buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            groups: Mutex::new(HashMap::new()),
            renderer,
            buffer: buffer.clamp(16, MEMBER_LAG),
        })
    }

    /// Groups open now (the tests read it).
    pub fn groups(&self) -> usize {
        self.groups
            .lock()
            .expect("groups lock")
            .values()
            .filter(|g| g.strong_count() > 0)
            .count()
    }

    /// Joins (or starts) the group for `viewer_key` + `doc`, following
    /// `execution_id`: the member's payloads, its own SNAPSHOT first. A
    /// member that cannot go on sets `abort` and ends.
    pub fn subscribe(
        self: &Arc<Self>,
        viewer_key: &str,
        session: Arc<Data>,
        doc: Document,
        execution_id: String,
        abort: Abort,
    ) -> BoxStream<'static, Payload> {
        let key = group_key(viewer_key, &doc);
        let (group, rx) = self.join(key, session.clone(), doc, execution_id);
        let renderer = self.renderer.clone();
        async_stream::stream! {
            // Subscribed to the group before the SNAPSHOT is read: nothing
            // committed after it can be missed.
            let mut rx = rx;
            let (payload, seen) = Box::pin(renderer.snapshot(&session, &group.doc)).await;
            if let Some(p) = payload {
                yield p;
            }
            let Some(seen) = seen else { return };
            if seen.terminal || seen.execution_id != group.execution_id {
                return;
            }
            let mut last = seen.sequence;
            loop {
                let behind = match rx.recv().await {
                    Ok(frame) => {
                        let Some(payload) = &frame.payload else {
                            if frame.failed {
                                abort.set(database_lost(&format!("execution {}", group.execution_id)));
                            }
                            return;
                        };
                        if frame.sequence <= last {
                            continue;
                        }
                        if frame.sequence == last + 1 || frame.snapshot {
                            last = frame.sequence;
                            yield payload.clone();
                            if frame.terminal {
                                return;
                            }
                            continue;
                        }
                        true
                    }
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                };
                if behind {
                    // The member's own SNAPSHOT, as a lone subscriber reads
                    // it; its access was checked when it subscribed.
                    let snap = Box::pin(renderer.engine.snapshot_when_back(&group.execution_id, "a subscriber")).await;
                    let snap = match snap {
                        Ok(Some(snap)) => snap,
                        Ok(None) => return,
                        Err(_) => {
                            abort.set(database_lost(&format!("execution {}", group.execution_id)));
                            return;
                        }
                    };
                    let terminal = snap.execution.status.is_terminal();
                    // Lagging again before anything new happened: this
                    // member already has that state.
                    if snap.sequence <= last && !terminal {
                        continue;
                    }
                    last = snap.sequence;
                    let payload = Box::pin(renderer.render(&session, &group.doc, Render::Event(Arc::new(snap)))).await;
                    yield payload.unwrap_or_else(|| Arc::from(r#"{"data":null}"#));
                    if terminal {
                        return;
                    }
                }
            }
        }
        .boxed()
    }

    fn join(
        self: &Arc<Self>,
        key: String,
        session: Arc<Data>,
        doc: Document,
        execution_id: String,
    ) -> (Arc<Group>, broadcast::Receiver<Arc<Frame>>) {
        let mut groups = self.groups.lock().expect("groups lock");
        if let Some(g) = groups.get(&key).and_then(Weak::upgrade)
            && !g.ended.load(Ordering::Acquire)
        {
            let rx = g.tx.subscribe();
            return (g, rx);
        }
        groups.retain(|_, g| g.strong_count() > 0);
        let (tx, rx) = broadcast::channel(self.buffer);
        let group = Arc::new(Group {
            execution_id,
            doc,
            tx,
            ended: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        // The group's bus subscription starts now, before any member reads
        // its SNAPSHOT.
        let follow = Follow::start(&self.renderer.engine, &group.execution_id);
        let task = tokio::spawn(run(Arc::downgrade(&group), self.renderer.clone(), session, follow));
        *group.task.lock().expect("group task") = Some(task);
        groups.insert(key, Arc::downgrade(&group));
        (group, rx)
    }
}

/// Members of one group must see exactly what each would see alone.
fn group_key(viewer_key: &str, doc: &Document) -> String {
    let vars = serde_json::to_string(&doc.variables).unwrap_or_default();
    format!(
        "{viewer_key}\u{1}{}\u{1}{}\u{1}{vars}",
        doc.operation_name.as_deref().unwrap_or(""),
        doc.query
    )
}

/// The bus (and, with several instances, the relay) for one execution.
struct Follow {
    rx: broadcast::Receiver<Arc<ExecutionEvent>>,
    resyncs: Option<tokio::sync::watch::Receiver<u64>>,
    _watch: Option<crate::engine::relay::Watch>,
}

impl Follow {
    fn start(engine: &Engine, execution_id: &str) -> Self {
        Self {
            _watch: engine.relay().map(|r| r.watch_execution(execution_id)),
            resyncs: engine.relay().map(|r| r.resyncs()),
            rx: engine.bus().subscribe(),
        }
    }
}

/// The group's task: renders each event of its execution once and sends it
/// to every member, until the run finishes or the last member leaves. It
/// holds its group only while it sends, so a group whose members all left
/// while its SNAPSHOT was being retried goes at once.
async fn run(group: Weak<Group>, renderer: Renderer, session: Arc<Data>, mut follow: Follow) {
    let Some(execution_id) = group.upgrade().map(|g| g.execution_id.clone()) else {
        return;
    };
    let mut last: Option<i64> = None;
    loop {
        let event = tokio::select! {
            r = follow.rx.recv() => Some(r),
            _ = resynced(&mut follow.resyncs) => None,
        };
        let (event, snapshot) = match event {
            Some(Ok(ev)) if ev.execution.id != execution_id => continue,
            Some(Ok(ev)) if last.is_some_and(|l| ev.sequence <= l) => continue,
            Some(Ok(ev)) if last.is_none_or(|l| ev.sequence == l + 1) => (ev, false),
            Some(Err(RecvError::Closed)) => {
                stop(&group, false);
                return;
            }
            // A gap, a lag, or the relay's word that events may be lost:
            // one SNAPSHOT for the whole group.
            _ => match Box::pin(
                renderer
                    .engine
                    .snapshot_when_back(&execution_id, "a subscription group"),
            )
            .await
            {
                Ok(Some(snap)) if last.is_some_and(|l| snap.sequence <= l) && !snap.execution.status.is_terminal() => {
                    continue;
                }
                Ok(Some(snap)) => (Arc::new(snap), true),
                Ok(None) => {
                    stop(&group, false);
                    return;
                }
                Err(_) => {
                    stop(&group, true);
                    return;
                }
            },
        };
        let Some(g) = group.upgrade() else { return };
        let terminal = if snapshot {
            event.execution.status.is_terminal()
        } else {
            event.is_terminal()
        };
        last = Some(event.sequence);
        let sequence = event.sequence;
        let payload = Box::pin(renderer.render(&session, &g.doc, Render::Event(event))).await;
        if terminal {
            g.ended.store(true, Ordering::Release);
        }
        let _ = g.tx.send(Arc::new(Frame {
            sequence,
            snapshot,
            terminal,
            payload: Some(payload.unwrap_or_else(|| Arc::from(r#"{"data":null}"#))),
            failed: false,
        }));
        if terminal {
            return;
        }
    }
}

/// Tells every member that the group stopped (`failed`: it could not go on).
fn stop(group: &Weak<Group>, failed: bool) {
    let Some(g) = group.upgrade() else { return };
    g.ended.store(true, Ordering::Release);
    let _ = g.tx.send(Arc::new(Frame {
        sequence: i64::MAX,
        snapshot: false,
        terminal: true,
        payload: None,
        failed,
    }));
}
