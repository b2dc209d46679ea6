//! `/dev/sev-guest` (Linux `drivers/virt/coco/sev-guest`): `SNP_GET_REPORT` and
//! `SNP_GET_EXT_REPORT`, the SNP attestation report (MSG_REPORT_RSP, SEV-SNP firmware ABI) for 64
//! bytes of REPORT_DATA, with the host's certificate table for the extended form.
//!
//! Why not the `sev` crate's `Firmware::get_ext_report`: it walks the host-supplied certificate
//! table through raw pointers (`CertTableEntry::parse_table`, sev 8.0) without checking any
//! entry's offset or length against the buffer, so a malicious host could make the guest copy
//! arbitrary guest memory into the "certificates" that are then sent out as evidence. Here the
//! table comes back as a plain, bounded byte buffer and is parsed by safe code (the enclave's
//! `cert_table`, shared with configfs-tsm's `auxblob`).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use rustix::ioctl::{Opcode, Updater, ioctl, opcode};

/// Where the kernel exposes the SEV guest device.
pub const DEVICE: &str = "/dev/sev-guest";
/// `struct snp_report_resp`: MSG_REPORT_RSP padded to 4000 bytes.
pub const REPORT_RESP_LEN: usize = 4000;
/// The message version of the request (`snp_guest_request_ioctl.msg_version`; 0 is refused).
pub const MSG_VERSION: u8 = 1;
/// Certificate buffers are whole pages (x86-64: 4 KiB)...
pub const PAGE_SIZE: usize = 4096;
/// ...and at most `SEV_FW_BLOB_MAX_SIZE` (16 KiB) long; the kernel refuses larger ones.
pub const MAX_CERTS_LEN: usize = 0x4000;
/// `SNP_GUEST_VMM_ERR_INVALID_LEN`: the host's certificate table does not fit the buffer.
pub const VMM_ERR_INVALID_LEN: u32 = 1;
/// `SNP_GUEST_VMM_ERR_BUSY`: the host kept the request throttled.
pub const VMM_ERR_BUSY: u32 = 2;

/// `struct snp_report_req`: `{ __u8 user_data[64]; __u32 vmpl; __u8 rsvd[28]; }` — 96 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SnpReportReq {
    pub user_data: [u8; 64],
    pub vmpl: u32,
    /// Must be zero.
    rsvd: [u8; 28],
}

/// `struct snp_report_resp`: `{ __u8 data[4000]; }`.
#[repr(C)]
#[derive(Debug)]
pub struct SnpReportResp {
    pub data: [u8; REPORT_RESP_LEN],
}

/// `struct snp_ext_report_req`:
/// `{ struct snp_report_req data; __u64 certs_address; __u32 certs_len; }` — 112 bytes with the
/// tail padding that the C compiler adds after `certs_len`, spelled out here.
#[repr(C)]
#[derive(Debug)]
pub struct SnpExtReportReq {
    pub data: SnpReportReq,
    pub certs_address: u64,
    pub certs_len: u32,
    pad: [u8; 4],
}

/// `struct snp_guest_request_ioctl`:
/// `{ __u8 msg_version; __u64 req_data; __u64 resp_data; union { __u64 exitinfo2; struct {
/// __u32 fw_error; __u32 vmm_error; }; }; }` — 32 bytes (7 padding bytes after `msg_version`,
/// spelled out here).
#[repr(C)]
#[derive(Debug)]
pub struct SnpGuestRequestIoctl {
    pub msg_version: u8,
    pad: [u8; 7],
    pub req_data: u64,
    pub resp_data: u64,
    /// Low 32 bits: the firmware's error; high 32 bits: the VMM's.
    pub exitinfo2: u64,
}

const _: () = assert!(size_of::<SnpReportReq>() == 96);
const _: () = assert!(size_of::<SnpReportResp>() == 4000);
const _: () = assert!(size_of::<SnpExtReportReq>() == 112);
const _: () = assert!(core::mem::offset_of!(SnpExtReportReq, certs_address) == 96);
const _: () = assert!(core::mem::offset_of!(SnpExtReportReq, certs_len) == 104);
const _: () = assert!(size_of::<SnpGuestRequestIoctl>() == 32);
const _: () = assert!(core::mem::offset_of!(SnpGuestRequestIoctl, req_data) == 8);
const _: () = assert!(core::mem::offset_of!(SnpGuestRequestIoctl, exitinfo2) == 24);

/// `SNP_GET_REPORT = _IOWR('S', 0x0, struct snp_guest_request_ioctl)`.
pub const SNP_GET_REPORT: Opcode = opcode::read_write::<SnpGuestRequestIoctl>(b'S', 0x0);
/// `SNP_GET_EXT_REPORT = _IOWR('S', 0x2, struct snp_guest_request_ioctl)`.
pub const SNP_GET_EXT_REPORT: Opcode = opcode::read_write::<SnpGuestRequestIoctl>(b'S', 0x2);

impl SnpReportReq {
    pub fn new(user_data: &[u8; 64], vmpl: u32) -> Self {
        SnpReportReq { user_data: *user_data, vmpl, rsvd: [0; 28] }
    }
}

/// A guest request the kernel (or, through it, the firmware or the host) refused.
#[derive(Debug)]
pub struct GuestRequestError {
    /// What the ioctl returned.
    pub os: io::Error,
    /// The secure processor's status (0: none).
    pub fw_error: u32,
    /// The hypervisor's status (0: none; [`VMM_ERR_INVALID_LEN`], [`VMM_ERR_BUSY`]).
    pub vmm_error: u32,
    /// With [`VMM_ERR_INVALID_LEN`]: the certificate buffer length the host asked for.
    pub certs_len_needed: Option<u32>,
}

impl std::fmt::Display for GuestRequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (firmware error {:#x}, VMM error {:#x})", self.os, self.fw_error, self.vmm_error)?;
        if let Some(n) = self.certs_len_needed {
            write!(f, "; the host's certificate table needs {n} bytes")?;
        }
        Ok(())
    }
}

impl std::error::Error for GuestRequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.os)
    }
}

impl GuestRequestError {
    fn plain(os: io::Error) -> Self {
        GuestRequestError { os, fw_error: 0, vmm_error: 0, certs_len_needed: None }
    }
}

/// An open `/dev/sev-guest`.
#[derive(Debug)]
pub struct SevGuest {
    file: File,
}

impl SevGuest {
    /// Opens [`DEVICE`]. `NotFound` means no SEV guest driver (not an SNP guest, or no module).
    pub fn open() -> io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(DEVICE)?;
        Ok(SevGuest { file })
    }

    /// A handle on any file, for exercising the ioctl path in tests (`/dev/null` answers
    /// `ENOTTY`). Never in production code: see the crate documentation on soundness.
    #[cfg(test)]
    fn from_file_for_tests(file: File) -> Self {
        SevGuest { file }
    }

    /// `SNP_GET_REPORT`: the raw 4000-byte MSG_REPORT_RSP for `report_data` at `vmpl`.
    pub fn get_report(
        &self,
        report_data: &[u8; 64],
        vmpl: u32,
    ) -> Result<Box<SnpReportResp>, GuestRequestError> {
        let mut req = Box::new(SnpReportReq::new(report_data, vmpl));
        let mut resp = Box::new(SnpReportResp { data: [0; REPORT_RESP_LEN] });
        let mut guest = SnpGuestRequestIoctl {
            msg_version: MSG_VERSION,
            pad: [0; 7],
            req_data: std::ptr::from_mut::<SnpReportReq>(&mut *req) as u64,
            resp_data: std::ptr::from_mut::<SnpReportResp>(&mut *resp) as u64,
            exitinfo2: 0,
        };
        // SAFETY: SNP_GET_REPORT is the driver's _IOWR('S', 0, struct snp_guest_request_ioctl)
        // and `SnpGuestRequestIoctl` has that struct's exact layout (asserted above).
        let request = unsafe { Updater::<SNP_GET_REPORT, SnpGuestRequestIoctl>::new(&mut guest) };
        // SAFETY: `self.file` was opened from `/dev/sev-guest` (`open`), the driver that defines
        // this opcode. `guest` is fully initialized and the driver writes back into it only. It
        // follows the two pointers in it: `req_data` to a live, initialized `SnpReportReq`
        // (96 bytes, read only), `resp_data` to a live `SnpReportResp` (4000 bytes, written
        // whole). Both boxes are borrowed for nothing else and outlive the call.
        let result = unsafe { ioctl(self.file.as_fd(), request) };
        finish(result, &guest, None)?;
        Ok(resp)
    }

    /// `SNP_GET_EXT_REPORT`: the raw MSG_REPORT_RSP for `report_data` at `vmpl`, and the host's
    /// certificate table written into `certs` (zeros when the host has none).
    ///
    /// `certs` must be a whole number of pages, at most [`MAX_CERTS_LEN`] (the kernel's rules;
    /// checked here first). When the host's table needs more, the error carries
    /// [`VMM_ERR_INVALID_LEN`] and the length it asked for.
    pub fn get_ext_report(
        &self,
        report_data: &[u8; 64],
        vmpl: u32,
        certs: &mut [u8],
    ) -> Result<Box<SnpReportResp>, GuestRequestError> {
        if certs.is_empty() || !certs.len().is_multiple_of(PAGE_SIZE) || certs.len() > MAX_CERTS_LEN {
            return Err(GuestRequestError::plain(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "certificate buffer of {} bytes: whole pages up to {MAX_CERTS_LEN} needed",
                    certs.len()
                ),
            )));
        }
        let mut req = Box::new(SnpExtReportReq {
            data: SnpReportReq::new(report_data, vmpl),
            certs_address: certs.as_mut_ptr() as u64,
            certs_len: certs.len() as u32, // ≤ MAX_CERTS_LEN, checked above
            pad: [0; 4],
        });
        let mut resp = Box::new(SnpReportResp { data: [0; REPORT_RESP_LEN] });
        let mut guest = SnpGuestRequestIoctl {
            msg_version: MSG_VERSION,
            pad: [0; 7],
            req_data: std::ptr::from_mut::<SnpExtReportReq>(&mut *req) as u64,
            resp_data: std::ptr::from_mut::<SnpReportResp>(&mut *resp) as u64,
            exitinfo2: 0,
        };
        // SAFETY: SNP_GET_EXT_REPORT is the driver's _IOWR('S', 2, struct
        // snp_guest_request_ioctl) and `SnpGuestRequestIoctl` has that struct's exact layout.
        let request = unsafe { Updater::<SNP_GET_EXT_REPORT, SnpGuestRequestIoctl>::new(&mut guest) };
        // SAFETY: as in `get_report`, except that `req_data` points to a live, initialized
        // `SnpExtReportReq` (112 bytes; the driver reads it and, when the host's table does not
        // fit, writes the needed length back into it), whose `certs_address`/`certs_len` describe
        // `certs`: exclusively borrowed for the call, and `certs_len` is exactly `certs.len()`.
        // The driver writes `certs_len` bytes there on success and nothing otherwise.
        let result = unsafe { ioctl(self.file.as_fd(), request) };
        finish(result, &guest, Some(req.certs_len))?;
        Ok(resp)
    }
}

/// Maps the ioctl's result and the request's `exitinfo2` to ours.
fn finish(
    result: rustix::io::Result<()>,
    guest: &SnpGuestRequestIoctl,
    certs_len_after: Option<u32>,
) -> Result<(), GuestRequestError> {
    let fw_error = guest.exitinfo2 as u32;
    let vmm_error = (guest.exitinfo2 >> 32) as u32;
    match result {
        Ok(()) => Ok(()),
        Err(errno) => Err(GuestRequestError {
            os: errno.into(),
            fw_error,
            vmm_error,
            certs_len_needed: certs_len_after.filter(|_| vmm_error == VMM_ERR_INVALID_LEN),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use core::mem::offset_of;

    use super::*;

    /// `_IOWR(type, nr, size)` by hand: dir (read|write = 3) << 30 | size << 16 | type << 8 | nr.
    #[test]
    fn ioctl_numbers_are_the_kernels() {
        let iowr = |ty: u8, nr: u32, size: u32| (3u32 << 30) | (size << 16) | ((ty as u32) << 8) | nr;
        assert_eq!(iowr(b'S', 0, 32), 0xC020_5300);
        assert_eq!(iowr(b'S', 2, 32), 0xC020_5302);
        assert_eq!(u64::from(SNP_GET_REPORT), 0xC020_5300);
        assert_eq!(u64::from(SNP_GET_EXT_REPORT), 0xC020_5302);
    }

    #[test]
    fn request_layouts_are_the_kernels() {
        assert_eq!(size_of::<SnpReportReq>(), 96);
        assert_eq!(offset_of!(SnpReportReq, user_data), 0);
        assert_eq!(offset_of!(SnpReportReq, vmpl), 64);
        assert_eq!(offset_of!(SnpReportReq, rsvd), 68);

        assert_eq!(size_of::<SnpExtReportReq>(), 112);
        assert_eq!(offset_of!(SnpExtReportReq, data), 0);
        assert_eq!(offset_of!(SnpExtReportReq, certs_address), 96);
        assert_eq!(offset_of!(SnpExtReportReq, certs_len), 104);

        assert_eq!(size_of::<SnpGuestRequestIoctl>(), 32);
        assert_eq!(offset_of!(SnpGuestRequestIoctl, msg_version), 0);
        assert_eq!(offset_of!(SnpGuestRequestIoctl, req_data), 8);
        assert_eq!(offset_of!(SnpGuestRequestIoctl, resp_data), 16);
        assert_eq!(offset_of!(SnpGuestRequestIoctl, exitinfo2), 24);

        assert_eq!(size_of::<SnpReportResp>(), 4000);
    }

    #[test]
    fn exitinfo2_splits_into_firmware_and_vmm_errors() {
        let guest = SnpGuestRequestIoctl {
            msg_version: 1,
            pad: [0; 7],
            req_data: 0,
            resp_data: 0,
            exitinfo2: (u64::from(VMM_ERR_INVALID_LEN) << 32) | 0x16,
        };
        let err = finish(Err(rustix::io::Errno::IO), &guest, Some(8192)).unwrap_err();
        assert_eq!((err.fw_error, err.vmm_error, err.certs_len_needed), (0x16, 1, Some(8192)));
        let busy = SnpGuestRequestIoctl { exitinfo2: u64::from(VMM_ERR_BUSY) << 32, ..guest };
        let err = finish(Err(rustix::io::Errno::AGAIN), &busy, Some(4096)).unwrap_err();
        assert_eq!(
            (err.vmm_error, err.certs_len_needed),
            (VMM_ERR_BUSY, None),
            "length only with INVALID_LEN"
        );
        assert!(finish(Ok(()), &busy, None).is_ok(), "the ioctl's result decides");
    }

    /// The ioctl path runs end to end and surfaces the kernel's refusal (`/dev/null`: `ENOTTY`).
    #[test]
    fn a_foreign_device_refuses_the_requests() {
        let dev = SevGuest::from_file_for_tests(File::open("/dev/null").unwrap());
        let notty = Some(rustix::io::Errno::NOTTY.raw_os_error());
        assert_eq!(dev.get_report(&[1; 64], 0).unwrap_err().os.raw_os_error(), notty);
        let mut certs = vec![0u8; MAX_CERTS_LEN];
        let err = dev.get_ext_report(&[1; 64], 0, &mut certs).unwrap_err();
        assert_eq!(err.os.raw_os_error(), notty);
        assert!(certs.iter().all(|b| *b == 0));
    }

    #[test]
    fn certificate_buffers_follow_the_kernels_rules() {
        let dev = SevGuest::from_file_for_tests(File::open("/dev/null").unwrap());
        for len in [0, 100, PAGE_SIZE + 1, MAX_CERTS_LEN + PAGE_SIZE] {
            let mut certs = vec![0u8; len];
            let err = dev.get_ext_report(&[0; 64], 0, &mut certs).unwrap_err();
            assert_eq!(err.os.kind(), io::ErrorKind::InvalidInput, "{len} bytes");
        }
    }

    #[test]
    fn opening_without_the_driver_fails_cleanly() {
        if std::path::Path::new(DEVICE).exists() {
            return; // a real SNP guest: nothing to check here
        }
        assert_eq!(SevGuest::open().unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
