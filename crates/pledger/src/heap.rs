//! The process's allocator, counting what it has handed out: resident memory alone cannot tell
//! data a process keeps from pages its allocator holds on to, and the two call for different
//! remedies. The count is `pledger_process_heap_bytes` on `/metrics`, and bench section 13
//! reports it beside the resident memory.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

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
