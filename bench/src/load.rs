//! Closed-loop HTTP load: N connections, each sending the next request as
//! soon as the last answer arrived (as wrk does), with latency percentiles.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// What one measured load produced.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub errors: usize,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub response_bytes: usize,
}

/// A POST of a GraphQL request as the server's client sees it.
#[derive(Clone)]
pub struct GqlRequest {
    pub url: String,
    pub authorization: String,
    pub body: bytes::Bytes,
}

impl GqlRequest {
    pub fn new(url: &str, token: &str, query: &str, variables: Value) -> Self {
        let body = serde_json::json!({ "query": query, "variables": variables }).to_string();
        Self {
            url: url.to_owned(),
            authorization: format!("Bearer {token}"),
            body: body.into(),
        }
    }

    async fn send(&self, client: &reqwest::Client) -> reqwest::Result<(u16, bytes::Bytes)> {
        let resp = client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("authorization", &self.authorization)
            .body(self.body.clone())
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.bytes().await?))
    }

    /// Sends once and returns `data`, failing on any error in the answer.
    pub async fn data(&self, client: &reqwest::Client) -> anyhow::Result<Value> {
        let (status, body) = self.send(client).await.context("request failed")?;
        let v: Value = serde_json::from_slice(&body).with_context(|| format!("HTTP {status}: not JSON"))?;
        if status != 200 || v.get("errors").is_some() {
            bail!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(600)])
            );
        }
        Ok(v["data"].clone())
    }
}

fn has_errors(body: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"errors\"";
    body.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `connections` loops of `request` for `warmup` (not counted) then
/// `duration`; only requests that start and end inside the measured window count.
pub async fn closed_loop(
    request: &GqlRequest,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let (_, first) = request.send(&client).await?;
    let response_bytes = first.len();
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let client = client.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut errors = 0usize;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let ok = match request.send(&client).await {
                    Ok((200, body)) => !has_errors(&body),
                    _ => false,
                };
                let t1 = Instant::now();
                if t0 >= start && t1 <= end {
                    if ok {
                        latencies.push(t1 - t0);
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    Ok(LoadResult {
        errors,
        per_second: all.len() as f64 / duration.as_secs_f64(),
        p50: percentile(&all, 50.0),
        p99: percentile(&all, 99.0),
        response_bytes,
    })
}
