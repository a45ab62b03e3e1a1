//! `webhook-fanout dead-letters list|show|replay|discard`: the operator's
//! dead-letter tools on the command line, readable tables or `--json`.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use webhook_fanout::Settings;
use webhook_fanout::broker::Names;
use webhook_fanout::dead_letter::{DeadLetter, DeadLetters, Filter};
use webhook_fanout::subscription::Store;

/// Filters shared by `list` and `replay --all`.
#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// Only this application's dead letters.
    #[arg(long = "app")]
    application_id: Option<String>,
    /// Only this webhook's.
    #[arg(long = "webhook")]
    webhook_id: Option<String>,
    /// Only this event type.
    #[arg(long = "type")]
    event_type: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            application_id: self.application_id.clone(),
            webhook_id: self.webhook_id.clone(),
            event_type: self.event_type.clone(),
            ..Filter::default()
        }
    }
}

/// The dead-letter subcommands.
#[derive(Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Page size (1-500).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue from a previous page's next cursor.
        #[arg(long)]
        cursor: Option<u64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its attempt history.
    Show {
        /// Dead letter id, e.g. dl_42.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay one dead letter, or all matching the filters with --all.
    Replay {
        /// Dead letter id (omit with --all).
        id: Option<String>,
        /// Replay every dead letter matching the filters.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Discard one dead letter.
    Discard {
        /// Dead letter id.
        id: String,
    },
}

/// Runs one dead-letter subcommand against RabbitMQ and Redis directly.
pub async fn run(settings: &Settings, command: DeadLetterCommand) -> anyhow::Result<()> {
    let store = Store::for_settings(settings).context("invalid WF_REDIS_URL")?;
    let dead = DeadLetters::new(
        &settings.amqp_url.0,
        Names::new(&settings.namespace),
        store,
        settings.dead_letter_retention,
    )
    .with_replay_rate(settings.replay_rate);
    match command {
        DeadLetterCommand::List {
            filter,
            limit,
            cursor,
            json,
        } => list(&dead, &filter, limit, cursor, json).await?,
        DeadLetterCommand::Show { id, json } => {
            let letter = dead.get(&id).await?;
            let view = letter.view(&id);
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print_detail(&view);
            }
        }
        DeadLetterCommand::Replay {
            id: Some(id),
            all: false,
            ..
        } => {
            dead.replay(&id).await?;
            println!("replayed {id}");
        }
        DeadLetterCommand::Replay {
            id: None,
            all: true,
            filter,
        } => {
            let r = dead.replay_matching(&filter.filter()).await?;
            println!(
                "replayed {} dead letter(s); skipped {} whose webhook was deleted",
                r.replayed, r.skipped_webhook_deleted
            );
        }
        DeadLetterCommand::Replay { .. } => bail!("give either a dead letter id or --all"),
        DeadLetterCommand::Discard { id } => {
            dead.discard(&id).await?;
            println!("discarded {id}");
        }
    }
    Ok(())
}

/// `dead-letters list`: one page, as a table or `--json`.
async fn list(
    dead: &DeadLetters,
    filter: &FilterArgs,
    limit: usize,
    cursor: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    if !(1..=500).contains(&limit) {
        bail!("--limit must be from 1 to 500");
    }
    let page = dead.page(&filter.filter(), cursor, limit).await?;
    if json {
        let items: Vec<Value> = page.items.iter().map(|(id, d)| d.view(id)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"items": items, "next_cursor": page.next_cursor})
            )?
        );
    } else {
        print_table(&page.items);
        match page.next_cursor {
            Some(c) => println!("\nmore: --cursor {c}"),
            None if page.items.is_empty() => println!("no dead letters"),
            None => {}
        }
    }
    Ok(())
}

fn print_table(items: &[(String, DeadLetter)]) {
    if items.is_empty() {
        return;
    }
    println!(
        "{:<12} {:<28} {:<20} {:<36} {:>8}  {:<20}  LAST ERROR",
        "ID", "TYPE", "APPLICATION", "WEBHOOK", "ATTEMPTS", "DEAD-LETTERED"
    );
    for (id, d) in items {
        let v = d.view(id);
        let error = v["last_error"]
            .as_str()
            .unwrap_or(d.reason.as_str())
            .to_string();
        println!(
            "{:<12} {:<28} {:<20} {:<36} {:>8}  {:<20}  {}",
            id,
            d.event_type,
            d.application_id,
            d.webhook_id,
            d.history.len(),
            v["dead_lettered_at"].as_str().unwrap_or(""),
            error.chars().take(60).collect::<String>()
        );
    }
}

fn print_detail(v: &Value) {
    for key in [
        "id",
        "event_id",
        "type",
        "application_id",
        "webhook_id",
        "reason",
        "attempts",
        "first_attempt_at",
        "last_attempt_at",
        "last_status",
        "last_error",
        "received_at",
        "dead_lettered_at",
    ] {
        let value = match &v[key] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        println!("{key:<18} {value}");
    }
    println!("\nhistory:");
    for a in v["history"].as_array().into_iter().flatten() {
        let outcome = a["status"].as_u64().map_or_else(
            || a["error"].as_str().unwrap_or("").to_string(),
            |s| format!("HTTP {s}"),
        );
        println!(
            "  {}  {:>6} ms  {}",
            a["at"].as_str().unwrap_or(""),
            a["duration_ms"],
            outcome
        );
    }
    println!(
        "\nbody:\n{}",
        serde_json::to_string_pretty(&v["body"]).unwrap_or_default()
    );
}
