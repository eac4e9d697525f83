//! The binary's structured logs: with `LOG_FORMAT=json` a GraphQL operation
//! logs one JSON line carrying its name, type, outcome and duration, inside
//! the request's span with its request id.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn post(addr: &str, token: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         X-Request-Id: logs-test-42\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn json_logs_name_the_operation_and_carry_the_request_id() {
    let bin = env!("CARGO_BIN_EXE_workflows");
    let db = std::env::temp_dir().join(format!("workflows-logs-{}.db", std::process::id()));
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let token = Command::new(bin)
        .args(["token", "--sub", "ana"])
        .env("JWT_SECRET", "logs-secret")
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();

    let mut child = Command::new(bin)
        .env("JWT_SECRET", "logs-secret")
        .env("LOG_FORMAT", "json")
        .env("DATABASE_URL", format!("sqlite://{}?mode=rwc", db.display()))
        .env("LISTEN_ADDR", &addr)
        .env_remove("RUST_LOG")
        .env_remove("AGENTS_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = Killed(child);
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_json = |want: &str| -> Value {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no log line with message {want:?}"));
            if !line.starts_with('{') {
                continue;
            }
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if v["message"] == want {
                return v;
            }
        }
    };
    next_json("listening");
    let resp = post(&addr, &token, r#"{"query":"query Mine { me { id } }"}"#);
    assert!(resp.contains(r#"{"data":{"me":{"id":"ana"}}}"#), "{resp}");
    let line = next_json("graphql operation finished");
    let span = &line["span"];
    assert_eq!(span["name"], "graphql", "{line}");
    assert_eq!(span["operation"], "Mine", "{line}");
    assert_eq!(span["kind"], "query", "{line}");
    assert_eq!(span["outcome"], "ok", "{line}");
    assert!(span["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{line}");
    let http = line["spans"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "http"))
        .unwrap_or_else(|| panic!("no http span: {line}"));
    assert_eq!(http["request_id"], "logs-test-42", "{line}");
    assert_eq!(http["path"], "/graphql");

    let resp = post(
        &addr,
        &token,
        r#"{"query":"mutation Bad { createDrive(input: { name: \" \" }) { id } }"}"#,
    );
    assert!(resp.contains("BAD_USER_INPUT"), "{resp}");
    let line = next_json("graphql operation failed");
    assert_eq!(line["span"]["operation"], "Bad", "{line}");
    assert_eq!(line["span"]["outcome"], "BAD_USER_INPUT", "{line}");
    assert!(line["error"].as_str().is_some_and(|e| e.contains("name")), "{line}");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
