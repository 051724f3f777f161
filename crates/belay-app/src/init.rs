//! `belay init DIR`: a commented configuration, the default policy, its test cases and a
//! state directory, ready for `belay human add`.

use std::path::{Path, PathBuf};

use belay_audit::Draft;
use belay_config::{Config, ProcessEnv};
use serde_json::json;

use crate::policy_cases::DEFAULT_CASES;
use crate::{now_us, App, Error};

/// What `init` wrote.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub config: PathBuf,
    pub policy: PathBuf,
    pub policy_tests: PathBuf,
    pub state_dir: PathBuf,
}

/// Writes `dir/belay.toml`, `dir/policy.cedar`, `dir/policy-tests/default.toml` and
/// `dir/state/`. Refuses to overwrite any of them.
pub fn init(dir: &Path, actor: &str) -> Result<InitReport, Error> {
    let config = dir.join("belay.toml");
    let policy = dir.join("policy.cedar");
    let tests_dir = dir.join("policy-tests");
    let policy_tests = tests_dir.join("default.toml");
    for path in [&config, &policy, &policy_tests] {
        if path.exists() {
            return Err(Error::Invalid(format!(
                "`{}` already exists; belay init never overwrites a file",
                path.display()
            )));
        }
    }
    std::fs::create_dir_all(&tests_dir)
        .map_err(|e| Error::Io(format!("cannot create `{}`: {e}", tests_dir.display())))?;
    write_new(&config, belay_config::init_template())?;
    write_new(&policy, belay_policy::DEFAULT_POLICY)?;
    write_new(&policy_tests, DEFAULT_CASES)?;

    let loaded = Config::load(&config, &ProcessEnv)?;
    let state_dir = loaded.state_dir.clone();
    let app = App::open(loaded)?;
    app.audit(Draft {
        time_us: now_us(),
        actor: actor.to_owned(),
        kind: "config.init".to_owned(),
        outcome: Some("created".to_owned()),
        detail: json!({ "config": config.display().to_string(), "policy": policy.display().to_string() }),
        ..Draft::default()
    })?;
    app.close()?;
    Ok(InitReport {
        config,
        policy,
        policy_tests,
        state_dir,
    })
}

fn write_new(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, contents.as_bytes()))
        .map_err(|e| Error::Io(format!("cannot write `{}`: {e}", path.display())))
}
