//! `kurir admin …`: operator commands.
//!
//! `admin init-topics` ([`init_topics`]) works on the configured backends directly; every
//! other command is a client of a running node's gRPC API (`proto/kurir/v1/`), with an API
//! key ([`run`]).
//!
//! # Layout
//! - [`client`]: the connection: `--server`, `--api-key`, `--ca-file`, the bearer metadata,
//!   call deadlines, and [`AdminError`] (one line, with its exit status).
//! - `suppression.rs`: `suppression add|remove|check|list|import|export`;
//!   `file.rs`: the import/export file format (`kurir_state::bulk`'s).
//! - `node.rs`: `queue stats`, `domain pause|resume|list|bounce`, `message`, `topics init`.
//! - `output.rs`: aligned tables, times, JSON.

pub mod client;
mod file;
mod node;
mod output;
mod suppression;

use std::io::Write;

use kurir_queue::TopicSpec;

pub use client::AdminError;

use crate::cli::{ApiArgs, ApiCommand};
use crate::config::Config;
use crate::roles;

/// Creates the queue's topics that are missing (mail, every retry tier, events) with the
/// configured partition counts; existing topics are left as they are. Returns the topics.
pub async fn init_topics(config: &Config) -> anyhow::Result<Vec<TopicSpec>> {
    roles::open_queue(config).await?.close().await;
    Ok(config.queue.topic_specs())
}

/// Runs one command against the node `api` names, writing what it prints to `out`.
pub async fn run(
    api: &ApiArgs,
    command: ApiCommand,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    // Input files are read and checked before connecting: a bad file is a usage error
    // whether or not the node is up.
    let import = match &command {
        ApiCommand::Suppression(crate::cli::SuppressionCommand::Import {
            file,
            global,
            format,
        }) => Some(file::read_entries(file, *global, *format)?),
        _ => None,
    };
    let client = client::Api::connect(api).await?;
    let mut out = std::io::BufWriter::new(out);
    match command {
        ApiCommand::Suppression(command) => {
            suppression::run(&client, command, import, &mut out).await?;
        }
        ApiCommand::Queue(crate::cli::QueueCommand::Stats { json }) => {
            node::queue_stats(&client, json, &mut out).await?;
        }
        ApiCommand::Domain(command) => node::domain(&client, command, &mut out).await?,
        ApiCommand::Message { id, json } => node::message(&client, &id, json, &mut out).await?,
        ApiCommand::Topics(crate::cli::TopicsCommand::Init) => {
            node::init_topics(&client, &mut out).await?;
        }
    }
    out.flush().map_err(AdminError::Output)
}
