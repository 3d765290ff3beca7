//! Infrastructure errors, with the kinds callers match on.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// The server cannot be reached at all.
    #[error("cannot reach the NATS server at {url} ({reason}); start one with `pledger up`, or point --nats / PLEDGER_NATS_URL at yours")]
    Unreachable { url: String, reason: String },
    #[error("the ledger stream {LEDGER} is missing ({0}); run `pledger init`", LEDGER = crate::ledger::LEDGER_STREAM)]
    StreamMissing(String),
    #[error("nats-server {version} is too old: the ledger needs >= {min} (run ops/install-nats-server.sh)")]
    ServerTooOld { version: String, min: String },
    #[error("setting up streams and buckets failed: {0}")]
    StreamSetup(String),
    #[error("stream {stream} exists with the wrong configuration: {detail}")]
    StreamMisconfigured {
        stream: &'static str,
        detail: String,
    },
    #[error("reading the ledger failed: {0}")]
    Read(String),
    /// The servers are reachable but a JetStream request got no answer (no responders, a
    /// timeout) for as long as a cluster takes to elect a leader.
    #[error("the NATS servers did not answer ({0}); a cluster that lost a node answers again once it has elected a leader (seconds); is JetStream enabled on the server?")]
    Unanswered(String),
    #[error("{}", not_enrolled(key, *empty))]
    NotEnrolled { key: String, empty: bool },
    #[error("--as {claimed}: the signing key {key} belongs to {owner}, not {claimed} (--as selects among your own keys; it never acts for another identity)")]
    NotYourKey {
        key: String,
        owner: String,
        claimed: String,
    },
    #[error("signing the event failed: {0}")]
    Signing(String),
    #[error("appending to the ledger failed: {0}")]
    Publish(String),
    #[error("the {kind} event is {size} bytes, over the ledger's limit of {limit} bytes")]
    TooLarge {
        kind: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("routing bucket: {0}")]
    Routing(String),
    #[error("routing table for `{prompt}` in the bucket does not decode: {reason}")]
    CorruptRouting { prompt: String, reason: String },
}

/// async-nats reports an unanswered request as "no responders" or "timed out" in the text of
/// several error types (stream lookup, stream info, consumer creation, fetch), so the text is
/// what they share.
fn unanswered_text(text: &str) -> bool {
    text.contains("no responders") || text.contains("timed out")
}

fn not_enrolled(key: &str, empty: bool) -> String {
    if empty {
        format!("the roster is empty: no identity is enrolled yet (run `pledger init --admin NAME --key FILE`; this key is {key})")
    } else {
        format!("the signing key {key} belongs to no enrolled identity (it is unknown, retired or revoked; see `pledger identity list`)")
    }
}

impl InfraError {
    pub(crate) fn stream_setup(e: impl Display) -> InfraError {
        InfraError::StreamSetup(e.to_string())
    }
    /// A stream lookup's failure: missing only when the server said so; a request nobody
    /// answered is [`InfraError::Unanswered`] (an auditor must not read "no checkpoints" into
    /// a timeout).
    pub(crate) fn stream_missing(e: impl Display) -> InfraError {
        InfraError::unanswered_or(e, InfraError::StreamMissing)
    }
    pub(crate) fn read(e: impl Display) -> InfraError {
        InfraError::unanswered_or(e, InfraError::Read)
    }
    fn unanswered_or(e: impl Display, otherwise: fn(String) -> InfraError) -> InfraError {
        let text = e.to_string();
        if unanswered_text(&text) {
            InfraError::Unanswered(text)
        } else {
            otherwise(text)
        }
    }
    /// Is this a request that went unanswered, worth asking again during an election?
    pub fn is_unanswered(&self) -> bool {
        matches!(self, InfraError::Unanswered(_))
    }
    pub(crate) fn publish(e: impl Display) -> InfraError {
        InfraError::Publish(e.to_string())
    }
    pub(crate) fn routing(e: impl Display) -> InfraError {
        InfraError::Routing(e.to_string())
    }
}

/// Connects to NATS, failing fast (2 s) when nothing listens, with an error that says how to
/// start a server. `url` may list several servers separated by commas (the nodes of a
/// cluster): the client connects to one and reconnects to any. A user and password in the URL
/// (`nats://worker:PASSWORD@host:4222`) are sent to the server; error messages show the URL
/// without the password.
pub async fn connect(url: &str) -> Result<async_nats::Client, InfraError> {
    let servers = crate::nats_url::servers(url);
    crate::nats_url::connect_options(url)
        .name("pledger")
        .connection_timeout(std::time::Duration::from_secs(2))
        .connect(servers)
        .await
        .map_err(|e| InfraError::Unreachable {
            url: crate::nats_url::redact_all(url),
            reason: match e.kind() {
                async_nats::ConnectErrorKind::AuthorizationViolation => {
                    "the server refused the user and password".to_string()
                }
                _ => e.to_string(),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_nobody_answered_is_not_a_missing_stream() {
        let timed_out = InfraError::stream_missing("request error: timed out: request timed out");
        assert!(timed_out.is_unanswered(), "{timed_out}");
        assert!(!matches!(timed_out, InfraError::StreamMissing(_)));
        let no_responders = InfraError::read("no responders");
        assert!(no_responders.is_unanswered(), "{no_responders}");
        let missing = InfraError::stream_missing("jetstream error: stream not found (code 404)");
        assert!(matches!(missing, InfraError::StreamMissing(_)), "{missing}");
        assert!(!missing.is_unanswered());
        assert!(matches!(
            InfraError::read("consumer deleted"),
            InfraError::Read(_)
        ));
    }
}
