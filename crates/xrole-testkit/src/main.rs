//! `xrole-testkit gate --upstream http://127.0.0.1:<moto> --listen 127.0.0.1:<port>`:
//! the STS gate as a process, for scripts in other languages.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use std::io::Read;

#[derive(Debug, Parser)]
#[command(name = "xrole-testkit", about = "Test services for xrole")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the STS gate in front of a moto server until interrupted.
    ///
    /// Prints one line, `xrole gate listening on http://HOST:PORT`, once it
    /// accepts connections, and logs each request it denies to stderr. Faults,
    /// counters and enforcement are programmed over HTTP under /_xrole_gate/
    /// (see the crate README).
    Gate {
        /// moto's URL, e.g. http://127.0.0.1:5000.
        #[arg(long)]
        upstream: String,
        /// Where to listen; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Delay every request by this many milliseconds (emulated network latency).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Exit when standard input reaches end of file, so a test that pipes
        /// stdin never leaves a gate behind, even if it is killed.
        #[arg(long)]
        stop_on_stdin_eof: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Gate {
            upstream,
            listen,
            delay_ms,
            stop_on_stdin_eof,
        } => {
            // The gate's log (denials and their reasons) goes to stderr;
            // RUST_LOG overrides the default.
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("xrole_gate=info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .try_init();
            let gate = xrole_testkit::Gate::start(&upstream, listen).await?;
            gate.control().delay(None, Duration::from_millis(delay_ms));
            println!(
                "xrole gate listening on {} (upstream {upstream})",
                gate.endpoint()
            );
            let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
            if stop_on_stdin_eof {
                std::thread::spawn(move || {
                    let mut sink = [0u8; 256];
                    let mut stdin = std::io::stdin();
                    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
                    let _ = closed_tx.send(());
                });
            } else {
                // Keep the sender alive forever: the receiver never fires.
                std::mem::forget(closed_tx);
            }
            let stdin_closed = async {
                let _ = closed_rx.await;
            };
            tokio::select! {
                r = tokio::signal::ctrl_c() => r?,
                () = stdin_closed => {}
            }
            drop(gate);
        }
    }
    Ok(())
}
