//! The simulated secure processor's channel (DESIGN.md §9): the guest asks for a report over
//! a virtio-serial port and the host-side simulator answers. Fixed-size requests and a
//! length-prefixed, bounded response, parsed strictly on both sides.
//!
//! ```text
//! request   "NSP1" ‖ REPORT_DATA[64]                                   (68 bytes exactly)
//! response  "NSR1" ‖ status u8 ‖ body_len u32 BE ‖ body
//!           status 0: body = report[1184] ‖ count u8 ‖ count × (len u32 BE ‖ DER)
//!           status 1: body = UTF-8 reason
//! ```

use crate::snp::REPORT_LEN;
use crate::{Evidence, Tee, WireError};

pub const REQUEST_MAGIC: [u8; 4] = *b"NSP1";
pub const REQUEST_LEN: usize = 4 + 64;
pub const RESPONSE_MAGIC: [u8; 4] = *b"NSR1";
pub const RESPONSE_HEADER_LEN: usize = 4 + 1 + 4;
/// Largest response body: a report, ARK/ASK/VCEK and a CRL with room to spare.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest error reason.
pub const MAX_REASON: usize = 512;

pub fn encode_request(report_data: &[u8; 64]) -> [u8; REQUEST_LEN] {
    let mut out = [0u8; REQUEST_LEN];
    out[..4].copy_from_slice(&REQUEST_MAGIC);
    out[4..].copy_from_slice(report_data);
    out
}

pub fn decode_request(buf: &[u8; REQUEST_LEN]) -> Result<[u8; 64], WireError> {
    if buf[..4] != REQUEST_MAGIC {
        return Err(WireError::Inconsistent { what: "secure-processor request magic" });
    }
    let mut rd = [0u8; 64];
    rd.copy_from_slice(&buf[4..]);
    Ok(rd)
}

/// A decoded response: the evidence, or the simulator's reason for refusing.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    Report(Evidence),
    Refused(String),
}

pub fn encode_report(evidence: &Evidence) -> Result<Vec<u8>, WireError> {
    if evidence.report.len() != REPORT_LEN {
        return Err(WireError::Length {
            what: "report",
            expected: REPORT_LEN,
            actual: evidence.report.len(),
        });
    }
    evidence.check_limits()?;
    let mut body = evidence.report.clone();
    body.push(evidence.certs.len() as u8);
    for c in &evidence.certs {
        body.extend_from_slice(&(c.len() as u32).to_be_bytes());
        body.extend_from_slice(c);
    }
    frame(0, &body)
}

pub fn encode_refusal(reason: &str) -> Result<Vec<u8>, WireError> {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    frame(1, &reason.as_bytes()[..end])
}

fn frame(status: u8, body: &[u8]) -> Result<Vec<u8>, WireError> {
    if body.len() > MAX_BODY {
        return Err(WireError::OutOfRange {
            field: "secure-processor response length",
            value: body.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(RESPONSE_HEADER_LEN + body.len());
    out.extend_from_slice(&RESPONSE_MAGIC);
    out.push(status);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Checks a response header and returns (status, body length) — so a reader knows how much
/// more to read, and never reads more than [`MAX_BODY`].
pub fn decode_response_header(h: &[u8; RESPONSE_HEADER_LEN]) -> Result<(u8, usize), WireError> {
    if h[..4] != RESPONSE_MAGIC {
        return Err(WireError::Inconsistent { what: "secure-processor response magic" });
    }
    let status = h[4];
    let len = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
    let max = match status {
        0 => MAX_BODY,
        1 => MAX_REASON,
        s => {
            return Err(WireError::OutOfRange {
                field: "secure-processor response status",
                value: u64::from(s),
            });
        }
    };
    if len > max {
        return Err(WireError::OutOfRange { field: "secure-processor response length", value: len as u64 });
    }
    Ok((status, len))
}

pub fn decode_response_body(status: u8, body: &[u8]) -> Result<Response, WireError> {
    if status == 1 {
        let reason = std::str::from_utf8(body)
            .map_err(|_| WireError::Inconsistent { what: "refusal reason is not UTF-8" })?;
        return Ok(Response::Refused(reason.to_owned()));
    }
    let short = || WireError::Inconsistent { what: "secure-processor response truncated" };
    let report = body.get(..REPORT_LEN).ok_or_else(short)?.to_vec();
    let count = *body.get(REPORT_LEN).ok_or_else(short)? as usize;
    let mut rest = &body[REPORT_LEN + 1..];
    let mut certs = Vec::with_capacity(count.min(crate::evidence::MAX_CERTS));
    for _ in 0..count {
        let len =
            u32::from_be_bytes(rest.get(..4).ok_or_else(short)?.try_into().map_err(|_| short())?) as usize;
        let der = rest.get(4..4 + len).ok_or_else(short)?;
        certs.push(serde_bytes::ByteBuf::from(der.to_vec()));
        rest = &rest[4 + len..];
    }
    if !rest.is_empty() {
        return Err(WireError::Inconsistent { what: "trailing bytes after the certificates" });
    }
    let evidence = Evidence { tee: Tee::Sim, report, certs, event_log: None };
    evidence.check_limits()?;
    Ok(Response::Report(evidence))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn evidence() -> Evidence {
        Evidence {
            tee: Tee::Sim,
            report: vec![7; REPORT_LEN],
            certs: vec![serde_bytes::ByteBuf::from(vec![1, 2, 3]), serde_bytes::ByteBuf::from(vec![4; 300])],
            event_log: None,
        }
    }

    fn decode(frame: &[u8]) -> Result<Response, WireError> {
        let (status, len) = decode_response_header(frame[..RESPONSE_HEADER_LEN].try_into().unwrap())?;
        if frame.len() != RESPONSE_HEADER_LEN + len {
            return Err(WireError::Inconsistent { what: "length" });
        }
        decode_response_body(status, &frame[RESPONSE_HEADER_LEN..])
    }

    #[test]
    fn round_trips() {
        let rd = [9u8; 64];
        assert_eq!(decode_request(&encode_request(&rd)).unwrap(), rd);
        assert_eq!(decode(&encode_report(&evidence()).unwrap()).unwrap(), Response::Report(evidence()));
        assert_eq!(decode(&encode_refusal("no").unwrap()).unwrap(), Response::Refused("no".into()));
    }

    #[test]
    fn every_malformation_is_refused() {
        let mut req = encode_request(&[0; 64]);
        req[0] = b'X';
        assert!(decode_request(&req).is_err());
        let good = encode_report(&evidence()).unwrap();
        // Truncation anywhere in the body, one byte too many, a bad magic/status, a huge length.
        for cut in [RESPONSE_HEADER_LEN + 10, RESPONSE_HEADER_LEN + REPORT_LEN, good.len() - 1] {
            let mut f = good[..cut].to_vec();
            let len = (f.len() - RESPONSE_HEADER_LEN) as u32;
            f[5..9].copy_from_slice(&len.to_be_bytes());
            assert!(decode(&f).is_err(), "cut at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        let len = (extra.len() - RESPONSE_HEADER_LEN) as u32;
        extra[5..9].copy_from_slice(&len.to_be_bytes());
        assert!(decode(&extra).is_err());
        let mut h: [u8; RESPONSE_HEADER_LEN] = good[..RESPONSE_HEADER_LEN].try_into().unwrap();
        h[4] = 2;
        assert!(decode_response_header(&h).is_err());
        h[4] = 0;
        h[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_response_header(&h).is_err());
        h[0] = b'Z';
        assert!(decode_response_header(&h).is_err());
        // A report of the wrong size is not encoded.
        let mut short = evidence();
        short.report.pop();
        assert!(encode_report(&short).is_err());
    }
}
