//! The `workflows` binary: serve (default), migrate, token, schema.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use workflows::auth::{JwtKeys, parse_ttl};
use workflows::config::Config;
use workflows::http::app::Application;

// The server allocates a great deal per request (every field of every
// response); mimalloc serves that about three times faster than glibc's
// allocator (profile and A/B run in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "workflows", version, about = "Multi-step AI agent workflows over GraphQL")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default). Settings may come before or after `serve`.
    Serve(Box<Config>),
    /// Apply database migrations and exit.
    Migrate(Box<Config>),
    /// Print a signed token (needs JWT_SECRET).
    Token {
        #[arg(long)]
        sub: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Lifetime such as 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `workflows serve --listen …` and `workflows --listen …` both work.
    let config = match &cli.command {
        Some(Command::Serve(c)) | Some(Command::Migrate(c)) => (**c).clone(),
        _ => cli.config.clone(),
    };
    workflows::telemetry::init(config.http.log_format, workflows::telemetry::DEFAULT_FILTER);
    match cli.command.unwrap_or(Command::Serve(Box::new(config.clone()))) {
        Command::Serve(_) => serve(config).await,
        Command::Migrate(_) => {
            let (db, _) = workflows::db::connect(&config.database_url, 2).await?;
            workflows::db::migrate(&db).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Token { sub, name, email, ttl } => {
            let secret = cli
                .config
                .jwt_secret
                .filter(|s| !s.is_empty())
                .context("set JWT_SECRET to sign tokens")?;
            println!(
                "{}",
                JwtKeys::with_settings(secret.as_bytes(), &cli.config.tokens).issue(
                    &sub,
                    name.as_deref(),
                    email.as_deref(),
                    ttl
                )
            );
            Ok(())
        }
        Command::Schema => {
            print!("{}", workflows::graphql::sdl());
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    let url = format!("http://{}/graphql", app.addr);
    if let Some(token) = &app.state.demo_token {
        tracing::warn!("JWT_SECRET is not set: using a random secret; tokens last until this process exits");
        println!("\nDemo token (user 'demo-user'):\n\n  Bearer {token}\n");
    }
    println!("GraphiQL: {url}");
    tracing::info!(%url, "listening");
    app.run_until(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
