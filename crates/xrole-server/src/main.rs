//! The `xrole` command: the reference server and its operator tools.

use std::net::SocketAddr;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xrole", version, about = "Act in your customers' AWS accounts without their keys")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "XROLE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where to store: a SQLite file path or `sqlite://…`, or `postgres://…`.
        #[arg(long, env = "XROLE_DATABASE_URL", default_value = "./xrole.db")]
        database_url: String,
        /// Development mode: create a local keyring file if none is configured.
        #[arg(long)]
        dev: bool,
    },
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { listen, database_url, dev: _ } => {
            tracing::info!(%listen, %database_url, "xrole listening");
            HttpServer::new(|| App::new().route("/healthz", web::get().to(healthz)))
                .bind(listen)
                .with_context(|| format!("cannot listen on {listen}"))?
                .run()
                .await?;
        }
    }
    Ok(())
}
