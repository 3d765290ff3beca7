//! Integration tests of pledger-infra against a real nats-server (started per test on a free
//! port with a temporary store) and real sled stores.

mod codec;
mod ledger;
mod projection;
mod routing;
mod supervise;
mod support;
mod workers;
