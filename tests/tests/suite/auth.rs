//! Identity: every token failure is UNAUTHENTICATED with no data; the first
//! authenticated request creates the user row, later ones update it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use workflows_tests::{SECRET, TestApp};

const ME: &str = r#"{"query":"{ me { id name email } }"}"#;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(claims: &Value, alg: Algorithm, secret: &[u8]) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// Asserts the response refuses the request as UNAUTHENTICATED without data.
#[track_caller]
fn assert_unauthenticated(what: &str, status: u16, body: &Value) {
    assert!(
        status == 200 || status == 401,
        "{what}: HTTP {status} (200 or 401 expected): {body}"
    );
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no errors: {body}"));
    assert_eq!(errors.len(), 1, "{what}: {body}");
    assert_eq!(errors[0]["extensions"]["code"], "UNAUTHENTICATED", "{what}: {body}");
    assert!(
        errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: error without message: {body}"
    );
    assert!(
        body.get("data").is_none_or(Value::is_null),
        "{what}: data must be null: {body}"
    );
}

async fn user_row(app: &TestApp, id: &str) -> Option<entity::user::Model> {
    entity::user::Entity::find_by_id(id.to_owned())
        .one(app.db())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_failure_is_unauthenticated_without_data() {
    let app = TestApp::spawn().await;
    let claims = |sub: &str| json!({ "sub": sub, "exp": now() + 3600, "name": "Mallory" });

    let (status, body) = app.gql_raw(None, ME).await;
    assert_unauthenticated("no Authorization header", status, &body);

    let good = app.token("mallory");
    let (status, body) = app.gql_raw(Some(&format!("Basic {good}")), ME).await;
    assert_unauthenticated("Basic scheme", status, &body);
    let (status, body) = app.gql_raw(Some(&good), ME).await;
    assert_unauthenticated("bare token without scheme", status, &body);
    let (status, body) = app.gql_raw(Some("Bearer "), ME).await;
    assert_unauthenticated("Bearer without token", status, &body);

    for malformed in ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30"] {
        let (status, body) = app.gql_raw(Some(&format!("Bearer {malformed}")), ME).await;
        assert_unauthenticated(&format!("malformed token {malformed}"), status, &body);
    }

    let wrong_secret = sign(&claims("mallory"), Algorithm::HS256, b"another-secret");
    let (status, body) = app.gql_raw(Some(&format!("Bearer {wrong_secret}")), ME).await;
    assert_unauthenticated("wrong signature", status, &body);

    // Tampered payload: a valid token of another user with the payload swapped.
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = URL_SAFE_NO_PAD.encode(claims("admin").to_string());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let (status, body) = app.gql_raw(Some(&format!("Bearer {tampered}")), ME).await;
    assert_unauthenticated("tampered payload", status, &body);

    // Expired well beyond the 5 s leeway.
    let expired = sign(
        &json!({ "sub": "mallory", "exp": now() - 60 }),
        Algorithm::HS256,
        SECRET.as_bytes(),
    );
    let (status, body) = app.gql_raw(Some(&format!("Bearer {expired}")), ME).await;
    assert_unauthenticated("expired token", status, &body);

    let no_exp = sign(
        &json!({ "sub": "mallory", "name": "Mallory" }),
        Algorithm::HS256,
        SECRET.as_bytes(),
    );
    let (status, body) = app.gql_raw(Some(&format!("Bearer {no_exp}")), ME).await;
    assert_unauthenticated("token without exp", status, &body);

    let no_sub = sign(&json!({ "exp": now() + 3600 }), Algorithm::HS256, SECRET.as_bytes());
    let (status, body) = app.gql_raw(Some(&format!("Bearer {no_sub}")), ME).await;
    assert_unauthenticated("token without sub", status, &body);

    // alg: none, hand-built, with an empty signature.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims("mallory").to_string());
    let none = format!("{header}.{payload}.");
    let (status, body) = app.gql_raw(Some(&format!("Bearer {none}")), ME).await;
    assert_unauthenticated("alg none", status, &body);

    // Right secret, wrong algorithm.
    let hs384 = sign(&claims("mallory"), Algorithm::HS384, SECRET.as_bytes());
    let (status, body) = app.gql_raw(Some(&format!("Bearer {hs384}")), ME).await;
    assert_unauthenticated("HS384 token", status, &body);

    // Mutations are refused the same way, and nothing is written.
    let (status, body) = app
        .gql_raw(
            Some(&format!("Bearer {wrong_secret}")),
            r#"{"query":"mutation { createDrive(input: { name: \"x\" }) { id } }"}"#,
        )
        .await;
    assert_unauthenticated("mutation with wrong signature", status, &body);
    assert!(
        user_row(&app, "mallory").await.is_none(),
        "a refused request must not create a user row"
    );
    let drives: u64 = sea_orm::PaginatorTrait::count(entity::drive::Entity::find(), app.db())
        .await
        .unwrap();
    assert_eq!(drives, 0, "a refused mutation wrote a drive");

    // The same request with a good token works.
    let (status, body) = app.gql_raw(Some(&format!("Bearer {good}")), ME).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["id"], "mallory", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_within_the_leeway_and_a_minimal_token_are_accepted() {
    let app = TestApp::spawn().await;
    // Expired 1 s ago: inside the 5 s leeway.
    let token = sign(
        &json!({ "sub": "carol", "exp": now() - 1 }),
        Algorithm::HS256,
        SECRET.as_bytes(),
    );
    let data = app.ok(&token, "{ me { id name email } }", json!({})).await;
    assert_eq!(data["me"], json!({ "id": "carol", "name": null, "email": null }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_creates_the_user_and_later_tokens_update_it() {
    let app = TestApp::spawn().await;
    assert!(user_row(&app, "alice").await.is_none());

    let token = app.token("alice");
    let data = app.ok(&token, "{ me { id name email } }", json!({})).await;
    assert_eq!(
        data["me"],
        json!({ "id": "alice", "name": "User alice", "email": "alice@example.com" })
    );
    let row = user_row(&app, "alice").await.expect("users row created");
    assert_eq!(row.name.as_deref(), Some("User alice"));
    assert_eq!(row.email.as_deref(), Some("alice@example.com"));

    // Same claims again: still one row, unchanged.
    let data = app.ok(&token, "{ me { id name email } }", json!({})).await;
    assert_eq!(data["me"]["name"], "User alice");

    // A later token with a new name (and email) updates the row.
    let renamed = sign(
        &json!({ "sub": "alice", "exp": now() + 3600, "name": "Alice Liddell", "email": "alice@wonderland.test" }),
        Algorithm::HS256,
        SECRET.as_bytes(),
    );
    let data = app.ok(&renamed, "{ me { id name email } }", json!({})).await;
    assert_eq!(
        data["me"],
        json!({ "id": "alice", "name": "Alice Liddell", "email": "alice@wonderland.test" })
    );
    let row = user_row(&app, "alice").await.unwrap();
    assert_eq!(row.name.as_deref(), Some("Alice Liddell"));
    assert_eq!(row.email.as_deref(), Some("alice@wonderland.test"));

    // Other users see the new name too (through a drive they share).
    let bob = app.user("bob").await;
    let drive = crate::create_drive(&app, &renamed, "Wonderland").await;
    crate::add_member(&app, &renamed, &drive, "bob", "VIEWER").await;
    let data = app
        .ok(
            &bob,
            "query($id: ID!) { drive(id: $id) { owner { id name email } } }",
            json!({ "id": drive }),
        )
        .await;
    assert_eq!(
        data["drive"]["owner"],
        json!({ "id": "alice", "name": "Alice Liddell", "email": "alice@wonderland.test" })
    );

    let users: u64 = sea_orm::PaginatorTrait::count(entity::user::Entity::find(), app.db())
        .await
        .unwrap();
    assert_eq!(users, 2, "one row per user");
}
