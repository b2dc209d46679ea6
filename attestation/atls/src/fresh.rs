//! The fresh, channel-bound attestation: `GET /v1/attestation?nonce=HEX` on an attested TLS
//! connection returns new evidence whose REPORT_DATA binds the client's nonce, the TLS exporter
//! value of that connection, the certificate's key and the model digest.
//!
//! The server takes the exporter from its side of the connection the request arrived on
//! ([`exporter`]); the client takes it from its side of the same connection and checks the
//! evidence with its own nonce ([`verify_fresh`]). A relay that terminates the client's TLS
//! with a leaked certificate key has a different TLS session with the guest, so the guest binds
//! the relay's exporter, not the client's; evidence replayed for another nonce fails the same
//! way.
//!
//! Limits: the nonce is exactly [`NONCE_LEN`] bytes, sent as exactly 64 hex digits; the query
//! is exactly `nonce=<64 hex digits>` (so at most [`MAX_QUERY_LEN`] bytes); the response body is
//! CBOR evidence of at most [`MAX_EVIDENCE_LEN`] bytes.

use nacre_verifier::{Claims, PlatformClaims, Verified};
use nacre_wire::binding::{ModelBinding, TlsBinding};
use nacre_wire::{Evidence, WireError};

use crate::error::{AtlsError, Malformed};
use crate::verify::{AttestationPolicy, AttestedPeer};
use crate::{EXPORTER_LABEL, EXPORTER_LEN, MAX_EVIDENCE_LEN, NONCE_LEN};

/// The request path.
pub const PATH: &str = "/v1/attestation";
/// The response's content type.
pub const CONTENT_TYPE: &str = "application/cbor";
/// The longest query the server accepts: `nonce=` and 64 hex digits.
pub const MAX_QUERY_LEN: usize = "nonce=".len() + 2 * NONCE_LEN;

/// A client's nonce: 32 random bytes, new for every request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce([u8; NONCE_LEN]);

impl Nonce {
    /// A new random nonce from the system generator.
    pub fn random() -> Result<Self, AtlsError> {
        let mut bytes = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| AtlsError::Random)?;
        Ok(Nonce(bytes))
    }

    pub fn from_bytes(bytes: [u8; NONCE_LEN]) -> Self {
        Nonce(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }

    /// Lowercase hex, as sent in the query.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Exactly 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Result<Self, AtlsError> {
        if text.len() != 2 * NONCE_LEN {
            return Err(AtlsError::BadMessage(format!(
                "nonce: expected {} hex digits, got {} characters",
                2 * NONCE_LEN,
                text.len()
            )));
        }
        let mut bytes = [0u8; NONCE_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|e| AtlsError::BadMessage(format!("nonce: {e}")))?;
        Ok(Nonce(bytes))
    }
}

impl core::fmt::Debug for Nonce {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Nonce({})", self.to_hex())
    }
}

/// The request target for `nonce`: `/v1/attestation?nonce=<hex>`.
pub fn request_target(nonce: &Nonce) -> String {
    format!("{PATH}?nonce={}", nonce.to_hex())
}

/// Parses the query string of a request to [`PATH`] (without the `?`). Exactly one parameter,
/// `nonce`, with exactly 64 hex digits; anything else is refused.
pub fn parse_query(query: &str) -> Result<Nonce, AtlsError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(AtlsError::BadMessage(format!("query longer than {MAX_QUERY_LEN} bytes")));
    }
    match query.strip_prefix("nonce=") {
        Some(hex) => Nonce::from_hex(hex),
        None => Err(AtlsError::BadMessage("query must be exactly nonce=<64 hex digits>".into())),
    }
}

/// A connection's exporter value for the channel binding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Exporter([u8; EXPORTER_LEN]);

impl Exporter {
    pub fn from_bytes(bytes: [u8; EXPORTER_LEN]) -> Self {
        Exporter(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; EXPORTER_LEN] {
        &self.0
    }
}

impl core::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Exporter({})", hex::encode(self.0))
    }
}

/// The exporter value of a TLS 1.3 connection after its handshake: [`EXPORTER_LEN`] bytes with
/// label [`EXPORTER_LABEL`] and no context. Works on either side (`ServerConnection`,
/// `ClientConnection`); both sides of one connection get the same value.
pub fn exporter<D>(conn: &rustls::ConnectionCommon<D>) -> Result<Exporter, AtlsError> {
    if conn.is_handshaking() {
        return Err(AtlsError::Exporter("the handshake is not complete".into()));
    }
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return Err(AtlsError::Tls12Refused);
    }
    let out = conn
        .export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
        .map_err(|e| AtlsError::Exporter(e.to_string()))?;
    Ok(Exporter(out))
}

/// REPORT_DATA of a fresh attestation:
/// `TlsBinding { spki_sha256, model, Some(nonce), Some(exporter) }.report_data()`.
pub fn fresh_report_data(
    spki_sha256: &[u8; 32],
    model: &ModelBinding,
    nonce: &Nonce,
    exporter: &Exporter,
) -> Result<[u8; 64], WireError> {
    TlsBinding { spki_sha256, model, client_nonce: Some(&nonce.0), tls_exporter: Some(&exporter.0) }
        .report_data()
}

/// The response body for `evidence` (CBOR, [`CONTENT_TYPE`]).
pub fn encode_response(evidence: &Evidence) -> Result<Vec<u8>, Malformed> {
    crate::extension::evidence_to_cbor(evidence)
}

/// Decodes a response body strictly. Check the length against [`MAX_EVIDENCE_LEN`] before
/// reading a body of announced length.
pub fn decode_response(body: &[u8]) -> Result<Evidence, AtlsError> {
    if body.len() > MAX_EVIDENCE_LEN {
        return Err(AtlsError::BadMessage(format!(
            "response of {} bytes exceeds {MAX_EVIDENCE_LEN}",
            body.len()
        )));
    }
    crate::extension::evidence_from_cbor(body).map_err(|e| AtlsError::BadMessage(e.to_string()))
}

/// Checks a fresh attestation received on a connection whose certificate was verified as
/// `peer`: the evidence must pass `policy` with REPORT_DATA binding the certificate's key, the
/// expected model, the client's own `nonce` and the client side's `exporter` of the same
/// connection, and must come from the same guest (TEE and measurement) as the certificate's.
pub fn verify_fresh(
    policy: &AttestationPolicy,
    peer: &AttestedPeer,
    evidence: &Evidence,
    nonce: &Nonce,
    exporter: &Exporter,
    now: i64,
) -> Result<Verified<Claims>, AtlsError> {
    let report_data =
        fresh_report_data(peer.spki_sha256(), peer.model(), nonce, exporter).map_err(AtlsError::Binding)?;
    let fresh = policy.appraise(evidence, report_data, now).map_err(AtlsError::FreshEvidence)?;
    same_guest(peer.claims(), &fresh)?;
    Ok(fresh)
}

/// Whether two verified pieces of evidence come from the same guest: the same TEE and launch
/// measurement, and on TDX also RTMR0–3 (MRTD is the firmware alone: the kernel, command line
/// and initrd are in RTMR1/RTMR2, and RTMR3 is what the guest extended since).
fn same_guest(certified: &Claims, fresh: &Claims) -> Result<(), AtlsError> {
    let differ = |what, certificate: String, fresh: String| {
        Err(AtlsError::DifferentGuest { what, certificate, fresh })
    };
    if fresh.tee != certified.tee {
        return differ("TEE", certified.tee.to_string(), fresh.tee.to_string());
    }
    if fresh.measurement != certified.measurement {
        return differ("measurement", hex::encode(certified.measurement), hex::encode(fresh.measurement));
    }
    match (&certified.platform, &fresh.platform) {
        (PlatformClaims::Snp(_), PlatformClaims::Snp(_)) => Ok(()),
        (PlatformClaims::Tdx(c), PlatformClaims::Tdx(f)) => {
            const RTMR: [&str; 4] = ["rtmr0", "rtmr1", "rtmr2", "rtmr3"];
            for (i, what) in RTMR.into_iter().enumerate() {
                if c.td.rtmr[i] != f.td.rtmr[i] {
                    return differ(what, hex::encode(c.td.rtmr[i]), hex::encode(f.td.rtmr[i]));
                }
            }
            Ok(())
        }
        _ => differ("platform", certified.tee.to_string(), fresh.tee.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn nonce_and_query_limits() {
        let n = Nonce::random().unwrap();
        assert_ne!(n, Nonce::random().unwrap());
        let target = request_target(&n);
        let query = target.strip_prefix("/v1/attestation?").unwrap();
        assert_eq!(query.len(), MAX_QUERY_LEN);
        assert_eq!(parse_query(query).unwrap(), n);
        assert_eq!(parse_query(&query.to_uppercase().replace("NONCE", "nonce")).unwrap(), n);
        for bad in [
            "",
            "nonce=",
            "nonce=00",
            &format!("nonce={}", "0".repeat(63)),
            &format!("nonce={}", "0".repeat(65)),
            &format!("nonce={}", "g".repeat(64)),
            &format!("nonce={}&x=1", "0".repeat(64)),
            &format!("x=1&nonce={}", "0".repeat(64)),
            &format!("nonce={}&nonce={}", "0".repeat(64), "1".repeat(64)),
            &format!("Nonce={}", "0".repeat(64)),
        ] {
            assert!(matches!(parse_query(bad), Err(AtlsError::BadMessage(_))), "{bad:?}");
        }
    }

    fn tdx_claims(rtmr: [[u8; 48]; 4]) -> Claims {
        use nacre_verifier::{TdReport, TdxClaims, TdxTcbStatus};
        let td = TdReport {
            quote_version: 4,
            mrtd: [1; 48],
            rtmr,
            report_data: [0; 64],
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            mrseam: [0; 48],
            td_attributes: [0; 8],
            xfam: [0; 8],
            tee_tcb_svn: [0; 16],
        };
        Claims {
            tee: nacre_wire::Tee::Tdx,
            measurement: td.mrtd,
            report_data: [0; 64],
            debug: false,
            validity: Vec::new(),
            warnings: Vec::new(),
            platform: PlatformClaims::Tdx(Box::new(TdxClaims {
                tcb_status: TdxTcbStatus::UpToDate,
                advisory_ids: Vec::new(),
                td,
                event_log: None,
            })),
        }
    }

    /// Issue 12 §1: the fresh attestation's "same guest" check compares RTMR0–3 as well as
    /// MRTD: another kernel or initrd on the same firmware is another guest.
    #[test]
    fn same_guest_check_compares_every_tdx_rtmr() {
        let certified = tdx_claims([[0; 48]; 4]);
        assert!(same_guest(&certified, &tdx_claims([[0; 48]; 4])).is_ok());
        for (i, name) in ["rtmr0", "rtmr1", "rtmr2", "rtmr3"].into_iter().enumerate() {
            let mut rtmr = [[0; 48]; 4];
            rtmr[i][47] = 1;
            match same_guest(&certified, &tdx_claims(rtmr)) {
                Err(AtlsError::DifferentGuest { what, .. }) => assert_eq!(what, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn golden_fresh_binding() {
        // SHA-512("nacre/v2/tls" || 86 5820 spki 5820 identity 5820 guard 5820 release-key
        // 5820 nonce 5820 exporter), written out by hand for implementers in other languages.
        let spki = [1u8; 32];
        let model =
            ModelBinding { model_identity: [2; 32], guard_digest: [5; 32], release_key_digest: [6; 32] };
        let (nonce, exporter) = (Nonce::from_bytes([3; 32]), Exporter::from_bytes([4; 32]));
        let mut input = b"nacre/v2/tls".to_vec();
        input.push(0x86);
        for field in [[1u8; 32], [2; 32], [5; 32], [6; 32], [3; 32], [4; 32]] {
            input.extend_from_slice(&[0x58, 0x20]);
            input.extend_from_slice(&field);
        }
        let want = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, &input);
        assert_eq!(fresh_report_data(&spki, &model, &nonce, &exporter).unwrap(), want.as_ref());
        // The certificate's binding: the last two fields are CBOR null.
        let mut input = b"nacre/v2/tls".to_vec();
        input.push(0x86);
        for field in [[1u8; 32], [2; 32], [5; 32], [6; 32]] {
            input.extend_from_slice(&[0x58, 0x20]);
            input.extend_from_slice(&field);
        }
        input.extend_from_slice(&[0xf6, 0xf6]);
        let want = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, &input);
        let cert = TlsBinding { spki_sha256: &spki, model: &model, client_nonce: None, tls_exporter: None };
        assert_eq!(cert.report_data().unwrap(), want.as_ref());
    }
}
