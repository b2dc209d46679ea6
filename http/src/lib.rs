//! Bounded HTTPS serving, shared by the attestation service and the enclave: nothing a client
//! that has not authenticated sends can hold a connection slot, memory or a handler past a
//! deadline, or lock other clients out.
//!
//! - [`conns`]: the connection table: global and per-source caps, displacement of stalled
//!   connections, the handler cap with reserved slots, phase deadlines.
//! - [`server`]: the accept loop both servers run (TLS, HTTP/1.1, body deadlines).
//! - [`deadline`]: per-route handler deadlines.
//! - [`metrics`]: the connection table's Prometheus metrics.
//! - [`source`]: who a connection counts against (an IPv4 address, an IPv6 /64).
//! - [`tls`]: loading server certificates; a private CA for the `init` commands.
//! - [`buckets`]: token buckets per key (a bearer token's hash, a source, a connection) under a
//!   hard cap on tracked keys, evicted in constant time.

pub mod buckets;
pub mod conns;
pub mod deadline;
pub mod metrics;
pub mod server;
pub mod source;
pub mod tls;
