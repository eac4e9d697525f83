//! Real `workflows` server processes, for tests of several instances,
//! crashes (`kill -9`) and graceful shutdown (SIGTERM).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::SECRET;

/// The `workflows` binary cargo built next to this test binary.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("workflows");
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo test --workspace` so the server binary is built",
        bin.display()
    );
    bin
}

pub struct ServerProcess {
    child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `workflows serve` on a free port and waits until it is ready.
    pub async fn start(database_url: &str, agents_file: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join("workflows-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("server-{port}-{}.log", &cuid2::create_id()[..8]));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .env("DATABASE_URL", database_url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("JWT_SECRET", SECRET)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .kill_on_drop(true);
        if let Some(f) = agents_file {
            cmd.env("AGENTS_FILE", f);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("server starts");
        let server = ServerProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let client = reqwest::Client::new();
        crate::eventually(Duration::from_secs(15), || async {
            match client.get(format!("{}/readyz", server.base)).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                _ => Err(format!("server not ready; log:\n{}", server.log_text())),
            }
        })
        .await;
        server
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// `kill -9`: no shutdown, nothing released.
    pub async fn kill9(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGTERM, as a process manager stops a server.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// POSTs a GraphQL request; returns the JSON body.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        reqwest::Client::new()
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("JSON body")
    }

    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }
}

/// A token signed with the secret the server processes use.
pub fn token(sub: &str) -> String {
    workflows::auth::JwtKeys::new(SECRET.as_bytes()).issue(sub, Some(sub), None, Duration::from_secs(3600))
}
