//! The PostgreSQL gateway. Today: the wire-protocol codec, a layer with no IO that frames and
//! decodes what clients send and encodes what belay answers.
//!
//! The gateway forwards most messages as the bytes it received; it decodes only what it must
//! inspect (startup, queries, the extended protocol, authentication) and encodes only what
//! belay itself says (authentication, errors, notices).

pub mod codec;
