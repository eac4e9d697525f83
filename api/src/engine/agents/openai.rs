//! The `openai` provider: any OpenAI-compatible chat-completions API (OpenAI,
//! Ollama, vLLM, OpenRouter, Groq, LM Studio…). Asks for a streamed answer and
//! forwards each piece of text; falls back to a whole JSON answer when the
//! server ignores `stream`. The API key is sent in a header and never logged.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use super::{Agent, AgentError, DeltaSink};

#[derive(Clone)]
pub struct OpenAiConfig {
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub system_prompt: Option<String>,
    pub temperature: Option<f64>,
}

// Hand-written so the key can never end up in a log line through `{:?}`.
impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug)]
pub struct OpenAiAgent {
    config: OpenAiConfig,
    client: reqwest::Client,
}

impl OpenAiAgent {
    pub fn new(config: OpenAiConfig) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("a reqwest client with default TLS settings");
        Self { config, client }
    }

    fn request_body(&self, prompt: &str) -> Value {
        let mut messages = Vec::new();
        if let Some(system) = &self.config.system_prompt {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        let mut body = json!({
            "model": self.config.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let Some(t) = self.config.temperature {
            body["temperature"] = json!(t);
        }
        body
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// The provider's own words from an error body, when it sent any.
fn provider_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(500).collect())
}

#[async_trait::async_trait]
impl Agent for OpenAiAgent {
    async fn call(&self, prompt: &str, deltas: Option<&DeltaSink>) -> Result<Value, AgentError> {
        let url = format!("{}/chat/completions", self.config.base_url.trim_end_matches('/'));
        let mut req = self.client.post(&url).json(&self.request_body(prompt));
        if let Some(key) = &self.config.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| AgentError::Retryable {
            message: format!("could not reach {}: {}", self.config.base_url, without_url(&e)),
            retry_after: None,
        })?;
        let status = resp.status();
        if !status.is_success() {
            let after = retry_after(resp.headers());
            let body = resp.text().await.unwrap_or_default();
            let message = format!(
                "provider answered HTTP {}: {}",
                status.as_u16(),
                provider_message(&body)
            );
            return if status.as_u16() == 429 || status.is_server_error() {
                Err(AgentError::Retryable {
                    message,
                    retry_after: after,
                })
            } else {
                Err(AgentError::Fatal(message))
            };
        }
        let is_sse = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            // The server ignored `stream`: one JSON answer.
            let body: Value = resp.json().await.map_err(|e| AgentError::Retryable {
                message: format!("unreadable answer: {}", without_url(&e)),
                retry_after: None,
            })?;
            let text = body
                .pointer("/choices/0/message/content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if let Some(sink) = deltas {
                if !text.is_empty() {
                    let _ = sink.send(text.clone());
                }
            }
            let model = body.get("model").cloned().unwrap_or_else(|| json!(self.config.model));
            let mut out = json!({"text": text, "model": model});
            if let Some(u) = body.get("usage").filter(|u| !u.is_null()) {
                out["usage"] = u.clone();
            }
            return Ok(out);
        }

        let mut text = String::new();
        let mut model = json!(self.config.model);
        let mut usage = None;
        let mut buf = String::new();
        let mut stream = resp.bytes_stream();
        'read: while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| AgentError::Retryable {
                message: format!("the stream broke off: {}", without_url(&e)),
                retry_after: None,
            })?;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(nl) = buf.find('\n') {
                let line: String = buf.drain(..=nl).collect();
                let line = line.trim_end_matches(['\r', '\n']);
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim_start();
                if data == "[DONE]" {
                    break 'read;
                }
                let Ok(event) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                if let Some(err) = event.get("error") {
                    let msg = err.get("message").and_then(Value::as_str).unwrap_or("error in stream");
                    return Err(AgentError::Fatal(format!("provider error: {msg}")));
                }
                if let Some(m) = event.get("model").filter(|m| m.is_string()) {
                    model = m.clone();
                }
                if let Some(u) = event.get("usage").filter(|u| !u.is_null()) {
                    usage = Some(u.clone());
                }
                if let Some(piece) = event.pointer("/choices/0/delta/content").and_then(Value::as_str) {
                    if !piece.is_empty() {
                        text.push_str(piece);
                        if let Some(sink) = deltas {
                            let _ = sink.send(piece.to_owned());
                        }
                    }
                }
            }
        }
        let mut out = json!({"text": text, "model": model});
        if let Some(u) = usage {
            out["usage"] = u;
        }
        Ok(out)
    }
}

/// reqwest's error text without the URL, which could carry credentials.
fn without_url(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    match e.source() {
        Some(src) => format!("{kind}: {src}"),
        None => kind.to_owned(),
    }
}
