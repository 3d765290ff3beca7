//! The supervisor that keeps `pledger up`'s workers running.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pledger_infra::worker::supervise::{supervise, Ended};
use pledger_infra::worker::WorkerKind;

/// A worker that panics on its first run, fails on its second, and runs until shutdown on its
/// third: it is started three times, waits 1 s then 2 s, and both ends are reported.
#[tokio::test(start_paused = true)]
async fn a_panicking_or_failing_worker_is_started_again_with_backoff() {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let rx = shutdown.clone();
    let start = move || {
        let (runs, mut rx) = (counted.clone(), rx.clone());
        async move {
            match runs.fetch_add(1, Ordering::SeqCst) {
                0 => panic!("a bug on the first run"),
                1 => Err("the ledger went away".to_string()),
                _ => {
                    let _ = rx.wait_for(|stop| *stop).await;
                    Ok(())
                }
            }
        }
    };
    let supervisor = tokio::spawn(supervise(WorkerKind::Canary, shutdown, start));
    // Wait (in paused time) until the third run is up, then shut down.
    while runs.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    let restarts = supervisor.await.unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "not started again after shutdown"
    );
    assert_eq!(
        restarts.ended,
        [
            (
                Ended::Panicked("a bug on the first run".into()),
                Duration::from_secs(1)
            ),
            (
                Ended::Failed("the ledger went away".into()),
                Duration::from_secs(2)
            ),
        ]
    );
}

#[test]
fn the_backoff_doubles_to_its_cap_and_a_healthy_run_resets_it() {
    use pledger_core::workers::Backoff;
    let mut b = Backoff::new();
    let quick = Duration::from_millis(10);
    let waits: Vec<u64> = (0..7).map(|_| b.after_failure(quick).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    assert_eq!(b.after_failure(Backoff::HEALTHY_RUN).as_secs(), 1);
    assert_eq!(b.failures(), 1);
}
