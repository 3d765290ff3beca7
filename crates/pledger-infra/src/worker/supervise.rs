//! Keeping workers running: a worker that returns an error, stops on its own or panics is
//! logged and started again after [`Backoff`]'s wait, until shutdown. A panic is caught at the
//! task boundary (the worker runs in its own task), so it never takes the supervisor, the
//! other workers or `pledger up`'s server with it.

use std::future::Future;
use std::time::{Duration, Instant};

use pledger_core::workers::Backoff;
use tracing::{error, info};

use super::{stopping, Shutdown, WorkerKind};

/// One way a run of a worker ended before shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    StoppedOnItsOwn,
    Failed(String),
    Panicked(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::StoppedOnItsOwn => write!(f, "stopped on its own"),
            Ended::Failed(e) => write!(f, "failed: {e}"),
            Ended::Panicked(e) => write!(f, "panicked: {e}"),
        }
    }
}

/// What a supervisor saw: each run that ended before shutdown, and the wait before the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restarts {
    pub ended: Vec<(Ended, Duration)>,
}

/// Runs `start()` (which opens a worker and runs it until `shutdown`) again and again until
/// shutdown. Each run is its own task, so a panic ends that run only. Returns what ended
/// runs before shutdown, with the waits applied.
pub async fn supervise<F, Fut>(kind: WorkerKind, mut shutdown: Shutdown, start: F) -> Restarts
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut backoff = Backoff::new();
    let mut restarts = Restarts::default();
    loop {
        if stopping(&shutdown) {
            return restarts;
        }
        let started = Instant::now();
        let ended = match tokio::spawn(start()).await {
            Ok(Ok(())) => Ended::StoppedOnItsOwn,
            Ok(Err(e)) => Ended::Failed(e),
            Err(e) if e.is_panic() => Ended::Panicked(panic_message(e.into_panic())),
            Err(e) => Ended::Failed(e.to_string()),
        };
        if stopping(&shutdown) {
            return restarts;
        }
        let wait = backoff.after_failure(started.elapsed());
        error!(
            worker = kind.name(),
            failures = backoff.failures(),
            "the {} worker {ended}; starting it again in {wait:?}",
            kind.name()
        );
        restarts.ended.push((ended, wait));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
        if !stopping(&shutdown) {
            info!(
                worker = kind.name(),
                "starting the {} worker again",
                kind.name()
            );
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => "a panic without a message".to_string(),
        },
    }
}
