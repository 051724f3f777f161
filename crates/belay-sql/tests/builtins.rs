//! The built-in function list (`data/pg_proc.tsv`) against a real server's `pg_proc`: the
//! list is what the server has, and belay says what every one of those functions does (a
//! read, or a known effect), so that a server version adding a function belay has not
//! classified fails here instead of being refused or held at a client's first catalog query.
//!
//! `BELAY_WRITE_BUILTINS=1` rewrites the list from the server instead of comparing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::BTreeMap;

use belay_scratch::Cluster;

/// Every function of `pg_catalog` by name, and of `information_schema` (SQL functions the
/// server creates there, which its views and drivers' metadata queries call) qualified.
const QUERY: &str = "SELECT name || E'\\t' || max(provolatile::text) FROM (\
     SELECT CASE WHEN pronamespace = 'pg_catalog'::regnamespace THEN proname::text \
     ELSE 'information_schema.' || proname END AS name, provolatile FROM pg_proc \
     WHERE pronamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)) f \
     GROUP BY name ORDER BY name COLLATE \"C\"";

fn listed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn every_built_in_function_of_the_server_is_listed_and_classified() {
    let dir = tempfile::tempdir().unwrap();
    if belay_scratch::is_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cluster = Cluster::start(&dir.path().join("pg"), None).unwrap();
    let version = cluster.psql("postgres", "SHOW server_version_num").unwrap();
    let rows = cluster.psql("postgres", QUERY).unwrap();
    cluster.stop().unwrap();
    let major = &version[..version.len() - 4];
    let server = listed(&rows);
    assert!(server.len() > 2000, "pg_proc read: {} names", server.len());

    if std::env::var_os("BELAY_WRITE_BUILTINS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/pg_proc.tsv");
        let header = format!(
            "# Every function in pg_catalog (and, qualified, information_schema) of PostgreSQL {major}, with the most volatile of its overloads' pg_proc.provolatile\n\
             # (i immutable, s stable, v volatile). Generated from pg_proc; regenerate with\n\
             # BELAY_WRITE_BUILTINS=1 cargo test -p belay-sql --test builtins (tests/builtins.rs checks it).\n"
        );
        std::fs::write(path, format!("{header}{rows}\n")).unwrap();
        return;
    }

    let unclassified: Vec<&String> = server
        .keys()
        .filter(|name| !belay_sql::classified_builtin(name))
        .collect();
    assert!(
        unclassified.is_empty(),
        "PostgreSQL {major} has built-in functions belay does not classify (say in \
         functions.rs what each does): {unclassified:?}"
    );

    let list = listed(belay_sql::BUILTINS);
    let list_major = belay_sql::BUILTINS
        .lines()
        .next()
        .and_then(|l| l.split("PostgreSQL ").nth(1))
        .and_then(|l| l.split(',').next())
        .unwrap_or_default();
    if list_major == major {
        let missing: Vec<&String> = server.keys().filter(|n| !list.contains_key(*n)).collect();
        let extra: Vec<&String> = list.keys().filter(|n| !server.contains_key(*n)).collect();
        let changed: Vec<(&String, &String, &String)> = server
            .iter()
            .filter_map(|(n, v)| list.get(n).filter(|l| *l != v).map(|l| (n, l, v)))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty() && changed.is_empty(),
            "data/pg_proc.tsv is not PostgreSQL {major}'s pg_proc (regenerate it with \
             BELAY_WRITE_BUILTINS=1): missing {missing:?}, extra {extra:?}, volatility \
             changed {changed:?}"
        );
    }
}

#[test]
fn an_immutable_or_stable_built_in_is_a_read_and_a_volatile_one_needs_a_rule() {
    let classifier = belay_sql::Classifier::default();
    let class = |sql: &str| classifier.classify(sql).class;
    // Stable, unlisted by hand before the list was generated from pg_proc.
    assert_eq!(
        class("SELECT pg_get_statisticsobjdef_columns(1)"),
        belay_core::Class::Read
    );
    assert_eq!(
        class("SELECT pg_catalog.shobj_description(1, 'pg_database')"),
        belay_core::Class::Read
    );
    // Volatile, and read-only by belay's rule.
    assert_eq!(
        class("SELECT * FROM pg_partition_ancestors('t')"),
        belay_core::Class::Read
    );
    // Volatile with an effect.
    assert_eq!(class("SELECT nextval('s')"), belay_core::Class::Write);
    assert_eq!(
        class("SELECT brin_summarize_range('i', 0)"),
        belay_core::Class::Write
    );
    // The server's own SQL functions in information_schema, which pgJDBC's metadata calls.
    assert_eq!(
        class("SELECT (information_schema._pg_expandarray(ARRAY[1])).n"),
        belay_core::Class::Read
    );
    assert_eq!(
        class("SELECT _pg_expandarray(ARRAY[1])"),
        belay_core::Class::Write
    );
    // A user function of a schema of its own is never a built-in.
    assert_eq!(
        class("SELECT app.shobj_description(1, 'x')"),
        belay_core::Class::Write
    );
}
