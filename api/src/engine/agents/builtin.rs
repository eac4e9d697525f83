//! The built-in agents, always present.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Agent, AgentError, DeltaSink};

pub(super) fn all() -> Vec<(&'static str, &'static str, Arc<dyn Agent>)> {
    vec![
        ("echo", "Returns {\"text\": <prompt>}", Arc::new(Echo)),
        ("json", "Parses the prompt as JSON and returns it", Arc::new(JsonAgent)),
        ("fail", "Fails with the prompt as its message", Arc::new(Fail)),
    ]
}

struct Echo;

#[async_trait::async_trait]
impl Agent for Echo {
    async fn call(&self, prompt: &str, _deltas: Option<&DeltaSink>) -> Result<Value, AgentError> {
        Ok(json!({ "text": prompt }))
    }
}

struct JsonAgent;

#[async_trait::async_trait]
impl Agent for JsonAgent {
    async fn call(&self, prompt: &str, _deltas: Option<&DeltaSink>) -> Result<Value, AgentError> {
        serde_json::from_str(prompt).map_err(|e| AgentError::Fatal(format!("the prompt is not JSON: {e}")))
    }
}

struct Fail;

#[async_trait::async_trait]
impl Agent for Fail {
    async fn call(&self, prompt: &str, _deltas: Option<&DeltaSink>) -> Result<Value, AgentError> {
        Err(AgentError::Fatal(prompt.to_owned()))
    }
}
