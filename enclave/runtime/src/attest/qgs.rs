//! The TD side of Intel's Quote Generation Service (QGS) protocol: a TDREPORT goes to the host's
//! QGS, a DCAP quote comes back. Used by the `/dev/tdx_guest` attester when configfs-tsm is not
//! there (the kernel's own path, which asks QEMU to talk to the same QGS).
//!
//! Wire format, as defined by Intel's `qgs_msg_lib` (SGXDataCenterAttestationPrimitives,
//! `QuoteGeneration/quote_wrapper/qgs_msg_lib/inc/qgs_msg_lib.h` and `qgs_msg_lib.cpp`) and
//! spoken by `libtdx_attest`'s vsock mode (`QuoteGeneration/quote_wrapper/tdx_attest/tdx_attest.c`)
//! and by QEMU (`hw/i386/tdx-quote-generator.c`):
//!
//! ```text
//! frame    = length: u32 big-endian (of the message that follows) ‖ message
//! header   = major: u16 ‖ minor: u16 ‖ type: u32 ‖ size: u32 (whole message) ‖ error_code: u32
//! request  = header(type 0 GET_QUOTE_REQ) ‖ report_size: u32 ‖ id_list_size: u32 ‖ report ‖ id list
//! response = header(type 1 GET_QUOTE_RESP) ‖ selected_id_size: u32 ‖ quote_size: u32 ‖ id ‖ quote
//! ```
//!
//! Message fields are packed and little-endian. The host runs the QGS, so every answer is
//! untrusted: the frame length is bounded before anything is allocated, every size field must
//! add up exactly, and the version, type and error code must be ones the protocol defines. The
//! quote itself is then checked (by the caller) to bind our REPORT_DATA, and by the verifier for
//! everything else.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use nacre_guest_ioctl::tdx::TDREPORT_LEN;
use nacre_wire::evidence::MAX_REPORT_LEN;

use super::AttestError;

/// `QGS_MSG_LIB_MAJOR_VER`: the only major version there is.
pub const MAJOR_VERSION: u16 = 1;
/// The minor version we send (QEMU's and current DCAP's `QGS_MSG_LIB_MINOR_VER`).
pub const MINOR_VERSION: u16 = 1;
/// Minor versions published so far (older DCAP releases send 0). Intel treats minor changes as
/// compatible; we accept only the ones that exist.
pub const KNOWN_MINOR_VERSIONS: [u16; 2] = [0, 1];
/// `GET_QUOTE_REQ`.
pub const GET_QUOTE_REQ: u32 = 0;
/// `GET_QUOTE_RESP`.
pub const GET_QUOTE_RESP: u32 = 1;
/// The big-endian length that frames each message.
pub const FRAME_PREFIX_LEN: usize = 4;
/// `qgs_msg_header_t`.
pub const HEADER_LEN: usize = 16;
/// `qgs_msg_get_quote_req_t` / `qgs_msg_get_quote_resp_t` without their payloads.
pub const GET_QUOTE_FIXED_LEN: usize = HEADER_LEN + 8;
/// The request we send: a TDREPORT and no attestation key id list (only Intel's TDQE exists).
pub const GET_QUOTE_REQ_LEN: usize = GET_QUOTE_FIXED_LEN + TDREPORT_LEN;
/// The largest response accepted: one quote that fits the evidence envelope, no key id.
pub const MAX_RESPONSE_LEN: usize = GET_QUOTE_FIXED_LEN + MAX_REPORT_LEN;
/// `QGS_MSG_ERROR_MAX`: error codes at or above it are outside the protocol
/// (`QGS_MSG_MK_ERROR(x) = 0x00012000 | x`, x = 1..=7; the TDQE's own errors are lower).
pub const ERROR_CODE_MAX: u32 = 0x0001_2008;

/// Why a QGS answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QgsError {
    #[error("QGS frame announces {0} bytes (a GET_QUOTE_RESP is {min}..={max})", min = GET_QUOTE_FIXED_LEN, max = MAX_RESPONSE_LEN)]
    FrameLength(u32),
    #[error("QGS message of {0} bytes is shorter than a GET_QUOTE_RESP header")]
    Truncated(usize),
    #[error("QGS message version {major}.{minor} is not one we know (1.0, 1.1)")]
    Version { major: u16, minor: u16 },
    #[error("QGS message type {0} is not GET_QUOTE_RESP (1)")]
    Type(u32),
    #[error("QGS message sizes do not add up: {0}")]
    Size(String),
    #[error("QGS error code {0:#x} is outside the protocol's range")]
    UnknownErrorCode(u32),
    #[error("QGS selected an attestation key id ({0} bytes) although none was offered")]
    SelectedId(u32),
    #[error("the QGS could not produce a quote (error code {0:#x})")]
    Refused(u32),
}

impl From<QgsError> for AttestError {
    fn from(e: QgsError) -> Self {
        match e {
            QgsError::Refused(_) => AttestError::Refused(e.to_string()),
            _ => AttestError::Malformed(e.to_string()),
        }
    }
}

/// The framed GET_QUOTE_REQ for `tdreport`.
pub fn encode_get_quote_request(tdreport: &[u8; TDREPORT_LEN]) -> Vec<u8> {
    let size = GET_QUOTE_REQ_LEN as u32;
    let mut out = Vec::with_capacity(FRAME_PREFIX_LEN + GET_QUOTE_REQ_LEN);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&MAJOR_VERSION.to_le_bytes());
    out.extend_from_slice(&MINOR_VERSION.to_le_bytes());
    out.extend_from_slice(&GET_QUOTE_REQ.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // error_code: requests carry none
    out.extend_from_slice(&(TDREPORT_LEN as u32).to_le_bytes()); // report_size
    out.extend_from_slice(&0u32.to_le_bytes()); // id_list_size
    out.extend_from_slice(tdreport);
    out
}

/// The message length a frame prefix announces, bounded before anything is allocated.
pub fn decode_frame_len(prefix: [u8; FRAME_PREFIX_LEN]) -> Result<usize, QgsError> {
    let len = u32::from_be_bytes(prefix);
    if (len as usize) < GET_QUOTE_FIXED_LEN || len as usize > MAX_RESPONSE_LEN {
        return Err(QgsError::FrameLength(len));
    }
    Ok(len as usize)
}

/// The quote inside a GET_QUOTE_RESP message (the frame prefix already removed). Follows
/// `qgs_msg_inflate_get_quote_resp`, and is stricter in two places: the minor version must be
/// a published one, and a selected key id is refused since we never offer a list (QEMU does
/// the same).
pub fn decode_get_quote_response(msg: &[u8]) -> Result<&[u8], QgsError> {
    let u16_at = |o: usize| u16::from_le_bytes([msg[o], msg[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([msg[o], msg[o + 1], msg[o + 2], msg[o + 3]]);
    if msg.len() < GET_QUOTE_FIXED_LEN {
        return Err(QgsError::Truncated(msg.len()));
    }
    let (major, minor) = (u16_at(0), u16_at(2));
    if major != MAJOR_VERSION || !KNOWN_MINOR_VERSIONS.contains(&minor) {
        return Err(QgsError::Version { major, minor });
    }
    let kind = u32_at(4);
    if kind != GET_QUOTE_RESP {
        return Err(QgsError::Type(kind));
    }
    let size = u32_at(8);
    if size as usize != msg.len() {
        return Err(QgsError::Size(format!("header says {size} bytes, the frame holds {}", msg.len())));
    }
    let error_code = u32_at(12);
    let (id_size, quote_size) = (u32_at(16), u32_at(20));
    let total = GET_QUOTE_FIXED_LEN as u64 + u64::from(id_size) + u64::from(quote_size);
    if total != u64::from(size) {
        return Err(QgsError::Size(format!(
            "{GET_QUOTE_FIXED_LEN} + id {id_size} + quote {quote_size} bytes != message size {size}"
        )));
    }
    if error_code != 0 {
        if error_code >= ERROR_CODE_MAX {
            return Err(QgsError::UnknownErrorCode(error_code));
        }
        if id_size != 0 || quote_size != 0 {
            return Err(QgsError::Size(format!(
                "an error response (code {error_code:#x}) carries a payload"
            )));
        }
        return Err(QgsError::Refused(error_code));
    }
    if quote_size == 0 {
        return Err(QgsError::Size("success without a quote".into()));
    }
    if id_size != 0 {
        return Err(QgsError::SelectedId(id_size));
    }
    Ok(&msg[GET_QUOTE_FIXED_LEN..])
}

/// A byte stream to the QGS whose reads and writes can be bounded in time.
pub trait Transport: Read + Write {
    /// Bounds each following read and write to `timeout` (never zero).
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()>;
}

impl Transport for vsock::VsockStream {
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl Transport for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

/// One GET_QUOTE exchange on `stream`, all of it before `deadline`.
pub fn get_quote<T: Transport>(
    stream: &mut T,
    tdreport: &[u8; TDREPORT_LEN],
    deadline: Instant,
) -> Result<Vec<u8>, AttestError> {
    write_all(stream, &encode_get_quote_request(tdreport), deadline)?;
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    read_exact(stream, &mut prefix, deadline)?;
    let mut msg = vec![0u8; decode_frame_len(prefix)?];
    read_exact(stream, &mut msg, deadline)?;
    Ok(decode_get_quote_response(&msg)?.to_vec())
}

fn arm<T: Transport>(stream: &T, deadline: Instant) -> Result<(), AttestError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(late());
    }
    stream.set_timeouts(left).map_err(|e| AttestError::Io(format!("QGS socket timeouts: {e}")))
}

fn late() -> AttestError {
    AttestError::Io("the QGS did not answer in time".into())
}

fn io_error(e: std::io::Error) -> AttestError {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => late(),
        _ => AttestError::Io(format!("QGS connection: {e}")),
    }
}

fn write_all<T: Transport>(stream: &mut T, mut buf: &[u8], deadline: Instant) -> Result<(), AttestError> {
    while !buf.is_empty() {
        arm(stream, deadline)?;
        match stream.write(buf) {
            Ok(0) => return Err(AttestError::Io("the QGS closed the connection".into())),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    Ok(())
}

fn read_exact<T: Transport>(
    stream: &mut T,
    mut buf: &mut [u8],
    deadline: Instant,
) -> Result<(), AttestError> {
    while !buf.is_empty() {
        arm(stream, deadline)?;
        match stream.read(buf) {
            Ok(0) => return Err(AttestError::Io("the QGS closed the connection mid-answer".into())),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use std::os::unix::net::UnixStream;

    use super::*;

    pub(crate) fn tdreport() -> [u8; TDREPORT_LEN] {
        std::array::from_fn(|i| (i % 251) as u8)
    }

    /// A GET_QUOTE_RESP written out field by field (the frame prefix not included).
    pub(crate) fn response(minor: u16, kind: u32, error: u32, id: &[u8], quote: &[u8]) -> Vec<u8> {
        let size = (24 + id.len() + quote.len()) as u32;
        let mut m = Vec::new();
        m.extend_from_slice(&1u16.to_le_bytes());
        m.extend_from_slice(&minor.to_le_bytes());
        m.extend_from_slice(&kind.to_le_bytes());
        m.extend_from_slice(&size.to_le_bytes());
        m.extend_from_slice(&error.to_le_bytes());
        m.extend_from_slice(&(id.len() as u32).to_le_bytes());
        m.extend_from_slice(&(quote.len() as u32).to_le_bytes());
        m.extend_from_slice(id);
        m.extend_from_slice(quote);
        m
    }

    pub(crate) fn framed(msg: &[u8]) -> Vec<u8> {
        let mut out = (msg.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(msg);
        out
    }

    /// The request, byte for byte, against a message written out by hand from `qgs_msg_lib.h`.
    #[test]
    fn request_matches_the_golden_message() {
        #[rustfmt::skip]
        let golden_head: [u8; 28] = [
            0x00, 0x00, 0x04, 0x18,             // frame: 1048 bytes follow (big-endian)
            0x01, 0x00, 0x01, 0x00,             // major 1, minor 1
            0x00, 0x00, 0x00, 0x00,             // type GET_QUOTE_REQ
            0x18, 0x04, 0x00, 0x00,             // size 1048 = 16 + 8 + 1024
            0x00, 0x00, 0x00, 0x00,             // error_code
            0x00, 0x04, 0x00, 0x00,             // report_size 1024
            0x00, 0x00, 0x00, 0x00,             // id_list_size 0
        ];
        let report = tdreport();
        let req = encode_get_quote_request(&report);
        assert_eq!(req.len(), 4 + 1048);
        assert_eq!(req[..28], golden_head);
        assert_eq!(req[28..], report);
    }

    #[test]
    fn response_yields_its_quote() {
        #[rustfmt::skip]
        let golden: [u8; 29] = [
            0x01, 0x00, 0x01, 0x00,             // major 1, minor 1
            0x01, 0x00, 0x00, 0x00,             // type GET_QUOTE_RESP
            0x1d, 0x00, 0x00, 0x00,             // size 29
            0x00, 0x00, 0x00, 0x00,             // error_code 0
            0x00, 0x00, 0x00, 0x00,             // selected_id_size 0
            0x05, 0x00, 0x00, 0x00,             // quote_size 5
            b'q', b'u', b'o', b't', b'e',
        ];
        assert_eq!(decode_get_quote_response(&golden).unwrap(), b"quote");
        assert_eq!(response(1, 1, 0, b"", b"quote"), golden, "the test builder writes the same bytes");
        assert_eq!(decode_get_quote_response(&response(0, 1, 0, b"", b"q")).unwrap(), b"q", "minor 0");
    }

    #[test]
    fn refuses_malformed_responses() {
        let good = response(1, GET_QUOTE_RESP, 0, b"", b"quote");
        for n in 0..GET_QUOTE_FIXED_LEN {
            assert_eq!(decode_get_quote_response(&good[..n]), Err(QgsError::Truncated(n)));
        }
        assert!(matches!(decode_get_quote_response(&good[..good.len() - 1]), Err(QgsError::Size(_))));
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(decode_get_quote_response(&longer), Err(QgsError::Size(_))), "trailing byte");

        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(decode_get_quote_response(&v2), Err(QgsError::Version { major: 2, minor: 1 }));
        assert_eq!(
            decode_get_quote_response(&response(2, GET_QUOTE_RESP, 0, b"", b"q")),
            Err(QgsError::Version { major: 1, minor: 2 })
        );
        assert_eq!(
            decode_get_quote_response(&response(1, GET_QUOTE_REQ, 0, b"", b"q")),
            Err(QgsError::Type(0))
        );
        assert_eq!(decode_get_quote_response(&response(1, 3, 0, b"", b"q")), Err(QgsError::Type(3)));

        // quote_size claims more than the message holds (and wraps u32 if added naively).
        let mut lying = good.clone();
        lying[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_get_quote_response(&lying), Err(QgsError::Size(_))));
        assert!(matches!(decode_get_quote_response(&response(1, 1, 0, b"", b"")), Err(QgsError::Size(_))));
        assert_eq!(
            decode_get_quote_response(&response(1, 1, 0, &[0xaa; 16], b"q")),
            Err(QgsError::SelectedId(16))
        );
    }

    #[test]
    fn error_status_is_a_refusal_only_when_well_formed() {
        // TEE_ATT_ERROR_... from the TDQE: a refusal the operator can look up.
        assert_eq!(
            decode_get_quote_response(&response(1, 1, 0x11001, b"", b"")),
            Err(QgsError::Refused(0x11001))
        );
        assert_eq!(
            decode_get_quote_response(&response(1, 1, ERROR_CODE_MAX - 1, b"", b"")),
            Err(QgsError::Refused(ERROR_CODE_MAX - 1))
        );
        assert_eq!(
            decode_get_quote_response(&response(1, 1, ERROR_CODE_MAX, b"", b"")),
            Err(QgsError::UnknownErrorCode(ERROR_CODE_MAX))
        );
        assert!(matches!(
            decode_get_quote_response(&response(1, 1, 0x11001, b"", b"q")),
            Err(QgsError::Size(_))
        ));
        assert!(matches!(AttestError::from(QgsError::Refused(1)), AttestError::Refused(_)));
        assert!(matches!(AttestError::from(QgsError::Type(0)), AttestError::Malformed(_)));
    }

    #[test]
    fn frame_lengths_are_bounded_before_allocation() {
        assert_eq!(decode_frame_len((GET_QUOTE_FIXED_LEN as u32).to_be_bytes()), Ok(GET_QUOTE_FIXED_LEN));
        assert_eq!(decode_frame_len((MAX_RESPONSE_LEN as u32).to_be_bytes()), Ok(MAX_RESPONSE_LEN));
        for bad in [0, 23, MAX_RESPONSE_LEN as u32 + 1, u32::MAX] {
            assert_eq!(decode_frame_len(bad.to_be_bytes()), Err(QgsError::FrameLength(bad)));
        }
        // Big-endian, not little-endian: 0x18000000 as LE would be 24.
        assert!(decode_frame_len([0x18, 0, 0, 0]).is_err());
    }

    /// A fake QGS on one end of a socket pair: checks the request it gets, answers `answer`.
    fn fake_qgs(answer: Vec<u8>) -> (UnixStream, std::thread::JoinHandle<Vec<u8>>) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let qgs = std::thread::spawn(move || {
            let mut req = vec![0u8; 4 + GET_QUOTE_REQ_LEN];
            theirs.read_exact(&mut req).unwrap();
            theirs.write_all(&answer).unwrap();
            req
        });
        (ours, qgs)
    }

    #[test]
    fn exchanges_a_quote_with_a_qgs() {
        let (mut stream, qgs) = fake_qgs(framed(&response(1, 1, 0, b"", b"a quote")));
        let quote = get_quote(&mut stream, &tdreport(), Instant::now() + Duration::from_secs(10)).unwrap();
        assert_eq!(quote, b"a quote");
        assert_eq!(qgs.join().unwrap(), encode_get_quote_request(&tdreport()));
    }

    #[test]
    fn refuses_an_oversized_frame_without_reading_it() {
        let (mut stream, _qgs) = fake_qgs(u32::MAX.to_be_bytes().to_vec());
        let err = get_quote(&mut stream, &tdreport(), Instant::now() + Duration::from_secs(10)).unwrap_err();
        assert!(matches!(err, AttestError::Malformed(ref m) if m.contains("4294967295")), "{err}");
    }

    #[test]
    fn a_qgs_that_hangs_up_mid_answer_is_an_io_error() {
        let mut answer = framed(&response(1, 1, 0, b"", b"a quote"));
        answer.truncate(answer.len() - 3);
        // The fake closes its end once it has written: EOF three bytes early, not a timeout.
        let (mut stream, _qgs) = fake_qgs(answer);
        let err = get_quote(&mut stream, &tdreport(), Instant::now() + Duration::from_secs(10)).unwrap_err();
        assert!(matches!(err, AttestError::Io(ref m) if m.contains("closed")), "{err}");
    }

    #[test]
    fn a_silent_qgs_runs_into_the_deadline() {
        let (mut stream, theirs) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let err = get_quote(&mut stream, &tdreport(), started + Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, AttestError::Io(ref m) if m.contains("in time")), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(theirs);
    }
}
