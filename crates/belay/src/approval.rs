//! `belay pending`, `belay approve ID` and `belay deny ID`: the humans' side of held actions.
//! The human proves who they are with their token, from `BELAY_HUMAN_TOKEN` or a file; an
//! agent's token is refused.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use belay_app::{approval_json, approvers_text, App, CHANNEL_CLI};
use belay_core::Secret;
use belay_store::{Approval, ApprovalStatus, Human};
use clap::Args;

use crate::{open, time};

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// A file holding the human's token (otherwise `BELAY_HUMAN_TOKEN`).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PendingArgs {
    #[command(flatten)]
    token: TokenArgs,
    /// Show requests in every status, not only pending ones.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The approval request's id, as the agent's error and `belay pending` show it.
    id: u64,
    /// A note kept with the approval.
    #[arg(long)]
    comment: Option<String>,
    #[command(flatten)]
    token: TokenArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct DenyArgs {
    id: u64,
    /// Why: the agent and its owner read it.
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    token: TokenArgs,
    #[arg(long)]
    json: bool,
}

fn token(args: &TokenArgs) -> anyhow::Result<Secret> {
    let text = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file `{}`", path.display()))?,
        None => std::env::var("BELAY_HUMAN_TOKEN").map_err(|_| {
            anyhow::anyhow!(
                "a human's token is needed: set BELAY_HUMAN_TOKEN or pass --token-file PATH"
            )
        })?,
    };
    let text = text.trim();
    if text.is_empty() {
        bail!("the human token is empty");
    }
    Ok(Secret::new(text))
}

fn human(app: &App, args: &TokenArgs) -> anyhow::Result<Human> {
    Ok(app.authenticate_human(&token(args)?, CHANNEL_CLI)?)
}

pub fn pending(config: &Path, args: PendingArgs) -> anyhow::Result<ExitCode> {
    let app = open(config)?;
    human(&app, &args.token)?;
    let statuses = if args.all {
        Vec::new()
    } else {
        vec![ApprovalStatus::Pending, ApprovalStatus::Approved]
    };
    let found = app.approvals(&statuses, 10_000)?;
    if args.json {
        let list: Vec<_> = found.iter().map(approval_json).collect();
        println!("{}", serde_json::json!({ "approvals": list }));
    } else if found.is_empty() {
        println!("nothing waits for approval");
    } else {
        for a in &found {
            print_approval(a);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_approval(a: &Approval) {
    let r = &a.request;
    println!(
        "request {}  {}  agent `{}` in `{}`  ({})",
        a.id, a.status, r.agent, r.environment, r.class
    );
    for line in r.action.lines() {
        println!("    {line}");
    }
    if let Some(p) = &r.parameters {
        println!("    -- parameters: {p}");
    }
    println!("  why:       {}", r.reason);
    println!("  policies:  {}", r.policies.join(", "));
    println!(
        "  blast:     {}",
        r.blast_radius
            .as_ref()
            .map_or_else(|| "not computed".to_owned(), |v| v.to_string())
    );
    println!(
        "  needs:     {} ({} so far)",
        approvers_text(a),
        a.approvals()
    );
    for v in &a.votes {
        println!(
            "  {}: {} at {} via {}{}",
            if v.approve { "approved" } else { "denied" },
            v.human,
            time(Some(v.time_us)),
            v.channel,
            v.comment
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
    }
    match a.status {
        ApprovalStatus::Pending => println!(
            "  expires:   {}\n  approve:   belay approve {}    deny: belay deny {} --reason TEXT",
            time(Some(r.expires_us)),
            a.id,
            a.id
        ),
        ApprovalStatus::Approved => println!(
            "  run by:    {} (the agent re-sends the identical statement; it runs once)",
            time(a.run_by_us)
        ),
        _ => {}
    }
    println!();
}

pub fn approve(config: &Path, args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let app = open(config)?;
    let human = human(&app, &args.token)?;
    let done = app.approve(&human, args.id, args.comment.as_deref(), CHANNEL_CLI)?;
    report(&done, args.json);
    Ok(ExitCode::SUCCESS)
}

pub fn deny(config: &Path, args: DenyArgs) -> anyhow::Result<ExitCode> {
    let app = open(config)?;
    let human = human(&app, &args.token)?;
    let done = app.deny(&human, args.id, &args.reason, CHANNEL_CLI)?;
    report(&done, args.json);
    Ok(ExitCode::SUCCESS)
}

fn report(a: &Approval, json: bool) {
    if json {
        println!("{}", approval_json(a));
        return;
    }
    match a.status {
        ApprovalStatus::Approved => println!(
            "request {} approved: agent `{}` may run it once, until {}",
            a.id,
            a.request.agent,
            time(a.run_by_us)
        ),
        ApprovalStatus::Denied => println!("request {} denied", a.id),
        _ => println!(
            "request {}: {} of {} approvals; still pending",
            a.id,
            a.approvals(),
            a.request.required
        ),
    }
}
