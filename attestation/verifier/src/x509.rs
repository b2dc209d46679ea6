//! Certificates and CRLs: reading PEM/DER inputs in any order, recognising their role from
//! their content, and checking X.509 signatures with aws-lc-rs.
//!
//! Only two signature algorithms are accepted: RSASSA-PSS with SHA-384 / MGF1-SHA-384 /
//! salt 48 (AMD's ARK and ASK) and ECDSA P-384 with SHA-384 (the simulated hierarchy).
//! Everything else is rejected before any key is used.

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::oid;
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo};
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::AlgorithmIdentifier;

use crate::error::{ChainError, MalformedError};

/// One input file may hold several PEM blocks, or one DER object.
#[derive(Clone, Debug, Default)]
pub struct CertSet {
    /// DER certificates, in input order.
    pub certs: Vec<Vec<u8>>,
    /// DER CRLs, in input order.
    pub crls: Vec<Vec<u8>>,
}

impl CertSet {
    /// Adds the objects found in `data` (PEM with any number of `CERTIFICATE` / `X509 CRL`
    /// blocks, or a single DER certificate or CRL). Every object must parse completely.
    pub fn add(&mut self, data: &[u8]) -> Result<(), MalformedError> {
        let trimmed = data.trim_ascii_start();
        if trimmed.starts_with(b"-----BEGIN") {
            let mut found = 0;
            for pem in x509_parser::pem::Pem::iter_from_buffer(data) {
                let pem = pem.map_err(|e| MalformedError::Certificate(format!("PEM: {e}")))?;
                match pem.label.as_str() {
                    "CERTIFICATE" => self.push_cert(pem.contents)?,
                    "X509 CRL" => self.push_crl(pem.contents)?,
                    other => {
                        return Err(MalformedError::Certificate(format!("unexpected PEM block {other:?}")));
                    }
                }
                found += 1;
            }
            if found == 0 {
                return Err(MalformedError::Certificate("no PEM block found".into()));
            }
            Ok(())
        } else if parse_cert(data).is_ok() {
            self.push_cert(data.to_vec())
        } else if parse_crl(data).is_ok() {
            self.push_crl(data.to_vec())
        } else {
            Err(MalformedError::Certificate("neither a DER certificate nor a DER CRL".into()))
        }
    }

    /// Builds a set from DER certificates and CRLs already split by the caller.
    pub fn from_der(certs: Vec<Vec<u8>>, crls: Vec<Vec<u8>>) -> Result<Self, MalformedError> {
        let mut set = CertSet::default();
        for c in certs {
            set.push_cert(c)?;
        }
        for c in crls {
            set.push_crl(c)?;
        }
        Ok(set)
    }

    fn push_cert(&mut self, der: Vec<u8>) -> Result<(), MalformedError> {
        parse_cert(&der)?;
        if !self.certs.contains(&der) {
            self.certs.push(der);
        }
        Ok(())
    }

    fn push_crl(&mut self, der: Vec<u8>) -> Result<(), MalformedError> {
        parse_crl(&der)?;
        if !self.crls.contains(&der) {
            self.crls.push(der);
        }
        Ok(())
    }
}

/// Parses one DER certificate; trailing bytes are an error.
pub fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, MalformedError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => {
            Err(MalformedError::Certificate(format!("{} trailing bytes after certificate", rest.len())))
        }
        Err(e) => Err(MalformedError::Certificate(e.to_string())),
    }
}

/// Parses one DER CRL; trailing bytes are an error.
pub fn parse_crl(der: &[u8]) -> Result<CertificateRevocationList<'_>, MalformedError> {
    match CertificateRevocationList::from_der(der) {
        Ok(([], crl)) => Ok(crl),
        Ok((rest, _)) => Err(MalformedError::Certificate(format!("{} trailing bytes after CRL", rest.len()))),
        Err(e) => Err(MalformedError::Certificate(format!("CRL: {e}"))),
    }
}

const OID_SHA384: Oid<'static> = oid!(2.16.840.1.101.3.4.2.2);
const OID_MGF1: Oid<'static> = oid!(1.2.840.113549.1.1.8);
const OID_EC_PUBLIC_KEY: Oid<'static> = oid!(1.2.840.10045.2.1);
const OID_SECP384R1: Oid<'static> = oid!(1.3.132.0.34);
const OID_RSA_ENCRYPTION: Oid<'static> = oid!(1.2.840.113549.1.1.1);
const OID_ECDSA_SHA384: Oid<'static> = oid!(1.2.840.10045.4.3.3);

/// Checks `signature` over `message` (an X.509 TBS structure) by the key in `issuer`.
pub fn verify_signed(
    issuer: &SubjectPublicKeyInfo<'_>,
    algorithm: &AlgorithmIdentifier<'_>,
    message: &[u8],
    signature_bits: &[u8],
    what: &'static str,
) -> Result<(), ChainError> {
    let key_bytes: &[u8] = &issuer.subject_public_key.data;
    let alg: &'static dyn signature::VerificationAlgorithm = match SignatureAlgorithm::try_from(algorithm) {
        Ok(SignatureAlgorithm::RSASSA_PSS(params)) => {
            let mgf_hash_ok = params
                .mask_gen_algorithm()
                .map(|m| m.mgf == OID_MGF1 && m.hash == OID_SHA384)
                .unwrap_or(false);
            if *params.hash_algorithm_oid() != OID_SHA384 || !mgf_hash_ok || params.salt_length() != 48 {
                return Err(ChainError::UnsupportedAlgorithm {
                    what,
                    algorithm: "RSASSA-PSS other than SHA-384/MGF1-SHA-384/48".into(),
                });
            }
            if issuer.algorithm.algorithm != OID_RSA_ENCRYPTION {
                return Err(ChainError::UnsupportedAlgorithm {
                    what,
                    algorithm: "RSASSA-PSS with a non-RSA issuer key".into(),
                });
            }
            &signature::RSA_PSS_2048_8192_SHA384
        }
        Ok(SignatureAlgorithm::ECDSA) if algorithm.algorithm == OID_ECDSA_SHA384 => {
            if !is_p384(issuer) {
                return Err(ChainError::UnsupportedAlgorithm {
                    what,
                    algorithm: "ECDSA-SHA384 with a non-P-384 issuer key".into(),
                });
            }
            &signature::ECDSA_P384_SHA384_ASN1
        }
        _ => {
            return Err(ChainError::UnsupportedAlgorithm {
                what,
                algorithm: algorithm.algorithm.to_id_string(),
            });
        }
    };
    UnparsedPublicKey::new(alg, key_bytes)
        .verify(message, signature_bits)
        .map_err(|_| ChainError::BadSignature { what })
}

/// True for an id-ecPublicKey on secp384r1.
pub fn is_p384(spki: &SubjectPublicKeyInfo<'_>) -> bool {
    spki.algorithm.algorithm == OID_EC_PUBLIC_KEY
        && spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()) == Some(OID_SECP384R1)
}

/// Verifies a certificate's signature with its issuer's key.
pub fn verify_cert_signature(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    what: &'static str,
) -> Result<(), ChainError> {
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(ChainError::IssuerMismatch { what });
    }
    // The outer and inner (TBS) signature algorithms must agree (RFC 5280 §4.1.1.2).
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(ChainError::UnsupportedAlgorithm {
            what,
            algorithm: "outer/inner algorithm mismatch".into(),
        });
    }
    verify_signed(
        issuer.public_key(),
        &cert.signature_algorithm,
        cert.tbs_certificate.as_ref(),
        &cert.signature_value.data,
        what,
    )
}

/// Verifies a CRL's signature with its issuer's key.
pub fn verify_crl_signature(
    crl: &CertificateRevocationList<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), ChainError> {
    if crl.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(ChainError::IssuerMismatch { what: "CRL" });
    }
    if crl.signature_algorithm != crl.tbs_cert_list.signature {
        return Err(ChainError::UnsupportedAlgorithm {
            what: "CRL",
            algorithm: "outer/inner algorithm mismatch".into(),
        });
    }
    verify_signed(
        issuer.public_key(),
        &crl.signature_algorithm,
        crl.tbs_cert_list.as_ref(),
        &crl.signature_value.data,
        "CRL",
    )
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo (DER), the form roots are pinned in.
pub fn spki_sha256(cert: &X509Certificate<'_>) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A certificate's validity window, in Unix seconds.
pub fn validity(cert: &X509Certificate<'_>) -> (i64, i64) {
    (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp())
}
