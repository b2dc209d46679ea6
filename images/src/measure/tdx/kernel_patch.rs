//! The kernel as the firmware sees it: QEMU's `-kernel` loader (`x86_load_linux` in
//! `hw/i386/x86-common.c`, formerly `x86.c`) patches the x86 boot protocol's setup header
//! before handing the kernel to the firmware through fw_cfg, and (except under SEV) the
//! patched header is what the firmware assembles, loads and measures. So the Authenticode
//! digest in RTMR1 is over a file that differs from the one on disk in these fields
//! (offsets from the start of the bzImage, boot protocol ≥ 2.02 with `LOADED_HIGH`, the only
//! kind accepted here):
//!
//! | offset | field | value |
//! |---|---|---|
//! | 0x1fa | `vid_mode` | only with `vga=` on the command line |
//! | 0x210 | `type_of_loader` | 0xb0 (QEMU) |
//! | 0x211 | `loadflags` | \|= `CAN_USE_HEAP` (0x80) |
//! | 0x218 | `ramdisk_image` | the initrd's address (only with an initrd) |
//! | 0x21c | `ramdisk_size` | the initrd's size (only with an initrd) |
//! | 0x224 | `heap_end_ptr` (u16) | `cmdline_addr - real_addr - 0x200` = 0xfe00 |
//! | 0x228 | `cmd_line_ptr` | 0x20000 |
//!
//! The initrd address depends on the guest memory layout: QEMU places the initrd at the top of
//! the RAM below 4 GiB, minus the ACPI data area ([`ACPI_DATA_SIZE`]), page-aligned down. On
//! the q35 machine (the one TDX uses), RAM below 4 GiB is all of it when the guest has less
//! than 0xb000_0000 bytes (2.75 GiB), and exactly 2 GiB otherwise (the rest is mapped above
//! 4 GiB). Hence a 2 GiB guest and every guest of 2.75 GiB or more get the same address.
//!
//! Whether the firmware measures this patched copy is a property of the firmware: edk2 builds
//! that read QEMU's `etc/boot/kernel` fw_cfg file (the unpatched kernel, QEMU ≥ 10.0) measure
//! the file as is. The firmware this module is checked against (Debian trixie's OVMF 2025.02)
//! does not read it; `docs/measurements.md` ("TDX") has the details.

/// Why a kernel (or its command line) cannot be booted the way this module models.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    #[error("not a bzImage: no \"HdrS\" setup header signature at 0x202 (QEMU would try multiboot or PVH)")]
    NotBzImage,
    /// Boot protocols before 2.02, or kernels not loaded high, use a command line address that
    /// depends on its length; nothing that measures through the EFI stub is that old.
    #[error("boot protocol {major}.{minor:02} without LOADED_HIGH/2.02 is not supported")]
    UnsupportedProtocol { major: u8, minor: u8 },
    /// The setup size the header declares is larger than the file (QEMU: "invalid kernel header").
    #[error(
        "the setup header declares {setup_size} bytes of setup code, more than the {kernel_len}-byte file"
    )]
    BadSetupSize { setup_size: usize, kernel_len: usize },
    #[error("initrd of {size} bytes does not fit below the initrd limit {max:#x} (QEMU refuses it)")]
    InitrdTooLarge { size: usize, max: u32 },
    /// QEMU passes the command line as a C string, and OVMF widens it to UTF-16 byte by byte.
    /// Only printable ASCII has one reading.
    #[error("the command line must be printable ASCII (found byte {byte:#04x} at {at})")]
    CommandLineNotAscii { byte: u8, at: usize },
    /// QEMU parses `vga=` itself; a value it refuses stops the launch.
    #[error("QEMU refuses the command line's vga= value")]
    BadVgaParameter,
    /// The memory size leaves no room for QEMU's ACPI data area below 4 GiB.
    #[error("guest memory of {memory_bytes:#x} bytes is too small for the ACPI data area")]
    MemoryTooSmall { memory_bytes: u64 },
}

/// QEMU's ACPI data area for the q35 machine types of QEMU ≥ 2.x (`acpi_data_size`,
/// 0x20000 + 0x8000), which the initrd is placed below.
pub const ACPI_DATA_SIZE: u32 = 0x28000;
/// RAM below 4 GiB on q35: all of it below this size, 2 GiB from this size on.
pub const Q35_LOWMEM_THRESHOLD: u64 = 0xb000_0000;
const Q35_LOWMEM_SPLIT: u64 = 0x8000_0000;

/// QEMU's addresses for a "high and recent" kernel (protocol ≥ 2.02, `LOADED_HIGH`).
const REAL_ADDR: u32 = 0x10000;
const CMDLINE_ADDR: u32 = 0x20000;
const TYPE_OF_LOADER_QEMU: u8 = 0xb0;
const LOADED_HIGH: u8 = 0x01;
const CAN_USE_HEAP: u8 = 0x80;
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 6;
/// The initrd limit QEMU assumes for protocols without `initrd_addr_max`.
const LEGACY_INITRD_MAX: u32 = 0x37ff_ffff;

/// The RAM QEMU's q35 machine maps below 4 GiB for a guest of `memory_bytes`.
pub fn q35_below_4g(memory_bytes: u64) -> u64 {
    if memory_bytes >= Q35_LOWMEM_THRESHOLD { Q35_LOWMEM_SPLIT } else { memory_bytes }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks a command line the way it will be passed (printable ASCII only).
pub fn check_cmdline(cmdline: &str) -> Result<(), KernelError> {
    match cmdline.bytes().enumerate().find(|&(_, b)| !(0x20..0x7f).contains(&b)) {
        Some((at, byte)) => Err(KernelError::CommandLineNotAscii { byte, at }),
        None => Ok(()),
    }
}

/// QEMU's reading of `vga=` (the first occurrence of the substring, as `strstr` finds it):
/// `normal`, `ext`, `ask`, or an unsigned integer in C notation (0x…, 0…, decimal) followed by
/// the end or a space. `None` without `vga=`.
fn vga_mode(cmdline: &str) -> Result<Option<u16>, KernelError> {
    let Some(at) = cmdline.find("vga=") else {
        return Ok(None);
    };
    let value = &cmdline[at + 4..];
    for (word, mode) in [("normal", 0xffff), ("ext", 0xfffe), ("ask", 0xfffd)] {
        if value.starts_with(word) {
            return Ok(Some(mode));
        }
    }
    let token = value.split(' ').next().unwrap_or_default();
    let parsed = if let Some(hex) = token.strip_prefix("0x").or_else(|| token.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16)
    } else if token.len() > 1 && token.starts_with('0') {
        u32::from_str_radix(&token[1..], 8)
    } else {
        token.parse::<u32>()
    };
    // QEMU stores the unsigned int with stw: the low 16 bits.
    parsed.map(|m| Some(m as u16)).map_err(|_| KernelError::BadVgaParameter)
}

/// The initrd address QEMU writes into `ramdisk_image` for this kernel, initrd size and guest
/// memory size.
pub fn initrd_address(kernel: &[u8], initrd_len: usize, memory_bytes: u64) -> Result<u32, KernelError> {
    let protocol = check_header(kernel)?;
    let mut initrd_max = if protocol >= 0x20c && u16_at(kernel, 0x236) & XLF_CAN_BE_LOADED_ABOVE_4G != 0 {
        u32::MAX
    } else if protocol >= 0x203 {
        u32_at(kernel, 0x22c)
    } else {
        LEGACY_INITRD_MAX
    };
    let below_4g = q35_below_4g(memory_bytes);
    let available = below_4g
        .checked_sub(ACPI_DATA_SIZE as u64)
        .filter(|&a| a > 0)
        .ok_or(KernelError::MemoryTooSmall { memory_bytes })?;
    // below_4g ≤ 2.75 GiB, so this fits in u32.
    let available = available as u32;
    if initrd_max >= available {
        initrd_max = available - 1;
    }
    if initrd_len >= initrd_max as usize {
        return Err(KernelError::InitrdTooLarge { size: initrd_len, max: initrd_max });
    }
    Ok((initrd_max - initrd_len as u32) & !0xfff)
}

/// Validates the setup header; returns the boot protocol version.
fn check_header(kernel: &[u8]) -> Result<u16, KernelError> {
    if kernel.len() < 0x260 || kernel[0x202..0x206] != *b"HdrS" {
        return Err(KernelError::NotBzImage);
    }
    let protocol = u16_at(kernel, 0x206);
    if protocol < 0x202 || kernel[0x211] & LOADED_HIGH == 0 {
        return Err(KernelError::UnsupportedProtocol { major: (protocol >> 8) as u8, minor: protocol as u8 });
    }
    let setup_sects = match kernel[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let setup_size = (setup_sects + 1) * 512;
    if setup_size > kernel.len() {
        return Err(KernelError::BadSetupSize { setup_size, kernel_len: kernel.len() });
    }
    Ok(protocol)
}

/// The kernel file with its setup header patched as QEMU patches it for a TDX (or plain) guest
/// with `memory_bytes` of RAM, this command line, and an initrd of `initrd_len` bytes if any.
pub fn qemu_patched_kernel(
    kernel: &[u8],
    cmdline: &str,
    initrd_len: Option<usize>,
    memory_bytes: u64,
) -> Result<Vec<u8>, KernelError> {
    check_header(kernel)?;
    check_cmdline(cmdline)?;
    let mut k = kernel.to_vec();
    k[0x228..0x22c].copy_from_slice(&CMDLINE_ADDR.to_le_bytes());
    if let Some(mode) = vga_mode(cmdline)? {
        k[0x1fa..0x1fc].copy_from_slice(&mode.to_le_bytes());
    }
    k[0x210] = TYPE_OF_LOADER_QEMU;
    k[0x211] |= CAN_USE_HEAP;
    let heap_end = (CMDLINE_ADDR - REAL_ADDR - 0x200) as u16;
    k[0x224..0x226].copy_from_slice(&heap_end.to_le_bytes());
    if let Some(len) = initrd_len {
        let addr = initrd_address(kernel, len, memory_bytes)?;
        k[0x218..0x21c].copy_from_slice(&addr.to_le_bytes());
        // initrd_address bounded len below a u32 limit.
        k[0x21c..0x220].copy_from_slice(&(len as u32).to_le_bytes());
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A bzImage-shaped header: protocol 2.15, LOADED_HIGH, CAN_BE_LOADED_ABOVE_4G.
    fn header() -> Vec<u8> {
        let mut k = vec![0u8; 0x4000];
        k[0x1f1] = 7;
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        k[0x211] = LOADED_HIGH;
        k[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        k[0x236..0x238].copy_from_slice(&0x7fu16.to_le_bytes());
        k
    }

    #[test]
    fn patched_fields_and_nothing_else() {
        let k = header();
        let p = qemu_patched_kernel(&k, "console=ttyS0", Some(0x10_0000), 1 << 30).unwrap();
        let changed: Vec<usize> = (0..k.len()).filter(|&i| k[i] != p[i]).collect();
        assert_eq!(p[0x210], 0xb0);
        assert_eq!(p[0x211], 0x81);
        assert_eq!(u16_at(&p, 0x224), 0xfe00);
        assert_eq!(u32_at(&p, 0x228), 0x20000);
        // 1 GiB: below_4g = 1 GiB, max = 0x3ffd7fff, minus 1 MiB, rounded down.
        assert_eq!(u32_at(&p, 0x218), 0x3fed_7000);
        assert_eq!(u32_at(&p, 0x21c), 0x10_0000);
        assert!(changed.iter().all(|&i| (0x210..0x22c).contains(&i)), "{changed:x?}");
        // Without an initrd the ramdisk fields keep the file's values.
        let p = qemu_patched_kernel(&k, "", None, 1 << 30).unwrap();
        assert_eq!(&p[0x218..0x220], &k[0x218..0x220]);
    }

    #[test]
    fn initrd_address_follows_the_q35_memory_split() {
        let k = header();
        let at = |mem: u64| initrd_address(&k, 0x10_0000 + 1234, mem).unwrap();
        assert_eq!(at(1 << 30), 0x3fed_7000);
        assert_eq!(at(0xa000_0000), 0x9fed_7000);
        // 2 GiB and everything from 2.75 GiB on: 2 GiB below 4 GiB.
        assert_eq!(at(0x8000_0000), 0x7fed_7000);
        assert_eq!(at(Q35_LOWMEM_THRESHOLD - 0x1000), 0xafed_6000);
        for mem in [Q35_LOWMEM_THRESHOLD, 4 << 30, 64 << 30] {
            assert_eq!(at(mem), 0x7fed_7000, "{mem:#x}");
        }
        // A kernel without CAN_BE_LOADED_ABOVE_4G: its own initrd_addr_max bounds the address.
        let mut low = header();
        low[0x236..0x238].copy_from_slice(&0u16.to_le_bytes());
        low[0x22c..0x230].copy_from_slice(&0x3fff_ffffu32.to_le_bytes());
        assert_eq!(initrd_address(&low, 0x1000, 4 << 30).unwrap(), 0x3fff_e000);
        assert!(matches!(initrd_address(&k, 0x7000_0000, 1 << 30), Err(KernelError::InitrdTooLarge { .. })));
        assert!(matches!(initrd_address(&k, 1, 0x28000), Err(KernelError::MemoryTooSmall { .. })));
    }

    #[test]
    fn vga_parameter_as_qemu_reads_it() {
        assert_eq!(vga_mode("console=ttyS0").unwrap(), None);
        assert_eq!(vga_mode("vga=normal").unwrap(), Some(0xffff));
        assert_eq!(vga_mode("a vga=ext b").unwrap(), Some(0xfffe));
        assert_eq!(vga_mode("vga=ask").unwrap(), Some(0xfffd));
        assert_eq!(vga_mode("vga=0x317 quiet").unwrap(), Some(0x317));
        assert_eq!(vga_mode("vga=0317").unwrap(), Some(0o317));
        assert_eq!(vga_mode("vga=791").unwrap(), Some(791));
        assert_eq!(vga_mode("xvga=1").unwrap(), Some(1), "strstr matches inside a word");
        assert_eq!(vga_mode("vga=12ab"), Err(KernelError::BadVgaParameter));
        let p = qemu_patched_kernel(&header(), "vga=0x317", None, 1 << 30).unwrap();
        assert_eq!(u16_at(&p, 0x1fa), 0x317);
    }

    #[test]
    fn refused_kernels_and_command_lines() {
        assert_eq!(qemu_patched_kernel(&[0; 0x100], "", None, 1 << 30), Err(KernelError::NotBzImage));
        let mut k = header();
        k[0x202] = b'X';
        assert_eq!(qemu_patched_kernel(&k, "", None, 1 << 30), Err(KernelError::NotBzImage));
        let mut k = header();
        k[0x206..0x208].copy_from_slice(&0x0201u16.to_le_bytes());
        assert!(matches!(
            qemu_patched_kernel(&k, "", None, 1 << 30),
            Err(KernelError::UnsupportedProtocol { .. })
        ));
        let mut k = header();
        k[0x211] = 0;
        assert!(matches!(
            qemu_patched_kernel(&k, "", None, 1 << 30),
            Err(KernelError::UnsupportedProtocol { .. })
        ));
        let mut k = header();
        k[0x1f1] = 200;
        assert!(matches!(qemu_patched_kernel(&k, "", None, 1 << 30), Err(KernelError::BadSetupSize { .. })));
        for bad in ["tab\there", "nul\0", "é"] {
            assert!(matches!(
                qemu_patched_kernel(&header(), bad, None, 1 << 30),
                Err(KernelError::CommandLineNotAscii { .. })
            ));
        }
    }
}
