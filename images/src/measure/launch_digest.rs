//! The SEV-SNP launch digest: each page added to the guest extends a SHA-384 chain with a
//! PAGE_INFO structure (SNP firmware ABI, `SNP_LAUNCH_UPDATE`). The `sev` crate keeps its
//! implementation private, so the simulated TEE, which measures pages the `sev` crate does not
//! know about (a SeaBIOS image), uses this one; a test checks both agree byte for byte.

use aws_lc_rs::digest::{SHA384, digest};

pub const PAGE: usize = 4096;
/// Where the SNP ABI places every VMSA page in the digest.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// `PAGE_INFO.PAGE_TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    Normal = 1,
    Vmsa = 2,
}

/// A launch digest being extended page by page.
#[derive(Clone, Debug)]
pub struct LaunchDigest([u8; 48]);

impl Default for LaunchDigest {
    fn default() -> Self {
        Self([0; 48])
    }
}

impl LaunchDigest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Extends with `data` (a whole number of pages) loaded at `gpa`, one page at a time.
    pub fn add_pages(&mut self, ty: PageType, gpa: u64, data: &[u8]) -> Result<(), BlockSize> {
        if data.is_empty() || !data.len().is_multiple_of(PAGE) {
            return Err(BlockSize(data.len()));
        }
        for (i, page) in data.chunks_exact(PAGE).enumerate() {
            let at = if ty == PageType::Vmsa { VMSA_GPA } else { gpa + (i * PAGE) as u64 };
            self.extend(ty, at, page);
        }
        Ok(())
    }

    fn extend(&mut self, ty: PageType, gpa: u64, page: &[u8]) {
        // PAGE_INFO: DIGEST_CUR ‖ CONTENTS ‖ LENGTH=0x70 ‖ PAGE_TYPE ‖ IMI_PAGE=0 ‖
        // VMPL3/2/1_PERMS=0 ‖ reserved ‖ GPA.
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.0);
        info[48..96].copy_from_slice(digest(&SHA384, page).as_ref());
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = ty as u8;
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.0.copy_from_slice(digest(&SHA384, &info).as_ref());
    }

    pub fn finish(self) -> [u8; 48] {
        self.0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0} bytes is not a whole, non-zero number of 4 KiB pages")]
pub struct BlockSize(pub usize);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The firmware-only digest of `sev` (its private GCTX) over the AmdSev OVMF tail that the
    /// crate ships equals ours over the same pages at the same address.
    #[test]
    fn equals_sev_firmware_digest() {
        let ovmf = crate::measure::snp::tests::amdsev_tail();
        let theirs = sev::measurement::snp::calc_snp_ovmf_hash(ovmf.clone()).unwrap().get_hex_ld();
        let data = std::fs::read(&ovmf).unwrap();
        let mut ld = LaunchDigest::new();
        ld.add_pages(PageType::Normal, (1u64 << 32) - data.len() as u64, &data).unwrap();
        assert_eq!(hex::encode(ld.finish()), theirs);
    }

    #[test]
    fn partial_pages_are_refused() {
        assert!(LaunchDigest::new().add_pages(PageType::Normal, 0, &[0; 100]).is_err());
        assert!(LaunchDigest::new().add_pages(PageType::Normal, 0, &[]).is_err());
    }
}
