//! The dependency arrows between belay's crates are architecture: pure crates see only
//! `belay-core`; nothing but the composition root and the binary sees everything.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;

fn belay_deps(krate: &str) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    let mut deps: Vec<String> = value
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| {
            t.keys()
                .filter(|k| k.starts_with("belay"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    deps.sort();
    deps
}

#[test]
fn dependency_arrows_point_inwards() {
    let allowed: &[(&str, &[&str])] = &[
        ("belay-core", &[]),
        ("belay-scram", &[]),
        ("belay-scratch", &[]),
        ("belay-sql", &["belay-core"]),
        ("belay-policy", &["belay-core"]),
        ("belay-audit", &["belay-core"]),
        ("belay-config", &["belay-core"]),
        ("belay-store", &["belay-audit", "belay-core", "belay-scram"]),
        ("belay-pg", &["belay-core", "belay-scram"]),
    ];
    for (krate, may_use) in allowed {
        for dep in belay_deps(krate) {
            assert!(
                may_use.contains(&dep.as_str()),
                "`{krate}` must not depend on `{dep}`"
            );
        }
    }
}
