//! Headless Chromium driven over the DevTools protocol, for tests of what a
//! browser does with our pages. `Browser::launch` is `None` when Chromium is
//! not installed, so those tests skip instead of failing. Every wait has a
//! deadline, and the browser is killed when the `Browser` is dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for one DevTools answer, and for Chromium to start.
const ANSWER: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    dir: PathBuf,
    devtools: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// The DevTools session of the one page (tab) this browser has open.
    session: String,
}

impl Browser {
    /// Starts headless Chromium (`$CHROMIUM`, or `chromium` on the PATH)
    /// with a fresh profile and one blank tab. `None` if it is not installed;
    /// panics if it is installed but does not start.
    pub async fn launch() -> Option<Browser> {
        let program = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let dir = std::env::temp_dir()
            .join("workflows-tests")
            .join(format!("chromium-{}", cuid2::create_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("chromium.log")).unwrap();
        let spawned = Command::new(&program)
            .args([
                "--headless",
                // Tests run as root in containers, where the sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                // Nothing but the page under test goes over the network.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&dir);
                return None;
            }
            Err(e) => panic!("{program} does not start: {e}"),
        };
        // Chromium writes its DevTools port and path once it listens.
        let active = dir.join("DevToolsActivePort");
        let (port, path) = crate::eventually(ANSWER, || async {
            let text = std::fs::read_to_string(&active).unwrap_or_default();
            let mut lines = text.lines();
            match (lines.next(), lines.next()) {
                (Some(port), Some(path)) => Ok((port.to_owned(), path.to_owned())),
                _ => Err(format!(
                    "{program} did not open its DevTools port; log:\n{}",
                    std::fs::read_to_string(dir.join("chromium.log")).unwrap_or_default()
                )),
            }
        })
        .await;
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (devtools, _) = tokio::time::timeout(ANSWER, tokio_tungstenite::connect_async(url))
            .await
            .expect("DevTools connects in time")
            .expect("DevTools connects");
        let mut browser = Browser {
            child,
            dir,
            devtools,
            next_id: 0,
            session: String::new(),
        };
        let target = browser
            .send(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = browser
            .send(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"].as_str().expect("a session id").to_owned();
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        Some(browser)
    }

    /// Sends one DevTools command (to the browser, or to a page's session)
    /// and returns its result; events that arrive meanwhile are dropped.
    async fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            command["sessionId"] = json!(s);
        }
        self.devtools
            .send(Message::Text(command.to_string().into()))
            .await
            .expect("DevTools takes the command");
        let deadline = tokio::time::Instant::now() + ANSWER;
        loop {
            let message = tokio::time::timeout_at(deadline, self.devtools.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within {ANSWER:?}"));
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                other => panic!("DevTools connection ended waiting for {method}: {other:?}"),
            };
            let answer: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if answer["id"] == json!(id) {
                assert!(answer.get("error").is_none(), "{method} failed: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// A DevTools command to the page.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params).await
    }

    /// Runs `source` in every document the page opens from now on, before
    /// the document's own scripts (DevTools scripts are not subject to CSP).
    pub async fn before_each_document(&mut self, source: &str) {
        self.call("Page.addScriptToEvaluateOnNewDocument", json!({ "source": source }))
            .await;
    }

    /// Opens `url` in the page.
    pub async fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(r.get("errorText").is_none(), "{url} did not open: {r}");
    }

    /// The value of the JavaScript expression `expr` in the page (awaited if
    /// it is a promise); panics if it throws.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` every 100 ms until `done` accepts its value, and
    /// returns that value; panics with the last value after `timeout`.
    /// (Its own loop, not `eventually`: each look needs `&mut self`.)
    pub async fn wait_for(&mut self, expr: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let v = self.eval(expr).await;
            if done(&v) {
                return v;
            }
            assert!(started.elapsed() < timeout, "after {timeout:?}, {expr} is still {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Closes the browser and removes its profile.
    pub async fn close(mut self) {
        let close = json!({ "id": 0, "method": "Browser.close" });
        let _ = self.devtools.send(Message::Text(close.to_string().into())).await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium writes to its profile until it is gone: wait (briefly,
        // blocking) before removing it.
        let _ = self.child.start_kill();
        for _ in 0..100 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
