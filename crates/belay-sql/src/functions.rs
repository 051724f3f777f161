//! What calling a function or operator does: the built-ins known to be read-only, the built-ins
//! known to be dangerous, and the rule for everything else (a user-defined function can do
//! anything, so it is at least `write`).

use belay_core::Class;

use crate::analysis::Flag;

/// The effect of calling one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// A built-in that reads only.
    ReadOnly,
    /// A built-in with a known effect of this class.
    Known(Class, Flag, &'static str),
    /// `set_config`: the class depends on the setting it names.
    SetConfig,
    /// A built-in that runs the SQL text given as its argument at this index.
    RunsSql(usize),
    /// Not a known built-in.
    Unknown,
}

/// Classifies a call to `name`, written with `schema` if the call qualified it.
pub(crate) fn effect(schema: Option<&str>, name: &str) -> Effect {
    // Dangerous names are matched whatever the schema: extensions such as dblink and adminpack
    // install their functions in any schema.
    if let Some(effect) = dangerous(name) {
        return effect;
    }
    if schema == Some("information_schema") {
        // The server's own SQL functions there (`_pg_expandarray`, ...), which drivers'
        // metadata queries call; only a superuser can add to that schema.
        return match volatile_builtin(&format!("information_schema.{name}")) {
            Some(false) => Effect::ReadOnly,
            _ => Effect::Unknown,
        };
    }
    if schema.is_some_and(|s| s != "pg_catalog") {
        // A qualified call to another schema is a user-defined function even when its name is
        // that of a built-in.
        return Effect::Unknown;
    }
    if READ_ONLY.binary_search(&name).is_ok() || !volatile_builtin(name).unwrap_or(true) {
        Effect::ReadOnly
    } else {
        Effect::Unknown
    }
}

/// PostgreSQL's own functions, generated from `pg_proc` (`data/pg_proc.tsv`): by name, whether
/// any overload is volatile in any supported version; `None` for a name that is not one of
/// them in any. A built-in the server declares IMMUTABLE or STABLE cannot change the database;
/// a volatile one is read-only only when `READ_ONLY` says so, and `dangerous` says what the
/// others do. The answer is the same whatever the server's version: a name that is a built-in
/// only in some versions is one for every server (`Catalog::resolve` still finds a database's
/// own function of that name, on a version without the built-in).
pub(crate) fn volatile_builtin(name: &str) -> Option<bool> {
    static TABLE: std::sync::OnceLock<Vec<(&'static str, bool)>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut rows: Vec<(&'static str, bool)> = PG_PROC
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                // Name, volatility, and the major versions that have it.
                let mut fields = l.split('\t');
                Some((fields.next()?, fields.next()?))
            })
            .map(|(name, volatility)| (name, volatility != "i" && volatility != "s"))
            .collect();
        rows.sort_unstable();
        rows
    });
    table
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| table[i].1)
}

/// The built-ins of the PostgreSQL versions belay supports: name, the most volatile
/// `provolatile` of any version, and the major versions that have it.
pub(crate) const PG_PROC: &str = include_str!("../data/pg_proc.tsv");

/// Whether belay says what calling built-in `name` does: a read, or a known effect. A test
/// checks every function of a real server's `pg_catalog`.
pub fn classified_builtin(name: &str) -> bool {
    let (schema, name) = name.split_once('.').unwrap_or(("pg_catalog", name));
    effect(Some(schema), name) != Effect::Unknown
}

fn dangerous(name: &str) -> Option<Effect> {
    use Class::{Admin, Ddl, Destructive, Write};
    use Flag::{ServerFile, SideEffectFunction};
    let known = |class, flag, why| Some(Effect::Known(class, flag, why));
    match name {
        "set_config" => Some(Effect::SetConfig),
        "query_to_xml" | "query_to_xml_and_xmlschema" | "query_to_xmlschema" | "ts_stat" => {
            Some(Effect::RunsSql(0))
        }
        // `ts_rewrite(query, select)` runs the SELECT it is given (its three-argument form
        // takes only tsqueries: the walk tells them apart by their count).
        "ts_rewrite" => Some(Effect::RunsSql(1)),
        "pg_cancel_backend" | "pg_terminate_backend" => known(
            Admin,
            SideEffectFunction,
            "cancels or terminates another server process",
        ),
        "pg_reload_conf"
        | "pg_rotate_logfile"
        | "pg_rotate_logfile_old"
        | "pg_promote"
        | "pg_switch_wal"
        | "pg_switch_xlog"
        | "pg_create_restore_point"
        | "pg_backup_start"
        | "pg_backup_stop"
        | "pg_start_backup"
        | "pg_stop_backup"
        | "pg_wal_replay_pause"
        | "pg_wal_replay_resume"
        | "pg_log_backend_memory_contexts"
        | "pg_stat_reset"
        | "pg_stat_reset_shared"
        | "pg_stat_reset_single_table_counters"
        | "pg_stat_reset_single_function_counters"
        | "pg_stat_reset_slru"
        | "pg_stat_reset_replication_slot"
        | "pg_stat_reset_subscription_stats"
        | "pg_stat_reset_backend_stats"
        | "pg_stat_statements_reset"
        | "pg_import_system_collations"
        | "pg_sync_replication_slots" => {
            known(Admin, SideEffectFunction, "controls the database server")
        }
        "pg_create_physical_replication_slot"
        | "pg_create_logical_replication_slot"
        | "pg_drop_replication_slot"
        | "pg_copy_physical_replication_slot"
        | "pg_copy_logical_replication_slot"
        | "pg_replication_slot_advance"
        | "pg_logical_slot_get_changes"
        | "pg_logical_slot_peek_changes"
        | "pg_logical_slot_get_binary_changes"
        | "pg_logical_slot_peek_binary_changes"
        | "pg_logical_emit_message"
        | "pg_replication_origin_create"
        | "pg_replication_origin_drop"
        | "pg_replication_origin_advance"
        | "pg_replication_origin_session_setup"
        | "pg_replication_origin_session_reset"
        | "pg_replication_origin_xact_setup"
        | "pg_replication_origin_xact_reset"
        | "pg_log_standby_snapshot" => known(
            Admin,
            SideEffectFunction,
            "controls replication on the database server",
        ),
        "pg_read_file"
        | "pg_read_file_old"
        | "pg_read_binary_file"
        | "pg_stat_file"
        | "pg_ls_dir"
        | "pg_ls_logdir"
        | "pg_ls_waldir"
        | "pg_ls_tmpdir"
        | "pg_ls_archive_statusdir"
        | "pg_ls_logicalsnapdir"
        | "pg_ls_logicalmapdir"
        | "pg_ls_replslotdir"
        | "pg_ls_summariesdir"
        | "pg_available_wal_summaries"
        | "pg_wal_summary_contents"
        | "pg_file_write"
        | "pg_file_rename"
        | "pg_file_unlink"
        | "pg_file_sync"
        | "pg_logdir_ls"
        | "lo_import"
        | "lo_export" => known(
            Admin,
            ServerFile,
            "reads or writes files on the database server",
        ),
        "dblink" | "dblink_exec" | "dblink_connect" | "dblink_connect_u" | "dblink_send_query"
        | "dblink_open" | "dblink_fetch" | "dblink_get_result" | "dblink_close"
        | "dblink_disconnect" => known(
            Admin,
            SideEffectFunction,
            "opens a connection to another database and runs SQL there",
        ),
        "lo_unlink" => known(Destructive, SideEffectFunction, "deletes a large object"),
        "lo_create" | "lo_creat" | "lo_from_bytea" | "lo_put" | "lowrite" | "lo_truncate"
        | "lo_truncate64" => known(Write, SideEffectFunction, "writes a large object"),
        "nextval" | "setval" => known(Write, SideEffectFunction, "changes a sequence"),
        "pg_advisory_lock"
        | "pg_advisory_lock_shared"
        | "pg_advisory_xact_lock"
        | "pg_advisory_xact_lock_shared"
        | "pg_try_advisory_lock"
        | "pg_try_advisory_lock_shared"
        | "pg_try_advisory_xact_lock"
        | "pg_try_advisory_xact_lock_shared" => known(
            Write,
            SideEffectFunction,
            "takes an advisory lock that other sessions wait on",
        ),
        // Releasing the session's own advisory locks changes only the session (a pool's
        // reset runs `pg_advisory_unlock_all()`): read.
        "pg_advisory_unlock" | "pg_advisory_unlock_shared" | "pg_advisory_unlock_all" => {
            Some(Effect::ReadOnly)
        }
        "pg_notify" => known(
            Write,
            SideEffectFunction,
            "sends a notification to other sessions",
        ),
        n if n.starts_with("binary_upgrade_") && volatile_builtin(n).is_some() => known(
            Admin,
            SideEffectFunction,
            "sets what only pg_upgrade sets (the identifiers the server gives new objects)",
        ),
        "pg_nextoid" | "pg_stop_making_pinned_objects" => known(
            Admin,
            SideEffectFunction,
            "changes how the server numbers or pins catalog objects",
        ),
        // PostgreSQL 18's statistics import (pg_dump's and pg_upgrade's): the planner's
        // statistics of a table or column replaced or cleared, as ANALYZE replaces them.
        "pg_restore_relation_stats"
        | "pg_restore_attribute_stats"
        | "pg_clear_relation_stats"
        | "pg_clear_attribute_stats" => known(
            Ddl,
            SideEffectFunction,
            "replaces or clears a table's planner statistics, as ANALYZE does",
        ),
        "brin_summarize_new_values"
        | "brin_summarize_range"
        | "brin_desummarize_range"
        | "gin_clean_pending_list" => known(Write, SideEffectFunction, "maintains an index"),
        "pg_extension_config_dump" => known(
            Write,
            SideEffectFunction,
            "marks an extension's table for pg_dump (only an extension's script may)",
        ),
        // Trigger functions and handlers: the server refuses to call them from a query.
        n if (n.starts_with("RI_FKey_") || n.ends_with("handler"))
            && volatile_builtin(n).is_some() =>
        {
            known(
                Write,
                SideEffectFunction,
                "runs only as a trigger or handler",
            )
        }
        "dsnowball_init"
        | "dsnowball_lexize"
        | "suppress_redundant_updates_trigger"
        | "tsvector_update_trigger"
        | "tsvector_update_trigger_column"
        | "unique_key_recheck" => known(
            Write,
            SideEffectFunction,
            "runs only as a trigger or text-search dictionary",
        ),
        _ => None,
    }
}

/// Operators PostgreSQL ships, by symbol. An operator outside this list is user-defined and
/// may call any function.
pub(crate) fn is_builtin_operator(symbol: &str) -> bool {
    BUILTIN_OPERATORS.binary_search(&symbol).is_ok()
}

// Sorted, for binary search; a unit test checks the order.
const BUILTIN_OPERATORS: &[&str] = &[
    "!!", "!=", "!~", "!~*", "!~~", "!~~*", "#", "##", "#-", "#<", "#<=", "#<>", "#=", "#>", "#>=",
    "#>>", "%", "&", "&&", "&<", "&<|", "&>", "*", "*<", "*<=", "*<>", "*=", "*>", "*>=", "+", "-",
    "->", "->>", "-|-", "/", "<", "<->", "<<", "<<=", "<<|", "<=", "<>", "<@", "<^", "=", ">",
    ">=", ">>", ">>=", ">^", "?", "?#", "?&", "?-", "?-|", "?|", "?||", "@", "@-@", "@>", "@?",
    "@@", "@@@", "^", "^@", "|", "|&>", "|/", "|>>", "||", "||/", "~", "~*", "~<=~", "~<~", "~=",
    "~>=~", "~>~", "~~", "~~*",
];

// Built-in functions that only read. Sorted, for binary search; a unit test checks the order.
// Anything not here (and not in `dangerous`) is treated as a user-defined function.
const READ_ONLY: &[&str] = &[
    "abs",
    "acos",
    "acosd",
    "acosh",
    "age",
    "amvalidate",
    "any_value",
    "array_agg",
    "array_append",
    "array_cat",
    "array_dims",
    "array_fill",
    "array_length",
    "array_lower",
    "array_ndims",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_reverse",
    "array_sample",
    "array_shuffle",
    "array_sort",
    "array_to_json",
    "array_to_string",
    "array_upper",
    "ascii",
    "asin",
    "asind",
    "asinh",
    "atan",
    "atan2",
    "atan2d",
    "atand",
    "atanh",
    "avg",
    "bernoulli",
    "bit_and",
    "bit_count",
    "bit_length",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "bpchar",
    "btrim",
    "cardinality",
    "casefold",
    "cbrt",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "chr",
    "clock_timestamp",
    "col_description",
    "concat",
    "concat_ws",
    "convert",
    "convert_from",
    "convert_to",
    "corr",
    "cos",
    "cosd",
    "cosh",
    "cot",
    "cotd",
    "count",
    "covar_pop",
    "covar_samp",
    "crc32",
    "crc32c",
    "cume_dist",
    "current_database",
    "current_query",
    "current_schema",
    "current_schemas",
    "current_setting",
    "currtid2",
    "currval",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "date",
    "date_add",
    "date_bin",
    "date_part",
    "date_subtract",
    "date_trunc",
    "decode",
    "degrees",
    "dense_rank",
    "div",
    "encode",
    "enum_first",
    "enum_last",
    "enum_range",
    "erf",
    "erfc",
    "every",
    "exp",
    "extract",
    "factorial",
    "first_value",
    "float4",
    "float8",
    "floor",
    "format",
    "format_type",
    "gamma",
    "gcd",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "get_bit",
    "get_byte",
    "greatest",
    "has_any_column_privilege",
    "has_column_privilege",
    "has_database_privilege",
    "has_foreign_data_wrapper_privilege",
    "has_function_privilege",
    "has_language_privilege",
    "has_parameter_privilege",
    "has_schema_privilege",
    "has_sequence_privilege",
    "has_server_privilege",
    "has_table_privilege",
    "has_tablespace_privilege",
    "has_type_privilege",
    "host",
    "hostmask",
    "inet_client_addr",
    "inet_client_port",
    "inet_server_addr",
    "inet_server_port",
    "initcap",
    "int2",
    "int4",
    "int8",
    "isempty",
    "isfinite",
    "json_agg",
    "json_agg_strict",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object",
    "json_object_agg",
    "json_object_keys",
    "json_populate_record",
    "json_populate_recordset",
    "json_strip_nulls",
    "json_to_record",
    "json_to_recordset",
    "json_typeof",
    "jsonb_agg",
    "jsonb_agg_strict",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_concat",
    "jsonb_contained",
    "jsonb_contains",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_exists",
    "jsonb_exists_all",
    "jsonb_exists_any",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_insert",
    "jsonb_object",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_populate_record",
    "jsonb_populate_recordset",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_set_lax",
    "jsonb_strip_nulls",
    "jsonb_to_record",
    "jsonb_to_recordset",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "lag",
    "last_value",
    "lastval",
    "lcm",
    "lead",
    "least",
    "left",
    "length",
    "like_escape",
    "ln",
    "lo_close",
    "lo_get",
    "lo_lseek",
    "lo_lseek64",
    "lo_open",
    "lo_tell",
    "lo_tell64",
    "localtime",
    "localtimestamp",
    "log",
    "log10",
    "loread",
    "lower",
    "lower_inc",
    "lower_inf",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "masklen",
    "max",
    "md5",
    "min",
    "min_scale",
    "mod",
    "mode",
    "multirange",
    "netmask",
    "network",
    "normalize",
    "now",
    "nth_value",
    "ntile",
    "num_nonnulls",
    "num_nulls",
    "numeric",
    "obj_description",
    "octet_length",
    "overlaps",
    "overlay",
    "parse_ident",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_blocking_pids",
    "pg_client_encoding",
    "pg_collation_actual_version",
    "pg_collation_is_visible",
    "pg_column_size",
    "pg_conf_load_time",
    "pg_control_checkpoint",
    "pg_control_init",
    "pg_control_recovery",
    "pg_control_system",
    "pg_current_logfile",
    "pg_current_wal_flush_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_lsn",
    "pg_database_collation_actual_version",
    "pg_database_size",
    "pg_describe_object",
    "pg_encoding_to_char",
    "pg_export_snapshot",
    "pg_function_is_visible",
    "pg_get_aios",
    "pg_get_backend_memory_contexts",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_get_function_arguments",
    "pg_get_function_identity_arguments",
    "pg_get_function_result",
    "pg_get_functiondef",
    "pg_get_indexdef",
    "pg_get_keywords",
    "pg_get_loaded_modules",
    "pg_get_multixact_members",
    "pg_get_ruledef",
    "pg_get_sequence_data",
    "pg_get_serial_sequence",
    "pg_get_shmem_allocations",
    "pg_get_shmem_allocations_numa",
    "pg_get_statisticsobjdef",
    "pg_get_triggerdef",
    "pg_get_userbyid",
    "pg_get_viewdef",
    "pg_get_wait_events",
    "pg_get_wal_replay_pause_state",
    "pg_get_wal_resource_managers",
    "pg_get_wal_summarizer_state",
    "pg_has_role",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_index_column_has_property",
    "pg_index_has_property",
    "pg_indexam_has_property",
    "pg_indexes_size",
    "pg_input_error_info",
    "pg_input_is_valid",
    "pg_is_in_backup",
    "pg_is_in_recovery",
    "pg_is_other_temp_schema",
    "pg_is_wal_replay_paused",
    "pg_isolation_test_session_is_blocked",
    "pg_jit_available",
    "pg_last_committed_xact",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_listening_channels",
    "pg_lock_status",
    "pg_my_temp_schema",
    "pg_notification_queue_usage",
    "pg_opclass_is_visible",
    "pg_operator_is_visible",
    "pg_opfamily_is_visible",
    "pg_partition_ancestors",
    "pg_partition_tree",
    "pg_postmaster_start_time",
    "pg_prepared_xact",
    "pg_relation_filenode",
    "pg_relation_filepath",
    "pg_relation_size",
    "pg_replication_origin_progress",
    "pg_replication_origin_session_is_setup",
    "pg_replication_origin_session_progress",
    "pg_safe_snapshot_blocking_pids",
    "pg_sequence_last_value",
    "pg_show_all_file_settings",
    "pg_show_replication_origin_status",
    "pg_size_bytes",
    "pg_size_pretty",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_stat_clear_snapshot",
    "pg_stat_force_next_flush",
    "pg_stat_get_backend_io",
    "pg_stat_get_backend_wal",
    "pg_stat_get_io",
    "pg_stat_get_recovery_prefetch",
    "pg_stat_get_xact_blocks_fetched",
    "pg_stat_get_xact_blocks_hit",
    "pg_stat_get_xact_function_calls",
    "pg_stat_get_xact_function_self_time",
    "pg_stat_get_xact_function_total_time",
    "pg_stat_get_xact_numscans",
    "pg_stat_get_xact_tuples_deleted",
    "pg_stat_get_xact_tuples_fetched",
    "pg_stat_get_xact_tuples_hot_updated",
    "pg_stat_get_xact_tuples_inserted",
    "pg_stat_get_xact_tuples_newpage_updated",
    "pg_stat_get_xact_tuples_returned",
    "pg_stat_get_xact_tuples_updated",
    "pg_stat_have_stats",
    "pg_table_is_visible",
    "pg_table_size",
    "pg_tablespace_location",
    "pg_tablespace_size",
    "pg_total_relation_size",
    "pg_trigger_depth",
    "pg_ts_config_is_visible",
    "pg_ts_dict_is_visible",
    "pg_ts_parser_is_visible",
    "pg_ts_template_is_visible",
    "pg_type_is_visible",
    "pg_typeof",
    "pg_wal_lsn_diff",
    "pg_xact_commit_timestamp",
    "pg_xact_commit_timestamp_origin",
    "pg_xact_status",
    "phraseto_tsquery",
    "pi",
    "plainto_tsquery",
    "plpgsql_validator",
    "position",
    "pow",
    "power",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "random",
    "random_normal",
    "range_agg",
    "range_intersect_agg",
    "range_merge",
    "rank",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_substr",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "row_security_active",
    "row_to_json",
    "rpad",
    "rtrim",
    "scale",
    "session_user",
    "set_bit",
    "set_byte",
    "set_masklen",
    "setseed",
    "setweight",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "sign",
    "sin",
    "sind",
    "sinh",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "string_to_table",
    "strip",
    "strpos",
    "substr",
    "substring",
    "sum",
    "system",
    "tan",
    "tand",
    "tanh",
    "text",
    "timeofday",
    "timezone",
    "to_ascii",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_regclass",
    "to_regcollation",
    "to_regnamespace",
    "to_regoper",
    "to_regoperator",
    "to_regproc",
    "to_regprocedure",
    "to_regrole",
    "to_regtype",
    "to_regtypemod",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "transaction_timestamp",
    "translate",
    "trim",
    "trim_array",
    "trim_scale",
    "trunc",
    "ts_headline",
    "ts_rank",
    "ts_rank_cd",
    "tsvector_to_array",
    "txid_current_if_assigned",
    "txid_current_snapshot",
    "txid_snapshot_xmax",
    "txid_snapshot_xmin",
    "txid_status",
    "txid_visible_in_snapshot",
    "unistr",
    "unnest",
    "upper",
    "upper_inc",
    "upper_inf",
    "uuid_extract_timestamp",
    "uuid_extract_version",
    "uuidv4",
    "uuidv7",
    "var_pop",
    "var_samp",
    "variance",
    "version",
    "websearch_to_tsquery",
    "width_bucket",
    "xml_is_well_formed",
    "xmlagg",
    "xmlcomment",
    "xmlconcat",
    "xmlelement",
    "xmlforest",
    "xmlpi",
    "xmlroot",
    "xmltext",
    "xpath",
    "xpath_exists",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        for table in [READ_ONLY, BUILTIN_OPERATORS] {
            for pair in table.windows(2) {
                assert!(
                    pair[0] < pair[1],
                    "`{}` must sort before `{}`",
                    pair[0],
                    pair[1]
                );
            }
        }
    }

    #[test]
    fn qualified_builtin_name_in_another_schema_is_user_defined() {
        assert_eq!(effect(None, "upper"), Effect::ReadOnly);
        assert_eq!(effect(Some("pg_catalog"), "upper"), Effect::ReadOnly);
        assert_eq!(effect(Some("public"), "upper"), Effect::Unknown);
        assert_eq!(effect(None, "purge_old_rentals"), Effect::Unknown);
    }

    #[test]
    fn dangerous_names_match_in_any_schema() {
        assert!(matches!(
            effect(Some("public"), "dblink_exec"),
            Effect::Known(Class::Admin, _, _)
        ));
        assert!(matches!(
            effect(None, "lo_unlink"),
            Effect::Known(Class::Destructive, _, _)
        ));
    }
}
