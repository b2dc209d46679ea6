//! Intel TDX through `/dev/tdx_guest`, for kernels without configfs-tsm: the TDREPORT from the
//! `TDX_CMD_GET_REPORT0` ioctl (in `nacre-guest-ioctl`), turned into a DCAP quote by the host's
//! Quote Generation Service over vsock (the protocol in [`super::qgs`]), as Intel's
//! `libtdx_attest` does in its vsock mode.
//!
//! The QGS is the host's: it sees the TDREPORT (which is only MAC'd for this platform, never
//! secret) and may answer anything. The answer is parsed strictly and the quote must bind our
//! REPORT_DATA; its signature chain is the verifier's business.

use std::time::{Duration, Instant};

use nacre_guest_ioctl::tdx::{self as ioctl, TDREPORT_LEN, TdxGuest};
use nacre_wire::{Evidence, Tee};

use super::{AttestError, Attester, check_tdx_quote_report_data, qgs};

/// `VMADDR_CID_HOST`: the QGS runs on the host.
pub const QGS_CID: u32 = 2;
/// The QGS's vsock port: its own default (`qgs -p`), what `libtdx_attest` reads from
/// `/etc/tdx-attest.conf` in the usual set-up, and QEMU's `quote-generation-socket` example.
pub const QGS_PORT: u32 = 4050;
/// How long one quote may take: QEMU allows its own QGS transactions 30 s
/// (`TRANSACTION_TIMEOUT` in `hw/i386/tdx-quote-generator.c`). The vsock connect itself is
/// bounded by the kernel (`VSOCK_DEFAULT_CONNECT_TIMEOUT`, 2 s).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// TDREPORT_STRUCT.REPORTMACSTRUCT (Intel TDX Module ABI): REPORTTYPE (TYPE, SUBTYPE, VERSION,
/// reserved) at 0, RESERVED 12 bytes, CPUSVN 16, TEE_TCB_INFO_HASH 48, TEE_INFO_HASH 48, then
/// REPORTDATA at 128.
const TDREPORT_TYPE: usize = 0;
const TDREPORT_TYPE_TDX: u8 = 0x81;
const TDREPORT_REPORT_DATA: usize = 128;

/// Where the QGS listens.
#[derive(Debug, Clone)]
pub enum QgsEndpoint {
    Vsock {
        cid: u32,
        port: u32,
    },
    /// A fake QGS in tests.
    #[cfg(test)]
    Unix(std::path::PathBuf),
}

impl QgsEndpoint {
    fn exchange(&self, tdreport: &[u8; TDREPORT_LEN], deadline: Instant) -> Result<Vec<u8>, AttestError> {
        match self {
            QgsEndpoint::Vsock { cid, port } => {
                let mut stream = vsock::VsockStream::connect_with_cid_port(*cid, *port)
                    .map_err(|e| AttestError::Io(format!("QGS at vsock {cid}:{port}: {e}")))?;
                qgs::get_quote(&mut stream, tdreport, deadline)
            }
            #[cfg(test)]
            QgsEndpoint::Unix(path) => {
                let mut stream = std::os::unix::net::UnixStream::connect(path)
                    .map_err(|e| AttestError::Io(format!("QGS at {}: {e}", path.display())))?;
                qgs::get_quote(&mut stream, tdreport, deadline)
            }
        }
    }
}

/// The TDX attester on the guest device and the host's QGS.
#[derive(Debug)]
pub struct TdxGuestAttester {
    device: TdxGuest,
    qgs: QgsEndpoint,
}

impl TdxGuestAttester {
    /// Opens the device; the QGS is reached at [`QGS_CID`]:[`QGS_PORT`] on each request.
    pub fn open() -> Result<Self, AttestError> {
        let device =
            TdxGuest::open().map_err(|e| AttestError::NoDevice(format!("{}: {e}", ioctl::DEVICE)))?;
        Ok(TdxGuestAttester { device, qgs: QgsEndpoint::Vsock { cid: QGS_CID, port: QGS_PORT } })
    }
}

impl Attester for TdxGuestAttester {
    fn attest(&mut self, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
        let deadline = Instant::now() + DEADLINE;
        let tdreport = self
            .device
            .get_report0(report_data)
            .map_err(|e| AttestError::Io(format!("{} TDX_CMD_GET_REPORT0: {e}", ioctl::DEVICE)))?;
        let mut evidence = quote_evidence(&tdreport, report_data, &self.qgs, deadline)?;
        evidence.event_log = super::ccel::read_event_log(std::path::Path::new(super::ccel::LOG_AREA))?;
        evidence.check_limits().map_err(|e| AttestError::Malformed(e.to_string()))?;
        Ok(evidence)
    }
}

/// Checks the TDREPORT the kernel gave back, has the QGS quote it, and checks the quote.
fn quote_evidence(
    tdreport: &[u8; TDREPORT_LEN],
    report_data: &[u8; 64],
    qgs: &QgsEndpoint,
    deadline: Instant,
) -> Result<Evidence, AttestError> {
    if tdreport[TDREPORT_TYPE] != TDREPORT_TYPE_TDX {
        return Err(AttestError::Malformed(format!(
            "TDREPORT type {:#x} is not TDX (0x81)",
            tdreport[TDREPORT_TYPE]
        )));
    }
    if tdreport[TDREPORT_REPORT_DATA..TDREPORT_REPORT_DATA + 64] != report_data[..] {
        return Err(AttestError::Malformed("the TDREPORT binds other REPORT_DATA".into()));
    }
    let quote = qgs.exchange(tdreport, deadline)?;
    check_tdx_quote_report_data(&quote, report_data)?;
    let evidence = Evidence { tee: Tee::Tdx, report: quote, certs: Vec::new(), event_log: None };
    evidence.check_limits().map_err(|e| AttestError::Malformed(e.to_string()))?;
    Ok(evidence)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::attest::qgs::tests::{framed, response};
    use crate::attest::tests::tdx_quote;

    fn tdreport(report_data: &[u8; 64]) -> [u8; TDREPORT_LEN] {
        let mut r = [0u8; TDREPORT_LEN];
        r[0] = TDREPORT_TYPE_TDX;
        r[128..192].copy_from_slice(report_data);
        r
    }

    /// A fake QGS on a Unix socket: answers one request with `answer`, returns the request.
    fn fake_qgs(answer: Vec<u8>) -> (QgsEndpoint, std::thread::JoinHandle<Vec<u8>>) {
        let dir = std::env::temp_dir().join(format!(
            "nacre-qgs-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qgs.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let qgs = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = vec![0u8; 4 + qgs::GET_QUOTE_REQ_LEN];
            s.read_exact(&mut req).unwrap();
            s.write_all(&answer).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            req
        });
        (QgsEndpoint::Unix(path), qgs)
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn quotes_the_tdreport_through_the_qgs() {
        let rd = [0x33; 64];
        let quote = tdx_quote(4, &rd);
        let (endpoint, qgs) = fake_qgs(framed(&response(1, 1, 0, b"", &quote)));
        let ev = quote_evidence(&tdreport(&rd), &rd, &endpoint, deadline()).unwrap();
        assert_eq!((ev.tee, &ev.report, ev.certs.len()), (Tee::Tdx, &quote, 0));
        assert_eq!(qgs.join().unwrap(), qgs::encode_get_quote_request(&tdreport(&rd)));
    }

    #[test]
    fn refuses_a_quote_for_other_report_data() {
        let rd = [0x33; 64];
        let (endpoint, _qgs) = fake_qgs(framed(&response(1, 1, 0, b"", &tdx_quote(4, &[0x34; 64]))));
        let err = quote_evidence(&tdreport(&rd), &rd, &endpoint, deadline()).unwrap_err();
        assert!(matches!(err, AttestError::Malformed(ref m) if m.contains("REPORT_DATA")), "{err}");
    }

    #[test]
    fn a_qgs_refusal_is_typed() {
        let rd = [0x33; 64];
        let (endpoint, _qgs) = fake_qgs(framed(&response(1, 1, 0x11001, b"", b"")));
        let err = quote_evidence(&tdreport(&rd), &rd, &endpoint, deadline()).unwrap_err();
        assert!(matches!(err, AttestError::Refused(_)), "{err}");
    }

    #[test]
    fn checks_the_tdreport_before_asking_the_qgs() {
        let rd = [0x33; 64];
        let nowhere = QgsEndpoint::Unix("/nonexistent/qgs.sock".into());
        let mut sgx = tdreport(&rd);
        sgx[0] = 0;
        assert!(matches!(quote_evidence(&sgx, &rd, &nowhere, deadline()), Err(AttestError::Malformed(_))));
        let other = tdreport(&[0x34; 64]);
        assert!(matches!(quote_evidence(&other, &rd, &nowhere, deadline()), Err(AttestError::Malformed(_))));
        // A well-formed TDREPORT gets as far as the (absent) QGS.
        assert!(matches!(quote_evidence(&tdreport(&rd), &rd, &nowhere, deadline()), Err(AttestError::Io(_))));
    }
}
