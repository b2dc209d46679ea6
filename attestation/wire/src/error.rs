/// Malformed evidence bytes. Each variant names the field and the offending value, so a
/// rejection can be acted on without a hex dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("{what}: expected {expected} bytes, got {actual}")]
    Length { what: &'static str, expected: usize, actual: usize },
    #[error("{what}: unsupported version {version}")]
    UnsupportedVersion { what: &'static str, version: u32 },
    #[error("{field}: reserved byte at offset {offset:#x} is not zero")]
    ReservedNonZero { field: &'static str, offset: usize },
    #[error("{field}: reserved bits set in {value:#x}")]
    ReservedBits { field: &'static str, value: u64 },
    #[error("{field}: value {value:#x} is out of range")]
    OutOfRange { field: &'static str, value: u64 },
    #[error("inconsistent structure: {what}")]
    Inconsistent { what: &'static str },
    #[error("CBOR encoding failed: {0}")]
    Cbor(String),
}
