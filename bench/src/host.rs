//! The server under test as a child process (this executable running the
//! server as `workflows serve` does, so its RSS is its own), the machine's
//! facts, and a TCP proxy that counts database round trips on the wire.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use workflows::config::Config;
use workflows::http::app::Application;

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The child's side of [`ServerProcess`]: the server built and run as
/// `workflows serve` builds and runs it, from the same library, allocator and
/// build profile, until the bench kills it. Spawning this executable rather
/// than a `workflows` found beside it means the server measured is always the
/// code this bench was built from, and one `cargo run` builds everything.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    app.run_until(std::future::pending()).await?;
    Ok(())
}

/// The server running as a child of the bench (see [`serve`]).
pub struct ServerProcess {
    pub child: Child,
    pub pid: u32,
    pub base: String,
    /// From spawn to the first `200 ready` of `/readyz`.
    pub start_to_ready: Duration,
}

impl ServerProcess {
    /// Spawns this same executable as `serve` and waits until `/readyz` answers 200.
    pub async fn start(database_url: &str, secret: &str, log: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the workflows-bench binary")?;
        let port = free_port()?;
        let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let started = Instant::now();
        let child = Command::new(exe)
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("JWT_SECRET", secret)
            .env("MAX_CONNECTIONS_PER_USER", crate::MANY_CONNECTIONS.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting `workflows-bench serve`")?;
        let pid = child.id().context("the server exited at once")?;
        let base = format!("http://127.0.0.1:{port}");
        let mut server = ServerProcess {
            child,
            pid,
            base,
            start_to_ready: Duration::ZERO,
        };
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let ready = format!("{}/readyz", server.base);
        loop {
            if let Ok(r) = client.get(&ready).send().await
                && r.status().is_success()
            {
                server.start_to_ready = started.elapsed();
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited while starting ({status}); see its log");
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the server was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Resident memory now (VmRSS), in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        rss_of(self.pid)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `VmRSS` of a process, in bytes.
pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .context("no VmRSS in /proc/<pid>/status")
}

/// The soft limit on open files (from /proc, without unsafe code).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// "2 cores, 23.5 GiB RAM, AMD EPYC …".
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(
            || "? GiB".to_owned(),
            |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0),
        );
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores, {mem} RAM, {cpu}")
}

/// Forwards TCP connections to `upstream` and counts round trips: each time
/// a connection's client sends after the server last spoke (or first) is one
/// request-response exchange, however many messages a flush carries.
pub struct RoundTripProxy {
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
    /// Of those, exchanges that were a lone `Sync` message: sqlx's ping of
    /// a connection as it goes back to the pool.
    pings: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundTripProxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let count = Arc::new(AtomicU64::new(0));
        let pings = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let p = pings.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let c = c.clone();
                let p = p.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        pipe(client, server, c, p).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            count,
            pings,
            task,
        })
    }

    pub fn round_trips(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn pings(&self) -> u64 {
        self.pings.load(Ordering::Relaxed)
    }
}

impl Drop for RoundTripProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const CLIENT: u8 = 1;
const SERVER: u8 = 2;

/// PostgreSQL's `Sync` message alone.
const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

async fn pipe(client: TcpStream, server: TcpStream, count: Arc<AtomicU64>, pings: Arc<AtomicU64>) {
    let last = Arc::new(AtomicU8::new(0));
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let l = last.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if l.swap(CLIENT, Ordering::AcqRel) != CLIENT {
                count.fetch_add(1, Ordering::Relaxed);
                if buf[..n] == SYNC {
                    pings.fetch_add(1, Ordering::Relaxed);
                }
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            last.store(SERVER, Ordering::Release);
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}
