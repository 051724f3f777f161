//! The PostgreSQL v3 wire protocol, as messages: framing, the startup phase, frontend
//! messages belay inspects, and backend messages belay writes.
//!
//! Nothing here does IO or allocates per byte forwarded: `Frame` borrows a message's body as
//! `Bytes` cut from the read buffer, so forwarding is a copy of a reference.

mod backend;
mod frontend;
mod startup;

use bytes::{Buf, Bytes, BytesMut};

pub use backend::{Backend, ErrorFields, Severity, TransactionStatus};
pub use frontend::{Close, Describe, Frontend, Target};
pub use startup::{
    Startup, CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE,
};

/// A malformed message. The connection that sent it is closed with an error; it never panics
/// the process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("message of {0} bytes is larger than the limit of {1} bytes")]
    TooLong(usize, usize),
    #[error("message length {0} is invalid")]
    BadLength(i32),
    #[error("malformed `{0}` message: {1}")]
    Malformed(char, &'static str),
    #[error("unexpected message type `{0}`")]
    UnknownTag(char),
    #[error("unsupported protocol version {0}.{1}")]
    Protocol(u16, u16),
    #[error("string is not valid UTF-8")]
    Utf8,
}

/// The default bound on one message: 1 GiB is PostgreSQL's own limit, far more than belay
/// accepts from an agent.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// One typed message as it arrived: its tag and its body (without tag and length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

impl Frame {
    /// The whole message as it travels: tag, length, body.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(5 + self.body.len());
        out.extend_from_slice(&[self.tag]);
        out.extend_from_slice(&((self.body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(&self.body);
    }
}

/// Cuts the next typed message off the front of `buf`, if it is complete.
pub fn read_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, Error> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(Error::BadLength(len));
    }
    let len = len as usize;
    if len > max {
        return Err(Error::TooLong(len, max));
    }
    if buf.len() < len + 1 {
        buf.reserve(len + 1 - buf.len());
        return Ok(None);
    }
    buf.advance(5);
    let body = buf.split_to(len - 4).freeze();
    Ok(Some(Frame { tag, body }))
}

/// Reading helpers over a message body.
pub(crate) struct Reader {
    tag: char,
    body: Bytes,
}

impl Reader {
    pub(crate) fn new(tag: u8, body: Bytes) -> Reader {
        Reader {
            tag: tag as char,
            body,
        }
    }

    fn malformed(&self, why: &'static str) -> Error {
        Error::Malformed(self.tag, why)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        if self.body.remaining() < 1 {
            return Err(self.malformed("truncated"));
        }
        Ok(self.body.get_u8())
    }

    pub(crate) fn i16(&mut self) -> Result<i16, Error> {
        if self.body.remaining() < 2 {
            return Err(self.malformed("truncated"));
        }
        Ok(self.body.get_i16())
    }

    pub(crate) fn i32(&mut self) -> Result<i32, Error> {
        if self.body.remaining() < 4 {
            return Err(self.malformed("truncated"));
        }
        Ok(self.body.get_i32())
    }

    /// A count that must not be negative.
    pub(crate) fn count16(&mut self) -> Result<usize, Error> {
        usize::try_from(self.i16()?).map_err(|_| self.malformed("negative count"))
    }

    /// The bytes of the next NUL-terminated string, without the terminator.
    fn cstr_bytes(&mut self) -> Result<Bytes, Error> {
        let end = self
            .body
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.malformed("string without terminator"))?;
        let bytes = self.body.split_to(end);
        self.body.advance(1);
        Ok(bytes)
    }

    /// A NUL-terminated string.
    pub(crate) fn cstr(&mut self) -> Result<String, Error> {
        String::from_utf8(self.cstr_bytes()?.to_vec()).map_err(|_| Error::Utf8)
    }

    /// The next null-terminated string, with what is not UTF-8 replaced: for what the
    /// server says in the client's encoding (errors, notices, settings), of which belay
    /// reads only ASCII parts and forwards the bytes themselves.
    pub(crate) fn cstr_lossy(&mut self) -> Result<String, Error> {
        Ok(String::from_utf8_lossy(&self.cstr_bytes()?).into_owned())
    }

    /// `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, Error> {
        if self.body.remaining() < n {
            return Err(self.malformed("truncated"));
        }
        Ok(self.body.split_to(n))
    }

    /// A length-prefixed value; `None` for SQL NULL (-1).
    pub(crate) fn value(&mut self) -> Result<Option<Bytes>, Error> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| self.malformed("negative length"))?;
        self.bytes(len).map(Some)
    }

    pub(crate) fn rest(&mut self) -> Bytes {
        self.body.split_off(0)
    }

    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes"))
        }
    }
}

/// Writing helpers for a message body.
pub(crate) fn put_cstr(out: &mut BytesMut, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(&[0]);
}

/// Writes a typed message whose body `body` writes, filling in the length.
pub(crate) fn put_message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.extend_from_slice(&[tag, 0, 0, 0, 0]);
    body(out);
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}
