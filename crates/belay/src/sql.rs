//! `belay sql classify`: what the gateway would make of a SQL input, for people and scripts.

use std::fmt::Write as _;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::Context;
use belay_sql::{Analysis, Limits};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum SqlCommand {
    /// Classify SQL: each statement's class, kind, relations and flags.
    ///
    /// Exits 0 whenever the input was classified, even as `unknown`; 2 on usage errors.
    Classify(ClassifyArgs),
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// The SQL to classify; read from standard input when absent.
    #[arg(long, value_name = "TEXT")]
    sql: Option<String>,
    /// Print exactly one JSON object: {"class", "statements": [...]}.
    #[arg(long)]
    json: bool,
    /// Inputs longer than this many bytes are classified `unknown`.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_input_bytes)]
    max_input_bytes: usize,
}

pub fn run(cmd: SqlCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SqlCommand::Classify(args) => classify(args),
    }
}

fn classify(args: ClassifyArgs) -> anyhow::Result<ExitCode> {
    let sql = match args.sql {
        Some(sql) => sql,
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!(
                    "belay: reading SQL from standard input (end with Ctrl-D), or pass --sql TEXT"
                );
            }
            let mut bytes = Vec::new();
            stdin
                .lock()
                .take(args.max_input_bytes as u64 + 1)
                .read_to_end(&mut bytes)
                .context("cannot read SQL from standard input")?;
            match String::from_utf8(bytes) {
                Ok(sql) => sql,
                Err(_) => {
                    eprintln!("belay: error: standard input is not valid UTF-8 text");
                    return Ok(ExitCode::from(2));
                }
            }
        }
    };
    let limits = Limits {
        max_input_bytes: args.max_input_bytes,
        ..Limits::default()
    };
    let analysis = belay_sql::analyze(&sql, &limits);
    if args.json {
        println!("{}", serde_json::to_string(&analysis)?);
    } else {
        print!("{}", summary(&analysis));
    }
    Ok(ExitCode::SUCCESS)
}

/// The readable form: the input's class, then one block per statement.
fn summary(analysis: &Analysis) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "class: {}", analysis.class);
    if analysis.statements.is_empty() {
        let _ = writeln!(out, "the input holds no statement");
    }
    for (i, s) in analysis.statements.iter().enumerate() {
        let _ = writeln!(out, "\n{}. {} — {}", i + 1, s.kind, s.class);
        let _ = writeln!(out, "   why: {}", s.reason);
        if !s.relations.is_empty() {
            let rels: Vec<String> = s
                .relations
                .iter()
                .map(|r| match r.object {
                    belay_sql::ObjectKind::Relation => format!("{} ({})", r.name, r.access),
                    other => format!("{other} {} ({})", r.name, r.access),
                })
                .collect();
            let _ = writeln!(out, "   relations: {}", rels.join(", "));
        }
        if !s.flags.is_empty() {
            let flags: Vec<&str> = s.flags.iter().map(|f| f.as_str()).collect();
            let _ = writeln!(out, "   flags: {}", flags.join(", "));
        }
    }
    out
}
