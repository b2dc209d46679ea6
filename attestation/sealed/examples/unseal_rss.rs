//! Peak memory and time of opening a large sealed model, for `scripts/bench-sealed.sh`.
//!
//! ```text
//! unseal_rss seal DIR MIB   # seal MIB MiB of pseudo-random bytes (generated, never on disk)
//!                           # to DIR/model.sealed, a fresh test key to DIR/model.key
//! unseal_rss open DIR       # in a fresh process: open DIR/model.sealed into memory
//! ```
//!
//! Each prints one JSON line. `open` reports the peak resident set (VmHWM from
//! /proc/self/status) of a process that did nothing but open the model, so it measures what
//! a guest pays: the plaintext buffer plus whatever the opening adds.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nacre_sealed::header::DEFAULT_CHUNK;
use nacre_sealed::{AwsLcGcm, DataKey, KeyFile, SealParams, open, seal};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[1..] {
        ["seal", dir, mib] => seal_cmd(Path::new(dir), mib.parse::<u64>()? << 20),
        ["open", dir] => open_cmd(Path::new(dir)),
        _ => Err("usage: unseal_rss seal DIR MIB | unseal_rss open DIR".into()),
    }
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("model.sealed"), dir.join("model.key"))
}

fn seal_cmd(dir: &Path, len: u64) -> Result<(), Box<dyn Error>> {
    let (sealed, keyfile) = paths(dir);
    let key = DataKey::generate()?;
    let cipher = AwsLcGcm::new(&key)?;
    let params = SealParams {
        key_id: "bench".into(),
        key_version: 1,
        model_name: "bench".into(),
        model_version: "1".into(),
        chunk_size: DEFAULT_CHUNK,
    };
    let mut out = BufWriter::new(File::create(&sealed)?);
    let start = Instant::now();
    let header = seal(PseudoRandom { len, pos: 0 }, &mut out, &cipher, &params, |_| {})?;
    out.into_inner().map_err(|e| e.into_error())?;
    let seconds = start.elapsed().as_secs_f64();
    let kf = KeyFile { key_id: header.key_id, key_version: header.key_version, key };
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&keyfile)?;
    io::Write::write_all(&mut f, kf.to_json()?.as_bytes())?;
    println!(r#"{{"op":"seal","bytes":{len},"seconds":{seconds:.6}}}"#);
    Ok(())
}

fn open_cmd(dir: &Path) -> Result<(), Box<dyn Error>> {
    let (sealed, keyfile) = paths(dir);
    let kf = KeyFile::from_json(&std::fs::read_to_string(&keyfile)?)?;
    let cipher = AwsLcGcm::new(&kf.key)?;
    let before = vm_kib("VmHWM")?;
    let start = Instant::now();
    let (header, plain) = open(BufReader::new(File::open(&sealed)?), &cipher, u64::MAX)?;
    let opened = start.elapsed().as_secs_f64();
    let rss_open = vm_kib("VmRSS")?;
    let bytes = plain.len();
    drop(plain);
    let seconds = start.elapsed().as_secs_f64();
    let peak = vm_kib("VmHWM")?;
    println!(
        r#"{{"op":"open","bytes":{bytes},"digest":"{}","seconds":{seconds:.6},"seconds_to_plaintext":{opened:.6},"vmhwm_before_kib":{before},"vmrss_open_kib":{rss_open},"vmhwm_kib":{peak}}}"#,
        hex(&header.model_digest)
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A field of /proc/self/status, in KiB.
fn vm_kib(field: &str) -> Result<u64, Box<dyn Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
    Ok(line.trim().trim_end_matches(" kB").trim().parse()?)
}

/// `len` pseudo-random bytes, a function of their position (SplitMix64 of the 8-byte word
/// index), so that sealing can read them twice without them ever being stored.
struct PseudoRandom {
    len: u64,
    pos: u64,
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Read for PseudoRandom {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX));
        let mut out = &mut buf[..n];
        while !out.is_empty() {
            let word = splitmix64(self.pos / 8).to_le_bytes();
            let at = (self.pos % 8) as usize;
            let k = (8 - at).min(out.len());
            out[..k].copy_from_slice(&word[at..at + k]);
            out = &mut out[k..];
            self.pos += k as u64;
        }
        Ok(n)
    }
}

impl Seek for PseudoRandom {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}
