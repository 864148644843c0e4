//! The command line: `kurir serve`, `kurir demo`, `kurir config check|example`,
//! `kurir admin …`.
//!
//! Exit codes: 0 success; 1 a runtime failure (including a drain that ran out of grace
//! period, a refused gRPC call or an unreachable node); 2 a bad command line or a bad
//! configuration (including a missing API key or an unreadable input file).

#![allow(clippy::print_stdout)] // printing results is what a CLI is for

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::EXAMPLE_CONFIG;
use crate::admin::client::ApiKey;
use crate::config::Config;
use crate::serve::{self, Role, RoleSet};

/// Exit code for a bad configuration (clap uses the same for a bad command line).
pub const EXIT_CONFIG: u8 = 2;

/// kurir: an outbound mail transfer agent that runs as a cluster.
#[derive(Debug, Parser)]
#[command(name = "kurir", version)]
pub struct Cli {
    #[command(subcommand)]
    /// What to do.
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: the SMTP submission server and the delivery role on the configured
    /// queue and state (embedded by default), the /metrics, /healthz, /readyz endpoint,
    /// and a bounded drain on SIGTERM/SIGINT. MX routing is off until [deliver.dns] is
    /// configured: without it only [[deliver.routes]] domains are delivered.
    Serve(ServeArgs),
    /// A self-contained demo: an all-in-one node (embedded storage in a temp dir, loopback
    /// ports), an SMTP sink that refuses and greylists some recipients, a few thousand
    /// messages over SMTP and gRPC, and a summary of what became of every recipient.
    /// Exits 0 when the numbers add up.
    Demo(DemoArgs),
    /// Check or print the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Operator commands: over a running node's gRPC API, except `init-topics`, which
    /// works on the configured backends directly.
    Admin(AdminArgs),
}

/// `kurir admin …`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Where the gRPC API is and how to call it.
    #[command(flatten)]
    pub api: ApiArgs,
    /// The command.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// How `kurir admin` reaches a node's gRPC API.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The node's gRPC API: http://HOST:PORT, or https://HOST:PORT with --ca-file.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "KURIR_GRPC_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// The API key (`[[grpc.api_keys]]`). Prefer the environment variable: arguments show
    /// in the process list.
    #[arg(
        long,
        global = true,
        value_name = "KEY",
        env = "KURIR_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<ApiKey>,
    /// PEM CA certificate(s) the server's certificate is checked against, for https.
    #[arg(long, global = true, value_name = "FILE", env = "KURIR_GRPC_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// `kurir admin …` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create the queue's topics that are missing (mail, retry tiers, events) with the
    /// configured partition counts, on the configured backends (no node needed).
    /// Existing topics are left as they are.
    InitTopics {
        /// The TOML configuration file; without one the defaults are used.
        #[arg(long, short, value_name = "FILE", env = "KURIR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The commands over the gRPC API.
    #[command(flatten)]
    Api(ApiCommand),
}

/// `kurir admin` commands over the gRPC API.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Suppression lists: the key's tenant list, or the global one with --global.
    #[command(subcommand)]
    Suppression(SuppressionCommand),
    /// The queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Per-domain delivery controls: pause, resume, bounce.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// A message's history: accepted, attempts, outcomes, oldest first.
    Message {
        /// The message id (as in `queued as <id>`).
        id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The queue's topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
}

/// `kurir admin suppression …`.
#[derive(Debug, Subcommand)]
pub enum SuppressionCommand {
    /// Add (or replace) entries.
    Add {
        /// The addresses.
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// Why they are suppressed.
        #[arg(long, value_enum, default_value = "manual")]
        reason: SuppressionReasonArg,
        /// Who or what adds them (free text).
        #[arg(long, default_value = "kurir-admin")]
        source: String,
        /// On the global list (needs a key with the admin service).
        #[arg(long)]
        global: bool,
    },
    /// Remove entries.
    Remove {
        /// The addresses.
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// From the global list.
        #[arg(long)]
        global: bool,
    },
    /// Whether addresses are suppressed for the key's tenant (its list, then the global one).
    Check {
        /// The addresses.
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the entries (every page).
    List {
        /// The global list.
        #[arg(long)]
        global: bool,
        /// At most this many entries.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Import entries from a file: CSV with a header naming its columns (address, scope,
    /// reason, source, created, expires), or without one `address[,reason[,source]]` per
    /// line; or JSON lines.
    Import {
        /// The file; `-` reads stdin.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Into the global list (a `scope` column in the file decides per line).
        #[arg(long)]
        global: bool,
        /// The file's format.
        #[arg(long, value_enum, default_value_t = FileFormat::Csv)]
        format: FileFormat,
    },
    /// Write every entry to stdout, in the import format (address, reason, source,
    /// created, expires).
    Export {
        /// The global list.
        #[arg(long)]
        global: bool,
        /// The format written.
        #[arg(long, value_enum, default_value_t = FileFormat::Csv)]
        format: FileFormat,
    },
}

/// The format of a suppression file (`kurir_state::bulk`'s layouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// CSV, a header line naming the columns.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// A suppression reason on the command line (files are read by `kurir_state::bulk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SuppressionReasonArg {
    /// Added by an operator or a service.
    Manual,
    /// A permanent delivery failure.
    #[value(alias = "hard-bounce")]
    HardBounce,
    /// Too many soft bounces.
    #[value(alias = "soft-bounces")]
    SoftBounces,
    /// The recipient complained.
    Complaint,
    /// The recipient unsubscribed.
    Unsubscribe,
}

/// `kurir admin queue …`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Lag per partition of the delivery topics; per-site delivery state (when the node
    /// answering runs the delivery role).
    Stats {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// `kurir admin domain …`.
#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Stop delivery attempts to a domain (its mail waits in the retry tiers).
    Pause {
        /// The domain.
        domain: String,
        /// For how long (e.g. 30m, 1h, 2days); without it, until resumed.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Why, for other operators (shown by `domain list`).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a paused domain.
    Resume {
        /// The domain.
        domain: String,
    },
    /// The pauses and bounce orders in force.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Bounce all mail queued for a domain, with a DSN to each sender.
    Bounce {
        /// The domain.
        domain: String,
        /// The DSN's diagnostic text.
        #[arg(long, default_value = "")]
        reason: String,
        /// How long the order stays in force; default `deliver.max_age`.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
}

/// `kurir admin topics …`.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the queue's missing topics through the node (like `admin init-topics`, with
    /// the node's configuration).
    Init,
}

/// `kurir serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The TOML configuration file; without one every key takes its default.
    /// `KURIR__SECTION__KEY` environment variables override single keys.
    #[arg(long, short, value_name = "FILE", env = "KURIR_CONFIG")]
    pub config: Option<PathBuf>,
    /// The roles to run, comma-separated or repeated.
    #[arg(
        long = "role",
        value_enum,
        value_delimiter = ',',
        default_value = "all"
    )]
    pub roles: Vec<Role>,
}

/// `kurir demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Messages in all: two thirds over SMTP, one third over gRPC.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(3..=1_000_000))]
    pub messages: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// `kurir config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate a configuration (file plus KURIR__ overrides); print "ok" or the
    /// error naming the key, and exit 2 on an error.
    Check {
        /// The TOML configuration file; without one the defaults are checked.
        #[arg(long, short, value_name = "FILE", env = "KURIR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a complete, commented example configuration.
    Example,
}

/// Parses the command line and runs it.
pub fn run() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve_command(&args),
        Command::Demo(args) => demo_command(&args),
        Command::Config(ConfigCommand::Check { config }) => match load(config.as_deref()) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Config(ConfigCommand::Example) => {
            print!("{EXAMPLE_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Admin(AdminArgs {
            command: AdminCommand::InitTopics { config },
            ..
        }) => init_topics_command(config.as_deref()),
        Command::Admin(AdminArgs {
            api,
            command: AdminCommand::Api(command),
        }) => api_command(&api, command),
    }
}

/// A `kurir admin` command over the gRPC API; errors are one line on stderr.
fn api_command(api: &ApiArgs, command: ApiCommand) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match runtime.block_on(crate::admin::run(api, command, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        // `kurir admin suppression export | head`: the reader has what it wanted.
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn init_topics_command(path: Option<&Path>) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(crate::admin::init_topics(&config)) {
        Ok(topics) => {
            for topic in topics {
                println!("{} ({} partitions)", topic.name, topic.partitions);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads and validates the configuration, or reports why not on stderr (tracing is not
/// set up yet: its settings are in the configuration).
fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    Config::load(path, std::env::vars_os()).map_err(|error| {
        eprintln!("{error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn serve_command(args: &ServeArgs) -> ExitCode {
    // Validate everything before a runtime exists or a port is bound.
    let config = match load(args.config.as_deref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let roles = RoleSet::from_roles(&args.roles);
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(serve::run(config, roles)) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "kurir serve failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo_command(args: &DemoArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let options = crate::demo::DemoOptions {
        messages: args.messages,
        progress: !args.no_progress && !args.json,
    };
    if !args.json {
        println!(
            "kurir demo: {} messages over SMTP and gRPC through an all-in-one node to a sink",
            args.messages
        );
    }
    let summary = match runtime.block_on(crate::demo::run(&options)) {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{summary}");
    }
    if summary.adds_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("cannot start the tokio runtime: {error}");
            ExitCode::FAILURE
        })
}
