//! A counting allocator (feature `heap-stats`): live heap bytes and allocations, logged every
//! few seconds, to measure memory per connection without allocator slack or kernel pages.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

pub(crate) struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static COUNT: AtomicIsize = AtomicIsize::new(0);
/// Live allocations by exact size (sizes up to 4 KiB), for finding what a connection holds.
static BY_SIZE: [AtomicIsize; 4097] = [const { AtomicIsize::new(0) }; 4097];

fn bucket(size: usize) -> &'static AtomicIsize {
    &BY_SIZE[size.min(4096)]
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are only
// bookkeeping.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        COUNT.fetch_add(1, Ordering::Relaxed);
        bucket(layout.size()).fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        COUNT.fetch_sub(1, Ordering::Relaxed);
        bucket(layout.size()).fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        bucket(layout.size()).fetch_sub(1, Ordering::Relaxed);
        bucket(new_size).fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Logs live heap bytes and allocations every 5 seconds.
pub(crate) fn report_periodically() {
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            tracing::info!(
                heap_bytes = BYTES.load(Ordering::Relaxed),
                allocations = COUNT.load(Ordering::Relaxed),
                "heap: {} bytes live in {} allocations",
                BYTES.load(Ordering::Relaxed),
                COUNT.load(Ordering::Relaxed)
            );
            let mut sizes: Vec<(usize, isize)> = BY_SIZE
                .iter()
                .enumerate()
                .map(|(s, n)| (s, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 100)
                .collect();
            sizes.sort_by_key(|(s, n)| std::cmp::Reverse(*s as isize * *n));
            let top: Vec<String> = sizes.iter().take(16).map(|(s, n)| format!("{s}B x{n}")).collect();
            tracing::info!("heap by size: {}", top.join(", "));
        }
    });
}
