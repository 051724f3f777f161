//! Configuration files as users write them: valid ones load, and every mistake is an error
//! naming the file and line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use belay_config::{Config, Env, Error};

#[derive(Default)]
struct FakeEnv {
    vars: HashMap<String, String>,
    files: HashMap<PathBuf, String>,
}

impl Env for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    }
}

/// The init template with its password lines switched on.
fn template() -> String {
    belay_config::init_template().replace("# password = ", "password = ")
}

fn env_with_passwords() -> FakeEnv {
    let mut env = FakeEnv::default();
    env.vars
        .insert("BELAY_STAGING_PASSWORD".into(), "s3cret-staging".into());
    env.vars.insert(
        "BELAY_PRODUCTION_PASSWORD".into(),
        "s3cret-production".into(),
    );
    env
}

fn parse(text: &str, env: &FakeEnv) -> Result<Config, Error> {
    Config::parse(Path::new("/etc/belay/belay.toml"), text, env)
}

#[test]
fn the_init_template_loads_as_written() {
    let config = parse(belay_config::init_template(), &FakeEnv::default()).unwrap();
    assert!(config.environment("staging").unwrap().postgres["main"]
        .password
        .is_none());
}

#[test]
fn the_init_template_loads() {
    let config = parse(&template(), &env_with_passwords()).unwrap();
    assert_eq!(config.state_dir, Path::new("/etc/belay/state"));
    assert_eq!(config.policy, Path::new("/etc/belay/policy.cedar"));
    let production = config.environment("production").unwrap();
    assert!(production.production);
    assert!(!config.environment("staging").unwrap().production);
    let main = &production.postgres["main"];
    assert_eq!(
        main.password.as_ref().unwrap().expose(),
        "s3cret-production"
    );
    assert_eq!(config.audit.checkpoint_every, 1000);
}

#[test]
fn secrets_never_show_in_debug_output() {
    let config = parse(&template(), &env_with_passwords()).unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
}

#[test]
fn unknown_keys_are_errors_with_a_line() {
    let text = template().replace(
        "checkpoint_every = 1000",
        "checkpoint_every = 1000\ncheckpoint_evry = 5",
    );
    let err = parse(&text, &env_with_passwords()).unwrap_err().to_string();
    assert!(err.starts_with("/etc/belay/belay.toml:"), "{err}");
    assert!(err.contains("checkpoint_evry"), "{err}");
    let line = text
        .lines()
        .position(|l| l.starts_with("checkpoint_evry"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(":{line}:")),
        "expected line {line}: {err}"
    );
}

#[test]
fn a_missing_secret_names_the_variable_not_a_value() {
    let mut env = env_with_passwords();
    env.vars.remove("BELAY_PRODUCTION_PASSWORD");
    let err = parse(&template(), &env).unwrap_err().to_string();
    assert!(err.contains("BELAY_PRODUCTION_PASSWORD"), "{err}");
    assert!(
        err.contains("environments.production.postgres.main.password"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn secrets_from_files_lose_their_trailing_newline() {
    let text = template().replace(
        "password = { env = \"BELAY_STAGING_PASSWORD\" }",
        "password = { file = \"secrets/staging\" }",
    );
    let mut env = env_with_passwords();
    env.files.insert(
        PathBuf::from("/etc/belay/secrets/staging"),
        "from-file\n".into(),
    );
    let config = parse(&text, &env).unwrap();
    let pg = &config.environment("staging").unwrap().postgres["main"];
    assert_eq!(pg.password.as_ref().unwrap().expose(), "from-file");
}

#[test]
fn backups_in_the_failure_domain_of_the_data_are_refused() {
    let text = template().replacen(
        "failure_domain = \"backup-disk\"",
        "failure_domain = \"staging-db\"",
        1,
    );
    let err = parse(&text, &env_with_passwords()).unwrap_err().to_string();
    assert!(
        err.contains("share the failure domain `staging-db`"),
        "{err}"
    );
}

#[test]
fn syntax_errors_and_bad_values_point_at_the_line() {
    for (bad, needle) in [
        ("tier = \"non-production\"", "tier = \"sometimes\""),
        ("port = 5432", "port = \"five\""),
        (
            "postgres = \"127.0.0.1:6432\"",
            "postgres = \"not an address\"",
        ),
        ("state_dir = \"state\"", "state_dir = "),
    ] {
        let text = template().replacen(bad, needle, 1);
        let err = parse(&text, &env_with_passwords()).unwrap_err();
        assert!(matches!(err, Error::At { .. }), "`{needle}`: {err}");
    }
}

#[test]
fn relay_threads_default_to_the_gateway_s_choice_and_must_be_at_least_one() {
    assert_eq!(
        parse(&template(), &env_with_passwords())
            .unwrap()
            .listen
            .relay_threads,
        None
    );
    let with = |n: &str| {
        let text = template().replacen(
            "shutdown_grace = \"30s\"",
            &format!("shutdown_grace = \"30s\"\nrelay_threads = {n}"),
            1,
        );
        parse(&text, &env_with_passwords())
    };
    assert_eq!(with("3").unwrap().listen.relay_threads, Some(3));
    let err = with("0").unwrap_err().to_string();
    assert!(
        err.contains("`listen.relay_threads` must be between 1"),
        "{err}"
    );
}

#[test]
fn an_empty_file_is_an_error_not_a_default() {
    let err = parse("", &FakeEnv::default()).unwrap_err().to_string();
    assert!(err.contains("missing field"), "{err}");
}

#[test]
fn missing_file_is_an_error() {
    let err = Config::load(Path::new("/nonexistent/belay.toml"), &FakeEnv::default()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/belay.toml"));
}

#[test]
fn approval_waits_and_webhooks() {
    let mut env = env_with_passwords();
    env.vars.insert(
        "PROD_HOOK".into(),
        "https://hooks.example.com/T/B/secret".into(),
    );
    env.vars.insert(
        "ALICE_HOOK".into(),
        "https://hooks.example.com/alice".into(),
    );
    let text = template().replace(
        "[environments.production]\ntier = \"production\"\n",
        "[environments.production]\ntier = \"production\"\napproval_wait = \"30s\"\nnotify_webhook = { env = \"PROD_HOOK\" }\n",
    ) + "\n[notify.owners.alice]\nwebhook = { env = \"ALICE_HOOK\" }\n";
    let config = parse(&text, &env).unwrap();
    let production = config.environment("production").unwrap();
    assert_eq!(production.approval_wait, std::time::Duration::from_secs(30));
    assert_eq!(
        production.notify_webhook.as_ref().unwrap().expose(),
        "https://hooks.example.com/T/B/secret"
    );
    assert_eq!(
        config.environment("staging").unwrap().approval_wait,
        std::time::Duration::ZERO
    );
    assert!(config.notify.owners.contains_key("alice"));
    assert!(
        !format!("{config:?}").contains("secret"),
        "webhook URLs are secrets"
    );

    let too_long = text.replace("approval_wait = \"30s\"", "approval_wait = \"1h\"");
    let err = parse(&too_long, &env).unwrap_err().to_string();
    assert!(
        err.contains("approval_wait") && err.contains("longest"),
        "{err}"
    );
    env.vars
        .insert("PROD_HOOK".into(), "hooks.example.com/secret".into());
    let err = parse(&text, &env).unwrap_err().to_string();
    assert!(
        err.contains("notify_webhook") && err.contains("https://"),
        "{err}"
    );
    assert!(!err.contains("secret"), "the URL is not echoed: {err}");
}
