//! TDVF metadata (OVMF built with TDX support) and the MRTD computed from the firmware file.
//!
//! QEMU reads the TDVF metadata from the image and, for each section in metadata order, asks
//! KVM to add the section's pages to the TD (`TDH.MEM.PAGE.ADD`, which extends MRTD with the
//! page's GPA) and, for sections with the `MR.EXTEND` attribute, to measure their contents
//! (`TDH.MR.EXTEND`, 256 bytes at a time). MRTD is the SHA-384 over that sequence of 128-byte
//! operation records and measured chunks, so it depends only on the firmware bytes and on the
//! [`Order`] in which the host stack issues the two operations. `docs/measurements.md` ("TDX")
//! has the byte layout, the order question, and what RTMR0..3 depend on.
//!
//! Parsing is strict: anything QEMU would refuse, anything the specification and QEMU read
//! differently, and anything outside the file or overlapping is an error, never a guess.

use std::path::Path;

use aws_lc_rs::digest::{Context, SHA384};

use crate::measure::MeasureError;

/// TDX page size; every section is a whole number of pages at a page-aligned GPA.
pub const PAGE_SIZE: u64 = 4096;
/// `TDH.MR.EXTEND` measures 256 bytes per call.
const EXTEND_CHUNK: u64 = 256;
/// The OVMF footer table ends this many bytes before the end of the image (the reset vector
/// area follows it).
const RESET_VECTOR_TAIL: usize = 32;
/// Every table entry ends with a `u16` length and a GUID.
const ENTRY_TRAILER: usize = 2 + 16;
/// `TDVF_DESCRIPTOR` header: Signature, Length, Version, NumberOfSectionEntry (4 × u32).
const DESCRIPTOR_HEADER: usize = 16;
/// `TDVF_SECTION`: DataOffset u32, RawDataSize u32, MemoryAddress u64, MemoryDataSize u64,
/// Type u32, Attributes u32.
const SECTION_ENTRY: usize = 32;
/// Sections must end at or below 4 GiB (see [`Tdvf::parse`]).
const GPA_LIMIT: u64 = 1 << 32;

const ATTR_MR_EXTEND: u32 = 1 << 0;
const ATTR_PAGE_AUG: u32 = 1 << 1;

/// 96b582de-1fb2-45f7-baea-a366c55a082d (OVMF table footer), mixed-endian as stored.
const TABLE_FOOTER_GUID: [u8; 16] =
    [0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d];
/// e47a6535-984a-4798-865e-4685a7bf8ec2 (TDX metadata offset), mixed-endian as stored.
const TDX_METADATA_OFFSET_GUID: [u8; 16] =
    [0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2];

/// The order in which the host issues `TDH.MEM.PAGE.ADD` and `TDH.MR.EXTEND` within a section.
/// The TDX module hashes whatever sequence it is given, so the two orders give different MRTDs
/// for the same firmware (unless every measured section is a single page).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// For each page: `PAGE.ADD`, then its 16 `MR.EXTEND`s. Upstream Linux KVM (6.16+) with
    /// upstream QEMU (10.1+), Canonical's QEMU 9.x TDX builds, and the TDX patch sets before
    /// KVM TDX v19. What the TDVF and TD-Shim specifications describe.
    PageByPage,
    /// For each section: all its `PAGE.ADD`s, then all its `MR.EXTEND`s. The KVM TDX v19 patch
    /// set and the QEMU 8.2 TDX builds made for it (Intel's `tdx-qemu-upstream-v5`, QEMU
    /// 8.2.50; Canonical's Ubuntu 24.04 `8.2.2+ds-0ubuntu1…+tdx…`).
    SectionBySection,
}

impl Order {
    pub const ALL: [Order; 2] = [Order::PageByPage, Order::SectionBySection];

    pub fn name(self) -> &'static str {
        match self {
            Order::PageByPage => "page-by-page",
            Order::SectionBySection => "section-by-section",
        }
    }
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Order {
    type Err = MeasureError;
    fn from_str(s: &str) -> Result<Self, MeasureError> {
        Order::ALL.into_iter().find(|o| o.name() == s).ok_or_else(|| MeasureError::Input {
            what: "TDX page order",
            message: format!("{s:?} is neither \"page-by-page\" (QEMU ≥ 9) nor \"section-by-section\" (QEMU 8.2 TDX builds)"),
        })
    }
}

/// The TDVF section types QEMU accepts. The specification also defines PermMem (4), Payload (5)
/// and PayloadParam (6); QEMU refuses them, and so do we.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SectionType {
    /// Boot firmware volume (code): copied from the image, measured into MRTD.
    Bfv,
    /// Configuration firmware volume (UEFI variables): copied from the image; OVMF measures it
    /// into RTMR0 rather than MRTD.
    Cfv,
    /// Where QEMU writes the TD HOB (memory map); added, not measured into MRTD.
    TdHob,
    /// Zeroed memory the firmware uses early; added, not measured into MRTD.
    TempMem,
}

impl SectionType {
    fn from_raw(raw: u32) -> Result<Self, String> {
        match raw {
            0 => Ok(SectionType::Bfv),
            1 => Ok(SectionType::Cfv),
            2 => Ok(SectionType::TdHob),
            3 => Ok(SectionType::TempMem),
            4 => Err("type 4 (PermMem) is not supported by QEMU".into()),
            5 => Err("type 5 (Payload) is not supported by QEMU".into()),
            6 => Err("type 6 (PayloadParam) is not supported by QEMU".into()),
            t => Err(format!("unknown section type {t}")),
        }
    }

    /// Whether the section's memory is initialised from the image (as opposed to QEMU memory).
    fn copied_from_image(self) -> bool {
        matches!(self, SectionType::Bfv | SectionType::Cfv)
    }
}

/// One validated `TDVF_SECTION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Section {
    /// Offset of the section's bytes in the image (0 for TD_HOB/TempMem).
    pub data_offset: u32,
    /// Bytes taken from the image: equal to `memory_data_size` for BFV/CFV, 0 otherwise.
    pub raw_data_size: u32,
    /// First GPA (page-aligned).
    pub memory_address: u64,
    /// Size in TD memory (a non-zero multiple of [`PAGE_SIZE`]).
    pub memory_data_size: u64,
    pub section_type: SectionType,
    /// The `MR.EXTEND` attribute: the contents are measured into MRTD.
    pub mr_extend: bool,
}

impl Section {
    pub fn pages(&self) -> u64 {
        self.memory_data_size / PAGE_SIZE
    }

    fn memory_end(&self) -> u64 {
        self.memory_address + self.memory_data_size
    }
}

/// A firmware image with its validated TDVF metadata.
#[derive(Clone)]
pub struct Tdvf<'a> {
    firmware: &'a [u8],
    metadata_offset: usize,
    sections: Vec<Section>,
}

impl std::fmt::Debug for Tdvf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tdvf")
            .field("firmware_len", &self.firmware.len())
            .field("metadata_offset", &self.metadata_offset)
            .field("sections", &self.sections)
            .finish()
    }
}

fn err(message: impl Into<String>) -> MeasureError {
    MeasureError::Tdvf(message.into())
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// The entries of the OVMF GUIDed table (without the footer entry itself): the table ends
/// [`RESET_VECTOR_TAIL`] bytes before the end of the image with `u16 total length ‖ footer GUID`,
/// and the total length counts the footer entry too.
fn footer_table(fw: &[u8]) -> Result<&[u8], MeasureError> {
    let len = fw.len();
    let guid_at = len
        .checked_sub(RESET_VECTOR_TAIL + 16)
        .ok_or_else(|| err(format!("image of {len} bytes is too short for an OVMF table footer")))?;
    if fw.get(guid_at..guid_at + 16) != Some(&TABLE_FOOTER_GUID[..]) {
        return Err(err(
            "no OVMF table footer GUID (96b582de-1fb2-45f7-baea-a366c55a082d) 48 bytes before the end of the image: not an OVMF/TDVF image, or truncated",
        ));
    }
    let total = guid_at
        .checked_sub(2)
        .and_then(|at| le_u16(fw, at))
        .ok_or_else(|| err("OVMF table footer truncated"))? as usize;
    let table_end = len - RESET_VECTOR_TAIL;
    if total < ENTRY_TRAILER || total > table_end {
        return Err(err(format!("OVMF table length {total} is not in {ENTRY_TRAILER}..={table_end}")));
    }
    Ok(&fw[table_end - total..table_end - ENTRY_TRAILER])
}

/// The data of the table's only TDX metadata offset entry. Every entry is walked and checked,
/// back to front; the entries must tile the table exactly.
fn tdx_metadata_offset_entry(table: &[u8]) -> Result<&[u8], MeasureError> {
    let mut end = table.len();
    let mut found = None;
    while end > 0 {
        if end < ENTRY_TRAILER {
            return Err(err(format!("OVMF table: {end} stray bytes before its first entry")));
        }
        let guid = &table[end - 16..end];
        let entry_len = le_u16(table, end - ENTRY_TRAILER).unwrap_or(0) as usize;
        if entry_len < ENTRY_TRAILER || entry_len > end {
            return Err(err(format!(
                "OVMF table: entry length {entry_len} at table offset {} is not in {ENTRY_TRAILER}..={end}",
                end - ENTRY_TRAILER
            )));
        }
        if guid == TDX_METADATA_OFFSET_GUID {
            if found.is_some() {
                return Err(err("OVMF table has more than one TDX metadata offset entry"));
            }
            found = Some(&table[end - entry_len..end - ENTRY_TRAILER]);
        }
        end -= entry_len;
    }
    found.ok_or_else(|| {
        err("OVMF table has no TDX metadata offset entry (GUID e47a6535-984a-4798-865e-4685a7bf8ec2): firmware built without TDX support")
    })
}

impl<'a> Tdvf<'a> {
    /// Finds and validates the TDVF metadata of a firmware image. Refused (each with its own
    /// message): an image QEMU would not load as `-bios` (size not a positive multiple of 64 KiB,
    /// or ≥ 2 GiB); a missing or malformed footer table, or not exactly one TDX metadata offset
    /// entry (of 4 bytes); a metadata offset outside the image; a signature other than `TDVF`,
    /// a version other than 1, fewer than two sections, or a Length other than 16 + 32·count
    /// or reaching past the image; per section: attribute bits other than `MR.EXTEND`,
    /// `PAGE.AUG` (QEMU ignores it and adds the pages anyway), a type other than BFV/CFV/TD_HOB/
    /// TempMem, a GPA or size not page-aligned, a zero size, memory ending above 4 GiB, BFV/CFV
    /// data that is empty, differs in size from the memory it fills (the specification
    /// zero-fills, QEMU copies from the image: two readings, so no answer), or lies outside
    /// the image, TD_HOB/TempMem with image data or `MR.EXTEND`, a BFV without `MR.EXTEND`
    /// (MRTD would not cover the firmware code); and overall: sections overlapping in memory or
    /// in the image, no BFV, or not exactly one TD_HOB (QEMU requires one).
    pub fn parse(firmware: &'a [u8]) -> Result<Self, MeasureError> {
        let len = firmware.len();
        if len == 0 || !len.is_multiple_of(0x1_0000) || len >= 1 << 31 {
            return Err(err(format!(
                "image size {len} is not a positive multiple of 64 KiB below 2 GiB (QEMU refuses such a -bios image; truncated?)"
            )));
        }
        let entry = tdx_metadata_offset_entry(footer_table(firmware)?)?;
        if entry.len() != 4 {
            return Err(err(format!("TDX metadata offset entry holds {} bytes, not 4", entry.len())));
        }
        let from_end = le_u32(entry, 0).unwrap_or(0) as usize;
        if from_end < DESCRIPTOR_HEADER || from_end > len {
            return Err(err(format!(
                "TDX metadata offset {from_end:#x} (from the end) is outside the {len:#x}-byte image"
            )));
        }
        let at = len - from_end;
        let header = &firmware[at..at + DESCRIPTOR_HEADER];
        if &header[0..4] != b"TDVF" {
            return Err(err(format!(
                "no TDVF signature at image offset {at:#x} (found {:02x?})",
                &header[0..4]
            )));
        }
        let length = le_u32(header, 4).unwrap_or(0) as u64;
        let version = le_u32(header, 8).unwrap_or(0);
        let count = le_u32(header, 12).unwrap_or(0) as u64;
        if version != 1 {
            return Err(err(format!("TDVF metadata version {version} (only 1 is defined)")));
        }
        if count < 2 {
            return Err(err(format!("TDVF metadata has {count} sections (QEMU needs at least 2)")));
        }
        if length != DESCRIPTOR_HEADER as u64 + SECTION_ENTRY as u64 * count {
            return Err(err(format!(
                "TDVF metadata Length {length} does not match {count} sections ({} bytes)",
                DESCRIPTOR_HEADER as u64 + SECTION_ENTRY as u64 * count
            )));
        }
        if at as u64 + length > len as u64 {
            return Err(err(format!(
                "TDVF metadata ({length} bytes at {at:#x}) runs past the end of the image"
            )));
        }
        let entries = &firmware[at + DESCRIPTOR_HEADER..at + length as usize];
        let sections = entries
            .chunks_exact(SECTION_ENTRY)
            .enumerate()
            .map(|(i, e)| parse_section(e, len).map_err(|m| err(format!("TDVF section {i}: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        check_layout(&sections)?;
        Ok(Tdvf { firmware, metadata_offset: at, sections })
    }

    /// The sections, in metadata order (the order QEMU adds them in).
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The one TD_HOB section (`parse` checks there is exactly one).
    pub fn td_hob(&self) -> Result<&Section, MeasureError> {
        self.sections
            .iter()
            .find(|s| s.section_type == SectionType::TdHob)
            .ok_or_else(|| err("TDVF metadata has no TD_HOB section"))
    }

    /// The bytes of the configuration firmware volume (the UEFI variable store as shipped),
    /// which OVMF measures into RTMR0. Exactly one CFV is required: with none or several,
    /// which bytes OVMF measures is a guess.
    pub fn cfv(&self) -> Result<&'a [u8], MeasureError> {
        let mut cfvs = self.sections.iter().filter(|s| s.section_type == SectionType::Cfv);
        let (Some(cfv), None) = (cfvs.next(), cfvs.next()) else {
            return Err(err("TDVF metadata does not have exactly one CFV section"));
        };
        let from = cfv.data_offset as usize;
        // `parse` checked that the section lies inside the image.
        self.firmware
            .get(from..from + cfv.raw_data_size as usize)
            .ok_or_else(|| err("CFV data outside the image"))
    }

    /// Image offset of the `TDVF_DESCRIPTOR`.
    pub fn metadata_offset(&self) -> usize {
        self.metadata_offset
    }

    /// MRTD for the given order.
    pub fn mrtd(&self, order: Order) -> Result<[u8; 48], MeasureError> {
        let mut h = Context::new(&SHA384);
        for s in &self.sections {
            match order {
                Order::PageByPage => {
                    for page in 0..s.pages() {
                        page_add(&mut h, s, page);
                        self.extend_page(&mut h, s, page)?;
                    }
                }
                Order::SectionBySection => {
                    for page in 0..s.pages() {
                        page_add(&mut h, s, page);
                    }
                    for page in 0..s.pages() {
                        self.extend_page(&mut h, s, page)?;
                    }
                }
            }
        }
        let mut out = [0u8; 48];
        out.copy_from_slice(h.finish().as_ref());
        Ok(out)
    }

    /// The 16 `TDH.MR.EXTEND` records of one page of a measured section (nothing otherwise).
    fn extend_page(&self, h: &mut Context, s: &Section, page: u64) -> Result<(), MeasureError> {
        if !s.mr_extend {
            return Ok(());
        }
        for chunk in 0..PAGE_SIZE / EXTEND_CHUNK {
            let within = page * PAGE_SIZE + chunk * EXTEND_CHUNK;
            h.update(&record(b"MR.EXTEND", s.memory_address + within));
            // Validated by `parse`: the whole section lies in the image; `get` only keeps a
            // broken invariant from becoming a panic.
            let from = s.data_offset as u64 + within;
            let bytes = usize::try_from(from)
                .ok()
                .and_then(|from| self.firmware.get(from..from + EXTEND_CHUNK as usize))
                .ok_or_else(|| {
                    err(format!("measured chunk at image offset {from:#x} is outside the image"))
                })?;
            h.update(bytes);
        }
        Ok(())
    }
}

/// The `TDH.MEM.PAGE.ADD` record of one page.
fn page_add(h: &mut Context, s: &Section, page: u64) {
    h.update(&record(b"MEM.PAGE.ADD", s.memory_address + page * PAGE_SIZE));
}

/// The 128-byte record the TDX module hashes for `PAGE.ADD` and `MR.EXTEND`: the operation's
/// ASCII name zero-padded to 16 bytes, the GPA as u64 little-endian, zeros to 128 bytes.
fn record(name: &[u8], gpa: u64) -> [u8; 128] {
    let mut r = [0u8; 128];
    r[..name.len()].copy_from_slice(name);
    r[16..24].copy_from_slice(&gpa.to_le_bytes());
    r
}

fn parse_section(e: &[u8], image_len: usize) -> Result<Section, String> {
    let field32 = |at| le_u32(e, at).unwrap_or(0);
    let field64 = |at| le_u64(e, at).unwrap_or(0);
    let (data_offset, raw_data_size) = (field32(0), field32(4));
    let (memory_address, memory_data_size) = (field64(8), field64(16));
    let (raw_type, attributes) = (field32(24), field32(28));

    let section_type = SectionType::from_raw(raw_type)?;
    if attributes & !(ATTR_MR_EXTEND | ATTR_PAGE_AUG) != 0 {
        return Err(format!("unknown attribute bits {attributes:#x}"));
    }
    if attributes & ATTR_PAGE_AUG != 0 {
        return Err("PAGE.AUG attribute (QEMU ignores it and adds the pages with PAGE.ADD)".into());
    }
    let mr_extend = attributes & ATTR_MR_EXTEND != 0;
    if memory_data_size == 0 {
        return Err("MemoryDataSize is 0".into());
    }
    if !memory_address.is_multiple_of(PAGE_SIZE) || !memory_data_size.is_multiple_of(PAGE_SIZE) {
        return Err(format!(
            "MemoryAddress {memory_address:#x} / MemoryDataSize {memory_data_size:#x} not 4 KiB-aligned"
        ));
    }
    match memory_address.checked_add(memory_data_size) {
        Some(end) if end <= GPA_LIMIT => {}
        _ => {
            return Err(format!(
                "memory {memory_address:#x}+{memory_data_size:#x} does not end at or below 4 GiB"
            ));
        }
    }
    if section_type.copied_from_image() {
        if raw_data_size == 0 {
            return Err(format!("{section_type:?} with RawDataSize 0"));
        }
        if raw_data_size as u64 != memory_data_size {
            return Err(format!(
                "{section_type:?} RawDataSize {raw_data_size:#x} differs from MemoryDataSize {memory_data_size:#x}"
            ));
        }
        if data_offset as u64 + raw_data_size as u64 > image_len as u64 {
            return Err(format!(
                "data {data_offset:#x}+{raw_data_size:#x} is outside the {image_len:#x}-byte image"
            ));
        }
        if section_type == SectionType::Bfv && !mr_extend {
            return Err("BFV without MR.EXTEND: MRTD would not cover the firmware code".into());
        }
    } else {
        if raw_data_size != 0 || data_offset != 0 {
            return Err(format!(
                "{section_type:?} with image data ({data_offset:#x}+{raw_data_size:#x}); QEMU provides its memory"
            ));
        }
        if mr_extend {
            return Err(format!("{section_type:?} with MR.EXTEND"));
        }
    }
    Ok(Section { data_offset, raw_data_size, memory_address, memory_data_size, section_type, mr_extend })
}

fn check_layout(sections: &[Section]) -> Result<(), MeasureError> {
    let count = |t| sections.iter().filter(|s| s.section_type == t).count();
    if count(SectionType::Bfv) == 0 {
        return Err(err("TDVF metadata has no BFV section"));
    }
    let hobs = count(SectionType::TdHob);
    if hobs != 1 {
        return Err(err(format!("TDVF metadata has {hobs} TD_HOB sections (QEMU needs exactly one)")));
    }
    let mut memory: Vec<(u64, u64, usize)> =
        sections.iter().enumerate().map(|(i, s)| (s.memory_address, s.memory_end(), i)).collect();
    memory.sort_unstable();
    for w in memory.windows(2) {
        if let [(_, end, a), (start, _, b)] = w
            && start < end
        {
            return Err(err(format!("TDVF sections {a} and {b} overlap in memory")));
        }
    }
    let mut data: Vec<(u64, u64, usize)> = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.section_type.copied_from_image())
        .map(|(i, s)| (s.data_offset as u64, s.data_offset as u64 + s.raw_data_size as u64, i))
        .collect();
    data.sort_unstable();
    for w in data.windows(2) {
        if let [(_, end, a), (start, _, b)] = w
            && start < end
        {
            return Err(err(format!("TDVF sections {a} and {b} overlap in the image")));
        }
    }
    Ok(())
}

/// MRTD of a firmware image.
pub fn mrtd(firmware: &[u8], order: Order) -> Result<[u8; 48], MeasureError> {
    Tdvf::parse(firmware)?.mrtd(order)
}

/// MRTD of a firmware file; errors name the file.
pub fn mrtd_file(path: &Path, order: Order) -> Result<[u8; 48], MeasureError> {
    let firmware = crate::measure::read(path)?;
    mrtd(&firmware, order).map_err(|e| match e {
        MeasureError::Tdvf(m) => MeasureError::Tdvf(format!("{}: {m}", path.display())),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";
    const DEBIAN_OVMF_MRTD_PAGE_BY_PAGE: &str =
        "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47";
    /// Not checked against a real TD; computed by this module and by an independent Python
    /// script from the same description.
    const DEBIAN_OVMF_MRTD_SECTION_BY_SECTION: &str =
        "acccbcc870a381adab0d3919d90a7f268ac3b0364771f202ed4bb4e892d045b33db3b32e6924cba830a724eed443f7e1";

    fn guid_bytes(text: &str) -> [u8; 16] {
        let mut b = [0u8; 16];
        hex::decode_to_slice(text.replace('-', ""), &mut b).unwrap();
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        b
    }

    fn unwrap_tdvf_err<T: std::fmt::Debug>(r: Result<T, MeasureError>) -> String {
        match r {
            Err(MeasureError::Tdvf(m)) => m,
            other => panic!("expected a TDVF error, got {other:?}"),
        }
    }

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(TABLE_FOOTER_GUID, guid_bytes("96b582de-1fb2-45f7-baea-a366c55a082d"));
        assert_eq!(TDX_METADATA_OFFSET_GUID, guid_bytes("e47a6535-984a-4798-865e-4685a7bf8ec2"));
    }

    /// A section entry as raw fields: (DataOffset, RawDataSize, MemoryAddress, MemoryDataSize,
    /// Type, Attributes).
    type Raw = (u32, u32, u64, u64, u32, u32);

    /// A synthetic 128 KiB TDVF laid out like OVMF's: CFV then BFV in the image, the metadata
    /// inside the BFV, the footer table (with one unrelated entry) at the end.
    struct Synth {
        sections: Vec<Raw>,
        length: Option<u32>,
        version: u32,
        signature: [u8; 4],
        metadata_from_end: Option<u32>,
        tdx_entries: usize,
    }

    const SYNTH_LEN: usize = 0x2_0000;
    const SYNTH_METADATA_AT: usize = SYNTH_LEN - 0x800;

    impl Synth {
        fn new() -> Self {
            Synth {
                sections: vec![
                    (0x1000, 0x1_f000, 0xfffe_1000, 0x1_f000, 0, ATTR_MR_EXTEND),
                    (0, 0x1000, 0xfffe_0000, 0x1000, 1, 0),
                    (0, 0, 0x80_0000, 0x6000, 3, 0),
                    (0, 0, 0x80_9000, 0x2000, 2, 0),
                ],
                length: None,
                version: 1,
                signature: *b"TDVF",
                metadata_from_end: None,
                tdx_entries: 1,
            }
        }

        fn build(&self) -> Vec<u8> {
            // Deterministic non-zero filler so that measured contents matter.
            let mut fw: Vec<u8> = (0..SYNTH_LEN).map(|i| (i * 7 + i / 4096) as u8).collect();
            let mut md = Vec::new();
            md.extend_from_slice(&self.signature);
            let length = self.length.unwrap_or((16 + 32 * self.sections.len()) as u32);
            md.extend_from_slice(&length.to_le_bytes());
            md.extend_from_slice(&self.version.to_le_bytes());
            md.extend_from_slice(&(self.sections.len() as u32).to_le_bytes());
            for &(off, raw, addr, size, ty, attr) in &self.sections {
                md.extend_from_slice(&off.to_le_bytes());
                md.extend_from_slice(&raw.to_le_bytes());
                md.extend_from_slice(&addr.to_le_bytes());
                md.extend_from_slice(&size.to_le_bytes());
                md.extend_from_slice(&ty.to_le_bytes());
                md.extend_from_slice(&attr.to_le_bytes());
            }
            fw[SYNTH_METADATA_AT..SYNTH_METADATA_AT + md.len()].copy_from_slice(&md);

            let mut table = Vec::new();
            // An unrelated entry (the SEV secret block's GUID, 8 bytes of data).
            table.extend_from_slice(&[0u8; 8]);
            table.extend_from_slice(&26u16.to_le_bytes());
            table.extend_from_slice(&guid_bytes("4c2eb361-7d9b-4cc3-8081-127c90d3d294"));
            let from_end = self.metadata_from_end.unwrap_or((SYNTH_LEN - SYNTH_METADATA_AT) as u32);
            for _ in 0..self.tdx_entries {
                table.extend_from_slice(&from_end.to_le_bytes());
                table.extend_from_slice(&22u16.to_le_bytes());
                table.extend_from_slice(&TDX_METADATA_OFFSET_GUID);
            }
            table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
            table.extend_from_slice(&TABLE_FOOTER_GUID);
            let end = SYNTH_LEN - RESET_VECTOR_TAIL;
            fw[end - table.len()..end].copy_from_slice(&table);
            fw
        }

        fn with(mut self, i: usize, f: impl FnOnce(&mut Raw)) -> Self {
            f(&mut self.sections[i]);
            self
        }
    }

    /// The Debian package's firmware (the task's reference value). Not skipped when missing:
    /// a silent skip would hide that the one cross-check against a real TD is not running.
    #[test]
    fn debian_ovmf_mrtd() {
        let fw = std::fs::read(DEBIAN_OVMF).unwrap_or_else(|e| {
            panic!("{DEBIAN_OVMF}: {e}. Install the Debian package `ovmf` (apt-get install -y ovmf) to run this test.")
        });
        let tdvf = Tdvf::parse(&fw).unwrap();
        assert_eq!(tdvf.metadata_offset(), fw.len() - 0x840);
        let types: Vec<_> = tdvf.sections().iter().map(|s| s.section_type).collect();
        use SectionType::*;
        assert_eq!(types, [Bfv, Cfv, TempMem, TempMem, TdHob, TempMem]);
        assert_eq!(hex::encode(tdvf.mrtd(Order::PageByPage).unwrap()), DEBIAN_OVMF_MRTD_PAGE_BY_PAGE);
        assert_eq!(
            hex::encode(tdvf.mrtd(Order::SectionBySection).unwrap()),
            DEBIAN_OVMF_MRTD_SECTION_BY_SECTION
        );
        let via_file = mrtd_file(Path::new(DEBIAN_OVMF), Order::PageByPage).unwrap();
        assert_eq!(hex::encode(via_file), DEBIAN_OVMF_MRTD_PAGE_BY_PAGE);
    }

    /// The operation stream spelled out once, whole, and hashed in one go.
    #[test]
    fn synthetic_mrtd_matches_spelled_out_stream() {
        let fw = Synth::new().build();
        let tdvf = Tdvf::parse(&fw).unwrap();
        for order in Order::ALL {
            let mut stream = Vec::new();
            let add = |stream: &mut Vec<u8>, gpa: u64| {
                let mut r = b"MEM.PAGE.ADD\0\0\0\0".to_vec();
                r.extend_from_slice(&gpa.to_le_bytes());
                r.resize(128, 0);
                stream.extend_from_slice(&r);
            };
            let extend = |stream: &mut Vec<u8>, gpa: u64, off: usize| {
                for c in 0..16u64 {
                    let mut r = b"MR.EXTEND\0\0\0\0\0\0\0".to_vec();
                    r.extend_from_slice(&(gpa + c * 256).to_le_bytes());
                    r.resize(128, 0);
                    stream.extend_from_slice(&r);
                    let at = off + c as usize * 256;
                    stream.extend_from_slice(&fw[at..at + 256]);
                }
            };
            // BFV (measured), then CFV, TempMem, TD_HOB (added only): metadata order.
            let bfv_pages = 0x1f;
            match order {
                Order::PageByPage => {
                    for p in 0..bfv_pages {
                        add(&mut stream, 0xfffe_1000 + p * 4096);
                        extend(&mut stream, 0xfffe_1000 + p * 4096, 0x1000 + p as usize * 4096);
                    }
                }
                Order::SectionBySection => {
                    for p in 0..bfv_pages {
                        add(&mut stream, 0xfffe_1000 + p * 4096);
                    }
                    for p in 0..bfv_pages {
                        extend(&mut stream, 0xfffe_1000 + p * 4096, 0x1000 + p as usize * 4096);
                    }
                }
            }
            add(&mut stream, 0xfffe_0000);
            for p in 0..6 {
                add(&mut stream, 0x80_0000 + p * 4096);
            }
            for p in 0..2 {
                add(&mut stream, 0x80_9000 + p * 4096);
            }
            let expected = aws_lc_rs::digest::digest(&SHA384, &stream);
            assert_eq!(tdvf.mrtd(order).unwrap()[..], *expected.as_ref(), "{order}");
        }
        assert_ne!(tdvf.mrtd(Order::PageByPage).unwrap(), tdvf.mrtd(Order::SectionBySection).unwrap());
    }

    #[test]
    fn orders_agree_when_measured_sections_are_one_page() {
        let fw = Synth::new()
            .with(0, |s| (s.1, s.3) = (0x1000, 0x1000))
            .with(1, |s| (s.0, s.1, s.3) = (0x2000, 0x1000, 0x1000))
            .build();
        let tdvf = Tdvf::parse(&fw).unwrap();
        assert_eq!(tdvf.mrtd(Order::PageByPage).unwrap(), tdvf.mrtd(Order::SectionBySection).unwrap());
    }

    #[test]
    fn measured_and_unmeasured_bytes() {
        let fw = Synth::new().build();
        let base = mrtd(&fw, Order::PageByPage).unwrap();
        // A BFV byte (measured) changes MRTD; a CFV byte (not measured) does not.
        let mut bfv = fw.clone();
        bfv[0x1234] ^= 1;
        assert_ne!(mrtd(&bfv, Order::PageByPage).unwrap(), base);
        let mut cfv = fw.clone();
        cfv[0x123] ^= 1;
        assert_eq!(mrtd(&cfv, Order::PageByPage).unwrap(), base);
        // Moving an added-only section changes MRTD (its GPAs are hashed).
        let moved = Synth::new().with(2, |s| s.2 = 0x7f_0000).build();
        assert_ne!(mrtd(&moved, Order::PageByPage).unwrap(), base);
    }

    #[test]
    fn order_names_round_trip() {
        for o in Order::ALL {
            assert_eq!(o.to_string().parse::<Order>().unwrap(), o);
        }
        assert!("pagebypage".parse::<Order>().is_err());
    }

    fn refused(fw: &[u8], needle: &str) {
        let m = unwrap_tdvf_err(Tdvf::parse(fw));
        assert!(m.contains(needle), "error {m:?} does not mention {needle:?}");
    }

    #[test]
    fn truncated_images_are_refused() {
        let fw = Synth::new().build();
        refused(&[], "64 KiB");
        refused(&fw[..10], "64 KiB");
        refused(&fw[..fw.len() - 1], "64 KiB");
        // Still a multiple of 64 KiB, but the footer is gone.
        refused(&fw[..0x1_0000], "footer");
        refused(&fw[0x1_0000..], "outside");
    }

    #[test]
    fn corrupted_footer_is_refused() {
        let fw = Synth::new().build();
        let guid_at = fw.len() - 48;
        let mut bad = fw.clone();
        bad[guid_at + 5] ^= 0x40;
        refused(&bad, "footer GUID");
        // Table length too small, too large, not tiling the entries.
        for (total, needle) in [(0u16, "OVMF table length"), (0xffff, "OVMF table"), (19, "stray bytes")] {
            let mut bad = fw.clone();
            bad[guid_at - 2..guid_at].copy_from_slice(&total.to_le_bytes());
            refused(&bad, needle);
        }
        // An entry length pointing outside the table.
        let mut bad = fw.clone();
        let tdx_len_at = guid_at - 2 - 18;
        bad[tdx_len_at..tdx_len_at + 2].copy_from_slice(&0x7000u16.to_le_bytes());
        refused(&bad, "entry length");
        // The TDX entry's GUID damaged: no TDX metadata.
        let mut bad = fw.clone();
        bad[guid_at - 18 + 3] ^= 1;
        refused(&bad, "no TDX metadata offset entry");
        // Two TDX entries.
        let two = Synth { tdx_entries: 2, ..Synth::new() }.build();
        refused(&two, "more than one");
    }

    #[test]
    fn metadata_offset_out_of_range_is_refused() {
        for from_end in [0, 15, SYNTH_LEN as u32 + 1, u32::MAX] {
            refused(&Synth { metadata_from_end: Some(from_end), ..Synth::new() }.build(), "outside");
        }
        // In range, but the section entries run past the end (70 entries from 0x800 before it).
        let mut bad = Synth::new().build();
        bad[SYNTH_METADATA_AT + 4..SYNTH_METADATA_AT + 8].copy_from_slice(&(16u32 + 32 * 70).to_le_bytes());
        bad[SYNTH_METADATA_AT + 12..SYNTH_METADATA_AT + 16].copy_from_slice(&70u32.to_le_bytes());
        refused(&bad, "runs past the end");
        // Pointing at bytes that are not a descriptor.
        refused(&Synth { metadata_from_end: Some(0x1000), ..Synth::new() }.build(), "signature");
    }

    #[test]
    fn descriptor_inconsistencies_are_refused() {
        refused(&Synth { signature: *b"TDVf", ..Synth::new() }.build(), "signature");
        refused(&Synth { version: 2, ..Synth::new() }.build(), "version 2");
        refused(&Synth { length: Some(16 + 32 * 3), ..Synth::new() }.build(), "does not match");
        refused(&Synth { length: Some(16 + 32 * 5), ..Synth::new() }.build(), "does not match");
        let mut one = Synth::new();
        one.sections.truncate(1);
        refused(&one.build(), "at least 2");
    }

    #[test]
    fn section_inconsistencies_are_refused() {
        let cases: Vec<(Synth, &str)> = vec![
            (Synth::new().with(2, |s| s.3 = 0), "MemoryDataSize is 0"),
            (Synth::new().with(0, |s| (s.1, s.3) = (0, 0)), "MemoryDataSize is 0"),
            (Synth::new().with(1, |s| s.1 = 0), "RawDataSize 0"),
            (Synth::new().with(2, |s| s.2 = 0x80_0800), "aligned"),
            (Synth::new().with(2, |s| s.3 = 0x6100), "aligned"),
            (Synth::new().with(2, |s| s.4 = 4), "PermMem"),
            (Synth::new().with(2, |s| s.4 = 7), "unknown section type 7"),
            (Synth::new().with(2, |s| s.5 = 4), "unknown attribute"),
            (Synth::new().with(0, |s| s.5 = ATTR_MR_EXTEND | ATTR_PAGE_AUG), "PAGE.AUG"),
            (Synth::new().with(0, |s| s.5 = 0), "BFV without MR.EXTEND"),
            (Synth::new().with(2, |s| s.5 = ATTR_MR_EXTEND), "TempMem with MR.EXTEND"),
            (Synth::new().with(3, |s| s.1 = 0x1000), "TdHob with image data"),
            (Synth::new().with(3, |s| s.0 = 0x1000), "TdHob with image data"),
            (Synth::new().with(1, |s| s.3 = 0x2000), "differs from MemoryDataSize"),
            (Synth::new().with(0, |s| s.0 = 0x2000), "outside"),
            (Synth::new().with(2, |s| s.2 = 0xffff_f000), "4 GiB"),
            (Synth::new().with(2, |s| s.2 = u64::MAX - 0xfff), "4 GiB"),
            // Overlaps: TempMem over TD_HOB; CFV's image bytes inside the BFV's.
            (Synth::new().with(2, |s| s.3 = 0xa000), "overlap in memory"),
            (Synth::new().with(1, |s| s.0 = 0x1000), "overlap in the image"),
            (Synth::new().with(3, |s| s.4 = 3), "0 TD_HOB"),
            (Synth::new().with(2, |s| s.4 = 2), "2 TD_HOB"),
            (Synth::new().with(0, |s| (s.4, s.5) = (1, 0)), "no BFV"),
        ];
        for (synth, needle) in cases {
            refused(&synth.build(), needle);
        }
    }

    /// Every single-bit flip of the metadata and the footer table is refused with a TDVF error
    /// or parses into something measurable. As in OVMF, both lie inside the measured BFV, so a
    /// flip that is accepted must change MRTD.
    #[test]
    fn every_single_bit_flip_in_the_metadata_and_table_is_handled() {
        let fw = Synth::new().build();
        let base = mrtd(&fw, Order::PageByPage).unwrap();
        let metadata = SYNTH_METADATA_AT..SYNTH_METADATA_AT + 16 + 4 * 32;
        let table = SYNTH_LEN - RESET_VECTOR_TAIL - (26 + 22 + 18)..SYNTH_LEN - RESET_VECTOR_TAIL;
        let (mut accepted, mut refused) = (0, 0);
        for at in metadata.chain(table) {
            for bit in 0..8 {
                let mut bad = fw.clone();
                bad[at] ^= 1 << bit;
                match Tdvf::parse(&bad) {
                    Ok(t) => {
                        accepted += 1;
                        let m = t.mrtd(Order::PageByPage).unwrap();
                        assert_ne!(m, base, "flip of bit {bit} at {at:#x} accepted without effect");
                    }
                    Err(MeasureError::Tdvf(_)) => refused += 1,
                    Err(e) => panic!("unexpected error kind {e:?}"),
                }
            }
        }
        assert!(accepted > 0 && refused > accepted, "accepted {accepted}, refused {refused}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn random_corruption_never_panics(flips in prop::collection::vec((0usize..16 + 4 * 32 + 66, any::<u8>()), 1..6)) {
            let mut fw = Synth::new().build();
            let table_start = SYNTH_LEN - RESET_VECTOR_TAIL - 66;
            for (i, x) in flips {
                let at = if i < 16 + 4 * 32 { SYNTH_METADATA_AT + i } else { table_start + i - (16 + 4 * 32) };
                fw[at] ^= x;
            }
            if let Ok(t) = Tdvf::parse(&fw) {
                // Bounded work: at most 4 GiB of non-overlapping sections, but keep the test fast.
                let pages: u64 = t.sections().iter().map(Section::pages).sum();
                if pages <= 0x1_0000 {
                    prop_assert!(t.mrtd(Order::SectionBySection).is_ok());
                }
            }
        }
    }
}
