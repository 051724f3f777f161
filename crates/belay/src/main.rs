//! The `belay` command line. `main` maps errors to exit codes (0 success, 1 failure or a
//! check that found a problem, 2 usage); each group of subcommands lives in its own module.

mod approval;
mod audit;
mod identity;
mod policy;
mod quickstart;
mod serve;
mod setup;
mod sql;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use belay_app::App;
use belay_config::{Config, ProcessEnv};
use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: an audit event is made on a session's thread and
/// freed on the audit writer's, which glibc's allocator pays for in arena locks and
/// consolidation (measured in docs/BENCHMARKS.md, "The write path's CPU").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// belay: a safety line between AI agents and production systems.
#[derive(Debug, Parser)]
#[command(name = "belay", version, about, propagate_version = true)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "BELAY_CONFIG", default_value = belay_config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a scratch PostgreSQL with demo data, a demo agent and the gateway, and print
    /// what to try.
    Quickstart(quickstart::QuickstartArgs),
    /// Run the PostgreSQL gateway.
    Serve(serve::ServeArgs),
    /// Write a commented configuration, the default policy and its tests into DIR.
    Init(setup::InitArgs),
    /// Check the configuration.
    #[command(subcommand)]
    Config(setup::ConfigCommand),
    /// Manage humans: owners of agents and approvers of held actions.
    #[command(subcommand)]
    Human(identity::HumanCommand),
    /// Manage agents: their grants and credentials.
    #[command(subcommand)]
    Agent(identity::AgentCommand),
    /// Explain, test and compare policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// List actions waiting for a human's approval (a human's token is needed).
    Pending(approval::PendingArgs),
    /// Approve a held action; with enough approvals the agent may run it once.
    Approve(approval::ApproveArgs),
    /// Deny a held action, with a reason.
    Deny(approval::DenyArgs),
    /// Verify, follow and export the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Work with SQL the way the gateway sees it.
    #[command(subcommand)]
    Sql(sql::SqlCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout with success; usage errors exit 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match try_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("belay: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn try_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config;
    match cli.command {
        Command::Quickstart(args) => quickstart::quickstart(args),
        Command::Serve(args) => serve::serve(&config, args),
        Command::Init(args) => setup::init(args),
        Command::Config(cmd) => setup::config(&config, cmd),
        Command::Human(cmd) => identity::human(&config, cmd),
        Command::Agent(cmd) => identity::agent(&config, cmd),
        Command::Policy(cmd) => policy::run(&config, cmd),
        Command::Pending(args) => approval::pending(&config, args),
        Command::Approve(args) => approval::approve(&config, args),
        Command::Deny(args) => approval::deny(&config, args),
        Command::Audit(cmd) => audit::run(&config, cmd),
        Command::Sql(cmd) => sql::run(cmd),
    }
}

/// Loads the configuration and opens everything it names.
pub(crate) fn open(config: &std::path::Path) -> anyhow::Result<App> {
    let config = Config::load(config, &ProcessEnv).context("belay needs a valid configuration (pass --config PATH or set BELAY_CONFIG; `belay init DIR` writes one)")?;
    Ok(App::open(config)?)
}

/// Who runs this command, for audit events: the operating-system user.
pub(crate) fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("operator:{user}")
}

/// A Unix-microsecond time as RFC 3339, or `-`.
pub(crate) fn time(us: Option<i64>) -> String {
    us.filter(|us| *us >= 0)
        .map_or_else(|| "-".to_owned(), belay_app::rfc3339)
}
