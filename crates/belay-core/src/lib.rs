//! Vocabulary every belay crate shares: what an action is in terms of the damage it can do.
//!
//! This crate does no IO and knows no protocol. It holds only types that two or more crates
//! must agree on, so that the SQL classifier, the policy engine and the gateways speak about
//! the same classes.

mod class;

pub use class::{Class, ParseClassError};
