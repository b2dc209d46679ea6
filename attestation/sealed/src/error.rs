/// Why sealing or opening failed. Tampering names the chunk; nothing is returned on failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("header: {0}")]
    Header(String),
    #[error("{what} truncated: {source}")]
    Truncated { what: String, source: std::io::Error },
    #[error(
        "chunk {chunk} failed authentication (tampered, reordered, or sealed under another key or header)"
    )]
    Tampered { chunk: u64 },
    #[error("bytes after the last chunk")]
    TrailingBytes,
    #[error("the identity recomputed from the plaintext differs from the header's model identity")]
    IdentityMismatch,
    #[error("plaintext of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: u64 },
    #[error("the input changed while it was being sealed")]
    InputChanged,
    #[error("random number generator failed")]
    Random,
    #[error("cipher failure")]
    Crypto,
    #[error("I/O: {0}")]
    Io(std::io::Error),
}

impl SealError {
    pub(crate) fn truncated(what: &str, source: std::io::Error) -> Self {
        SealError::Truncated { what: what.to_owned(), source }
    }
    pub(crate) fn truncated_chunk(chunk: u64, source: std::io::Error) -> Self {
        SealError::Truncated { what: format!("chunk {chunk}"), source }
    }
}
