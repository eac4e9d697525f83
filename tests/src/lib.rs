//! Test harness: each test gets its own fresh database (SQLite file, or a new
//! PostgreSQL database when `TEST_DATABASE_URL` is a `postgres://` URL) and a
//! real server bound to a free port, built exactly as `workflows serve` builds it.

pub mod agents;
pub mod browser;
pub mod process;
pub mod stub;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use workflows::clock::{Clock, ManualClock};
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

/// The first line of a PostgreSQL-only test, which is also
/// `#[ignore = "needs PostgreSQL: …"]`: run on SQLite (asked for with
/// `--include-ignored`), it fails rather than passing without testing.
pub fn require_postgres() {
    assert!(
        is_postgres(),
        "this test needs PostgreSQL (several instances share one database): \
         set TEST_DATABASE_URL=postgres://…, or leave out --include-ignored on SQLite"
    );
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

/// Calls `check` every 25 ms until it gives `Ok`, for at most `within`;
/// then fails the test with the last `Err` (what was seen instead). How
/// tests wait for something the server does in the background.
pub async fn eventually<T, E, F, Fut>(within: Duration, mut check: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(done) => return done,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("gave up after {within:?}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// A manual clock at the current time, for `TestApp::spawn_with_clock`.
pub fn manual_clock() -> ManualClock {
    ManualClock::starting_at(chrono::Utc::now().naive_utc())
}

/// A running server on its own database.
pub struct TestApp {
    pub base: String,
    pub state: Arc<AppState>,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    // Dropped last: the server goes first. Shared with `another` server.
    db: Arc<TestDb>,
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
        Self::start(Arc::new(TestDb::create().await), configure, registry, Clock::system()).await
    }

    /// A server whose scheduler, leases and retention go by `clock`, which
    /// the test moves on.
    pub async fn spawn_with_clock(configure: impl FnOnce(&mut Config), clock: &ManualClock) -> Self {
        Self::spawn_with_agents_and_clock(configure, agents::registry(), clock).await
    }

    pub async fn spawn_with_agents_and_clock(
        configure: impl FnOnce(&mut Config),
        registry: workflows::engine::agents::AgentRegistry,
        clock: &ManualClock,
    ) -> Self {
        Self::start(Arc::new(TestDb::create().await), configure, registry, clock.clock()).await
    }

    /// Another server on this one's database (a second instance), going by `clock`.
    pub async fn another(&self, configure: impl FnOnce(&mut Config), clock: &ManualClock) -> Self {
        Self::spawn_on(self.db.clone(), configure, clock).await
    }

    /// A server on the database of one that was `stop`ped (it restarted),
    /// going by `clock`.
    pub async fn spawn_on(db: Arc<TestDb>, configure: impl FnOnce(&mut Config), clock: &ManualClock) -> Self {
        Self::start(db, configure, agents::registry(), clock.clock()).await
    }

    async fn start(
        db: Arc<TestDb>,
        configure: impl FnOnce(&mut Config),
        registry: workflows::engine::agents::AgentRegistry,
        clock: Clock,
    ) -> Self {
        let mut config = Config::for_database(db.url.clone());
        config.jwt_secret = Some(SECRET.into());
        config.database_max_connections = 8;
        configure(&mut config);
        let app = Application::build_with_clock(config, registry, clock)
            .await
            .expect("server builds");
        let base = format!("http://{}", app.addr);
        let state = app.state.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        // On PostgreSQL the relay's first LISTEN tells open streams that
        // events may have been missed (they resync with a SNAPSHOT): wait
        // for it, so that a test's subscribers never race it.
        if let Some(relay) = state.engine.relay() {
            let mut resyncs = relay.resyncs();
            tokio::time::timeout(Duration::from_secs(30), resyncs.wait_for(|n| *n >= 1))
                .await
                .expect("the event relay listens within 30 s")
                .expect("the event relay is running");
        }
        TestApp {
            base,
            state,
            client,
            shutdown: Some(tx),
            server: Some(server),
            db,
        }
    }

    /// Shuts the server down as `workflows serve` does on SIGTERM and waits
    /// until it has; returns its database, for `spawn_on`.
    pub async fn stop(mut self) -> Arc<TestDb> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server shut down cleanly");
        }
        self.db.clone()
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

    /// Waits until `n` more subscriptions than `before` (an earlier
    /// `subscribers()`) listen to the server's events: a subscription is in
    /// place once its resolver has run, a moment after the server read it.
    pub async fn wait_subscribed(&self, before: usize, n: usize) {
        let bus = self.state.engine.bus();
        eventually(Duration::from_secs(10), || async {
            let now = bus.subscribers();
            if now >= before + n {
                Ok(())
            } else {
                Err(format!("{now} subscribers"))
            }
        })
        .await
    }

    /// Subscribers to the server's events now (see `wait_subscribed`).
    pub fn subscribers(&self) -> usize {
        self.state.engine.bus().subscribers()
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
