//! Agents behind one trait: the built-ins (`echo`, `json`, `fail`) and the
//! providers configured in the agents file (`openai`: any OpenAI-compatible
//! chat-completions API).

mod builtin;
mod openai;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

pub use openai::OpenAiAgent;

/// Why an agent call failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    /// Rate limits, server errors, dropped connections: worth another attempt.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request itself is wrong (or the agent refused): retrying won't help.
    #[error("{0}")]
    Fatal(String),
}

/// Pieces of streamed output go here as they arrive.
pub type DeltaSink = UnboundedSender<String>;

#[async_trait::async_trait]
pub trait Agent: Send + Sync {
    /// Runs the agent on a rendered prompt and returns its JSON result.
    /// Streaming agents send each piece of text to `deltas` as it arrives.
    async fn call(&self, prompt: &str, deltas: Option<&DeltaSink>) -> Result<Value, AgentError>;
}

/// What the `agents` query shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub id: String,
    pub provider: String,
    pub description: Option<String>,
}

#[derive(Clone)]
pub struct RegisteredAgent {
    pub info: AgentInfo,
    pub agent: Arc<dyn Agent>,
}

/// Every agent a step may name, by id.
#[derive(Clone, Default)]
pub struct AgentRegistry {
    agents: BTreeMap<String, RegisteredAgent>,
}

impl AgentRegistry {
    /// The built-in agents only.
    pub fn builtin() -> Self {
        let mut r = Self::default();
        for (id, description, agent) in builtin::all() {
            r.insert(
                AgentInfo {
                    id: id.into(),
                    provider: "builtin".into(),
                    description: Some(description.into()),
                },
                agent,
            );
        }
        r
    }

    pub fn insert(&mut self, info: AgentInfo, agent: Arc<dyn Agent>) {
        self.agents.insert(info.id.clone(), RegisteredAgent { info, agent });
    }

    pub fn get(&self, id: &str) -> Option<&RegisteredAgent> {
        self.agents.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.agents.keys().map(String::as_str)
    }

    pub fn list(&self) -> impl Iterator<Item = &AgentInfo> {
        self.agents.values().map(|a| &a.info)
    }

    /// The built-ins plus the agents of a TOML agents file.
    pub fn load(path: Option<&Path>) -> Result<Self, AgentsFileError> {
        let mut registry = Self::builtin();
        let Some(path) = path else {
            return Ok(registry);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| AgentsFileError(format!("cannot read agents file {}: {e}", path.display())))?;
        registry.add_from_toml(&text, |name| std::env::var(name).ok())?;
        Ok(registry)
    }

    /// Parses and validates an agents file; `env` looks up API key variables.
    pub fn add_from_toml(&mut self, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<(), AgentsFileError> {
        let file: AgentsFile = toml::from_str(text).map_err(|e| AgentsFileError(format!("agents file: {e}")))?;
        for (id, def) in file.agents {
            let at = |field: &str, why: &str| AgentsFileError(format!("agents file: agents.{id}.{field}: {why}"));
            if id.trim().is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(AgentsFileError(format!(
                    "agents file: agent id '{id}' may only contain letters, digits, '-' and '_'"
                )));
            }
            if self.agents.get(&id).is_some_and(|a| a.info.provider == "builtin") {
                return Err(at("provider", "this id is a built-in agent; choose another id"));
            }
            match def.provider.as_str() {
                "openai" => {
                    let base_url = def
                        .base_url
                        .ok_or_else(|| at("base_url", "is required for provider 'openai'"))?;
                    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                        return Err(at("base_url", "must start with http:// or https://"));
                    }
                    let model = def
                        .model
                        .ok_or_else(|| at("model", "is required for provider 'openai'"))?;
                    if let Some(t) = def.temperature
                        && !(0.0..=2.0).contains(&t)
                    {
                        return Err(at("temperature", "must be between 0 and 2"));
                    }
                    let api_key =
                        match &def.api_key_env {
                            Some(var) => Some(env(var).ok_or_else(|| {
                                at("api_key_env", &format!("the environment variable {var} is not set"))
                            })?),
                            None => None,
                        };
                    let agent = OpenAiAgent::new(openai::OpenAiConfig {
                        base_url,
                        model,
                        api_key,
                        system_prompt: def.system_prompt,
                        temperature: def.temperature,
                    });
                    self.insert(
                        AgentInfo {
                            id: id.clone(),
                            provider: "openai".into(),
                            description: def.description,
                        },
                        Arc::new(agent),
                    );
                }
                other => {
                    return Err(at(
                        "provider",
                        &format!("unknown provider '{other}' (supported: openai)"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AgentsFileError(pub String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    #[serde(default)]
    agents: BTreeMap<String, AgentDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentDef {
    provider: String,
    base_url: Option<String>,
    model: Option<String>,
    api_key_env: Option<String>,
    system_prompt: Option<String>,
    temperature: Option<f64>,
    description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_an_agents_file() {
        let mut r = AgentRegistry::builtin();
        r.add_from_toml(
            r#"
[agents.code-reviewer]
provider = "openai"
base_url = "http://127.0.0.1:11434/v1"
model = "llama3.1"
api_key_env = "KEY"
description = "Reviews code"
"#,
            |_| Some("secret".into()),
        )
        .unwrap();
        let info = &r.get("code-reviewer").unwrap().info;
        assert_eq!(info.provider, "openai");
        assert_eq!(info.description.as_deref(), Some("Reviews code"));
        assert_eq!(r.ids().collect::<Vec<_>>(), ["code-reviewer", "echo", "fail", "json"]);
    }

    #[test]
    fn names_the_agent_and_field_of_a_bad_file() {
        let mut r = AgentRegistry::builtin();
        let err = r
            .add_from_toml("[agents.a]\nprovider = \"openai\"\nmodel = \"m\"\n", |_| None)
            .unwrap_err();
        assert!(err.0.contains("agents.a.base_url"), "{err}");
        let err = r
            .add_from_toml("[agents.b]\nprovider = \"nope\"\n", |_| None)
            .unwrap_err();
        assert!(err.0.contains("agents.b.provider"), "{err}");
        let err = r
            .add_from_toml(
                "[agents.c]\nprovider = \"openai\"\nbase_url = \"http://x\"\nmodel = \"m\"\napi_key_env = \"K\"\n",
                |_| None,
            )
            .unwrap_err();
        assert!(err.0.contains("agents.c.api_key_env"), "{err}");
    }
}
