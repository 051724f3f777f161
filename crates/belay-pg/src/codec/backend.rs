//! Messages the server side sends: belay writes its own (authentication, errors, notices) and
//! reads the upstream's where session state depends on them.

use bytes::{Bytes, BytesMut};

use super::{put_cstr, put_message, Error, Frame, Reader};

/// Transaction state in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TransactionStatus {
    fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
    Info,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        }
    }

    fn parse(s: &str) -> Severity {
        match s {
            "FATAL" | "PANIC" => Severity::Fatal,
            "NOTICE" | "DEBUG" | "LOG" => Severity::Notice,
            "WARNING" => Severity::Warning,
            "INFO" => Severity::Info,
            _ => Severity::Error,
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: Severity,
    /// SQLSTATE, such as `42501`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// Any other fields, by their one-byte code.
    pub other: Vec<(u8, String)>,
}

impl ErrorFields {
    pub fn new(severity: Severity, code: &str, message: impl Into<String>) -> ErrorFields {
        ErrorFields {
            severity,
            code: code.to_owned(),
            message: message.into(),
            detail: None,
            hint: None,
            other: Vec::new(),
        }
    }

    fn decode(r: &mut Reader) -> Result<ErrorFields, Error> {
        let mut fields = ErrorFields::new(Severity::Error, "", "");
        let mut saw_v = false;
        loop {
            let code = r.u8()?;
            if code == 0 {
                break;
            }
            let value = r.cstr_lossy()?;
            match code {
                b'V' => {
                    saw_v = true;
                    fields.severity = Severity::parse(&value);
                }
                // `S` is the localized severity; it is written again from `severity`.
                b'S' if !saw_v => fields.severity = Severity::parse(&value),
                b'S' => {}
                b'C' => fields.code = value,
                b'M' => fields.message = value,
                b'D' => fields.detail = Some(value),
                b'H' => fields.hint = Some(value),
                other => fields.other.push((other, value)),
            }
        }
        Ok(fields)
    }

    fn encode(&self, b: &mut BytesMut) {
        let severity = self.severity.as_str();
        for (code, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', &self.code),
            (b'M', &self.message),
        ] {
            b.extend_from_slice(&[code]);
            put_cstr(b, value);
        }
        for (code, value) in [(b'D', &self.detail), (b'H', &self.hint)] {
            if let Some(v) = value {
                b.extend_from_slice(&[code]);
                put_cstr(b, v);
            }
        }
        for (code, value) in &self.other {
            b.extend_from_slice(&[*code]);
            put_cstr(b, value);
        }
        b.extend_from_slice(&[0]);
    }
}

/// A backend message. Messages belay only forwards keep their body as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    AuthenticationOk,
    AuthenticationCleartextPassword,
    AuthenticationMd5Password([u8; 4]),
    AuthenticationSasl(Vec<String>),
    AuthenticationSaslContinue(Bytes),
    AuthenticationSaslFinal(Bytes),
    /// Kerberos, GSS, SSPI: belay does not speak them.
    AuthenticationOther(i32),
    BackendKeyData {
        pid: i32,
        secret: Bytes,
    },
    ParameterStatus {
        name: String,
        value: String,
    },
    ReadyForQuery(TransactionStatus),
    ErrorResponse(ErrorFields),
    NoticeResponse(ErrorFields),
    CommandComplete(String),
    EmptyQueryResponse,
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    PortalSuspended,
    CopyDone,
    /// RowDescription, DataRow, ParameterDescription, CopyIn/Out/BothResponse, CopyData,
    /// NotificationResponse, NegotiateProtocolVersion: forwarded as they are.
    Other(Frame),
}

impl Backend {
    pub fn decode(frame: &Frame) -> Result<Backend, Error> {
        let mut r = Reader::new(frame.tag, frame.body.clone());
        let message = match frame.tag {
            b'R' => match r.i32()? {
                0 => Backend::AuthenticationOk,
                3 => Backend::AuthenticationCleartextPassword,
                5 => {
                    let salt = r.bytes(4)?;
                    Backend::AuthenticationMd5Password([salt[0], salt[1], salt[2], salt[3]])
                }
                10 => {
                    let mut mechanisms = Vec::new();
                    loop {
                        let m = r.cstr()?;
                        if m.is_empty() {
                            break;
                        }
                        mechanisms.push(m);
                    }
                    Backend::AuthenticationSasl(mechanisms)
                }
                11 => Backend::AuthenticationSaslContinue(r.rest()),
                12 => Backend::AuthenticationSaslFinal(r.rest()),
                other => {
                    r.rest();
                    Backend::AuthenticationOther(other)
                }
            },
            b'K' => Backend::BackendKeyData {
                pid: r.i32()?,
                secret: r.rest(),
            },
            b'S' => Backend::ParameterStatus {
                name: r.cstr()?,
                value: r.cstr_lossy()?,
            },
            b'Z' => Backend::ReadyForQuery(match r.u8()? {
                b'I' => TransactionStatus::Idle,
                b'T' => TransactionStatus::InTransaction,
                b'E' => TransactionStatus::Failed,
                _ => return Err(Error::Malformed('Z', "unknown transaction status")),
            }),
            b'E' => Backend::ErrorResponse(ErrorFields::decode(&mut r)?),
            b'N' => Backend::NoticeResponse(ErrorFields::decode(&mut r)?),
            b'C' => Backend::CommandComplete(r.cstr()?),
            b'I' => Backend::EmptyQueryResponse,
            b'1' => Backend::ParseComplete,
            b'2' => Backend::BindComplete,
            b'3' => Backend::CloseComplete,
            b'n' => Backend::NoData,
            b's' => Backend::PortalSuspended,
            b'c' => Backend::CopyDone,
            b'T' | b'D' | b't' | b'G' | b'H' | b'W' | b'd' | b'A' | b'v' => {
                r.rest();
                Backend::Other(frame.clone())
            }
            other => return Err(Error::UnknownTag(other as char)),
        };
        r.finish()?;
        Ok(message)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let auth = |out: &mut BytesMut, code: i32, rest: &[u8]| {
            put_message(out, b'R', |b| {
                b.extend_from_slice(&code.to_be_bytes());
                b.extend_from_slice(rest);
            })
        };
        match self {
            Backend::AuthenticationOk => auth(out, 0, &[]),
            Backend::AuthenticationCleartextPassword => auth(out, 3, &[]),
            Backend::AuthenticationMd5Password(salt) => auth(out, 5, salt),
            Backend::AuthenticationSasl(mechanisms) => put_message(out, b'R', |b| {
                b.extend_from_slice(&10i32.to_be_bytes());
                for m in mechanisms {
                    put_cstr(b, m);
                }
                b.extend_from_slice(&[0]);
            }),
            Backend::AuthenticationSaslContinue(data) => auth(out, 11, data),
            Backend::AuthenticationSaslFinal(data) => auth(out, 12, data),
            Backend::AuthenticationOther(code) => auth(out, *code, &[]),
            Backend::BackendKeyData { pid, secret } => put_message(out, b'K', |b| {
                b.extend_from_slice(&pid.to_be_bytes());
                b.extend_from_slice(secret);
            }),
            Backend::ParameterStatus { name, value } => put_message(out, b'S', |b| {
                put_cstr(b, name);
                put_cstr(b, value);
            }),
            Backend::ReadyForQuery(status) => {
                put_message(out, b'Z', |b| b.extend_from_slice(&[status.byte()]))
            }
            Backend::ErrorResponse(fields) => put_message(out, b'E', |b| fields.encode(b)),
            Backend::NoticeResponse(fields) => put_message(out, b'N', |b| fields.encode(b)),
            Backend::CommandComplete(tag) => put_message(out, b'C', |b| put_cstr(b, tag)),
            Backend::EmptyQueryResponse => put_message(out, b'I', |_| {}),
            Backend::ParseComplete => put_message(out, b'1', |_| {}),
            Backend::BindComplete => put_message(out, b'2', |_| {}),
            Backend::CloseComplete => put_message(out, b'3', |_| {}),
            Backend::NoData => put_message(out, b'n', |_| {}),
            Backend::PortalSuspended => put_message(out, b's', |_| {}),
            Backend::CopyDone => put_message(out, b'c', |_| {}),
            Backend::Other(frame) => frame.encode(out),
        }
    }
}
