//! The cluster-level objects a statement names (databases, roles, tablespaces,
//! subscriptions), which may belong to another environment on the same server. The class
//! rules are in `statements.rs`; this only records the names, in every spelling that names
//! one, so that the gateway can resolve each to its environment.

use pg_query::protobuf::{self as pb, AlterTableType, ObjectType, ReindexObjectType};
use pg_query::{NodeEnum, NodeRef};

use crate::analysis::{Access, ObjectKind};
use crate::walk::{const_text, Walk};

/// The kind of cluster-level object an `ObjectType` names, if it names one.
fn kind_of(objtype: i32) -> Option<ObjectKind> {
    match ObjectType::try_from(objtype) {
        Ok(ObjectType::ObjectDatabase) => Some(ObjectKind::Database),
        Ok(ObjectType::ObjectRole) => Some(ObjectKind::Role),
        Ok(ObjectType::ObjectTablespace) => Some(ObjectKind::Tablespace),
        Ok(ObjectType::ObjectSubscription) => Some(ObjectKind::Subscription),
        _ => None,
    }
}

/// The name in an object node that is a plain string (how grammar rules name databases,
/// tablespaces, roles and subscriptions).
fn object_name(node: Option<&pb::Node>) -> Option<String> {
    match node.and_then(|n| n.node.as_ref())? {
        NodeEnum::String(s) => Some(s.sval.clone()),
        _ => None,
    }
}

impl Walk<'_> {
    /// Records the cluster-level objects `node` names. Role names in `RoleSpec` nodes are
    /// recorded where the walk meets them (`walk.rs`).
    pub(crate) fn cluster_targets(&mut self, node: NodeRef<'_>) {
        use ObjectKind::{Database, Role, Subscription, Tablespace};
        match node {
            NodeRef::DropdbStmt(s) => self.cluster_object(&s.dbname, Database, Access::Drop),
            NodeRef::CreatedbStmt(s) => {
                self.cluster_object(&s.dbname, Database, Access::Alter);
                self.database_options(&s.options);
            }
            NodeRef::AlterDatabaseStmt(s) => {
                self.cluster_object(&s.dbname, Database, Access::Alter);
                self.database_options(&s.options);
            }
            NodeRef::AlterDatabaseSetStmt(s) => {
                self.cluster_object(&s.dbname, Database, Access::Alter)
            }
            NodeRef::AlterDatabaseRefreshCollStmt(s) => {
                self.cluster_object(&s.dbname, Database, Access::Alter)
            }
            NodeRef::AlterRoleSetStmt(s) => {
                self.cluster_object(&s.database, Database, Access::Alter)
            }
            NodeRef::ReindexStmt(s) => {
                if matches!(
                    ReindexObjectType::try_from(s.kind),
                    Ok(ReindexObjectType::ReindexObjectDatabase
                        | ReindexObjectType::ReindexObjectSystem)
                ) {
                    self.cluster_object(&s.name, Database, Access::Alter);
                }
            }
            NodeRef::RenameStmt(s) => {
                if let Some(kind) = kind_of(s.rename_type) {
                    self.cluster_object(&s.subname, kind, Access::Alter);
                    if let Some(name) = object_name(s.object.as_deref()) {
                        self.cluster_object(&name, kind, Access::Alter);
                    }
                    self.cluster_object(&s.newname, kind, Access::Alter);
                }
            }
            NodeRef::AlterOwnerStmt(s) => {
                if let (Some(kind), Some(name)) =
                    (kind_of(s.object_type), object_name(s.object.as_deref()))
                {
                    self.cluster_object(&name, kind, Access::Alter);
                }
            }
            NodeRef::CommentStmt(s) => {
                if let (Some(kind), Some(name)) =
                    (kind_of(s.objtype), object_name(s.object.as_deref()))
                {
                    self.cluster_object(&name, kind, Access::Alter);
                }
            }
            NodeRef::SecLabelStmt(s) => {
                if let (Some(kind), Some(name)) =
                    (kind_of(s.objtype), object_name(s.object.as_deref()))
                {
                    self.cluster_object(&name, kind, Access::Alter);
                }
            }
            NodeRef::GrantStmt(s) => {
                if let Some(kind) = kind_of(s.objtype) {
                    for o in &s.objects {
                        if let Some(name) = object_name(Some(o)) {
                            self.cluster_object(&name, kind, Access::Alter);
                        }
                    }
                }
            }
            NodeRef::CreateRoleStmt(s) => self.cluster_object(&s.role, Role, Access::Alter),
            NodeRef::GrantRoleStmt(s) => {
                for granted in &s.granted_roles {
                    if let Some(NodeEnum::AccessPriv(p)) = &granted.node {
                        self.cluster_object(&p.priv_name, Role, Access::Alter);
                    }
                }
            }
            NodeRef::CreateStmt(s) => {
                self.cluster_object(&s.tablespacename, Tablespace, Access::Read)
            }
            NodeRef::IndexStmt(s) => self.cluster_object(&s.table_space, Tablespace, Access::Read),
            NodeRef::IntoClause(s) => {
                self.cluster_object(&s.table_space_name, Tablespace, Access::Read)
            }
            NodeRef::Constraint(c) => self.cluster_object(&c.indexspace, Tablespace, Access::Read),
            NodeRef::AlterTableCmd(cmd)
                if AlterTableType::try_from(cmd.subtype) == Ok(AlterTableType::AtSetTableSpace) =>
            {
                self.cluster_object(&cmd.name, Tablespace, Access::Read);
            }
            NodeRef::AlterTableMoveAllStmt(s) => {
                self.cluster_object(&s.orig_tablespacename, Tablespace, Access::Alter);
                self.cluster_object(&s.new_tablespacename, Tablespace, Access::Alter);
            }
            NodeRef::CreateTableSpaceStmt(s) => {
                self.cluster_object(&s.tablespacename, Tablespace, Access::Alter)
            }
            NodeRef::DropTableSpaceStmt(s) => {
                self.cluster_object(&s.tablespacename, Tablespace, Access::Drop)
            }
            NodeRef::AlterTableSpaceOptionsStmt(s) => {
                self.cluster_object(&s.tablespacename, Tablespace, Access::Alter)
            }
            NodeRef::CreateSubscriptionStmt(s) => {
                self.cluster_object(&s.subname, Subscription, Access::Alter)
            }
            NodeRef::AlterSubscriptionStmt(s) => {
                self.cluster_object(&s.subname, Subscription, Access::Alter)
            }
            NodeRef::DropSubscriptionStmt(s) => {
                self.cluster_object(&s.subname, Subscription, Access::Drop)
            }
            _ => {}
        }
    }

    /// `CREATE DATABASE`/`ALTER DATABASE` options that name other cluster objects: the
    /// template a new database copies (with all its data), its tablespace and its owner.
    fn database_options(&mut self, options: &[pb::Node]) {
        for option in options {
            let Some(NodeEnum::DefElem(d)) = &option.node else {
                continue;
            };
            let kind = match d.defname.as_str() {
                "template" => ObjectKind::Database,
                "tablespace" => ObjectKind::Tablespace,
                "owner" => ObjectKind::Role,
                _ => continue,
            };
            if let Some(name) = const_text(d.arg.as_ref().and_then(|a| a.node.as_ref())) {
                self.cluster_object(&name, kind, Access::Read);
            }
        }
    }
}
