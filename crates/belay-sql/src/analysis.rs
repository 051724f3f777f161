//! The classifier's answer: an `Analysis` of the whole input, one `Statement` per statement,
//! with the relations each one touches and the flags that explain its class.

use std::collections::BTreeSet;
use std::fmt;

use belay_core::Class;
use serde::Serialize;

pub use crate::settings::{SettingChange, SettingValue};

/// What the classifier found in one input string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analysis {
    /// The most dangerous class of the statements; `read` for an input with no statement.
    pub class: Class,
    /// The statements in the order they appear.
    pub statements: Vec<Statement>,
}

/// One statement of the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    pub class: Class,
    /// What kind of statement it is, as PostgreSQL's command tags name it: `SELECT`,
    /// `DROP TABLE`, `CREATE FUNCTION`, ...
    pub kind: String,
    /// The relations, schemas and databases it names, each once, with the strongest access.
    pub relations: Vec<Relation>,
    /// Why the class is what it is; sorted, each once.
    pub flags: BTreeSet<Flag>,
    /// A sentence a person understands, saying why the statement has its class.
    pub reason: String,
    /// Byte range of the statement in the input.
    #[serde(skip)]
    pub span: std::ops::Range<usize>,
    /// For `EXECUTE name` whose `PREPARE` is not in the same input: the name, so that a caller
    /// that knows the session's prepared statements can resolve it. The class is `unknown`
    /// until then.
    #[serde(skip)]
    pub unresolved_prepared: Option<String>,
    /// What the statement does to the session's SQL-level prepared statements, for a caller
    /// that tracks them across inputs.
    #[serde(skip)]
    pub prepared_effect: Option<PreparedEffect>,
    /// Changes the statement makes to capped settings (memory, parallelism, the timeouts
    /// belay pins), which the caller checks against the environment's limits.
    #[serde(skip)]
    pub settings: Vec<SettingChange>,
    /// What only the database's catalog can tell about the statement: the functions,
    /// operators and types it names, and its class without the rule for code belay cannot
    /// see, for a caller that knows the catalog (`Catalog::resolve`).
    #[serde(skip)]
    pub code: Code,
    /// For a text that does not parse: where the parser's error is, as PostgreSQL reports
    /// it (1-based, in characters).
    #[serde(skip)]
    pub error_position: Option<usize>,
    /// When the statement is itself a `SET`, `RESET` or `SHOW` of one setting: which, for a
    /// gateway that keeps what it pins by rewriting the statement (`application_name`, a
    /// limit lowered to the environment's cap).
    #[serde(skip)]
    pub session: Option<SessionCommand>,
}

/// A statement that sets, resets or shows one run-time setting, as the whole statement (never
/// a `set_config` call or a function's `SET` clause, which cannot be rewritten alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// `SET [SESSION | LOCAL] name TO value`, `SET name TO DEFAULT`, `RESET name`; the
    /// name in lower case.
    Set {
        name: String,
        value: SettingValue,
        local: bool,
    },
    /// `SHOW name`, the name in lower case.
    Show { name: String },
}

/// The names in a statement whose meaning lives in the database's catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Code {
    /// The class and reason the statement would have if every function and operator that is
    /// not a known built-in did nothing (before `Catalog::resolve` says what each does).
    pub base: Option<(Class, String)>,
    /// Every function called, built-in or not: `(schema, name, known)`, where `known` says a
    /// built-in of that name is known (read-only or with a known effect). A user function
    /// of the same name may still be the one the server picks (overloads resolve by argument
    /// types across schemas).
    pub calls: BTreeSet<(Option<String>, String, bool)>,
    /// Every operator named, built-in or not: `(schema, symbol)`.
    pub operators: BTreeSet<(Option<String>, String)>,
    /// Every type named (casts, column definitions, signatures): `(schema, name)`.
    pub types: BTreeSet<(Option<String>, String)>,
    /// What the statement may change in the catalog: `None` for nothing.
    pub changes: Option<Changes>,
}

/// What a statement may change in the catalog, so that a caller's cached copy of it is not
/// trusted for those objects until it has read the catalog again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Objects of these names (every identifier the statement holds, unqualified).
    Named(BTreeSet<String>),
    /// Anything: code that runs DDL inside, extensions, statements belay cannot analyse.
    Anything,
}

/// A statement's effect on the session's prepared statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreparedEffect {
    /// `PREPARE name AS ...`: the statement's own text defines `name`.
    Prepare(String),
    /// `DEALLOCATE name`.
    Deallocate(String),
    /// `DEALLOCATE ALL` or `DISCARD ALL`.
    DeallocateAll,
}

/// Something a statement names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Relation {
    /// The name as written, schema-qualified only where the statement qualified it.
    pub name: String,
    pub object: ObjectKind,
    pub access: Access,
}

/// What kind of object a name in `relations` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// A table, view, sequence, index or other relation.
    Relation,
    Schema,
    /// A database of the cluster, which may belong to another environment.
    Database,
    /// A role of the cluster, named in a grant, an owner or a role statement.
    Role,
    /// A tablespace: storage shared by the whole cluster.
    Tablespace,
    /// A logical replication subscription.
    Subscription,
}

impl ObjectKind {
    /// Whether objects of this kind belong to the cluster rather than to one database, so
    /// that another environment on the same server can own them.
    pub fn cluster_level(self) -> bool {
        matches!(
            self,
            ObjectKind::Database
                | ObjectKind::Role
                | ObjectKind::Tablespace
                | ObjectKind::Subscription
        )
    }
}

/// How a statement touches a relation, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Its rows are read (or it is only referenced).
    Read,
    /// Its rows are inserted, updated or deleted.
    Write,
    /// Its definition is created or changed.
    Alter,
    /// It is dropped.
    Drop,
}

/// A fact about a statement that explains its class. Policies can test flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// UPDATE or DELETE without a WHERE clause: every row.
    NoWhere,
    /// A WHERE (or MERGE ON) that is true for every row, such as `true` or `1 = 1`.
    TautologicalWhere,
    /// `CASCADE`: dependent objects go too.
    Cascade,
    /// A data-modifying statement inside `WITH`.
    WritableCte,
    /// `EXPLAIN ANALYZE` runs the statement it explains, and that statement writes.
    ExplainAnalyzeWrite,
    /// Procedural code (a DO block, a function or procedure body) was analysed.
    Procedural,
    /// SQL built at run time (`EXECUTE` of a computed string) that cannot be analysed.
    DynamicSql,
    /// A built-in function with a side effect: backend control, large objects, locks, ...
    SideEffectFunction,
    /// A function or operator that is not a known read-only built-in.
    UnknownFunction,
    /// The input holds more than one statement.
    MultipleStatements,
    /// `SELECT ... FOR UPDATE/SHARE` or `LOCK`: rows or tables are locked.
    RowLock,
    /// `SELECT ... INTO` creates a table.
    SelectInto,
    /// Runs a program on the database server.
    Program,
    /// Reads or writes files on the database server.
    ServerFile,
    /// `EXECUTE` of a statement prepared in the same input; the class is the prepared one's.
    PreparedStatement,
    /// `EXECUTE` of a name not prepared in this input.
    UnresolvedPrepared,
    /// Changes a setting that identity, read-only mode, logging or parsing depends on.
    SafetySetting,
    /// `ALTER TABLE ... DROP COLUMN`.
    DropColumn,
    /// A rule or trigger that runs code later, on other statements.
    StoredCode,
    /// `COPY ... FROM STDIN`: the rows follow the statement as a stream, not in its text.
    StreamedData,
    /// Runs code found in the database's catalog: a user-defined function, a view, trigger,
    /// rule, policy, constraint or default, a user-defined operator, cast or type.
    CatalogCode,
    /// The input could not be parsed.
    ParseError,
    /// The input is larger than the configured limit.
    TooLarge,
    /// The input nests deeper than the limit.
    TooDeep,
}

impl Flag {
    /// The snake_case name used in JSON and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::NoWhere => "no_where",
            Flag::TautologicalWhere => "tautological_where",
            Flag::Cascade => "cascade",
            Flag::WritableCte => "writable_cte",
            Flag::ExplainAnalyzeWrite => "explain_analyze_write",
            Flag::Procedural => "procedural",
            Flag::DynamicSql => "dynamic_sql",
            Flag::SideEffectFunction => "side_effect_function",
            Flag::UnknownFunction => "unknown_function",
            Flag::MultipleStatements => "multiple_statements",
            Flag::RowLock => "row_lock",
            Flag::SelectInto => "select_into",
            Flag::Program => "program",
            Flag::ServerFile => "server_file",
            Flag::PreparedStatement => "prepared_statement",
            Flag::UnresolvedPrepared => "unresolved_prepared",
            Flag::SafetySetting => "safety_setting",
            Flag::DropColumn => "drop_column",
            Flag::StoredCode => "stored_code",
            Flag::StreamedData => "streamed_data",
            Flag::CatalogCode => "catalog_code",
            Flag::ParseError => "parse_error",
            Flag::TooLarge => "too_large",
            Flag::TooDeep => "too_deep",
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Alter => "alter",
            Access::Drop => "drop",
        })
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Relation => "relation",
            ObjectKind::Schema => "schema",
            ObjectKind::Database => "database",
            ObjectKind::Role => "role",
            ObjectKind::Tablespace => "tablespace",
            ObjectKind::Subscription => "subscription",
        })
    }
}

impl Analysis {
    /// An input that could not be analysed at all: one `unknown` statement saying why.
    pub(crate) fn unknown(input_len: usize, flag: Flag, reason: String) -> Analysis {
        Analysis {
            class: Class::Unknown,
            statements: vec![Statement {
                class: Class::Unknown,
                kind: "UNKNOWN".to_owned(),
                relations: Vec::new(),
                flags: BTreeSet::from([flag]),
                reason,
                span: 0..input_len,
                unresolved_prepared: None,
                prepared_effect: None,
                settings: Vec::new(),
                code: Code {
                    changes: Some(Changes::Anything),
                    ..Code::default()
                },
                session: None,
                error_position: None,
            }],
        }
    }

    /// Sets the input's class to the most dangerous of its statements' again, after a caller
    /// changed a statement (resolving an `EXECUTE`, applying a limit).
    pub fn reclassify(&mut self) {
        self.class = self
            .statements
            .iter()
            .map(|s| s.class)
            .max()
            .unwrap_or(Class::Read);
    }

    /// Every flag of every statement.
    pub fn flags(&self) -> BTreeSet<Flag> {
        self.statements
            .iter()
            .flat_map(|s| s.flags.iter().copied())
            .collect()
    }

    /// The reason of the first statement that has the input's class.
    pub fn reason(&self) -> &str {
        self.statements
            .iter()
            .find(|s| s.class == self.class)
            .map(|s| s.reason.as_str())
            .unwrap_or("the input holds no statement")
    }
}
