//! The TD's event log: the TCG2 crypto-agile log that TDVF (or td-shim) leaves in the log area of
//! the ACPI CCEL table (TCG PC Client Platform Firmware Profile §10.2, UEFI 2.10 §38.4).
//!
//! Layout: one `TCG_PCR_EVENT` in the SHA-1 format whose data is the `TCG_EfiSpecIDEvent`
//! ("Spec ID Event03": the digest algorithms of the log and their sizes), then
//! `TCG_PCR_EVENT2` records `{u32 mr_index, u32 event_type, u32 count, count × (u16 alg,
//! digest), u32 size, data}`, then padding to the end of the area (0xff from TDVF, zeros from
//! td-shim). In CCEL the index is the CC measurement register: 1–4 are RTMR0–3; 0 is MRTD, which
//! no event extends, so only `EV_NO_ACTION` may name it.
//!
//! The log is as untrusted as the host: it means something only once its replay
//! ([`EventLog::replay`]) equals the RTMRs of an authenticated quote. Event data is not covered
//! by the replay unless the digest is the hash of that data ([`Event::data_is_digested`]).
//!
//! The parser borrows its input and refuses anything but one exact reading: truncated records,
//! algorithms whose size the Spec ID event does not declare, digest counts beyond the declared
//! banks, registers outside 0–4, non-padding bytes after the last event.

use sha2::{Digest as _, Sha384};

/// TPM_ALG_SHA384: the bank the RTMRs use. Every log must declare it and every event carry it.
pub const ALG_SHA384: u16 = 0x000c;
/// Most digest algorithms a Spec ID event may declare (the TCG registry has eight hashes).
pub const MAX_ALGORITHMS: usize = 8;
/// Largest digest of any algorithm (SHA-512, SHA3-512).
pub const MAX_DIGEST_LEN: usize = 64;
/// Most events parsed. A direct-boot TDVF log has about 20, a grub boot about 40; the smallest
/// record is 66 bytes, so a 64 KiB envelope holds at most ~1000.
pub const MAX_EVENTS: usize = 4096;

/// Event types named in the TCG PC Client PFP (§10.4.1) that TD firmware and kernels log.
pub mod event_type {
    pub const EV_POST_CODE: u32 = 0x1;
    pub const EV_NO_ACTION: u32 = 0x3;
    pub const EV_SEPARATOR: u32 = 0x4;
    pub const EV_ACTION: u32 = 0x5;
    pub const EV_EVENT_TAG: u32 = 0x6;
    pub const EV_S_CRTM_VERSION: u32 = 0x8;
    pub const EV_PLATFORM_CONFIG_FLAGS: u32 = 0xa;
    pub const EV_COMPACT_HASH: u32 = 0xc;
    pub const EV_IPL: u32 = 0xd;
    pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
    pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
    pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
    pub const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
    pub const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;
    pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
    pub const EV_EFI_ACTION: u32 = 0x8000_0007;
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
    pub const EV_EFI_HANDOFF_TABLES: u32 = 0x8000_0009;
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000a;
    pub const EV_EFI_HANDOFF_TABLES2: u32 = 0x8000_000b;
    pub const EV_EFI_VARIABLE_BOOT2: u32 = 0x8000_000c;
    pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00e0;

    /// The PFP name of `t`, if it has one.
    pub fn name(t: u32) -> Option<&'static str> {
        Some(match t {
            EV_POST_CODE => "EV_POST_CODE",
            EV_NO_ACTION => "EV_NO_ACTION",
            EV_SEPARATOR => "EV_SEPARATOR",
            EV_ACTION => "EV_ACTION",
            EV_EVENT_TAG => "EV_EVENT_TAG",
            EV_S_CRTM_VERSION => "EV_S_CRTM_VERSION",
            EV_PLATFORM_CONFIG_FLAGS => "EV_PLATFORM_CONFIG_FLAGS",
            EV_COMPACT_HASH => "EV_COMPACT_HASH",
            EV_IPL => "EV_IPL",
            EV_EFI_VARIABLE_DRIVER_CONFIG => "EV_EFI_VARIABLE_DRIVER_CONFIG",
            EV_EFI_VARIABLE_BOOT => "EV_EFI_VARIABLE_BOOT",
            EV_EFI_BOOT_SERVICES_APPLICATION => "EV_EFI_BOOT_SERVICES_APPLICATION",
            EV_EFI_BOOT_SERVICES_DRIVER => "EV_EFI_BOOT_SERVICES_DRIVER",
            EV_EFI_RUNTIME_SERVICES_DRIVER => "EV_EFI_RUNTIME_SERVICES_DRIVER",
            EV_EFI_GPT_EVENT => "EV_EFI_GPT_EVENT",
            EV_EFI_ACTION => "EV_EFI_ACTION",
            EV_EFI_PLATFORM_FIRMWARE_BLOB => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
            EV_EFI_HANDOFF_TABLES => "EV_EFI_HANDOFF_TABLES",
            EV_EFI_PLATFORM_FIRMWARE_BLOB2 => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
            EV_EFI_HANDOFF_TABLES2 => "EV_EFI_HANDOFF_TABLES2",
            EV_EFI_VARIABLE_BOOT2 => "EV_EFI_VARIABLE_BOOT2",
            EV_EFI_VARIABLE_AUTHORITY => "EV_EFI_VARIABLE_AUTHORITY",
            _ => return None,
        })
    }
}

/// Why an event log does not parse. Offsets are from the start of the log area.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    #[error("event log: {what} at offset {offset:#x} runs past the end of the log")]
    Truncated { what: &'static str, offset: usize },
    #[error("event log: the first event is not a valid Spec ID event: {reason}")]
    SpecId { reason: &'static str },
    #[error("event log: the Spec ID event declares {count} algorithms (1 to {MAX_ALGORITHMS} allowed)")]
    AlgorithmCount { count: u32 },
    #[error(
        "event log: the Spec ID event declares algorithm {alg:#06x} with a {size}-byte digest, expected {expected}"
    )]
    AlgorithmSize { alg: u16, size: u16, expected: usize },
    #[error("event log: the Spec ID event declares algorithm {alg:#06x} twice")]
    DuplicateAlgorithm { alg: u16 },
    #[error("event log: the Spec ID event declares no SHA-384 bank (algorithm 0x000c)")]
    NoSha384,
    #[error(
        "event log: event {event} at offset {offset:#x} has {count} digests; the Spec ID event declares {declared} algorithms"
    )]
    DigestCount { event: usize, offset: usize, count: u32, declared: usize },
    #[error(
        "event log: event {event} at offset {offset:#x} uses algorithm {alg:#06x}, which the Spec ID event does not declare"
    )]
    UnknownAlgorithm { event: usize, offset: usize, alg: u16 },
    #[error("event log: event {event} at offset {offset:#x} carries algorithm {alg:#06x} twice")]
    DuplicateDigest { event: usize, offset: usize, alg: u16 },
    #[error("event log: event {event} at offset {offset:#x} has no SHA-384 digest")]
    MissingSha384 { event: usize, offset: usize },
    #[error(
        "event log: event {event} at offset {offset:#x} (type {event_type:#x}) names measurement register {index}; events extend 1-4 (RTMR0-3)"
    )]
    Register { event: usize, offset: usize, index: u32, event_type: u32 },
    #[error("event log: more than {MAX_EVENTS} events")]
    TooManyEvents,
    #[error("event log: bytes after the last event at offset {offset:#x} are neither an event nor padding")]
    Trailing { offset: usize },
}

/// The `TCG_EfiSpecIDEvent` that opens the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecId<'a> {
    /// The register index of the header record (0 from td-shim, 1 from TDVF; never extended).
    pub mr_index: u32,
    pub platform_class: u32,
    /// (major, minor): 2.0 for the crypto-agile format.
    pub spec_version: (u8, u8),
    pub spec_errata: u8,
    pub uintn_size: u8,
    /// (TPM_ALG_ID, digest size) as declared, in order.
    pub algorithms: Vec<(u16, u16)>,
    pub vendor_info: &'a [u8],
}

/// One digest of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventDigest<'a> {
    pub alg: u16,
    pub digest: &'a [u8],
}

/// One `TCG_PCR_EVENT2` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// Offset of the record in the log area.
    pub offset: usize,
    /// CC measurement register index: 1-4 = RTMR0-3 (0 only for `EV_NO_ACTION`).
    pub mr_index: u32,
    pub event_type: u32,
    pub digests: Vec<EventDigest<'a>>,
    pub data: &'a [u8],
    sha384: [u8; 48],
}

/// A parsed event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLog<'a> {
    pub spec_id: SpecId<'a>,
    pub events: Vec<Event<'a>>,
    bytes: &'a [u8],
}

/// The known digest size of a TCG algorithm (TCG Algorithm Registry).
fn known_size(alg: u16) -> Option<usize> {
    Some(match alg {
        0x0004 => 20,                   // SHA-1
        0x000b | 0x0012 | 0x0027 => 32, // SHA-256, SM3-256, SHA3-256
        0x000c | 0x0028 => 48,          // SHA-384, SHA3-384
        0x000d | 0x0029 => 64,          // SHA-512, SHA3-512
        _ => return None,
    })
}

/// A little-endian reader over the log area that names what ran out.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(EventLogError::Truncated { what, offset: self.at })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, EventLogError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, EventLogError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, EventLogError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";

impl<'a> EventLog<'a> {
    /// Parses a CCEL log area: the events, then optional padding of all-0xff or all-zero bytes
    /// to the end.
    pub fn parse(area: &'a [u8]) -> Result<Self, EventLogError> {
        let mut r = Reader { bytes: area, at: 0 };
        let spec_id = parse_spec_id(&mut r)?;
        let mut events = Vec::new();
        while r.at < area.len() {
            let rest = &area[r.at..];
            // The firmware initialises the area to 0xff (TDVF) or zeros (td-shim); a record
            // cannot start with mr_index and event_type both all-ones or both zero.
            if let Some(&pad) = rest.first().filter(|&&b| b == 0xff || b == 0)
                && rest.iter().take(8).all(|&b| b == pad)
            {
                if rest.iter().all(|&b| b == pad) {
                    break;
                }
                return Err(EventLogError::Trailing { offset: r.at });
            }
            if events.len() == MAX_EVENTS {
                return Err(EventLogError::TooManyEvents);
            }
            events.push(parse_event(&mut r, &spec_id, events.len())?);
        }
        let end = events.last().map_or(spec_id_end(&spec_id), |e| e.end());
        Ok(EventLog { spec_id, events, bytes: &area[..end] })
    }

    /// The log proper, without the padding that followed it: what an attester sends.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// RTMR0-3 as the log extends them: `RTMR = SHA-384(RTMR ‖ digest)` from 48 zero bytes, for
    /// each event in order except `EV_NO_ACTION` (which the firmware logs but never extends).
    pub fn replay(&self) -> [[u8; 48]; 4] {
        let mut rtmr = [[0u8; 48]; 4];
        for e in &self.events {
            if let Some(i) = e.rtmr() {
                let mut h = Sha384::new();
                h.update(rtmr[i]);
                h.update(e.sha384);
                rtmr[i] = h.finalize().into();
            }
        }
        rtmr
    }
}

/// Where the Spec ID record ends (the header record's size is 32 + its data).
fn spec_id_end(s: &SpecId<'_>) -> usize {
    32 + 28 + 4 * s.algorithms.len() + 1 + s.vendor_info.len()
}

fn parse_spec_id<'a>(r: &mut Reader<'a>) -> Result<SpecId<'a>, EventLogError> {
    let bad = |reason| EventLogError::SpecId { reason };
    let mr_index = r.u32("Spec ID event register index")?;
    if mr_index > 4 {
        return Err(bad("register index above 4"));
    }
    if r.u32("Spec ID event type")? != event_type::EV_NO_ACTION {
        return Err(bad("event type is not EV_NO_ACTION"));
    }
    if r.take(20, "Spec ID event SHA-1 digest")?.iter().any(|&b| b != 0) {
        return Err(bad("SHA-1 digest is not zero"));
    }
    let size = r.u32("Spec ID event size")? as usize;
    let data = r.take(size, "Spec ID event data")?;
    let mut d = Reader { bytes: data, at: 0 };
    if d.take(16, "Spec ID signature").map_err(|_| bad("shorter than its signature"))? != SPEC_ID_SIGNATURE {
        return Err(bad("signature is not \"Spec ID Event03\""));
    }
    let short = |_| bad("shorter than its fields");
    let platform_class = d.u32("").map_err(short)?;
    let minor = d.u8("").map_err(short)?;
    let major = d.u8("").map_err(short)?;
    let spec_errata = d.u8("").map_err(short)?;
    let uintn_size = d.u8("").map_err(short)?;
    if (major, minor) != (2, 0) {
        return Err(bad("spec version is not 2.0 (crypto-agile)"));
    }
    if !matches!(uintn_size, 1 | 2) {
        return Err(bad("uintnSize is neither 1 nor 2"));
    }
    let count = d.u32("").map_err(short)?;
    if count == 0 || count as usize > MAX_ALGORITHMS {
        return Err(EventLogError::AlgorithmCount { count });
    }
    let mut algorithms: Vec<(u16, u16)> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let alg = d.u16("").map_err(short)?;
        let size = d.u16("").map_err(short)?;
        if algorithms.iter().any(|&(a, _)| a == alg) {
            return Err(EventLogError::DuplicateAlgorithm { alg });
        }
        // A known algorithm has one size; an unknown one is taken at its declared size, within
        // the largest digest there is.
        let expected = known_size(alg).unwrap_or(size as usize);
        if size as usize != expected || size == 0 || size as usize > MAX_DIGEST_LEN {
            return Err(EventLogError::AlgorithmSize { alg, size, expected });
        }
        algorithms.push((alg, size));
    }
    if !algorithms.iter().any(|&(a, _)| a == ALG_SHA384) {
        return Err(EventLogError::NoSha384);
    }
    let vendor_len = d.u8("").map_err(short)? as usize;
    let vendor_info = d.take(vendor_len, "").map_err(short)?;
    if d.at != data.len() {
        return Err(bad("event size exceeds its fields"));
    }
    Ok(SpecId {
        mr_index,
        platform_class,
        spec_version: (major, minor),
        spec_errata,
        uintn_size,
        algorithms,
        vendor_info,
    })
}

fn parse_event<'a>(r: &mut Reader<'a>, spec: &SpecId<'_>, event: usize) -> Result<Event<'a>, EventLogError> {
    let offset = r.at;
    let mr_index = r.u32("event register index")?;
    let event_type = r.u32("event type")?;
    let extended = event_type != event_type::EV_NO_ACTION;
    if mr_index > 4 || (mr_index == 0 && extended) {
        return Err(EventLogError::Register { event, offset, index: mr_index, event_type });
    }
    let count = r.u32("event digest count")?;
    let declared = spec.algorithms.len();
    if count == 0 || count as usize > declared {
        return Err(EventLogError::DigestCount { event, offset, count, declared });
    }
    let mut digests: Vec<EventDigest<'a>> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let alg = r.u16("event digest algorithm")?;
        let size = spec
            .algorithms
            .iter()
            .find(|&&(a, _)| a == alg)
            .map(|&(_, s)| s as usize)
            .ok_or(EventLogError::UnknownAlgorithm { event, offset, alg })?;
        if digests.iter().any(|d| d.alg == alg) {
            return Err(EventLogError::DuplicateDigest { event, offset, alg });
        }
        digests.push(EventDigest { alg, digest: r.take(size, "event digest")? });
    }
    let sha384 = digests
        .iter()
        .find(|d| d.alg == ALG_SHA384)
        .and_then(|d| <[u8; 48]>::try_from(d.digest).ok())
        .ok_or(EventLogError::MissingSha384 { event, offset })?;
    let size = r.u32("event data size")? as usize;
    let data = r.take(size, "event data")?;
    Ok(Event { offset, mr_index, event_type, digests, data, sha384 })
}

impl<'a> Event<'a> {
    /// The SHA-384 digest the event extends its register with.
    pub fn sha384(&self) -> &[u8; 48] {
        &self.sha384
    }

    /// The RTMR (0-3) this event extends, or `None` for `EV_NO_ACTION`.
    pub fn rtmr(&self) -> Option<usize> {
        match (self.event_type, self.mr_index) {
            (event_type::EV_NO_ACTION, _) => None,
            (_, i @ 1..=4) => Some(i as usize - 1),
            _ => None, // refused by the parser
        }
    }

    /// Where the record ends in the log area.
    fn end(&self) -> usize {
        let digests: usize = self.digests.iter().map(|d| 2 + d.digest.len()).sum();
        self.offset + 12 + digests + 4 + self.data.len()
    }

    /// Whether the SHA-384 digest is the hash of the event data (for EFI boot variables, of the
    /// variable's data, as edk2 measures them), so that [`Event::description`] shows what was
    /// measured. Otherwise the digest is of something else (an image, a table, a HOB) and the
    /// data is the firmware's unverified label for it.
    pub fn data_is_digested(&self) -> bool {
        let h = |b: &[u8]| <[u8; 48]>::from(Sha384::digest(b));
        h(self.data) == self.sha384 || efi_variable(self.data).is_some_and(|(_, _, v)| h(v) == self.sha384)
    }

    /// A short printable description where the event data is text: the action strings, the
    /// separator, EFI variable names, firmware-blob and tag labels, the `EV_NO_ACTION`
    /// signature. `None` for binary data (device paths, images).
    pub fn description(&self) -> Option<String> {
        use event_type::*;
        let d = self.data;
        match self.event_type {
            EV_SEPARATOR => Some(match d {
                [0, 0, 0, 0] => "separator".to_owned(),
                [0xff, 0xff, 0xff, 0xff] => "separator (error)".to_owned(),
                _ => format!("separator {}", hex_short(d)),
            }),
            EV_EFI_VARIABLE_DRIVER_CONFIG
            | EV_EFI_VARIABLE_BOOT
            | EV_EFI_VARIABLE_BOOT2
            | EV_EFI_VARIABLE_AUTHORITY => efi_variable(d)
                .map(|(guid, name, value)| format!("{name} ({}, {} bytes)", guid_string(guid), value.len())),
            // UEFI_PLATFORM_FIRMWARE_BLOB2 / UEFI_HANDOFF_TABLE_POINTERS2: u8 length, description.
            EV_EFI_PLATFORM_FIRMWARE_BLOB2 | EV_EFI_HANDOFF_TABLES2 => {
                d.split_first().and_then(|(&n, rest)| rest.get(..n as usize)).and_then(text)
            }
            // TCG_PCClientTaggedEvent: u32 id, u32 size, data.
            EV_EVENT_TAG => {
                let size = d.get(4..8).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
                d.get(8..8usize.checked_add(size)?).and_then(text)
            }
            EV_NO_ACTION => d.get(..16).and_then(text),
            EV_EFI_BOOT_SERVICES_APPLICATION
            | EV_EFI_BOOT_SERVICES_DRIVER
            | EV_EFI_RUNTIME_SERVICES_DRIVER
            | EV_EFI_PLATFORM_FIRMWARE_BLOB
            | EV_EFI_HANDOFF_TABLES
            | EV_EFI_GPT_EVENT => None,
            _ => text(d),
        }
    }
}

/// Longest description returned, in characters.
const MAX_DESCRIPTION: usize = 96;

/// ASCII text up to the first NUL, if there is any and all of it is printable; cut at
/// [`MAX_DESCRIPTION`].
fn text(b: &[u8]) -> Option<String> {
    let s = b.split(|&c| c == 0).next()?;
    if s.is_empty() || !s.iter().all(|&c| (0x20..0x7f).contains(&c)) {
        return None;
    }
    let mut out: String = s.iter().take(MAX_DESCRIPTION).map(|&c| c as char).collect();
    if s.len() > MAX_DESCRIPTION {
        out.push('…');
    }
    Some(out)
}

fn hex_short(b: &[u8]) -> String {
    b.iter().take(16).map(|x| format!("{x:02x}")).collect()
}

/// `UEFI_VARIABLE_DATA`: GUID, u64 name length (characters), u64 data length, UTF-16LE name,
/// data. The name must be printable and the lengths exact.
fn efi_variable(d: &[u8]) -> Option<(&[u8], String, &[u8])> {
    let guid = d.get(..16)?;
    let u64_at = |o: usize| d.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let name_chars = usize::try_from(u64_at(16)?).ok()?;
    let data_len = usize::try_from(u64_at(24)?).ok()?;
    let name_end = 32usize.checked_add(name_chars.checked_mul(2)?)?;
    if name_end.checked_add(data_len)? != d.len() || name_chars > MAX_DESCRIPTION {
        return None;
    }
    let units = d[32..name_end].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    let name: String = char::decode_utf16(units).collect::<Result<_, _>>().ok()?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    Some((guid, name, &d[name_end..]))
}

/// An EFI GUID in its registry form (the first three fields little-endian).
fn guid_string(g: &[u8]) -> String {
    let h = |r: &[u8]| r.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let rev = |r: &[u8]| r.iter().rev().map(|x| format!("{x:02x}")).collect::<String>();
    format!("{}-{}-{}-{}-{}", rev(&g[0..4]), rev(&g[4..6]), rev(&g[6..8]), h(&g[8..10]), h(&g[10..16]))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use super::*;

    /// A Spec ID record declaring `algs`, as TDVF writes it (register index 1).
    pub(crate) fn spec_id(algs: &[(u16, u16)]) -> Vec<u8> {
        let mut data = SPEC_ID_SIGNATURE.to_vec();
        data.extend_from_slice(&0u32.to_le_bytes()); // platform class
        data.extend_from_slice(&[0, 2, 0, 2]); // minor, major, errata, uintn
        data.extend_from_slice(&(algs.len() as u32).to_le_bytes());
        for (a, s) in algs {
            data.extend_from_slice(&a.to_le_bytes());
            data.extend_from_slice(&s.to_le_bytes());
        }
        data.push(0); // vendor info size
        let mut out = 1u32.to_le_bytes().to_vec();
        out.extend_from_slice(&event_type::EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0; 20]);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    /// One `TCG_PCR_EVENT2` with a single SHA-384 digest.
    pub(crate) fn event(mr_index: u32, ty: u32, digest: [u8; 48], data: &[u8]) -> Vec<u8> {
        let mut out = mr_index.to_le_bytes().to_vec();
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&ALG_SHA384.to_le_bytes());
        out.extend_from_slice(&digest);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    fn sha384(b: &[u8]) -> [u8; 48] {
        Sha384::digest(b).into()
    }

    /// A small log: an action in RTMR1, a separator in RTMR0, a no-action at index 0.
    fn log() -> Vec<u8> {
        let mut l = spec_id(&[(ALG_SHA384, 48)]);
        l.extend(event(
            2,
            event_type::EV_EFI_ACTION,
            sha384(b"Calling EFI Application"),
            b"Calling EFI Application",
        ));
        l.extend(event(1, event_type::EV_SEPARATOR, sha384(&[0; 4]), &[0; 4]));
        l.extend(event(0, event_type::EV_NO_ACTION, [0; 48], b"StartupLocality\0\x03"));
        l
    }

    #[test]
    fn parses_replays_and_describes() {
        let bytes = log();
        let parsed = EventLog::parse(&bytes).unwrap();
        assert_eq!(parsed.events.len(), 3);
        assert_eq!(parsed.bytes(), &bytes[..]);
        let e = &parsed.events;
        assert_eq!((e[0].rtmr(), e[1].rtmr(), e[2].rtmr()), (Some(1), Some(0), None));
        assert_eq!(e[0].description().as_deref(), Some("Calling EFI Application"));
        assert_eq!(e[1].description().as_deref(), Some("separator"));
        assert_eq!(e[2].description().as_deref(), Some("StartupLocality"));
        assert!(e[0].data_is_digested() && e[1].data_is_digested() && !e[2].data_is_digested());
        let extend = |prev: [u8; 48], d: [u8; 48]| sha384(&[&prev[..], &d[..]].concat());
        let r = parsed.replay();
        assert_eq!(r[0], extend([0; 48], sha384(&[0; 4])));
        assert_eq!(r[1], extend([0; 48], sha384(b"Calling EFI Application")));
        assert_eq!((r[2], r[3]), ([0; 48], [0; 48]));
    }

    #[test]
    fn padding_ends_the_log_and_is_not_part_of_it() {
        for pad in [0xffu8, 0] {
            let mut bytes = log();
            let len = bytes.len();
            bytes.resize(len + 4096, pad);
            let parsed = EventLog::parse(&bytes).unwrap();
            assert_eq!((parsed.events.len(), parsed.bytes().len()), (3, len));
            // Padding shorter than a record header is still padding.
            assert_eq!(EventLog::parse(&bytes[..len + 3]).unwrap().events.len(), 3);
        }
    }

    #[test]
    fn bytes_after_the_padding_are_refused() {
        let mut bytes = log();
        let len = bytes.len();
        bytes.resize(len + 64, 0xff);
        bytes[len + 40] = 0;
        assert_eq!(EventLog::parse(&bytes), Err(EventLogError::Trailing { offset: len }));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = log();
        let events_at = spec_id(&[(ALG_SHA384, 48)]).len();
        for cut in 0..bytes.len() {
            let result = EventLog::parse(&bytes[..cut]);
            // The log may end after the Spec ID event or after any whole event; nowhere else.
            // Cut inside the first four bytes of the index-0 event, what is left is zeros, which
            // reads as td-shim's padding: the log then ends before that event.
            let last = events_at + 89 + 70;
            let boundary =
                [events_at, events_at + 89, last].contains(&cut) || (last..=last + 4).contains(&cut);
            assert_eq!(result.is_ok(), boundary, "cut at {cut}: {result:?}");
        }
    }

    #[test]
    fn the_spec_id_event_is_checked() {
        let good = spec_id(&[(ALG_SHA384, 48)]);
        let mut sig = good.clone();
        sig[32 + 14] = b'2'; // "Spec ID Event02"
        assert!(matches!(EventLog::parse(&sig), Err(EventLogError::SpecId { .. })));
        let mut ty = good.clone();
        ty[4] = 1;
        assert!(matches!(EventLog::parse(&ty), Err(EventLogError::SpecId { .. })));
        let mut sha1 = good.clone();
        sha1[10] = 1;
        assert!(matches!(EventLog::parse(&sha1), Err(EventLogError::SpecId { .. })));
        let mut version = good.clone();
        version[32 + 21] = 1; // major 1: the SHA-1 log format
        assert!(matches!(EventLog::parse(&version), Err(EventLogError::SpecId { .. })));
        // The event size claims one byte more than its fields.
        let mut size = good.clone();
        size[28] += 1;
        size.push(0);
        assert!(matches!(EventLog::parse(&size), Err(EventLogError::SpecId { .. })));
        assert_eq!(EventLog::parse(&spec_id(&[(0x000b, 32)])), Err(EventLogError::NoSha384));
        assert_eq!(EventLog::parse(&spec_id(&[])), Err(EventLogError::AlgorithmCount { count: 0 }));
        let nine: Vec<(u16, u16)> = (0x100..0x109).map(|a| (a, 32)).collect();
        assert_eq!(EventLog::parse(&spec_id(&nine)), Err(EventLogError::AlgorithmCount { count: 9 }));
        assert_eq!(
            EventLog::parse(&spec_id(&[(ALG_SHA384, 32)])),
            Err(EventLogError::AlgorithmSize { alg: ALG_SHA384, size: 32, expected: 48 })
        );
        assert_eq!(
            EventLog::parse(&spec_id(&[(ALG_SHA384, 48), (ALG_SHA384, 48)])),
            Err(EventLogError::DuplicateAlgorithm { alg: ALG_SHA384 })
        );
        assert!(matches!(
            EventLog::parse(&spec_id(&[(ALG_SHA384, 48), (0x4242, 65)])),
            Err(EventLogError::AlgorithmSize { alg: 0x4242, .. })
        ));
    }

    #[test]
    fn events_are_checked_against_the_declared_banks() {
        let head = spec_id(&[(ALG_SHA384, 48)]);
        let at = head.len();
        let with = |e: Vec<u8>| [head.clone(), e].concat();
        let sep = || event(1, event_type::EV_SEPARATOR, sha384(&[0; 4]), &[0; 4]);

        let mut count = sep();
        count[8] = 2; // two digests, one bank declared
        assert_eq!(
            EventLog::parse(&with(count)),
            Err(EventLogError::DigestCount { event: 0, offset: at, count: 2, declared: 1 })
        );
        let mut huge = sep();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(EventLog::parse(&with(huge)), Err(EventLogError::DigestCount { .. })));
        let mut zero = sep();
        zero[8] = 0;
        assert!(matches!(EventLog::parse(&with(zero)), Err(EventLogError::DigestCount { .. })));
        let mut alg = sep();
        alg[12] = 0x0b; // SHA-256: not declared, size unknown to the log
        assert_eq!(
            EventLog::parse(&with(alg)),
            Err(EventLogError::UnknownAlgorithm { event: 0, offset: at, alg: 0x000b })
        );
        let mut size = sep();
        let n = size.len();
        size[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            EventLog::parse(&with(size)),
            Err(EventLogError::Truncated { what: "event data", .. })
        ));
        for index in [0, 5, u32::MAX - 1] {
            let mut reg = sep();
            reg[..4].copy_from_slice(&index.to_le_bytes());
            assert!(
                matches!(EventLog::parse(&with(reg)), Err(EventLogError::Register { index: i, .. }) if i == index),
                "index {index}"
            );
        }

        // Two banks declared, only the SHA-256 one carried.
        let two = spec_id(&[(0x000b, 32), (ALG_SHA384, 48)]);
        let mut e = 1u32.to_le_bytes().to_vec();
        e.extend_from_slice(&event_type::EV_SEPARATOR.to_le_bytes());
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&0x000bu16.to_le_bytes());
        e.extend_from_slice(&[0; 32]);
        e.extend_from_slice(&4u32.to_le_bytes());
        e.extend_from_slice(&[0; 4]);
        assert!(matches!(
            EventLog::parse(&[two.clone(), e].concat()),
            Err(EventLogError::MissingSha384 { event: 0, .. })
        ));
        // Both banks, SHA-256 first: parsed, SHA-384 replayed.
        let mut both = 1u32.to_le_bytes().to_vec();
        both.extend_from_slice(&event_type::EV_SEPARATOR.to_le_bytes());
        both.extend_from_slice(&2u32.to_le_bytes());
        both.extend_from_slice(&0x000bu16.to_le_bytes());
        both.extend_from_slice(&[0; 32]);
        both.extend_from_slice(&ALG_SHA384.to_le_bytes());
        both.extend_from_slice(&sha384(&[0; 4]));
        both.extend_from_slice(&4u32.to_le_bytes());
        both.extend_from_slice(&[0; 4]);
        let bytes = [two, both].concat();
        let parsed = EventLog::parse(&bytes).unwrap();
        assert_eq!(parsed.events[0].sha384(), &sha384(&[0; 4]));
        assert_eq!(parsed.bytes().len(), bytes.len());
    }

    #[test]
    fn efi_variable_names_are_described() {
        let mut d = vec![
            0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
        ];
        d.extend_from_slice(&10u64.to_le_bytes());
        d.extend_from_slice(&1u64.to_le_bytes());
        d.extend("SecureBoot".encode_utf16().flat_map(u16::to_le_bytes));
        d.push(0);
        let bytes = [spec_id(&[(ALG_SHA384, 48)]), event(1, 0x8000_0001, sha384(&d), &d)].concat();
        let parsed = EventLog::parse(&bytes).unwrap();
        assert_eq!(
            parsed.events[0].description().as_deref(),
            Some("SecureBoot (8be4df61-93ca-11d2-aa0d-00e098032b8c, 1 bytes)")
        );
        assert!(parsed.events[0].data_is_digested());
    }

    proptest::proptest! {
        /// Whatever the bytes, parsing returns (no panic), and what parses gives back a prefix
        /// of its input that parses to the same events.
        #[test]
        fn parse_never_panics_and_bytes_reparse(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let bytes = [log(), tail].concat();
            if let Ok(parsed) = EventLog::parse(&bytes) {
                let again = EventLog::parse(parsed.bytes()).unwrap();
                proptest::prop_assert_eq!(again.events, parsed.events);
            }
        }
    }
}
