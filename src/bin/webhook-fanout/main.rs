//! The `webhook-fanout` binary: parses the command line, loads the settings,
//! starts telemetry, and calls into the library. Its subcommands
//! (`publish`, `dead-letters`, `webhooks`) and signal handling sit beside
//! it in this folder, apart from the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use webhook_fanout::config::Settings;

/// mimalloc instead of glibc's malloc: the delivery path allocates and frees
/// small buffers across threads (lapin's I/O thread, the runtime's workers),
/// where glibc spent about a sixth of the service's CPU. Built without its
/// transparent-huge-page advice, which on a `madvise` THP system grew the
/// resident set by some 20 MiB for nothing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod dead_letters;
mod publish;
mod signal;
mod webhooks;

#[derive(Parser)]
#[command(
    name = "webhook-fanout",
    version,
    about = "Fans banking events out to signed webhooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (roles from WF_ROLES).
    Serve,
    /// Publish one event envelope to {ns}.events, with publisher confirms.
    Publish(publish::PublishArgs),
    /// Inspect, replay and discard dead letters.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(dead_letters::DeadLetterCommand),
    /// Back up and restore webhooks (JSON lines, secrets still sealed).
    #[command(subcommand)]
    Webhooks(webhooks::WebhookCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("webhook-fanout: {e}");
            return ExitCode::from(2);
        }
    };
    // Held to the end of main: dropping it flushes the log lines still queued.
    let _log_writer = webhook_fanout::logging::init(settings.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve(settings).await,
            Command::Publish(args) => publish::publish(&settings, args).await,
            Command::DeadLetters(command) => dead_letters::run(&settings, command).await,
            Command::Webhooks(command) => webhooks::run(&settings, command).await,
        }
    });
    // Tasks still running (a request that never answers) end here: the
    // shutdown deadline has passed, so nothing may wait on them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webhook-fanout: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "invalid WF_HTTP_ADDR: cannot listen on {}: {e}",
                settings.http_addr
            )
        })?;
    // The bound address, not the configured one: with port 0 (tests, side
    // cars) the kernel picks it. Logged at warn level so the one line that
    // says where the service listens survives RUST_LOG=warn.
    let addr = listener.local_addr().unwrap_or(settings.http_addr);
    tracing::warn!(target: "webhook_fanout::listening", %addr, namespace = %settings.namespace, "webhook-fanout listening on http://{addr}");
    let shutdown = CancellationToken::new();
    tokio::spawn(signal::on_signal(shutdown.clone()));
    webhook_fanout::run(settings, listener, shutdown).await
}
