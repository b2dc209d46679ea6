//! The TD's event log, attached to TDX evidence so that the verifier can replay it against the
//! quote's RTMRs and show, event by event, what the firmware and kernel measured.
//!
//! The firmware publishes the log through the ACPI CCEL table; Linux exposes the table's log
//! area as `/sys/firmware/acpi/tables/data/CCEL` (the table itself, whose header points at the
//! area, is `/sys/firmware/acpi/tables/CCEL`). The log is the firmware's, not a secret, and as
//! untrusted as anything the host could have touched: the verifier trusts it only if it replays
//! to the authenticated RTMRs. Here it is parsed only to cut the padding off the area (which
//! td-shim makes 1 MiB) and to fail here rather than at the verifier when it is malformed.

use std::path::Path;
use std::sync::Once;

use nacre_wire::ccel::EventLog;
use nacre_wire::evidence::MAX_EVENT_LOG_LEN;

use super::AttestError;

/// The CCEL log area.
pub const LOG_AREA: &str = "/sys/firmware/acpi/tables/data/CCEL";
/// Largest log area read: td-shim reserves 1 MiB, TDVF 64 KiB; a larger area is not one we know.
const MAX_AREA: usize = 2 * 1024 * 1024;

/// The used part of the event log at `path`, or `None` when the guest has none (no CCEL table:
/// firmware without CC measurement, or a kernel without the ACPI table data files). A log that
/// cannot be read, is too large, or does not parse is an error.
pub fn read_event_log(path: &Path) -> Result<Option<Vec<u8>>, AttestError> {
    let area = match super::tsm::read_limited(path, MAX_AREA) {
        Ok(area) => area,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "nacre-enclave: no TDX event log at {}: the evidence goes without one (the verifier judges the RTMRs alone)",
                    path.display()
                )
            });
            return Ok(None);
        }
        Err(e) => return Err(AttestError::Io(format!("TDX event log {}: {e}", path.display()))),
    };
    let log =
        EventLog::parse(&area).map_err(|e| AttestError::Malformed(format!("{}: {e}", path.display())))?;
    let used = log.bytes();
    if used.len() > MAX_EVENT_LOG_LEN {
        return Err(AttestError::Malformed(format!(
            "TDX event log {}: {} bytes of events, more than the {MAX_EVENT_LOG_LEN} evidence may carry",
            path.display(),
            used.len()
        )));
    }
    Ok(Some(used.to_vec()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn published(name: &str) -> Vec<u8> {
        let path = format!("{}/../../attestation/wire/tests/data/ccel/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).expect(&path)
    }

    fn temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("nacre-ccel-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn the_padded_area_is_sent_without_its_padding() {
        // td-shim's 1 MiB area holds 9822 bytes of events.
        let path = temp("area", &published("CCEL_data"));
        let log = read_event_log(&path).unwrap().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(log.len(), 9822);
        assert_eq!(EventLog::parse(&log).unwrap().events.len(), 5);
    }

    #[test]
    fn absence_is_fine_and_anything_else_is_an_error() {
        assert_eq!(read_event_log(Path::new("/nonexistent/CCEL")).unwrap(), None);
        let garbage = temp("garbage", b"not an event log");
        assert!(matches!(read_event_log(&garbage), Err(AttestError::Malformed(_))));
        std::fs::remove_file(&garbage).unwrap();
        let huge = temp("huge", &vec![0xff; MAX_AREA + 1]);
        assert!(matches!(read_event_log(&huge), Err(AttestError::Io(_))));
        std::fs::remove_file(&huge).unwrap();
        // A directory where the file should be: unreadable.
        assert!(matches!(read_event_log(&std::env::temp_dir()), Err(AttestError::Io(_))));
    }
}
