//! `belay policy explain | test | diff`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use belay_policy::PolicyEngine;
use belay_sql::{Classifier, Limits};
use clap::{Args, Subcommand};
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// What would happen if agent A ran SQL in environment E, and why.
    Explain(ExplainArgs),
    /// Run policy test cases (*.toml in DIR) against the policy.
    Test(TestArgs),
    /// List every (grant, tier, class) whose verdict changes between two policy files.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[arg(long)]
    agent: String,
    #[arg(long = "env")]
    environment: String,
    #[arg(long)]
    sql: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    dir: PathBuf,
    /// Test this policy file instead of the configured one (no configuration needed).
    #[arg(long)]
    policy: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    old: PathBuf,
    new: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Path, cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Explain(a) => explain(config, a),
        PolicyCommand::Test(a) => test(config, a),
        PolicyCommand::Diff(a) => diff(a),
    }
}

fn explain(config: &Path, a: ExplainArgs) -> anyhow::Result<ExitCode> {
    let app = crate::open(config)?;
    let e = app.explain(&a.agent, &a.environment, &a.sql)?;
    let d = &e.decision;
    let held = matches!(d.verdict, belay_core::Verdict::Approve(_));
    let approvers = belay_app::who_approves(&d.hold.approvers);
    if a.json {
        let mut out = json!({
            "class": e.analysis.class,
            "verdict": d.verdict.name(),
            "approvals_required": d.verdict.approvals_required(),
            "reversible": d.reversible,
            "backup_first": d.backup_first,
            "policies": d.policies,
            "reason": d.reason,
        });
        if held {
            out["approval"] = json!({
                "expires_after_s": d.hold.expires.as_secs(),
                "run_within_s": d.hold.run_within.as_secs(),
                "approvers": d.hold.approvers,
            });
        }
        println!("{out}");
    } else {
        println!("agent `{}` in `{}`:", a.agent, a.environment);
        println!("  class:    {} ({})", e.analysis.class, e.analysis.reason());
        let mut verdict = d.verdict.to_string();
        if d.reversible {
            verdict.push_str(", reversible");
        }
        if d.backup_first {
            verdict.push_str(", backup first");
        }
        println!("  verdict:  {verdict}");
        println!("  why:      {}", d.reason);
        if held {
            println!(
                "  approval: from {approvers}; the request expires after {}, an approved action must run within {}",
                humantime::format_duration(d.hold.expires),
                humantime::format_duration(d.hold.run_within)
            );
        }
        if !d.policies.is_empty() {
            println!("  policies: {}", d.policies.join(", "));
        }
    }
    app.close()?;
    Ok(ExitCode::SUCCESS)
}

fn load_policy(path: &Path) -> anyhow::Result<PolicyEngine> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy `{}`", path.display()))?;
    PolicyEngine::new(&text).with_context(|| format!("`{}`", path.display()))
}

fn test(config: &Path, a: TestArgs) -> anyhow::Result<ExitCode> {
    let (policy, classifier) = match &a.policy {
        Some(path) => (load_policy(path)?, Classifier::new(Limits::default(), 1000)),
        None => {
            let c = belay_config::Config::load(config, &belay_config::ProcessEnv)?;
            let limits = Limits {
                max_input_bytes: c.sql.max_input_bytes,
                max_statements: c.sql.max_statements,
                ..Limits::default()
            };
            (load_policy(&c.policy)?, Classifier::new(limits, 1000))
        }
    };
    let results = belay_app::run_cases(&policy, &classifier, &a.dir)?;
    let failed = results.iter().filter(|r| !r.passed()).count();
    if a.json {
        let list: Vec<_> = results
            .iter()
            .map(|r| json!({"file": r.file, "name": r.name, "passed": r.passed(), "failures": r.failures}))
            .collect();
        println!(
            "{}",
            json!({"passed": results.len() - failed, "failed": failed, "cases": list})
        );
    } else {
        for r in &results {
            let mark = if r.passed() { "ok  " } else { "FAIL" };
            println!(
                "{mark} {}: {}",
                r.file
                    .file_name()
                    .map(|f| f.to_string_lossy())
                    .unwrap_or_default(),
                r.name
            );
            for f in &r.failures {
                println!("       {f}");
            }
        }
        println!("{} passed, {failed} failed", results.len() - failed);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn diff(a: DiffArgs) -> anyhow::Result<ExitCode> {
    let old = load_policy(&a.old)?;
    let new = load_policy(&a.new)?;
    let changes = belay_policy::diff(&old, &new);
    let grant = |g: Option<belay_core::Class>| g.map_or("none", |c| c.as_str());
    let show = |d: &belay_core::Decision| {
        let mut s = d.verdict.to_string();
        if d.reversible {
            s.push_str("+reversible");
        }
        if d.backup_first {
            s.push_str("+backup_first");
        }
        s
    };
    if a.json {
        let list: Vec<_> = changes
            .iter()
            .map(|c| json!({
                "grant": grant(c.grant), "tier": if c.production { "production" } else { "non-production" },
                "class": c.class, "old": show(&c.old), "new": show(&c.new), "widens": c.widens(),
            }))
            .collect();
        println!("{}", json!(list));
    } else if changes.is_empty() {
        println!("no verdict changes");
    } else {
        println!(
            "{:<12} {:<15} {:<12} {:<36} {:<36}",
            "GRANT", "TIER", "CLASS", "OLD", "NEW"
        );
        for c in &changes {
            let tier = if c.production {
                "production"
            } else {
                "non-production"
            };
            let mark = if c.widens() { "  <- widens" } else { "" };
            println!(
                "{:<12} {:<15} {:<12} {:<36} {:<36}{mark}",
                grant(c.grant),
                tier,
                c.class,
                show(&c.old),
                show(&c.new)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
