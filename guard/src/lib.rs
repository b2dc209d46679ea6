//! The model guard: the owner's guard manifest, which travels in the sealed model's
//! authenticated slot and whose digest the attested-TLS binding carries, so that a client sees
//! which guard runs before any input leaves (docs/guard-manifest.md). One versioned format for
//! all three guard parts: validation and the input guard, extraction defence and explanations,
//! private monitoring.
#![forbid(unsafe_code)]

pub mod check;
pub mod data;
pub mod defence;
pub mod fit;
pub mod input;
pub mod linalg;
pub mod manifest;
pub mod monitor;
pub mod output;
pub mod prada;
pub mod shap;
pub mod shapiro;

pub use defence::{Defence, Observed, Refusal};
pub use input::{InputGuard, Verdict, Violation};
pub use manifest::{Manifest, ManifestError};
pub use output::harden;
