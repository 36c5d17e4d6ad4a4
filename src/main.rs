//! `herald`: args → config → tracing → run until a signal.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use herald::config::{self, Config, LogFormat};

mod receive;

#[derive(Debug, Parser)]
#[command(version, about = "Signed webhooks in, reliable webhooks out.")]
struct Cli {
    /// Config file; default `$HERALD_CONFIG`, else `./config.toml`.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Validate a config file: exit 0, or exit 2 with one line per problem.
    CheckConfig,
    /// Print Standard Webhooks headers for a body read from stdin or --file.
    Sign {
        /// The source's secret, `whsec_<base64>`.
        #[arg(long)]
        secret: String,
        /// The webhook id (`webhook-id`).
        #[arg(long)]
        id: String,
        /// Unix seconds; defaults to now.
        #[arg(long)]
        timestamp: Option<i64>,
        /// Read the body from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print the API port's OpenAPI 3.1 document (as served at `/openapi.json`).
    Openapi,
    /// A demo receiver: print every request and whether its signature verifies.
    Receive {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// The destination's secret, `whsec_<base64>`; by default that of the config's
        /// destination whose URL points at --listen.
        #[arg(long)]
        secret: Option<String>,
        /// The status to answer (try 503 to watch retries).
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
}

/// The config file's path: `--config`, else `$HERALD_CONFIG`, else `./config.toml`.
fn config_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HERALD_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("config.toml"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = config_path(cli.config.as_deref());
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&path),
        Command::CheckConfig => match config::load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Sign {
            secret,
            id,
            timestamp,
            file,
        } => sign(&secret, &id, timestamp, file.as_deref()),
        Command::Openapi => {
            print!("{}", herald::http::openapi::to_json());
            ExitCode::SUCCESS
        }
        Command::Receive {
            listen,
            secret,
            status,
        } => {
            // The config only supplies the secret to check against: a missing or broken file
            // leaves signatures unchecked rather than stopping the demo.
            let config = secret.is_none().then(|| config::load(&path).ok()).flatten();
            let receiving = receive::run(listen, secret.as_deref(), status, config.as_ref());
            runtime(false).map_or(ExitCode::FAILURE, |rt| rt.block_on(receiving))
        }
    }
}

fn serve(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_tracing(&config) {
        eprintln!("log.level: {e}");
        return ExitCode::from(2);
    }
    let Some(runtime) = runtime(true) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(herald::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<herald::BadSetting>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A tokio runtime (on all cores, or on this thread); `None`, said on stderr, if it cannot start.
fn runtime(multi_thread: bool) -> Option<tokio::runtime::Runtime> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("could not start the runtime: {e}"))
        .ok()
}

fn init_tracing(config: &Config) -> Result<(), String> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&config.log.level).map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

fn sign(secret: &str, id: &str, timestamp: Option<i64>, file: Option<&Path>) -> ExitCode {
    use herald_actors::verifier::schemes::{decode_whsec, sign_standard};
    let key = match decode_whsec(secret) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("--secret: {e}");
            return ExitCode::from(2);
        }
    };
    let mut body = Vec::new();
    let read = match file {
        Some(path) => std::fs::read(path).map(|b| body = b),
        None => std::io::stdin().read_to_end(&mut body).map(|_| ()),
    };
    if let Err(e) = read {
        eprintln!("reading the body: {e}");
        return ExitCode::FAILURE;
    }
    let timestamp = timestamp.unwrap_or_else(|| {
        i64::try_from(herald_actors::unix_ms(std::time::SystemTime::now()) / 1000).unwrap_or(0)
    });
    println!("webhook-id: {id}");
    println!("webhook-timestamp: {timestamp}");
    println!(
        "webhook-signature: {}",
        sign_standard(&key, id, timestamp, &body)
    );
    ExitCode::SUCCESS
}
