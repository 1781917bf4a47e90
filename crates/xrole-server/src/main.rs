//! The `xrole` command: the reference server and its operator tools.

use std::io::{IsTerminal as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use xrole_crypto::Keyring;
use xrole_server::aws_env::{self, AwsSide};
use xrole_server::config::{self, Config, KeyringOrigin, KeyringSource, LogFormat};
use xrole_server::{SystemClock, admin, keyring_watch};

#[derive(Debug, Parser)]
#[command(
    name = "xrole",
    version,
    about = "Act in your customers' AWS accounts without their keys"
)]
struct Cli {
    /// A TOML configuration file; `XROLE_*` environment variables override it.
    #[arg(long, global = true, env = "XROLE_CONFIG")]
    config: Option<PathBuf>,
    /// Development mode: when no keyring is configured, use (or create)
    /// ./xrole-dev.keyring, the file `xrole serve --dev` uses; and do not ask
    /// EC2 instance metadata for AWS credentials unless XROLE_AWS_IMDS=true.
    #[arg(long, global = true)]
    dev: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API (migrates the database first).
    Serve {
        /// Address to listen on (overrides XROLE_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Database URL (overrides XROLE_DATABASE_URL).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Run job workers only (no HTTP API), next to `xrole serve` replicas
    /// on the same database.
    Worker {
        /// Database URL (overrides XROLE_DATABASE_URL).
        #[arg(long)]
        database_url: Option<String>,
        /// How many workers (overrides XROLE_WORKERS).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Manage the keyring that seals secrets at rest.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage organizations.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Write a fresh keyring to a new file (mode 0600).
    Generate {
        /// Where to write it (default: XROLE_KEYRING_FILE).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Add a key, make it primary, save the keyring file, then re-seal every
    /// sealed column under it.
    Rotate {
        /// After re-sealing, retire the keys that are no longer primary.
        #[arg(long)]
        retire_old: bool,
    },
    /// Re-seal every sealed column still under an older key (resumes an
    /// interrupted rotation).
    Reseal,
    /// Add a fresh key that is not yet used to seal (step 1 of a rotation
    /// across replicas: every replica learns it before anything uses it).
    Add,
    /// Make key ID the one new values are sealed with (step 2).
    Promote {
        /// The key id, as printed by `keys add`.
        id: u32,
    },
    /// Re-seal anything still under another key, then remove key ID from the
    /// keyring file (the last step, once every replica seals with the primary).
    Retire {
        /// The key id to remove; the primary cannot be retired.
        id: u32,
    },
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Create an organization with its first admin user; prints that user's
    /// first API key once, alone on standard output (the rest goes to
    /// standard error), so that `KEY=$(xrole org create …)` keeps it.
    Create {
        /// The organization's name.
        #[arg(long)]
        name: String,
        /// The first admin's email.
        #[arg(long)]
        admin_email: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match LogFormat::parse(std::env::var("XROLE_LOG_FORMAT").ok().as_deref()) {
        Ok(f) => f,
        Err(e) => return fail(&anyhow::Error::new(e)),
    };
    init_logging(format);
    match actix_web::rt::System::new().block_on(run(cli, format)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// A failed command is one line on stderr, its causes joined by `: `, and
/// exit status 1: no backtrace, whatever `RUST_BACKTRACE` says (those are
/// for bugs, which panic).
fn fail(e: &anyhow::Error) -> ExitCode {
    let line = format!("{e:#}");
    eprintln!(
        "error: {}",
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    ExitCode::FAILURE
}

/// Plain lines (coloured on a terminal unless `NO_COLOR` is set), or JSON
/// objects with `XROLE_LOG_FORMAT=json`; the filter is `RUST_LOG`, `info` by
/// default.
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        _ => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).init();
        }
    }
}

async fn run(cli: Cli, format: LogFormat) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    let dev = cli.dev;
    match cli.command {
        Command::Serve {
            listen,
            database_url,
        } => {
            if let Some(l) = listen {
                config.listen = l;
            }
            if let Some(u) = database_url {
                config.database_url = u;
            }
            serve(config, dev, format).await
        }
        Command::Worker {
            database_url,
            workers,
        } => {
            if let Some(u) = database_url {
                config.database_url = u;
            }
            if let Some(n) = workers {
                config.workers = n;
            }
            worker(config, dev).await
        }
        Command::Migrate => {
            let applied = admin::migrate(&config.database_url)?;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for v in applied {
                println!("applied migration {v}");
            }
            Ok(())
        }
        Command::Keys { command } => keys(config, dev, command),
        Command::Org {
            command: OrgCommand::Create { name, admin_email },
        } => {
            let (keyring, origin) = config::load_keyring(config.keyring.as_ref(), dev)?;
            if let KeyringOrigin::DevCreated(path) | KeyringOrigin::DevExisting(path) = &origin {
                eprintln!("development keyring: {}", path.display());
            }
            let state = xrole_server::open_state(config, Arc::new(keyring), Arc::new(SystemClock))?;
            let created = state
                .db({
                    let state = state.clone();
                    move |conn| admin::create_org_cli(&state, conn, &name, &admin_email)
                })
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!("organization {} created", created.org.id);
            eprintln!("admin user {} <{}>", created.admin.id, created.admin.email);
            eprintln!("API key (shown once, on standard output; store it now)");
            println!("{}", created.api_key.expose_secret());
            Ok(())
        }
    }
}

async fn serve(mut config: Config, dev: bool, format: LogFormat) -> anyhow::Result<()> {
    let imds = aws_env::imds_allowed(dev, |k| std::env::var(k).ok()).map_err(anyhow::Error::msg)?;
    let (keyring, origin) = config::load_keyring(config.keyring.as_ref(), dev)?;
    // The banner is for people at a terminal; JSON logs carry the warning.
    let banner = format == LogFormat::Text;
    match &origin {
        KeyringOrigin::DevCreated(path) => {
            if banner {
                let line = "!".repeat(72);
                eprintln!("{line}");
                eprintln!(
                    "DEVELOPMENT MODE: created a NEW keyring in {} (mode 0600).",
                    path.display()
                );
                eprintln!("Secrets sealed with it are lost if that file is lost. Never use --dev");
                eprintln!("in production: set XROLE_KEYRING_FILE to a managed keyring instead.");
                eprintln!("{line}");
            }
            tracing::warn!(path = %path.display(), "development keyring created");
        }
        KeyringOrigin::DevExisting(path) => {
            if banner {
                eprintln!(
                    "DEVELOPMENT MODE: using the development keyring in {}",
                    path.display()
                );
            }
            tracing::warn!(path = %path.display(), "development keyring in use");
        }
        KeyringOrigin::Inline => tracing::info!("keyring loaded from XROLE_KEYRING"),
        KeyringOrigin::File(p) => tracing::info!(path = %p.display(), "keyring loaded"),
        _ => {}
    }
    let listen = config.listen;
    let listener =
        TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    // The address actually bound (port 0 picks a free one); links and the
    // OpenAPI document's server default to it.
    let listen = listener.local_addr().unwrap_or(listen);
    config.listen = listen;
    let database = redact_url(&config.database_url);
    let state = xrole_server::open_state(config, Arc::new(keyring), Arc::new(SystemClock))?;
    let instance = keyring_watch::instance_name();
    let watch = keyring_watch::spawn(
        state.clone(),
        instance.clone(),
        keyring_file(&origin),
        Duration::from_secs(state.config.keyring_reload_secs),
    );
    tracing::info!(%listen, %database, "xrole listening");
    // actix stops accepting on SIGTERM/SIGINT and drains in-flight requests.
    // Without an AWS identity the API still serves tenants and keys; the AWS
    // routes answer 503 until the server restarts with one.
    let aws = match aws_env::start(imds).await {
        AwsSide::Ready(aws) => Some(aws),
        AwsSide::WithoutCredentials(aws, why) => {
            tracing::warn!("{why}");
            let _ = state.aws_status.set(why);
            Some(aws)
        }
        AwsSide::Unavailable(why) => {
            tracing::warn!("{why}");
            let _ = state.aws_status.set(why);
            None
        }
        _ => None,
    };
    let workers = aws.map(|aws| {
        xrole_server::link_flow::install(&state, aws.clone());
        tracing::info!(workers = state.config.workers, "job workers started");
        xrole_server::worker::WorkerPool::spawn(state.clone(), aws, state.config.workers)
    });
    xrole_server::run(listener, state.clone())?.await?;
    if let Some(w) = workers {
        w.shutdown().await;
    }
    watch.abort();
    keyring_watch::forget(&state, &instance).await;
    tracing::info!("xrole stopped");
    Ok(())
}

/// The keyring file a running process follows, if its keyring has one.
fn keyring_file(origin: &KeyringOrigin) -> Option<PathBuf> {
    match origin {
        KeyringOrigin::File(p) | KeyringOrigin::DevCreated(p) | KeyringOrigin::DevExisting(p) => {
            Some(p.clone())
        }
        _ => None,
    }
}

/// `xrole worker`: job workers until SIGTERM/SIGINT.
async fn worker(config: Config, dev: bool) -> anyhow::Result<()> {
    let (keyring, origin) = config::load_keyring(config.keyring.as_ref(), dev)?;
    let count = config.workers.max(1);
    let state = xrole_server::open_state(config, Arc::new(keyring), Arc::new(SystemClock))?;
    let instance = keyring_watch::instance_name();
    let watch = keyring_watch::spawn(
        state.clone(),
        instance.clone(),
        keyring_file(&origin),
        Duration::from_secs(state.config.keyring_reload_secs),
    );
    let imds = aws_env::imds_allowed(dev, |k| std::env::var(k).ok()).map_err(anyhow::Error::msg)?;
    let aws = match aws_env::start(imds).await {
        AwsSide::Ready(aws) => aws,
        AwsSide::WithoutCredentials(aws, why) => {
            tracing::warn!("{why}");
            aws
        }
        // Workers exist to act in AWS: without it there is nothing to run.
        AwsSide::Unavailable(why) => anyhow::bail!("{why}"),
        _ => anyhow::bail!("no AWS side"),
    };
    xrole_server::link_flow::install(&state, aws.clone());
    let workers = xrole_server::worker::WorkerPool::spawn(state.clone(), aws, count);
    tracing::info!(workers = count, "xrole worker running");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping: letting running jobs finish");
    workers.shutdown().await;
    watch.abort();
    keyring_watch::forget(&state, &instance).await;
    Ok(())
}

/// Hides a PostgreSQL password in logs.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn keys(config: Config, dev: bool, command: KeysCommand) -> anyhow::Result<()> {
    let configured_file = match &config.keyring {
        Some(KeyringSource::File(p)) => Some(p.clone()),
        // `--dev` means the development keyring, as for every other command.
        None if dev => Some(PathBuf::from(config::DEV_KEYRING_FILE)),
        _ => None,
    };
    match command {
        KeysCommand::Generate { out } => {
            let path = out
                .or(configured_file)
                .context("say where to write the keyring: --out FILE or XROLE_KEYRING_FILE")?;
            anyhow::ensure!(
                !path.exists(),
                "{} exists; refusing to overwrite a keyring",
                path.display()
            );
            let k = Keyring::generate()?;
            k.write_file(&path)?;
            println!(
                "wrote a new keyring to {} (mode 0600), primary key {}",
                path.display(),
                k.primary_key_id()
            );
            Ok(())
        }
        KeysCommand::Rotate { retire_old } => {
            let path = configured_file
                .context("rotation rewrites the keyring file: set XROLE_KEYRING_FILE")?;
            let mut k = Keyring::from_file(&path)?;
            let old: Vec<u32> = k.key_ids();
            let new = k.add_key()?;
            k.promote(new)?;
            // Save before re-sealing: rows sealed under the new key must never
            // exist while the only copy of that key is in memory.
            k.write_file(&path)?;
            println!(
                "key {new} added and promoted; keyring saved to {}",
                path.display()
            );
            if retire_old {
                // Running servers must seal with the new key before the old
                // ones go, or what they seal meanwhile becomes unreadable.
                wait_for_servers(&config.database_url, new)?;
            }
            reseal(&config.database_url, &k)?;
            if retire_old {
                for id in old {
                    refuse_if_primary_somewhere(&config.database_url, id)?;
                    k.retire(id)?;
                    println!("retired key {id}");
                }
                k.write_file(&path)?;
            }
            Ok(())
        }
        KeysCommand::Reseal => {
            let (k, _) = config::load_keyring(config.keyring.as_ref(), dev)?;
            reseal(&config.database_url, &k)
        }
        KeysCommand::Add => {
            let path =
                configured_file.context("set XROLE_KEYRING_FILE to the keyring to change")?;
            let mut k = Keyring::from_file(&path)?;
            let new = k.add_key()?;
            k.write_file(&path)?;
            println!(
                "key {new} added (primary is still key {}); keyring saved to {}",
                k.primary_key_id(),
                path.display()
            );
            Ok(())
        }
        KeysCommand::Promote { id } => {
            let path =
                configured_file.context("set XROLE_KEYRING_FILE to the keyring to change")?;
            let mut k = Keyring::from_file(&path)?;
            k.promote(id)?;
            k.write_file(&path)?;
            println!(
                "key {id} is now primary; keyring saved to {}",
                path.display()
            );
            Ok(())
        }
        KeysCommand::Retire { id } => {
            let path =
                configured_file.context("set XROLE_KEYRING_FILE to the keyring to change")?;
            let mut k = Keyring::from_file(&path)?;
            anyhow::ensure!(
                k.key_ids().contains(&id),
                "key {id} is not in {}",
                path.display()
            );
            anyhow::ensure!(
                id != k.primary_key_id(),
                "key {id} is the primary; promote another key first"
            );
            refuse_if_primary_somewhere(&config.database_url, id)?;
            // Nothing may stay sealed under the key once it is gone.
            reseal(&config.database_url, &k)?;
            refuse_if_primary_somewhere(&config.database_url, id)?;
            k.retire(id)?;
            k.write_file(&path)?;
            println!("retired key {id}; keyring saved to {}", path.display());
            Ok(())
        }
    }
}

/// Fails while a running server seals with key `id`.
fn refuse_if_primary_somewhere(database_url: &str, id: u32) -> anyhow::Result<()> {
    let using: Vec<String> = admin::live_keyring_instances(database_url)?
        .into_iter()
        .filter(|i| i.primary_key_id == id)
        .map(|i| i.instance)
        .collect();
    anyhow::ensure!(
        using.is_empty(),
        "key {id} is still the primary key of running server(s) {}: they reload the keyring \
         file within seconds of a change (or at once on SIGHUP); retire it once they have",
        using.join(", ")
    );
    Ok(())
}

/// Waits (up to a minute) until every running server seals with key `id`.
fn wait_for_servers(database_url: &str, id: u32) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let behind: Vec<String> = admin::live_keyring_instances(database_url)?
            .into_iter()
            .filter(|i| i.primary_key_id != id)
            .map(|i| format!("{} (key {})", i.instance, i.primary_key_id))
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "not retiring the old keys: running server(s) {} still seal with them after a \
             minute; check that they read the same keyring file, then run `xrole keys retire`",
            behind.join(", ")
        );
        println!(
            "waiting for {} running server(s) to reload the keyring",
            behind.len()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn reseal(database_url: &str, keyring: &Keyring) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let total = admin::reseal_all(database_url, keyring, |p| {
        let _ = writeln!(out, "{}: {}/{} rows checked", p.column, p.done, p.total);
    })?;
    println!(
        "re-sealed {total} value(s) under key {}",
        keyring.primary_key_id()
    );
    Ok(())
}
