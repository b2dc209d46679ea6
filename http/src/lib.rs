//! Bounded HTTPS serving, shared by the attestation service and the enclave: nothing a client
//! that has not authenticated sends can hold a connection slot, memory or a handler past a
//! deadline, or lock other clients out.
//!
//! - [`source`]: who a connection counts against (an IPv4 address, an IPv6 /64).
//! - [`buckets`]: token buckets per key (a bearer token's hash, a source, a connection) under a
//!   hard cap on tracked keys, evicted in constant time.

pub mod conns;
pub mod deadline;
pub mod server;
pub mod source;
