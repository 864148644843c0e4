//! The `kurir-loadtest` command line: `send`, `sink`, `scenario`.
//!
//! Reports go to stdout (text, or JSON with `--json`); progress bars and periodic sink
//! stats go to stderr. Exit codes: 0 done (a scenario: its goal met); 1 a failed run or a
//! missed goal; 2 a bad command line or scenario file.

#![allow(clippy::print_stdout)] // printing reports is what a CLI is for

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::message::{FixedRecipient, RecipientClass, RecipientPlan, SizeMix, new_run_id};
use crate::scenario::{self, DEFAULT_FROM, Overrides, Scenario};
use crate::send::{self, GrpcMode, GrpcTarget, SendConfig, SmtpTarget, Transport};
use crate::sink::{Faults, RateFault, RcptRule, Sink, SinkConfig, SinkTls};

/// Longer than any sink runs.
const FOREVER: Duration = Duration::from_secs(365 * 86_400);

/// kurir-loadtest: SMTP/gRPC load generator and SMTP sink with fault injection.
#[derive(Debug, Parser)]
#[command(name = "kurir-loadtest", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send load over SMTP or gRPC and report throughput, accept latency and errors.
    Send(SendArgs),
    /// Run an SMTP sink that counts what it receives, with fault injection.
    Sink(SinkArgs),
    /// Run a scenario file (loadtest/scenarios/*.toml) and check its goal.
    Scenario(ScenarioArgs),
}

/// `kurir-loadtest send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Send over SMTP to this server (ip:port).
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "grpc",
        required_unless_present = "grpc"
    )]
    pub smtp: Option<SocketAddr>,
    /// Send over gRPC to this URL (http://HOST:PORT).
    #[arg(long, value_name = "URL")]
    pub grpc: Option<String>,
    /// gRPC: one SubmitStream per connection instead of unary calls.
    #[arg(long, requires = "grpc")]
    pub stream: bool,
    /// gRPC stream: requests in flight per stream.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// gRPC API key.
    #[arg(long, env = "KURIR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// SMTP: STARTTLS (any certificate) before sending.
    #[arg(long)]
    pub starttls: bool,
    /// SMTP: AUTH PLAIN as USER:PASSWORD (after STARTTLS).
    #[arg(long, value_name = "USER:PASSWORD", requires = "starttls")]
    pub auth: Option<String>,
    /// SMTP: the EHLO name.
    #[arg(long, default_value = "loadtest.test")]
    pub helo: String,
    /// SMTP: reconnect after this many messages.
    #[arg(long, default_value_t = 100)]
    pub messages_per_connection: u32,
    /// Connections (gRPC stream: streams, each on its own connection).
    #[arg(long, short, default_value_t = 4)]
    pub connections: usize,
    /// Messages per second over all connections; without it, as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop after this many messages.
    #[arg(long, short = 'n', required_unless_present = "duration")]
    pub messages: Option<u64>,
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, short, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Message sizes: 2k, 100k, or a weighted mix such as 2k:90,100k:10.
    #[arg(long, default_value = "2k")]
    pub size: SizeMix,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    pub rcpts: u32,
    /// Recipient domains.
    #[arg(long, default_value_t = 10)]
    pub domains: u32,
    /// Recipient domain names; {i} is the domain's number.
    #[arg(long, default_value = "d{i}.load.test")]
    pub domain_pattern: String,
    /// A share of recipients with a local-part prefix, PREFIX:PERCENT (e.g. bounce-:5).
    #[arg(long = "class", value_name = "PREFIX:PERCENT")]
    pub classes: Vec<RecipientClass>,
    /// A share of recipients replaced by one address, ADDRESS:PERCENT.
    #[arg(long = "fixed", value_name = "ADDRESS:PERCENT")]
    pub fixed: Vec<FixedRecipient>,
    /// The envelope sender and From.
    #[arg(long, default_value = DEFAULT_FROM)]
    pub from: String,
    /// The run id in the X-Kurir-Loadtest header (default: time and random bits).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Per-command (SMTP) or per-call (gRPC) timeout.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Report and progress options.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `kurir-loadtest sink`.
#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:2526")]
    pub listen: SocketAddr,
    /// The name in the banner and EHLO reply.
    #[arg(long, default_value = "sink.load.test")]
    pub hostname: String,
    /// Offer STARTTLS with a self-signed certificate.
    #[arg(long, conflicts_with = "cert")]
    pub tls_self_signed: bool,
    /// Offer STARTTLS with this PEM certificate chain (with --key).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The PEM private key of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Refuse a share of recipients: CODE[:ENHANCED]:RATE, e.g. 550:5.1.1:0.05.
    #[arg(long, value_name = "CODE[:ENHANCED]:RATE")]
    pub reject: Vec<RateFault>,
    /// Defer a share of recipients: CODE[:ENHANCED]:RATE, e.g. 451:0.02.
    #[arg(long, value_name = "CODE[:ENHANCED]:RATE")]
    pub defer: Vec<RateFault>,
    /// Refuse matching recipients: PATTERN=CODE[:ENHANCED][:once], e.g. 'bounce*'=550.
    #[arg(long, value_name = "PATTERN=CODE")]
    pub reject_rcpt: Vec<RcptRule>,
    /// Wait this long before the reply after each message's data.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Probability per message of hanging up instead of replying after the data.
    #[arg(long, default_value_t = 0.0)]
    pub disconnect: f64,
    /// Print a stats line to stderr this often (0s: never).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub stats_interval: Duration,
    /// Stop after this long (default: at Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop once this many messages were accepted.
    #[arg(long, value_name = "N")]
    pub until_messages: Option<u64>,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kurir-loadtest scenario`.
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// The scenario file.
    pub file: PathBuf,
    /// Send here instead of the file's target (`sink`: straight to the scenario's sink).
    #[arg(long)]
    pub target: Option<String>,
    /// Send this many messages instead of the file's count or duration.
    #[arg(long, short = 'n')]
    pub messages: Option<u64>,
    /// gRPC API key (else the variable the file names, KURIR_API_KEY by default).
    #[arg(long)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Parses the command line and runs it.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Send(args) => send_command(args).await,
            Command::Sink(args) => sink_command(args).await,
            Command::Scenario(args) => scenario_command(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// A progress bar on stderr (hidden with `--no-progress` or when stderr is no terminal).
pub fn progress_bar(hidden: bool, label: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix:>10} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} {rate} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key(
        "rate",
        |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", state.per_sec());
        },
    );
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    bar
}

fn print_report<T: Serialize + std::fmt::Display>(report: &T, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

async fn send_command(args: SendArgs) -> anyhow::Result<ExitCode> {
    let config = send_config(&args)?;
    let bar = progress_bar(args.output.no_progress, config.transport.name());
    let report = send::run(&config, bar).await?;
    print_report(&report, args.output.json)?;
    Ok(ExitCode::SUCCESS)
}

fn send_config(args: &SendArgs) -> anyhow::Result<SendConfig> {
    let transport = match (&args.smtp, &args.grpc) {
        (Some(addr), _) => Transport::Smtp(SmtpTarget {
            addr: *addr,
            helo: args.helo.clone(),
            starttls: args.starttls,
            auth: args.auth.as_deref().map(split_credentials).transpose()?,
            timeout: args.timeout,
        }),
        (None, Some(url)) => Transport::Grpc(GrpcTarget {
            url: url.clone(),
            api_key: args.api_key.clone(),
            mode: if args.stream {
                GrpcMode::Stream
            } else {
                GrpcMode::Unary
            },
            window: args.window,
            timeout: args.timeout,
        }),
        (None, None) => anyhow::bail!("give --smtp ADDR or --grpc URL"),
    };
    Ok(SendConfig {
        transport,
        connections: args.connections,
        rate: args.rate.filter(|r| *r > 0.0),
        messages: args.messages,
        duration: args.duration,
        sizes: args.size.clone(),
        recipients: RecipientPlan {
            per_message: args.rcpts,
            domains: args.domains,
            domain_pattern: args.domain_pattern.clone(),
            classes: args.classes.clone(),
            fixed: args.fixed.clone(),
        },
        from: args.from.clone(),
        run_id: args.run_id.clone().unwrap_or_else(new_run_id),
        messages_per_connection: args.messages_per_connection,
    })
}

fn split_credentials(text: &str) -> anyhow::Result<(String, String)> {
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("--auth: expected USER:PASSWORD"))?;
    Ok((user.to_owned(), password.to_owned()))
}

async fn sink_command(args: SinkArgs) -> anyhow::Result<ExitCode> {
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(SinkTls::Files {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => args.tls_self_signed.then_some(SinkTls::SelfSigned),
    };
    let config = SinkConfig {
        listen: args.listen,
        hostname: args.hostname.clone(),
        tls,
        faults: Faults {
            reject: args.reject.clone(),
            defer: args.defer.clone(),
            rcpt: args.reject_rcpt.clone(),
            latency: args.latency,
            disconnect: args.disconnect,
        },
        ..SinkConfig::default()
    };
    let sink = Sink::start(config).await?;
    eprintln!("sink listening on {}", sink.addr());
    wait_sink(&sink, &args).await;
    let report = sink.stop().await;
    print_report(&report, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Until Ctrl-C, the duration or the message count; a stats line every interval.
async fn wait_sink(sink: &Sink, args: &SinkArgs) {
    let stop_after = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let until = async {
        match args.until_messages {
            Some(n) => {
                sink.wait_for(FOREVER, |r| r.messages >= n).await;
            }
            None => std::future::pending().await,
        }
    };
    let stats = async {
        if args.stats_interval.is_zero() {
            return std::future::pending().await;
        }
        let mut interval = tokio::time::interval(args.stats_interval);
        interval.tick().await;
        loop {
            interval.tick().await;
            eprintln!("{}", sink.report().line());
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = stop_after => {}
        () = until => {}
        () = stats => {}
    }
}

async fn scenario_command(args: ScenarioArgs) -> anyhow::Result<ExitCode> {
    let scenario = Scenario::load(&args.file)?;
    let overrides = Overrides {
        target: args.target.clone(),
        messages: args.messages,
        api_key: args.api_key.clone(),
    };
    let bar = progress_bar(args.output.no_progress, &scenario.name);
    let report = scenario::run(&scenario, &overrides, bar).await?;
    print_report(&report, args.output.json)?;
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
