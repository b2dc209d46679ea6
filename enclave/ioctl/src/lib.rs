//! The guest's attestation ioctls behind safe functions. This is the only crate in Nacre with
//! `unsafe` code (the workspace forbids it everywhere else), and it stays small on purpose:
//!
//! - [`sev`]: `/dev/sev-guest` — `SNP_GET_REPORT` and `SNP_GET_EXT_REPORT`
//!   (Linux `include/uapi/linux/sev-guest.h`).
//!
//! - [`malloc`]: glibc's mmap threshold, fixed at start so freed request memory is returned.
//!
//! TDX needs no ioctl: the TD gets its quote through configfs-tsm (a file interface).
//!
//! Each request struct mirrors the kernel's byte for byte: `#[repr(C)]`, padding spelled out as
//! explicit zeroed fields (so the kernel never reads uninitialized bytes), and its size, field
//! offsets and ioctl number checked at compile time and in tests against the uapi values.
//!
//! Soundness rests on one more thing than the struct layouts: an ioctl number means something
//! only to the driver that defined it, so the handles here open their device by its fixed path
//! and an ioctl is only ever issued on a file opened that way. No function takes an arbitrary
//! file descriptor.
//!
//! Everything these calls return is untrusted (the host can shape the SNP certificate table and
//! sees every request): this crate only moves bytes; the callers parse them strictly.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod malloc;
pub mod sev;
