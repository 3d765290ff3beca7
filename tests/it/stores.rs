//! Worker stores know which ledger they project: reused against another ledger, they are
//! rebuilt from its start, never resumed at the old ledger's sequence.

use std::time::Duration;

use pledger_e2e::*;

use crate::fixture::*;

#[test]
fn a_worker_store_reused_against_a_new_ledger_gates_the_new_ledgers_release() {
    let stores = tempfile::tempdir().unwrap();
    // The first ledger: the gatekeeper consumes a longer history than the second one has.
    {
        let first = World::new();
        first.enroll_workers_in(stores.path());
        let gatekeeper = first.worker_with_store("gatekeeper", "0", stores.path());
        for prompt in ["alpha", "beta", "gamma"] {
            let p = reviewed(&first, prompt);
            attach_bundle(&first, &p, 0.0);
            first.wait_for("the gatekeeper's gate", Duration::from_secs(20), || {
                (first.json("maria", &["release", "show", &p.release])["gate_current"] == true)
                    .then_some(())
            });
        }
        drop(gatekeeper);
    }
    // A fresh server and ledger, the same store directory.
    let second = World::new();
    second.enroll_workers_in(stores.path());
    let _gatekeeper = second.worker_with_store("gatekeeper", "0", stores.path());
    let p = reviewed(&second, "triage");
    attach_bundle(&second, &p, 0.0);
    second.wait_for(
        "the gatekeeper's gate on the new ledger",
        Duration::from_secs(20),
        || {
            (second.json("maria", &["release", "show", &p.release])["gate_current"] == true)
                .then_some(())
        },
    );
    let log = std::fs::read_to_string(stores.path().join("gatekeeper-0.log")).unwrap();
    assert!(
        log.contains("rebuilding the projection from the start of this ledger"),
        "{log}"
    );
    assert!(log.contains("another ledger"), "{log}");
}
