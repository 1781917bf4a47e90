//! `xrole-testkit gate --upstream http://127.0.0.1:<moto> --listen 127.0.0.1:<port>`:
//! the STS gate as a process, for scripts in other languages.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xrole-testkit", about = "Test services for xrole")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the STS gate in front of a moto server until interrupted.
    Gate {
        /// moto's URL, e.g. http://127.0.0.1:5000.
        #[arg(long)]
        upstream: String,
        /// Where to listen; port 0 picks a free port (printed on start).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Milliseconds added to every call (closer to a real network).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Gate { upstream, listen, delay_ms } => {
            let gate = xrole_testkit::Gate::start(&upstream, listen).await?;
            gate.control().delay(None, std::time::Duration::from_millis(delay_ms));
            println!(
                "xrole gate listening on {} (upstream {upstream})",
                gate.endpoint()
            );
            tokio::signal::ctrl_c().await?;
            drop(gate);
        }
    }
    Ok(())
}
