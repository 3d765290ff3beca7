//! Verifying on every core: the state-free checks of each message (decoding, the signature
//! under the key it carries, its hashes: `pledger_core::verify::precheck_all`, which verifies
//! signatures in batches) run on worker threads, chunk by chunk; the checks that need the
//! ledger's state run in stream order on the caller's thread as the chunks arrive, while the
//! next ones are being prechecked. Every verified read goes through [`in_order`] (a read already
//! in memory: `Ledger::load`) or [`in_order_chunks`] (chunks still arriving: `audit verify`
//! verifies while it reads).

use std::collections::BTreeMap;
use std::sync::{mpsc, Mutex};

use pledger_core::audit::Auditor;
use pledger_core::verify::{precheck_all, Prechecked};

use crate::ledger::RawRecord;

/// Messages per unit of work.
pub const CHUNK: usize = 512;

/// Feeds every record to `auditor` in order, prechecking them on `threads` threads (at least
/// one; the number of cores is a good choice).
pub fn feed(auditor: &mut Auditor, records: &[RawRecord], threads: usize) {
    in_order(records, threads, |r, pre| {
        auditor.message_prechecked(r.sequence, &r.subject, pre)
    });
}

/// The precheck of every message of a chunk.
fn precheck(chunk: &[RawRecord]) -> Vec<Prechecked> {
    let messages: Vec<&[u8]> = chunk.iter().map(|r| &r.payload[..]).collect();
    precheck_all(&messages)
}

/// Calls `each` with every record and its precheck ([`precheck_all`]), in order; the prechecks
/// run on `threads` threads (inline when there are few records).
pub fn in_order(records: &[RawRecord], threads: usize, each: impl FnMut(&RawRecord, Prechecked)) {
    in_order_chunks(records.chunks(CHUNK), threads, each);
}

/// [`in_order`] over chunks that may still be arriving (`chunks` may block for the next one):
/// `threads` threads precheck them as they come, and `each` runs on the caller's thread in
/// stream order. With one thread, or one chunk, everything runs on the caller's thread.
pub fn in_order_chunks<C, I>(
    chunks: I,
    threads: usize,
    mut each: impl FnMut(&RawRecord, Prechecked),
) where
    C: AsRef<[RawRecord]> + Send,
    I: Iterator<Item = C> + Send,
{
    let threads = threads.max(1);
    let mut chunks = chunks.peekable();
    let first = chunks.next();
    if threads == 1 || chunks.peek().is_none() {
        for chunk in first.into_iter().chain(chunks) {
            let chunk = chunk.as_ref();
            for (r, pre) in chunk.iter().zip(precheck(chunk)) {
                each(r, pre);
            }
        }
        return;
    }
    // Bounded: at most a few chunks wait to be prechecked or folded, whatever the ledger's
    // length.
    let (work_tx, work_rx) = mpsc::sync_channel::<(usize, C)>(threads);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::sync_channel::<(usize, C, Vec<Prechecked>)>(threads * 2);
    std::thread::scope(|scope| {
        // The distributor waits for chunks so the caller's thread never does.
        scope.spawn(move || {
            for (i, chunk) in first.into_iter().chain(chunks).enumerate() {
                if work_tx.send((i, chunk)).is_err() {
                    break;
                }
            }
        });
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            scope.spawn(move || loop {
                let job = work_rx.lock().expect("not poisoned").recv();
                let Ok((i, chunk)) = job else { break };
                let pre = precheck(chunk.as_ref());
                if done_tx.send((i, chunk, pre)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        let mut waiting: BTreeMap<usize, (C, Vec<Prechecked>)> = BTreeMap::new();
        let mut due = 0;
        for (i, chunk, pre) in done_rx {
            waiting.insert(i, (chunk, pre));
            while let Some((chunk, pre)) = waiting.remove(&due) {
                for (r, p) in chunk.as_ref().iter().zip(pre) {
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
