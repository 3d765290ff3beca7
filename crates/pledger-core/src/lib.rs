//! Pure domain core of Prompt Ledger.
//!
//! Architecture invariant: nothing in this crate performs IO, reads a clock or draws a random
//! number from the OS. Time (`now`), event ids and bucketing salts are passed in by the edges;
//! the traffic simulation (`sim`) draws from its own generator, seeded by its caller.

pub mod artifact;
pub mod audit;
pub mod bundle;
pub mod canary;
pub mod chart;
pub mod decide;
pub mod diff;
pub mod digest;
pub mod error;
pub mod event;
pub mod frozen;
pub mod gate;
pub mod identity;
pub mod ids;
pub mod merkle;
pub mod names;
pub mod nats_url;
pub mod note;
pub mod notify;
pub mod outcome;
pub mod plan;
pub mod promptfoo;
pub mod redact;
pub mod routing;
pub mod schema;
pub mod sim;
pub mod state;
pub mod verify;
pub mod window;
pub mod workers;

pub use artifact::Artifact;
pub use bundle::EvalBundle;
pub use decide::{decide, Command, Context, Rejection, Rule};
pub use error::{FieldError, FileError, FileFormat};
pub use event::{Envelope, Event, EventMeta};
pub use gate::GatePolicy;
pub use ids::{Actor, DurationSpec, PromptName, ReleaseId, Timestamp, VersionId};
pub use plan::RolloutPlan;
pub use state::{evolve, PromptState};
