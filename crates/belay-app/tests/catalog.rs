//! Catalog-aware classification through the gateway, against a real PostgreSQL whose
//! database holds user-defined code: functions with innocent names that destroy data, views,
//! triggers, rules, policies, domains, operators and defaults that call them. Each statement
//! is sent by an agent whose grant it would exceed, and the database is checked afterwards:
//! what belay refused must not have happened. And the other way: a function that only reads
//! is a read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use belay_app::{App, AppGate};
use belay_config::{Config, Env};
use belay_core::{Class, Secret};
use belay_scratch::Cluster;
use tokio::sync::watch;

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    cluster: Cluster,
    app: Arc<App>,
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    tokens: BTreeMap<&'static str, Secret>,
    human: belay_store::Human,
}

/// The code an application's database may hold, made by its owner without belay.
const CODE: &str = r#"
SET check_function_bodies = off;
CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance int);
INSERT INTO accounts SELECT i, 'owner ' || i, 100 FROM generate_series(1, 10) i;
CREATE TABLE victims (id int);
INSERT INTO victims VALUES (1), (2);
CREATE FUNCTION balance_of(int) RETURNS int LANGUAGE sql STABLE
  AS 'SELECT balance FROM accounts WHERE id = $1';
CREATE FUNCTION lookup(int) RETURNS int LANGUAGE plpgsql
  AS $$ BEGIN DELETE FROM victims; RETURN $1; END $$;
CREATE FUNCTION lower(int) RETURNS int LANGUAGE sql
  AS 'DELETE FROM victims RETURNING 1';
CREATE FUNCTION outer_fn() RETURNS int LANGUAGE sql AS 'SELECT lookup(1)';
CREATE FUNCTION ping(int) RETURNS int LANGUAGE sql AS 'SELECT pong($1)';
CREATE FUNCTION pong(int) RETURNS int LANGUAGE plpgsql
  AS $$ BEGIN IF $1 > 0 THEN RETURN ping($1 - 1); END IF; DELETE FROM victims; RETURN 0; END $$;
CREATE VIEW innocent AS SELECT lookup(id) AS x FROM accounts;
CREATE VIEW plain AS SELECT id, owner FROM accounts;
CREATE TABLE log (id serial, note text);
CREATE FUNCTION wipe() RETURNS trigger LANGUAGE plpgsql
  AS $$ BEGIN TRUNCATE victims; RETURN NEW; END $$;
CREATE TRIGGER wipe_on_log AFTER INSERT ON log FOR EACH ROW EXECUTE FUNCTION wipe();
CREATE TABLE parent_log (id int);
CREATE TABLE child_log () INHERITS (parent_log);
INSERT INTO child_log VALUES (1);
CREATE TRIGGER wipe_child AFTER UPDATE ON child_log FOR EACH ROW EXECUTE FUNCTION wipe();
CREATE TABLE requests (id int);
CREATE RULE requests_delete AS ON INSERT TO requests DO INSTEAD DELETE FROM victims;
CREATE TABLE secrets (id int, v text);
INSERT INTO secrets VALUES (1, 'a');
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY seen ON secrets USING (lookup(id) > 0);
CREATE DOMAIN checked AS int CHECK (lookup(VALUE) > 0);
CREATE TABLE typed (c checked);
CREATE TYPE wrapped AS (inner_value checked);
CREATE TABLE wrapping (w wrapped);
CREATE TABLE indexed (id int);
CREATE FUNCTION dropper(int) RETURNS int LANGUAGE plpgsql
  AS $$ BEGIN DROP TABLE IF EXISTS never_there; RETURN $1; END $$;
CREATE FUNCTION index_key(int) RETURNS int LANGUAGE plpgsql IMMUTABLE
  AS $$ BEGIN RETURN dropper($1); END $$;
INSERT INTO indexed VALUES (1), (2);
CREATE INDEX indexed_key ON indexed (index_key(id));
CREATE FUNCTION eq_wipe(int, text) RETURNS bool LANGUAGE plpgsql
  AS $$ BEGIN DELETE FROM victims; RETURN true; END $$;
CREATE OPERATOR === (LEFTARG = int, RIGHTARG = text, FUNCTION = eq_wipe);
CREATE TABLE defaulted (id int, x int DEFAULT lookup(1));
CREATE VIEW log_view AS SELECT id, note FROM log;
CREATE TYPE mood AS ENUM ('calm', 'cross');
CREATE FUNCTION mood_lt(mood, mood) RETURNS bool LANGUAGE plpgsql
  AS $$ BEGIN DELETE FROM victims; RETURN false; END $$;
CREATE OPERATOR < (LEFTARG = mood, RIGHTARG = mood, FUNCTION = mood_lt);
CREATE TABLE moods (m mood);
CREATE FUNCTION fresh() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION settled() RETURNS int LANGUAGE sql AS 'SELECT 2';
CREATE FUNCTION drifting() RETURNS int LANGUAGE sql AS 'SELECT 3';
CREATE FUNCTION tune() RETURNS text LANGUAGE plpgsql
  AS $$ BEGIN RETURN set_config('work_mem', '4GB', false); END $$;
CREATE FUNCTION tuned() RETURNS int LANGUAGE sql SET work_mem = '4GB' AS 'SELECT 1';
CREATE FUNCTION calls_tune() RETURNS text LANGUAGE sql AS 'SELECT tune()';
CREATE TYPE floatrange AS RANGE (subtype = float8);
CREATE FUNCTION grows() RETURNS int LANGUAGE plpgsql
  AS $$ BEGIN UPDATE accounts SET balance = balance WHERE id = 1; RETURN 1; END $$;
"#;

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(&dir.path().join("pg"), None).unwrap();
        cluster.stop_when_gone(std::process::id()).unwrap();
        cluster
            .psql("postgres", "CREATE ROLE belay LOGIN PASSWORD 'upstream-secret'")
            .unwrap();
        for db in ["staging", "production", "events"] {
            cluster
                .psql("postgres", &format!("CREATE DATABASE {db} OWNER belay"))
                .unwrap();
            cluster.psql(db, &format!("SET ROLE belay; {CODE}")).unwrap();
        }
        // An event trigger (a superuser's) that destroys data on every schema change.
        cluster
            .psql(
                "events",
                "CREATE FUNCTION on_ddl() RETURNS event_trigger LANGUAGE plpgsql \
                 AS $$ BEGIN DELETE FROM victims; END $$; \
                 CREATE EVENT TRIGGER guard ON ddl_command_end EXECUTE FUNCTION on_ddl();",
            )
            .unwrap();
        std::fs::write(dir.path().join("upstream-password"), "upstream-secret\n").unwrap();
        std::fs::write(dir.path().join("policy.cedar"), belay_policy::DEFAULT_POLICY).unwrap();
        let env = |name: &str, tier: &str| {
            format!(
                "[environments.{name}]\ntier = \"{tier}\"\n\
                 [environments.{name}.postgres.main]\nhost = \"127.0.0.1\"\nport = {}\n\
                 database = \"{name}\"\nuser = \"belay\"\npassword = {{ file = \"upstream-password\" }}\n\
                 sslmode = \"disable\"\nfailure_domain = \"db\"\naccept_risks = [\"no_read_role\"]\n",
                cluster.port
            )
        };
        let text = format!(
            "state_dir = \"state\"\npolicy = \"policy.cedar\"\n[sql]\ncatalog_refresh = \"1s\"\n{}{}",
            env("staging", "non-production"),
            env("production", "production"),
        ) + &env("events", "non-production");
        let path = dir.path().join("belay.toml");
        std::fs::write(&path, &text).unwrap();
        let app = Arc::new(App::open(Config::load(&path, &NoEnv).unwrap()).unwrap());
        let (human, _) = app.add_human("test", "owner").unwrap();
        let mut tokens = BTreeMap::new();
        for (name, grants) in [
            ("reader", &[("staging", Class::Read), ("production", Class::Read)][..]),
            ("writer", &[("staging", Class::Write), ("events", Class::Ddl)][..]),
            ("builder", &[("staging", Class::Destructive)][..]),
            ("asker", &[("staging", Class::Read)][..]),
            ("architect", &[("staging", Class::Ddl)][..]),
            ("lister", &[("staging", Class::Read)][..]),
            ("tuner", &[("staging", Class::Read)][..]),
            ("prober", &[("staging", Class::Read)][..]),
            ("changer", &[("staging", Class::Read)][..]),
            ("waiter", &[("staging", Class::Read)][..]),
            ("drifter", &[("staging", Class::Read)][..]),
        ] {
            let grants = grants.iter().map(|(e, c)| ((*e).to_owned(), *c)).collect();
            let (_, token) = app.add_agent("test", name, "owner", &grants, None).unwrap();
            tokens.insert(name, token);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        runtime.spawn(belay_pg::serve(
            listener,
            Arc::new(AppGate::new(app.clone())),
            belay_pg::Options::default(),
            rx,
        ));
        std::mem::forget(tx);
        Harness {
            _dir: dir,
            cluster,
            app,
            _runtime: runtime,
            addr,
            tokens,
            human,
        }
    })
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    let _ = harness();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn client(agent: &str, db: &str) -> tokio_postgres::Client {
    let h = harness();
    let conn = format!(
        "host=127.0.0.1 port={} user={agent} password={} dbname={db}",
        h.addr.port(),
        h.tokens[agent].expose()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{agent} cannot connect to {db}: {e}"));
    tokio::spawn(connection);
    client
}

fn upstream(db: &str, sql: &str) -> String {
    harness().cluster.psql(db, sql).unwrap()
}

/// The refusal of `sql`, which must be refused: its SQLSTATE, and its message and detail.
async fn refusal(c: &tokio_postgres::Client, sql: &str) -> (String, String) {
    match c.simple_query(sql).await {
        Ok(_) => panic!("`{sql}` was not refused"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("`{sql}`: not a database error: {e}"));
            (
                db.code().code().to_owned(),
                format!("{} / {}", db.message(), db.detail().unwrap_or_default()),
            )
        }
    }
}

fn victims_intact() {
    assert_eq!(upstream("staging", "SELECT count(*) FROM victims"), "2");
}

#[test]
fn a_function_that_only_reads_is_a_read_and_one_that_destroys_is_destructive_whatever_its_name() {
    let (read, refused) = block(async {
        let reader = client("reader", "staging").await;
        let read = reader
            .query_one("SELECT balance_of(3)", &[])
            .await
            .map(|r| r.get::<_, i32>(0));
        let mut refused = Vec::new();
        for sql in [
            "SELECT lookup(1)",
            "SELECT public.lookup(1)",
            "SELECT lower(1)",
            "SELECT outer_fn()",
            "SELECT ping(3)",
            "SELECT * FROM innocent",
            "SELECT * FROM secrets",
            "SELECT 1 === 'a'",
            "SELECT 1 OPERATOR(public.===) 'a'",
            "EXPLAIN SELECT lookup(1)",
            "SELECT x FROM (SELECT lookup(2) AS x) s",
            "SELECT 1::checked",
            "SELECT CAST(2 AS public.checked)",
            "SELECT LOOKUP(1)",
            "SELECT staging.public.lookup(1)",
            "COPY secrets TO STDOUT",
            "WITH w AS (SELECT lookup(1)) SELECT 1",
        ] {
            refused.push((sql, refusal(&reader, sql).await));
        }
        (read, refused)
    });
    assert_eq!(read.unwrap(), 100, "a function that only reads is a read");
    for (sql, (code, message)) in &refused {
        // Beyond a `read` grant in staging: held for a human's approval.
        assert_eq!(code, "YB001", "{sql}: {message}");
        assert!(message.contains("class: destructive"), "{sql}: {message}");
        assert!(
            message.contains("victims"),
            "{sql}: the refusal says what the code does: {message}"
        );
    }
    victims_intact();
}

#[test]
fn writes_are_what_the_triggers_rules_domains_and_defaults_they_fire_do() {
    let refused = block(async {
        let writer = client("writer", "staging").await;
        let mut refused = Vec::new();
        for sql in [
            "INSERT INTO log (note) VALUES ('hello')",
            "INSERT INTO requests VALUES (1)",
            "INSERT INTO typed VALUES (1)",
            "INSERT INTO defaulted (id) VALUES (1)",
            "UPDATE secrets SET v = 'b' WHERE id = 1",
            "INSERT INTO log_view (note) VALUES ('through the view')",
            "SELECT count(*) FROM moods WHERE m < 'cross'",
            "UPDATE parent_log SET id = 2 WHERE id = 1",
            "INSERT INTO wrapping VALUES (ROW(1))",
        ] {
            refused.push((sql, refusal(&writer, sql).await));
        }
        // A plain view and a table without code are what they seem.
        writer
            .simple_query("SELECT * FROM plain WHERE id = 1")
            .await
            .unwrap();
        writer
            .simple_query("UPDATE accounts SET balance = 101 WHERE id = 1")
            .await
            .unwrap();
        refused
    });
    for (sql, (code, message)) in &refused {
        // Beyond a `write` grant in staging: held for a human's approval.
        assert_eq!(code, "YB001", "{sql}: {message}");
    }
    assert!(refused[0].1 .1.contains("wipe_on_log"), "{:?}", refused[0]);
    assert!(
        refused[1].1 .1.contains("requests_delete"),
        "{:?}",
        refused[1]
    );
    victims_intact();
    assert_eq!(upstream("staging", "SELECT count(*) FROM log"), "0");
    assert_eq!(upstream("staging", "SELECT count(*) FROM typed"), "0");
    assert_eq!(
        upstream("staging", "SELECT balance FROM accounts WHERE id = 1"),
        "101"
    );
}

#[test]
fn a_schema_change_is_what_the_event_triggers_it_fires_do() {
    let refused = block(async {
        let writer = client("writer", "events").await;
        refusal(&writer, "CREATE TABLE fresh_table (id int)").await
    });
    assert_eq!(refused.0, "YB001", "{}", refused.1);
    assert!(refused.1.contains("event trigger"), "{}", refused.1);
    assert_eq!(
        upstream(
            "events",
            "SELECT count(*) FROM victims WHERE to_regclass('fresh_table') IS NULL"
        ),
        "2"
    );
}

#[test]
fn built_ins_the_server_declares_immutable_or_stable_are_reads() {
    let (read, volatile) = block(async {
        let reader = client("lister", "staging").await;
        let read = reader
            .simple_query(
                "SELECT getdatabaseencoding(), pg_char_to_encoding('UTF8'), \
                 shobj_description(1, 'pg_database'), pg_current_snapshot(), \
                 pg_get_function_sqlbody('balance_of(int)'::regprocedure)",
            )
            .await
            .map(|_| ());
        // Declared VOLATILE, with an effect belay knows (every volatile built-in has a rule).
        let volatile = refusal(&reader, "SELECT pg_notify('jobs', 'go')").await;
        (read, volatile)
    });
    read.unwrap();
    assert_eq!(volatile.0, "YB001", "{}", volatile.1);
}

#[test]
fn a_setting_the_environment_caps_is_capped_inside_the_code_that_changes_it() {
    let (refused, work_mem) = block(async {
        let reader = client("tuner", "staging").await;
        let mut refused = Vec::new();
        for sql in ["SELECT tune()", "SELECT tuned()", "SELECT calls_tune()"] {
            refused.push((sql, refusal(&reader, sql).await));
        }
        let row = reader.query_one("SHOW work_mem", &[]).await.unwrap();
        (refused, row.get::<_, String>(0))
    });
    for (sql, (code, message)) in &refused {
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(message.contains("work_mem"), "{sql}: {message}");
    }
    assert_ne!(work_mem, "4GB");
}

#[test]
fn a_range_type_s_own_constructors_are_reads() {
    let row = block(async {
        let reader = client("reader", "staging").await;
        reader
            .query_one(
                "SELECT floatrange(1, 2)::text, floatrange(1, 2, '[]')::text, \
                 floatmultirange()::text, floatmultirange(floatrange(1, 2), floatrange(3, 4))::text",
                &[],
            )
            .await
            .map(|r| (1..4).fold(r.get::<_, String>(0), |all, i| all + " " + r.get::<_, &str>(i)))
    });
    assert_eq!(row.unwrap(), "[1,2) [1,2] {} {[1,2),[3,4)}");
}

#[test]
fn a_name_that_is_neither_built_in_nor_in_the_catalog_is_unknown() {
    let (code, message) = block(async {
        let reader = client("prober", "staging").await;
        refusal(&reader, "SELECT no_such_function(1)").await
    });
    assert_eq!(code, "42501");
    assert!(message.contains("neither a built-in"), "{message}");
}

#[test]
fn a_function_changed_through_belay_is_read_again_before_it_is_next_called() {
    let (before, refused) = block(async {
        let reader = client("changer", "staging").await;
        let builder = client("builder", "staging").await;
        let before = reader.simple_query("SELECT fresh()").await.map(|_| ());
        builder
            .simple_query(
                "CREATE OR REPLACE FUNCTION fresh() RETURNS int LANGUAGE plpgsql \
                 AS $$ BEGIN DELETE FROM victims; RETURN 1; END $$",
            )
            .await
            .unwrap();
        (before, refusal(&reader, "SELECT fresh()").await)
    });
    before.unwrap();
    assert_eq!(refused.0, "YB001", "{}", refused.1);
    assert!(refused.1.contains("fresh"), "{}", refused.1);
    victims_intact();
}

#[test]
fn a_function_being_changed_in_an_open_transaction_is_unknown_to_everyone_until_it_commits() {
    let (during, after) = block(async {
        let reader = client("waiter", "staging").await;
        let builder = client("builder", "staging").await;
        reader.simple_query("SELECT settled()").await.unwrap();
        builder.simple_query("BEGIN").await.unwrap();
        builder
            .simple_query(
                "CREATE OR REPLACE FUNCTION settled() RETURNS int LANGUAGE sql AS 'SELECT 20'",
            )
            .await
            .unwrap();
        let during = refusal(&reader, "SELECT settled()").await;
        builder.simple_query("COMMIT").await.unwrap();
        let after = reader
            .query_one("SELECT settled()", &[])
            .await
            .map(|r| r.get::<_, i32>(0));
        (during, after)
    });
    assert_eq!(during.0, "42501", "{}", during.1);
    assert!(during.1.contains("being changed"), "{}", during.1);
    assert_eq!(after.unwrap(), 20);
}

#[test]
fn a_table_another_session_made_and_dropped_is_made_again_in_a_transaction() {
    // A test suite's fixture: each test's connection drops and makes the same table in its
    // own transaction, right after the previous test's connection did and went away.
    let rows = block(async {
        for round in 0..3 {
            let builder = client("builder", "staging").await;
            for sql in [
                "BEGIN",
                "DROP TABLE IF EXISTS remade",
                "CREATE TABLE remade (id serial PRIMARY KEY, data text)",
                "INSERT INTO remade (data) VALUES ('a'), ('b')",
                "SELECT data FROM remade ORDER BY id",
                "COMMIT",
            ] {
                builder
                    .simple_query(sql)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}, {sql}: {:?}", e.as_db_error()));
            }
        }
        upstream("staging", "SELECT count(*) FROM remade")
    });
    assert_eq!(rows, "2");
}

#[test]
fn a_name_another_open_transaction_changes_may_be_dropped_or_made_but_not_written() {
    let (made, written, after) = block(async {
        let holder = client("builder", "staging").await;
        let other = client("builder", "staging").await;
        holder.simple_query("BEGIN").await.unwrap();
        holder
            .simple_query("DROP TABLE IF EXISTS contested")
            .await
            .unwrap();
        // Neither runs any code of `contested`: dropping or making it is decided as usual.
        other
            .simple_query("DROP TABLE IF EXISTS contested")
            .await
            .unwrap();
        let made = other
            .simple_query("CREATE TABLE contested (id int)")
            .await
            .map(|_| ());
        // A write would run whatever code the holder's transaction may give it.
        let written = refusal(&other, "INSERT INTO contested VALUES (1)").await;
        holder.simple_query("COMMIT").await.unwrap();
        let after = other
            .simple_query("INSERT INTO contested VALUES (2)")
            .await
            .map(|_| ());
        (made, written, after)
    });
    made.unwrap();
    assert_eq!(written.0, "42501", "{}", written.1);
    assert!(written.1.contains("being changed"), "{}", written.1);
    after.unwrap();
    assert_eq!(upstream("staging", "SELECT count(*) FROM contested"), "1");
}

#[test]
fn a_relation_locked_by_an_open_transaction_does_not_stall_reading_the_catalog() {
    // The server's deparsers wait for a lock on the relation; a migration holding one
    // outside belay must not make every change through belay unreadable meanwhile.
    let (called, locked) = block(async {
        let h = harness();
        let (migration, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=belay password=upstream-secret dbname=staging",
                h.cluster.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let writer = client("writer", "staging").await;
        writer
            .simple_query("SELECT id FROM log LIMIT 0")
            .await
            .unwrap();
        migration
            .batch_execute("BEGIN; LOCK TABLE log, defaulted IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let builder = client("builder", "staging").await;
        builder
            .simple_query(
                "CREATE FUNCTION made_while_locked() RETURNS int LANGUAGE sql AS 'SELECT 7'",
            )
            .await
            .unwrap();
        let called = builder
            .query_one("SELECT made_while_locked()", &[])
            .await
            .map(|r| r.get::<_, i32>(0));
        // What the locked tables' code was at the last read still counts.
        let locked = refusal(&writer, "INSERT INTO log (note) VALUES ('x')").await;
        migration.batch_execute("ROLLBACK").await.unwrap();
        (called, locked)
    });
    assert_eq!(called.unwrap(), 7);
    assert_ne!(locked.0, "00000");
    assert!(locked.1.contains("wipe"), "{}", locked.1);
}

#[test]
fn a_change_made_without_belay_is_seen_once_the_catalog_is_read_again() {
    let (before, after) = block(async {
        let reader = client("drifter", "staging").await;
        let before = reader.simple_query("SELECT drifting()").await.map(|_| ());
        upstream(
            "staging",
            "SET ROLE belay; CREATE OR REPLACE FUNCTION drifting() RETURNS int LANGUAGE plpgsql \
             AS $$ BEGIN DELETE FROM victims; RETURN 3; END $$",
        );
        // `sql.catalog_refresh` is one second here.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        (before, refusal(&reader, "SELECT drifting()").await)
    });
    before.unwrap();
    assert_eq!(after.0, "YB001", "{}", after.1);
    assert!(after.1.contains("drifting"), "{}", after.1);
    victims_intact();
}

#[test]
fn a_read_grant_in_production_reads_through_user_functions_that_only_read() {
    let (read, refused) = block(async {
        let reader = client("reader", "production").await;
        let read = reader
            .query_one("SELECT balance_of(2), (SELECT count(*) FROM plain)", &[])
            .await
            .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)));
        (read, refusal(&reader, "SELECT lookup(1)").await)
    });
    assert_eq!(read.unwrap(), (100, 10));
    assert_ne!(refused.0, "00000");
    assert_eq!(upstream("production", "SELECT count(*) FROM victims"), "2");
    let _ = &harness().app;
}

#[test]
fn a_migration_uses_in_its_own_transaction_what_it_just_defined() {
    let (seen, stamped) = block(async {
        let builder = client("builder", "staging").await;
        for sql in [
            "BEGIN",
            "CREATE TABLE stamped (id int, at timestamptz)",
            "CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql \
             AS $$ BEGIN NEW.at := now(); RETURN NEW; END $$",
            "CREATE TRIGGER stamp_it BEFORE INSERT ON stamped FOR EACH ROW EXECUTE FUNCTION stamp()",
            "INSERT INTO stamped (id) VALUES (1)",
            "CREATE FUNCTION wiper() RETURNS int LANGUAGE plpgsql \
             AS $$ BEGIN DELETE FROM victims WHERE id < 0; DROP TABLE IF EXISTS nothing_here; RETURN 0; END $$",
            "SELECT wiper()",
        ] {
            builder
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {:?}", e.as_db_error()));
        }
        let seen = builder
            .query_one("SELECT count(*) FROM stamped WHERE at IS NOT NULL", &[])
            .await
            .map(|r| r.get::<_, i64>(0));
        builder.simple_query("COMMIT").await.unwrap();
        (seen, upstream("staging", "SELECT count(*) FROM stamped"))
    });
    assert_eq!(seen.unwrap(), 1);
    assert_eq!(stamped, "1");
    // The call was decided by the body its own transaction gave the function.
    let events = harness().app.store().events(1, 1_000_000).unwrap();
    let call = events
        .iter()
        .rev()
        .find(|e| {
            e.draft.kind == "statement" && e.draft.detail["sql"].as_str() == Some("SELECT wiper()")
        })
        .expect("the call's decision");
    assert_eq!(
        call.draft.class.as_deref(),
        Some("destructive"),
        "{:?}",
        call.draft
    );
    victims_intact();
}

#[test]
fn an_approval_does_not_cover_code_that_grew_since_it_was_given() {
    let h = harness();
    let held = block(async {
        let reader = client("asker", "staging").await;
        refusal(&reader, "SELECT grows()").await
    });
    assert_eq!(held.0, "YB001", "{}", held.1);
    let id: u64 = held
        .1
        .split("approval request ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request id in {}", held.1));
    h.app
        .approve(&h.human, id, None, belay_app::CHANNEL_CLI)
        .unwrap();
    upstream(
        "staging",
        "SET ROLE belay; CREATE OR REPLACE FUNCTION grows() RETURNS int LANGUAGE plpgsql \
         AS $$ BEGIN DELETE FROM victims; RETURN 1; END $$",
    );
    let after = block(async {
        // `sql.catalog_refresh` is one second here.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let reader = client("asker", "staging").await;
        refusal(&reader, "SELECT grows()").await
    });
    assert_eq!(after.0, "42501", "{}", after.1);
    assert!(after.1.contains("ask for a new approval"), "{}", after.1);
    victims_intact();
}

#[test]
fn a_table_made_in_a_transaction_carries_the_code_it_copied() {
    let refused = block(async {
        let architect = client("architect", "staging").await;
        architect.simple_query("BEGIN").await.unwrap();
        architect
            .simple_query("CREATE TABLE liked (LIKE defaulted INCLUDING DEFAULTS)")
            .await
            .unwrap();
        let refused = refusal(&architect, "INSERT INTO liked (id) VALUES (1)").await;
        let _ = architect.simple_query("ROLLBACK").await;
        refused
    });
    // The copied default calls a function that deletes every row: beyond a `ddl` grant.
    assert_eq!(refused.0, "YB001", "{}", refused.1);
    assert!(refused.1.contains("class: destructive"), "{}", refused.1);
    victims_intact();
}

#[test]
fn maintenance_that_evaluates_index_expressions_is_what_they_call() {
    let refused = block(async {
        let architect = client("architect", "staging").await;
        let mut refused = Vec::new();
        for sql in [
            "ANALYZE indexed",
            "REINDEX TABLE indexed",
            "VACUUM ANALYZE indexed",
        ] {
            refused.push((sql, refusal(&architect, sql).await));
        }
        refused
    });
    for (sql, (code, message)) in &refused {
        // The index's function drops a table: beyond a `ddl` grant.
        assert_eq!(code, "YB001", "{sql}: {message}");
        assert!(message.contains("class: destructive"), "{sql}: {message}");
    }
}
