//! The `belay` command line. `main` maps errors to exit codes; each subcommand lives in its
//! own module.

mod sql;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// belay: a safety line between AI agents and production systems.
#[derive(Debug, Parser)]
#[command(name = "belay", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    match cli.command {
        Command::Sql(cmd) => sql::run(cmd),
    }
}
