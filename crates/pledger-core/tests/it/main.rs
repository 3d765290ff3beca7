//! Tests of the pure domain core. One module per area; `support` holds the builders.

mod support;

mod decider;
mod gate;
