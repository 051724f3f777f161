//! Messages a client sends after startup, as belay inspects them.

use bytes::{Bytes, BytesMut};

use super::{put_cstr, put_message, Error, Frame, Reader};

/// Whether Describe or Close names a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    fn decode(r: &mut Reader) -> Result<Target, Error> {
        match r.u8()? {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            _ => Err(Error::Malformed(
                '?',
                "Describe/Close target must be `S` or `P`",
            )),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Describe {
    pub target: Target,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub target: Target,
    pub name: String,
}

/// A frontend message after startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend {
    Query(String),
    Parse {
        name: String,
        query: String,
        param_types: Vec<i32>,
    },
    Bind {
        portal: String,
        statement: String,
        param_formats: Vec<i16>,
        params: Vec<Option<Bytes>>,
        result_formats: Vec<i16>,
    },
    Describe(Describe),
    Execute {
        portal: String,
        max_rows: i32,
    },
    Close(Close),
    Sync,
    Flush,
    Terminate,
    CopyData(Bytes),
    CopyDone,
    CopyFail(String),
    /// The legacy fast-path function call; belay refuses it.
    FunctionCall(Bytes),
    /// `p`: a password, SASLInitialResponse or SASLResponse, depending on the
    /// authentication exchange in progress.
    Password(Bytes),
}

/// A count, then that many 16-bit values.
fn put_i16s(b: &mut BytesMut, values: &[i16]) {
    b.extend_from_slice(&(values.len() as i16).to_be_bytes());
    for v in values {
        b.extend_from_slice(&v.to_be_bytes());
    }
}

impl Frontend {
    pub fn decode(frame: &Frame) -> Result<Frontend, Error> {
        let mut r = Reader::new(frame.tag, frame.body.clone());
        let message = match frame.tag {
            b'Q' => Frontend::Query(r.cstr()?),
            b'P' => {
                let name = r.cstr()?;
                let query = r.cstr()?;
                let n = r.count16()?;
                let param_types = (0..n).map(|_| r.i32()).collect::<Result<_, _>>()?;
                Frontend::Parse {
                    name,
                    query,
                    param_types,
                }
            }
            b'B' => {
                let portal = r.cstr()?;
                let statement = r.cstr()?;
                let n = r.count16()?;
                let param_formats = (0..n).map(|_| r.i16()).collect::<Result<_, _>>()?;
                let n = r.count16()?;
                let params = (0..n).map(|_| r.value()).collect::<Result<_, _>>()?;
                let n = r.count16()?;
                let result_formats = (0..n).map(|_| r.i16()).collect::<Result<_, _>>()?;
                Frontend::Bind {
                    portal,
                    statement,
                    param_formats,
                    params,
                    result_formats,
                }
            }
            b'D' => {
                let target = Target::decode(&mut r)?;
                Frontend::Describe(Describe {
                    target,
                    name: r.cstr()?,
                })
            }
            b'E' => Frontend::Execute {
                portal: r.cstr()?,
                max_rows: r.i32()?,
            },
            b'C' => {
                let target = Target::decode(&mut r)?;
                Frontend::Close(Close {
                    target,
                    name: r.cstr()?,
                })
            }
            b'S' => Frontend::Sync,
            b'H' => Frontend::Flush,
            b'X' => Frontend::Terminate,
            b'd' => Frontend::CopyData(r.rest()),
            b'c' => Frontend::CopyDone,
            b'f' => Frontend::CopyFail(r.cstr()?),
            b'F' => Frontend::FunctionCall(r.rest()),
            b'p' => Frontend::Password(r.rest()),
            other => return Err(Error::UnknownTag(other as char)),
        };
        r.finish()?;
        Ok(message)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frontend::Query(q) => put_message(out, b'Q', |b| put_cstr(b, q)),
            Frontend::Parse {
                name,
                query,
                param_types,
            } => put_message(out, b'P', |b| {
                put_cstr(b, name);
                put_cstr(b, query);
                b.extend_from_slice(&(param_types.len() as i16).to_be_bytes());
                for t in param_types {
                    b.extend_from_slice(&t.to_be_bytes());
                }
            }),
            Frontend::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            } => put_message(out, b'B', |b| {
                put_cstr(b, portal);
                put_cstr(b, statement);
                put_i16s(b, param_formats);
                b.extend_from_slice(&(params.len() as i16).to_be_bytes());
                for p in params {
                    match p {
                        None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                        Some(v) => {
                            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                            b.extend_from_slice(v);
                        }
                    }
                }
                put_i16s(b, result_formats);
            }),
            Frontend::Describe(d) => put_message(out, b'D', |b| {
                b.extend_from_slice(&[d.target.byte()]);
                put_cstr(b, &d.name);
            }),
            Frontend::Execute { portal, max_rows } => put_message(out, b'E', |b| {
                put_cstr(b, portal);
                b.extend_from_slice(&max_rows.to_be_bytes());
            }),
            Frontend::Close(c) => put_message(out, b'C', |b| {
                b.extend_from_slice(&[c.target.byte()]);
                put_cstr(b, &c.name);
            }),
            Frontend::Sync => put_message(out, b'S', |_| {}),
            Frontend::Flush => put_message(out, b'H', |_| {}),
            Frontend::Terminate => put_message(out, b'X', |_| {}),
            Frontend::CopyData(d) => put_message(out, b'd', |b| b.extend_from_slice(d)),
            Frontend::CopyDone => put_message(out, b'c', |_| {}),
            Frontend::CopyFail(m) => put_message(out, b'f', |b| put_cstr(b, m)),
            Frontend::FunctionCall(d) => put_message(out, b'F', |b| b.extend_from_slice(d)),
            Frontend::Password(d) => put_message(out, b'p', |b| b.extend_from_slice(d)),
        }
    }
}
