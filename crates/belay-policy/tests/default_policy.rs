//! The shipped default policy gives DESIGN's table of verdicts, and the engine fails closed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use belay_core::{Class, Verdict};
use belay_policy::{diff, ActionRequest, PolicyEngine, DEFAULT_POLICY};

fn engine() -> PolicyEngine {
    PolicyEngine::new(DEFAULT_POLICY).unwrap()
}

fn decide(production: bool, class: Class, grant: Option<Class>) -> belay_core::Decision {
    let env = if production { "production" } else { "staging" };
    engine().evaluate(&ActionRequest::new(
        "ci-bot", "alice", env, production, class, grant,
    ))
}

fn production_destructive_by_a_reader() -> ActionRequest {
    ActionRequest::new(
        "ci-bot",
        "alice",
        "production",
        true,
        Class::Destructive,
        Some(Class::Read),
    )
}

#[test]
fn reads_are_allowed_in_both_tiers() {
    for production in [false, true] {
        let d = decide(production, Class::Read, Some(Class::Read));
        assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
        assert!(!d.reversible && !d.backup_first);
    }
}

#[test]
fn writes_are_allowed_outside_production_and_held_in_production_unless_granted() {
    assert_eq!(
        decide(false, Class::Write, Some(Class::Destructive)).verdict,
        Verdict::Allow
    );
    let held = decide(true, Class::Write, Some(Class::Read));
    assert_eq!(held.verdict, Verdict::Approve(1), "{held:?}");
    assert_eq!(held.policies, ["production-write"]);
    assert_eq!(
        decide(true, Class::Write, Some(Class::Write)).verdict,
        Verdict::Allow
    );
}

#[test]
fn ddl_is_allowed_outside_production_and_always_held_in_production() {
    assert_eq!(
        decide(false, Class::Ddl, Some(Class::Ddl)).verdict,
        Verdict::Allow
    );
    for grant in [Class::Read, Class::Write, Class::Ddl, Class::Destructive] {
        assert_eq!(
            decide(true, Class::Ddl, Some(grant)).verdict,
            Verdict::Approve(1),
            "{grant}"
        );
    }
}

#[test]
fn destructive_is_reversible_outside_production_and_held_with_backup_in_production() {
    let staging = decide(false, Class::Destructive, Some(Class::Destructive));
    assert_eq!(staging.verdict, Verdict::Allow);
    assert!(staging.reversible && !staging.backup_first, "{staging:?}");

    let production = decide(true, Class::Destructive, Some(Class::Destructive));
    assert_eq!(production.verdict, Verdict::Approve(1));
    assert!(
        production.reversible && production.backup_first,
        "{production:?}"
    );
    assert!(
        production.reason.contains("verified backup"),
        "{}",
        production.reason
    );
}

#[test]
fn privilege_admin_and_unknown_are_denied_everywhere() {
    for production in [false, true] {
        for class in [Class::Privilege, Class::Admin, Class::Unknown] {
            let d = decide(production, class, Some(Class::Destructive));
            assert_eq!(d.verdict, Verdict::Deny, "{class} production={production}");
            assert!(!d.policies.is_empty() && !d.reason.is_empty());
        }
    }
}

#[test]
fn an_agent_without_a_grant_is_denied_even_reads() {
    for production in [false, true] {
        let d = decide(production, Class::Read, None);
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.policies, ["no-grant"]);
    }
}

#[test]
fn a_target_outside_the_environment_is_denied() {
    let mut request = ActionRequest::new(
        "ci-bot",
        "alice",
        "staging",
        false,
        Class::Read,
        Some(Class::Destructive),
    );
    request.foreign_target = true;
    let d = engine().evaluate(&request);
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.policies, ["foreign-target"]);
}

#[test]
fn beyond_the_grant_outside_production_is_held() {
    let d = decide(false, Class::Destructive, Some(Class::Write));
    assert_eq!(d.verdict, Verdict::Approve(1));
    assert_eq!(d.policies, ["beyond-grant"]);
}

#[test]
fn approvals_lift_the_hold() {
    let mut request = production_destructive_by_a_reader();
    request.approvals = 1;
    let d = engine().evaluate(&request);
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert!(d.reversible && d.backup_first);
}

#[test]
fn quorum_lives_in_the_policy() {
    let two_person = DEFAULT_POLICY.replace(
        "@id(\"production-destructive\")\n@approvals(\"1\")",
        "@id(\"production-destructive\")\n@approvals(\"2\")",
    );
    assert_ne!(two_person, DEFAULT_POLICY);
    let engine = PolicyEngine::new(&two_person).unwrap();
    let mut request = production_destructive_by_a_reader();
    assert_eq!(engine.evaluate(&request).verdict, Verdict::Approve(2));
    request.approvals = 1;
    assert_eq!(engine.evaluate(&request).verdict, Verdict::Approve(2));
    request.approvals = 2;
    assert_eq!(engine.evaluate(&request).verdict, Verdict::Allow);
}

#[test]
fn a_held_forbid_sets_the_terms_of_its_approval() {
    let default = decide(true, Class::Destructive, Some(Class::Read));
    assert_eq!(default.hold, belay_core::Hold::default());
    assert_eq!(default.hold.expires, std::time::Duration::from_secs(3600));
    assert_eq!(default.hold.run_within, std::time::Duration::from_secs(900));
    let policy = DEFAULT_POLICY.replace(
        "@id(\"production-destructive\")\n@approvals(\"1\")",
        "@id(\"production-destructive\")\n@approvals(\"1\")\n@expires(\"2h\")\n@run_within(\"5m\")\n@approvers(\"owner, bob\")",
    );
    assert_ne!(policy, DEFAULT_POLICY);
    let d = PolicyEngine::new(&policy)
        .unwrap()
        .evaluate(&production_destructive_by_a_reader());
    assert_eq!(d.verdict, Verdict::Approve(1));
    assert_eq!(d.hold.expires, std::time::Duration::from_secs(7200));
    assert_eq!(d.hold.run_within, std::time::Duration::from_secs(300));
    assert_eq!(d.hold.approvers, ["owner", "bob"]);
}

#[test]
fn an_evaluation_error_denies_even_when_the_erroring_policy_is_a_forbid() {
    // A forbid that errors is skipped by Cedar, which would let the permit through; belay
    // denies instead.
    let policy = format!(
        "{DEFAULT_POLICY}\n@id(\"overflow\")\n@reason(\"huge\")\nforbid (principal, action, resource) \
         when {{ context has row_estimate && context.row_estimate * 1000000000000 > 0 }};"
    );
    let engine = PolicyEngine::new(&policy).unwrap();
    let mut request = ActionRequest::new(
        "ci-bot",
        "alice",
        "staging",
        false,
        Class::Read,
        Some(Class::Read),
    );
    request.row_estimate = Some(u64::MAX);
    let d = engine.evaluate(&request);
    assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
    assert!(d.reason.contains("could not be evaluated"), "{}", d.reason);
}

#[test]
fn policies_must_be_named_and_annotations_well_formed() {
    let cases = [
        ("permit (principal, action, resource);", "@id"),
        ("@id(\"x\")\n@approvals(\"zero\")\nforbid (principal, action, resource);", "@approvals"),
        ("@id(\"x\")\n@approvals(\"1\")\npermit (principal, action, resource);", "forbid"),
        ("@id(\"x\")\npermit (principal, action, resource);\n@id(\"x\")\nforbid (principal, action, resource);", "share"),
        ("@id(\"x\")\n@reversible(\"yes\")\npermit (principal, action, resource);", "@reversible"),
        ("@id(\"x\")\n@expires(\"1h\")\nforbid (principal, action, resource);", "@approvals"),
        ("@id(\"x\")\n@approvals(\"1\")\n@expires(\"soon\")\nforbid (principal, action, resource);", "@expires"),
        ("@id(\"x\")\n@approvals(\"1\")\n@run_within(\"0s\")\nforbid (principal, action, resource);", "@run_within"),
        ("@id(\"x\")\n@approvals(\"1\")\n@approvers(\"alice; bob\")\nforbid (principal, action, resource);", "@approvers"),
    ];
    for (policy, needle) in cases {
        let err = PolicyEngine::new(policy).unwrap_err().to_string();
        assert!(err.contains(needle), "`{policy}`: {err}");
    }
}

#[test]
fn policies_that_do_not_match_the_schema_are_rejected() {
    let typo = "@id(\"x\")\npermit (principal, action, resource) when { context.grant_lvl > 1 };";
    let err = PolicyEngine::new(typo).unwrap_err().to_string();
    assert!(err.contains("schema"), "{err}");
    let garbage = "permit (principal, action, resource) when {";
    assert!(PolicyEngine::new(garbage)
        .unwrap_err()
        .to_string()
        .contains("parse"));
}

#[test]
fn diff_shows_a_widening_edit() {
    let widened = DEFAULT_POLICY.replace(
        "when { resource.production };\n",
        "when { resource.production && context.grant_level < 4 };\n",
    );
    assert_ne!(widened, DEFAULT_POLICY);
    let changes = diff(&engine(), &PolicyEngine::new(&widened).unwrap());
    assert!(!changes.is_empty());
    assert!(
        changes
            .iter()
            .all(|c| c.production && c.grant == Some(Class::Destructive)),
        "{changes:?}"
    );
    assert!(changes
        .iter()
        .any(|c| c.class == Class::Destructive && c.widens()));
    assert!(diff(&engine(), &engine()).is_empty());
}
