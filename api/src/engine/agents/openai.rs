//! The `openai` provider: any OpenAI-compatible chat-completions API (OpenAI,
//! Ollama, vLLM, OpenRouter, Groq, LM Studio…). Asks for a streamed answer and
//! forwards each piece of text; falls back to a whole JSON answer when the
//! server ignores `stream`. The API key is sent in a header and never logged.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use sse_stream::SseByteStream;

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
            if let Some(sink) = deltas
                && !text.is_empty()
            {
                let _ = sink.send(text.clone());
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
        // Decoded as a stream of bytes: a character split between two network
        // reads is put back together before it becomes text.
        let mut events = SseByteStream::new(bounded(resp.bytes_stream(), MAX_SSE_EVENT_BYTES));
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| stream_error(&e))?;
            let Some(data) = event.data else { continue };
            let data = data.trim();
            if data == "[DONE]" {
                break;
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
            if let Some(piece) = event.pointer("/choices/0/delta/content").and_then(Value::as_str)
                && !piece.is_empty()
            {
                text.push_str(piece);
                if let Some(sink) = deltas {
                    let _ = sink.send(piece.to_owned());
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

/// The most one server-sent event (all its lines up to the blank line that
/// ends it) may hold: a provider that never ends an event fails the attempt
/// here instead of growing the buffer without limit. Streamed chat
/// completions send events of a few hundred bytes.
pub const MAX_SSE_EVENT_BYTES: usize = 1024 * 1024;

/// Why reading the answer's bytes stopped.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("the stream broke off: {0}")]
    Transport(String),
    #[error("the provider sent an event of more than {0} bytes without ending it (a blank line); at most {0} are read")]
    EventTooLong(usize),
}

/// `bytes` that fail with `ReadError::EventTooLong` once an event (the bytes
/// since the last blank line, line endings not counted) passes `max` bytes.
fn bounded<S>(bytes: S, max: usize) -> impl futures::Stream<Item = Result<bytes::Bytes, ReadError>>
where
    S: futures::Stream<Item = Result<bytes::Bytes, reqwest::Error>>,
{
    let mut scan = EventScan::default();
    bytes.map(move |chunk| {
        let chunk = chunk.map_err(|e| ReadError::Transport(without_url(&e)))?;
        if scan.feed(&chunk) > max {
            return Err(ReadError::EventTooLong(max));
        }
        Ok(chunk)
    })
}

/// Follows line endings (LF, CR or CRLF, as SSE allows) to count the bytes of
/// the event being received.
#[derive(Debug, Default)]
struct EventScan {
    /// Bytes of the current line.
    line: usize,
    /// Bytes of the current event, line endings not counted.
    event: usize,
    /// The last byte seen was a CR (a LF right after it ends no line of its own).
    after_cr: bool,
}

impl EventScan {
    /// Reads `chunk`; returns the most bytes the current event held in it.
    fn feed(&mut self, chunk: &[u8]) -> usize {
        let mut most = self.event;
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    if self.line == 0 {
                        self.event = 0;
                    }
                    self.line = 0;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.after_cr = false;
                    self.line += 1;
                    self.event += 1;
                    most = most.max(self.event);
                }
            }
        }
        most
    }
}

fn stream_error(e: &sse_stream::Error) -> AgentError {
    use std::error::Error as _;
    let read = e.source().and_then(|s| s.downcast_ref::<ReadError>());
    match read {
        Some(r) => AgentError::Retryable {
            message: r.to_string(),
            retry_after: None,
        },
        None => AgentError::Retryable {
            message: format!("unreadable answer: {e}"),
            retry_after: None,
        },
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

#[cfg(test)]
mod tests {
    use super::EventScan;

    #[test]
    fn counts_the_bytes_of_the_event_being_received() {
        let mut scan = EventScan::default();
        assert_eq!(scan.feed(b"data: abc\n"), 9);
        // A second line of the same event adds to it; the blank line ends it.
        assert_eq!(scan.feed(b"data: de\n\n"), 17);
        assert_eq!(scan.feed(b"data: x"), 7);
        // CRLF and CR end lines too, and a CRLF split between reads is one ending.
        assert_eq!(scan.feed(b"y\r"), 8);
        assert_eq!(scan.feed(b"\n\r\n"), 8);
        assert_eq!(scan.feed(b"ab\r\rcd"), 2);
        assert_eq!(scan.event, 2);
    }
}
