//! Reading one upstream database's catalog: the one query that reads its code (`catalog_sql`:
//! functions, views, rules, triggers, constraints, defaults, policies, indexes, types,
//! casts, operators, event triggers, each row tagged with its kind), what it leaves out
//! rather than wait for a lock, and the `Source` built from its rows.

use std::collections::HashMap;
use std::time::Duration;

use belay_config::Postgres;
use belay_sql::{FunctionSource, ObjectSource, Source, Stored, StoredCode};

const LOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `future` to its end from a thread that may block.
pub(super) fn block_on<T, F: std::future::Future<Output = Result<T, String>>>(
    future: F,
) -> Result<T, String> {
    match tokio::runtime::Handle::try_current() {
        // Called where blocking is allowed (a blocking thread of the runtime).
        Ok(handle) => handle.block_on(future),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime to read the catalog: {e}"))?
            .block_on(future),
    }
}

/// Schemas whose objects are the server's own.
const SYSTEM: &str = "('pg_catalog', 'information_schema', 'pg_toast')";

/// One text, so one connection and one round trip: every row begins with its kind.
fn catalog_sql() -> String {
    // Temporary objects of every session are included: another connection sees their
    // definitions, and an unqualified name may resolve to one.
    let user = |alias: &str| {
        format!("{alias}.nspname NOT IN {SYSTEM} AND {alias}.nspname NOT LIKE 'pg_toast%'")
    };
    let rows = [
        // Relations whose code cannot be deparsed now without waiting (below).
        format!(
            "SELECT 'unreadable', n.nspname::text, c.relname::text, NULL, NULL, NULL, NULL \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid IN (SELECT oid FROM unreadable) AND {}",
            user("n")
        ),
        // Functions: language, volatility, extension, definition (for `internal`, the
        // server's symbol it runs).
        format!(
            "SELECT 'f', n.nspname::text, p.proname::text, \
               CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE l.lanname::text END, \
               p.provolatile::text, \
               (SELECT e.extname::text FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid \
                 WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e' \
                   AND d.refclassid = 'pg_extension'::regclass LIMIT 1), \
               CASE WHEN l.lanname IN ('sql', 'plpgsql') AND p.prokind IN ('f', 'p') \
                 THEN pg_get_functiondef(p.oid) WHEN l.lanname = 'internal' THEN p.prosrc END \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
               JOIN pg_language l ON l.oid = p.prolang WHERE {}",
            user("n")
        ),
        // An aggregate's support functions.
        format!(
            "SELECT 'a', n.nspname::text, p.proname::text, fn.nspname::text, f.proname::text, NULL, NULL \
             FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid \
               JOIN pg_namespace n ON n.oid = p.pronamespace \
               JOIN pg_proc f ON f.oid IN (a.aggtransfn, a.aggfinalfn, a.aggcombinefn, a.aggserialfn, \
                 a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn) \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace WHERE {}",
            user("n")
        ),
        // Built-ins, and whether every overload of the name is declared IMMUTABLE or STABLE.
        "SELECT 'b', NULL, proname::text, bool_and(provolatile <> 'v')::text, NULL, NULL, NULL \
         FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace GROUP BY proname"
            .to_owned(),
        // Views and materialized views: their queries, run when they are read.
        format!(
            "SELECT 'view', n.nspname::text, c.relname::text, pg_get_viewdef(c.oid), NULL, NULL, NULL \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('v', 'm') AND {READABLE} AND {}",
            user("n")
        ),
        // Rules other than a view's own: ON SELECT runs on reads, the others on writes.
        format!(
            "SELECT 'rule', n.nspname::text, c.relname::text, pg_get_ruledef(r.oid), \
               CASE WHEN r.ev_type = '1' THEN 'r' ELSE 'w' END, r.rulename::text, NULL \
             FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE r.rulename <> '_RETURN' AND {READABLE} AND {}",
            user("n")
        ),
        format!(
            "SELECT 'trigger', n.nspname::text, c.relname::text, pg_get_triggerdef(t.oid), 'w', t.tgname::text, NULL \
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE NOT t.tgisinternal AND {READABLE} AND {}",
            user("n")
        ),
        format!(
            "SELECT 'check', n.nspname::text, c.relname::text, pg_get_expr(k.conbin, k.conrelid), 'w', k.conname::text, NULL \
             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE k.contype = 'c' AND {READABLE} AND {}",
            user("n")
        ),
        // A write to the referenced table may cascade to the referencing one.
        format!(
            "SELECT 'cascade', rn.nspname::text, r.relname::text, n.nspname::text, c.relname::text, k.conname::text, NULL \
             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_class r ON r.oid = k.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace \
             WHERE k.contype = 'f' AND {}",
            user("rn")
        ),
        // A write to a parent table or a partitioned one reaches its children's rows, and
        // their own triggers fire.
        format!(
            "SELECT 'cascade', pn.nspname::text, p.relname::text, n.nspname::text, c.relname::text, 'inheritance', NULL \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace \
             WHERE {}",
            user("pn")
        ),
        format!(
            "SELECT 'default', n.nspname::text, c.relname::text, pg_get_expr(d.adbin, d.adrelid), 'w', a.attname::text, NULL \
             FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
             WHERE {READABLE} AND {}",
            user("n")
        ),
        format!(
            "SELECT 'policy', n.nspname::text, c.relname::text, pg_get_expr(p.polqual, p.polrelid), \
               p.polcmd::text, p.polname::text, pg_get_expr(p.polwithcheck, p.polrelid) \
             FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {READABLE} AND {}",
            user("n")
        ),
        format!(
            "SELECT 'index', n.nspname::text, c.relname::text, pg_get_expr(i.indexprs, i.indrelid), 'w', \
               ic.relname::text, pg_get_expr(i.indpred, i.indrelid) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
               JOIN pg_class ic ON ic.oid = i.indexrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL) AND {READABLE} AND {}",
            user("n")
        ),
        // Columns of user-defined types: their casts, checks and I/O run with the column.
        format!(
            "SELECT 'column', n.nspname::text, c.relname::text, tn.nspname::text, t.typname::text, a.attname::text, NULL \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND {} AND {}",
            user("n"),
            user("tn")
        ),
        // Types: their functions (r: output, w: input), domain checks, bases and elements.
        format!(
            "SELECT 'typefn', tn.nspname::text, t.typname::text, fn.nspname::text, f.proname::text, \
               CASE WHEN f.oid IN (t.typoutput, t.typsend, t.typmodout) THEN 'r' ELSE 'w' END, NULL \
             FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_proc f ON f.oid IN (t.typinput, t.typoutput, t.typreceive, t.typsend, \
                 t.typmodin, t.typmodout, t.typanalyze, t.typsubscript) \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace \
             WHERE {} AND {}",
            user("tn"),
            user("fn")
        ),
        format!(
            "SELECT 'typefn', tn.nspname::text, t.typname::text, fn.nspname::text, f.proname::text, 'w', NULL \
             FROM pg_range r JOIN pg_type t ON t.oid = r.rngtypid \
               JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_proc f ON f.oid IN (r.rngcanonical, r.rngsubdiff) \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace WHERE {}",
            user("tn")
        ),
        format!(
            "SELECT 'domain', tn.nspname::text, t.typname::text, pg_get_expr(k.conbin, 0), 'w', k.conname::text, NULL \
             FROM pg_constraint k JOIN pg_type t ON t.oid = k.contypid \
               JOIN pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE k.contype = 'c' AND {}",
            user("tn")
        ),
        format!(
            "SELECT 'base', tn.nspname::text, t.typname::text, bn.nspname::text, b.typname::text, NULL, NULL \
             FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_type b ON b.oid IN (t.typbasetype, t.typelem) \
               JOIN pg_namespace bn ON bn.oid = b.typnamespace \
             WHERE {} AND {}",
            user("tn"),
            user("bn")
        ),
        // A composite type is what its attributes' types are; a range, what its subtype is.
        format!(
            "SELECT 'base', tn.nspname::text, t.typname::text, an.nspname::text, at.typname::text, NULL, NULL \
             FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped \
               JOIN pg_type at ON at.oid = a.atttypid JOIN pg_namespace an ON an.oid = at.typnamespace \
             WHERE t.typtype = 'c' AND {} AND {}",
            user("tn"),
            user("an")
        ),
        format!(
            "SELECT 'base', tn.nspname::text, t.typname::text, sn.nspname::text, st.typname::text, NULL, NULL \
             FROM pg_range r JOIN pg_type t ON t.oid = r.rngtypid \
               JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_type st ON st.oid = r.rngsubtype JOIN pg_namespace sn ON sn.oid = st.typnamespace \
             WHERE {} AND {}",
            user("tn"),
            user("sn")
        ),
        // Casts with a user-defined function, on each user-defined type they involve.
        format!(
            "SELECT 'cast', tn.nspname::text, t.typname::text, fn.nspname::text, f.proname::text, NULL, NULL \
             FROM pg_cast k JOIN pg_proc f ON f.oid = k.castfunc \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace \
               JOIN pg_type t ON t.oid IN (k.castsource, k.casttarget) \
               JOIN pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE {} AND {}",
            user("tn"),
            user("fn")
        ),
        // Operators on user-defined types run wherever values of the type are compared,
        // sorted, grouped or hashed, named or not.
        format!(
            "SELECT 'typeop', tn.nspname::text, t.typname::text, fn.nspname::text, f.proname::text, NULL, NULL \
             FROM pg_operator o JOIN pg_type t ON t.oid IN (o.oprleft, o.oprright) \
               JOIN pg_namespace tn ON tn.oid = t.typnamespace \
               JOIN pg_proc f ON f.oid = o.oprcode JOIN pg_namespace fn ON fn.oid = f.pronamespace \
             WHERE {}",
            user("tn")
        ),
            "SELECT 'event', NULL, e.evtname::text, fn.nspname::text, f.proname::text, NULL, NULL \
             FROM pg_event_trigger e JOIN pg_proc f ON f.oid = e.evtfoid \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace WHERE e.evtenabled <> 'D'"
            .to_owned(),
        // Operators: their function, and estimators that are not built-in.
        format!(
            "SELECT 'operator', n.nspname::text, o.oprname::text, fn.nspname::text, f.proname::text, NULL, NULL \
             FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace \
               JOIN pg_proc f ON f.oid = o.oprcode OR (f.oid IN (o.oprrest, o.oprjoin) \
                 AND f.pronamespace <> 'pg_catalog'::regnamespace) \
               JOIN pg_namespace fn ON fn.oid = f.pronamespace WHERE {}",
            user("n")
        ),
    ];
    // PostgreSQL 15's deparsers (`pg_get_expr` with a relation, `pg_get_viewdef`,
    // `pg_get_ruledef`, `pg_get_triggerdef`) lock the relation and every relation a query
    // inside names, so one open transaction holding ACCESS EXCLUSIVE (a DROP or ALTER not
    // yet committed, `LOCK TABLE`, `VACUUM FULL`) would stall the whole read. What they
    // would wait for, held or awaited by another session, is left out and named instead;
    // `lock_timeout` covers a lock taken between this look and the deparse.
    format!(
        "WITH locked AS (SELECT l.relation AS oid FROM pg_locks l \
           WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' \
             AND l.pid <> pg_backend_pid() \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())), \
         unreadable AS (SELECT oid FROM locked \
           UNION SELECT r.ev_class FROM pg_rewrite r JOIN pg_depend d \
             ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
             AND d.refclassid = 'pg_class'::regclass WHERE d.refobjid IN (SELECT oid FROM locked) \
           UNION SELECT p.polrelid FROM pg_policy p JOIN pg_depend d \
             ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid \
             AND d.refclassid = 'pg_class'::regclass WHERE d.refobjid IN (SELECT oid FROM locked)) \
         {}",
        rows.join(" UNION ALL ")
    )
}

/// The condition, on a relation `c`, that its code can be deparsed without waiting.
const READABLE: &str = "c.oid NOT IN (SELECT oid FROM unreadable)";

pub(super) async fn read_source(pg: &Postgres, label: &str) -> Result<Read, String> {
    let spec = crate::roles::own_connection(
        pg,
        &pg.user,
        pg.password.clone(),
        "belay:catalog",
        LOAD_TIMEOUT,
        label,
    );
    let mut spec = spec;
    spec.params
        .push(("lock_timeout".to_owned(), LOCK_TIMEOUT.to_owned()));
    let rows = belay_pg::simple_query(&spec, &catalog_sql()).await?;
    Ok(source_from_rows(rows))
}

/// How long the read waits for a lock taken after it looked at which are held.
const LOCK_TIMEOUT: &str = "2s";

/// What a read gave: the catalog, and the relations whose code it could not read then.
pub(super) struct Read {
    source: Source,
    unreadable: Vec<(String, String)>,
}

/// `read` with the code of each relation it could not read taken from `previous`, the last
/// read: what a relation locked by an open transaction is until that transaction ends (a
/// change through belay is unsettled meanwhile; one without it is seen at a later read, as
/// any). A relation `previous` does not know is `unknown`.
pub(super) fn carry_over(read: Read, previous: Option<&Source>) -> Source {
    let Read {
        mut source,
        unreadable,
    } = read;
    for (schema, name) in unreadable {
        let same = |o: &&ObjectSource| o.schema == schema && o.name == name;
        let old = previous
            .and_then(|p| p.relations.iter().find(same))
            .cloned();
        let at = source.relations.iter().position(|o| same(&o));
        match (old, at) {
            (Some(old), Some(at)) => source.relations[at] = old,
            (Some(old), None) => source.relations.push(old),
            (None, at) => {
                let piece = Stored {
                    label: format!("`{schema}.{name}`"),
                    what: StoredCode::Unreadable(
                        "another transaction holds it locked (ACCESS EXCLUSIVE: a schema change not yet committed, LOCK TABLE, VACUUM FULL), so belay cannot read its code until that transaction ends; send this again then"
                            .to_owned(),
                    ),
                };
                let at = at.unwrap_or_else(|| {
                    source.relations.push(ObjectSource {
                        schema: schema.clone(),
                        name: name.clone(),
                        on_read: Vec::new(),
                        on_write: Vec::new(),
                    });
                    source.relations.len() - 1
                });
                let o = &mut source.relations[at];
                o.on_read.push(piece.clone());
                o.on_write.push(piece);
            }
        }
    }
    source
}

/// Builds the `Source` from the tagged rows of `catalog_sql`.
fn source_from_rows(rows: Vec<Vec<Option<String>>>) -> Read {
    let mut unreadable = Vec::new();
    let mut source = Source::default();
    let mut functions: HashMap<(String, String), usize> = HashMap::new();
    let mut relations: HashMap<(String, String), usize> = HashMap::new();
    let mut types: HashMap<(String, String), usize> = HashMap::new();
    let mut operators: HashMap<(String, String), usize> = HashMap::new();
    fn object<'a>(
        list: &'a mut Vec<ObjectSource>,
        index: &mut HashMap<(String, String), usize>,
        schema: &str,
        name: &str,
    ) -> &'a mut ObjectSource {
        let at = *index
            .entry((schema.to_owned(), name.to_owned()))
            .or_insert_with(|| {
                list.push(ObjectSource {
                    schema: schema.to_owned(),
                    name: name.to_owned(),
                    on_read: Vec::new(),
                    on_write: Vec::new(),
                });
                list.len() - 1
            });
        &mut list[at]
    }
    let text = |sql: String| StoredCode::Text(sql);
    for row in rows {
        let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (kind, schema, name) = (col(0), col(1), col(2));
        let qualified = format!("`{schema}.{name}`");
        match kind.as_str() {
            "f" => {
                functions.insert((schema.clone(), name.clone()), source.functions.len());
                source.functions.push(FunctionSource {
                    schema,
                    name,
                    language: col(3),
                    volatility: col(4).chars().next().unwrap_or('v'),
                    extension: row.get(5).cloned().flatten(),
                    definition: row.get(6).cloned().flatten(),
                    runs: Vec::new(),
                });
            }
            "a" => {
                if let Some(&at) = functions.get(&(schema, name)) {
                    source.functions[at].runs.push((col(3), col(4)));
                }
            }
            "b" => {
                if col(3) == "true" {
                    source.stable_builtins.push(name.clone());
                }
                source.builtins.push(name);
            }
            "view" => {
                let o = object(&mut source.relations, &mut relations, &schema, &name);
                let label = format!("view {qualified}");
                o.on_read.push(Stored {
                    label: label.clone(),
                    what: text(col(3)),
                });
                o.on_write.push(Stored {
                    label,
                    what: StoredCode::WritesThrough(col(3)),
                });
            }
            "rule" | "trigger" => {
                let piece = Stored {
                    label: format!("{kind} `{}` of {qualified}", col(5)),
                    what: text(col(3)),
                };
                let o = object(&mut source.relations, &mut relations, &schema, &name);
                if col(4) == "r" {
                    o.on_read.push(piece);
                } else {
                    o.on_write.push(piece);
                }
            }
            "check" | "default" => {
                let what = if kind == "check" {
                    "check constraint"
                } else {
                    "default of column"
                };
                object(&mut source.relations, &mut relations, &schema, &name)
                    .on_write
                    .push(Stored {
                        label: format!("{what} `{}` of {qualified}", col(5)),
                        what: text(format!("SELECT {}", col(3))),
                    });
            }
            "cascade" => object(&mut source.relations, &mut relations, &schema, &name)
                .on_write
                .push(Stored {
                    label: if col(5) == "inheritance" {
                        format!("`{}.{}`, a child of {qualified}", col(3), col(4))
                    } else {
                        format!("foreign key `{}` to {qualified}", col(5))
                    },
                    what: StoredCode::Writes(col(3), col(4)),
                }),
            "policy" => {
                let label = format!("policy `{}` of {qualified}", col(5));
                let o = object(&mut source.relations, &mut relations, &schema, &name);
                for expr in [row.get(3), row.get(6)].into_iter().flatten().flatten() {
                    let piece = Stored {
                        label: label.clone(),
                        what: text(format!("SELECT {expr}")),
                    };
                    if matches!(col(4).as_str(), "r" | "*") {
                        o.on_read.push(piece.clone());
                    }
                    o.on_write.push(piece);
                }
            }
            "index" => {
                let label = format!("index `{}` of {qualified}", col(5));
                let o = object(&mut source.relations, &mut relations, &schema, &name);
                for expr in [row.get(3), row.get(6)].into_iter().flatten().flatten() {
                    o.on_write.push(Stored {
                        label: label.clone(),
                        what: text(format!("SELECT {expr}")),
                    });
                }
            }
            "column" => {
                let piece = Stored {
                    label: format!("column `{}` of {qualified}", col(5)),
                    what: StoredCode::Type(col(3), col(4)),
                };
                let o = object(&mut source.relations, &mut relations, &schema, &name);
                o.on_read.push(piece.clone());
                o.on_write.push(piece);
            }
            "event" => source.event_triggers.push(Stored {
                label: format!("event trigger `{name}`"),
                what: StoredCode::Call(col(3), col(4)),
            }),
            "typeop" => object(&mut source.types, &mut types, &schema, &name)
                .on_read
                .push(Stored {
                    label: format!("an operator on type {qualified}"),
                    what: StoredCode::Call(col(3), col(4)),
                }),
            "typefn" | "cast" => {
                let piece = Stored {
                    label: format!(
                        "{} of type {qualified}",
                        if kind == "cast" {
                            "a cast"
                        } else {
                            "an I/O function"
                        }
                    ),
                    what: StoredCode::Call(col(3), col(4)),
                };
                let o = object(&mut source.types, &mut types, &schema, &name);
                if kind == "cast" || col(5) == "r" {
                    o.on_read.push(piece.clone());
                }
                o.on_write.push(piece);
            }
            "domain" => object(&mut source.types, &mut types, &schema, &name)
                .on_write
                .push(Stored {
                    label: format!("check `{}` of domain {qualified}", col(5)),
                    what: text(format!("SELECT {}", col(3))),
                }),
            "base" => {
                let piece = Stored {
                    label: format!("type {qualified}"),
                    what: StoredCode::Type(col(3), col(4)),
                };
                let o = object(&mut source.types, &mut types, &schema, &name);
                o.on_read.push(piece.clone());
                o.on_write.push(piece);
            }
            "operator" => object(&mut source.operators, &mut operators, &schema, &name)
                .on_read
                .push(Stored {
                    label: format!("operator {qualified}"),
                    what: StoredCode::Call(col(3), col(4)),
                }),
            "unreadable" => unreadable.push((schema, name)),
            _ => {}
        }
    }
    Read { source, unreadable }
}
