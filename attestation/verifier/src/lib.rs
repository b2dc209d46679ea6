//! Nacre's verifier: decides whether attestation evidence is genuine and acceptable.
//!
//! - [`snp`]: SEV-SNP and the simulated TEE (same report format, same code; only the root
//!   differs, and the sim root must be configured explicitly as insecure).
//! - [`tdx`]: Intel TDX DCAP quotes, through `dcap-qvl`.
//! - [`pipeline`]: the single appraisal pipeline and [`Verified`], the proof type.
//! - [`policy`]: the TOML policy; defaults fail closed.
//! - [`collateral`]: where endorsements come from (an offline file cache).
#![forbid(unsafe_code)]

pub mod claims;
pub mod collateral;
pub mod error;
pub mod evidence;
pub mod pipeline;
pub mod policy;
pub mod snp;
pub mod tdx;
pub mod x509;

pub use claims::{Claims, PlatformClaims, SnpClaims, TdReport, TdxClaims, TdxTcbStatus};
pub use error::{ChainError, ConfigError, MalformedError, PolicyViolation, VerifyError};
pub use evidence::EvidenceVerifier;
pub use nacre_wire::snp::Product;
pub use pipeline::{Appraiser, ExpectedReportData, Platform, Refusal, SnpEvidence, TdxEvidence, Verified};
pub use policy::Policy;
pub use snp::{SnpRoots, SnpVerifier};
pub use tdx::TdxVerifier;
pub use x509::CertSet;
