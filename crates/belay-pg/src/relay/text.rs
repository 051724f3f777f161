//! The client's text in the session's client encoding: what the client sends (a Query's or
//! Parse's SQL, statement and portal names) is transcoded to UTF-8 for belay to parse, by
//! the encoding the server says it is in (ParameterStatus `client_encoding`), never read as
//! bytes of another encoding; what belay rewrites goes back the same way. Only encodings in
//! which every byte below 0x80 is ASCII get here (`belay_core::encoding::parsable`); of
//! those, SQL_ASCII is read as UTF-8 where it is, and an encoding belay has no table for is
//! readable while the text is ASCII.

use std::borrow::Cow;

use bytes::Bytes;
use encoding_rs::Encoding;

use super::Violation;

/// How the session's client texts are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ClientEncoding {
    #[default]
    Utf8,
    /// ISO 8859-1: each byte is the code point of the same number.
    Latin1,
    /// An encoding with a WHATWG table (`encoding_rs`), exact for these.
    Table(&'static Encoding),
    /// SQL_ASCII: bytes the server does not interpret. Text that is UTF-8 is read as such
    /// (what such a database holds in practice); other bytes above 0x7F are refused.
    SqlAscii,
    /// An ASCII-safe encoding belay has no table for (EUC_TW, EUC_JIS_2004, MULE_INTERNAL):
    /// its name, canonical.
    Ascii(&'static str),
}

impl ClientEncoding {
    /// The encoding PostgreSQL calls `name` (any spelling it accepts).
    pub(crate) fn named(name: &str) -> ClientEncoding {
        let Some(canonical) = belay_core::encoding::canonical(name) else {
            return ClientEncoding::Ascii("unknown");
        };
        let table = match canonical {
            "UTF8" => return ClientEncoding::Utf8,
            "SQL_ASCII" => return ClientEncoding::SqlAscii,
            "LATIN1" => return ClientEncoding::Latin1,
            "LATIN2" => encoding_rs::ISO_8859_2,
            "LATIN3" => encoding_rs::ISO_8859_3,
            "LATIN4" => encoding_rs::ISO_8859_4,
            "ISO_8859_5" => encoding_rs::ISO_8859_5,
            "ISO_8859_6" => encoding_rs::ISO_8859_6,
            "ISO_8859_7" => encoding_rs::ISO_8859_7,
            "ISO_8859_8" => encoding_rs::ISO_8859_8,
            "LATIN6" => encoding_rs::ISO_8859_10,
            "LATIN7" => encoding_rs::ISO_8859_13,
            "LATIN8" => encoding_rs::ISO_8859_14,
            "LATIN9" => encoding_rs::ISO_8859_15,
            "LATIN10" => encoding_rs::ISO_8859_16,
            "WIN1250" => encoding_rs::WINDOWS_1250,
            "WIN1251" => encoding_rs::WINDOWS_1251,
            "WIN1252" => encoding_rs::WINDOWS_1252,
            "WIN1253" => encoding_rs::WINDOWS_1253,
            "WIN1254" => encoding_rs::WINDOWS_1254,
            "WIN1255" => encoding_rs::WINDOWS_1255,
            "WIN1256" => encoding_rs::WINDOWS_1256,
            "WIN1257" => encoding_rs::WINDOWS_1257,
            "WIN1258" => encoding_rs::WINDOWS_1258,
            "WIN866" => encoding_rs::IBM866,
            "WIN874" => encoding_rs::WINDOWS_874,
            "KOI8R" => encoding_rs::KOI8_R,
            "KOI8U" => encoding_rs::KOI8_U,
            "EUC_JP" => encoding_rs::EUC_JP,
            "EUC_KR" => encoding_rs::EUC_KR,
            // GB 2312 in EUC form, of which GBK is a superset.
            "EUC_CN" => encoding_rs::GBK,
            other => return ClientEncoding::Ascii(other),
        };
        ClientEncoding::Table(table)
    }

    fn name(&self) -> &'static str {
        match self {
            ClientEncoding::Utf8 => "UTF8",
            ClientEncoding::Latin1 => "LATIN1",
            ClientEncoding::SqlAscii => "SQL_ASCII",
            ClientEncoding::Table(e) => e.name(),
            ClientEncoding::Ascii(name) => name,
        }
    }

    /// `bytes`, text of the client's, as UTF-8: borrowed when it is ASCII or the session's
    /// encoding is UTF-8.
    pub(crate) fn decode<'a>(&self, bytes: &'a [u8]) -> Result<Cow<'a, str>, Violation> {
        let invalid = || {
            Violation(format!(
                "invalid message: string is not valid {}",
                self.name()
            ))
        };
        if matches!(self, ClientEncoding::Utf8 | ClientEncoding::SqlAscii) || bytes.is_ascii() {
            return std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| invalid());
        }
        match self {
            ClientEncoding::Latin1 => Ok(Cow::Owned(bytes.iter().map(|b| *b as char).collect())),
            ClientEncoding::Table(e) => e
                .decode_without_bom_handling_and_without_replacement(bytes)
                .ok_or_else(invalid),
            ClientEncoding::Ascii(name) => Err(Violation(format!(
                "belay cannot read text in client_encoding {name} that is not ASCII; use UTF8"
            ))),
            ClientEncoding::Utf8 | ClientEncoding::SqlAscii => Err(invalid()),
        }
    }

    /// `text` in the client's encoding, for the server (a text belay rewrote from one the
    /// client sent, so every character came from the client or is ASCII).
    pub(crate) fn encode<'a>(&self, text: &'a str) -> Cow<'a, [u8]> {
        if text.is_ascii() {
            return Cow::Borrowed(text.as_bytes());
        }
        match self {
            ClientEncoding::Utf8 | ClientEncoding::SqlAscii | ClientEncoding::Ascii(_) => {
                Cow::Borrowed(text.as_bytes())
            }
            ClientEncoding::Latin1 => Cow::Owned(
                text.chars()
                    .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                    .collect(),
            ),
            ClientEncoding::Table(e) => match e.encode(text) {
                (bytes, _, false) => bytes,
                // A character the encoding lacks; cannot come from the client's own text.
                (_, _, true) => Cow::Owned(
                    text.chars()
                        .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
                        .collect(),
                ),
            },
        }
    }

    /// The null-terminated text `body` begins with.
    pub(crate) fn cstr<'a>(&self, body: &'a [u8]) -> Result<Cow<'a, str>, Violation> {
        self.decode(&body[..terminator(body)?])
    }

    /// The null-terminated text `body` begins with, and the rest.
    pub(crate) fn split<'a>(&self, body: &'a Bytes) -> Result<(Cow<'a, str>, Bytes), Violation> {
        let end = terminator(body)?;
        Ok((self.decode(&body[..end])?, body.slice(end + 1..)))
    }
}

/// Where the null-terminated string `body` begins with ends.
fn terminator(body: &[u8]) -> Result<usize, Violation> {
    body.iter()
        .position(|b| *b == 0)
        .ok_or_else(|| Violation("invalid message: string without terminator".to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail loudly
    use super::*;

    #[test]
    fn texts_are_read_by_their_encoding_and_written_back_the_same() {
        let latin9 = ClientEncoding::named("iso-8859-15");
        assert_eq!(latin9, ClientEncoding::Table(encoding_rs::ISO_8859_15));
        let sent = b"SELECT 'foo\xa4bar'";
        let text = latin9.decode(sent).unwrap();
        assert_eq!(text, "SELECT 'foo€bar'");
        assert_eq!(&*latin9.encode(&text), &sent[..]);
        // The same bytes in LATIN1 are another character, exactly.
        let latin1 = ClientEncoding::named("LATIN1");
        assert_eq!(latin1.decode(sent).unwrap(), "SELECT 'foo¤bar'");
        assert_eq!(&*latin1.encode("SELECT 'foo¤bar'"), &sent[..]);
        // A byte sequence that is valid UTF-8 is still read as the session's encoding.
        assert_eq!(latin1.decode("é".as_bytes()).unwrap(), "Ã©");
        assert!(ClientEncoding::Utf8.decode(b"\xa4").is_err());
        let sql_ascii = ClientEncoding::named("sql_ascii");
        assert_eq!(sql_ascii.decode("é".as_bytes()).unwrap(), "é");
        assert!(sql_ascii.decode(b"\xa4").is_err());
        let euc_tw = ClientEncoding::named("EUC_TW");
        assert_eq!(euc_tw.decode(b"SELECT 1").unwrap(), "SELECT 1");
        assert!(euc_tw.decode(b"SELECT '\xa4\xa1'").is_err());
    }
}
