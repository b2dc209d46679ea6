//! The host agent: launches and supervises confidential VMs under QEMU (DESIGN.md §9).
//!
//! - [`spec`]: the launch specification; [`qemu`]: the command line per backend;
//!   [`probe`]: whether this host can run SNP or TDX at all.
//! - [`sp`]: the simulated secure processor that answers the sim guest's report requests.
#![forbid(unsafe_code)]

pub mod agent;
pub mod probe;
pub mod qemu;
pub mod qmp;
pub mod sp;
pub mod spec;
pub mod vm;
