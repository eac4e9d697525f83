//! Events across instances on one PostgreSQL database: after each commit the
//! writer sends a small NOTIFY (ids, sequence, kind, and the text of a
//! streamed piece); other instances that have subscribers for that execution
//! or drive read the state and publish the event on their own bus. Payloads
//! stay far below PostgreSQL's 8000-byte limit: deltas are split before they
//! are numbered. If the listener's connection drops, every stream on this
//! instance re-sends a SNAPSHOT instead of leaving a silent gap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::events::{EventKind, ExecutionEvent};

pub const CHANNEL: &str = "workflow_events";
/// Streamed text is cut into pieces of at most this many bytes.
pub const MAX_DELTA_BYTES: usize = 6000;

/// What one NOTIFY carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Note {
    /// Sending instance.
    pub i: String,
    /// Execution and drive.
    pub e: String,
    pub d: String,
    pub s: i64,
    /// E: execution updated, S: step updated, D: delta, C: cancel request.
    pub k: char,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
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
        }
    }

    pub fn letter(kind: EventKind) -> char {
        match kind {
            EventKind::ExecutionUpdated | EventKind::Snapshot => 'E',
            EventKind::StepUpdated => 'S',
            EventKind::StepOutputDelta => 'D',
        }
    }

    pub fn kind(&self) -> Option<EventKind> {
        match self.k {
            'E' => Some(EventKind::ExecutionUpdated),
            'S' => Some(EventKind::StepUpdated),
            'D' => Some(EventKind::StepOutputDelta),
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
