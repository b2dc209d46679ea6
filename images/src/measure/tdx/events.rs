//! Event digests of a TDX direct-kernel boot, the expected event lists per RTMR, their replay,
//! and the comparison of a logged event list with the expected one.
//!
//! An RTMR starts at 48 zero bytes and every event extends it: `RTMR = SHA-384(RTMR ‖ digest)`.
//! The digest of each event is the SHA-384 of the event's *hashed data*, which for most events
//! is not the event data stored in the log (see each constructor).

use aws_lc_rs::digest::{Context, SHA384, digest};

/// A SHA-384 value: an event digest or a register.
pub type Sha384 = [u8; 48];

/// EFI_GLOBAL_VARIABLE (SecureBoot, PK, KEK, BootOrder, Boot####).
pub const EFI_GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// EFI_IMAGE_SECURITY_DATABASE_GUID (db, dbx).
pub const EFI_IMAGE_SECURITY_DATABASE: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
/// The OVMF DXE firmware volume that holds UiApp (the FV name GUID of `DXEFV`).
const OVMF_DXE_FV: &str = "7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1";
/// MdeModulePkg UiApp's FILE_GUID.
const UIAPP_FILE: &str = "462caa21-7614-4503-836e-8ab6f4662331";

/// One event the firmware or the EFI stub is expected to extend into an RTMR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedEvent {
    /// The RTMR index, 0..=3 (in the CC event log the "MR index" is this plus one).
    pub register: u8,
    /// What the event is, for a person reading a mismatch.
    pub description: String,
    pub digest: Sha384,
}

impl ExpectedEvent {
    pub fn new(register: u8, description: impl Into<String>, digest: Sha384) -> Self {
        ExpectedEvent { register, description: description.into(), digest }
    }
}

pub fn sha384(data: &[u8]) -> Sha384 {
    let mut out = [0u8; 48];
    out.copy_from_slice(digest(&SHA384, data).as_ref());
    out
}

/// `SHA-384(register ‖ digest)`.
pub fn extend(register: &Sha384, event: &Sha384) -> Sha384 {
    let mut h = Context::new(&SHA384);
    h.update(register);
    h.update(event);
    let mut out = [0u8; 48];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// The register value after extending these digests, in order, into 48 zero bytes.
pub fn replay<'a>(digests: impl IntoIterator<Item = &'a Sha384>) -> Sha384 {
    digests.into_iter().fold([0u8; 48], |r, d| extend(&r, d))
}

/// The value of `register` after the expected events for it (others in the list are skipped).
pub fn replay_register(events: &[ExpectedEvent], register: u8) -> Sha384 {
    replay(events.iter().filter(|e| e.register == register).map(|e| &e.digest))
}

/// `EV_SEPARATOR`: the hashed data is the 4-byte value 0.
pub fn separator() -> Sha384 {
    sha384(&[0, 0, 0, 0])
}

/// `EV_EFI_ACTION`: the hashed data is the ASCII action string without terminator.
pub fn efi_action(action: &str) -> Sha384 {
    sha384(action.as_bytes())
}

/// A GUID in its binary (mixed-endian) form. The constants here are valid literals.
fn guid_bytes(text: &str) -> [u8; 16] {
    let hexits: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'-')
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => 0,
        })
        .collect();
    let mut b = [0u8; 16];
    for (i, pair) in hexits.chunks(2).enumerate().take(16) {
        b[i] = pair[0] << 4 | pair.get(1).copied().unwrap_or(0);
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// `EV_EFI_VARIABLE_DRIVER_CONFIG` (and `_BOOT` in TCG2's form): the hashed data is the
/// `UEFI_VARIABLE_DATA` structure: vendor GUID, u64 name length in characters, u64 data length,
/// the name in UTF-16LE without terminator, the data.
pub fn efi_variable(vendor_guid: &str, name: &str, data: &[u8]) -> Sha384 {
    let mut v = guid_bytes(vendor_guid).to_vec();
    v.extend_from_slice(&(name.encode_utf16().count() as u64).to_le_bytes());
    v.extend_from_slice(&(data.len() as u64).to_le_bytes());
    v.extend(utf16le(name));
    v.extend_from_slice(data);
    sha384(&v)
}

/// The `BootOrder` variable's data for these option numbers (u16 LE each).
pub fn boot_order_data(options: &[u16]) -> Vec<u8> {
    options.iter().flat_map(|o| o.to_le_bytes()).collect()
}

/// `Boot0000` as OVMF creates it for its UiApp ("Boot Manager Menu"): an `EFI_LOAD_OPTION` with
/// attributes ACTIVE | HIDDEN | CATEGORY_APP (0x109), the description `UiApp`, and the device
/// path FV(DXEFV)/FvFile(UiApp)/End.
pub fn uiapp_boot_option() -> Vec<u8> {
    let mut path = Vec::new();
    for (subtype, guid) in [(7u8, OVMF_DXE_FV), (6, UIAPP_FILE)] {
        path.extend_from_slice(&[4, subtype]); // media device path: PIWG FV / FV file
        path.extend_from_slice(&20u16.to_le_bytes());
        path.extend_from_slice(&guid_bytes(guid));
    }
    path.extend_from_slice(&[0x7f, 0xff, 4, 0]); // end of entire device path
    let mut o = 0x109u32.to_le_bytes().to_vec();
    o.extend_from_slice(&(path.len() as u16).to_le_bytes());
    o.extend(utf16le("UiApp\0"));
    o.extend(path);
    o
}

/// The load options OVMF gives the kernel's EFI stub (X86QemuLoadImageLib): the command line
/// widened to UTF-16LE, ` initrd=initrd` appended when QEMU has an initrd, and a UTF-16 NUL.
/// `None` when both are empty: OVMF then passes no load options and the stub measures none.
/// The command line must already have been checked to be printable ASCII.
pub fn load_options(cmdline: &str, has_initrd: bool) -> Option<Vec<u8>> {
    let suffix = if has_initrd { " initrd=initrd" } else { "" };
    if cmdline.is_empty() && suffix.is_empty() {
        return None;
    }
    let mut o = utf16le(cmdline);
    o.extend(utf16le(suffix));
    o.extend_from_slice(&[0, 0]);
    Some(o)
}

pub const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";
pub const EXIT_BOOT_SERVICES_INVOCATION: &str = "Exit Boot Services Invocation";
pub const EXIT_BOOT_SERVICES_SUCCEEDED: &str = "Exit Boot Services Returned with Success";

/// RTMR1 of a direct kernel boot: the kernel image as loaded (Authenticode of the patched
/// file), then at ReadyToBoot the boot-option action and the separator, then the two
/// ExitBootServices actions.
pub fn rtmr1_events(kernel_authenticode: Sha384) -> Vec<ExpectedEvent> {
    vec![
        ExpectedEvent::new(
            1,
            "kernel EFI image (Authenticode SHA-384 of the QEMU-patched bzImage)",
            kernel_authenticode,
        ),
        ExpectedEvent::new(
            1,
            format!("EV_EFI_ACTION \"{CALLING_EFI_APPLICATION}\""),
            efi_action(CALLING_EFI_APPLICATION),
        ),
        ExpectedEvent::new(1, "EV_SEPARATOR", separator()),
        ExpectedEvent::new(
            1,
            format!("EV_EFI_ACTION \"{EXIT_BOOT_SERVICES_INVOCATION}\""),
            efi_action(EXIT_BOOT_SERVICES_INVOCATION),
        ),
        ExpectedEvent::new(
            1,
            format!("EV_EFI_ACTION \"{EXIT_BOOT_SERVICES_SUCCEEDED}\""),
            efi_action(EXIT_BOOT_SERVICES_SUCCEEDED),
        ),
    ]
}

/// RTMR2 of a direct kernel boot (Linux EFI stub, CC measurement protocol): the load options
/// (when there are any), then the initrd (when there is one, loaded through the
/// LINUX_EFI_INITRD_MEDIA device path that OVMF installs).
pub fn rtmr2_events(cmdline: &str, initrd: Option<&[u8]>) -> Vec<ExpectedEvent> {
    let mut events = Vec::new();
    if let Some(options) = load_options(cmdline, initrd.is_some()) {
        events.push(ExpectedEvent::new(
            2,
            "EV_EVENT_TAG kernel load options (UTF-16LE command line)",
            sha384(&options),
        ));
    }
    if let Some(initrd) = initrd.filter(|i| !i.is_empty()) {
        events.push(ExpectedEvent::new(2, "EV_EVENT_TAG initrd", sha384(initrd)));
    }
    events
}

/// The digests of the three fw_cfg ACPI blobs OVMF measures into RTMR0. They are QEMU's output
/// for one QEMU build, machine type, vCPU count, memory size and device list; this machine
/// cannot produce them, so they are inputs (captured from a reference TD's event log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiDigests {
    /// SHA-384 of fw_cfg `etc/table-loader`.
    pub table_loader: Sha384,
    /// SHA-384 of fw_cfg `etc/acpi/rsdp`.
    pub rsdp: Sha384,
    /// SHA-384 of fw_cfg `etc/acpi/tables`.
    pub tables: Sha384,
}

/// RTMR0 of a direct kernel boot with OVMF edk2-stable202502 (the event layout of Debian
/// trixie's 2025.02 build; other edk2 versions differ, see `docs/measurements.md`), Secure
/// Boot off (no SecureBoot variable, empty PK/KEK/db/dbx).
pub fn rtmr0_events(td_hob: Sha384, cfv: Sha384, acpi: &AcpiDigests) -> Vec<ExpectedEvent> {
    let var = |guid, name: &str| {
        ExpectedEvent::new(
            0,
            format!("EV_EFI_VARIABLE_DRIVER_CONFIG {name} (empty)"),
            efi_variable(guid, name, &[]),
        )
    };
    vec![
        ExpectedEvent::new(0, "EV_PLATFORM_CONFIG_FLAGS TD HOB (QEMU's memory map)", td_hob),
        ExpectedEvent::new(0, "EV_PLATFORM_CONFIG_FLAGS configuration firmware volume (CFV)", cfv),
        var(EFI_GLOBAL_VARIABLE, "SecureBoot"),
        var(EFI_GLOBAL_VARIABLE, "PK"),
        var(EFI_GLOBAL_VARIABLE, "KEK"),
        var(EFI_IMAGE_SECURITY_DATABASE, "db"),
        var(EFI_IMAGE_SECURITY_DATABASE, "dbx"),
        ExpectedEvent::new(0, "EV_SEPARATOR", separator()),
        ExpectedEvent::new(0, "EV_PLATFORM_CONFIG_FLAGS fw_cfg etc/table-loader (input)", acpi.table_loader),
        ExpectedEvent::new(0, "EV_PLATFORM_CONFIG_FLAGS fw_cfg etc/acpi/rsdp (input)", acpi.rsdp),
        ExpectedEvent::new(0, "EV_PLATFORM_CONFIG_FLAGS fw_cfg etc/acpi/tables (input)", acpi.tables),
        ExpectedEvent::new(0, "EV_EFI_VARIABLE_BOOT BootOrder = [0000]", sha384(&boot_order_data(&[0]))),
        ExpectedEvent::new(0, "EV_EFI_VARIABLE_BOOT Boot0000 (UiApp)", sha384(&uiapp_boot_option())),
    ]
}

/// Where a logged event list first departs from the expected one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMismatch {
    pub register: u8,
    /// Position among the events of that register (0-based).
    pub position: usize,
    /// The event expected there; `None` when the log has more events than expected.
    pub expected: Option<ExpectedEvent>,
    /// The digest logged there; `None` when the log ends early.
    pub logged: Option<Sha384>,
}

impl std::fmt::Display for EventMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (r, p) = (self.register, self.position);
        match (&self.expected, &self.logged) {
            (Some(e), Some(l)) => write!(
                f,
                "RTMR{r} event {p} ({}): expected {}, the log has {}",
                e.description,
                hex::encode(e.digest),
                hex::encode(l)
            ),
            (Some(e), None) => {
                write!(f, "RTMR{r} event {p} ({}) is missing from the log", e.description)
            }
            (None, Some(l)) => {
                write!(f, "RTMR{r} event {p}: the log has an unexpected event {}", hex::encode(l))
            }
            (None, None) => write!(f, "RTMR{r} event {p}: no difference"),
        }
    }
}

/// Compares the events of a TD's event log, `(RTMR index, digest)` in log order, with the
/// expected events of RTMR0..=2 and names the first that differs: the first logged event (in
/// log order) that is not the one expected at its position for its register, else the first
/// expected event the log lacks (lowest register first). RTMR3 belongs to the guest and is
/// not compared. `None` when they agree.
pub fn first_difference(logged: &[(u8, Sha384)], expected: &[ExpectedEvent]) -> Option<EventMismatch> {
    let per_register = |r: u8| expected.iter().filter(|e| e.register == r).collect::<Vec<_>>();
    let expected_by: [Vec<&ExpectedEvent>; 3] = [per_register(0), per_register(1), per_register(2)];
    let mut seen = [0usize; 3];
    for &(register, digest) in logged {
        let Some(list) = expected_by.get(register as usize) else {
            continue;
        };
        let position = seen[register as usize];
        seen[register as usize] += 1;
        match list.get(position) {
            Some(e) if e.digest == digest => {}
            e => {
                return Some(EventMismatch {
                    register,
                    position,
                    expected: e.map(|e| (*e).clone()),
                    logged: Some(digest),
                });
            }
        }
    }
    (0u8..3).find_map(|r| {
        let position = seen[r as usize];
        expected_by[r as usize].get(position).map(|e| EventMismatch {
            register: r,
            position,
            expected: Some((*e).clone()),
            logged: None,
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn separator_and_actions() {
        assert_eq!(
            hex::encode(separator()),
            "394341b7182cd227c5c6b07ef8000cdfd86136c4292b8e576573ad7ed9ae41019f5818b4b971c9effc60e1ad9f1289f0"
        );
        assert_eq!(efi_action("abc"), sha384(b"abc"));
    }

    #[test]
    fn load_options_are_utf16le_with_a_nul() {
        let o = load_options("ab", true).unwrap();
        let mut expected = vec![b'a', 0, b'b', 0];
        for c in " initrd=initrd".bytes() {
            expected.extend_from_slice(&[c, 0]);
        }
        expected.extend_from_slice(&[0, 0]);
        assert_eq!(o, expected);
        assert_eq!(load_options("ab", false).unwrap(), [b'a', 0, b'b', 0, 0, 0]);
        // Only the initrd: OVMF still passes " initrd=initrd".
        assert_eq!(load_options("", true).unwrap().len(), 14 * 2 + 2);
        assert_eq!(load_options("", false), None);
        // dstack-mr's golden vector (src/tdx.rs SAMPLE_BASE_CMDLINE, with its initrd suffix).
        let cmdline = format!(
            "console=ttyS0 init=/init panic=1 dstack.rootfs_hash={} dstack.rootfs_size=4096",
            "1".repeat(64)
        );
        assert_eq!(
            hex::encode(sha384(&load_options(&cmdline, true).unwrap())),
            "bb4154e6e429e184bc63d544ae5720f868e5859b378b13bab69860e1fc65c09f1b67277bba010841fbe8bc3619e58d58"
        );
    }

    #[test]
    fn rtmr2_without_initrd_or_command_line() {
        assert_eq!(rtmr2_events("", None), []);
        assert_eq!(replay_register(&rtmr2_events("", None), 2), [0u8; 48]);
        assert_eq!(rtmr2_events("quiet", None).len(), 1);
        assert_eq!(rtmr2_events("quiet", Some(b"x")).len(), 2);
    }

    #[test]
    fn boot_variables_match_the_published_digests() {
        // dstack-mr's fixed Boot0000 digest for pre-edk2-stable202505 OVMF (tdvf.rs).
        assert_eq!(
            hex::encode(sha384(&uiapp_boot_option())),
            "23ada07f5261f12f34a0bd8e46760962d6b4d576a416f1fea1c64bc656b1d28eacf7047ae6e967c58fd2a98bfa74c298"
        );
        assert_eq!(uiapp_boot_option()[..6], [0x09, 0x01, 0, 0, 44, 0]);
        assert_eq!(uiapp_boot_option()[uiapp_boot_option().len() - 4..], [0x7f, 0xff, 4, 0]);
    }

    #[test]
    fn guids_are_mixed_endian() {
        assert_eq!(
            guid_bytes(EFI_GLOBAL_VARIABLE),
            [0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c]
        );
    }

    #[test]
    fn replay_folds_extends() {
        let (a, b) = (sha384(b"a"), sha384(b"b"));
        assert_eq!(replay([&a, &b]), extend(&extend(&[0; 48], &a), &b));
        assert_eq!(replay([]), [0; 48]);
    }

    #[test]
    fn first_difference_names_the_event() {
        let expected = [rtmr1_events(sha384(b"kernel")), rtmr2_events("quiet", Some(b"initrd"))].concat();
        let mut log: Vec<(u8, Sha384)> = expected.iter().map(|e| (e.register, e.digest)).collect();
        // Interleaved with guest RTMR3 events, which are ignored.
        log.insert(2, (3, [7; 48]));
        assert_eq!(first_difference(&log, &expected), None);

        let mut changed = log.clone();
        let initrd_at = changed.len() - 1;
        changed[initrd_at].1[0] ^= 1;
        let m = first_difference(&changed, &expected).unwrap();
        assert_eq!((m.register, m.position), (2, 1));
        assert!(m.to_string().contains("initrd"), "{m}");

        let m = first_difference(&log[..log.len() - 1], &expected).unwrap();
        assert_eq!((m.register, m.position, m.logged), (2, 1, None));
        assert!(m.to_string().contains("missing"), "{m}");

        let mut extra = log.clone();
        extra.push((1, [9; 48]));
        let m = first_difference(&extra, &expected).unwrap();
        assert_eq!((m.register, m.position, m.expected), (1, 5, None));

        // The first difference in log order wins over later ones.
        let mut two = log.clone();
        two[0].1[0] ^= 1;
        two[initrd_at].1[0] ^= 1;
        let m = first_difference(&two, &expected).unwrap();
        assert_eq!((m.register, m.position), (1, 0));
        assert!(m.to_string().contains("Authenticode"), "{m}");
    }
}
