//! The evidence extension's value and the evidence CBOR (see the crate docs for the format).
//!
//! Both directions live here so that the guest and the client cannot drift apart. Decoding is
//! strict: a DER `OCTET STRING` with a minimal definite length and nothing after it, CBOR that
//! decodes to exactly one `Evidence` within the limits and re-encodes to the same bytes.

use nacre_protocol::cbor;
use nacre_wire::Evidence;
use nacre_wire::binding::ModelBinding;

use crate::MAX_EVIDENCE_LEN;
use crate::error::Malformed;

/// DER tag of `OCTET STRING`.
const TAG_OCTET_STRING: u8 = 0x04;

/// The CBOR encoding of `evidence`, checked against the envelope's and this format's limits.
pub fn evidence_to_cbor(evidence: &Evidence) -> Result<Vec<u8>, Malformed> {
    evidence.check_limits().map_err(Malformed::Envelope)?;
    let bytes = cbor::to_vec(evidence).map_err(|e| Malformed::Cbor(e.to_string()))?;
    if bytes.len() > MAX_EVIDENCE_LEN {
        return Err(Malformed::TooLarge { len: bytes.len(), max: MAX_EVIDENCE_LEN });
    }
    Ok(bytes)
}

/// Decodes evidence CBOR strictly: size limit, one data item, no unknown fields, the envelope's
/// limits, and the canonical encoding (re-encoding gives back the input).
pub fn evidence_from_cbor(bytes: &[u8]) -> Result<Evidence, Malformed> {
    if bytes.len() > MAX_EVIDENCE_LEN {
        return Err(Malformed::TooLarge { len: bytes.len(), max: MAX_EVIDENCE_LEN });
    }
    let evidence: Evidence = cbor::from_slice(bytes).map_err(|e| Malformed::Cbor(e.to_string()))?;
    evidence.check_limits().map_err(Malformed::Envelope)?;
    let again = cbor::to_vec(&evidence).map_err(|e| Malformed::Cbor(e.to_string()))?;
    if again != bytes {
        return Err(Malformed::NonCanonical);
    }
    Ok(evidence)
}

/// The extension's `extnValue` contents: DER `OCTET STRING` wrapping the evidence CBOR.
pub fn encode_value(evidence: &Evidence) -> Result<Vec<u8>, Malformed> {
    Ok(der_octet_string(&evidence_to_cbor(evidence)?))
}

/// Decodes an extension's `extnValue` contents.
pub fn decode_value(extn_value: &[u8]) -> Result<Evidence, Malformed> {
    evidence_from_cbor(parse_der_octet_string(extn_value)?)
}

/// The extension as `rcgen` adds it to a certificate: [`crate::EVIDENCE_OID`], non-critical.
pub fn custom_extension(evidence: &Evidence) -> Result<rcgen::CustomExtension, Malformed> {
    Ok(rcgen::CustomExtension::from_oid_content(crate::EVIDENCE_OID, encode_value(evidence)?))
}

/// The model binding extension as `rcgen` adds it: [`crate::BINDING_OID`], non-critical, a DER
/// `OCTET STRING` of the binding's 96 bytes.
pub fn binding_extension(model: &ModelBinding) -> rcgen::CustomExtension {
    rcgen::CustomExtension::from_oid_content(crate::BINDING_OID, der_octet_string(&model.to_bytes()))
}

/// Decodes the model binding extension's `extnValue` contents strictly.
pub fn decode_binding(extn_value: &[u8]) -> Result<ModelBinding, Malformed> {
    let bytes = parse_der_octet_string(extn_value)?;
    ModelBinding::from_bytes(bytes).ok_or(Malformed::BindingLength { len: bytes.len() })
}

fn der_octet_string(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(TAG_OCTET_STRING);
    match u8::try_from(content.len()) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let be = content.len().to_be_bytes();
            let skip = be.iter().take_while(|b| **b == 0).count();
            let n = be.len() - skip; // 1..=8, so the cast cannot truncate
            out.push(0x80 | n as u8);
            out.extend_from_slice(&be[skip..]);
        }
    }
    out.extend_from_slice(content);
    out
}

/// Parses exactly one DER `OCTET STRING` (primitive, definite minimal length, no trailing
/// bytes) and returns its contents.
fn parse_der_octet_string(input: &[u8]) -> Result<&[u8], Malformed> {
    let (&tag, rest) = input.split_first().ok_or(Malformed::Der("empty"))?;
    if tag != TAG_OCTET_STRING {
        return Err(Malformed::Der("not a primitive OCTET STRING"));
    }
    let (&first, rest) = rest.split_first().ok_or(Malformed::Der("truncated length"))?;
    let (len, contents) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 {
            return Err(Malformed::Der("indefinite length"));
        }
        // Three length octets already exceed MAX_EVIDENCE_LEN; more is never legitimate.
        if n > 3 {
            return Err(Malformed::Der("length field too long"));
        }
        if rest.len() < n {
            return Err(Malformed::Der("truncated length"));
        }
        let (octets, contents) = rest.split_at(n);
        if octets[0] == 0 {
            return Err(Malformed::Der("non-minimal length"));
        }
        let len = octets.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        if len < 0x80 {
            return Err(Malformed::Der("non-minimal length"));
        }
        (len, contents)
    };
    if len > MAX_EVIDENCE_LEN {
        return Err(Malformed::TooLarge { len, max: MAX_EVIDENCE_LEN });
    }
    if contents.len() != len {
        return Err(Malformed::Der("length does not match the contents (truncated or trailing bytes)"));
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use nacre_wire::Tee;
    use serde_bytes::ByteBuf;

    fn evidence(report_len: usize) -> Evidence {
        Evidence {
            tee: Tee::Sim,
            report: vec![7; report_len],
            certs: vec![ByteBuf::from(vec![1, 2, 3])],
            event_log: None,
        }
    }

    #[test]
    fn round_trip_and_length_forms() {
        for len in [1, 0x60, 0x80, 0x100, 0x1_0000] {
            let e = evidence(len.min(nacre_wire::evidence::MAX_REPORT_LEN));
            let value = encode_value(&e).unwrap();
            assert_eq!(decode_value(&value).unwrap(), e);
        }
        for len in [0usize, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000] {
            let content = vec![0xab; len];
            let der = der_octet_string(&content);
            assert_eq!(parse_der_octet_string(&der).unwrap(), &content[..], "len {len}");
        }
        assert_eq!(der_octet_string(&[1, 2]), [0x04, 0x02, 1, 2]);
        assert_eq!(&der_octet_string(&[0; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(&der_octet_string(&[0; 0x100])[..4], [0x04, 0x82, 0x01, 0x00]);
    }

    #[test]
    fn der_is_strict() {
        let bad: [(&[u8], &str); 9] = [
            (&[], "empty"),
            (&[0x24, 0x00], "constructed"),
            (&[0x0c, 0x01, 0x00], "UTF8String"),
            (&[0x04, 0x80, 0x00, 0x00], "indefinite"),
            (&[0x04, 0x81, 0x01, 0x00], "non-minimal (short form fits)"),
            (&[0x04, 0x82, 0x00, 0x80], "non-minimal (leading zero)"),
            (&[0x04, 0x02, 0x00], "truncated"),
            (&[0x04, 0x01, 0x00, 0x00], "trailing"),
            (&[0x04, 0x84, 0x00, 0x00, 0x00, 0x01], "length field too long"),
        ];
        for (der, why) in bad {
            assert!(parse_der_octet_string(der).is_err(), "{why}");
        }
    }

    #[test]
    fn cbor_is_strict() {
        let good = evidence_to_cbor(&evidence(16)).unwrap();
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(evidence_from_cbor(&trailing), Err(Malformed::Cbor(_))));
        // The same map with an indefinite-length byte string for "report": decodes, but is not
        // the canonical encoding.
        let report_key = b"freport";
        let at = good.windows(report_key.len()).position(|w| w == report_key).unwrap() + report_key.len();
        assert_eq!(good[at], 0x50); // bstr(16)
        let mut chunked = good[..at].to_vec();
        chunked.extend_from_slice(&[0x5f, 0x50]);
        chunked.extend_from_slice(&good[at + 1..at + 17]);
        chunked.push(0xff);
        chunked.extend_from_slice(&good[at + 17..]);
        assert_eq!(evidence_from_cbor(&chunked), Err(Malformed::NonCanonical));
        // Unknown fields and envelope limits.
        assert!(evidence_from_cbor(&[0xa0]).is_err());
        let empty_report = Evidence { report: vec![], ..evidence(1) };
        assert!(matches!(evidence_to_cbor(&empty_report), Err(Malformed::Envelope(_))));
        let too_big = vec![0u8; MAX_EVIDENCE_LEN + 1];
        assert!(matches!(evidence_from_cbor(&too_big), Err(Malformed::TooLarge { .. })));
    }

    #[test]
    fn oid_constants_agree() {
        let oid = x509_parser::oid_registry::Oid::from(crate::EVIDENCE_OID).unwrap();
        assert_eq!(oid.to_id_string(), crate::EVIDENCE_OID_STR);
        // The DER contents of the OID, for implementers in other languages.
        assert_eq!(hex::encode(oid.as_bytes()), "6987fff9f068");
    }
}
