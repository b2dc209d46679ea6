//! The kernel's configfs-tsm report interface (Linux ≥ 6.7), one code path for SEV-SNP (a
//! 1184-byte report, plus the host's certificate table as `auxblob`) and TDX (a DCAP quote):
//!
//! mkdir `report/<name>` → write `inblob` (REPORT_DATA) → read `generation`, `outblob`,
//! `auxblob`, `generation` again (a changed generation means another writer raced us: retry)
//! → rmdir. No ioctl, no `unsafe`.

use std::path::{Path, PathBuf};

use nacre_wire::{Evidence, Tee};
use serde_bytes::ByteBuf;

use super::{AttestError, Attester, check_snp_report_data, check_tdx_quote_report_data};

pub const ROOT: &str = "/sys/kernel/config/tsm/report";
const MAX_OUTBLOB: usize = 64 * 1024;
const MAX_AUXBLOB: usize = 64 * 1024;
const RETRIES: u32 = 3;

/// GUIDs of the SNP extended-report certificate table (AMD GHCB spec), in their byte order.
pub(crate) const GUID_ARK: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";
pub(crate) const GUID_ASK: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
pub(crate) const GUID_VCEK: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
pub(crate) const GUID_VLEK: &str = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";

pub struct TsmAttester {
    root: PathBuf,
    tee: Tee,
    seq: u64,
    /// TDX: the CCEL log area ([`super::ccel::LOG_AREA`]).
    event_log: PathBuf,
}

impl TsmAttester {
    /// Opens the interface and checks that its provider is the TEE the measured configuration
    /// names (a host cannot turn an SNP guest into something else, but a misbuilt image can).
    pub fn open(root: &Path, tee: Tee) -> Result<Self, AttestError> {
        if !root.is_dir() {
            return Err(AttestError::NoDevice(format!("{} (configfs-tsm) is not available", root.display())));
        }
        Ok(TsmAttester {
            root: root.to_owned(),
            tee,
            seq: 0,
            event_log: PathBuf::from(super::ccel::LOG_AREA),
        })
    }

    fn once(&mut self, report_data: &[u8; 64]) -> Result<Option<Evidence>, AttestError> {
        self.seq += 1;
        let dir = self.root.join(format!("nacre-{}-{}", std::process::id(), self.seq));
        let io = |what: &str, e: std::io::Error| AttestError::Io(format!("{what}: {e}"));
        std::fs::create_dir(&dir).map_err(|e| io("creating the report entry", e))?;
        let result = (|| {
            let provider = std::fs::read_to_string(dir.join("provider")).map_err(|e| io("provider", e))?;
            let want = match self.tee {
                Tee::Snp => "sev_guest",
                Tee::Tdx => "tdx_guest",
                Tee::Sim => {
                    return Err(AttestError::NoDevice("configfs-tsm does not serve the sim TEE".into()));
                }
            };
            if provider.trim() != want {
                return Err(AttestError::NoDevice(format!(
                    "configfs-tsm provider is {:?}, expected {want}",
                    provider.trim()
                )));
            }
            std::fs::write(dir.join("inblob"), report_data).map_err(|e| io("inblob", e))?;
            let gen_before =
                std::fs::read_to_string(dir.join("generation")).map_err(|e| io("generation", e))?;
            let report = read_limited(&dir.join("outblob"), MAX_OUTBLOB).map_err(|e| io("outblob", e))?;
            let aux = match self.tee {
                Tee::Snp => read_limited(&dir.join("auxblob"), MAX_AUXBLOB).unwrap_or_default(),
                _ => Vec::new(),
            };
            let gen_after =
                std::fs::read_to_string(dir.join("generation")).map_err(|e| io("generation", e))?;
            if gen_before != gen_after {
                return Ok(None);
            }
            // The answer must be for this request (SNP: the report; TDX: the quote).
            match self.tee {
                Tee::Snp => check_snp_report_data(&report, report_data)?,
                _ => check_tdx_quote_report_data(&report, report_data)?,
            }
            let certs = if aux.is_empty() { Vec::new() } else { cert_table(&aux)? };
            let event_log = match self.tee {
                Tee::Tdx => super::ccel::read_event_log(&self.event_log)?,
                _ => None,
            };
            let evidence = Evidence { tee: self.tee, report, certs, event_log };
            evidence.check_limits().map_err(|e| AttestError::Malformed(e.to_string()))?;
            Ok(Some(evidence))
        })();
        let _ = std::fs::remove_dir(&dir);
        result
    }
}

pub(crate) fn read_limited(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?.take(max as u64 + 1).read_to_end(&mut out)?;
    if out.len() > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(out)
}

impl Attester for TsmAttester {
    fn attest(&mut self, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
        for _ in 0..RETRIES {
            if let Some(e) = self.once(report_data)? {
                return Ok(e);
            }
        }
        Err(AttestError::Io("configfs-tsm: another writer kept changing the report entry".into()))
    }
}

fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    let _ = hex::decode_to_slice(&hex, &mut b);
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// Most entries read from a certificate table, known or not: a bound on the host's input.
const MAX_TABLE_ENTRIES: usize = 64;

/// The SNP certificate table: entries of GUID ‖ offset u32 LE ‖ length u32 LE, ended by an
/// all-zero entry; offsets are from the table's start. Known GUIDs are returned in ARK, ASK,
/// VCEK or VLEK order for the verifier (which identifies certificates by content anyway).
///
/// An entry with a GUID this code does not know is skipped, unread: the host may add entries
/// (the GHCB spec lets it, e.g. for other certificates a platform offers), and the table is
/// the host's anyway — nothing in it is trusted before the verifier checks the chain. Refusing
/// it would let a host that adds one entry stop every attestation.
pub fn cert_table(aux: &[u8]) -> Result<Vec<ByteBuf>, AttestError> {
    let bad = |m: String| AttestError::Malformed(format!("certificate table: {m}"));
    let known = [GUID_ARK, GUID_ASK, GUID_VCEK, GUID_VLEK].map(guid_bytes);
    let mut found: Vec<(usize, ByteBuf)> = Vec::new();
    for index in 0..=MAX_TABLE_ENTRIES {
        if index == MAX_TABLE_ENTRIES {
            return Err(bad(format!("more than {MAX_TABLE_ENTRIES} entries")));
        }
        let at = index * 24;
        let entry = aux.get(at..at + 24).ok_or_else(|| bad("no terminating entry".into()))?;
        if entry.iter().all(|b| *b == 0) {
            break;
        }
        let guid: [u8; 16] = entry[..16].try_into().map_err(|_| bad("entry".into()))?;
        let Some(rank) = known.iter().position(|g| *g == guid) else { continue };
        let offset = u32::from_le_bytes(entry[16..20].try_into().map_err(|_| bad("entry".into()))?) as usize;
        let len = u32::from_le_bytes(entry[20..24].try_into().map_err(|_| bad("entry".into()))?) as usize;
        if found.iter().any(|(r, _)| *r == rank) {
            return Err(bad("a certificate appears twice".into()));
        }
        let der = offset
            .checked_add(len)
            .and_then(|end| aux.get(offset..end))
            .ok_or_else(|| bad("entry points outside the table".into()))?;
        if der.is_empty() {
            return Err(bad("empty certificate".into()));
        }
        found.push((rank, ByteBuf::from(der.to_vec())));
    }
    found.sort_by_key(|(r, _)| *r);
    Ok(found.into_iter().map(|(_, c)| c).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) fn table(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let header = 24 * (entries.len() + 1);
        let mut out = Vec::new();
        let mut data = Vec::new();
        for (g, der) in entries {
            out.extend_from_slice(&guid_bytes(g));
            out.extend_from_slice(&((header + data.len()) as u32).to_le_bytes());
            out.extend_from_slice(&(der.len() as u32).to_le_bytes());
            data.extend_from_slice(der);
        }
        out.extend_from_slice(&[0; 24]);
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn parses_the_table_in_chain_order() {
        let t = table(&[(GUID_VCEK, b"vcek"), (GUID_ARK, b"ark"), (GUID_ASK, b"ask")]);
        let certs = cert_table(&t).unwrap();
        assert_eq!(
            certs.iter().map(|c| c.as_slice()).collect::<Vec<_>>(),
            vec![&b"ark"[..], b"ask", b"vcek"]
        );
    }

    #[test]
    fn refuses_malformed_tables() {
        assert!(cert_table(&[0; 10]).is_err(), "no terminator");
        let mut t = table(&[(GUID_ARK, b"ark")]);
        t[16] = 0xff; // offset out of range
        assert!(cert_table(&t).is_err());
        assert!(cert_table(&table(&[(GUID_ARK, b"a"), (GUID_ARK, b"b")])).is_err(), "duplicate");
        assert!(cert_table(&table(&[(GUID_ARK, b"")])).is_err(), "empty");
        let endless: Vec<u8> = std::iter::repeat_n(table(&[(UNKNOWN, b"x")])[..24].to_vec(), 65)
            .flatten()
            .chain([0; 24])
            .collect();
        assert!(cert_table(&endless).is_err(), "more entries than any platform has");
    }

    const UNKNOWN: &str = "00000000-0000-0000-0000-000000000001";

    /// The host may add entries this guest does not know (issue 12 §6): skipped, not fatal,
    /// and the known certificates around them are still returned in chain order.
    #[test]
    fn unknown_cert_table_guid_is_skipped() {
        let t = table(&[(GUID_VCEK, b"vcek"), (UNKNOWN, b"other"), (GUID_ARK, b"ark"), (GUID_ASK, b"ask")]);
        let certs = cert_table(&t).unwrap();
        assert_eq!(
            certs.iter().map(|c| c.as_slice()).collect::<Vec<_>>(),
            vec![&b"ark"[..], b"ask", b"vcek"]
        );
        assert!(cert_table(&table(&[(UNKNOWN, b"x")])).unwrap().is_empty());
        // Skipped unread: even an unknown entry pointing outside the table is no error.
        let mut t = table(&[(UNKNOWN, b"x"), (GUID_ARK, b"ark")]);
        t[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(cert_table(&t).unwrap(), vec![ByteBuf::from(b"ark".to_vec())]);
    }

    /// A directory shaped like configfs (the files the kernel would create, pre-filled).
    #[test]
    fn reads_a_report_entry_and_checks_the_provider() {
        let root = std::env::temp_dir().join(format!("nacre-tsm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let mut a = TsmAttester::open(&root, Tee::Tdx).unwrap();
        // Without the kernel, mkdir creates an empty dir: the provider read fails cleanly.
        assert!(matches!(a.attest(&[0; 64]), Err(AttestError::Io(_))));
        assert!(TsmAttester::open(&root.join("missing"), Tee::Snp).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
