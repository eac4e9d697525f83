//! `workflows-bench`: loads a fixed data set through the server's database
//! layer, runs the real server on a real socket, and prints what it measured
//! — reads under load, the engine, subscription fan-out, the footprint — as
//! a Markdown table (issue 7; results and their reading are in BENCHMARKS.md).
//!
//! The server runs twice over: as a child process (this executable's hidden
//! `serve`, which runs the server as `workflows serve` does, for throughput
//! and memory) and in process on its own runtime (where its statement counter
//! and event bus can be read). A crate of its own, so the server's binary
//! carries neither this code nor the WebSocket client it needs.

mod data;
mod host;
mod load;
mod ws;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use entity::{ExecutionStatus, drive, workflow_execution as execution};
use futures::{StreamExt, TryStreamExt};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use workflows::auth::JwtKeys;
use workflows::config::{Config, LogFormat};
use workflows::http::app::{AppState, Application};

use data::DataSize;
use load::GqlRequest;

// The same allocator as the `workflows` binary: the in-process server and
// the child measure what the real server does (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "workflows-bench",
    version,
    about = "Load a fixed data set, run the server and print what it measured (build with --release; see \
             BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    child: Option<Child>,
    #[command(flatten)]
    args: BenchArgs,
}

#[derive(Subcommand)]
enum Child {
    /// The server under test, run as `workflows serve` runs it: the child
    /// process the bench starts for its footprint, reads and idle parts.
    #[command(hide = true)]
    Serve(Box<Config>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.child {
        Some(Child::Serve(config)) => {
            workflows::telemetry::init(config.http.log_format, workflows::telemetry::DEFAULT_FILTER);
            host::serve(*config).await
        }
        None => {
            // The bench prints a table; the servers it runs log only warnings.
            workflows::telemetry::init(LogFormat::Text, "warn");
            run(cli.args).await
        }
    }
}

const SECRET: &str = "workflows-bench-secret";
/// The per-user WebSocket limit while benchmarking (all subscribers are one user).
const MANY_CONNECTIONS: usize = 1_000_000;

#[derive(Debug, Clone, clap::Args)]
struct BenchArgs {
    /// Database to load and measure (`sqlite:…` or `postgres://…`); the data
    /// set is loaded once and reused by later runs. Default: a file in the
    /// temporary directory.
    #[arg(long)]
    pub database_url: Option<String>,
    /// CI-sized: a small data set and short runs (seconds). Its numbers are
    /// printed, not comparable.
    #[arg(long)]
    pub quick: bool,
    /// Seconds of measured load per read query (default 10; 1 with --quick).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Concurrent HTTP connections for the read queries.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Delete whatever the database holds and load the data set again.
    #[arg(long)]
    pub reload: bool,
    /// Parts to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Footprint,
    Reads,
    Idle,
    Statements,
    Engine,
    Fanout,
}

/// The sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    data: DataSize,
    warmup: Duration,
    duration: Duration,
    starts: usize,
    engine_runs: usize,
    fanout_subscribers: usize,
    fanout_steps: usize,
    idle_subscriptions: usize,
}

impl Plan {
    fn new(args: &BenchArgs) -> Self {
        let secs = |d: f64| Duration::from_secs_f64(d);
        if args.quick {
            Plan {
                data: DataSize {
                    templates: 100,
                    executions: 200,
                },
                warmup: secs(0.3),
                duration: secs(args.duration.unwrap_or(1.0)),
                starts: 1,
                engine_runs: 10,
                fanout_subscribers: 50,
                fanout_steps: 5,
                idle_subscriptions: 200,
            }
        } else {
            Plan {
                data: DataSize {
                    templates: 1000,
                    executions: 20_000,
                },
                warmup: secs(3.0),
                duration: secs(args.duration.unwrap_or(10.0)),
                starts: 3,
                engine_runs: 100,
                fanout_subscribers: 1000,
                fanout_steps: 20,
                idle_subscriptions: 10_000,
            }
        }
    }
}

/// One line of the result table.
struct Row {
    part: String,
    figure: &'static str,
    value: String,
    target: &'static str,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(&mut self, part: impl Into<String>, figure: &'static str, value: impl Into<String>, target: &'static str) {
        let row = Row {
            part: part.into(),
            figure,
            value: value.into(),
            target,
        };
        println!("  {:<34} {:<38} {}", row.part, row.figure, row.value);
        self.rows.push(row);
    }

    fn markdown(&self) -> String {
        let mut out = String::from("| part | figure | value | target |\n| --- | --- | --- | --- |\n");
        let mut last = "";
        for r in &self.rows {
            let part = if r.part == last { "" } else { r.part.as_str() };
            last = &r.part;
            out.push_str(&format!("| {part} | {} | {} | {} |\n", r.figure, r.value, r.target));
        }
        out
    }
}

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m < 10.0 {
        format!("{m:.2} ms")
    } else {
        format!("{m:.1} ms")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

const NESTED_PAGE: &str = "query DriveTemplates($driveId: ID!, $first: Int) {
  workflowTemplates(driveId: $driveId, first: $first) {
    nodes {
      id name tags isPublic createdAt
      creator { id name }
      steps { id stepOrder agentId promptTemplate inputSchema }
    }
  }
}";

const EXECUTION_DETAIL: &str = "query Execution($id: ID!) {
  workflowExecution(id: $id) {
    id workflowTemplateId userId driveId status currentStepOrder accumulatedContext
    startedAt pausedAt completedAt failedAt errorMessage createdAt updatedAt
    template { name }
    steps {
      id workflowExecutionId workflowStepId stepOrder status agentInput agentOutput userInput
      startedAt completedAt errorMessage createdAt updatedAt
    }
  }
}";

const EVENTS: &str = "subscription Events($id: ID!) {
  workflowExecutionEvents(executionId: $id) {
    kind sequence at delta
    execution { id status currentStepOrder }
    step { id stepOrder status startedAt completedAt agentOutput }
  }
}";

/// Users of the data set as tokens: user 1 owns drive 1.
struct Tokens {
    keys: JwtKeys,
}

impl Tokens {
    fn of(&self, u: u32) -> String {
        let name = data::user_name(u);
        let email = format!("{}@example.com", name.to_lowercase().replace(' ', "."));
        self.keys.issue(
            &data::user_id(u),
            Some(name),
            Some(&email),
            Duration::from_secs(6 * 3600),
        )
    }
}

/// The server in this process, on a runtime of its own (two workers, as if
/// it were another process), so its counters and bus can be read.
struct InProcess {
    addr: SocketAddr,
    state: Option<Arc<AppState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    async fn start(database_url: &str) -> anyhow::Result<Self> {
        let mut config = Config::for_database(database_url);
        config.jwt_secret = Some(SECRET.into());
        // The bench's subscribers are all one user: lift the per-user cap.
        config.limits.max_connections_per_user = MANY_CONNECTIONS;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("bench-server".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("bench-server-worker")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            rt.block_on(async move {
                match Application::build(config).await {
                    Ok(app) => {
                        let _ = ready_tx.send(Ok((app.addr, app.state.clone())));
                        let _ = app
                            .run_until(async {
                                let _ = stop_rx.await;
                            })
                            .await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
        let (addr, state) = ready_rx.await.context("the in-process server thread died")??;
        Ok(Self {
            addr,
            state: Some(state),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    fn state(&self) -> &AppState {
        self.state.as_ref().expect("running")
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn statements(&self) -> u64 {
        self.state().statements.get()
    }

    async fn stop(mut self) {
        self.state = None;
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

fn default_url(quick: bool) -> String {
    let name = if quick {
        "workflows-bench-quick.db"
    } else {
        "workflows-bench.db"
    };
    format!("sqlite://{}?mode=rwc", std::env::temp_dir().join(name).display())
}

/// Connects, creating the PostgreSQL database when it does not exist yet.
async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    if let Some(path) = url.strip_prefix("sqlite://").map(|p| p.split('?').next().unwrap_or(p))
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match workflows::db::connect(url, 4).await {
        Ok((db, _)) => Ok(db),
        Err(e) if url.starts_with("postgres") && e.to_string().contains("does not exist") => {
            let mut admin = reqwest::Url::parse(url)?;
            let name = admin.path().trim_start_matches('/').to_owned();
            admin.set_path("/postgres");
            let (adb, _) = workflows::db::connect(admin.as_str(), 1).await?;
            use sea_orm::ConnectionTrait;
            adb.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
            adb.close().await?;
            Ok(workflows::db::connect(url, 4).await?.0)
        }
        Err(e) => Err(e.into()),
    }
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args);
    let url = args.database_url.clone().unwrap_or_else(|| default_url(args.quick));
    let wants = |p: Part| args.only.is_empty() || args.only.contains(&p);
    let backend = if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let build = if cfg!(debug_assertions) {
        "debug build: numbers are not representative"
    } else {
        "release build"
    };
    println!("workflows-bench — {backend} ({url})");
    println!(
        "machine: {}; {}; {}",
        host::machine(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        build
    );

    let need_fds = (plan.idle_subscriptions + 64).max(plan.fanout_subscribers * 2 + 64) as u64;
    if let Some(limit) = host::open_files_limit()
        && limit < need_fds
    {
        bail!("open files are limited to {limit}; this run needs about {need_fds}: run `ulimit -n 65536` first");
    }

    // The data set.
    let db = connect(&url).await.context("connecting to the database")?;
    workflows::db::migrate(&db).await?;
    let mut have = data::counts(&db).await?;
    let want = data::expected(plan.data);
    let mut loaded = false;
    if have != want {
        if have.iter().any(|&n| n > 0) && !args.reload {
            bail!(
                "the database holds other data (users, drives, templates, steps, executions, execution steps = \
                 {have:?}; the data set is {want:?}): use a fresh database, or --reload to replace its contents"
            );
        }
        let t = Instant::now();
        data::clear(&db).await?;
        data::load(&db, plan.data).await?;
        have = data::counts(&db).await?;
        println!("data set loaded in {:.1} s: {have:?}", t.elapsed().as_secs_f64());
        loaded = true;
    } else {
        println!("data set present: {have:?}");
    }
    let tokens = Tokens {
        keys: JwtKeys::new(SECRET.as_bytes()),
    };
    let mut report = Report::default();
    let logs = std::env::temp_dir().join("workflows-bench-logs");
    std::fs::create_dir_all(&logs)?;

    if loaded {
        settle(&url, &db).await?;
    }

    // The real binary: footprint, reads under load, idle subscriptions.
    if wants(Part::Footprint) || wants(Part::Reads) || wants(Part::Idle) {
        let mut readies = Vec::new();
        let mut server: Option<host::ServerProcess> = None;
        let starts = if wants(Part::Footprint) { plan.starts } else { 1 };
        for i in 0..starts {
            if let Some(s) = server.take() {
                s.stop().await;
            }
            let s = host::ServerProcess::start(&url, SECRET, &logs.join(format!("server-{i}.log"))).await?;
            readies.push(s.start_to_ready);
            server = Some(s);
        }
        let server = server.expect("started");
        if wants(Part::Footprint) {
            readies.sort();
            tokio::time::sleep(Duration::from_secs(1)).await;
            report.add(
                "footprint",
                "start to ready (existing database)",
                format!(
                    "{} (median of {}; {})",
                    ms(readies[readies.len() / 2]),
                    readies.len(),
                    readies.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
                ),
                "< 1 s",
            );
            report.add("footprint", "idle RSS after start", mib(server.rss()?), "< 30 MB");
        }
        if wants(Part::Reads) {
            reads_under_load(&server, &tokens, &plan, &args, &mut report).await?;
            report.add("footprint", "RSS after the read loads", mib(server.rss()?), "");
        }
        if wants(Part::Idle) {
            idle_subscriptions(&server, &tokens, &plan, &mut report).await?;
            idle_alone(&url, &logs, &tokens, &plan, &mut report).await?;
        }
        server.stop().await;
    }

    // In process: statement counts, the engine, fan-out.
    if wants(Part::Statements) || wants(Part::Engine) || wants(Part::Fanout) {
        let app = InProcess::start(&url).await?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let gql = format!("{}/graphql", app.base());
        let owner = tokens.of(1);
        let result = async {
            if wants(Part::Statements) {
                statements(&app, &client, &gql, &tokens, &mut report).await?;
            }
            let bench_drive = GqlRequest::new(
                &gql,
                &owner,
                "mutation { createDrive(input: { name: \"Benchmark runs\" }) { id } }",
                json!({}),
            )
            .data(&client)
            .await?["createDrive"]["id"]
                .as_str()
                .context("createDrive")?
                .to_owned();
            let outcome = async {
                if wants(Part::Engine) {
                    engine(&app, &db, &client, &gql, &owner, &bench_drive, &plan, &url, &mut report).await?;
                    growing_context(&app, &db, &client, &gql, &owner, &bench_drive, &mut report).await?;
                }
                if wants(Part::Fanout) {
                    fanout(&app, &db, &client, &gql, &owner, &bench_drive, &plan, &mut report).await?;
                }
                anyhow::Ok(())
            }
            .await;
            // The runs the bench made go with their drive (FK CASCADE).
            drive::Entity::delete_by_id(bench_drive).exec(&db).await?;
            outcome
        }
        .await;
        app.stop().await;
        result?;
    }

    println!(
        "\n## {backend}: {}\n\nmachine: {}; {}; `workflows-bench{}`\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        host::machine(),
        build,
        if args.quick { " --quick" } else { "" }
    );
    print!("{}", report.markdown());
    Ok(())
}

/// After a fresh load: the data set's RUNNING executions hold no lease, so a
/// server that takes over orphaned runs does so now, once, rather than during
/// a measurement. Waits until their number stops changing.
async fn settle(url: &str, db: &DatabaseConnection) -> anyhow::Result<()> {
    let running = || {
        execution::Entity::find()
            .filter(execution::Column::Status.eq(ExecutionStatus::Running))
            .count(db)
    };
    let app = InProcess::start(url).await?;
    let t = Instant::now();
    let mut last = running().await?;
    let mut stable_since = Instant::now();
    while last > 0 && stable_since.elapsed() < Duration::from_secs(8) && t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = running().await?;
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    app.stop().await;
    println!(
        "data set settled in {:.1} s ({last} executions still RUNNING)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn reads_under_load(
    server: &host::ServerProcess,
    tokens: &Tokens,
    plan: &Plan,
    args: &BenchArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let url = format!("{}/graphql", server.base);
    let owner = tokens.of(1);
    let client = reqwest::Client::new();
    let nested = GqlRequest::new(
        &url,
        &owner,
        NESTED_PAGE,
        json!({ "driveId": data::drive_id(1), "first": 50 }),
    );
    let page = nested.data(&client).await?;
    let nodes = page["workflowTemplates"]["nodes"].as_array().context("no nodes")?;
    let expect = (plan.data.templates / data::DRIVES).min(50) as usize;
    if nodes.len() != expect || nodes.iter().any(|n| n["steps"].as_array().map(Vec::len) != Some(5)) {
        bail!(
            "the nested page has {} templates (expected {expect} with 5 steps each)",
            nodes.len()
        );
    }
    let detail = GqlRequest::new(&url, &owner, EXECUTION_DETAIL, json!({ "id": data::execution_id(1) }));
    let e = detail.data(&client).await?;
    if e["workflowExecution"]["steps"].as_array().map(Vec::len) != Some(5) {
        bail!("execution detail: {e}");
    }
    for (name, req) in [
        ("nested template page (50 × 5 steps)", &nested),
        ("execution detail (1 + 5 steps)", &detail),
    ] {
        let r = load::closed_loop(req, args.connections, plan.warmup, plan.duration).await?;
        let target = if name.starts_with("nested") {
            "≥ 3× PostGraphile req/s, lower p99"
        } else {
            "≥ 2× PostGraphile req/s"
        };
        report.add(
            name,
            "requests/s",
            format!(
                "{:.0} ({} connections, {:.0} s, {} errors, {} KB each)",
                r.per_second,
                args.connections,
                plan.duration.as_secs_f64(),
                r.errors,
                r.response_bytes / 1000
            ),
            target,
        );
        report.add(name, "latency p50 / p99", format!("{} / {}", ms(r.p50), ms(r.p99)), "");
    }
    Ok(())
}

async fn idle_subscriptions(
    server: &host::ServerProcess,
    tokens: &Tokens,
    plan: &Plan,
    report: &mut Report,
) -> anyhow::Result<()> {
    let e = data::PAUSED_EXECUTION;
    let token = tokens.of(data::execution_user(e));
    let before = server.rss()?;
    let t = Instant::now();
    let streams = ws::open_many(
        &server.base,
        &token,
        EVENTS,
        &json!({ "id": data::execution_id(e) }),
        plan.idle_subscriptions,
        64,
    )
    .await?;
    let opened = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = server.rss()?;
    let n = streams.len();
    drop(streams);
    report.add(
        format!("{n} idle subscriptions"),
        "server RSS with them open",
        format!(
            "{} ({} before; {:.1} KiB each; opened in {:.1} s)",
            mib(with),
            mib(before),
            with.saturating_sub(before) as f64 / 1024.0 / n as f64,
            opened.as_secs_f64()
        ),
        "< 300 MB",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.add(
        format!("{n} idle subscriptions"),
        "server RSS after they closed",
        mib(server.rss()?),
        "",
    );
    Ok(())
}

/// Idle subscriptions that share nothing: each document differs (by a
/// comment), so each subscriber is alone in its group and pays for the
/// group's task and parsed document too. On a fresh server process, since
/// memory freed by the shared run above is kept by the allocator.
async fn idle_alone(
    url: &str,
    logs: &std::path::Path,
    tokens: &Tokens,
    plan: &Plan,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = (plan.idle_subscriptions / 10).max(10);
    let server = host::ServerProcess::start(url, SECRET, &logs.join("server-alone.log")).await?;
    let e = data::PAUSED_EXECUTION;
    let token = tokens.of(data::execution_user(e));
    let variables = json!({ "id": data::execution_id(e) });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.rss()?;
    let streams: Vec<ws::WsStream> = futures::stream::iter(0..n)
        .map(|i| {
            let query = format!("{EVENTS}\n# subscriber {i}");
            let (base, token, variables) = (server.base.clone(), token.clone(), variables.clone());
            async move { ws::subscribe(&base, &token, &query, &variables).await }
        })
        .buffer_unordered(64)
        .try_collect()
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = server.rss()?;
    drop(streams);
    report.add(
        format!("{n} idle subscriptions, each alone in its group"),
        "server RSS with them open",
        format!(
            "{} ({} before; {:.1} KiB each)",
            mib(with),
            mib(before),
            with.saturating_sub(before) as f64 / 1024.0 / n as f64
        ),
        "",
    );
    server.stop().await;
    Ok(())
}

/// Statements one request costs (the fewest of five tries, so a background
/// task cannot inflate it), for several page sizes.
async fn statements(
    app: &InProcess,
    client: &reqwest::Client,
    gql: &str,
    tokens: &Tokens,
    report: &mut Report,
) -> anyhow::Result<()> {
    let owner = tokens.of(1);
    let count = |req: GqlRequest| async move {
        let mut best = u64::MAX;
        for _ in 0..5 {
            let before = app.statements();
            req.data(client).await?;
            best = best.min(app.statements() - before);
        }
        anyhow::Ok(best)
    };
    let mut per_size = Vec::new();
    for first in [1, 10, 50, 100] {
        let req = GqlRequest::new(
            gql,
            &owner,
            NESTED_PAGE,
            json!({ "driveId": data::drive_id(1), "first": first }),
        );
        per_size.push(format!("{} (first {first})", count(req).await?));
    }
    report.add(
        "nested template page (50 × 5 steps)",
        "SQL statements per request",
        per_size.join(", "),
        "≤ 4, whatever the page size",
    );
    let detail = GqlRequest::new(gql, &owner, EXECUTION_DETAIL, json!({ "id": data::execution_id(1) }));
    report.add(
        "execution detail (1 + 5 steps)",
        "SQL statements per request",
        count(detail).await?.to_string(),
        "",
    );
    Ok(())
}

async fn create_template(
    client: &reqwest::Client,
    gql: &str,
    token: &str,
    drive: &str,
    name: &str,
    steps: Vec<Value>,
) -> anyhow::Result<String> {
    let data = GqlRequest::new(
        gql,
        token,
        "mutation($input: CreateWorkflowTemplateInput!) { createWorkflowTemplate(input: $input) { id } }",
        json!({ "input": { "driveId": drive, "name": name, "isPublic": true, "steps": steps } }),
    )
    .data(client)
    .await?;
    Ok(data["createWorkflowTemplate"]["id"]
        .as_str()
        .context("createWorkflowTemplate")?
        .to_owned())
}

fn echo_steps(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let prompt = if i == 0 {
                "Review ticket {{ticket}} for the benchmark: list the risky changes, each with a severity and a \
                 one-line fix suggestion, then say whether it can be merged."
                    .to_owned()
            } else {
                format!("Step {i}: go on from the previous step for ticket {{{{ticket}}}} and report what changed.")
            };
            json!({ "agentId": "echo", "promptTemplate": prompt })
        })
        .collect()
}

/// Starts `runs` executions at once and waits until all have finished;
/// returns the time from the first start to the last finish. The finishes
/// are seen on the server's event bus, so waiting costs the database nothing.
async fn engine_batch(
    app: &InProcess,
    db: &DatabaseConnection,
    client: &reqwest::Client,
    gql: &str,
    token: &str,
    template: &str,
    runs: usize,
) -> anyhow::Result<Duration> {
    let mut rx = app.state().engine.bus().subscribe();
    let t0 = Instant::now();
    let ids: HashSet<String> = futures::future::try_join_all(
        (0..runs).map(|_| start_run(client, gql, token, template, json!({ "ticket": "PS-1234" }))),
    )
    .await?
    .into_iter()
    .collect();
    let mut finished: HashSet<String> = HashSet::new();
    let deadline = t0 + Duration::from_secs(300);
    while !ids.iter().all(|id| finished.contains(id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Err(_) => bail!(
                "{} of {runs} runs did not finish within 300 s",
                ids.len() - finished.len()
            ),
            Ok(Ok(ev)) if ev.is_terminal() => {
                finished.insert(ev.execution.id.clone());
            }
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                // Missed some: ask the database which are done.
                let done = execution::Entity::find()
                    .filter(execution::Column::Id.is_in(ids.iter().cloned()))
                    .filter(execution::Column::Status.is_not_in([ExecutionStatus::Running, ExecutionStatus::Paused]))
                    .all(db)
                    .await?;
                finished.extend(done.into_iter().map(|e| e.id));
            }
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    let took = t0.elapsed();
    let completed = execution::Entity::find()
        .filter(execution::Column::Id.is_in(ids.iter().cloned()))
        .filter(execution::Column::Status.eq(ExecutionStatus::Completed))
        .count(db)
        .await?;
    if completed as usize != runs {
        bail!("only {completed} of {runs} runs completed");
    }
    Ok(took)
}

#[allow(clippy::too_many_arguments)]
async fn engine(
    app: &InProcess,
    db: &DatabaseConnection,
    client: &reqwest::Client,
    gql: &str,
    token: &str,
    drive: &str,
    plan: &Plan,
    url: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let runs = plan.engine_runs;
    let steps = (runs * 5) as f64;
    let template = create_template(client, gql, token, drive, "Engine benchmark", echo_steps(5)).await?;
    engine_batch(app, db, client, gql, token, &template, runs).await?; // warm-up: pool, caches
    // A batch lasts about half a second: the median of several says more
    // than one on a shared machine.
    let batches = if plan.engine_runs >= 100 { 5 } else { 1 };
    let before = app.statements();
    let mut rates = Vec::with_capacity(batches);
    for _ in 0..batches {
        let took = engine_batch(app, db, client, gql, token, &template, runs).await?;
        rates.push(steps / took.as_secs_f64());
    }
    let statements = app.statements() - before;
    rates.sort_by(f64::total_cmp);
    let part = format!("engine ({runs} concurrent runs × 5 echo steps)");
    report.add(
        part.clone(),
        "steps/s end to end",
        format!(
            "{:.0} (median of {batches} batches of {steps} steps: {})",
            rates[rates.len() / 2],
            rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
        ),
        "≥ 1,000 on PostgreSQL",
    );
    report.add(
        part.clone(),
        "SQL statements per step",
        format!("{:.1} (starts included)", statements as f64 / (steps * batches as f64)),
        "",
    );
    // Round trips on the wire: the same batch through a counting proxy.
    if url.starts_with("postgres") {
        let parsed = reqwest::Url::parse(url)?;
        let upstream =
            tokio::net::lookup_host((parsed.host_str().unwrap_or("127.0.0.1"), parsed.port().unwrap_or(5432)))
                .await?
                .next()
                .context("resolving the database host")?;
        let proxy = host::RoundTripProxy::start(upstream).await?;
        let mut via = parsed.clone();
        let _ = via.set_host(Some("127.0.0.1"));
        let _ = via.set_port(Some(proxy.addr.port()));
        let counted = InProcess::start(via.as_str()).await?;
        let cgql = format!("{}/graphql", counted.base());
        engine_batch(&counted, db, client, &cgql, token, &template, runs).await?;
        let (rt0, pg0, st0) = (proxy.round_trips(), proxy.pings(), counted.statements());
        let took = engine_batch(&counted, db, client, &cgql, token, &template, runs).await?;
        let (rt, pings, st) = (
            proxy.round_trips() - rt0,
            proxy.pings() - pg0,
            counted.statements() - st0,
        );
        counted.stop().await;
        report.add(
            part,
            "database round trips per step",
            format!(
                "{:.1} on the wire: {:.1} carrying statements ({:.1} statements), {:.1} sqlx pings of connections \
                 going back to the pool; starts included; {:.0} steps/s through the proxy",
                rt as f64 / steps,
                (rt - pings) as f64 / steps,
                st as f64 / steps,
                pings as f64 / steps,
                steps / took.as_secs_f64()
            ),
            "≤ 3",
        );
    } else {
        report.add(
            part,
            "database round trips per step",
            "– (SQLite is in process: see statements)",
            "≤ 3 (PostgreSQL)",
        );
    }
    Ok(())
}

/// Starts one run of `template` with `context`; its id.
async fn start_run(
    client: &reqwest::Client,
    gql: &str,
    token: &str,
    template: &str,
    context: Value,
) -> anyhow::Result<String> {
    let started = GqlRequest::new(
        gql,
        token,
        "mutation($t: ID!, $c: JSON) { startWorkflowExecution(templateId: $t, context: $c) { id } }",
        json!({ "t": template, "c": context }),
    )
    .data(client)
    .await?;
    Ok(started["startWorkflowExecution"]["id"]
        .as_str()
        .context("startWorkflowExecution")?
        .to_owned())
}

/// Steps of the growing-context run, and what each adds to the context.
const GROWING_STEPS: usize = 20;
const GROWING_BYTES: usize = 50_000;

/// A 20-step run whose every step adds 50 KB to `accumulatedContext`: what
/// each step costs as the context grows to 1 MB, from the moment one step
/// record is written COMPLETED to the next (as seen on the event bus).
async fn growing_context(
    app: &InProcess,
    db: &DatabaseConnection,
    client: &reqwest::Client,
    gql: &str,
    token: &str,
    drive: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let steps: Vec<Value> = (0..GROWING_STEPS)
        .map(|i| json!({ "agentId": "echo", "promptTemplate": format!("{i}:{{{{blob}}}}") }))
        .collect();
    let template = create_template(client, gql, token, drive, "Growing context benchmark", steps).await?;
    let blob = "x".repeat(GROWING_BYTES);
    let mut rx = app.state().engine.bus().subscribe();
    let before = app.statements();
    let t0 = Instant::now();
    let id = start_run(client, gql, token, &template, json!({ "blob": blob })).await?;
    let mut done_at: Vec<Instant> = Vec::with_capacity(GROWING_STEPS);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = match tokio::time::timeout(left, rx.recv()).await {
            Err(_) => bail!("the growing-context run did not finish within 300 s"),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(ev)) => ev,
        };
        if ev.execution.id != id {
            continue;
        }
        if ev.kind == workflows::events::EventKind::StepUpdated
            && ev
                .step
                .as_ref()
                .is_some_and(|s| s.status == entity::StepStatus::Completed)
        {
            done_at.push(Instant::now());
        }
        if ev.is_terminal() {
            break;
        }
    }
    let took = t0.elapsed();
    let statements = app.statements() - before;
    let row = execution::Entity::find_by_id(id.clone())
        .one(db)
        .await?
        .context("the growing-context run is gone")?;
    let ctx = row
        .accumulated_context
        .as_object()
        .context("context is not an object")?;
    for i in 0..GROWING_STEPS {
        let want = format!("{i}:{blob}");
        if ctx.get(&format!("step_{i}_output")).and_then(|o| o["text"].as_str()) != Some(want.as_str()) {
            bail!("growing-context run: step_{i}_output is not what step {i} produced");
        }
    }
    if row.status != ExecutionStatus::Completed || done_at.len() != GROWING_STEPS {
        bail!(
            "growing-context run ended {:?} with {} steps completed",
            row.status,
            done_at.len()
        );
    }
    let gaps: Vec<Duration> = done_at.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = |d: &[Duration]| d.iter().sum::<Duration>() / d.len().max(1) as u32;
    let part = format!("engine ({GROWING_STEPS} steps each adding 50 KB)");
    report.add(
        part.clone(),
        "cost per step as the context grows",
        format!(
            "{} for steps 1–5, {} for steps 15–19 (context {:.0} KB → {:.0} KB); {} end to end",
            ms(mean(&gaps[..5])),
            ms(mean(&gaps[gaps.len() - 5..])),
            (2 * GROWING_BYTES) as f64 / 1000.0,
            workflows::core::limits::json_bytes(&row.accumulated_context) as f64 / 1000.0,
            ms(took)
        ),
        "close to flat",
    );
    report.add(
        part,
        "SQL statements per step",
        format!("{:.1} (start included)", statements as f64 / GROWING_STEPS as f64),
        "",
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn fanout(
    app: &InProcess,
    db: &DatabaseConnection,
    client: &reqwest::Client,
    gql: &str,
    token: &str,
    drive: &str,
    plan: &Plan,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Step 0 waits for input, so every subscriber is in place before the run goes on.
    let mut steps = echo_steps(plan.fanout_steps);
    steps[0]["requiresUserInput"] = json!(true);
    steps[0]["inputSchema"] = json!({ "type": "object" });
    let template = create_template(client, gql, token, drive, "Fan-out benchmark", steps).await?;
    let id = start_run(client, gql, token, &template, json!({ "ticket": "PS-1" })).await?;
    let t = Instant::now();
    loop {
        let paused = execution::Entity::find_by_id(id.clone())
            .filter(execution::Column::Status.eq(ExecutionStatus::Paused))
            .count(db)
            .await?;
        if paused == 1 {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the fan-out run did not pause for input");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    let streams = ws::open_many(
        &app.base(),
        token,
        EVENTS,
        &json!({ "id": id }),
        plan.fanout_subscribers,
        64,
    )
    .await?;
    let opened = t.elapsed();
    let commits = ws::watch_commits(app.state().engine.bus(), &id);
    let submit = GqlRequest::new(
        gql,
        token,
        "mutation($id: ID!) { submitWorkflowUserInput(executionId: $id, input: {}) { status } }",
        json!({ "id": id }),
    );
    let r = ws::deliver(streams, commits, async {
        submit.data(client).await?;
        Ok(())
    })
    .await?;
    let part = format!("fan-out ({} subscribers, {} steps)", r.subscribers, plan.fanout_steps);
    report.add(
        part.clone(),
        "delivery latency p50 / p99 (max)",
        format!(
            "{} / {} ({}); {} events each, commit → subscriber",
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.events
        ),
        "p99 < 50 ms",
    );
    report.add(part, "time to open the subscriptions", ms(opened), "");
    Ok(())
}
