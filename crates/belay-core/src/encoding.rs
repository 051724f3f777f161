//! Client encodings as PostgreSQL names them, and which of them belay can parse under.
//!
//! belay reads every SQL text as bytes in which `'`, `"`, `\` and `$` are ASCII. That holds
//! for a client encoding only when every byte below 0x80 is the ASCII character it looks like,
//! whether or not it follows a multi-byte lead byte. In SJIS, BIG5, GBK, UHC, GB18030, JOHAB
//! and SHIFT_JIS_2004 a second byte can be `\` (0x5C) or a quote, so the server would read
//! another statement than belay parsed: those are refused by whatever name they are asked
//! for. Names are resolved exactly as PostgreSQL's `pg_char_to_encoding` resolves them
//! (`src/common/encnames.c`): ASCII letters and digits only, lower-cased, looked up in the
//! same alias table; anything else is no encoding at all, and refused.

/// PostgreSQL's encoding aliases after cleaning (ASCII alphanumerics, lower case), with the
/// canonical name each resolves to.
const ALIASES: &[(&str, &str)] = &[
    ("abc", "WIN1258"),
    ("alt", "WIN866"),
    ("big5", "BIG5"),
    ("euccn", "EUC_CN"),
    ("eucjis2004", "EUC_JIS_2004"),
    ("eucjp", "EUC_JP"),
    ("euckr", "EUC_KR"),
    ("euctw", "EUC_TW"),
    ("gb18030", "GB18030"),
    ("gbk", "GBK"),
    ("iso88591", "LATIN1"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88595", "ISO_8859_5"),
    ("iso88596", "ISO_8859_6"),
    ("iso88597", "ISO_8859_7"),
    ("iso88598", "ISO_8859_8"),
    ("iso88599", "LATIN5"),
    ("johab", "JOHAB"),
    ("koi8", "KOI8R"),
    ("koi8r", "KOI8R"),
    ("koi8u", "KOI8U"),
    ("latin1", "LATIN1"),
    ("latin10", "LATIN10"),
    ("latin2", "LATIN2"),
    ("latin3", "LATIN3"),
    ("latin4", "LATIN4"),
    ("latin5", "LATIN5"),
    ("latin6", "LATIN6"),
    ("latin7", "LATIN7"),
    ("latin8", "LATIN8"),
    ("latin9", "LATIN9"),
    ("mskanji", "SJIS"),
    ("muleinternal", "MULE_INTERNAL"),
    ("shiftjis", "SJIS"),
    ("shiftjis2004", "SHIFT_JIS_2004"),
    ("sjis", "SJIS"),
    ("sqlascii", "SQL_ASCII"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("uhc", "UHC"),
    ("unicode", "UTF8"),
    ("utf8", "UTF8"),
    ("vscii", "WIN1258"),
    ("win", "WIN1251"),
    ("win1250", "WIN1250"),
    ("win1251", "WIN1251"),
    ("win1252", "WIN1252"),
    ("win1253", "WIN1253"),
    ("win1254", "WIN1254"),
    ("win1255", "WIN1255"),
    ("win1256", "WIN1256"),
    ("win1257", "WIN1257"),
    ("win1258", "WIN1258"),
    ("win866", "WIN866"),
    ("win874", "WIN874"),
    ("win932", "SJIS"),
    ("win936", "GBK"),
    ("win949", "UHC"),
    ("win950", "BIG5"),
    ("windows1250", "WIN1250"),
    ("windows1251", "WIN1251"),
    ("windows1252", "WIN1252"),
    ("windows1253", "WIN1253"),
    ("windows1254", "WIN1254"),
    ("windows1255", "WIN1255"),
    ("windows1256", "WIN1256"),
    ("windows1257", "WIN1257"),
    ("windows1258", "WIN1258"),
    ("windows866", "WIN866"),
    ("windows874", "WIN874"),
    ("windows932", "SJIS"),
    ("windows936", "GBK"),
    ("windows949", "UHC"),
    ("windows950", "BIG5"),
];

/// Canonical encodings whose every byte below 0x80 is ASCII: PostgreSQL's server encodings
/// (each one is ASCII-safe by the server's own rule) and no client-only encoding.
const PARSABLE: &[&str] = &[
    "SQL_ASCII",
    "UTF8",
    "EUC_JP",
    "EUC_CN",
    "EUC_KR",
    "EUC_TW",
    "EUC_JIS_2004",
    "MULE_INTERNAL",
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "WIN1256",
    "WIN1258",
    "WIN866",
    "WIN874",
    "KOI8R",
    "WIN1251",
    "WIN1252",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
    "WIN1250",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1257",
    "KOI8U",
];

/// PostgreSQL's NAMEDATALEN: a longer name is no encoding.
const NAMEDATALEN: usize = 64;

/// The canonical name PostgreSQL gives the encoding called `name`, or `None` when it knows
/// no such encoding. A name with a byte outside ASCII is `None` too: the server's cleaning
/// depends on its locale there, and belay does not guess.
pub fn canonical(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() >= NAMEDATALEN || !name.is_ascii() {
        return None;
    }
    let key: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    ALIASES
        .binary_search_by(|(alias, _)| alias.cmp(&key.as_str()))
        .ok()
        .map(|i| ALIASES[i].1)
}

/// Whether belay parses text in the encoding called `name` exactly as the server reads it:
/// the name resolves, and to an encoding whose bytes below 0x80 are always ASCII.
pub fn parsable(name: &str) -> bool {
    canonical(name).is_some_and(|c| PARSABLE.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alias_table_is_sorted_for_binary_search() {
        assert!(ALIASES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn every_spelling_postgres_accepts_resolves_as_it_does() {
        assert_eq!(canonical("windows932"), Some("SJIS"));
        assert_eq!(canonical("Windows-936"), Some("GBK"));
        assert_eq!(canonical("WIN_949"), Some("UHC"));
        assert_eq!(canonical("ms kanji"), Some("SJIS"));
        assert_eq!(canonical("Shift_JIS_2004"), Some("SHIFT_JIS_2004"));
        assert_eq!(canonical("UTF-8"), Some("UTF8"));
        assert_eq!(canonical("unicode"), Some("UTF8"));
        assert_eq!(canonical("ISO-8859-15"), Some("LATIN9"));
        assert_eq!(canonical("cp932"), None);
        assert_eq!(canonical(""), None);
        assert_eq!(canonical("ＳＪＩＳ"), None);
    }

    #[test]
    fn only_ascii_safe_encodings_are_parsable() {
        for bad in [
            "SJIS",
            "windows932",
            "win936",
            "Windows-949",
            "windows950",
            "BIG5",
            "GBK",
            "UHC",
            "GB18030",
            "JOHAB",
            "SHIFT_JIS_2004",
            "mskanji",
            "no-such-encoding",
        ] {
            assert!(!parsable(bad), "{bad}");
        }
        for good in [
            "UTF8",
            "utf-8",
            "LATIN1",
            "EUC_JP",
            "SQL_ASCII",
            "WIN1252",
            "KOI8-U",
        ] {
            assert!(parsable(good), "{good}");
        }
        // Every canonical name the alias table reaches is classified one way or the other.
        for (_, c) in ALIASES {
            let client_only = [
                "SJIS",
                "BIG5",
                "GBK",
                "UHC",
                "GB18030",
                "JOHAB",
                "SHIFT_JIS_2004",
            ];
            assert_eq!(PARSABLE.contains(c), !client_only.contains(c), "{c}");
        }
    }
}
