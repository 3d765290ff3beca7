//! Integration tests of pledger-client against a real nats-server (started per test on a free
//! port with a temporary store), with routing tables written the way `pledger` writes them.

mod equivalence;
mod reporter;
mod resolver;
mod snapshot;
mod support;
mod vectors;
