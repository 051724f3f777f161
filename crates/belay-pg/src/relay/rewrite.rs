//! What the relay changes on the way: an allowed text that goes upstream rewritten, with its
//! notices queued for the client; the failure of belay's own statement ahead of a client's
//! (`own.rs`) told as the client's; and the upstream's `application_name` shown to the client
//! without the agent's prefix.

use bytes::{Bytes, BytesMut};

use super::{Expect, Relay};
use crate::codec::{Backend, ErrorFields, Frame, Severity};
use crate::gate::Rewrite;

impl Relay {
    /// The body of a Query (or, with the bytes after the text, of a Parse after its name)
    /// carrying `rewrite`'s text; its notices are queued to reach the client first.
    pub(super) fn rewritten(&mut self, rewrite: Rewrite, after: Option<Bytes>) -> Bytes {
        for notice in rewrite.notices {
            let fields = ErrorFields::new(Severity::Notice, "01000", notice);
            self.expect.push_back(Expect::Notice(Box::new(fields)));
        }
        let mut body = BytesMut::with_capacity(rewrite.sql.len() + 8);
        body.extend_from_slice(&self.encoding.encode(&rewrite.sql));
        body.extend_from_slice(b"\0");
        if let Some(after) = after {
            body.extend_from_slice(&after);
        }
        body.freeze()
    }

    /// The client's view of an upstream ParameterStatus: `application_name` without the
    /// agent's prefix; `None` when it is shown as it is.
    pub(crate) fn shown_setting(&self, frame: &Frame) -> Option<Frame> {
        let prefix = self.application_prefix.as_deref()?;
        let Ok(Backend::ParameterStatus { name, value }) = Backend::decode(frame) else {
            return None;
        };
        if !name.eq_ignore_ascii_case("application_name") {
            return None;
        }
        let own = value.strip_prefix(prefix)?;
        let own = own.strip_prefix('/').unwrap_or(own);
        let mut out = BytesMut::new();
        Backend::ParameterStatus {
            name,
            value: own.to_owned(),
        }
        .encode(&mut out);
        let mut bytes = out.freeze();
        let tag = bytes[0];
        // A frame's body is what follows the tag and the length.
        Some(Frame {
            tag,
            body: bytes.split_off(5),
        })
    }

    /// Notices queued for the client ahead of the next answer; the end of a COPY that never
    /// started (its statement was not a COPY, or failed first) is forgotten.
    pub(super) fn notices(&mut self, client: &mut BytesMut) {
        while matches!(
            self.expect.front(),
            Some(Expect::Notice(_) | Expect::CopyEnded)
        ) {
            if let Some(Expect::Notice(fields)) = self.expect.pop_front() {
                Backend::NoticeResponse(*fields).encode(client);
            }
        }
    }
}

/// The error a client sees when belay's own statement ahead of its own failed.
pub(super) fn own_failed(server: ErrorFields) -> ErrorFields {
    ErrorFields::new(
        Severity::Error,
        &server.code,
        format!(
            "belay could not write the decisions of this transaction into the database's ledger (the server said: {}), so the transaction did not commit; roll it back",
            server.message
        ),
    )
}
