//! Service SDK of Prompt Ledger (`pledger`): which prompt version to serve for a request, and
//! how it went.
//!
//! A service does two things with `pledger`:
//!
//! 1. **Resolve** each request to a prompt version with a [`Resolver`]. The resolver holds
//!    every routing table of the `pledger_routing` KV bucket in memory and follows its
//!    changes (a rollout advancing, a rollback) through a KV watch, so
//!    [`Resolver::resolve`] answers locally in well under a microsecond, with the same sticky
//!    bucketing as `pledger resolve`. The [`Resolution`] carries the version id, the
//!    [`Artifact`] to serve (instructions and model settings), and, during a rollout, the
//!    release and the arm (`baseline` or `candidate`).
//! 2. **Report** each request's outcome with an [`OutcomeReporter`]. `report` is synchronous
//!    and never blocks: outcomes are queued, batched per prompt into JSON arrays below the
//!    server's `max_payload`, and published to the `PLEDGER_OUTCOMES` stream, where the canary
//!    compares the candidate with its baseline. A full queue drops and counts.
//!
//! ```ignore
//! use pledger_client::{OutcomeReporter, ReporterOptions, RequestContext, Resolver, ResolverOptions};
//!
//! let client = pledger_client::connect("nats://127.0.0.1:4222").await?;
//! let resolver = Resolver::start(
//!     client.clone(),
//!     ResolverOptions { snapshot: Some("/var/lib/my-service/routing.json".into()), ..Default::default() },
//! )
//! .await?;
//! let reporter = OutcomeReporter::start(client, ReporterOptions::default());
//!
//! // Per request:
//! let attrs = [("user_kind", "external"), ("geo", "eu")];
//! let resolution = resolver.resolve("support-triage", &RequestContext::new().unit(&user_id).attrs(&attrs));
//! let Some(artifact) = resolution.artifact() else { return serve_fallback() };
//! let answer = call_model(&artifact.instructions, &artifact.model).await;
//! if let Some(mut outcome) = resolution.outcome(request_id) {
//!     outcome.latency_ms = answer.latency_ms;
//!     outcome.tokens_in = answer.tokens_in;
//!     outcome.tokens_out = answer.tokens_out;
//!     outcome.fallback = answer.fell_back;
//!     outcome.unit = Some(user_id.clone());
//!     reporter.report(outcome);
//! }
//!
//! // On shutdown:
//! reporter.shutdown().await;
//! ```
//!
//! `examples/service.rs` is a complete, runnable version (`cargo run -p pledger-client
//! --example service -- support-triage`).
//!
//! # Failure behaviour
//!
//! - **Fail static.** When NATS is unreachable, the resolver keeps serving the last tables it
//!   had; the client reconnects by itself and the watch resumes. [`Resolver::staleness`] says
//!   whether the watch is live and how long ago the tables were last confirmed current
//!   (feed it to your health check).
//! - **Snapshots.** With [`ResolverOptions::snapshot`], the resolver rewrites a JSON snapshot
//!   of its tables whenever they change, and the next [`Resolver::start`] serves that
//!   snapshot at once, even if the server is down at that moment (connect with
//!   [`connect`], which keeps retrying in the background). Without a snapshot, `start` fails
//!   when the tables cannot be loaded: there would be nothing to serve. A snapshot names the
//!   routing bucket it came from; once a server answers whose bucket is another one (another
//!   ledger, or the bucket created again), the snapshot's tables are dropped with a warning
//!   and that bucket's are served, whatever their ledger sequences.
//! - **Ordering.** A table is never replaced by one derived from an older ledger sequence.
//!   Deleting a prompt's key removes the prompt.
//! - **Outcomes are telemetry.** Delivery is at most once; everything dropped or lost is
//!   counted in [`OutcomeReporter::stats`]. Memory is bounded by
//!   [`ReporterOptions::capacity`].
//!
//! # Waiting for changes (tests)
//!
//! [`Resolver::wait_for`], [`Resolver::wait_for_revision`], [`Resolver::wait_synced`] and
//! [`Resolver::wait_until`] wait on the resolver's change notifications ([`Resolver::changes`]),
//! so tests never sleep to synchronise; bound them with `tokio::time::timeout`.
//! [`Resolver::from_tables`] builds a resolver over fixed tables, with no server, for unit
//! tests of a service's own code.

mod context;
mod error;
mod reporter;
mod resolver;
mod routing;
mod snapshot;

pub use context::{Attributes, NoAttributes, RequestContext};
pub use error::{connect, ClientError, ROUTING_BUCKET};
pub use reporter::{OutcomeReporter, ReporterOptions, ReporterStats};
pub use resolver::{Resolver, ResolverOptions, Staleness};
pub use routing::{bucket, Resolution};
pub use snapshot::SNAPSHOT_FORMAT;

pub use pledger_core::outcome::{Feedback, FeedbackTag, Outcome};
pub use pledger_core::routing::{Arm, RoutingTable};
pub use pledger_core::{Artifact, PromptName, ReleaseId, VersionId};
