//! `belay init` and `belay config check`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to write into (created if missing).
    dir: PathBuf,
    /// Print the paths written as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration, compile the policy against the schema, open the store.
    Check {
        #[arg(long)]
        json: bool,
    },
}

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)?;
    let report = belay_app::init(&args.dir, &crate::operator())?;
    if args.json {
        println!(
            "{}",
            json!({
                "config": report.config, "policy": report.policy,
                "policy_tests": report.policy_tests, "state_dir": report.state_dir,
            })
        );
    } else {
        println!("wrote {}", report.config.display());
        println!("wrote {}", report.policy.display());
        println!("wrote {}", report.policy_tests.display());
        println!("created {}", report.state_dir.display());
        let config = std::fs::canonicalize(&report.config).unwrap_or(report.config.clone());
        let config = config.display();
        println!("\nnext:\n  export BELAY_CONFIG={config}\n  belay human add alice\n  belay agent add ci-bot --owner alice --grant staging=destructive --grant production=read");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn config(path: &Path, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { json } => {
            let app = crate::open(path)?;
            let report = crate::serve::runtime()?.block_on(belay_app::roles::inspect(&app.config));
            let refused = !report.refusals().is_empty();
            let envs: Vec<_> = app
                .config
                .environments
                .values()
                .map(|e| json!({"name": e.name, "production": e.production, "databases": e.postgres.keys().collect::<Vec<_>>()}))
                .collect();
            if json {
                println!(
                    "{}",
                    json!({
                        "ok": !refused, "config": app.config.path, "policy": app.config.policy,
                        "policies": app.policy.len(), "state_dir": app.config.state_dir,
                        "environments": envs,
                        "roles": report.findings.iter().map(|f| json!({
                            "environment": f.environment, "upstream": f.upstream, "role": f.role,
                            "risk": f.risk, "what": f.what, "fix": f.fix,
                            "accepted": f.accepted, "refuses": f.refuses(),
                        })).collect::<Vec<_>>(),
                        "unreachable": report.unreachable.iter().map(|(u, r, why)| json!({
                            "upstream": u, "role": r, "error": why,
                        })).collect::<Vec<_>>(),
                        "warnings": report.warnings,
                    })
                );
            } else {
                println!("configuration `{}` is valid", app.config.path.display());
                println!(
                    "policy `{}`: {} policies, valid against the schema",
                    app.config.policy.display(),
                    app.policy.len()
                );
                println!("state `{}`: opened", app.config.state_dir.display());
                for e in app.config.environments.values() {
                    let tier = if e.production {
                        "production"
                    } else {
                        "non-production"
                    };
                    println!("environment `{}` ({tier})", e.name);
                }
                for f in &report.findings {
                    let label = if f.refuses() {
                        "refused"
                    } else if f.accepted {
                        "accepted"
                    } else {
                        "warning"
                    };
                    println!("role {label}: {f}");
                }
                for (upstream, role, why) in &report.unreachable {
                    println!("role not inspected: `{role}` of `{upstream}`: {why}");
                }
                for w in &report.warnings {
                    println!("warning: {w}");
                }
                if report.findings.is_empty() && report.unreachable.is_empty() {
                    println!(
                        "upstream roles: each can do no more than its environment's grants need"
                    );
                }
            }
            app.close()?;
            if refused {
                eprintln!("error: a production environment's database roles can do more than its grants need (see above); fix them or list the risk in `accept_risks`");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
