//! Agents that exist only in the test binary, to drive the runner through
//! slow calls, retries, timeouts and streaming.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use workflows::engine::agents::{Agent, AgentError, AgentInfo, AgentRegistry, DeltaSink};

/// `slow`: the prompt is a number of milliseconds to wait; returns `{"text": prompt}`.
struct Slow;

#[async_trait::async_trait]
impl Agent for Slow {
    async fn call(&self, prompt: &str, _deltas: Option<&DeltaSink>) -> Result<Value, AgentError> {
        let ms: u64 = prompt
            .trim()
            .parse()
            .map_err(|_| AgentError::Fatal(format!("slow: '{prompt}' is not a number")))?;
        // Deliberately slow: what the tests of steps in flight need.
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(json!({ "text": prompt }))
    }
}

/// `flaky`: a prompt `N|…` fails (retryably) the first N calls with that
/// exact prompt, then returns `{"text": prompt, "attempts": calls}`.
#[derive(Default)]
struct Flaky {
    calls: Mutex<HashMap<String, u64>>,
}

#[async_trait::async_trait]
impl Agent for Flaky {
    async fn call(&self, prompt: &str, _deltas: Option<&DeltaSink>) -> Result<Value, AgentError> {
        let failures: u64 = prompt
            .split('|')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let calls = {
            let mut map = self.calls.lock().unwrap();
            let c = map.entry(prompt.to_owned()).or_insert(0);
            *c += 1;
            *c
        };
        if calls <= failures {
            return Err(AgentError::Retryable {
                message: format!("flaky failure {calls}"),
                retry_after: None,
            });
        }
        Ok(json!({ "text": prompt, "attempts": calls }))
    }
}

/// `streamer`: sends the prompt word by word (10 ms apart) as deltas.
struct Streamer;

#[async_trait::async_trait]
impl Agent for Streamer {
    async fn call(&self, prompt: &str, deltas: Option<&DeltaSink>) -> Result<Value, AgentError> {
        let mut text = String::new();
        for (i, word) in prompt.split(' ').enumerate() {
            let piece = if i == 0 { word.to_owned() } else { format!(" {word}") };
            text.push_str(&piece);
            if let Some(d) = deltas {
                let _ = d.send(piece);
            }
            // Pieces apart in time, as a model streams them.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(json!({ "text": text }))
    }
}

/// `burst`: the prompt is a count N; sends N one-letter pieces at once.
struct Burst;

#[async_trait::async_trait]
impl Agent for Burst {
    async fn call(&self, prompt: &str, deltas: Option<&DeltaSink>) -> Result<Value, AgentError> {
        let n: usize = prompt
            .trim()
            .parse()
            .map_err(|_| AgentError::Fatal(format!("burst: '{prompt}' is not a number")))?;
        if let Some(d) = deltas {
            for _ in 0..n {
                let _ = d.send("x".to_owned());
            }
        }
        Ok(json!({ "text": "x".repeat(n) }))
    }
}

/// How many times `counter` was called with each prompt, in this process.
static COUNTS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

/// `counter`: returns `{"text": prompt, "calls": n}`, n counting the calls
/// with that prompt in this test process (prompts name their test's run).
struct Counter;

#[async_trait::async_trait]
impl Agent for Counter {
    async fn call(&self, prompt: &str, _deltas: Option<&DeltaSink>) -> Result<Value, AgentError> {
        let mut counts = COUNTS.lock().unwrap();
        let n = counts
            .get_or_insert_with(HashMap::new)
            .entry(prompt.to_owned())
            .or_insert(0);
        *n += 1;
        Ok(json!({ "text": prompt, "calls": *n }))
    }
}

/// How many times `counter` was called with `prompt`.
pub fn counter_calls(prompt: &str) -> u64 {
    COUNTS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(prompt).copied())
        .unwrap_or(0)
}

/// The built-in agents plus `slow`, `flaky`, `streamer`, `burst` and `counter`.
pub fn registry() -> AgentRegistry {
    let mut r = AgentRegistry::builtin();
    let info = |id: &str| AgentInfo {
        id: id.into(),
        provider: "test".into(),
        description: None,
    };
    r.insert(info("slow"), Arc::new(Slow));
    r.insert(info("flaky"), Arc::new(Flaky::default()));
    r.insert(info("streamer"), Arc::new(Streamer));
    r.insert(info("burst"), Arc::new(Burst));
    r.insert(info("counter"), Arc::new(Counter));
    r
}
