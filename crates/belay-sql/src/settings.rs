//! Which run-time settings matter to safety, and what changing them is.
//!
//! Most settings (`TimeZone`, `DateStyle`, custom `app.*` settings) only change how this
//! session formats or finds things: `read`. The ones listed here change who the session is,
//! whether it may write, what the server logs, or how the server parses the text belay has
//! already parsed; an agent must not change those. A listed setting given a value belay
//! cannot read as a constant (a `set_config` with a computed or bound value) is treated as
//! the worst value it could take.
//!
//! *Capped* settings (`CAPPED`: memory and parallelism, and the timeouts belay pins) may be
//! lowered but not raised past a limit the environment sets; the classifier cannot know that
//! limit, so it records each such change in `Statement::settings` for the gateway (which
//! treats turning a timeout off as over every limit), and only refuses an unreadable value.

use belay_core::units::{measure, Unit};
use belay_core::{encoding, Class};

/// A setting's new value as a statement gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingValue {
    /// A constant, as written (several list items joined by `, `).
    Const(String),
    /// `RESET`, `SET ... TO DEFAULT`: back to the session's value at login.
    Default,
    /// A value only known when the statement runs (a computed or bound `set_config`
    /// argument).
    Computed,
}

/// A change a statement makes to a capped setting, for the caller to check against limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    /// The setting's name, lower case.
    pub name: String,
    pub value: SettingValue,
}

/// Settings an environment caps, with their unit. Raising one past its cap is refused by the
/// gateway; the timeouts are also pinned at login, so their cap is the pinned value.
pub const CAPPED: &[(&str, Unit)] = &[
    ("work_mem", Unit::Bytes { base: 1024 }),
    ("maintenance_work_mem", Unit::Bytes { base: 1024 }),
    ("logical_decoding_work_mem", Unit::Bytes { base: 1024 }),
    ("temp_buffers", Unit::Bytes { base: 8192 }),
    ("hash_mem_multiplier", Unit::Number),
    ("max_parallel_workers_per_gather", Unit::Number),
    ("max_parallel_maintenance_workers", Unit::Number),
    ("max_parallel_workers", Unit::Number),
    ("statement_timeout", Unit::Millis),
    ("lock_timeout", Unit::Millis),
    ("idle_in_transaction_session_timeout", Unit::Millis),
    ("idle_session_timeout", Unit::Millis),
    ("transaction_timeout", Unit::Millis),
];

/// Whether `change` may lift a session's read-only mode (`transaction_read_only` or its
/// default turned off, or given a value belay cannot read; `READ WRITE` is recorded so too).
/// Harmless where the session is not pinned read-only; the gateway refuses it where it is.
pub fn lifts_read_only(change: &SettingChange) -> bool {
    matches!(
        change.name.as_str(),
        "default_transaction_read_only" | "transaction_read_only"
    ) && match &change.value {
        SettingValue::Const(v) => !is_true(&v.trim().to_ascii_lowercase()),
        SettingValue::Computed => true,
        // RESET returns to the value at login, which is the pin where there is one.
        SettingValue::Default => false,
    }
}

/// Whether the gateway checks changes of setting `name` (lower case) itself: capped
/// settings and read-only mode.
pub(crate) fn recorded(name: &str) -> bool {
    capped(name).is_some()
        || matches!(
            name,
            "default_transaction_read_only" | "transaction_read_only"
        )
}

/// The unit of capped setting `name` (lower case), if it is one.
pub fn capped(name: &str) -> Option<Unit> {
    CAPPED.iter().find(|(n, _)| *n == name).map(|(_, u)| *u)
}

/// The class of setting `name` to `value`, and the reason; `None` for a setting that does
/// not matter to safety, or a value that keeps it safe.
pub(crate) fn classify(name: &str, value: &SettingValue) -> Option<(Class, String)> {
    let name = name.to_ascii_lowercase();
    let lowered = match value {
        SettingValue::Const(v) => Some(v.trim().to_ascii_lowercase()),
        _ => None,
    };
    let v = lowered.as_deref();
    let computed = *value == SettingValue::Computed;
    let changes = |what: &str| format!("changing `{name}` {what}");
    let unreadable = || {
        Some((
            Class::Admin,
            format!(
                "`{name}` is given a value belay cannot read as a constant, and it matters to \
                 how belay decides"
            ),
        ))
    };
    if let Some(unit) = capped(&name) {
        return match value {
            SettingValue::Computed => unreadable(),
            SettingValue::Default => None,
            SettingValue::Const(c) => match measure(unit, c) {
                None => Some((
                    Class::Admin,
                    format!("belay cannot read `{c}` as a value of `{name}`"),
                )),
                // Within the environment's cap or not (0, which turns a time limit off, is
                // over every cap): the gateway checks, and lowers a whole SET to the cap.
                Some(_) => None,
            },
        };
    }
    match name.as_str() {
        "role" | "session_authorization" | "session authorization" => Some((
            Class::Privilege,
            changes("changes the identity the session acts as"),
        )),
        // Lifting read-only mode matters only where belay pins it: the walk records it in
        // `Statement::settings` and makes it `privilege` outside `Code::base`.
        "default_transaction_read_only" | "transaction_read_only" => None,
        // `row_security = off` does not lift a policy: a query a policy would filter fails
        // instead (pg_dump sets it so), unless the role may bypass policies anyway.
        "session_replication_role" => Some((
            Class::Admin,
            changes("disables triggers and foreign-key checks"),
        )),
        "application_name" => {
            if *value == SettingValue::Default {
                None
            } else {
                Some((
                    Class::Admin,
                    changes("overrides a session setting that belay pins"),
                ))
            }
        }
        "standard_conforming_strings" if v.is_some_and(is_true) => None,
        "standard_conforming_strings" if *value == SettingValue::Default => None,
        "standard_conforming_strings" | "backslash_quote" | "escape_string_warning" => Some((
            Class::Admin,
            changes("makes the server parse strings differently from how belay parsed them"),
        )),
        "client_encoding" | "names" => match value {
            // RESET returns to the encoding negotiated at startup, which the gateway checks.
            SettingValue::Default => None,
            SettingValue::Computed => unreadable(),
            SettingValue::Const(enc) if encoding::parsable(enc) => None,
            SettingValue::Const(enc) => Some((
                Class::Admin,
                match encoding::canonical(enc) {
                    Some(canonical) => changes(&format!(
                        "to `{canonical}`, an encoding whose multi-byte characters can hide \
                         quotes and backslashes, lets the server read other text than belay \
                         parsed"
                    )),
                    None => changes(&format!("to `{enc}`, which is no encoding belay knows")),
                },
            )),
        },
        // A tablespace is the cluster's, not the environment's; dumps set the default to ''.
        "default_tablespace" | "temp_tablespaces" => match v {
            Some("") => None,
            _ if *value == SettingValue::Default => None,
            _ => Some((
                Class::Admin,
                changes("puts what the session creates in a tablespace of the whole cluster"),
            )),
        },
        "search_path" => match v {
            // pg_catalog is searched first unless the path names it later; a path that does
            // lets a user-defined function shadow a built-in that belay treats as read-only.
            Some(path) if catalog_shadowed(path) => Some((
                Class::Admin,
                changes(
                    "to put `pg_catalog` after another schema lets user functions shadow built-ins",
                ),
            )),
            // belay's own schema (its ledger of decisions, in every upstream database) on the
            // path would let an unqualified name reach it, where belay sees only the name.
            Some(path) if names_schema(path, crate::LEDGER_SCHEMA) => Some((
                Class::Admin,
                changes("to put `belay_ledger`, belay's own schema, on the path lets unqualified names reach its ledger"),
            )),
            _ if computed => unreadable(),
            _ => None,
        },
        "log_statement"
        | "log_min_duration_statement"
        | "log_min_messages"
        | "log_min_error_statement"
        | "log_duration"
        | "log_connections"
        | "log_disconnections"
        | "log_parameter_max_length"
        | "log_parameter_max_length_on_error"
        | "log_statement_sample_rate"
        | "log_transaction_sample_rate"
        | "log_replication_commands"
        | "log_lock_waits"
        | "track_activities"
        | "track_functions"
        | "track_counts"
        | "track_io_timing"
        | "track_wal_io_timing"
        | "session_preload_libraries"
        | "local_preload_libraries"
        | "allow_system_table_mods"
        | "allow_in_place_tablespaces"
        | "ignore_system_indexes"
        | "ignore_checksum_failure"
        | "zero_damaged_pages"
        | "lo_compat_privileges"
        | "synchronous_commit"
        | "temp_file_limit"
        | "wal_compression"
        | "fsync"
        | "full_page_writes"
        | "jit_provider" => Some((
            Class::Admin,
            changes("changes what the server logs, loads, stores where, or guarantees"),
        )),
        _ => None,
    }
}

fn is_true(v: &str) -> bool {
    matches!(v, "on" | "true" | "yes" | "1" | "t" | "y")
}

fn catalog_shadowed(path: &str) -> bool {
    let parts: Vec<&str> = path
        .split(',')
        .map(|p| p.trim().trim_matches('"'))
        .collect();
    parts
        .iter()
        .position(|p| *p == "pg_catalog")
        .is_some_and(|i| i > 0)
}

/// Whether the search path `path` names `schema`.
fn names_schema(path: &str, schema: &str) -> bool {
    path.split(',')
        .map(|p| p.trim().trim_matches('"'))
        .any(|p| p.eq_ignore_ascii_case(schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: &str) -> SettingValue {
        SettingValue::Const(v.to_owned())
    }

    #[test]
    fn harmless_settings_are_not_listed() {
        assert_eq!(classify("TimeZone", &c("UTC")), None);
        assert_eq!(classify("search_path", &c("app, public")), None);
        assert_eq!(classify("client_encoding", &c("UTF8")), None);
        assert_eq!(classify("client_encoding", &c("LATIN9")), None);
        assert_eq!(classify("standard_conforming_strings", &c("on")), None);
        assert_eq!(classify("default_transaction_read_only", &c("on")), None);
        assert_eq!(classify("statement_timeout", &c("30s")), None);
        assert_eq!(
            classify("row_security", &c("off")),
            None,
            "fails, never shows more"
        );
        assert_eq!(classify("work_mem", &c("4GB")), None, "the gateway caps it");
        assert_eq!(classify("client_encoding", &SettingValue::Default), None);
    }

    #[test]
    fn safety_settings_are_privilege_or_admin() {
        let class = |n, v: &SettingValue| classify(n, v).map(|(c, _)| c);
        assert_eq!(class("role", &c("admin")), Some(Class::Privilege));
        assert_eq!(
            class("role", &SettingValue::Default),
            Some(Class::Privilege)
        );
        assert_eq!(
            class("default_transaction_read_only", &c("off")),
            None,
            "recorded, and privilege where the walk records it (`Walk::read_only_lift`)"
        );
        assert!(lifts_read_only(&SettingChange {
            name: "default_transaction_read_only".to_owned(),
            value: c("off"),
        }));
        assert_eq!(
            class("session_replication_role", &c("replica")),
            Some(Class::Admin)
        );
        assert_eq!(
            class("standard_conforming_strings", &c("off")),
            Some(Class::Admin)
        );
        for enc in [
            "SJIS",
            "windows932",
            "Windows-936",
            "win949",
            "WINDOWS950",
            "nonsense",
        ] {
            assert_eq!(
                class("client_encoding", &c(enc)),
                Some(Class::Admin),
                "{enc}"
            );
        }
        assert_eq!(
            class("search_path", &c("public, pg_catalog")),
            Some(Class::Admin)
        );
        for path in [
            "belay_ledger",
            "public, BELAY_LEDGER",
            "\"belay_ledger\", public",
        ] {
            assert_eq!(class("search_path", &c(path)), Some(Class::Admin), "{path}");
        }
        assert_eq!(
            class("statement_timeout", &c("0")),
            None,
            "over every cap: the gateway checks"
        );
        assert_eq!(class("work_mem", &c("4 parsecs")), Some(Class::Admin));
    }

    #[test]
    fn a_value_belay_cannot_read_is_the_worst_value() {
        let computed = SettingValue::Computed;
        for name in [
            "client_encoding",
            "standard_conforming_strings",
            "search_path",
            "work_mem",
            "statement_timeout",
        ] {
            assert!(
                classify(name, &computed).is_some_and(|(c, _)| c >= Class::Privilege),
                "{name}"
            );
        }
        assert_eq!(classify("timezone", &computed), None);
    }
}
