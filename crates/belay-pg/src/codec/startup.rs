//! The startup phase: the untyped first message (StartupMessage, SSLRequest, GSSENCRequest,
//! CancelRequest).

use bytes::{Buf, BytesMut};

use super::{put_cstr, Error, Reader};

pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// Startup packets are small; anything larger is refused before it is buffered.
pub const MAX_STARTUP: usize = 10_000;

/// The first message of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// Protocol 3.0 with its parameters (`user`, `database`, `options`, ...) in order.
    Startup {
        params: Vec<(String, String)>,
    },
    /// Protocol 3.x with x > 0 (3.2 brings longer cancel keys): belay speaks 3.0 and says so
    /// with NegotiateProtocolVersion, as the server does, and the session goes on in 3.0.
    Newer {
        minor: u16,
        params: Vec<(String, String)>,
    },
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: Vec<u8>,
    },
}

impl Startup {
    /// Cuts the startup message off `buf` when it is complete.
    pub fn read(buf: &mut BytesMut) -> Result<Option<Startup>, Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let len_usize = usize::try_from(len).map_err(|_| Error::BadLength(len))?;
        if len_usize < 8 {
            return Err(Error::BadLength(len));
        }
        if len_usize > MAX_STARTUP {
            return Err(Error::TooLong(len_usize, MAX_STARTUP));
        }
        if buf.len() < len_usize {
            return Ok(None);
        }
        let mut body = buf.split_to(len_usize).freeze();
        body.advance(4);
        let code = body.get_i32();
        let mut r = Reader::new(b'0', body);
        let message = match code {
            SSL_REQUEST_CODE => Startup::SslRequest,
            GSSENC_REQUEST_CODE => Startup::GssEncRequest,
            CANCEL_REQUEST_CODE => {
                let pid = r.i32()?;
                let secret = r.rest().to_vec();
                if secret.is_empty() || secret.len() > 256 {
                    return Err(Error::Malformed('0', "cancel request key"));
                }
                Startup::Cancel { pid, secret }
            }
            code if code >> 16 == 3 => {
                let mut params = Vec::new();
                loop {
                    let key = r.cstr()?;
                    if key.is_empty() {
                        break;
                    }
                    let value = r.cstr()?;
                    params.push((key, value));
                }
                match (code & 0xffff) as u16 {
                    0 => Startup::Startup { params },
                    minor => Startup::Newer { minor, params },
                }
            }
            other => {
                return Err(Error::Protocol(
                    (other >> 16) as u16,
                    (other & 0xffff) as u16,
                ));
            }
        };
        r.finish()?;
        Ok(Some(message))
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        match self {
            Startup::SslRequest => out.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes()),
            Startup::GssEncRequest => out.extend_from_slice(&GSSENC_REQUEST_CODE.to_be_bytes()),
            Startup::Cancel { pid, secret } => {
                out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
                out.extend_from_slice(&pid.to_be_bytes());
                out.extend_from_slice(secret);
            }
            Startup::Newer { minor, params } => {
                out.extend_from_slice(&(PROTOCOL_3_0 | i32::from(*minor)).to_be_bytes());
                for (k, v) in params {
                    put_cstr(out, k);
                    put_cstr(out, v);
                }
                out.extend_from_slice(&[0]);
            }
            Startup::Startup { params } => {
                out.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
                for (k, v) in params {
                    put_cstr(out, k);
                    put_cstr(out, v);
                }
                out.extend_from_slice(&[0]);
            }
        }
        let len = (out.len() - start) as i32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// A startup parameter's value.
    pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
