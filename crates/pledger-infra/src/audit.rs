//! Verifying on every core: the state-free checks of each message (decoding, the signature
//! under the key it carries, its hashes: `pledger_core::verify::precheck`) run on worker threads,
//! chunk by chunk; the checks that need the ledger's state run in stream order on the caller's
//! thread as the chunks arrive, while the next ones are being prechecked. Every verified read
//! goes through [`in_order`]: `audit verify` and `Ledger::load` alike.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use pledger_core::audit::Auditor;
use pledger_core::verify::{precheck, Prechecked};

use crate::ledger::RawRecord;

/// Messages per unit of work.
const CHUNK: usize = 512;

/// Feeds every record to `auditor` in order, prechecking them on `threads` threads (at least
/// one; the number of cores is a good choice).
pub fn feed(auditor: &mut Auditor, records: &[RawRecord], threads: usize) {
    in_order(records, threads, |r, pre| {
        auditor.message_prechecked(r.sequence, &r.subject, pre)
    });
}

/// Calls `each` with every record and its [`precheck`], in order; the prechecks run on
/// `threads` threads (inline when there are few records).
pub fn in_order(
    records: &[RawRecord],
    threads: usize,
    mut each: impl FnMut(&RawRecord, Prechecked),
) {
    let threads = threads.max(1);
    if threads == 1 || records.len() <= CHUNK {
        for r in records {
            each(r, precheck(&r.payload));
        }
        return;
    }
    let chunks: Vec<&[RawRecord]> = records.chunks(CHUNK).collect();
    let next = AtomicUsize::new(0);
    // Bounded: at most a few chunks wait to be folded, whatever the ledger's length.
    let (tx, rx) = mpsc::sync_channel::<(usize, Vec<Prechecked>)>(threads * 2);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, chunks) = (&next, &chunks);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(chunk) = chunks.get(i) else { break };
                let pre = chunk.iter().map(|r| precheck(&r.payload)).collect();
                if tx.send((i, pre)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut waiting: BTreeMap<usize, Vec<Prechecked>> = BTreeMap::new();
        let mut due = 0;
        for (i, pre) in rx {
            waiting.insert(i, pre);
            while let Some(pre) = waiting.remove(&due) {
                for (r, p) in chunks[due].iter().zip(pre) {
                    each(r, p);
                }
                due += 1;
            }
        }
    });
}

/// The number of threads to precheck on: the machine's cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
