//! Which run-time settings matter to safety, and what changing them is.
//!
//! Most settings (`search_path`, `TimeZone`, `DateStyle`, custom `app.*` settings) only change
//! how this session formats or finds things: `read`. The ones listed here change who the
//! session is, whether it may write, what the server logs, how long statements may run, or
//! how the server parses the text belay has already parsed; an agent must not change those.

use belay_core::Class;

/// The class of setting `name` to `value` (`None` when the value is not a constant, or for
/// `RESET`), and the reason.
pub(crate) fn classify(name: &str, value: Option<&str>) -> Option<(Class, String)> {
    let name = name.to_ascii_lowercase();
    let value = value.map(|v| v.trim().to_ascii_lowercase());
    let v = value.as_deref();
    let changes = |what: &str| format!("changing `{name}` {what}");
    match name.as_str() {
        "role" | "session_authorization" | "session authorization" => Some((
            Class::Privilege,
            changes("changes the identity the session acts as"),
        )),
        "default_transaction_read_only" | "transaction_read_only" => {
            if v.is_some_and(is_true) {
                None
            } else {
                Some((
                    Class::Privilege,
                    changes("can lift the read-only mode belay sets"),
                ))
            }
        }
        "row_security" => Some((
            Class::Privilege,
            changes("changes which rows row-level security shows"),
        )),
        "session_replication_role" => Some((
            Class::Admin,
            changes("disables triggers and foreign-key checks"),
        )),
        "statement_timeout"
        | "lock_timeout"
        | "idle_in_transaction_session_timeout"
        | "idle_session_timeout"
        | "transaction_timeout"
        | "application_name" => Some((
            Class::Admin,
            changes("overrides a session setting that belay pins"),
        )),
        "standard_conforming_strings" if v.is_some_and(is_true) => None,
        "standard_conforming_strings" | "backslash_quote" | "escape_string_warning" => Some((
            Class::Admin,
            changes("makes the server parse strings differently from how belay parsed them"),
        )),
        "client_encoding" | "names" => match v {
            Some(enc) if is_unsafe_client_encoding(enc) => Some((
                Class::Admin,
                changes(
                    "to an encoding whose multi-byte characters can hide quotes lets the \
                     server read different text from what belay parsed",
                ),
            )),
            // RESET returns to the encoding negotiated at startup, which the gateway checks.
            _ => None,
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
        | "full_page_writes" => Some((
            Class::Admin,
            changes("changes what the server logs, loads or guarantees"),
        )),
        _ => None,
    }
}

fn is_true(v: &str) -> bool {
    matches!(v, "on" | "true" | "yes" | "1" | "t" | "y")
}

/// Client-only encodings whose second byte can be an ASCII backslash or quote.
fn is_unsafe_client_encoding(enc: &str) -> bool {
    let enc: String = enc.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    matches!(
        enc.as_str(),
        "sjis"
            | "shiftjis"
            | "mskanji"
            | "big5"
            | "gbk"
            | "cp936"
            | "uhc"
            | "gb18030"
            | "johab"
            | "shiftjis2004"
            | "win932"
            | "win936"
            | "win949"
            | "win950"
            | "cp932"
            | "cp949"
            | "cp950"
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmless_settings_are_not_listed() {
        assert_eq!(classify("TimeZone", Some("UTC")), None);
        assert_eq!(classify("search_path", Some("app, public")), None);
        assert_eq!(classify("client_encoding", Some("UTF8")), None);
        assert_eq!(classify("standard_conforming_strings", Some("on")), None);
        assert_eq!(classify("default_transaction_read_only", Some("on")), None);
    }

    #[test]
    fn safety_settings_are_privilege_or_admin() {
        let class = |n, v| classify(n, v).map(|(c, _)| c);
        assert_eq!(class("role", Some("admin")), Some(Class::Privilege));
        assert_eq!(class("role", None), Some(Class::Privilege));
        assert_eq!(
            class("default_transaction_read_only", Some("off")),
            Some(Class::Privilege)
        );
        assert_eq!(
            class("session_replication_role", Some("replica")),
            Some(Class::Admin)
        );
        assert_eq!(
            class("standard_conforming_strings", Some("off")),
            Some(Class::Admin)
        );
        assert_eq!(class("client_encoding", Some("SJIS")), Some(Class::Admin));
        assert_eq!(
            class("search_path", Some("public, pg_catalog")),
            Some(Class::Admin)
        );
        assert_eq!(class("statement_timeout", Some("0")), Some(Class::Admin));
    }
}
