//! What policy decides on a statement for this session, and what a refused client hears:
//! decisions cached by what policy can see (class, flags, relations, a foreign target),
//! the policy request for an analysis, and the refusal, in the server's words for a text
//! that does not parse.

use belay_core::{Class, Decision, Verdict};
use belay_pg::{Refusal, SQLSTATE_APPROVAL, SQLSTATE_DENIED};
use belay_policy::ActionRequest;
use belay_sql::{Analysis, Flag};

use super::{AppSession, DecisionKey, MAX_CACHED};
use crate::boundary::{self, ForeignTarget};
use crate::decide::with_analysis;

/// The parser's own message when `analysis` is of a text that does not parse.
fn syntax_error(analysis: &Analysis) -> Option<String> {
    match analysis.statements.as_slice() {
        [only] if only.flags.contains(&Flag::ParseError) => Some(
            only.reason
                .strip_prefix("the input does not parse: ")
                .unwrap_or(&only.reason)
                .to_owned(),
        ),
        _ => None,
    }
}

impl AppSession {
    pub(super) fn decide(&mut self, analysis: &Analysis) -> Decision {
        let foreign = self.foreign(analysis);
        let key: DecisionKey = (
            analysis.class,
            analysis.flags(),
            analysis
                .statements
                .iter()
                .flat_map(|s| s.relations.iter().map(|r| r.name.clone()))
                .collect(),
            !foreign.is_empty(),
        );
        if foreign.is_empty() {
            if let Some(d) = self.decisions.get(&key) {
                return d.clone();
            }
        }
        let decision = boundary::name_foreign(
            self.app
                .policy
                .evaluate(&self.request_with(analysis, !foreign.is_empty())),
            &foreign,
        );
        if self.decisions.len() >= MAX_CACHED {
            self.decisions.clear();
        }
        if foreign.is_empty() {
            self.decisions.insert(key, decision.clone());
        }
        decision
    }

    /// The cluster-level objects `analysis` names outside this session's environment.
    pub(super) fn foreign(&self, analysis: &Analysis) -> Vec<ForeignTarget> {
        let cluster = analysis
            .statements
            .iter()
            .any(|s| s.relations.iter().any(|r| r.object.cluster_level()));
        if !cluster {
            return Vec::new();
        }
        boundary::foreign_targets(&self.app.config, &self.environment, analysis)
    }

    pub(super) fn request(&self, analysis: &Analysis) -> ActionRequest {
        let foreign = !self.foreign(analysis).is_empty();
        self.request_with(analysis, foreign)
    }

    /// The policy request for `analysis`, whose foreign targets the caller already found.
    fn request_with(&self, analysis: &Analysis, foreign: bool) -> ActionRequest {
        let mut request = with_analysis(
            ActionRequest::new(
                &self.agent.name,
                &self.agent.owner,
                &self.environment,
                self.production,
                analysis.class,
                self.agent.grants.get(&self.environment).copied(),
            ),
            analysis,
        );
        request.foreign_target = foreign;
        request
    }

    pub(super) fn refusal(
        &self,
        analysis: Option<&Analysis>,
        decision: &Decision,
        seq: Option<u64>,
    ) -> Refusal {
        let (class, what) = match analysis {
            Some(a) => (
                a.class.as_str(),
                a.statements
                    .iter()
                    .map(|s| s.kind.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            None => ("unknown", String::new()),
        };
        let flags: Vec<&str> = analysis
            .map(|a| a.flags().iter().map(|f| f.as_str()).collect())
            .unwrap_or_default();
        let mut detail = format!("class: {class}");
        if let Some(a) = analysis.filter(|a| a.class > Class::Read) {
            detail.push_str(&format!(" ({})", a.reason()));
        }
        if !flags.is_empty() {
            detail.push_str(&format!("; flags: {}", flags.join(", ")));
        }
        if !decision.policies.is_empty() {
            detail.push_str(&format!("; policy: {}", decision.policies.join(", ")));
        }
        if let Some(seq) = seq {
            detail.push_str(&format!("; audit event {seq}"));
        }
        let what = if what.is_empty() {
            String::new()
        } else {
            format!(" ({what})")
        };
        // A text that does not parse is answered as the server would answer it: belay
        // parses with the server's grammar, so the message is the server's.
        if let Some(parser) = analysis.and_then(syntax_error) {
            return Refusal {
                code: "42601".to_owned(),
                message: parser,
                detail: Some(detail),
                hint: None,
                position: analysis.and_then(|a| a.statements.first()?.error_position),
            };
        }
        let (code, message, hint) = match decision.verdict {
            Verdict::Approve(n) => (
                SQLSTATE_APPROVAL,
                format!(
                    "belay holds this {class} statement{what} for approval by {n} human{}: {}",
                    if n == 1 { "" } else { "s" },
                    decision.reason
                ),
                "a human must approve it first (`belay pending` lists what waits)".to_owned(),
            ),
            _ => (
                SQLSTATE_DENIED,
                format!("belay denied this {class} statement{what}: {}", decision.reason),
                format!(
                    "run `belay policy explain --agent {} --env {} --sql '...'` to see why; a wider grant must come from the agent's owner",
                    self.agent.name, self.environment
                ),
            ),
        };
        Refusal::new(code, message).detail(detail).hint(hint)
    }
}
