use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::ErrorCode;

/// The bucket services resolve against.
pub use pledger_core::names::ROUTING_BUCKET;
pub(crate) use pledger_core::names::ROUTING_STREAM;

/// What can go wrong in the SDK. `report` never fails (it counts); the rest say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The routing bucket does not exist on this server: no `pledger` command ran against it.
    #[error("the routing KV bucket `{ROUTING_BUCKET}` does not exist on this NATS server; run `pledger init` (or any pledger command) against it first")]
    BucketMissing,
    /// The server cannot be reached, or did not answer.
    #[error("cannot reach NATS ({0}); start one with `pledger up`, or point the service at yours")]
    Unreachable(String),
    /// The server answered with an error.
    #[error("NATS: {0}")]
    Nats(String),
    /// The first load of the routing tables did not finish in time.
    #[error("the routing tables did not load within {0:?} (last error: {1})")]
    Timeout(Duration, String),
    /// A snapshot file could not be read or written.
    #[error("routing snapshot {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },
    /// The outcome reporter was shut down.
    #[error("the outcome reporter is shut down")]
    ReporterClosed,
}

impl ClientError {
    pub(crate) fn snapshot(path: &std::path::Path, reason: impl ToString) -> ClientError {
        ClientError::Snapshot {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn from_get_stream(e: async_nats::jetstream::context::GetStreamError) -> Self {
        match e.kind() {
            GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                ClientError::BucketMissing
            }
            GetStreamErrorKind::JetStream(js) => ClientError::Nats(js.to_string()),
            _ => ClientError::Unreachable(e.to_string()),
        }
    }
}

/// Connects to NATS the way the SDK expects: the client keeps retrying in the background when
/// the server is down, including at start, so a [`Resolver`](crate::Resolver) started from a
/// snapshot serves while the server is away. Returns at once (never fails for an unreachable
/// server; only for a malformed URL).
///
/// A user and password in the URL (`nats://service:PASSWORD@host:4222`, the `service` user of
/// `ops/nats-auth.conf`) are sent to the server: async-nats 0.51 parses them but does not send
/// them by itself (nats-io/nats.rs#1623).
pub async fn connect(url: &str) -> Result<async_nats::Client, ClientError> {
    let options = match pledger_core::nats_url::credentials_of(url) {
        Some((user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        None => async_nats::ConnectOptions::new(),
    };
    options
        .name("pledger-client")
        .retry_on_initial_connect()
        .connect(pledger_core::nats_url::servers(url))
        .await
        .map_err(|e| {
            ClientError::Unreachable(format!("{}: {e}", pledger_core::nats_url::redact_all(url)))
        })
}
