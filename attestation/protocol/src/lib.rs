//! The attestation service's protocol (DESIGN.md §6), shared by the service and its clients:
//!
//! - [`messages`]: the CBOR bodies of every `/v1/` route and the typed error body,
//! - [`cbor`]: strict decoding (one item, no trailing bytes, unknown fields refused),
//! - [`wrap`]: the data key wrapped to the enclave's ephemeral HPKE key (RFC 9180),
//! - [`result`]: the signed, EAR-style attestation result the enclave can show to clients,
//! - [`model`]: the model a key version is registered for and the publisher's signature over it,
//! - [`reference`]: signed reference values (image digests and expected measurements per TEE),
//!   written by the image builder, imported by the service, named by release policies.
//!
//! No I/O here: the service and the client crates own the transports.
#![forbid(unsafe_code)]

pub mod cbor;
pub mod messages;
pub mod model;
pub mod reference;
pub mod result;
pub mod wrap;

pub use messages::{ErrorBody, ErrorCode};
