//! The PostgreSQL gateway: agents connect to it as if it were PostgreSQL, and every SQL text
//! they send is decided (through the `Gate` and `Session` traits) before it is forwarded to
//! the upstream database with belay's own credentials.
//!
//! - `codec`: the wire protocol as messages, no IO.
//! - `gate`: the seam to belay's decisions.
//! - `relay`: one session's state machine after startup (no IO).
//! - `server`: the listener, the startup phase (TLS, SCRAM, admission) and the IO loop.
//! - `upstream`: logging in to the upstream database and sending cancel requests.
//! - `tls`: rustls configurations for both sides.
//!
//! The gateway forwards most messages as the bytes it received; it decodes only what it must
//! inspect and encodes only what belay itself says.

pub mod codec;
pub mod gate;
mod relay;
mod relay_loop;
mod server;
pub mod tls;
mod upstream;

pub use gate::{
    Check, Completion, Credential, Gate, Login, Own, Parameters, Phase, Refusal, Rewrite, Session,
    SslMode, Statement, UpstreamSpec, SQLSTATE_APPROVAL, SQLSTATE_DENIED,
};
pub use relay::RESERVED_PREFIX;
pub use server::{default_relay_threads, serve, Options};
pub use upstream::{literal, push_literal, simple_query, OwnConnection};
