//! `Verdict` and `Decision`: what policy says about an action, and why; `Hold`: the terms of
//! a held action's approval.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What happens to an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Forward it.
    Allow,
    /// Refuse it.
    Deny,
    /// Hold it until this many distinct humans approve it.
    Approve(u32),
}

impl Verdict {
    /// `allow`, `deny` or `approve`, as in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Approve(_) => "approve",
        }
    }

    /// How many approvals the action needs; 0 unless held.
    pub fn approvals_required(self) -> u32 {
        match self {
            Verdict::Approve(n) => n,
            _ => 0,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Approve(n) => write!(f, "approve({n})"),
            other => f.write_str(other.name()),
        }
    }
}

/// A verdict with its modifiers, the policies that decided it and a sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Run the action in reversible form (trash instead of drop).
    pub reversible: bool,
    /// Take and verify a backup in another failure domain before the action runs.
    pub backup_first: bool,
    /// Ids of the policies that decided, in a stable order.
    pub policies: Vec<String>,
    /// Why, in words a person understands.
    pub reason: String,
    /// For `approve(n)`: how long the request stays open, how soon an approved action must
    /// run, and who may approve.
    pub hold: Hold,
}

/// The terms of an approval, from the policy that held the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// How long a request waits for its approvals before it expires.
    pub expires: Duration,
    /// Once approved, how long the agent has to run the action before the approval lapses.
    pub run_within: Duration,
    /// The humans whose approvals count; empty means any human. `owner` stands for the
    /// agent's owner.
    pub approvers: Vec<String>,
}

impl Hold {
    /// One hour to decide, fifteen minutes to run once approved.
    pub const DEFAULT_EXPIRES: Duration = Duration::from_secs(3600);
    pub const DEFAULT_RUN_WITHIN: Duration = Duration::from_secs(900);
}

impl Default for Hold {
    fn default() -> Hold {
        Hold {
            expires: Hold::DEFAULT_EXPIRES,
            run_within: Hold::DEFAULT_RUN_WITHIN,
            approvers: Vec::new(),
        }
    }
}

impl Decision {
    /// A denial decided by belay itself rather than by a policy (fail closed).
    pub fn deny(reason: impl Into<String>) -> Decision {
        Decision {
            verdict: Verdict::Deny,
            reversible: false,
            backup_first: false,
            policies: Vec::new(),
            reason: reason.into(),
            hold: Hold::default(),
        }
    }
}
