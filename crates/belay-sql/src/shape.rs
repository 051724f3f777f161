//! A statement's shape: its text with every literal (a number or a quoted string) taken out,
//! read by a deliberately small lexer. Applications that send their values inside the SQL
//! text (the simple query protocol) send a new text for every value; texts of one shape are
//! parsed into the same tree but for the values of their constants, so a shape can stand for
//! all of them when the analysis cannot depend on those values (`inert`).
//!
//! The lexer accepts only text it reads exactly as PostgreSQL's lexer does, and gives up
//! (`None`: the text is parsed as usual) on everything else: dollar signs (parameters, which
//! only redaction reads, and dollar quoting), backslashes (escapes, whose meaning depends on
//! `standard_conforming_strings`), comments, prefixed strings (`E'…'`, `B'…'`, `X'…'`,
//! `U&'…'`), numbers that are not plain integers of at most nine digits (`1.5`, `1e3`,
//! `0x1F`, `1_000`: they lex as other tokens, or as a number of another type) and any byte
//! outside printable ASCII except inside quotes. In what it accepts, the contents of a
//! literal cannot move a token boundary, so two texts with one shape lex into the same
//! tokens but for the literals' values, each literal keeping its type.

/// Kinds of literal, kept apart in a shape: the grammar may treat them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Literal {
    /// Digits only, at most nine of them: always an integer constant.
    Integer,
    /// A quoted string without backslashes.
    String,
}

/// Digits in the longest integer literal accepted: fits PostgreSQL's `int4`, so it always
/// lexes as an integer constant, never as a numeric one.
const MAX_DIGITS: usize = 9;

/// `sql` with each literal replaced by what `mark` writes, or `None` when the text is outside
/// what this lexer reads exactly.
pub(crate) fn rewrite(sql: &str, mark: impl FnMut(&mut String, Literal)) -> Option<String> {
    lex(sql, None, mark)
}

/// `rewrite`, reading parameters (`$1`) too when `params` is given, where it keeps the
/// highest number seen.
fn lex(
    sql: &str,
    mut params: Option<&mut u32>,
    mut mark: impl FnMut(&mut String, Literal),
) -> Option<String> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                out.push(b as char);
                i += 1;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let end = run(bytes, i, |c| c.is_ascii_alphanumeric() || c == b'_');
                // `E'…'`, `B'…'`, `X'…'`, `N'…'` are other kinds of string.
                if bytes.get(end) == Some(&b'\'') {
                    return None;
                }
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'0'..=b'9' => {
                let end = run(bytes, i, |c| c.is_ascii_digit());
                let next = bytes.get(end).copied();
                let glued = |c: Option<u8>| {
                    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
                };
                if end - i > MAX_DIGITS || glued(next) || (i > 0 && bytes[i - 1] == b'.') {
                    return None;
                }
                mark(&mut out, Literal::Integer);
                i = end;
            }
            b'\'' => {
                // `U&'…'` has escapes of its own.
                if i > 0 && bytes[i - 1] == b'&' {
                    return None;
                }
                let end = quoted(bytes, i, b'\'', true)?;
                mark(&mut out, Literal::String);
                i = end;
            }
            b'"' => {
                if i > 0 && bytes[i - 1] == b'&' {
                    return None;
                }
                let end = quoted(bytes, i, b'"', false)?;
                out.push_str(&sql[i..end]);
                i = end;
            }
            // A parameter, `$` and digits not followed by what would make it another token.
            b'$' if params.is_some() => {
                let end = run(bytes, i + 1, |c| c.is_ascii_digit());
                let glued = bytes
                    .get(end)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$');
                if end == i + 1 || end - i - 1 > MAX_DIGITS || glued {
                    return None;
                }
                let n: u32 = sql[i + 1..end].parse().ok()?;
                if let Some(highest) = params.as_deref_mut() {
                    *highest = (*highest).max(n);
                }
                out.push_str(&sql[i..end]);
                i = end;
            }
            // Comments.
            b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
            b'(' | b')' | b',' | b';' | b'.' | b'[' | b']' | b':' | b'+' | b'-' | b'*' | b'/'
            | b'<' | b'>' | b'=' | b'~' | b'!' | b'@' | b'#' | b'%' | b'^' | b'&' | b'|' | b'?' => {
                out.push(b as char);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The end of the run of bytes from `start` that `keep` accepts.
fn run(bytes: &[u8], start: usize, keep: impl Fn(u8) -> bool) -> usize {
    let mut end = start;
    while end < bytes.len() && keep(bytes[end]) {
        end += 1;
    }
    end
}

/// The end (one past the closing quote) of the quoted text at `start`, where a doubled quote
/// stands for itself. `None` when it is not closed, or holds a backslash and `plain` asks for
/// none.
fn quoted(bytes: &[u8], start: usize, quote: u8, plain: bool) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let c = *bytes.get(i)?;
        if c == b'\\' && plain {
            return None;
        }
        if c == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
}

/// The cache key of `sql`'s shape. The markers hold a byte the lexer never accepts in a text,
/// so a key cannot be mistaken for another text's.
pub(crate) fn key(sql: &str) -> Option<String> {
    rewrite(sql, |out, literal| {
        out.push_str(match literal {
            Literal::Integer => "\u{1}i",
            Literal::String => "\u{1}s",
        })
    })
}

/// `sql` with its literals replaced by `$1`, `$2`, … in order.
pub(crate) fn redact(sql: &str) -> Option<String> {
    // Numbered after the text's own parameters, as the server's normalization numbers them.
    let mut n = 0;
    if sql.contains('$') {
        lex(sql, Some(&mut n), |_, _| {})?;
    }
    lex(sql, Some(&mut 0), |out, _| {
        n += 1;
        out.push('$');
        out.push_str(&n.to_string());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_with_parameters_is_redacted_as_the_server_normalizes_it() {
        for sql in [
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
            "SELECT $2, 'secret', 5 FROM t WHERE a = $1",
            "INSERT INTO h (a, b) VALUES ($1, $2)",
            "SELECT 'x' || $10",
        ] {
            assert_eq!(redact(sql), pg_query::normalize(sql).ok(), "{sql}");
        }
        for sql in ["SELECT $1abc", "SELECT $$x$$", "SELECT $", "SELECT $1$"] {
            assert_eq!(redact(sql), None, "{sql}");
        }
    }

    #[test]
    fn texts_differing_only_in_literal_values_share_a_shape() {
        let a = key("SELECT abalance FROM pgbench_accounts WHERE aid = 17;");
        let b = key("SELECT abalance FROM pgbench_accounts WHERE aid = 999999;");
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_eq!(
            key("SELECT * FROM t WHERE name = 'a''b' AND \"Odd \"\"col\" = 'ü'"),
            key("SELECT * FROM t WHERE name = '' AND \"Odd \"\"col\" = 'x'")
        );
    }

    #[test]
    fn anything_else_changes_the_shape() {
        let base = key("SELECT * FROM t WHERE id = 1");
        assert!(base.is_some());
        for other in [
            "SELECT * FROM t WHERE id = '1'",
            "SELECT * FROM t WHERE 1 = 1",
            "SELECT * FROM t WHERE id  = 1",
            "SELECT * FROM u WHERE id = 1",
            "select * FROM t WHERE id = 1",
            "SELECT * FROM t WHERE id = -1",
        ] {
            let shape = key(other);
            assert!(shape.is_some(), "{other}");
            assert_ne!(shape, base, "{other}");
        }
    }

    #[test]
    fn text_outside_the_plain_subset_has_no_shape() {
        for sql in [
            "SELECT $1",
            "SELECT $$x$$",
            "SELECT 'a\\'",
            "SELECT E'a'",
            "SELECT B'01'",
            "SELECT X'1F'",
            "SELECT N'a'",
            "SELECT U&'a'",
            "SELECT U&\"a\"",
            "SELECT 1 -- c",
            "SELECT /* c */ 1",
            "SELECT 1.5",
            "SELECT .5",
            "SELECT 1e3",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 1234567890",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT {}",
            "SELECT ü",
            "SELECT\u{c}1",
            "SELECT `1`",
        ] {
            assert_eq!(key(sql), None, "{sql}");
        }
    }

    #[test]
    fn redaction_numbers_the_literals() {
        assert_eq!(
            redact("UPDATE t SET pw = 'hunter2' WHERE id = 42").as_deref(),
            Some("UPDATE t SET pw = $1 WHERE id = $2")
        );
        assert_eq!(redact("SELECT $1, 7").as_deref(), Some("SELECT $1, $2"));
        assert_eq!(redact("SELECT $$x$$"), None);
    }
}
