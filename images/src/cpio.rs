//! A deterministic `newc` cpio archive (the initramfs format): entries in the caller's order,
//! inode numbers by position, every timestamp, owner and device number zero. The same entries
//! give the same bytes on any machine.

/// One archive entry. Paths are relative (no leading `/`), parents before children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir { path: String, mode: u32 },
    File { path: String, mode: u32, data: Vec<u8> },
    Symlink { path: String, target: String },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Writes `entries` and the trailer.
pub fn write(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (mode, nlink, data): (u32, u32, &[u8]) = match e {
            Entry::Dir { mode, .. } => (S_IFDIR | (mode & 0o7777), 2, &[]),
            Entry::File { mode, data, .. } => (S_IFREG | (mode & 0o7777), 1, data),
            Entry::Symlink { target, .. } => (S_IFLNK | 0o777, 1, target.as_bytes()),
        };
        header(&mut out, i as u32 + 1, mode, nlink, data.len(), e.path());
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, 1, 0, "TRAILER!!!");
    out
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, size: usize, name: &str) {
    out.extend_from_slice(b"070701");
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    let fields = [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}
