//! The sealed-model format (DESIGN.md §5, docs/sealed-format.md): a versioned CBOR header and a
//! STREAM-encrypted body of fixed-size AES-256-GCM chunks, the header's hash as associated data
//! of every chunk. Opening authenticates each chunk, the chunk order, the end of the stream and
//! the model digest, and returns the plaintext only in a zeroize-on-drop buffer (`Plaintext`).
#![forbid(unsafe_code)]

pub mod error;
pub mod header;
pub mod keyfile;
pub mod plaintext;
pub mod stream;

pub use error::SealError;
pub use header::Header;
pub use keyfile::KeyFile;
pub use plaintext::Plaintext;
pub use stream::{AwsLcGcm, ChunkCipher, DataKey, RustCryptoGcm, SealParams, open, seal};
