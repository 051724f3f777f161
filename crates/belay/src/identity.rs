//! `belay human ...` and `belay agent ...`. New tokens are printed once and never again.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use belay_core::{Class, Secret};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::{open, operator, time};

#[derive(Debug, Subcommand)]
pub enum HumanCommand {
    /// Add a human and print their token once.
    Add(NameArgs),
    /// List humans.
    List(JsonArg),
    /// Revoke a human's credential for good.
    Revoke(NameArgs),
    /// Replace a human's token; the old one stops working at once.
    Rotate(NameArgs),
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Add an agent with an owner and grants, and print its token once.
    Add(AgentAddArgs),
    /// List agents with grants, owner, creation, last use and expiry.
    List(JsonArg),
    /// Revoke an agent's credential for good.
    Revoke(NameArgs),
    /// Replace an agent's token; the old one stops working at once.
    Rotate(NameArgs),
}

#[derive(Debug, Args)]
pub struct NameArgs {
    name: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct AgentAddArgs {
    name: String,
    /// The human answerable for the agent.
    #[arg(long)]
    owner: String,
    /// ENV=CLASS: the highest class the agent may run in ENV without approval (read, write,
    /// ddl, destructive). Repeat for each environment; none means no access.
    #[arg(long = "grant", value_name = "ENV=CLASS")]
    grants: Vec<String>,
    /// How long the token is valid, such as `30d` or `12h`.
    #[arg(long, value_name = "DURATION")]
    expires: Option<String>,
    #[arg(long)]
    json: bool,
}

fn print_token(kind: &str, name: &str, token: &Secret, json: bool) {
    if json {
        println!("{}", json!({ kind: name, "token": token.expose() }));
    } else {
        println!("{kind} `{name}`: token (shown once; store it now, belay keeps only its hash):");
        println!("{}", token.expose());
    }
}

pub fn human(config: &Path, cmd: HumanCommand) -> anyhow::Result<ExitCode> {
    let app = open(config)?;
    match cmd {
        HumanCommand::Add(a) => {
            let (_, token) = app.add_human(&operator(), &a.name)?;
            print_token("human", &a.name, &token, a.json);
        }
        HumanCommand::List(a) => {
            let humans = app.store().humans()?;
            if a.json {
                let list: Vec<_> = humans
                    .iter()
                    .map(|h| json!({"name": h.name, "created": time(Some(h.created_us)), "last_used": h.last_used_us.map(|t| time(Some(t))), "revoked": h.revoked_us.map(|t| time(Some(t)))}))
                    .collect();
                println!("{}", json!(list));
            } else {
                println!(
                    "{:<20} {:<22} {:<22} STATUS",
                    "NAME", "CREATED", "LAST USED"
                );
                for h in humans {
                    let status = if h.revoked_us.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<20} {:<22} {:<22} {status}",
                        h.name,
                        time(Some(h.created_us)),
                        time(h.last_used_us)
                    );
                }
            }
        }
        HumanCommand::Revoke(a) => {
            app.revoke_human(&operator(), &a.name)?;
            println!("human `{}` revoked", a.name);
        }
        HumanCommand::Rotate(a) => {
            let token = app.rotate_human(&operator(), &a.name)?;
            print_token("human", &a.name, &token, a.json);
        }
    }
    app.close()?;
    Ok(ExitCode::SUCCESS)
}

fn parse_grants(grants: &[String]) -> anyhow::Result<BTreeMap<String, Class>> {
    let mut out = BTreeMap::new();
    for g in grants {
        let Some((env, class)) = g.split_once('=') else {
            bail!("grant `{g}` must be ENV=CLASS, such as `staging=write`");
        };
        let class: Class = class.parse().with_context(|| format!("grant `{g}`"))?;
        if out.insert(env.to_owned(), class).is_some() {
            bail!("environment `{env}` is granted twice");
        }
    }
    Ok(out)
}

pub fn agent(config: &Path, cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    let app = open(config)?;
    match cmd {
        AgentCommand::Add(a) => {
            let grants = parse_grants(&a.grants)?;
            let expires_us = match &a.expires {
                None => None,
                Some(text) => {
                    let d = humantime::parse_duration(text).with_context(|| {
                        format!("--expires `{text}` is not a duration such as `30d` or `12h`")
                    })?;
                    let micros = i64::try_from(d.as_micros()).context("--expires is too long")?;
                    Some(belay_app::now_us().saturating_add(micros))
                }
            };
            let (_, token) = app.add_agent(&operator(), &a.name, &a.owner, &grants, expires_us)?;
            print_token("agent", &a.name, &token, a.json);
        }
        AgentCommand::List(a) => {
            let agents = app.store().agents()?;
            if a.json {
                let list: Vec<_> = agents
                    .iter()
                    .map(|g| {
                        json!({
                            "name": g.name, "owner": g.owner, "grants": g.grants,
                            "created": time(Some(g.created_us)),
                            "last_used": g.last_used_us.map(|t| time(Some(t))),
                            "expires": g.expires_us.map(|t| time(Some(t))),
                            "revoked": g.revoked_us.map(|t| time(Some(t))),
                        })
                    })
                    .collect();
                println!("{}", json!(list));
            } else {
                println!(
                    "{:<16} {:<12} {:<36} {:<22} {:<22} {:<22} STATUS",
                    "NAME", "OWNER", "GRANTS", "CREATED", "LAST USED", "EXPIRES"
                );
                let now = belay_app::now_us();
                for g in agents {
                    let grants: Vec<String> =
                        g.grants.iter().map(|(e, c)| format!("{e}={c}")).collect();
                    let status = if g.revoked_us.is_some() {
                        "revoked"
                    } else if g.expires_us.is_some_and(|e| e <= now) {
                        "expired"
                    } else {
                        "active"
                    };
                    let grants = if grants.is_empty() {
                        "(none)".to_owned()
                    } else {
                        grants.join(",")
                    };
                    println!(
                        "{:<16} {:<12} {:<36} {:<22} {:<22} {:<22} {status}",
                        g.name,
                        g.owner,
                        grants,
                        time(Some(g.created_us)),
                        time(g.last_used_us),
                        time(g.expires_us)
                    );
                }
            }
        }
        AgentCommand::Revoke(a) => {
            app.revoke_agent(&operator(), &a.name)?;
            println!("agent `{}` revoked", a.name);
        }
        AgentCommand::Rotate(a) => {
            let token = app.rotate_agent(&operator(), &a.name)?;
            print_token("agent", &a.name, &token, a.json);
        }
    }
    app.close()?;
    Ok(ExitCode::SUCCESS)
}
