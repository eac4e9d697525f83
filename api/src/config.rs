//! Every setting in one struct, read once from flags and the environment.

use clap::Args;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://workflows.db?mode=rwc";

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

    /// On SIGTERM/Ctrl-C, seconds steps in flight may take to finish before
    /// their runs are handed to another instance.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,

    /// Events a subscriber may fall behind before it is sent a fresh SNAPSHOT.
    #[arg(long, env = "EVENT_BUFFER", default_value_t = 1024)]
    pub event_buffer: usize,
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
            shutdown_grace_seconds: 10,
            event_buffer: 1024,
        }
    }
}
