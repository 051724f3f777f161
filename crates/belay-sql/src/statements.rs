//! The class of each utility statement (DDL, privileges, settings, COPY, transactions, server
//! administration) and the `kind` name of every statement.
//!
//! Fail closed: a statement type that no rule here names is `unknown`.

use belay_core::Class::{Admin, Ddl, Destructive, Privilege, Unknown, Write};
use pg_query::protobuf::{
    self as pb, AlterTableType, ObjectType, TransactionStmtKind, VariableSetKind,
};
use pg_query::{NodeEnum, NodeRef};

use crate::analysis::{Access, Flag, ObjectKind};
use crate::children::node_name;
use crate::settings::{SettingChange, SettingValue};
use crate::walk::{const_text, dotted, is_cascade, range_var_name, Walk};

/// Whether `node` is a statement that may change what the catalog says code does (functions,
/// views, triggers, rules, policies, constraints, defaults, types, operators, casts, or
/// anything belay does not know): every statement but those listed, which change data,
/// settings, sessions, privileges or the server, never code.
pub(crate) fn changes_catalog(node: NodeRef<'_>) -> bool {
    if let NodeRef::IndexStmt(s) = node {
        // An index on plain columns runs no code; one on expressions or with a predicate
        // runs them on every write.
        let expressions = s.index_params.iter().any(|p| match &p.node {
            Some(NodeEnum::IndexElem(e)) => e.expr.is_some(),
            _ => true,
        });
        return expressions || s.where_clause.is_some();
    }
    let name = node_name(node);
    name.ends_with("Stmt")
        && !matches!(
            node,
            NodeRef::TruncateStmt(_)
                | NodeRef::DropdbStmt(_)
                | NodeRef::CreatedbStmt(_)
                | NodeRef::CreateSchemaStmt(_)
                | NodeRef::CreateSeqStmt(_)
                | NodeRef::AlterSeqStmt(_)
                | NodeRef::CommentStmt(_)
                | NodeRef::SecLabelStmt(_)
                | NodeRef::VacuumStmt(_)
                | NodeRef::ClusterStmt(_)
                | NodeRef::ReindexStmt(_)
                | NodeRef::RefreshMatViewStmt(_)
                | NodeRef::GrantStmt(_)
                | NodeRef::GrantRoleStmt(_)
                | NodeRef::AlterDefaultPrivilegesStmt(_)
                | NodeRef::CreateRoleStmt(_)
                | NodeRef::AlterRoleStmt(_)
                | NodeRef::AlterRoleSetStmt(_)
                | NodeRef::DropRoleStmt(_)
                | NodeRef::CreateUserMappingStmt(_)
                | NodeRef::AlterUserMappingStmt(_)
                | NodeRef::DropUserMappingStmt(_)
                | NodeRef::AlterSystemStmt(_)
                | NodeRef::AlterDatabaseStmt(_)
                | NodeRef::AlterDatabaseSetStmt(_)
                | NodeRef::CreateTableSpaceStmt(_)
                | NodeRef::DropTableSpaceStmt(_)
                | NodeRef::AlterTableSpaceOptionsStmt(_)
                | NodeRef::CheckPointStmt(_)
                | NodeRef::CopyStmt(_)
                | NodeRef::VariableSetStmt(_)
                | NodeRef::TransactionStmt(_)
                | NodeRef::LockStmt(_)
                | NodeRef::NotifyStmt(_)
                | NodeRef::CallStmt(_)
                | NodeRef::PrepareStmt(_)
                | NodeRef::DeclareCursorStmt(_)
                | NodeRef::ReturnStmt(_)
                | NodeRef::PlassignStmt(_)
                | NodeRef::SetOperationStmt(_)
                | NodeRef::VariableShowStmt(_)
                | NodeRef::DeallocateStmt(_)
                | NodeRef::FetchStmt(_)
                | NodeRef::ClosePortalStmt(_)
                | NodeRef::ListenStmt(_)
                | NodeRef::UnlistenStmt(_)
                | NodeRef::DiscardStmt(_)
                | NodeRef::ConstraintsSetStmt(_)
                | NodeRef::ExplainStmt(_)
                | NodeRef::ExecuteStmt(_)
        )
}

impl Walk<'_> {
    /// Rules for statements other than queries and data changes; returns whether to walk the
    /// node's children. Nodes that are not statements pass through.
    pub(crate) fn utility(&mut self, node: NodeRef<'_>) -> bool {
        match node {
            NodeRef::TruncateStmt(s) => {
                let mut names = Vec::new();
                for rv in s.relations.iter().filter_map(|r| match &r.node {
                    Some(NodeEnum::RangeVar(rv)) => Some(rv),
                    _ => None,
                }) {
                    names.push(format!("`{}`", range_var_name(rv)));
                    self.range_var(rv, Access::Write);
                }
                if is_cascade(s.behavior) {
                    self.flag(Flag::Cascade);
                }
                self.raise(
                    Destructive,
                    format!("TRUNCATE removes every row of {}", names.join(", ")),
                );
            }
            NodeRef::DropStmt(s) => self.drop(s),
            NodeRef::DropdbStmt(s) => {
                self.relation(s.dbname.clone(), ObjectKind::Database, Access::Drop);
                self.raise(
                    Destructive,
                    format!(
                        "DROP DATABASE removes the database `{}` and all its data",
                        s.dbname
                    ),
                );
            }
            NodeRef::DropOwnedStmt(_) => self.raise(
                Destructive,
                "DROP OWNED removes every object the roles own, with their data",
            ),
            NodeRef::AlterTableStmt(s) => {
                if let Some(rv) = &s.relation {
                    self.range_var(rv, Access::Alter);
                }
                let name = s.relation.as_ref().map(range_var_name).unwrap_or_default();
                self.raise(Ddl, format!("ALTER changes the definition of `{name}`"));
            }
            NodeRef::AlterTableCmd(cmd) => self.alter_table_cmd(cmd),
            NodeRef::CreateStmt(s) => {
                self.created(s.relation.as_ref());
                self.ddl("CREATE TABLE defines a new table");
            }
            NodeRef::CreateTableAsStmt(s) => {
                self.created(s.into.as_ref().and_then(|i| i.rel.as_ref()));
                self.ddl("CREATE ... AS creates a new relation from a query");
            }
            NodeRef::IndexStmt(s) => {
                self.target(s.relation.as_ref(), Access::Alter);
                self.ddl("CREATE INDEX adds an index");
            }
            NodeRef::ViewStmt(s) => {
                self.created(s.view.as_ref());
                self.ddl("CREATE VIEW defines a view");
            }
            NodeRef::CreateSeqStmt(s) => {
                self.created(s.sequence.as_ref());
                self.ddl("CREATE SEQUENCE defines a sequence");
            }
            NodeRef::AlterSeqStmt(s) => {
                self.target(s.sequence.as_ref(), Access::Alter);
                self.ddl("ALTER SEQUENCE changes a sequence");
            }
            NodeRef::CreateForeignTableStmt(_) => {
                self.ddl("CREATE FOREIGN TABLE defines a foreign table")
            }
            NodeRef::RenameStmt(s) => {
                if ObjectType::try_from(s.rename_type) == Ok(ObjectType::ObjectRole) {
                    self.raise(Privilege, "ALTER ROLE ... RENAME changes a role");
                } else {
                    self.target(s.relation.as_ref(), Access::Alter);
                    self.ddl("RENAME changes the name of an object");
                }
            }
            NodeRef::AlterObjectSchemaStmt(s) => {
                self.target(s.relation.as_ref(), Access::Alter);
                self.ddl("ALTER ... SET SCHEMA moves an object to another schema");
            }
            NodeRef::CreateSchemaStmt(s) => {
                self.relation(s.schemaname.clone(), ObjectKind::Schema, Access::Alter);
                self.ddl("CREATE SCHEMA defines a schema");
            }
            NodeRef::CreatedbStmt(s) => {
                self.relation(s.dbname.clone(), ObjectKind::Database, Access::Alter);
                self.ddl("CREATE DATABASE creates a database");
            }
            NodeRef::RuleStmt(s) => {
                self.target(s.relation.as_ref(), Access::Alter);
                self.flag(Flag::StoredCode);
                self.ddl("CREATE RULE adds SQL that runs whenever the table is used");
            }
            NodeRef::CreateTrigStmt(s) => {
                self.target(s.relation.as_ref(), Access::Alter);
                self.flag(Flag::StoredCode);
                self.flag(Flag::UnknownFunction);
                let (schema, name) = crate::walk::qualified_name(&s.funcname);
                self.code.calls.insert((schema, name, false));
                self.ddl("CREATE TRIGGER adds a function that runs whenever the table changes");
            }
            NodeRef::CreateStatsStmt(_)
            | NodeRef::AlterStatsStmt(_)
            | NodeRef::CommentStmt(_)
            | NodeRef::DefineStmt(_)
            | NodeRef::CreateDomainStmt(_)
            | NodeRef::AlterDomainStmt(_)
            | NodeRef::CreateOpClassStmt(_)
            | NodeRef::CreateOpFamilyStmt(_)
            | NodeRef::AlterOpFamilyStmt(_)
            | NodeRef::CreateEnumStmt(_)
            | NodeRef::AlterEnumStmt(_)
            | NodeRef::CreateRangeStmt(_)
            | NodeRef::CompositeTypeStmt(_)
            | NodeRef::AlterTypeStmt(_)
            | NodeRef::AlterOperatorStmt(_)
            | NodeRef::AlterCollationStmt(_)
            | NodeRef::CreateConversionStmt(_)
            | NodeRef::CreateCastStmt(_)
            | NodeRef::CreateTransformStmt(_)
            | NodeRef::AlterTsdictionaryStmt(_)
            | NodeRef::AlterTsconfigurationStmt(_)
            | NodeRef::AlterObjectDependsStmt(_)
            | NodeRef::ReplicaIdentityStmt(_)
            | NodeRef::ImportForeignSchemaStmt(_)
            | NodeRef::AlterDatabaseRefreshCollStmt(_) => {
                let kind = statement_kind(node);
                self.ddl(format!("{kind} changes the schema"));
            }
            NodeRef::AlterFunctionStmt(s) => {
                self.ddl("ALTER FUNCTION changes a function");
                if s.actions.iter().any(|a| security_definer(a.node.as_ref())) {
                    self.raise(
                        Privilege,
                        "SECURITY DEFINER makes the function run with its owner's rights for every caller",
                    );
                }
            }
            NodeRef::VacuumStmt(_) | NodeRef::ClusterStmt(_) | NodeRef::ReindexStmt(_) => {
                // They evaluate the tables' index expressions (ANALYZE, REINDEX, CLUSTER's
                // rewrite), which is the tables' write code to a caller that knows it.
                match node {
                    NodeRef::VacuumStmt(v) => {
                        for rel in &v.rels {
                            if let Some(NodeEnum::VacuumRelation(vr)) = &rel.node {
                                self.target(vr.relation.as_ref(), Access::Alter);
                            }
                        }
                    }
                    NodeRef::ClusterStmt(c) => self.target(c.relation.as_ref(), Access::Alter),
                    NodeRef::ReindexStmt(r) => self.target(r.relation.as_ref(), Access::Alter),
                    _ => {}
                }
                let kind = statement_kind(node);
                self.ddl(format!(
                    "{kind} rewrites or reorganises tables and takes strong locks"
                ));
            }
            NodeRef::RefreshMatViewStmt(s) => {
                self.target(s.relation.as_ref(), Access::Write);
                self.raise(Write, "REFRESH MATERIALIZED VIEW replaces its contents");
            }
            NodeRef::GrantStmt(_)
            | NodeRef::GrantRoleStmt(_)
            | NodeRef::AlterDefaultPrivilegesStmt(_)
            | NodeRef::CreateRoleStmt(_)
            | NodeRef::AlterRoleStmt(_)
            | NodeRef::AlterRoleSetStmt(_)
            | NodeRef::DropRoleStmt(_)
            | NodeRef::ReassignOwnedStmt(_)
            | NodeRef::AlterOwnerStmt(_)
            | NodeRef::CreatePolicyStmt(_)
            | NodeRef::AlterPolicyStmt(_)
            | NodeRef::CreateUserMappingStmt(_)
            | NodeRef::AlterUserMappingStmt(_)
            | NodeRef::DropUserMappingStmt(_)
            | NodeRef::SecLabelStmt(_) => {
                let kind = statement_kind(node);
                self.raise(Privilege, format!("{kind} changes who may do what"));
            }
            NodeRef::AlterSystemStmt(_) => {
                self.raise(Admin, "ALTER SYSTEM changes the server's configuration")
            }
            NodeRef::AlterDatabaseStmt(_) | NodeRef::AlterDatabaseSetStmt(_) => self.raise(
                Admin,
                "ALTER DATABASE changes settings for every session of the database",
            ),
            NodeRef::CreateTableSpaceStmt(_)
            | NodeRef::DropTableSpaceStmt(_)
            | NodeRef::AlterTableSpaceOptionsStmt(_)
            | NodeRef::AlterTableMoveAllStmt(_) => {
                let kind = statement_kind(node);
                self.flag(Flag::ServerFile);
                self.raise(
                    Admin,
                    format!("{kind} manages storage on the server's file system"),
                );
            }
            NodeRef::CreateExtensionStmt(_)
            | NodeRef::AlterExtensionStmt(_)
            | NodeRef::AlterExtensionContentsStmt(_)
            | NodeRef::CreatePlangStmt(_)
            | NodeRef::CreateAmStmt(_)
            | NodeRef::LoadStmt(_) => {
                let kind = statement_kind(node);
                self.raise(Admin, format!("{kind} loads code into the server"));
            }
            NodeRef::CreateFdwStmt(_)
            | NodeRef::AlterFdwStmt(_)
            | NodeRef::CreateForeignServerStmt(_)
            | NodeRef::AlterForeignServerStmt(_) => {
                let kind = statement_kind(node);
                self.raise(
                    Admin,
                    format!("{kind} lets the server connect to other systems"),
                );
            }
            NodeRef::CreatePublicationStmt(_)
            | NodeRef::AlterPublicationStmt(_)
            | NodeRef::CreateSubscriptionStmt(_)
            | NodeRef::AlterSubscriptionStmt(_)
            | NodeRef::DropSubscriptionStmt(_) => {
                let kind = statement_kind(node);
                self.raise(Admin, format!("{kind} changes replication"));
            }
            NodeRef::CreateEventTrigStmt(_) | NodeRef::AlterEventTrigStmt(_) => {
                self.flag(Flag::StoredCode);
                self.raise(
                    Admin,
                    "event triggers run code on every schema change in the database",
                );
            }
            NodeRef::CheckPointStmt(_) => {
                self.raise(Admin, "CHECKPOINT forces a server checkpoint")
            }
            NodeRef::CopyStmt(s) => self.copy(s),
            NodeRef::VariableSetStmt(s) => self.set(s),
            NodeRef::TransactionStmt(s) => self.transaction(s),
            NodeRef::LockStmt(s) => {
                for rv in s.relations.iter().filter_map(|r| match &r.node {
                    Some(NodeEnum::RangeVar(rv)) => Some(rv),
                    _ => None,
                }) {
                    self.range_var(rv, Access::Read);
                }
                // ACCESS SHARE (mode 1) is the lock every SELECT takes, which only DROP,
                // TRUNCATE and the like wait on (pg_dump takes it on every table).
                if s.mode != 1 {
                    self.flag(Flag::RowLock);
                    self.raise(Write, "LOCK takes a table lock that other sessions wait on");
                }
            }
            NodeRef::NotifyStmt(_) => {
                self.raise(Write, "NOTIFY sends a notification to other sessions")
            }
            NodeRef::CallStmt(_) => {
                // The procedure's call is a FuncCall child: its rule decides the class.
            }
            NodeRef::PrepareStmt(_)
            | NodeRef::DeclareCursorStmt(_)
            | NodeRef::ReturnStmt(_)
            | NodeRef::PlassignStmt(_)
            | NodeRef::SetOperationStmt(_) => {
                // Their class is that of the query they hold, walked as a child.
            }
            NodeRef::VariableShowStmt(_)
            | NodeRef::DeallocateStmt(_)
            | NodeRef::FetchStmt(_)
            | NodeRef::ClosePortalStmt(_)
            | NodeRef::ListenStmt(_)
            | NodeRef::UnlistenStmt(_)
            | NodeRef::DiscardStmt(_)
            | NodeRef::ConstraintsSetStmt(_) => {}
            other if node_name(other).ends_with("Stmt") => {
                self.raise(
                    Unknown,
                    format!("statement type `{}` is not recognised", node_name(other)),
                );
                return false;
            }
            _ => {}
        }
        true
    }

    fn ddl(&mut self, reason: impl Into<String>) {
        self.raise(Ddl, reason);
    }

    /// The relation a CREATE makes. Never a system catalog, whatever its name: the server
    /// refuses to create one in `pg_catalog` (`allow_system_table_mods` is a superuser's
    /// setting), so a table named `pg_something` is made in the user's schema.
    fn created(&mut self, rv: Option<&pb::RangeVar>) {
        if let Some(rv) = rv {
            self.relation(range_var_name(rv), ObjectKind::Relation, Access::Alter);
        }
    }

    fn target(&mut self, rv: Option<&pb::RangeVar>, access: Access) {
        if let Some(rv) = rv {
            self.range_var(rv, access);
        }
    }

    fn drop(&mut self, s: &pb::DropStmt) {
        let object = ObjectType::try_from(s.remove_type).unwrap_or(ObjectType::Undefined);
        let what = object_type_name(object);
        let cascade = is_cascade(s.behavior);
        if cascade {
            self.flag(Flag::Cascade);
        }
        let mut names = Vec::new();
        for o in &s.objects {
            let name = match &o.node {
                Some(NodeEnum::List(l)) => dotted(&l.items),
                Some(NodeEnum::String(n)) => n.sval.clone(),
                Some(NodeEnum::TypeName(t)) => dotted(&t.names),
                Some(NodeEnum::ObjectWithArgs(f)) => dotted(&f.objname),
                _ => continue,
            };
            match object {
                ObjectType::ObjectSchema => {
                    self.relation(name.clone(), ObjectKind::Schema, Access::Drop)
                }
                ObjectType::ObjectTable
                | ObjectType::ObjectView
                | ObjectType::ObjectMatview
                | ObjectType::ObjectIndex
                | ObjectType::ObjectSequence
                | ObjectType::ObjectForeignTable => {
                    self.relation(name.clone(), ObjectKind::Relation, Access::Drop)
                }
                _ => {}
            }
            names.push(format!("`{name}`"));
        }
        let names = names.join(", ");
        let (class, reason) = match object {
            ObjectType::ObjectTable | ObjectType::ObjectSequence => (
                Destructive,
                format!("DROP {what} removes {names} and the data it holds"),
            ),
            ObjectType::ObjectSchema => (
                Destructive,
                format!("DROP SCHEMA removes {names} and everything in it"),
            ),
            ObjectType::ObjectRole => (Privilege, format!("DROP ROLE removes the role {names}")),
            ObjectType::ObjectPolicy => (
                Privilege,
                format!("DROP POLICY changes which rows are visible through {names}"),
            ),
            ObjectType::ObjectPublication
            | ObjectType::ObjectSubscription
            | ObjectType::ObjectEventTrigger
            | ObjectType::ObjectFdw
            | ObjectType::ObjectForeignServer
            | ObjectType::ObjectAccessMethod
            | ObjectType::ObjectLanguage
            | ObjectType::ObjectExtension => (
                Admin,
                format!("DROP {what} removes server-level machinery: {names}"),
            ),
            _ if cascade => (
                Destructive,
                format!(
                    "DROP {what} ... CASCADE removes {names} and every object that depends on it"
                ),
            ),
            _ => (
                Ddl,
                format!("DROP {what} removes {names}; it holds no data of its own"),
            ),
        };
        if cascade && class < Destructive {
            self.raise(
                Destructive,
                format!(
                    "DROP {what} ... CASCADE removes {names} and every object that depends on it"
                ),
            );
        }
        self.raise(class, reason);
    }

    fn alter_table_cmd(&mut self, cmd: &pb::AlterTableCmd) {
        match AlterTableType::try_from(cmd.subtype) {
            Ok(AlterTableType::AtDropColumn) => {
                self.flag(Flag::DropColumn);
                if is_cascade(cmd.behavior) {
                    self.flag(Flag::Cascade);
                }
                self.raise(
                    Destructive,
                    format!("DROP COLUMN removes the column `{}` and its data", cmd.name),
                );
            }
            // Every value is rewritten by a cast or a USING expression, which can lose
            // data as surely as DROP COLUMN (numeric to integer rounds, timestamp to date
            // drops the time, USING NULL empties the column).
            Ok(AlterTableType::AtAlterColumnType) => self.raise(
                Destructive,
                format!(
                    "ALTER COLUMN `{}` TYPE rewrites every value of the column, which can lose its data",
                    cmd.name
                ),
            ),
            Ok(AlterTableType::AtDisableRowSecurity | AlterTableType::AtNoForceRowSecurity) => self
                .raise(
                    Privilege,
                    "turning row-level security off shows rows that were hidden",
                ),
            Ok(AlterTableType::AtChangeOwner) => {
                self.raise(Privilege, "OWNER TO gives the table to another role")
            }
            Ok(AlterTableType::AtDisableTrigAll) => self.raise(
                Admin,
                "DISABLE TRIGGER ALL turns off foreign-key checks and every trigger",
            ),
            _ => {}
        }
    }

    fn copy(&mut self, s: &pb::CopyStmt) {
        let name = s.relation.as_ref().map(range_var_name);
        if let Some(rv) = &s.relation {
            self.range_var(
                rv,
                if s.is_from {
                    Access::Write
                } else {
                    Access::Read
                },
            );
        }
        let direction = if s.is_from { "FROM" } else { "TO" };
        if s.is_program {
            self.flag(Flag::Program);
            self.raise(
                Admin,
                format!(
                    "COPY {direction} PROGRAM runs `{}` on the database server",
                    s.filename
                ),
            );
        } else if !s.filename.is_empty() {
            self.flag(Flag::ServerFile);
            self.raise(
                Admin,
                format!(
                    "COPY {direction} a file reads or writes `{}` on the database server",
                    s.filename
                ),
            );
        } else if s.is_from {
            self.flag(Flag::StreamedData);
            self.raise(
                Write,
                format!(
                    "COPY FROM STDIN adds rows to `{}`",
                    name.unwrap_or_default()
                ),
            );
        }
    }

    fn set(&mut self, s: &pb::VariableSetStmt) {
        let kind = VariableSetKind::try_from(s.kind).unwrap_or(VariableSetKind::Undefined);
        match kind {
            VariableSetKind::VarSetMulti => {
                // SET TRANSACTION / SET SESSION CHARACTERISTICS AS TRANSACTION: READ WRITE
                // matters only where belay pins read-only mode, which the gateway knows.
                if s.args.iter().any(|a| read_write_option(a.node.as_ref())) {
                    let name = if s.name == "SESSION CHARACTERISTICS" {
                        "default_transaction_read_only"
                    } else {
                        "transaction_read_only"
                    };
                    self.read_only_lift(SettingChange {
                        name: name.to_owned(),
                        value: SettingValue::Const("off".to_owned()),
                    });
                }
            }
            VariableSetKind::VarResetAll => {}
            VariableSetKind::Undefined => {
                self.raise(Unknown, "a SET statement of an unknown form");
            }
            _ => {
                let value = match kind {
                    VariableSetKind::VarSetValue => {
                        let parts: Option<Vec<String>> =
                            s.args.iter().map(|a| const_text(a.node.as_ref())).collect();
                        match parts {
                            Some(p) => SettingValue::Const(p.join(", ")),
                            None => SettingValue::Computed,
                        }
                    }
                    VariableSetKind::VarSetDefault | VariableSetKind::VarReset => {
                        SettingValue::Default
                    }
                    // FROM CURRENT, inside a function definition: the value at call time.
                    _ => SettingValue::Computed,
                };
                self.setting(&s.name, value, "");
            }
        }
    }

    fn transaction(&mut self, s: &pb::TransactionStmt) {
        match TransactionStmtKind::try_from(s.kind) {
            Ok(TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart) => {
                if s.options.iter().any(|a| read_write_option(a.node.as_ref())) {
                    self.read_only_lift(SettingChange {
                        name: "transaction_read_only".to_owned(),
                        value: SettingValue::Const("off".to_owned()),
                    });
                }
            }
            Ok(
                TransactionStmtKind::TransStmtPrepare
                | TransactionStmtKind::TransStmtCommitPrepared
                | TransactionStmtKind::TransStmtRollbackPrepared,
            ) => self.raise(
                Admin,
                "two-phase commit leaves a transaction on the server beyond this session",
            ),
            Ok(_) => {}
            Err(_) => self.raise(Unknown, "a transaction statement of an unknown form"),
        }
    }
}

/// The setting a whole `SET` or `RESET` statement changes, and to what; `None` for the forms
/// that change several (`RESET ALL`, `SET TRANSACTION ...`) or a value known only later
/// (`FROM CURRENT`).
pub(crate) fn session_set(s: &pb::VariableSetStmt) -> Option<crate::SessionCommand> {
    let value = match VariableSetKind::try_from(s.kind).ok()? {
        VariableSetKind::VarSetValue => {
            let parts: Option<Vec<String>> =
                s.args.iter().map(|a| const_text(a.node.as_ref())).collect();
            SettingValue::Const(parts?.join(", "))
        }
        VariableSetKind::VarSetDefault | VariableSetKind::VarReset => SettingValue::Default,
        _ => return None,
    };
    Some(crate::SessionCommand::Set {
        name: s.name.to_ascii_lowercase(),
        value,
        local: s.is_local,
    })
}

/// `transaction_read_only = false`, the option behind READ WRITE.
fn read_write_option(node: Option<&NodeEnum>) -> bool {
    match node {
        Some(NodeEnum::DefElem(d)) if d.defname == "transaction_read_only" => {
            const_text(d.arg.as_ref().and_then(|a| a.node.as_ref()))
                .is_some_and(|v| matches!(v.as_str(), "0" | "off" | "false"))
        }
        _ => false,
    }
}

pub(crate) fn security_definer(node: Option<&NodeEnum>) -> bool {
    match node {
        Some(NodeEnum::DefElem(d)) if d.defname == "security" => crate::walk::def_elem_true(d),
        _ => false,
    }
}

fn object_type_name(t: ObjectType) -> String {
    let raw = t.as_str_name().trim_start_matches("OBJECT_");
    match raw {
        "MATVIEW" => "MATERIALIZED VIEW".to_owned(),
        "FDW" => "FOREIGN DATA WRAPPER".to_owned(),
        "FOREIGN_SERVER" => "SERVER".to_owned(),
        "TSCONFIGURATION" => "TEXT SEARCH CONFIGURATION".to_owned(),
        "TSDICTIONARY" => "TEXT SEARCH DICTIONARY".to_owned(),
        "TSPARSER" => "TEXT SEARCH PARSER".to_owned(),
        "TSTEMPLATE" => "TEXT SEARCH TEMPLATE".to_owned(),
        "STATISTIC_EXT" => "STATISTICS".to_owned(),
        "OPCLASS" => "OPERATOR CLASS".to_owned(),
        "OPFAMILY" => "OPERATOR FAMILY".to_owned(),
        "LARGEOBJECT" => "LARGE OBJECT".to_owned(),
        other => other.replace('_', " "),
    }
}

/// The kind of a top-level statement, named as PostgreSQL's command tags name it.
pub(crate) fn statement_kind(node: NodeRef<'_>) -> String {
    let fixed = match node {
        NodeRef::SelectStmt(s) if s.into_clause.is_some() => "SELECT INTO",
        NodeRef::SelectStmt(s) if !s.values_lists.is_empty() => "VALUES",
        NodeRef::SelectStmt(_) => "SELECT",
        NodeRef::InsertStmt(_) => "INSERT",
        NodeRef::UpdateStmt(_) => "UPDATE",
        NodeRef::DeleteStmt(_) => "DELETE",
        NodeRef::MergeStmt(_) => "MERGE",
        NodeRef::DropStmt(s) => {
            let t = ObjectType::try_from(s.remove_type).unwrap_or(ObjectType::Undefined);
            return format!("DROP {}", object_type_name(t));
        }
        NodeRef::AlterTableStmt(s) => {
            let t = ObjectType::try_from(s.objtype).unwrap_or(ObjectType::ObjectTable);
            return format!("ALTER {}", object_type_name(t));
        }
        NodeRef::CreateStmt(_) => "CREATE TABLE",
        NodeRef::CreateTableAsStmt(s) => {
            if ObjectType::try_from(s.objtype) == Ok(ObjectType::ObjectMatview) {
                "CREATE MATERIALIZED VIEW"
            } else {
                "CREATE TABLE AS"
            }
        }
        NodeRef::IndexStmt(_) => "CREATE INDEX",
        NodeRef::ViewStmt(_) => "CREATE VIEW",
        NodeRef::CreateFunctionStmt(s) if s.is_procedure => "CREATE PROCEDURE",
        NodeRef::CreateFunctionStmt(_) => "CREATE FUNCTION",
        NodeRef::CreateTrigStmt(_) => "CREATE TRIGGER",
        NodeRef::CreateEventTrigStmt(_) => "CREATE EVENT TRIGGER",
        NodeRef::RuleStmt(_) => "CREATE RULE",
        NodeRef::CreatedbStmt(_) => "CREATE DATABASE",
        NodeRef::DropdbStmt(_) => "DROP DATABASE",
        NodeRef::CreateSeqStmt(_) => "CREATE SEQUENCE",
        NodeRef::AlterSeqStmt(_) => "ALTER SEQUENCE",
        NodeRef::CreatePlangStmt(_) => "CREATE LANGUAGE",
        NodeRef::CreateTableSpaceStmt(_) => "CREATE TABLESPACE",
        NodeRef::DropTableSpaceStmt(_) => "DROP TABLESPACE",
        NodeRef::CreateFdwStmt(_) => "CREATE FOREIGN DATA WRAPPER",
        NodeRef::CreateForeignServerStmt(_) => "CREATE SERVER",
        NodeRef::GrantStmt(pb::GrantStmt { is_grant: true, .. })
        | NodeRef::GrantRoleStmt(pb::GrantRoleStmt { is_grant: true, .. }) => "GRANT",
        NodeRef::GrantStmt(_) | NodeRef::GrantRoleStmt(_) => "REVOKE",
        NodeRef::VariableSetStmt(s) => match VariableSetKind::try_from(s.kind) {
            Ok(VariableSetKind::VarReset | VariableSetKind::VarResetAll) => "RESET",
            _ => "SET",
        },
        NodeRef::VariableShowStmt(_) => "SHOW",
        NodeRef::TransactionStmt(s) => match TransactionStmtKind::try_from(s.kind) {
            Ok(TransactionStmtKind::TransStmtBegin) => "BEGIN",
            Ok(TransactionStmtKind::TransStmtStart) => "START TRANSACTION",
            Ok(TransactionStmtKind::TransStmtCommit) => "COMMIT",
            Ok(TransactionStmtKind::TransStmtRollback) => "ROLLBACK",
            Ok(TransactionStmtKind::TransStmtSavepoint) => "SAVEPOINT",
            Ok(TransactionStmtKind::TransStmtRelease) => "RELEASE",
            Ok(TransactionStmtKind::TransStmtRollbackTo) => "ROLLBACK TO",
            Ok(TransactionStmtKind::TransStmtPrepare) => "PREPARE TRANSACTION",
            Ok(TransactionStmtKind::TransStmtCommitPrepared) => "COMMIT PREPARED",
            Ok(TransactionStmtKind::TransStmtRollbackPrepared) => "ROLLBACK PREPARED",
            _ => "TRANSACTION",
        },
        NodeRef::ExplainStmt(_) => "EXPLAIN",
        NodeRef::CopyStmt(_) => "COPY",
        NodeRef::DoStmt(_) => "DO",
        NodeRef::CallStmt(_) => "CALL",
        NodeRef::PrepareStmt(_) => "PREPARE",
        NodeRef::ExecuteStmt(_) => "EXECUTE",
        NodeRef::DeallocateStmt(_) => "DEALLOCATE",
        NodeRef::DeclareCursorStmt(_) => "DECLARE CURSOR",
        NodeRef::FetchStmt(s) if s.ismove => "MOVE",
        NodeRef::FetchStmt(_) => "FETCH",
        NodeRef::ClosePortalStmt(_) => "CLOSE",
        NodeRef::AlterSystemStmt(_) => "ALTER SYSTEM",
        NodeRef::CheckPointStmt(_) => "CHECKPOINT",
        NodeRef::VacuumStmt(s) if s.is_vacuumcmd => "VACUUM",
        NodeRef::VacuumStmt(_) => "ANALYZE",
        NodeRef::RefreshMatViewStmt(_) => "REFRESH MATERIALIZED VIEW",
        NodeRef::DropOwnedStmt(_) => "DROP OWNED",
        NodeRef::ReassignOwnedStmt(_) => "REASSIGN OWNED",
        NodeRef::RenameStmt(s) => {
            let t = ObjectType::try_from(s.rename_type).unwrap_or(ObjectType::Undefined);
            return format!("ALTER {}", object_type_name(t));
        }
        NodeRef::CommentStmt(_) => "COMMENT",
        NodeRef::SecLabelStmt(_) => "SECURITY LABEL",
        NodeRef::LoadStmt(_) => "LOAD",
        NodeRef::DefineStmt(s) => {
            let t = ObjectType::try_from(s.kind).unwrap_or(ObjectType::Undefined);
            return format!("CREATE {}", object_type_name(t));
        }
        other => {
            return camel_to_words(node_name(other).trim_end_matches("Stmt"));
        }
    };
    fixed.to_owned()
}

/// `AlterDefaultPrivileges` -> `ALTER DEFAULT PRIVILEGES`.
fn camel_to_words(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
