//! Issue 6: HTTP hardening (CORS, security headers, request ids), token
//! checks, and `/metrics` counters that move with the traffic.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use workflows_tests::{SECRET, TestApp, eventually};

use crate::{create_drive, create_template, echo};

const ME: &str = r#"{"query":"{ me { id } }"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_security_headers_and_a_request_id() {
    let app = TestApp::spawn().await;
    let token = app.user("ana").await;
    for path in ["/healthz", "/metrics", "/graphql"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
        let id = h["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 36, "a UUID request id: {id}");
    }
    // A client's own request id is kept and echoed.
    let resp = app
        .client
        .post(app.url("/graphql"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("x-request-id", "trace-me-42")
        .body(ME)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
    assert_eq!(
        resp.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_no_origin_by_default_and_the_configured_ones() {
    let app = TestApp::spawn().await;
    let resp = preflight(&app, "https://evil.example").await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let token = app.user("ana").await;
    let resp = app
        .client
        .post(app.url("/graphql"))
        .header("origin", "https://evil.example")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(ME)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    let app = TestApp::spawn_with(|c| c.http.cors_origins = vec!["https://app.example".into()]).await;
    let resp = preflight(&app, "https://app.example").await;
    assert!(resp.status().is_success());
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example");
    let allowed = resp.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    let resp = preflight(&app, "https://evil.example").await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

fn sign(claims: &Value, alg: Algorithm) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

async fn me_status(app: &TestApp, token: &str) -> (u16, Value) {
    app.gql_raw(Some(&format!("Bearer {token}")), ME).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_hs256_tokens_with_exp_are_accepted() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": "mallory", "exp": now + 600});
    // An RS256 header, "signed" with the shared secret (algorithm confusion).
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let message = format!("{header}.{payload}");
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    let rs256 = format!("{message}.{sig}");
    let (status, body) = me_status(&app, &rs256).await;
    assert_eq!(status, 401, "{body}");
    assert!(crate::expect_code(&body, "UNAUTHENTICATED").contains("HS256"), "{body}");
    // alg: none.
    let none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
    let (status, _) = me_status(&app, &none).await;
    assert_eq!(status, 401);
    // No exp.
    let (status, _) = me_status(&app, &sign(&json!({"sub": "mallory"}), Algorithm::HS256)).await;
    assert_eq!(status, 401);
    // Expired within the default 5 s leeway: accepted; beyond it: refused.
    let (status, _) = me_status(&app, &sign(&json!({"sub": "m", "exp": now - 2}), Algorithm::HS256)).await;
    assert_eq!(status, 200);
    let (status, _) = me_status(&app, &sign(&json!({"sub": "m", "exp": now - 30}), Algorithm::HS256)).await;
    assert_eq!(status, 401);

    // The leeway is a setting.
    let app = TestApp::spawn_with(|c| c.tokens.jwt_leeway_secs = 60).await;
    let (status, _) = me_status(&app, &sign(&json!({"sub": "m", "exp": now - 30}), Algorithm::HS256)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_and_audience_are_checked_when_configured() {
    let now = chrono::Utc::now().timestamp();
    // Unconfigured: iss and aud are not looked at.
    let app = TestApp::spawn().await;
    let (status, _) = me_status(
        &app,
        &sign(
            &json!({"sub": "a", "exp": now + 60, "iss": "anyone", "aud": "anything"}),
            Algorithm::HS256,
        ),
    )
    .await;
    assert_eq!(status, 200);

    let app = TestApp::spawn_with(|c| {
        c.tokens.jwt_issuer = Some("https://auth.example".into());
        c.tokens.jwt_audience = Some("workflows".into());
    })
    .await;
    // The server's own tokens carry both.
    app.user("ana").await;
    let ok = json!({"sub": "a", "exp": now + 60, "iss": "https://auth.example", "aud": ["other", "workflows"]});
    assert_eq!(me_status(&app, &sign(&ok, Algorithm::HS256)).await.0, 200);
    for (what, claims) in [
        ("no iss", json!({"sub": "a", "exp": now + 60, "aud": "workflows"})),
        (
            "wrong iss",
            json!({"sub": "a", "exp": now + 60, "iss": "https://evil", "aud": "workflows"}),
        ),
        (
            "no aud",
            json!({"sub": "a", "exp": now + 60, "iss": "https://auth.example"}),
        ),
        (
            "wrong aud",
            json!({"sub": "a", "exp": now + 60, "iss": "https://auth.example", "aud": "billing"}),
        ),
    ] {
        let (status, body) = me_status(&app, &sign(&claims, Algorithm::HS256)).await;
        assert_eq!(status, 401, "{what}: {body}");
        crate::expect_code(&body, "UNAUTHENTICATED");
    }
}

/// The value of one sample (`name{labels}`), or 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(app: &TestApp) -> String {
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "Prometheus text format"
    );
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_runs_steps_and_subscriptions() {
    let app = TestApp::spawn().await;
    let token = app.user("ana").await;
    let before = scrape(&app).await;
    for name in [
        "workflows_graphql_requests_total",
        "workflows_graphql_request_duration_seconds",
        "workflows_executions",
        "workflows_active_subscriptions",
        "workflows_db_pool_connections",
        "workflows_db_pool_max_connections",
    ] {
        assert!(before.contains(&format!("# TYPE {name} ")), "{name} missing:\n{before}");
    }
    assert_eq!(sample(&before, "workflows_db_pool_max_connections"), 8.0);

    // Requests by operation name and outcome, with their latency.
    for _ in 0..3 {
        app.ok(&token, "query Mine { me { id } }", json!({})).await;
    }
    app.gql(&token, "query Broken { nope }", json!({})).await;
    app.gql(
        &token,
        "mutation Bad { createDrive(input: { name: \"  \" }) { id } }",
        json!({}),
    )
    .await;
    app.gql_raw(None, ME).await;
    let drive = create_drive(&app, &token, "D").await;
    let t = create_template(
        &app,
        &token,
        &drive,
        json!({"name": "T", "steps": [echo("a"), echo("b")]}),
    )
    .await;
    let f = create_template(
        &app,
        &token,
        &drive,
        json!({"name": "F", "steps": [{"agentId": "fail", "promptTemplate": "no"}]}),
    )
    .await;

    // A subscription is counted while open.
    let mut ws = workflows_tests::ws::WsClient::connect_with_token(
        &app.base,
        workflows_tests::ws::Protocol::TransportWs,
        &token,
    )
    .await;
    ws.subscribe(
        "w",
        "subscription($d: ID!) { driveWorkflowExecutionEvents(driveId: $d) { sequence } }",
        json!({"d": drive}),
    )
    .await;
    // Counted once the server has read the subscription.
    let during = eventually(Duration::from_secs(10), || async {
        let text = scrape(&app).await;
        if sample(&text, "workflows_active_subscriptions") > 0.0 {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    assert_eq!(sample(&during, "workflows_active_subscriptions"), 1.0, "{during}");
    assert_eq!(sample(&during, "workflows_websocket_connections"), 1.0, "{during}");

    // Runs: one completes (two echo steps), one fails.
    let start = "mutation Start($t: ID!) { startWorkflowExecution(templateId: $t) { id } }";
    let a = app.ok(&token, start, json!({"t": t["id"]})).await["startWorkflowExecution"]["id"].clone();
    let b = app.ok(&token, start, json!({"t": f["id"]})).await["startWorkflowExecution"]["id"].clone();
    for (id, want) in [(a, "COMPLETED"), (b, "FAILED")] {
        eventually(Duration::from_secs(10), || async {
            let d = app
                .ok(
                    &token,
                    "query($id: ID!) { workflowExecution(id: $id) { status } }",
                    json!({"id": id}),
                )
                .await;
            let status = &d["workflowExecution"]["status"];
            if status == want { Ok(()) } else { Err(status.clone()) }
        })
        .await;
    }
    // The connection is closed, and the last step counted (the step
    // observer runs after the write the status was read from), a moment
    // after the client let go and the run ended.
    drop(ws);
    let after = eventually(Duration::from_secs(10), || async {
        let text = scrape(&app).await;
        let settled = sample(&text, "workflows_websocket_connections") == 0.0
            && sample(
                &text,
                r#"workflows_step_duration_seconds_count{agent="fail",outcome="failed"}"#,
            ) > sample(
                &before,
                r#"workflows_step_duration_seconds_count{agent="fail",outcome="failed"}"#,
            )
            && sample(
                &text,
                r#"workflows_step_duration_seconds_count{agent="echo",outcome="completed"}"#,
            ) >= sample(
                &before,
                r#"workflows_step_duration_seconds_count{agent="echo",outcome="completed"}"#,
            ) + 2.0;
        if settled { Ok(text) } else { Err(text) }
    })
    .await;

    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        moved(r#"workflows_graphql_requests_total{operation="Mine",outcome="ok"}"#),
        3.0,
        "{after}"
    );
    assert_eq!(
        moved(r#"workflows_graphql_requests_total{operation="Broken",outcome="GRAPHQL_VALIDATION_FAILED"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"workflows_graphql_requests_total{operation="Bad",outcome="BAD_USER_INPUT"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"workflows_graphql_requests_total{operation="unknown",outcome="UNAUTHENTICATED"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"workflows_graphql_requests_total{operation="Start",outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        moved(r#"workflows_graphql_request_duration_seconds_count{operation="Mine"}"#),
        3.0
    );
    assert!(
        sample(
            &after,
            r#"workflows_graphql_request_duration_seconds_sum{operation="Mine"}"#
        ) > 0.0
    );
    assert_eq!(
        sample(&after, r#"workflows_executions{status="COMPLETED"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(sample(&after, r#"workflows_executions{status="FAILED"}"#), 1.0);
    assert_eq!(sample(&after, r#"workflows_executions{status="RUNNING"}"#), 0.0);
    assert_eq!(
        moved(r#"workflows_step_duration_seconds_count{agent="echo",outcome="completed"}"#),
        2.0,
        "{after}"
    );
    assert_eq!(
        moved(r#"workflows_step_duration_seconds_count{agent="fail",outcome="failed"}"#),
        1.0
    );
    assert_eq!(sample(&after, "workflows_active_subscriptions"), 0.0);
    assert_eq!(sample(&after, "workflows_websocket_connections"), 0.0);
    assert!(moved("workflows_db_statements_total") > 0.0);
    assert!(sample(&after, r#"workflows_db_pool_connections{state="idle"}"#) >= 0.0);
}
