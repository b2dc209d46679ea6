//! nacre-witness: the transparency log's witness as a server. It holds its own key and durable
//! state, independent of the attestation service, and answers the C2SP tlog-witness
//! `add-checkpoint` call: it cosigns a log's checkpoint only when a consistency proof shows the
//! tree extends the one it cosigned before, and refuses a fork or a rollback.
//!
//! - [`config`]: its TOML configuration (which logs it follows, by their verifier keys).
//! - [`setup`]: `nacre witness init`: a key, a private CA and TLS certificate, the config.
//! - [`server`]: HTTPS over the bounded server the attestation service and the enclave run.
//!
//! The checks themselves are `nacre_tlog::witness`, shared with nothing else that signs.

pub mod config;
pub mod server;
pub mod setup;

pub use config::Config;
