//! Test harness: each test gets its own fresh database (SQLite file, or a new
//! PostgreSQL database when `TEST_DATABASE_URL` is a `postgres://` URL) and a
//! real server bound to a free port, built exactly as `workflows serve` builds it.

pub mod agents;
pub mod browser;
pub mod process;
pub mod stub;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use workflows::config::Config;
use workflows::http::app::{AppState, Application};

pub const SECRET: &str = "test-secret-for-the-suite";

/// Which database the suite runs against.
pub fn backend_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.trim().is_empty())
}

pub fn is_postgres() -> bool {
    backend_url().is_some_and(|u| u.starts_with("postgres"))
}

/// A database made for one test and dropped after it.
pub struct TestDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    SqliteFile(std::path::PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub async fn create() -> Self {
        match backend_url().filter(|u| u.starts_with("postgres")) {
            Some(admin_url) => {
                // Named after the suite's database, so whoever made that one
                // (CI) can find and drop leftovers by prefix.
                let base = admin_url
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .split('?')
                    .next()
                    .unwrap_or("");
                let base = if base.is_empty() || base == "postgres" {
                    "wf_test"
                } else {
                    base
                };
                let name = format!("{base}_{}", &cuid2::create_id()[..16]);
                let admin = sea_orm::Database::connect(&admin_url)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                use sea_orm::ConnectionTrait;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let url = replace_db_name(&admin_url, &name);
                TestDb {
                    url,
                    cleanup: Cleanup::Postgres { admin_url, name },
                }
            }
            None => {
                let dir = std::env::temp_dir().join("workflows-tests");
                std::fs::create_dir_all(&dir).expect("temp dir");
                let path = dir.join(format!("{}.db", cuid2::create_id()));
                TestDb {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    cleanup: Cleanup::SqliteFile(path),
                }
            }
        }
    }
}

/// `postgres://u@h:p/db?x` with `db` replaced by `name`.
fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::SqliteFile(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{}", path.display(), suffix));
                }
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop runs inside the test's runtime: use a thread with its own.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    rt.block_on(async {
                        use sea_orm::ConnectionTrait;
                        let admin = sea_orm::Database::connect(&admin_url).await.ok()?;
                        admin
                            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .await
                            .ok()?;
                        admin.close().await.ok()
                    })
                })
                .join();
            }
        }
    }
}

/// A running server on its own database.
pub struct TestApp {
    pub base: String,
    pub state: Arc<AppState>,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    // Dropped last: the server goes first.
    _db: TestDb,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_with_agents(configure, agents::registry()).await
    }

    /// A server with the given agents (e.g. ones pointed at a stub provider).
    pub async fn spawn_with_agents(
        configure: impl FnOnce(&mut Config),
        registry: workflows::engine::agents::AgentRegistry,
    ) -> Self {
        let db = TestDb::create().await;
        let mut config = Config::for_database(db.url.clone());
        config.jwt_secret = Some(SECRET.into());
        config.database_max_connections = 8;
        configure(&mut config);
        let app = Application::build_with_agents(config, registry)
            .await
            .expect("server builds");
        let base = format!("http://{}", app.addr);
        let state = app.state.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        TestApp {
            base,
            state,
            client,
            shutdown: Some(tx),
            _db: db,
        }
    }

    /// The server's own database connection (statements on it are counted).
    pub fn db(&self) -> &sea_orm::DatabaseConnection {
        &self.state.db
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A token for `sub`, signed with the suite's secret, valid for an hour.
    pub fn token(&self, sub: &str) -> String {
        self.state.keys.issue(
            sub,
            Some(&format!("User {sub}")),
            Some(&format!("{sub}@example.com")),
            Duration::from_secs(3600),
        )
    }

    /// Makes `sub` known to the server (its first request creates the user row)
    /// and returns its token.
    pub async fn user(&self, sub: &str) -> String {
        let token = self.token(sub);
        let body = self.gql(&token, "{ me { id } }", json!({})).await;
        assert_eq!(body["data"]["me"]["id"], sub, "{body}");
        token
    }

    /// POSTs a GraphQL request and returns the whole JSON body.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        self.gql_raw(
            Some(&format!("Bearer {token}")),
            &json!({"query": query, "variables": variables}).to_string(),
        )
        .await
        .1
    }

    /// POSTs a raw body with an optional Authorization header; returns the
    /// HTTP status and the JSON body.
    pub async fn gql_raw(&self, authorization: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self
            .client
            .post(self.url("/graphql"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON (HTTP {status}): {text}"));
        (status, body)
    }

    /// Like `gql`, but returns the response body as the server wrote it.
    pub async fn gql_text(&self, token: &str, query: &str, variables: Value) -> String {
        let resp = self
            .client
            .post(self.url("/graphql"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(json!({"query": query, "variables": variables}).to_string())
            .send()
            .await
            .expect("request sent");
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().await.expect("body")
    }

    /// Like `gql`, but fails the test on any error and returns `data`.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// SQL statements the server has sent so far.
    pub fn statements(&self) -> u64 {
        self.state.statements.get()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The single error's `extensions.code` (panics when there is not exactly one error).
pub fn error_code(body: &Value) -> String {
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("expected errors: {body}"));
    assert_eq!(errors.len(), 1, "expected one error: {body}");
    errors[0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error without code: {body}"))
        .to_owned()
}

pub fn error_message(body: &Value) -> String {
    body["errors"][0]["message"].as_str().unwrap_or_default().to_owned()
}
