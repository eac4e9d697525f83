//! Events across instances on one PostgreSQL database: each commit sends a
//! small NOTIFY (ids, sequence, kind, what the change wrote, the text of a
//! streamed piece); other instances that have subscribers for that execution
//! or drive apply the change to their copy of the run and publish the event,
//! with the state after it, on their own bus. Payloads stay below
//! PostgreSQL's 8000-byte limit: deltas are split before they are numbered,
//! and values too large to carry are read from the rows, where they stay as
//! that change wrote them. If the listener's connection drops, every stream
//! on this instance re-sends a SNAPSHOT instead of leaving a silent gap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::state::{ExecPatch, StepPatch};
use crate::events::{EventKind, ExecutionEvent};

pub const CHANNEL: &str = "workflow_events";
/// Streamed text is cut into pieces of at most this many bytes.
pub const MAX_DELTA_BYTES: usize = 6000;
/// A change larger than this as JSON leaves its large values out of the note.
pub const MAX_PATCH_BYTES: usize = 6000;

/// What one NOTIFY carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Note {
    /// Sending instance.
    pub i: String,
    /// Execution and drive.
    pub e: String,
    pub d: String,
    pub s: i64,
    /// E: execution updated, S: step updated, D: delta, A: approval decided,
    /// C: cancel request.
    pub k: char,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// What the event's change wrote (a `Patch`): on the first note of a
    /// change; `{}` on the others and on deltas, which change no row. A note
    /// without it makes the receiver read the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<Box<RawValue>>,
}

/// A change as the relay carries it.
#[derive(Default, Serialize, Deserialize)]
pub struct Patch {
    /// When the change was stored (the rows' `updatedAt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<chrono::NaiveDateTime>,
    #[serde(default)]
    pub e: ExecPatch,
    /// Values of the execution left out for their size, to be read from its row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r: Vec<Field>,
    /// The step records the change wrote, and what it wrote there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub s: Vec<StepChange>,
}

/// What a change wrote to one step record.
#[derive(Default, Serialize, Deserialize)]
pub struct StepChange {
    pub t: String,
    pub p: StepPatch,
    /// Values left out for their size, to be read from the step's row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r: Vec<Field>,
}

/// A value a note may leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    /// The value of the key `ExecPatch::context_add` names.
    Context,
    Error,
    AgentInput,
    AgentOutput,
    UserInput,
    StepError,
}

/// An empty patch: the note's event changed nothing stored.
pub fn unchanged() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("valid JSON")
}

/// The change as a note's patch: whole when it is small, else without its
/// large values (named in `r`). Large values are serialized only up to the
/// limit, so a megabyte of output costs no megabyte here.
pub fn patch(at: chrono::NaiveDateTime, exec: &ExecPatch, steps: &[(&str, &StepPatch)]) -> Box<RawValue> {
    #[derive(Serialize)]
    struct Whole<'a> {
        a: chrono::NaiveDateTime,
        e: &'a ExecPatch,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        s: Vec<StepRef<'a>>,
    }
    #[derive(Serialize)]
    struct StepRef<'a> {
        t: &'a str,
        p: &'a StepPatch,
    }
    let mut out = Bounded(Vec::with_capacity(256));
    let whole = Whole {
        a: at,
        e: exec,
        s: steps.iter().map(|(t, p)| StepRef { t, p }).collect(),
    };
    if serde_json::to_writer(&mut out, &whole).is_ok() {
        let text = String::from_utf8(out.0).expect("JSON is UTF-8");
        return RawValue::from_string(text).expect("valid JSON");
    }
    let mut r = Vec::new();
    if exec.context_add.is_some() {
        r.push(Field::Context);
    }
    if exec.error_message.is_some() {
        r.push(Field::Error);
    }
    let e = ExecPatch {
        status: exec.status,
        current_step_order: exec.current_step_order,
        context_add: exec
            .context_add
            .as_ref()
            .map(|(k, _)| (k.clone(), serde_json::Value::Null)),
        paused_at: exec.paused_at,
        completed_at: exec.completed_at,
        failed_at: exec.failed_at,
        error_message: None,
        lease: None,
    };
    let s = steps
        .iter()
        .map(|(t, sp)| {
            let mut r = Vec::new();
            for (present, field) in [
                (sp.agent_input.is_some(), Field::AgentInput),
                (sp.agent_output.is_some(), Field::AgentOutput),
                (sp.user_input.is_some(), Field::UserInput),
                (sp.error_message.is_some(), Field::StepError),
            ] {
                if present {
                    r.push(field);
                }
            }
            StepChange {
                t: (*t).to_owned(),
                p: StepPatch {
                    status: sp.status,
                    started_at: sp.started_at,
                    completed_at: sp.completed_at,
                    ..Default::default()
                },
                r,
            }
        })
        .collect();
    let patch = Patch { a: Some(at), e, r, s };
    let text = serde_json::to_string(&patch).expect("patch serializes");
    RawValue::from_string(text).expect("valid JSON")
}

/// A writer that fails once more than `MAX_PATCH_BYTES` were written.
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_PATCH_BYTES {
            return Err(std::io::Error::other("over the note's size"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Note {
    pub fn of(instance: &str, event: &ExecutionEvent) -> Self {
        Note {
            i: instance.to_owned(),
            e: event.execution.id.clone(),
            d: event.execution.drive_id.clone(),
            s: event.sequence,
            k: Note::letter(event.kind),
            t: event.step.as_ref().map(|s| s.id.clone()),
            x: event.delta.clone(),
            p: Some(unchanged()),
        }
    }

    pub fn letter(kind: EventKind) -> char {
        match kind {
            EventKind::ExecutionUpdated | EventKind::Snapshot => 'E',
            EventKind::StepUpdated => 'S',
            EventKind::StepOutputDelta => 'D',
            EventKind::ApprovalDecided => 'A',
        }
    }

    pub fn kind(&self) -> Option<EventKind> {
        match self.k {
            'E' => Some(EventKind::ExecutionUpdated),
            'S' => Some(EventKind::StepUpdated),
            'D' => Some(EventKind::StepOutputDelta),
            'A' => Some(EventKind::ApprovalDecided),
            _ => None,
        }
    }
}

/// Which executions and drives this instance's subscribers follow, and what
/// it has heard of them.
pub struct Relay {
    pub(super) instance: String,
    executions: Mutex<HashMap<String, usize>>,
    drives: Mutex<HashMap<String, usize>>,
    /// Highest sequence heard per execution.
    heard: Mutex<HashMap<String, i64>>,
    resync: watch::Sender<u64>,
}

impl Relay {
    pub fn new(instance: String) -> Arc<Self> {
        Arc::new(Relay {
            instance,
            executions: Mutex::new(HashMap::new()),
            drives: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            resync: watch::channel(0).0,
        })
    }

    /// Follows an execution's events for as long as the guard lives.
    pub fn watch_execution(self: &Arc<Self>, id: &str) -> Watch {
        *self
            .executions
            .lock()
            .expect("relay lock")
            .entry(id.to_owned())
            .or_insert(0) += 1;
        Watch {
            relay: self.clone(),
            key: id.to_owned(),
            drive: false,
        }
    }

    pub fn watch_drive(self: &Arc<Self>, id: &str) -> Watch {
        *self
            .drives
            .lock()
            .expect("relay lock")
            .entry(id.to_owned())
            .or_insert(0) += 1;
        Watch {
            relay: self.clone(),
            key: id.to_owned(),
            drive: true,
        }
    }

    pub fn follows(&self, note: &Note) -> bool {
        self.executions.lock().expect("relay lock").contains_key(&note.e)
            || self.drives.lock().expect("relay lock").contains_key(&note.d)
    }

    pub fn heard(&self, id: &str) -> Option<i64> {
        self.heard.lock().expect("relay lock").get(id).copied()
    }

    /// Remembers the newest sequence heard of any execution, so a snapshot
    /// taken here never reports less than what other instances already sent.
    pub(super) fn record(&self, id: &str, seq: i64) {
        let mut heard = self.heard.lock().expect("relay lock");
        if heard.len() > 50_000 {
            // Bounded: forgetting only costs a subscriber a resync SNAPSHOT.
            heard.clear();
        }
        let e = heard.entry(id.to_owned()).or_insert(seq);
        *e = (*e).max(seq);
    }

    /// Changes each time events may have been missed.
    pub fn resyncs(&self) -> watch::Receiver<u64> {
        self.resync.subscribe()
    }

    pub(super) fn missed_some(&self) {
        self.resync.send_modify(|n| *n += 1);
    }
}

/// Stops following when dropped.
pub struct Watch {
    relay: Arc<Relay>,
    key: String,
    drive: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let map = if self.drive {
            &self.relay.drives
        } else {
            &self.relay.executions
        };
        let mut map = map.lock().expect("relay lock");
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Cuts a streamed piece into NOTIFY-sized parts at character boundaries.
pub fn split_delta(piece: String) -> Vec<String> {
    if piece.len() <= MAX_DELTA_BYTES {
        return vec![piece];
    }
    let mut parts = Vec::new();
    let mut rest = piece.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_DELTA_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        parts.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_long_pieces_at_char_boundaries() {
        let s = "é".repeat(5000); // 10,000 bytes
        let parts = split_delta(s.clone());
        assert!(parts.len() == 2 && parts.iter().all(|p| p.len() <= MAX_DELTA_BYTES));
        assert_eq!(parts.concat(), s);
        assert_eq!(split_delta("short".into()), vec!["short".to_owned()]);
    }
}
