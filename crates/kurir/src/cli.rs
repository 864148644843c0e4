//! The command line: `kurir serve`, `kurir config check|example`, `kurir admin …`.
//!
//! Exit codes: 0 success; 1 a runtime failure (including a drain that ran out of grace
//! period); 2 a bad command line or a bad configuration.

#![allow(clippy::print_stdout)] // printing results is what a CLI is for

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::EXAMPLE_CONFIG;
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
    /// Check or print the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Operator commands against the configured backends.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// `kurir admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create the queue's topics that are missing (mail, retry tiers, events) with the
    /// configured partition counts. Existing topics are left as they are.
    InitTopics {
        /// The TOML configuration file; without one the defaults are used.
        #[arg(long, short, value_name = "FILE", env = "KURIR_CONFIG")]
        config: Option<PathBuf>,
    },
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
        Command::Admin(AdminCommand::InitTopics { config }) => {
            init_topics_command(config.as_deref())
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

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("cannot start the tokio runtime: {error}");
            ExitCode::FAILURE
        })
}
