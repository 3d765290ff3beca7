//! The process's allocator, counting what it has handed out: resident memory alone cannot tell
//! data a process keeps from pages its allocator holds on to, and the two call for different
//! remedies. The count is `pledger_process_heap_bytes` on `/metrics`, and bench section 13
//! reports it beside the resident memory.
//!
//! Which allocator serves the process is chosen when it starts ([`Chosen`]): mimalloc for the
//! commands (a verified read allocates per event, and mimalloc made the checks in stream order
//! about 14 times cheaper than glibc's malloc), the system allocator for the long-running
//! processes (`pledger up`, `pledger worker`), whose resident memory it keeps flat as releases
//! come and go where mimalloc's pages drifted upwards (bench section 13).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bytes allocated and not yet freed (as requested: the allocator's rounding and its own
/// tables are not in it).
static LIVE: AtomicU64 = AtomicU64::new(0);

/// An allocator that counts the bytes `A` has handed out and not taken back.
pub struct Counting<A>(pub A);

// SAFETY: every call is passed to `A` unchanged; the count is a side table that never
// affects what is returned.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `A`'s.
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `A`'s.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is `A`'s.
        unsafe { self.0.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is `A`'s.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as u64, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }
}

/// Bytes the process has allocated and not yet freed.
pub fn allocated() -> u64 {
    LIVE.load(Ordering::Relaxed)
}

/// Whether new blocks come from the system allocator (else from mimalloc).
static SYSTEM: AtomicBool = AtomicBool::new(false);

/// From now on, new blocks come from the system allocator. Blocks mimalloc handed out before
/// stay valid: each block goes back to the allocator it came from.
///
/// With glibc, at most two arenas (one per core of the machines measured): threads that
/// contend for one otherwise get arenas of their own, each keeping its own free pages.
pub fn allocate_with_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes integer arguments and only tunes the allocator; called before
    // the runtime's threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    SYSTEM.store(true, Ordering::Relaxed);
}

/// Gives the system allocator's free pages back to the kernel every `every` (glibc's
/// `malloc_trim`, which also returns free pages inside its heaps, where `free` only shrinks a
/// heap's top). Runs until the process ends.
pub async fn give_back_free_pages(every: std::time::Duration) {
    loop {
        tokio::time::sleep(every).await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: `malloc_trim` takes an integer and only releases memory the allocator holds
        // free.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// mimalloc or the system allocator, as chosen at start ([`allocate_with_the_system`]). A
/// block is freed or resized by the allocator that handed it out, which mimalloc tells from
/// its page map (`mi_is_in_heap_region`, which answers for any address), so the choice can be
/// made after the first allocations.
pub struct Chosen;

/// Whether mimalloc handed out the block at `ptr`.
fn from_mimalloc(ptr: *mut u8) -> bool {
    // SAFETY: `mi_is_in_heap_region` only looks `ptr` up in mimalloc's page map; it accepts
    // any address.
    unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
}

// SAFETY: every block comes from one of two allocators and goes back to the same one with the
// same layout: new blocks from the one `SYSTEM` names, frees and resizes by ownership.
unsafe impl GlobalAlloc for Chosen {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the allocator's.
        unsafe {
            if SYSTEM.load(Ordering::Relaxed) {
                System.alloc(layout)
            } else {
                mimalloc::MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the allocator's.
        unsafe {
            if SYSTEM.load(Ordering::Relaxed) {
                System.alloc_zeroed(layout)
            } else {
                mimalloc::MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the allocator that owns it, with `layout`.
        unsafe {
            if from_mimalloc(ptr) {
                mimalloc::MiMalloc.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from the allocator that owns it, with `layout`; the block stays
        // with that allocator.
        unsafe {
            if from_mimalloc(ptr) {
                mimalloc::MiMalloc.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}
