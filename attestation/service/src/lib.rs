//! The attestation service (DESIGN.md §6, §10): releases a sealed model's data key only to a
//! guest whose evidence passes the attestation core and the key's release policy.
#![forbid(unsafe_code)]

pub mod appraisal;
pub mod audit;
pub mod config;
pub mod http;
pub mod master;
pub mod metrics;
pub mod nonce;
pub mod policy;
pub mod ratelimit;
pub mod service;
pub mod setup;
pub mod signers;
pub mod store;
pub mod tokens;
pub mod witnesses;
