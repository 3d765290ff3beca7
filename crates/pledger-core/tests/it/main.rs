//! Tests of the pure domain core. One module per area; `support` holds the builders.

mod support;

mod artifact;
mod audit;
mod bundle;
mod canary;
mod decider;
mod decoders;
mod diff;

mod envelope;
mod frozen;
mod gate;
mod ids;
mod live;
mod merkle;
mod nats_url;
mod note;
mod notify;
mod outcome;
mod plan;
mod promptfoo;
mod redact;
mod routing;
mod schedule;
mod schemas;
mod sim;
mod tidy;
mod trust;
mod vectors;
mod window;
mod workers;
