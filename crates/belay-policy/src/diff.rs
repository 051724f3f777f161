//! `diff`: every (grant, tier, class) whose decision changes between two policies, so that a
//! review shows at once whether an edit widens destructive rights.

use belay_core::{Class, Decision};

use crate::{ActionRequest, PolicyEngine, GRANTABLE};

/// One (grant, tier, class) whose decision differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The agent's grant in the environment; `None` for no grant.
    pub grant: Option<Class>,
    pub production: bool,
    pub class: Class,
    pub old: Decision,
    pub new: Decision,
}

impl Change {
    /// True when the new decision lets more through: deny -> approve/allow, approve ->
    /// allow or fewer approvals, or a modifier (reversible, backup first) dropped.
    pub fn widens(&self) -> bool {
        fn rank(d: &Decision) -> (u8, i64) {
            match d.verdict {
                belay_core::Verdict::Deny => (0, 0),
                belay_core::Verdict::Approve(n) => (1, -i64::from(n)),
                belay_core::Verdict::Allow => (2, 0),
            }
        }
        rank(&self.new) > rank(&self.old)
            || (self.old.reversible && !self.new.reversible)
            || (self.old.backup_first && !self.new.backup_first)
    }
}

/// Compares two policies over every grant level, both tiers and every class, with no flags,
/// no approvals and targets inside the environment.
pub fn diff(old: &PolicyEngine, new: &PolicyEngine) -> Vec<Change> {
    let grants = std::iter::once(None).chain(GRANTABLE.iter().copied().map(Some));
    let mut changes = Vec::new();
    for grant in grants {
        for production in [false, true] {
            for class in Class::ALL {
                let env = if production { "production" } else { "staging" };
                let request = ActionRequest::new("agent", "owner", env, production, class, grant);
                let (o, n) = (old.evaluate(&request), new.evaluate(&request));
                if o.verdict != n.verdict
                    || o.reversible != n.reversible
                    || o.backup_first != n.backup_first
                {
                    changes.push(Change {
                        grant,
                        production,
                        class,
                        old: o,
                        new: n,
                    });
                }
            }
        }
    }
    changes
}
