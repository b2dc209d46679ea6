//! glibc's allocator, tuned once at start so that request memory goes back to the system.
//!
//! By default glibc raises its mmap threshold after the first large block is freed (up to 32
//! MiB), so later request tensors come from per-thread arenas, which keep freed memory: under a
//! load of maximal requests the enclave's peak RSS grew to 736 MiB against the 186 MiB its
//! configuration bounds (`serve::load`). With a fixed threshold every block of at least that size
//! is its own mapping, returned on free, and the peak stayed at 111 MiB.

#![allow(unsafe_code)] // the one extern call below, with its SAFETY argument

use std::ffi::c_int;

/// `M_MMAP_THRESHOLD` in glibc's `malloc.h` (musl accepts and ignores every parameter).
const M_MMAP_THRESHOLD: c_int = -3;

unsafe extern "C" {
    fn mallopt(param: c_int, value: c_int) -> c_int;
}

/// Fixes the mmap threshold at `bytes` (which also stops glibc from adjusting it). Call it
/// before other threads start. False if the allocator refused the value.
pub fn fix_mmap_threshold(bytes: u32) -> bool {
    let Ok(value) = c_int::try_from(bytes) else { return false };
    // SAFETY: mallopt takes two integers and touches only the allocator's own parameters; it is
    // safe to call at any time (glibc takes the arena lock), and a value it does not accept is
    // reported by its return value (0), not undefined behaviour.
    unsafe { mallopt(M_MMAP_THRESHOLD, value) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_accepts_a_one_mebibyte_threshold() {
        assert!(fix_mmap_threshold(1 << 20));
        assert!(!fix_mmap_threshold(u32::MAX), "beyond c_int: refused before the call");
    }
}
