//! Vocabulary every belay crate shares: what an action is in terms of the damage it can do,
//! and what policy decides about it.
//!
//! This crate does no IO and knows no protocol. It holds only types that two or more crates
//! must agree on, so that the SQL classifier, the policy engine, the audit log and the
//! gateways speak about the same classes and verdicts.

mod class;
pub mod encoding;
mod secret;
mod sslmode;
pub mod units;
mod verdict;

pub use class::{Class, ParseClassError};
pub use secret::Secret;
pub use sslmode::SslMode;
pub use verdict::{Decision, Hold, Verdict};
