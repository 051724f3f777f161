//! `belay audit verify | tail | export`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use belay_audit::Event;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::time;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and every signed checkpoint; exit 0 only when intact.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Show the last events; with -f, keep following new ones.
    Tail(TailArgs),
    /// Write events as JSON lines, for SIEMs.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// How many of the last events to show.
    #[arg(short = 'n', long, default_value_t = 20)]
    lines: usize,
    /// Keep following new events.
    #[arg(short = 'f', long)]
    follow: bool,
    /// One JSON object a line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only events at or after this time (RFC 3339, such as 2026-11-01T00:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// The output format; `jsonl` is the only one.
    #[arg(long, default_value = "jsonl")]
    format: String,
}

pub fn run(config: &Path, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let app = crate::open(config)?;
    let code = match cmd {
        AuditCommand::Verify { json } => {
            let report = belay_app::verify_audit(&app)?;
            if json {
                println!(
                    "{}",
                    json!({"intact": report.broken.is_none(), "events": report.events,
                           "checkpoints": report.checkpoints, "broken": report.broken})
                );
            } else if let Some(problem) = &report.broken {
                println!("audit log BROKEN: {problem}");
                println!("{} events verified before the break", report.events);
            } else {
                println!(
                    "audit log intact: {} events, {} signed checkpoints verified",
                    report.events, report.checkpoints
                );
            }
            if report.broken.is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        AuditCommand::Tail(a) => {
            let head = app.store().head_seq()?;
            let mut from = head.saturating_sub(a.lines as u64) + 1;
            loop {
                let events = app.store().events(from, 1000)?;
                for e in &events {
                    print_event(e, a.json);
                }
                if let Some(last) = events.last() {
                    from = last.seq + 1;
                }
                if !a.follow {
                    break;
                }
                if events.is_empty() {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }
            ExitCode::SUCCESS
        }
        AuditCommand::Export(a) => {
            if a.format != "jsonl" {
                bail!("--format `{}` is not supported; use `jsonl`", a.format);
            }
            let since_us = match &a.since {
                None => i64::MIN,
                Some(t) => {
                    let at = humantime::parse_rfc3339_weak(t)
                        .with_context(|| format!("--since `{t}` is not an RFC 3339 time"))?;
                    let d = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
                }
            };
            let mut from = 1;
            loop {
                let events = app.store().events(from, 10_000)?;
                let Some(last) = events.last() else { break };
                from = last.seq + 1;
                for e in events.iter().filter(|e| e.draft.time_us >= since_us) {
                    println!("{}", serde_json::to_string(e)?);
                }
            }
            ExitCode::SUCCESS
        }
    };
    app.close()?;
    Ok(code)
}

fn print_event(e: &Event, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(e) {
            println!("{line}");
        }
        return;
    }
    let d = &e.draft;
    let mut parts = vec![
        format!("#{}", e.seq),
        time(Some(d.time_us)),
        d.actor.clone(),
        d.kind.clone(),
    ];
    if let Some(env) = &d.environment {
        parts.push(format!("env={env}"));
    }
    if let Some(c) = &d.class {
        parts.push(format!("class={c}"));
    }
    if let Some(v) = &d.verdict {
        parts.push(format!("verdict={v}"));
    }
    if let Some(o) = &d.outcome {
        parts.push(format!("outcome={o}"));
    }
    if let Some(r) = d.reasons.first() {
        parts.push(format!("— {r}"));
    }
    println!("{}", parts.join(" "));
}
