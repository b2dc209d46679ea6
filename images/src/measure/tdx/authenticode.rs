//! The Authenticode (PE/COFF image) SHA-384 that the firmware extends into RTMR1 for an EFI
//! application it starts (`EV_EFI_BOOT_SERVICES_APPLICATION`), here the Linux kernel's EFI stub.
//!
//! The digest is the one edk2 computes when it measures an image (`MeasurePeImageAndExtend` in
//! SecurityPkg's Tcg2/TdTcg2 drivers, following the Authenticode specification):
//!
//! 1. the headers from offset 0 up to `SizeOfHeaders`, leaving out the optional header's
//!    `CheckSum` and, when the image has one, the certificate table's data directory entry;
//! 2. every section's raw data (`PointerToRawData`, `SizeOfRawData`), in ascending
//!    `PointerToRawData` order, sections without raw data skipped;
//! 3. whatever follows the sections in the file, except the certificate table's `Size` bytes at
//!    the end (the signature).
//!
//! Parsing is strict: a field that points outside the file, a header that does not fit where it
//! must, or a certificate table larger than what follows the sections is a [`PeError`], never a
//! digest over whatever bytes happen to be there.

use aws_lc_rs::digest::{Context, SHA384};

/// Why a PE image was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeError {
    /// The file ends before a structure that must be there.
    #[error("truncated: the file ends inside the {0}")]
    Truncated(&'static str),
    #[error("no DOS header (the file does not start with \"MZ\")")]
    NoDosHeader,
    #[error("no PE signature at the offset the DOS header names ({0:#x})")]
    NoPeSignature(u32),
    #[error("optional header magic {0:#06x} is neither PE32 (0x10b) nor PE32+ (0x20b)")]
    UnknownOptionalHeader(u16),
    /// `SizeOfOptionalHeader` is smaller than the fields the digest needs.
    #[error("SizeOfOptionalHeader {declared} is smaller than the {needed} bytes its data directories need")]
    OptionalHeaderTooSmall { declared: u16, needed: usize },
    /// `SizeOfHeaders` does not cover the section table, or runs past the file.
    #[error(
        "SizeOfHeaders {size_of_headers:#x} does not cover the headers ({headers_end:#x}) or exceeds the file ({file_len:#x})"
    )]
    BadSizeOfHeaders { size_of_headers: u32, headers_end: usize, file_len: usize },
    /// A section's raw data lies (partly) outside the file.
    #[error("section {index}: raw data {offset:#x}+{size:#x} is outside the {file_len:#x}-byte file")]
    SectionOutsideFile { index: usize, offset: u32, size: u32, file_len: usize },
    /// The certificate table is larger than what follows the hashed bytes (edk2 refuses such an
    /// image: `EFI_UNSUPPORTED`).
    #[error(
        "certificate table of {cert_size:#x} bytes does not fit after the {hashed:#x} hashed bytes of a {file_len:#x}-byte file"
    )]
    CertificateTableTooLarge { cert_size: u32, hashed: usize, file_len: usize },
}

/// Data directory index of the certificate table (`IMAGE_DIRECTORY_ENTRY_SECURITY`).
const SECURITY_DIRECTORY: usize = 4;
const SECTION_HEADER: usize = 40;
const COFF_HEADER: usize = 20;

fn u16_at(b: &[u8], at: usize, what: &'static str) -> Result<u16, PeError> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or(PeError::Truncated(what))
}

fn u32_at(b: &[u8], at: usize, what: &'static str) -> Result<u32, PeError> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or(PeError::Truncated(what))
}

/// The Authenticode SHA-384 of a PE/COFF image, as edk2 measures it.
pub fn authenticode_sha384(image: &[u8]) -> Result<[u8; 48], PeError> {
    if image.get(0..2).ok_or(PeError::Truncated("DOS header"))? != b"MZ" {
        return Err(PeError::NoDosHeader);
    }
    let pe_offset = u32_at(image, 0x3c, "DOS header")?;
    let pe = pe_offset as usize;
    if image.get(pe..pe + 4).ok_or(PeError::Truncated("PE signature"))? != b"PE\0\0" {
        return Err(PeError::NoPeSignature(pe_offset));
    }
    let coff = pe + 4;
    let number_of_sections = u16_at(image, coff + 2, "COFF header")? as usize;
    let size_of_optional_header = u16_at(image, coff + 16, "COFF header")?;
    let optional = coff + COFF_HEADER;
    let magic = u16_at(image, optional, "optional header")?;
    // Offsets inside the optional header (PE32 / PE32+): CheckSum at 64 in both;
    // NumberOfRvaAndSizes at 92 / 108, the data directories follow it.
    let (rva_count_at, directories_at) = match magic {
        0x10b => (92, 96),
        0x20b => (108, 112),
        other => return Err(PeError::UnknownOptionalHeader(other)),
    };
    let checksum = optional + 64;
    let size_of_headers = u32_at(image, optional + 60, "optional header")?;
    let rva_count = u32_at(image, optional + rva_count_at, "optional header")? as usize;
    let has_cert_directory = rva_count > SECURITY_DIRECTORY;
    // The directories the image declares must lie inside its declared optional header
    // (at least up to the certificate entry, the last one the digest reads).
    let needed = directories_at + 8 * rva_count.min(SECURITY_DIRECTORY + 1);
    if (size_of_optional_header as usize) < needed {
        return Err(PeError::OptionalHeaderTooSmall { declared: size_of_optional_header, needed });
    }
    let cert_entry = optional + directories_at + 8 * SECURITY_DIRECTORY;
    let cert_size = if has_cert_directory { u32_at(image, cert_entry + 4, "data directories")? } else { 0 };

    let section_table = optional + size_of_optional_header as usize;
    let headers_end = section_table + SECTION_HEADER * number_of_sections;
    let soh = size_of_headers as usize;
    if soh < headers_end || soh > image.len() {
        return Err(PeError::BadSizeOfHeaders { size_of_headers, headers_end, file_len: image.len() });
    }

    let mut h = Context::new(&SHA384);
    h.update(&image[..checksum]);
    if has_cert_directory {
        h.update(&image[checksum + 4..cert_entry]);
        h.update(&image[cert_entry + 8..soh]);
    } else {
        h.update(&image[checksum + 4..soh]);
    }

    let mut sections = Vec::with_capacity(number_of_sections);
    for index in 0..number_of_sections {
        let at = section_table + SECTION_HEADER * index;
        let size = u32_at(image, at + 16, "section table")?;
        let offset = u32_at(image, at + 20, "section table")?;
        if size == 0 {
            continue;
        }
        let end = offset as usize + size as usize;
        if end > image.len() {
            return Err(PeError::SectionOutsideFile { index, offset, size, file_len: image.len() });
        }
        sections.push((offset as usize, end));
    }
    // Stable, as edk2's insertion sort: equal offsets keep their table order.
    sections.sort_by_key(|&(offset, _)| offset);
    let mut hashed = soh;
    for &(offset, end) in &sections {
        h.update(&image[offset..end]);
        hashed += end - offset;
    }

    if image.len() > hashed {
        let tail_end = image
            .len()
            .checked_sub(cert_size as usize)
            .filter(|&e| e >= hashed)
            .ok_or(PeError::CertificateTableTooLarge { cert_size, hashed, file_len: image.len() })?;
        // `hashed` counts overlapping sections twice (as edk2 does), so it is an amount, not
        // a position: the trailing data starts there only for images whose sections tile the
        // file, which is what edk2 assumes too.
        h.update(&image[hashed..tail_end]);
    }

    let mut out = [0u8; 48];
    out.copy_from_slice(h.finish().as_ref());
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use aws_lc_rs::digest::digest;

    /// A minimal PE32+ image: DOS header, PE header with 16 data directories, two sections
    /// (listed out of file order), trailing data and a certificate table of `cert` bytes.
    pub(crate) fn synthetic_pe(cert: u32) -> Vec<u8> {
        let mut img = vec![0u8; 0x400];
        img[0..2].copy_from_slice(b"MZ");
        img[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        img[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        img[coff + 2..coff + 4].copy_from_slice(&2u16.to_le_bytes());
        img[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        img[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        img[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes()); // SizeOfHeaders
        img[opt + 64..opt + 68].copy_from_slice(&0xdead_beefu32.to_le_bytes()); // CheckSum
        img[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let table = opt + 240;
        // Section 0 at 0x300 (0x100 bytes), section 1 at 0x200 (0x100 bytes).
        for (i, off) in [(0usize, 0x300u32), (1, 0x200)] {
            let at = table + 40 * i;
            img[at + 16..at + 20].copy_from_slice(&0x100u32.to_le_bytes());
            img[at + 20..at + 24].copy_from_slice(&off.to_le_bytes());
        }
        for (i, b) in img[0x200..].iter_mut().enumerate() {
            *b = (i * 13 + 1) as u8;
        }
        // 0x20 bytes of trailing data, then the certificate table.
        img.extend((0..0x20 + cert).map(|i| (i * 3) as u8));
        let cert_entry = opt + 112 + 8 * 4;
        img[cert_entry..cert_entry + 4].copy_from_slice(&(0x420u32).to_le_bytes());
        img[cert_entry + 4..cert_entry + 8].copy_from_slice(&cert.to_le_bytes());
        img
    }

    /// The digest spelled out by hand for the synthetic image.
    #[test]
    fn synthetic_image_digest_is_the_specified_byte_ranges() {
        let img = synthetic_pe(0x18);
        let opt = 0x84 + 20;
        let cert_entry = opt + 112 + 32;
        let mut hashed = Vec::new();
        hashed.extend_from_slice(&img[..opt + 64]);
        hashed.extend_from_slice(&img[opt + 68..cert_entry]);
        hashed.extend_from_slice(&img[cert_entry + 8..0x200]);
        hashed.extend_from_slice(&img[0x200..0x300]); // section 1 first: lower file offset
        hashed.extend_from_slice(&img[0x300..0x400]);
        hashed.extend_from_slice(&img[0x400..0x420]); // trailing data, not the certificate
        let expected = digest(&SHA384, &hashed);
        assert_eq!(authenticode_sha384(&img).unwrap()[..], *expected.as_ref());
        // Checksum and certificate contents are outside the digest; a section byte is not.
        let mut other = img.clone();
        other[opt + 64] ^= 0xff;
        let last = other.len() - 1;
        other[last] ^= 0xff;
        assert_eq!(authenticode_sha384(&other).unwrap(), authenticode_sha384(&img).unwrap());
        other[0x250] ^= 1;
        assert_ne!(authenticode_sha384(&other).unwrap(), authenticode_sha384(&img).unwrap());
    }

    #[test]
    fn malformed_images_are_refused() {
        let good = synthetic_pe(0x18);
        assert!(authenticode_sha384(&good).is_ok());
        let opt = 0x84 + 20;
        let refused = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut img = good.clone();
            f(&mut img);
            authenticode_sha384(&img).unwrap_err()
        };
        assert_eq!(authenticode_sha384(&[]), Err(PeError::Truncated("DOS header")));
        assert_eq!(authenticode_sha384(&good[..0x30]), Err(PeError::Truncated("DOS header")));
        assert_eq!(authenticode_sha384(&good[..0x82]), Err(PeError::Truncated("PE signature")));
        assert_eq!(authenticode_sha384(&good[..0x99]), Err(PeError::Truncated("optional header")));
        assert_eq!(refused(&|i| i[0] = b'Z'), PeError::NoDosHeader);
        assert_eq!(refused(&|i| i[0x81] = b'X'), PeError::NoPeSignature(0x80));
        assert_eq!(
            refused(&|i| i[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes())),
            PeError::Truncated("PE signature")
        );
        assert_eq!(refused(&|i| i[opt] = 0x0c), PeError::UnknownOptionalHeader(0x20c));
        assert!(matches!(
            refused(&|i| i[0x84 + 16..0x84 + 18].copy_from_slice(&100u16.to_le_bytes())),
            PeError::OptionalHeaderTooSmall { declared: 100, .. }
        ));
        // SizeOfHeaders below the section table, and past the end of the file.
        assert!(matches!(
            refused(&|i| i[opt + 60..opt + 64].copy_from_slice(&0x100u32.to_le_bytes())),
            PeError::BadSizeOfHeaders { .. }
        ));
        assert!(matches!(
            refused(&|i| i[opt + 60..opt + 64].copy_from_slice(&0x10_0000u32.to_le_bytes())),
            PeError::BadSizeOfHeaders { .. }
        ));
        // A section running past the end of the file.
        let sec0 = opt + 240;
        assert!(matches!(
            refused(&|i| i[sec0 + 16..sec0 + 20].copy_from_slice(&0x10_0000u32.to_le_bytes())),
            PeError::SectionOutsideFile { index: 0, .. }
        ));
        // A certificate table larger than the trailing bytes.
        let cert_entry = opt + 112 + 32;
        assert!(matches!(
            refused(&|i| i[cert_entry + 4..cert_entry + 8].copy_from_slice(&0x1000u32.to_le_bytes())),
            PeError::CertificateTableTooLarge { .. }
        ));
        // Truncating the file anywhere inside the sections is refused, never hashed.
        for len in [0x1ff, 0x250, 0x3ff] {
            assert!(authenticode_sha384(&good[..len]).is_err(), "accepted a {len:#x}-byte prefix");
        }
    }

    #[test]
    fn image_without_certificate_directory() {
        // NumberOfRvaAndSizes = 4: no certificate entry, the whole header minus CheckSum is
        // hashed and every trailing byte counts.
        let mut img = synthetic_pe(0);
        let opt = 0x84 + 20;
        img[opt + 108..opt + 112].copy_from_slice(&4u32.to_le_bytes());
        let mut hashed = Vec::new();
        hashed.extend_from_slice(&img[..opt + 64]);
        hashed.extend_from_slice(&img[opt + 68..0x200]);
        hashed.extend_from_slice(&img[0x200..0x400]);
        hashed.extend_from_slice(&img[0x400..]);
        assert_eq!(authenticode_sha384(&img).unwrap()[..], *digest(&SHA384, &hashed).as_ref());
    }
}
