//! `SslMode`: how belay uses TLS to an upstream database, as libpq's `sslmode`. Shared by the
//! configuration that names it and the gateway that acts on it.

use serde::Deserialize;

/// TLS to an upstream, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without checking the certificate.
    Prefer,
    /// TLS always, without checking the certificate.
    Require,
    /// TLS, and the certificate must chain to the configured CA.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}
