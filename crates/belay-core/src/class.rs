//! `Class`: how much damage an action can do, and the order used to combine classes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The class of an action. Grants and policies are written in these terms.
///
/// The declaration order is the order of danger used to combine several classes into one
/// (`Ord`): `read < write < ddl < destructive < privilege < admin < unknown`. `unknown` is the
/// most dangerous because nothing is known about what it does; belay denies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Reads data or session state; changes nothing another session can see.
    Read,
    /// Inserts, updates or deletes some rows, or has another bounded side effect.
    Write,
    /// Changes the schema without removing data.
    Ddl,
    /// Removes data or objects that hold data: DROP TABLE, TRUNCATE, DELETE without WHERE.
    Destructive,
    /// Changes who may do what: roles, grants, session authorization, read-only settings.
    Privilege,
    /// Reaches outside the database: server files, programs, replication, backend control,
    /// system settings.
    Admin,
    /// Could not be analysed. belay fails closed on it.
    Unknown,
}

impl Class {
    /// Every class, from least to most dangerous.
    pub const ALL: [Class; 7] = [
        Class::Read,
        Class::Write,
        Class::Ddl,
        Class::Destructive,
        Class::Privilege,
        Class::Admin,
        Class::Unknown,
    ];

    /// The lowercase name used in configuration, policies and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Ddl => "ddl",
            Class::Destructive => "destructive",
            Class::Privilege => "privilege",
            Class::Admin => "admin",
            Class::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A class name that is not one of belay's classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseClassError(pub String);

impl fmt::Display for ParseClassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown class `{}` (expected one of: read, write, ddl, destructive, privilege, admin, unknown)",
            self.0
        )
    }
}

impl std::error::Error for ParseClassError {}

impl FromStr for Class {
    type Err = ParseClassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Class::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseClassError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_the_order_of_danger() {
        let mut sorted = Class::ALL;
        sorted.sort();
        assert_eq!(sorted, Class::ALL);
        assert!(Class::Read < Class::Write);
        assert!(Class::Destructive < Class::Privilege);
        assert_eq!(Class::Read.max(Class::Unknown), Class::Unknown);
    }

    #[test]
    fn names_round_trip() {
        for class in Class::ALL {
            assert_eq!(class.as_str().parse::<Class>(), Ok(class));
            assert_eq!(class.to_string(), class.as_str());
        }
        assert!("READ".parse::<Class>().is_err());
        assert!("".parse::<Class>().is_err());
    }
}
