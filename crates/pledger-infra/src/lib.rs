//! Infrastructure of Prompt Ledger: the JetStream ledger and its conditional appends, the
//! routing KV (runtime config layer), sled projections behind one codec, and the nats-server
//! process used by `pledger up`, the demo and the tests.

pub mod audit;
pub mod cast;
pub mod codec;
pub mod error;
pub mod ledger;
pub mod metrics;
pub mod nats_url;
pub mod projection;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod worker;

pub use error::{connect, InfraError};
pub use ledger::{ExecuteError, Executed, Family, Ledger, Recorded};
pub use routing::{RoutingStore, RoutingWrite};
