//! The watch on the upstream's settings (ParameterStatus): the identity and a pinned
//! read-only default must not change, the encoding and the string syntax must stay ones
//! belay parses by, and the client encoding the relay reads texts by follows the upstream's.

use super::{text, Relay, Violation};
use crate::codec::{Backend, Frame};

/// How a session ended by the watch on the upstream's settings begins its message.
pub(crate) const WATCH_ENDED: &str = "belay ended the session: ";

/// Whether the upstream's `name` may take `value` in a session belay relays; `Err` says why
/// not. Only the settings belay parses by are checked here; pinned values in `watched`.
fn parsable_setting(name: &str, value: &str) -> Result<(), String> {
    match name.to_ascii_lowercase().as_str() {
        "client_encoding" if !belay_core::encoding::parsable(value) => Err(format!(
            "the upstream's client_encoding became `{value}`, an encoding belay cannot read SQL in the way the server does"
        )),
        "standard_conforming_strings" if !value.eq_ignore_ascii_case("on") => Err(format!(
            "the upstream's standard_conforming_strings became `{value}`, under which the server reads strings differently from belay"
        )),
        _ => Ok(()),
    }
}

impl Relay {
    /// Starts watching the upstream's settings from the values it reported at login
    /// (`reported`, ParameterStatus frames) and those belay pinned (`pinned`): the identity
    /// (`session_authorization`, `is_superuser`) and a pinned read-only mode must not change,
    /// and the encoding and string syntax must stay ones belay parses by. `Err` when the
    /// login itself already reported one it cannot parse under.
    pub(crate) fn watch(
        &mut self,
        reported: &[Frame],
        pinned: &[(String, String)],
    ) -> Result<(), Violation> {
        for frame in reported {
            if let Ok(Backend::ParameterStatus { name, value }) = Backend::decode(frame) {
                parsable_setting(&name, &value)
                    .map_err(|m| Violation(format!("{WATCH_ENDED}{m}")))?;
                if name.eq_ignore_ascii_case("client_encoding") {
                    self.encoding = text::ClientEncoding::named(&value);
                }
                if matches!(name.as_str(), "session_authorization" | "is_superuser") {
                    self.watched.push((name, value));
                }
            }
        }
        for (name, value) in pinned {
            if name == "default_transaction_read_only" {
                self.watched.push((name.clone(), value.clone()));
            }
        }
        Ok(())
    }

    /// A ParameterStatus from the upstream: `Err` ends the session when a watched setting
    /// changed.
    pub(super) fn setting_changed(&mut self, frame: &Frame) -> Result<(), Violation> {
        let Backend::ParameterStatus { name, value } = Backend::decode(frame)? else {
            return Ok(());
        };
        let ended = |m: String| Violation(format!("{WATCH_ENDED}{m}"));
        parsable_setting(&name, &value).map_err(ended)?;
        if name.eq_ignore_ascii_case("client_encoding") {
            self.encoding = text::ClientEncoding::named(&value);
        }
        if let Some((_, kept)) = self
            .watched
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            if *kept != value {
                return Err(ended(format!(
                    "the upstream's {name} changed from `{kept}` to `{value}`, which belay pins"
                )));
            }
        }
        Ok(())
    }
}
