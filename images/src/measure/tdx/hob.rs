//! The TD HOB (hand-off block list) QEMU writes into the firmware's TD_HOB section, which OVMF
//! measures into RTMR0 as its first event. It describes the guest's RAM, so it depends on the
//! memory size and on the firmware's section layout (QEMU `hw/i386/tdvf-hob.c`,
//! `target/i386/kvm/tdx.c`):
//!
//! 1. RAM, as the q35 machine maps it: `[0, below_4g)` and, for guests of 2.75 GiB or more,
//!    `[4 GiB, 4 GiB + memory - 2 GiB)` (see [`super::kernel_patch::q35_below_4g`]); every
//!    range starts out *unaccepted*.
//! 2. Each TD_HOB and TempMem section, in metadata order, is cut out of the range that holds
//!    it as an *accepted* range (QEMU adds those pages itself); what is left before and after
//!    stays unaccepted. Adjacent accepted ranges are not merged.
//! 3. The ranges sorted by address become resource descriptor HOBs after a PHIT HOB.
//!
//! | HOB | bytes |
//! |---|---|
//! | PHIT (`EFI_HOB_HANDOFF_INFO_TABLE`) | type u16 = 1, length u16 = 56, reserved u32 = 0, version u32 = 9, boot mode u32 = 0, four u64 memory bounds = 0, `EfiEndOfHobList` u64 |
//! | resource descriptor, per range | type u16 = 3, length u16 = 48, reserved u32 = 0, owner GUID = 0, resource type u32 (0 system memory: accepted, 7 unaccepted), attributes u32 = 7 (present, initialized, tested), start u64, length u64 |
//! | end of list | type u16 = 0xffff, length u16 = 8, reserved u32 = 0 |
//!
//! `EfiEndOfHobList` is the guest address just after the end-of-list HOB. OVMF measures the
//! list up to, not including, the end-of-list HOB ([`td_hob`] returns exactly those bytes).

use super::kernel_patch::q35_below_4g;
use super::tdvf::{Section, SectionType};
use crate::measure::MeasureError;

const PHIT_LEN: usize = 56;
const RESOURCE_LEN: usize = 48;
const END_LEN: usize = 8;
const HOB_TYPE_HANDOFF: u16 = 1;
const HOB_TYPE_RESOURCE_DESCRIPTOR: u16 = 3;
const HANDOFF_TABLE_VERSION: u32 = 9;
const RESOURCE_SYSTEM_MEMORY: u32 = 0;
const RESOURCE_MEMORY_UNACCEPTED: u32 = 7;
/// PRESENT | INITIALIZED | TESTED, QEMU's attributes for both kinds.
const RESOURCE_ATTRIBUTES: u32 = 0x7;
const FOUR_GIB: u64 = 1 << 32;

/// One RAM range of the TD HOB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    pub start: u64,
    pub length: u64,
    /// Added (and so accepted) by the host before the TD runs: the TD_HOB and TempMem sections.
    pub accepted: bool,
}

fn err(message: String) -> MeasureError {
    MeasureError::Input { what: "TD HOB", message }
}

/// The RAM ranges QEMU describes for a guest of `memory_bytes`, sorted by address.
pub fn ram_ranges(sections: &[Section], memory_bytes: u64) -> Result<Vec<RamRange>, MeasureError> {
    if memory_bytes == 0 || !memory_bytes.is_multiple_of(super::PAGE_SIZE) {
        return Err(err(format!("memory size {memory_bytes:#x} is not a positive multiple of 4 KiB")));
    }
    let below_4g = q35_below_4g(memory_bytes);
    let mut ranges = vec![RamRange { start: 0, length: below_4g, accepted: false }];
    if memory_bytes > below_4g {
        ranges.push(RamRange { start: FOUR_GIB, length: memory_bytes - below_4g, accepted: false });
    }
    for s in sections.iter().filter(|s| matches!(s.section_type, SectionType::TdHob | SectionType::TempMem)) {
        let (start, end) = (s.memory_address, s.memory_address + s.memory_data_size);
        // QEMU ignores a failed acceptance and writes a HOB that does not describe the
        // section; here it is an error: the section must lie in one unaccepted range.
        let i = ranges
            .iter()
            .position(|r| !r.accepted && r.start <= start && end <= r.start + r.length)
            .ok_or_else(|| {
                err(format!(
                    "{:?} section {start:#x}..{end:#x} is not inside the guest's RAM of {memory_bytes:#x} bytes (or overlaps another)",
                    s.section_type
                ))
            })?;
        let r = ranges[i];
        ranges[i] = RamRange { start, length: s.memory_data_size, accepted: true };
        if start > r.start {
            ranges.push(RamRange { start: r.start, length: start - r.start, accepted: false });
        }
        if end < r.start + r.length {
            ranges.push(RamRange { start: end, length: r.start + r.length - end, accepted: false });
        }
    }
    ranges.sort_by_key(|r| r.start);
    Ok(ranges)
}

/// The measured bytes of the TD HOB: PHIT and resource descriptors, without the end-of-list
/// HOB. Refused when it would not fit in the firmware's TD_HOB section (QEMU: "TD_HOB overrun").
pub fn td_hob(sections: &[Section], memory_bytes: u64) -> Result<Vec<u8>, MeasureError> {
    let hob_section = sections
        .iter()
        .find(|s| s.section_type == SectionType::TdHob)
        .ok_or_else(|| err("the firmware has no TD_HOB section".into()))?;
    let ranges = ram_ranges(sections, memory_bytes)?;
    let len = PHIT_LEN + RESOURCE_LEN * ranges.len();
    if (len + END_LEN) as u64 > hob_section.memory_data_size {
        return Err(err(format!(
            "{} bytes of HOBs do not fit in the {:#x}-byte TD_HOB section",
            len + END_LEN,
            hob_section.memory_data_size
        )));
    }
    let mut hob = Vec::with_capacity(len);
    hob.extend_from_slice(&HOB_TYPE_HANDOFF.to_le_bytes());
    hob.extend_from_slice(&(PHIT_LEN as u16).to_le_bytes());
    hob.extend_from_slice(&0u32.to_le_bytes());
    hob.extend_from_slice(&HANDOFF_TABLE_VERSION.to_le_bytes());
    hob.extend_from_slice(&0u32.to_le_bytes()); // boot mode: full configuration
    hob.extend_from_slice(&[0u8; 32]); // EfiMemoryTop/Bottom, EfiFreeMemoryTop/Bottom
    let end_of_list = hob_section.memory_address + (len + END_LEN) as u64;
    hob.extend_from_slice(&end_of_list.to_le_bytes());
    for r in &ranges {
        hob.extend_from_slice(&HOB_TYPE_RESOURCE_DESCRIPTOR.to_le_bytes());
        hob.extend_from_slice(&(RESOURCE_LEN as u16).to_le_bytes());
        hob.extend_from_slice(&0u32.to_le_bytes());
        hob.extend_from_slice(&[0u8; 16]); // owner
        let kind = if r.accepted { RESOURCE_SYSTEM_MEMORY } else { RESOURCE_MEMORY_UNACCEPTED };
        hob.extend_from_slice(&kind.to_le_bytes());
        hob.extend_from_slice(&RESOURCE_ATTRIBUTES.to_le_bytes());
        hob.extend_from_slice(&r.start.to_le_bytes());
        hob.extend_from_slice(&r.length.to_le_bytes());
    }
    debug_assert_eq!(hob.len(), len);
    Ok(hob)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn section(addr: u64, size: u64, ty: SectionType) -> Section {
        Section {
            data_offset: 0,
            raw_data_size: 0,
            memory_address: addr,
            memory_data_size: size,
            section_type: ty,
            mr_extend: false,
        }
    }

    /// Debian 12's OVMF.fd layout, the one dstack's `td_hob_witness_v1` test uses.
    fn bookworm_sections() -> Vec<Section> {
        use SectionType::*;
        vec![
            section(0x81_0000, 0x1_0000, TempMem),
            section(0x80_b000, 0x2000, TempMem),
            section(0x80_9000, 0x2000, TdHob),
            section(0x80_0000, 0x6000, TempMem),
        ]
    }

    /// dstack-mr's compact witness of the accepted ranges (`td_hob_witness_v1`, LEB128 pages:
    /// base page, TD_HOB page delta, count, then start delta and page count per range), rebuilt
    /// from our ranges. dstack's test vector for the layout above is `80100904000609020b021010`.
    #[test]
    fn accepted_ranges_match_dstack_witness() {
        let ranges = ram_ranges(&bookworm_sections(), 2 << 30).unwrap();
        let accepted: Vec<(u64, u64)> =
            ranges.iter().filter(|r| r.accepted).map(|r| (r.start / 4096, r.length / 4096)).collect();
        let base = accepted[0].0;
        let hob_page = 0x80_9000 / 4096;
        let mut w = Vec::new();
        let mut varuint = |mut v: u64| loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            w.push(if v == 0 { b } else { b | 0x80 });
            if v == 0 {
                break;
            }
        };
        varuint(base);
        varuint(hob_page - base);
        varuint(accepted.len() as u64);
        for (start, pages) in &accepted {
            varuint(start - base);
            varuint(*pages);
        }
        assert_eq!(hex::encode(w), "80100904000609020b021010");
    }

    #[test]
    fn hob_bytes_for_a_known_layout() {
        let hob = td_hob(&bookworm_sections(), 2 << 30).unwrap();
        // PHIT + 8 descriptors: [0,8M) U, 8M+24K A, hole U, HOB A, TempMem A, hole U,
        // TempMem A (64 KiB), rest of 2 GiB U.
        assert_eq!(hob.len(), 56 + 8 * 48);
        assert_eq!(&hob[0..8], &[1, 0, 56, 0, 0, 0, 0, 0]);
        assert_eq!(&hob[8..12], &9u32.to_le_bytes());
        assert_eq!(u64::from_le_bytes(hob[48..56].try_into().unwrap()), 0x80_9000 + 56 + 8 * 48 + 8);
        let expect = [
            (0u64, 0x80_0000u64, 7u32),
            (0x80_0000, 0x6000, 0),
            (0x80_6000, 0x3000, 7),
            (0x80_9000, 0x2000, 0),
            (0x80_b000, 0x2000, 0),
            (0x80_d000, 0x3000, 7),
            (0x81_0000, 0x1_0000, 0),
            (0x82_0000, 0x8000_0000 - 0x82_0000, 7),
        ];
        for (i, (start, len, kind)) in expect.into_iter().enumerate() {
            let d = &hob[56 + 48 * i..56 + 48 * (i + 1)];
            assert_eq!(&d[0..8], &[3, 0, 48, 0, 0, 0, 0, 0]);
            assert_eq!(&d[8..24], &[0; 16]);
            assert_eq!(u32::from_le_bytes(d[24..28].try_into().unwrap()), kind, "range {i}");
            assert_eq!(u32::from_le_bytes(d[28..32].try_into().unwrap()), 7);
            assert_eq!(u64::from_le_bytes(d[32..40].try_into().unwrap()), start, "range {i}");
            assert_eq!(u64::from_le_bytes(d[40..48].try_into().unwrap()), len, "range {i}");
        }
    }

    #[test]
    fn memory_above_the_q35_threshold_is_split_around_the_pci_hole() {
        let r = ram_ranges(&bookworm_sections(), 4 << 30).unwrap();
        assert_eq!(
            r[r.len() - 2],
            RamRange { start: 0x82_0000, length: 0x8000_0000 - 0x82_0000, accepted: false }
        );
        assert_eq!(r[r.len() - 1], RamRange { start: 1 << 32, length: 2 << 30, accepted: false });
        // Just below 2.75 GiB: one low range.
        let r = ram_ranges(&bookworm_sections(), 0xb000_0000 - 4096).unwrap();
        assert_eq!(r.last().unwrap().start + r.last().unwrap().length, 0xb000_0000 - 4096);
    }

    #[test]
    fn impossible_layouts_are_refused() {
        // Sections above the guest's RAM, and overlapping sections.
        assert!(td_hob(&bookworm_sections(), 0x80_0000).is_err());
        let mut s = bookworm_sections();
        s.push(section(0x80_9000, 0x1000, SectionType::TempMem));
        assert!(td_hob(&s, 2 << 30).is_err());
        assert!(td_hob(&bookworm_sections(), (2 << 30) + 1).is_err());
        assert!(td_hob(&bookworm_sections()[..2], 2 << 30).is_err(), "no TD_HOB section");
    }
}
