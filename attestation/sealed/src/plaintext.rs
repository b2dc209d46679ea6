//! The buffer an opened model is decrypted into.

use core::ops::Deref;

use memmap2::MmapMut;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::SealError;

/// An opened model: exactly `plaintext_len` bytes, authenticated and digest-checked, in an
/// anonymous memory mapping of its own that is wiped when dropped. Read-only to its owner.
///
/// Why a mapping of its own rather than a `Vec` (measured on 64 MiB, AMD EPYC, KVM guest):
/// - it can ask for transparent huge pages, so faulting it in costs one fault per 2 MiB
///   instead of one per 4 KiB: 6 ms instead of 41 ms, which was a third of opening;
/// - it can be kept out of core dumps (plaintext never reaches a disk, DESIGN.md §5).
///
/// Why not `Zeroizing<Vec<u8>>`: `zeroize` wipes a `Vec` one volatile byte at a time (≈ 4 GB/s
/// here, 26 ms per 64 MiB cold) but a slice with one `memset` behind an optimisation barrier
/// (tens of GB/s). Both are wipes the compiler may not remove.
pub struct Plaintext {
    map: MmapMut,
}

impl Plaintext {
    /// A zero-filled buffer of exactly `len` bytes.
    pub(crate) fn zeroed(len: usize) -> Result<Self, SealError> {
        let map = MmapMut::map_anon(len).map_err(SealError::Io)?;
        // Both are hints: without them the buffer is still correct (slower to fault in, or
        // included in a core dump), and kernels without THP or MADV_DONTDUMP refuse them.
        #[cfg(target_os = "linux")]
        {
            let _ = map.advise(memmap2::Advice::HugePage);
            let _ = map.advise(memmap2::Advice::DontDump);
        }
        Ok(Plaintext { map })
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.map
    }

    /// Only this crate writes into the buffer, and only while opening.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map
    }
}

impl Deref for Plaintext {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl AsRef<[u8]> for Plaintext {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        wipe(&mut self.map);
    }
}

/// Buffers from this size up are wiped on every core: one core's memset runs at ~10 GB/s
/// here, a tenth of a second per GiB, and the enclave drops the buffer on its way to serving.
const PARALLEL_WIPE: usize = 64 << 20;

/// `[u8]::zeroize` (memset plus an optimisation barrier) over `buf`, split across the cores
/// when it is large. If a thread cannot be started, its part is lost to it (moved into the
/// closure the failed spawn dropped), so the whole buffer is wiped again here.
fn wipe(buf: &mut [u8]) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if buf.len() < PARALLEL_WIPE || threads < 2 {
        buf.zeroize();
        return;
    }
    let part = buf.len().div_ceil(threads);
    let mut all_spawned = true;
    std::thread::scope(|scope| {
        let mut parts = buf.chunks_mut(part);
        let mine = parts.next();
        for p in parts {
            all_spawned &= std::thread::Builder::new().spawn_scoped(scope, || p.zeroize()).is_ok();
        }
        if let Some(m) = mine {
            m.zeroize();
        }
    });
    if !all_spawned {
        buf.zeroize();
    }
}

impl ZeroizeOnDrop for Plaintext {}

impl core::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Plaintext({} bytes, <redacted>)", self.map.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wiping_clears_every_byte_at_every_size() {
        for len in [0, 1, 4095, PARALLEL_WIPE - 1, PARALLEL_WIPE, PARALLEL_WIPE + 3] {
            let mut buf = vec![0xA5u8; len];
            wipe(&mut buf);
            assert!(buf.iter().all(|&b| b == 0), "{len}");
        }
    }
}
