//! Where sealed and plaintext bytes are read from: a byte slice or a range of a file, read at
//! offsets so that every worker reads its own shard without a shared cursor.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Bytes read at offsets by several threads at once.
pub trait Source: Sync {
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; an input shorter than that is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// The bytes themselves when they are already in memory and immutable while borrowed, so
    /// that sealing can encrypt from them without a copy.
    fn as_slice(&self) -> Option<&[u8]> {
        None
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }
}

/// `len` bytes of a file from `start` (a block device holding a sealed model followed by
/// padding, or a whole file). Positional reads: the file's cursor is not used.
#[derive(Debug)]
pub struct FileRange<'a> {
    file: &'a File,
    start: u64,
    len: u64,
}

impl<'a> FileRange<'a> {
    pub fn new(file: &'a File, start: u64, len: u64) -> Self {
        FileRange { file, start, len }
    }

    /// The whole file, at its current length.
    pub fn whole(file: &'a File) -> std::io::Result<Self> {
        Ok(FileRange { file, start: 0, len: file.metadata()?.len() })
    }
}

impl Source for FileRange<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.len) {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.file.read_exact_at(buf, self.start + offset)
    }
}
