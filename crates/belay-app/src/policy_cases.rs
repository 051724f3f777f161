//! `belay policy test`: case files of (agent grant, tier, action) and the verdict expected,
//! so users can test their own policies in CI.

use std::path::{Path, PathBuf};

use belay_core::{Class, Verdict};
use belay_policy::{ActionRequest, PolicyEngine};
use belay_sql::Classifier;
use serde::Deserialize;

use crate::decide::with_analysis;
use crate::Error;

/// The case file `belay init` writes: the default policy's table.
pub const DEFAULT_CASES: &str = include_str!("defaults/policy-tests.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    tier: String,
    grant: String,
    sql: Option<String>,
    class: Option<String>,
    #[serde(default)]
    approvals_given: u32,
    #[serde(default)]
    foreign_target: bool,
    row_estimate: Option<u64>,
    #[serde(default)]
    flags: Vec<String>,
    verdict: String,
    approvals: Option<u32>,
    reversible: Option<bool>,
    backup_first: Option<bool>,
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: PathBuf,
    pub name: String,
    /// Empty when the case passed; otherwise what differed.
    pub failures: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every `*.toml` case file in `dir` (sorted by name) against `policy`.
pub fn run_cases(
    policy: &PolicyEngine,
    classifier: &Classifier,
    dir: &Path,
) -> Result<Vec<CaseResult>, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Io(format!("cannot read `{}`: {e}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "`{}` holds no *.toml case file",
            dir.display()
        )));
    }
    let mut results = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Error::Io(format!("cannot read `{}`: {e}", file.display())))?;
        let cases: CaseFile = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text.get(..s.start).unwrap_or("").matches('\n').count() + 1)
                .unwrap_or(0);
            Error::Invalid(format!("{}:{line}: {}", file.display(), e.message()))
        })?;
        for case in cases.case {
            let failures = run_case(policy, classifier, &case)
                .unwrap_or_else(|problem| vec![format!("the case is malformed: {problem}")]);
            results.push(CaseResult {
                file: file.clone(),
                name: case.name,
                failures,
            });
        }
    }
    Ok(results)
}

fn run_case(
    policy: &PolicyEngine,
    classifier: &Classifier,
    case: &Case,
) -> Result<Vec<String>, String> {
    let production = match case.tier.as_str() {
        "production" => true,
        "non-production" => false,
        other => {
            return Err(format!(
                "tier `{other}` must be \"production\" or \"non-production\""
            ))
        }
    };
    let grant = match case.grant.as_str() {
        "none" => None,
        other => Some(other.parse::<Class>().map_err(|e| e.to_string())?),
    };
    let env = if production { "production" } else { "staging" };
    let new_request =
        |class| ActionRequest::new("test-agent", "test-owner", env, production, class, grant);
    let mut request = match (&case.sql, &case.class) {
        (Some(sql), None) => {
            let analysis = classifier.classify(sql);
            with_analysis(new_request(analysis.class), &analysis)
        }
        (None, Some(class)) => new_request(class.parse::<Class>().map_err(|e| e.to_string())?),
        _ => return Err("give exactly one of `sql` or `class`".to_owned()),
    };
    request.flags.extend(case.flags.iter().cloned());
    request.approvals = case.approvals_given;
    request.foreign_target = case.foreign_target;
    request.row_estimate = case.row_estimate;
    let decision = policy.evaluate(&request);

    let mut failures = Vec::new();
    if !matches!(case.verdict.as_str(), "allow" | "deny" | "approve") {
        return Err(format!(
            "verdict `{}` must be allow, deny or approve",
            case.verdict
        ));
    }
    if decision.verdict.name() != case.verdict {
        failures.push(format!(
            "expected {}, got {} ({}; policies: {})",
            case.verdict,
            decision.verdict,
            decision.reason,
            decision.policies.join(", ")
        ));
    }
    if let Some(n) = case.approvals {
        if decision.verdict != Verdict::Approve(n) {
            failures.push(format!("expected approve({n}), got {}", decision.verdict));
        }
    }
    if let Some(r) = case.reversible {
        if decision.reversible != r {
            failures.push(format!(
                "expected reversible = {r}, got {}",
                decision.reversible
            ));
        }
    }
    if let Some(b) = case.backup_first {
        if decision.backup_first != b {
            failures.push(format!(
                "expected backup_first = {b}, got {}",
                decision.backup_first
            ));
        }
    }
    Ok(failures)
}
