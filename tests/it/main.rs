//! End-to-end tests: the built `pledger` binary against a real nats-server.

mod audit;
mod bench;
mod canary;
mod cluster;
mod faults;
mod fixture;
mod input;
mod learning;
mod lifecycle;
mod notify;
mod permissions;
mod races;
mod rules;
mod schedule;
mod server;
mod snapshots;
mod stores;
mod trust;
mod ui;
