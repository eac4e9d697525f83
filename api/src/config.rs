//! Every setting in one struct, read once from flags and the environment.
//! Each limit has a default that is safe to run in production; the README's
//! configuration table lists them all.

use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://workflows.db?mode=rwc";

const MIB: usize = 1024 * 1024;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// `postgres://…` selects PostgreSQL; `sqlite:…` selects SQLite.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Address the HTTP server listens on.
    #[arg(long = "listen", env = "LISTEN_ADDR", default_value = "127.0.0.1:8000")]
    pub listen_addr: String,

    /// HS256 secret for bearer tokens. Without it a random secret is made per
    /// start and a demo token is printed.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// TOML file defining agents beyond the built-in ones.
    #[arg(long = "agents", env = "AGENTS_FILE")]
    pub agents_file: Option<std::path::PathBuf>,

    /// Maximum database connections in the pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Seconds a lease on a RUNNING execution lasts without renewal; a run
    /// whose instance died is taken over after about lease + sweep seconds.
    #[arg(long, env = "LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,

    /// Seconds between sweeps for runs whose lease expired.
    #[arg(long, env = "SWEEP_SECONDS", default_value_t = 5)]
    pub sweep_seconds: u64,

    /// Steps of one run in flight at once in a parallel group; the rest of
    /// the group waits its turn.
    #[arg(long, env = "MAX_PARALLEL_STEPS", default_value_t = 8)]
    pub max_parallel_steps: usize,

    /// On SIGTERM/Ctrl-C, seconds steps in flight may take to finish before
    /// their runs are handed to another instance.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,

    /// Milliseconds between the scheduler's looks for due schedules: a
    /// schedule fires at most this long after its due time. `0` turns the
    /// scheduler off on this instance.
    #[arg(long, env = "SCHEDULE_POLL_MS", default_value_t = 1000)]
    pub schedule_poll_ms: u64,

    /// Events a subscriber may fall behind before it is sent a fresh SNAPSHOT
    /// (for subscribers that share a group: how far the group may fall
    /// behind; each member may fall 64 behind its group).
    #[arg(long, env = "EVENT_BUFFER", default_value_t = 1024)]
    pub event_buffer: usize,

    /// Seconds a live subscription that needs a fresh SNAPSHOT (it fell
    /// behind, or events from other instances may have been missed) keeps
    /// retrying while the database fails, as when PostgreSQL restarts; after
    /// that it ends with an error that tells the client to resubscribe.
    #[arg(long, env = "SUBSCRIPTION_RETRY_SECONDS", default_value_t = 60)]
    pub subscription_retry_seconds: u64,

    /// Days a finished execution (COMPLETED, FAILED, CANCELLED) is kept
    /// after it finished; `0` keeps everything. Template statistics stay.
    #[arg(long, env = "RETENTION_DAYS", default_value_t = 0)]
    pub retention_days: u32,

    /// Seconds between retention sweeps (when `RETENTION_DAYS` is set).
    #[arg(long, env = "RETENTION_SWEEP_SECONDS", default_value_t = 3600)]
    pub retention_sweep_seconds: u64,

    /// Seconds between folds of finished runs' statistics into the hourly
    /// roll-ups; `0`: no background fold (reads stay exact, and slower).
    #[arg(long, env = "STATS_FOLD_SECONDS", default_value_t = 5)]
    pub stats_fold_seconds: u64,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub tokens: TokenSettings,

    #[command(flatten)]
    pub http: HttpSettings,
}

/// Bounds on what one request, one WebSocket connection and one run may cost.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Deepest nesting of fields in one operation.
    #[arg(long, env = "MAX_QUERY_DEPTH", default_value_t = 12)]
    pub max_query_depth: usize,

    /// Deepest nesting inside `__schema` / `__type` (GraphiQL's introspection
    /// query needs 13).
    #[arg(long, env = "MAX_INTROSPECTION_DEPTH", default_value_t = 15)]
    pub max_introspection_depth: usize,

    /// Highest complexity of one operation: each field costs 1 plus its
    /// children, and a connection costs its children times its `first`.
    #[arg(long, env = "MAX_QUERY_COMPLEXITY", default_value_t = 10_000)]
    pub max_query_complexity: usize,

    /// Most aliased fields in one operation.
    #[arg(long, env = "MAX_QUERY_ALIASES", default_value_t = 30)]
    pub max_query_aliases: usize,

    /// Most root fields in one operation.
    #[arg(long, env = "MAX_ROOT_FIELDS", default_value_t = 20)]
    pub max_root_fields: usize,

    /// Most operations in one batched request (a JSON array).
    #[arg(long, env = "MAX_BATCH_SIZE", default_value_t = 10)]
    pub max_batch_size: usize,

    /// Largest request body (and WebSocket message), in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = MIB)]
    pub max_body_bytes: usize,

    /// Longest time one query or mutation may run (e.g. `30s`, `500ms`); `0` for none.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Serve introspection (`__schema`, `__type`); `false` turns it off.
    #[arg(long, env = "INTROSPECTION", default_value_t = true, action = ArgAction::Set)]
    pub introspection: bool,

    /// Largest template (its name, texts and every step), in bytes of JSON.
    #[arg(long, env = "MAX_TEMPLATE_BYTES", default_value_t = MIB)]
    pub max_template_bytes: usize,

    /// Largest prompt, as written in a step and as rendered for the agent, in bytes.
    #[arg(long, env = "MAX_PROMPT_BYTES", default_value_t = MIB)]
    pub max_prompt_bytes: usize,

    /// Largest user input submitted to a paused step, in bytes of JSON.
    #[arg(long, env = "MAX_INPUT_BYTES", default_value_t = MIB)]
    pub max_input_bytes: usize,

    /// Largest `accumulatedContext` of an execution, in bytes of JSON. It
    /// grows with every step, so it gets more room than one prompt or input.
    #[arg(long, env = "MAX_CONTEXT_BYTES", default_value_t = 8 * MIB)]
    pub max_context_bytes: usize,

    /// Time a WebSocket client has to send `connection_init`.
    #[arg(long, env = "WS_INIT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ws_init_timeout: Duration,

    /// How often the server pings an idle WebSocket connection; `0` for never.
    #[arg(long, env = "WS_PING_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub ws_ping_interval: Duration,

    /// Most subscriptions open at once on one WebSocket connection.
    #[arg(long, env = "MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = 50)]
    pub max_subscriptions_per_connection: usize,

    /// Most WebSocket connections one user may hold open at once.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = 100)]
    pub max_connections_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_query_depth: 12,
            max_introspection_depth: 15,
            max_query_complexity: 10_000,
            max_query_aliases: 30,
            max_root_fields: 20,
            max_batch_size: 10,
            max_body_bytes: MIB,
            request_timeout: Duration::from_secs(30),
            introspection: true,
            max_template_bytes: MIB,
            max_prompt_bytes: MIB,
            max_input_bytes: MIB,
            max_context_bytes: 8 * MIB,
            ws_init_timeout: Duration::from_secs(10),
            ws_ping_interval: Duration::from_secs(15),
            max_subscriptions_per_connection: 50,
            max_connections_per_user: 100,
        }
    }
}

/// Optional checks of a token's claims beyond signature and expiry.
#[derive(Debug, Clone, Args)]
pub struct TokenSettings {
    /// Clock skew allowed when checking `exp` (and `nbf`), in seconds.
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = 5)]
    pub jwt_leeway_secs: u64,

    /// When set, tokens must carry this `iss` (and `workflows token` writes it).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// When set, tokens' `aud` must include this (and `workflows token` writes it).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            jwt_leeway_secs: 5,
            jwt_issuer: None,
            jwt_audience: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Browser access and logging.
#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// Origins allowed to call the API from a browser (comma-separated,
    /// e.g. `https://app.example.com`); none by default. `*` allows any.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// `text` or `json` (one object per line). The level comes from `RUST_LOG`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Defaults for everything, with the given database (tests and tools).
    pub fn for_database(url: impl Into<String>) -> Self {
        Self {
            database_url: url.into(),
            listen_addr: "127.0.0.1:0".into(),
            jwt_secret: None,
            agents_file: None,
            database_max_connections: 16,
            lease_seconds: 30,
            sweep_seconds: 5,
            max_parallel_steps: 8,
            shutdown_grace_seconds: 10,
            schedule_poll_ms: 1000,
            event_buffer: 1024,
            subscription_retry_seconds: 60,
            retention_days: 0,
            retention_sweep_seconds: 3600,
            stats_fold_seconds: 5,
            limits: Limits::default(),
            tokens: TokenSettings::default(),
            http: HttpSettings::default(),
        }
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration '{s}'"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("invalid duration unit in '{s}' (use ms, s, m or h)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    /// The documented defaults are what clap produces with no flags, and
    /// what `Config::for_database` gives the tests.
    #[test]
    fn clap_defaults_match_for_database() {
        let parsed = Cli::parse_from(["workflows"]).config;
        let built = Config::for_database(DEFAULT_DATABASE_URL);
        assert_eq!(format!("{:?}", parsed.limits), format!("{:?}", built.limits));
        assert_eq!(format!("{:?}", parsed.tokens), format!("{:?}", built.tokens));
        assert_eq!(format!("{:?}", parsed.http), format!("{:?}", built.http));
    }

    #[test]
    fn parses_flags() {
        let c = Cli::parse_from([
            "workflows",
            "--introspection",
            "false",
            "--request-timeout",
            "250ms",
            "--cors-origins",
            "https://a.example,https://b.example",
        ])
        .config;
        assert!(!c.limits.introspection);
        assert_eq!(c.limits.request_timeout, Duration::from_millis(250));
        assert_eq!(c.http.cors_origins, vec!["https://a.example", "https://b.example"]);
        assert!(parse_duration("3x").is_err());
    }
}
