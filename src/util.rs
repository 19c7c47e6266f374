//! Small shared helpers.

use std::sync::atomic::{AtomicU64, Ordering};

/// A random draw per request from a fast per-thread generator (xorshift).
pub(crate) fn random_draw() -> u64 {
    use std::cell::Cell;
    static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// True with probability `rate` (0..=1).
pub(crate) fn sampled(rate: f64) -> bool {
    let unit = (random_draw() >> 11) as f64 / (1u64 << 53) as f64;
    rate >= 1.0 || (rate > 0.0 && unit < rate)
}

/// On drop, asks the allocator to return memory that was freed but kept (glibc keeps what
/// a thread frees in that thread's malloc arena). A predictor holds one: when a retired
/// version stops, its worker threads exit and its model is dropped, and without this the
/// process keeps their memory; a server that swaps versions grows with every swap
/// (docs/SOAK.md measures it). A no-op on other allocators and platforms.
#[derive(Debug, Default)]
pub(crate) struct ReleaseFreedMemory;

impl Drop for ReleaseFreedMemory {
    fn drop(&mut self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free pages; it is thread-safe and has no
        // preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
