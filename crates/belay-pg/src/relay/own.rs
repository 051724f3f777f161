//! belay's own statement ahead of a client's (`Check::AllowAfter`: the ledger's row before a
//! COMMIT), prepared once per upstream connection under a reserved name and then only bound
//! and run: the server neither parses the row's values as a literal nor plans the INSERT at
//! every COMMIT. What the relay knows of that prepared statement (`Prepared`) and the
//! messages that run the statement, in the simple protocol and in the extended one.
//!
//! The relay believes the statement exists only once the server said so (the ParseComplete
//! or the `PREPARE` tag of belay's own message), and stops believing it when the client's
//! statements drop every prepared statement (`DEALLOCATE ALL`, `DISCARD ALL`) or a run of it
//! fails as if it were missing. While it does not know (a Parse sent, not answered yet),
//! the extended protocol closes and parses it again, which cannot fail for its existing,
//! and the simple protocol runs the statement with its values inline, unprepared.

use bytes::BytesMut;

use super::{put_frame, Expect, Relay, Violation, RESERVED_PREFIX};
use crate::codec::Frame;
use crate::gate::Own;
use crate::upstream::push_literal;

/// The upstream name of belay's own statement, NUL-terminated.
const NAME: &str = "belay_ledger\0";

/// What the relay knows of its own statement on the upstream connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prepared {
    /// Not prepared, or dropped since.
    #[default]
    Absent,
    /// Sent to be prepared; its answer is due by the `until`th ReadyForQuery.
    Asked { until: u64 },
    /// The server prepared it.
    Ready,
}

impl Relay {
    /// The ReadyForQuery by which a message sent now will have been answered (the simple
    /// Query's own, or the Sync the client sends after an Execute).
    fn answered_by(&self) -> u64 {
        self.ready_seen + self.ready_pending + 1
    }

    /// `own` ahead of the Execute being forwarded: bound to a portal and run under the
    /// reserved name, which is parsed first unless the server has it (closed before: a Parse
    /// of an existing name fails), and the portal closed; its answers are swallowed
    /// (`Expect::Own`).
    pub(super) fn own_before(&mut self, own: &Own, up: &mut BytesMut) {
        debug_assert!(NAME.starts_with(RESERVED_PREFIX));
        debug_assert!(own.params.iter().all(|p| p.is_ascii()));
        self.own_tag = own.tag;
        let name = NAME.as_bytes();
        let mut answers = 3;
        if self.own != Prepared::Ready {
            put_frame(up, b'C', &[b"S", name]);
            put_frame(up, b'P', &[name, own.sql.as_bytes(), b"\0", &[0, 0]]);
            self.own = Prepared::Asked {
                until: self.answered_by(),
            };
            answers += 2;
        }
        // Bind: a portal of the statement's name (the unnamed one may be the client's,
        // bound already), the statement, every parameter as text, every column as text.
        let mut bind = BytesMut::with_capacity(
            2 * NAME.len() + 8 + own.params.iter().map(|p| p.len() + 4).sum::<usize>(),
        );
        bind.extend_from_slice(name);
        bind.extend_from_slice(name);
        bind.extend_from_slice(&[0, 0]);
        bind.extend_from_slice(&(own.params.len() as u16).to_be_bytes());
        for p in &own.params {
            bind.extend_from_slice(&(p.len() as i32).to_be_bytes());
            bind.extend_from_slice(p.as_bytes());
        }
        bind.extend_from_slice(&[0, 0]);
        put_frame(up, b'B', &[&bind]);
        put_frame(up, b'E', &[name, &[0, 0, 0, 0]]);
        // Closed at once: another run in the same transaction binds the name again.
        put_frame(up, b'C', &[b"P", name]);
        self.expect.push_back(Expect::Own(answers));
    }

    /// The text to run `own` ahead of a client's simple Query (each of its statements
    /// followed by `; `), and how many statements it has: `EXECUTE` of the prepared
    /// statement; `PREPARE` and `EXECUTE` when the server has not got it; the statement with
    /// its values inline while a preparation is unanswered (a second `PREPARE` would fail if
    /// the first succeeded).
    pub(super) fn own_text(&mut self, own: &Own) -> (String, usize) {
        debug_assert!(own.params.iter().all(|p| p.is_ascii()));
        self.own_tag = own.tag;
        let size = own.sql.len() + 64 + own.params.iter().map(|p| p.len() + 4).sum::<usize>();
        let mut text = String::with_capacity(size);
        let name = NAME.trim_end_matches('\0');
        let mut statements = 1;
        match self.own {
            Prepared::Asked { .. } => {
                inline(&mut text, own);
                text.push_str("; ");
                return (text, 1);
            }
            Prepared::Absent => {
                text.push_str("PREPARE ");
                text.push_str(name);
                text.push_str(" AS ");
                text.push_str(own.sql);
                text.push_str("; ");
                self.own = Prepared::Asked {
                    until: self.answered_by(),
                };
                statements = 2;
            }
            Prepared::Ready => {}
        }
        text.push_str("EXECUTE ");
        text.push_str(name);
        text.push('(');
        for (i, p) in own.params.iter().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            push_literal(&mut text, p);
        }
        text.push_str("); ");
        (text, statements)
    }

    /// Takes the upstream's `frame` if it answers belay's own messages (`Expect::Own`):
    /// ParseComplete, BindComplete, CloseComplete and the run's CommandComplete, which must
    /// carry the statement's tag. Rows, or any other tag, mean that what runs under belay's
    /// name is not belay's statement (replaced by code that reached the session's
    /// prepared statements), and the session ends. Errors, notices, settings and
    /// notifications are left to the caller; `Ok(false)` for them and when nothing of
    /// belay's own is expected.
    pub(super) fn own_answer(&mut self, frame: &Frame) -> Result<bool, Violation> {
        match self.expect.front() {
            Some(Expect::Own(_)) => {}
            // A hidden statement of belay's own gives no rows.
            Some(Expect::Simple { hidden, .. })
                if *hidden > 0 && matches!(frame.tag, b'T' | b'D') =>
            {
                return Err(self.not_own("rows"));
            }
            _ => return Ok(false),
        }
        match frame.tag {
            b'1' | b'2' | b'3' => {}
            b'C' => {
                let tag = frame.body.strip_suffix(b"\0").unwrap_or(&frame.body);
                if tag != self.own_tag.as_bytes() {
                    return Err(
                        self.not_own(&format!("the tag `{}`", String::from_utf8_lossy(tag)))
                    );
                }
            }
            b'E' | b'N' | b'S' | b'A' => return Ok(false),
            other => return Err(self.not_own(&format!("a message of type `{}`", other as char))),
        }
        if let Some(Expect::Own(left)) = self.expect.front_mut() {
            *left -= 1;
            if *left == 0 {
                self.expect.pop_front();
            }
        }
        if frame.tag == b'1' {
            self.own_prepared();
        }
        Ok(true)
    }

    /// Checks the tag of a hidden statement's CommandComplete in a simple Query: belay's
    /// `PREPARE`, its statement's run, or the read-write prefix.
    pub(super) fn hidden_tag(&mut self, tag: &str) -> Result<(), Violation> {
        if tag == "PREPARE" {
            self.own_prepared();
            return Ok(());
        }
        // `SET`: the read-write prefix (`READ_WRITE_PREFIX`); a prepared statement cannot
        // be a SET.
        if tag == self.own_tag || tag == "SET" {
            return Ok(());
        }
        Err(self.not_own(&format!("the tag `{tag}`")))
    }

    /// Why the session ends when belay's own statement answered with `what`.
    fn not_own(&self, what: &str) -> Violation {
        Violation(format!(
            "belay's own statement `{}` answered with {what}, which its statement does not give: something other than belay's statement runs under its name, so no transaction of this session may commit through it",
            NAME.trim_end_matches('\0')
        ))
    }

    /// The server answered belay's own Parse or `PREPARE`.
    pub(super) fn own_prepared(&mut self) {
        if matches!(self.own, Prepared::Asked { .. }) {
            self.own = Prepared::Ready;
        }
    }

    /// belay's own statement failed with `code`: if it was being prepared, it was not (an
    /// existing one makes `PREPARE` fail with 42P05); if it was missing (26000), it is
    /// prepared again next time; otherwise (an aborted transaction) nothing is learnt.
    pub(super) fn own_error(&mut self, code: &str) {
        self.own = match (self.own, code) {
            (_, "42P05") => Prepared::Ready,
            (_, "26000") | (Prepared::Asked { .. }, _) => Prepared::Absent,
            (known, _) => known,
        };
    }

    /// What a client's statement completed with `tag` tells of belay's own: every prepared
    /// statement is dropped by `DEALLOCATE ALL` and `DISCARD ALL`.
    pub(super) fn own_after_tag(&mut self, tag: &str) {
        if tag == "DEALLOCATE ALL" || tag == "DISCARD ALL" {
            self.own = Prepared::Absent;
        }
    }

    /// At each ReadyForQuery: a preparation whose answer is overdue did not happen (the
    /// server skipped it after an earlier error).
    pub(super) fn own_ready(&mut self) {
        if let Prepared::Asked { until } = self.own {
            if self.ready_seen >= until {
                self.own = Prepared::Absent;
            }
        }
    }
}

/// `own`'s text with each `$n` replaced by the literal of its parameter.
fn inline(text: &mut String, own: &Own) {
    let mut rest = own.sql;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - at - 1);
        let n: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
        match own.params.get(n.wrapping_sub(1)) {
            Some(p) => push_literal(text, p),
            None => text.push_str("NULL"),
        }
        rest = &rest[at + 1 + digits..];
    }
    text.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Own {
        Own {
            sql: "INSERT INTO t (a, b) VALUES ($1, $2)",
            params: vec!["it's".to_owned(), "[1]".to_owned()],
            tag: "INSERT 0 1",
        }
    }

    #[test]
    fn inline_quotes_each_parameter_where_it_stands() {
        let mut text = String::new();
        inline(&mut text, &own());
        assert_eq!(text, "INSERT INTO t (a, b) VALUES ('it''s', '[1]')");
    }
}
