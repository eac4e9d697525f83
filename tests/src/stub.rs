//! An OpenAI-compatible chat-completions server for tests, served by axum on
//! a loopback port: scripted replies, recorded requests.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Clone)]
pub enum Reply {
    /// Server-sent events: each piece as a chunk, `delay` apart, then usage and [DONE].
    Sse { pieces: Vec<&'static str>, delay: Duration },
    /// A whole JSON answer (a server that ignores `stream`).
    Json(Value),
    Status {
        code: u16,
        body: &'static str,
        retry_after: Option<&'static str>,
    },
    /// Like `Sse`, but each piece's event is written in two writes, `delay`
    /// apart, cut inside the piece's first multi-byte character.
    SplitSse { pieces: Vec<&'static str>, delay: Duration },
    /// `data: ` and then `bytes` bytes with no line ending, in 64 KiB writes,
    /// then nothing until the client goes away.
    Unterminated { bytes: usize },
    /// One piece, then nothing until the client goes away.
    Hang,
}

#[derive(Default)]
pub struct Stub {
    pub replies: Mutex<VecDeque<Reply>>,
    /// Answered when no scripted reply is left.
    pub fallback: Mutex<Option<Reply>>,
    pub requests: Mutex<Vec<(HeaderMap, Value)>>,
    /// Set when a client dropped a streaming response before its end.
    pub dropped: AtomicBool,
}

struct DropFlag(Arc<Stub>, bool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.store(true, Ordering::SeqCst);
        }
    }
}

fn chunk(v: Value) -> String {
    format!("data: {v}\n\n")
}

async fn completions(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    stub.requests.lock().unwrap().push((headers, body));
    let reply = stub
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| stub.fallback.lock().unwrap().clone());
    match reply {
        None => (StatusCode::INTERNAL_SERVER_ERROR, "no reply scripted").into_response(),
        Some(Reply::Status {
            code,
            body,
            retry_after,
        }) => {
            let mut r = (StatusCode::from_u16(code).unwrap(), body.to_owned()).into_response();
            if let Some(ra) = retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            r
        }
        Some(Reply::Json(v)) => axum::Json(v).into_response(),
        Some(Reply::Sse { pieces, delay }) => {
            let stream = async_stream::stream! {
                let mut flag = DropFlag(stub.clone(), false);
                for p in pieces {
                    yield Ok::<_, std::convert::Infallible>(chunk(json!({"model": "stub-model", "choices": [{"index": 0, "delta": {"content": p}}]})));
                    // The scripted pace of the stream, not synchronization.
                    tokio::time::sleep(delay).await;
                }
                yield Ok(chunk(json!({"model": "stub-model", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})));
                yield Ok("data: [DONE]\n\n".to_owned());
                flag.1 = true;
            };
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Some(Reply::SplitSse { pieces, delay }) => {
            let stream = async_stream::stream! {
                for p in pieces {
                    let event = chunk(json!({"model": "stub-model", "choices": [{"index": 0, "delta": {"content": p}}]}));
                    // serde_json writes non-ASCII characters as they are, so
                    // the cut falls inside the first one's bytes.
                    let at = event.char_indices().find(|(_, c)| c.len_utf8() > 1).map(|(i, _)| i + 1).expect("a piece with a multi-byte character");
                    let bytes = event.into_bytes();
                    yield Ok::<_, std::convert::Infallible>(bytes[..at].to_vec());
                    // A pause between the halves, so they reach the client
                    // in separate reads.
                    tokio::time::sleep(delay).await;
                    yield Ok(bytes[at..].to_vec());
                }
                yield Ok(chunk(json!({"model": "stub-model", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})).into_bytes());
                yield Ok(b"data: [DONE]\n\n".to_vec());
            };
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Some(Reply::Unterminated { bytes }) => {
            let stream = async_stream::stream! {
                let _flag = DropFlag(stub.clone(), false);
                yield Ok::<_, std::convert::Infallible>(b"data: ".to_vec());
                let mut sent = 0;
                while sent < bytes {
                    let n = (bytes - sent).min(64 * 1024);
                    yield Ok(vec![b'x'; n]);
                    sent += n;
                }
                std::future::pending::<()>().await;
            };
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        Some(Reply::Hang) => {
            let stream = async_stream::stream! {
                let _flag = DropFlag(stub.clone(), false);
                yield Ok::<_, std::convert::Infallible>(chunk(json!({"model": "stub-model", "choices": [{"index": 0, "delta": {"content": "thinking"}}]})));
                std::future::pending::<()>().await;
            };
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

/// Starts the stub; returns it and its base URL (`http://127.0.0.1:port/v1`).
pub async fn stub(replies: Vec<Reply>) -> (Arc<Stub>, String) {
    let stub = Arc::new(Stub::default());
    stub.replies.lock().unwrap().extend(replies);
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (stub, format!("http://{addr}/v1"))
}

impl Stub {
    /// How many requests asked about a prompt containing `needle`.
    pub fn requests_mentioning(&self, needle: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, body)| body["messages"].to_string().contains(needle))
            .count()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}
