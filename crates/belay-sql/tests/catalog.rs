//! `Catalog`: stored code classified by the classifier, names resolved against it, chains and
//! cycles followed to the end, unsettled names and unreadable code `unknown`. The catalog is
//! built here from the same rows a database gives (`belay-app/tests/catalog.rs` reads them
//! from a real one).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use belay_core::Class;
use belay_sql::{
    analyze, Catalog, Flag, FunctionSource, Limits, ObjectSource, Source, Stored, StoredCode,
    Unsettled,
};

fn function(name: &str, language: &str, volatility: char, body: Option<&str>) -> FunctionSource {
    FunctionSource {
        schema: "public".to_owned(),
        name: name.to_owned(),
        language: language.to_owned(),
        volatility,
        extension: None,
        definition: body.map(|b| {
            format!(
                "CREATE OR REPLACE FUNCTION public.{name}() RETURNS integer LANGUAGE {language} AS $body${b}$body$"
            )
        }),
        runs: Vec::new(),
    }
}

fn catalog() -> Catalog {
    let mut native = function("digest", "c", 'i', None);
    native.extension = Some("pgcrypto".to_owned());
    let source = Source {
        functions: vec![
            function("reads", "sql", 's', Some("SELECT count(*)::int FROM t")),
            function("wipes", "plpgsql", 'v', Some("BEGIN DELETE FROM t; RETURN 1; END")),
            // A cycle whose far end destroys: both ends are destructive.
            function("ping", "sql", 'v', Some("SELECT pong()")),
            function("pong", "plpgsql", 'v', Some("BEGIN PERFORM ping(); DROP TABLE t; RETURN 1; END")),
            function("lower", "sql", 'v', Some("DELETE FROM t RETURNING 1")),
            function("opaque", "plperlu", 'v', None),
            native,
            function("digest_v", "c", 'v', None),
        ],
        builtins: vec![
            "lower".to_owned(),
            "pg_added_by_a_later_release".to_owned(),
            "getdatabaseencoding".to_owned(),
        ],
        stable_builtins: vec!["getdatabaseencoding".to_owned()],
        relations: vec![
            ObjectSource {
                schema: "public".to_owned(),
                name: "audited".to_owned(),
                on_read: Vec::new(),
                on_write: vec![Stored {
                    label: "trigger `a` of `public.audited`".to_owned(),
                    what: StoredCode::Text(
                        "CREATE TRIGGER a AFTER INSERT ON public.audited FOR EACH ROW EXECUTE FUNCTION public.wipes()"
                            .to_owned(),
                    ),
                }],
            },
            ObjectSource {
                schema: "public".to_owned(),
                name: "through".to_owned(),
                on_read: vec![Stored {
                    label: "view `public.through`".to_owned(),
                    what: StoredCode::Text("SELECT id FROM public.audited".to_owned()),
                }],
                on_write: vec![Stored {
                    label: "view `public.through`".to_owned(),
                    what: StoredCode::WritesThrough("SELECT id FROM public.audited".to_owned()),
                }],
            },
            ObjectSource {
                schema: "pg_temp_3".to_owned(),
                name: "scratch".to_owned(),
                on_read: vec![Stored {
                    label: "view `pg_temp_3.scratch`".to_owned(),
                    what: StoredCode::Text("SELECT wipes()".to_owned()),
                }],
                on_write: Vec::new(),
            },
            ObjectSource {
                schema: "public".to_owned(),
                name: "v".to_owned(),
                on_read: vec![Stored {
                    label: "view `public.v`".to_owned(),
                    what: StoredCode::Text("SELECT reads() AS n".to_owned()),
                }],
                on_write: Vec::new(),
            },
        ],
        operators: vec![ObjectSource {
            schema: "public".to_owned(),
            name: "===".to_owned(),
            on_read: vec![Stored {
                label: "operator `public.===`".to_owned(),
                what: StoredCode::Call("public".to_owned(), "wipes".to_owned()),
            }],
            on_write: Vec::new(),
        }],
        types: Vec::new(),
        event_triggers: Vec::new(),
    };
    Catalog::build(&source, &Limits::default())
}

fn resolved(catalog: &Catalog, sql: &str, unsettled: &Unsettled) -> (Class, String, Vec<Flag>) {
    let analysis = analyze(sql, &Limits::default());
    let statement = &analysis.statements[0];
    let r = catalog.resolve(statement, unsettled).unwrap();
    let mut s = statement.clone();
    s.apply(&r);
    (r.class, r.reason, s.flags.into_iter().collect())
}

#[test]
fn functions_are_the_class_of_their_bodies_through_every_chain() {
    let c = catalog();
    let none = Unsettled::default();
    let cases = [
        ("SELECT reads()", Class::Read),
        ("SELECT * FROM v", Class::Read),
        ("SELECT wipes()", Class::Destructive),
        ("SELECT public.wipes()", Class::Destructive),
        ("SELECT ping()", Class::Destructive),
        ("SELECT pong()", Class::Destructive),
        // A user function of a built-in's name may be the one the server picks.
        ("SELECT lower(1)", Class::Destructive),
        ("SELECT pg_catalog.lower('A')", Class::Read),
        ("SELECT 1 === 2", Class::Destructive),
        ("INSERT INTO audited VALUES (1)", Class::Destructive),
        ("SELECT * FROM audited", Class::Read),
        ("SELECT opaque()", Class::Unknown),
        ("SELECT digest('x')", Class::Read),
        ("SELECT digest_v()", Class::Unknown),
        ("SELECT not_there()", Class::Unknown),
        // A volatile built-in of a server newer than belay's list, which no rule names.
        ("SELECT pg_added_by_a_later_release('t')", Class::Write),
        // A built-in declared IMMUTABLE or STABLE in every overload reads.
        ("SELECT getdatabaseencoding()", Class::Read),
        ("EXPLAIN SELECT wipes()", Class::Destructive),
        ("CALL wipes()", Class::Destructive),
        ("DO $$ BEGIN PERFORM wipes(); END $$", Class::Destructive),
        // A write to a view writes the table it reads, and fires that table's triggers.
        ("UPDATE through SET id = 2 WHERE id = 1", Class::Destructive),
        ("SELECT * FROM through", Class::Read),
        // A temporary view is the session's `pg_temp`, `pg_temp_N` in the catalog.
        ("SELECT * FROM pg_temp.scratch", Class::Destructive),
        ("SELECT * FROM scratch", Class::Destructive),
    ];
    for (sql, want) in cases {
        let (class, reason, _) = resolved(&c, sql, &none);
        assert_eq!(class, want, "{sql}: {reason}");
    }
    let (_, reason, flags) = resolved(&c, "INSERT INTO audited VALUES (1)", &none);
    assert!(
        reason.contains("trigger `a`") && reason.contains("wipes"),
        "{reason}"
    );
    assert!(flags.contains(&Flag::CatalogCode), "{flags:?}");
    let (_, reason, flags) = resolved(&c, "SELECT not_there()", &none);
    assert!(reason.contains("neither a built-in"), "{reason}");
    assert!(flags.contains(&Flag::UnknownFunction), "{flags:?}");
}

#[test]
fn schema_changes_are_what_the_event_triggers_they_fire_do() {
    let source = Source {
        functions: vec![function(
            "on_ddl",
            "plpgsql",
            'v',
            Some("BEGIN DROP TABLE IF EXISTS important; END"),
        )],
        event_triggers: vec![Stored {
            label: "event trigger `guard`".to_owned(),
            what: StoredCode::Call("public".to_owned(), "on_ddl".to_owned()),
        }],
        ..Source::default()
    };
    let c = Catalog::build(&source, &Limits::default());
    let none = Unsettled::default();
    let (class, reason, _) = resolved(&c, "CREATE TABLE x (id int)", &none);
    assert_eq!(class, Class::Destructive, "{reason}");
    assert!(reason.contains("event trigger"), "{reason}");
    assert_eq!(resolved(&c, "SELECT 1", &none).0, Class::Read);
    assert_eq!(
        resolved(&c, "INSERT INTO x VALUES (1)", &none).0,
        Class::Write
    );
}

#[test]
fn what_is_being_changed_is_unknown_through_every_chain() {
    let c = catalog();
    let pong = Unsettled {
        names: ["pong".to_owned()].into(),
        anything: false,
        ..Unsettled::default()
    };
    assert_eq!(resolved(&c, "SELECT ping()", &pong).0, Class::Unknown);
    assert_eq!(resolved(&c, "SELECT reads()", &pong).0, Class::Read);
    let reads = Unsettled {
        names: ["reads".to_owned()].into(),
        anything: false,
        ..Unsettled::default()
    };
    assert_eq!(resolved(&c, "SELECT * FROM v", &reads).0, Class::Unknown);
    let table = Unsettled {
        names: ["t".to_owned()].into(),
        anything: false,
        ..Unsettled::default()
    };
    assert_eq!(resolved(&c, "SELECT * FROM t", &table).0, Class::Unknown);
    let anything = Unsettled {
        names: Default::default(),
        anything: true,
        ..Unsettled::default()
    };
    assert_eq!(resolved(&c, "SELECT * FROM t", &anything).0, Class::Unknown);
    assert_eq!(resolved(&c, "SELECT 1", &anything).0, Class::Read);
}

#[test]
fn statements_say_what_they_may_change_in_the_catalog() {
    use belay_sql::Changes;
    let changes = |sql: &str| {
        analyze(sql, &Limits::default()).statements[0]
            .code
            .changes
            .clone()
    };
    let named = |sql: &str, name: &str| match changes(sql) {
        Some(Changes::Named(names)) => assert!(names.contains(name), "{sql}: {names:?}"),
        other => panic!("{sql}: {other:?}"),
    };
    named(
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "f",
    );
    named(
        "CREATE TRIGGER x AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION g()",
        "t",
    );
    named("CREATE POLICY p ON t USING (true)", "t");
    named("ALTER FUNCTION f() RENAME TO g", "g");
    named(
        "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = f)",
        "===",
    );
    named("CREATE INDEX ON t (lower(x))", "t");
    // DDL in a body being defined changes nothing until the function is called.
    named(
        "CREATE FUNCTION g() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE x; END $$",
        "g",
    );
    assert_eq!(changes("CREATE INDEX ON t (x)"), None);
    assert_eq!(changes("SELECT 1"), None);
    assert_eq!(changes("GRANT SELECT ON t TO r"), None);
    assert_eq!(
        changes("CREATE EXTENSION pgcrypto"),
        Some(Changes::Anything)
    );
    assert_eq!(
        changes("DO $$ BEGIN CREATE TABLE x (); END $$"),
        Some(Changes::Anything)
    );
}
