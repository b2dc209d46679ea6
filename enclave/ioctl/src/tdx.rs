//! `/dev/tdx_guest` (Linux `drivers/virt/coco/tdx-guest`): `TDX_CMD_GET_REPORT0`, the TD's
//! TDREPORT_STRUCT for 64 bytes of REPORTDATA (TDCALL `TDG.MR.REPORT`, subtype 0).
//!
//! The TDREPORT is MAC'd for this platform only; turning it into a quote is the host's Quote
//! Generation Service's job (the caller's business, not this crate's).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use rustix::ioctl::{Opcode, Updater, ioctl, opcode};

/// Where the kernel exposes the TDX guest device.
pub const DEVICE: &str = "/dev/tdx_guest";
/// `TDX_REPORTDATA_LEN`.
pub const REPORT_DATA_LEN: usize = 64;
/// `TDX_REPORT_LEN`: TDREPORT_STRUCT.
pub const TDREPORT_LEN: usize = 1024;

/// `struct tdx_report_req` (uapi `tdx-guest.h`):
/// `{ __u8 reportdata[64]; __u8 tdreport[1024]; }` — 1088 bytes, no padding.
#[repr(C)]
#[derive(Debug)]
pub struct TdxReportReq {
    /// In: REPORTDATA.
    pub reportdata: [u8; REPORT_DATA_LEN],
    /// Out: TDREPORT_STRUCT.
    pub tdreport: [u8; TDREPORT_LEN],
}

const _: () = assert!(size_of::<TdxReportReq>() == 1088);
const _: () = assert!(align_of::<TdxReportReq>() == 1);
const _: () = assert!(core::mem::offset_of!(TdxReportReq, tdreport) == 64);

/// `TDX_CMD_GET_REPORT0 = _IOWR('T', 1, struct tdx_report_req)`.
pub const TDX_CMD_GET_REPORT0: Opcode = opcode::read_write::<TdxReportReq>(b'T', 1);

/// An open `/dev/tdx_guest`.
#[derive(Debug)]
pub struct TdxGuest {
    file: File,
}

impl TdxGuest {
    /// Opens [`DEVICE`]. `NotFound` means no TDX guest driver (not a TD, or an old kernel).
    pub fn open() -> io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(DEVICE)?;
        Ok(TdxGuest { file })
    }

    /// A handle on any file, for exercising the ioctl path in tests (`/dev/null` answers
    /// `ENOTTY`). Never in production code: see the crate documentation on soundness.
    #[cfg(test)]
    fn from_file_for_tests(file: File) -> Self {
        TdxGuest { file }
    }

    /// `TDX_CMD_GET_REPORT0`: the TDREPORT binding `report_data`.
    pub fn get_report0(&self, report_data: &[u8; REPORT_DATA_LEN]) -> io::Result<[u8; TDREPORT_LEN]> {
        let mut req = Box::new(TdxReportReq { reportdata: *report_data, tdreport: [0; TDREPORT_LEN] });
        // SAFETY: TDX_CMD_GET_REPORT0 is the driver's _IOWR('T', 1, struct tdx_report_req) and
        // `TdxReportReq` has that struct's exact layout (1088 bytes of byte arrays, asserted above).
        let request = unsafe { Updater::<TDX_CMD_GET_REPORT0, TdxReportReq>::new(&mut *req) };
        // SAFETY: `self.file` was opened from `/dev/tdx_guest` (`open`), the driver that defines
        // this opcode. The value is fully initialized; the driver reads `reportdata` and writes
        // `tdreport`, both inside the boxed value, which `request` borrows exclusively for the
        // duration of the call.
        unsafe { ioctl(self.file.as_fd(), request) }?;
        Ok(req.tdreport)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The kernel's number, computed by hand from `_IOWR(type, nr, size)`:
    /// dir (read|write = 3) << 30 | size << 16 | type << 8 | nr.
    #[test]
    fn ioctl_number_is_the_kernels() {
        let by_hand: u32 = (3 << 30) | (1088 << 16) | ((b'T' as u32) << 8) | 1;
        assert_eq!(by_hand, 0xC440_5401);
        assert_eq!(u64::from(TDX_CMD_GET_REPORT0), u64::from(by_hand));
    }

    #[test]
    fn request_layout_is_the_kernels() {
        assert_eq!(size_of::<TdxReportReq>(), 64 + 1024);
        assert_eq!(core::mem::offset_of!(TdxReportReq, reportdata), 0);
        assert_eq!(core::mem::offset_of!(TdxReportReq, tdreport), 64);
    }

    /// The ioctl path runs end to end and surfaces the kernel's refusal as an error
    /// (`/dev/null` has no ioctls: `ENOTTY`).
    #[test]
    fn a_foreign_device_refuses_the_request() {
        let dev = TdxGuest::from_file_for_tests(File::open("/dev/null").unwrap());
        let err = dev.get_report0(&[7; 64]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(rustix::io::Errno::NOTTY.raw_os_error()));
    }

    #[test]
    fn opening_without_the_driver_fails_cleanly() {
        if std::path::Path::new(DEVICE).exists() {
            return; // a real TD: nothing to check here
        }
        assert_eq!(TdxGuest::open().unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
