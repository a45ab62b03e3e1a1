//! `webhook-fanout webhooks export|import`: a backup of the system of record
//! for webhooks, as JSON lines with their secrets still sealed (encrypted
//! with `WF_SECRET_KEY` when it is set; plaintext otherwise, so keep the file
//! as secret as the key).

use std::io::{BufRead, Write};

use anyhow::Context;
use clap::Subcommand;
use webhook_fanout::Settings;
use webhook_fanout::subscription::{Store, StoreError};

/// Most webhooks an application may have (as the API enforces).
const WEBHOOK_LIMIT: usize = 10;

/// The webhook subcommands.
#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Write every webhook (or one application's) as JSON lines.
    Export {
        /// Only this application's webhooks.
        #[arg(long = "app")]
        application_id: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// Read JSON lines written by `export` and store each webhook (a webhook
    /// with the same id is replaced).
    Import {
        /// Read this file instead of standard input.
        #[arg(long)]
        input: Option<std::path::PathBuf>,
    },
}

/// Runs one webhook subcommand.
pub async fn run(settings: &Settings, command: WebhookCommand) -> anyhow::Result<()> {
    let store = Store::for_settings(settings).context("invalid WF_REDIS_URL")?;
    match command {
        WebhookCommand::Export {
            application_id,
            output,
        } => export(&store, application_id.as_deref(), output).await,
        WebhookCommand::Import { input } => import(&store, input).await,
    }
}

async fn export(
    store: &Store,
    app: Option<&str>,
    output: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let records = store
        .export(app)
        .await
        .context("cannot read webhooks from Redis (WF_REDIS_URL)")?;
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    for record in &records {
        writeln!(out, "{record}")?;
    }
    out.flush()?;
    eprintln!("exported {} webhook(s)", records.len());
    Ok(())
}

async fn import(store: &Store, input: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = match &input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let (mut imported, mut failed) = (0usize, 0usize);
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match store.import(line.trim(), WEBHOOK_LIMIT).await {
            Ok(hook) => {
                imported += 1;
                eprintln!("line {}: {} of {}", n + 1, hook.id, hook.application_id);
            }
            Err(e) => {
                failed += 1;
                eprintln!("line {}: not imported: {}", n + 1, why(&e));
            }
        }
    }
    eprintln!("imported {imported} webhook(s), {failed} refused");
    anyhow::ensure!(failed == 0, "{failed} line(s) not imported");
    Ok(())
}

fn why(e: &StoreError) -> String {
    match e {
        StoreError::LimitReached => format!("the application already has {WEBHOOK_LIMIT} webhooks"),
        StoreError::Corrupt(e) => format!("not a webhook record ({e})"),
        StoreError::Invalid(why) => why.clone(),
        StoreError::Secret(_) => {
            "its secret cannot be opened: set the WF_SECRET_KEY it was sealed with".into()
        }
        other => webhook_fanout::logging::Chain(other).to_string(),
    }
}
