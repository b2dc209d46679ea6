//! SEV-SNP (and the simulated TEE, which uses the same report format and this same code):
//! parse the report, build and verify ARK → ASK/ASVK → VCEK/VLEK, check the ARK's CRL, verify
//! the report signature over the received bytes, and match the endorsement key's TCB and hwID
//! extensions to the report. Policy is not decided here (see `pipeline`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, ParsedPublicKey};
use nacre_wire::snp::{Product, ReceivedReport, SigningKey, SnpReport, TcbVersion};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::oid;
use x509_parser::oid_registry::Oid;

use crate::claims::{Claims, PlatformClaims, SnpClaims, Validity};
use crate::error::{ChainError, MalformedError, VerifyError};
use crate::x509::{self, CertSet};

/// SHA-256 of the product's ARK SubjectPublicKeyInfo. These are AMD's published roots
/// (`https://kdsintf.amd.com/vcek/v1/{product}/cert_chain`); the ARK that arrives with the
/// evidence must carry exactly this key. Checked against ../shared/vectors/roots in tests.
pub fn ark_spki_sha256(product: Product) -> [u8; 32] {
    const MILAN: [u8; 32] = hex_literal("9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9");
    const GENOA: [u8; 32] = hex_literal("429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831");
    const TURIN: [u8; 32] = hex_literal("4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08");
    match product {
        Product::Milan => MILAN,
        Product::Genoa => GENOA,
        Product::Turin => TURIN,
    }
}

/// Only ever evaluated in constants: a malformed literal fails the build, never a run.
#[allow(clippy::panic)]
const fn hex_literal(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not lower-case hex"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 64);
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// Which roots a verifier trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnpRoots {
    /// AMD's ARKs, pinned per product.
    Amd,
    /// A simulated ARK, for sim mode only. Gives no security: whoever holds the sim keys can
    /// sign any report. Built only by [`SnpRoots::insecure_sim`], which logs a warning.
    InsecureSim { spki_sha256: [u8; 32] },
}

impl SnpRoots {
    /// Trusts the simulated ARK in `root_der` (a DER certificate).
    pub fn insecure_sim(root_der: &[u8]) -> Result<Self, crate::error::ConfigError> {
        let cert =
            x509::parse_cert(root_der).map_err(|e| crate::error::ConfigError::SimRoot(e.to_string()))?;
        let spki_sha256 = x509::spki_sha256(&cert);
        tracing::warn!(
            root = %hex::encode(spki_sha256),
            "INSECURE: trusting a simulated SEV-SNP root; evidence signed by it proves nothing about hardware"
        );
        Ok(SnpRoots::InsecureSim { spki_sha256 })
    }

    fn is_sim(&self) -> bool {
        matches!(self, SnpRoots::InsecureSim { .. })
    }
}

/// Whether the CRL was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrlStatus {
    Checked,
    /// No CRL was supplied; only reachable when the caller explicitly allowed it.
    Missing,
}

/// The result of verifying a certificate chain, independent of any one report; cached.
#[derive(Debug)]
struct VerifiedChain {
    product_from_root: Option<Product>,
    sim_product_name: Option<String>,
    key_kind: SigningKey,
    key: ParsedPublicKey,
    tcb: ExtTcb,
    hwid: Option<Vec<u8>>,
    validity: Vec<Validity>,
    crl: CrlStatus,
}

/// TCB components from the endorsement key's extensions (AMD VCEK spec, Table 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct ExtTcb {
    bootloader: Option<u8>,
    tee: Option<u8>,
    snp: Option<u8>,
    microcode: Option<u8>,
    fmc: Option<u8>,
}

const OID_PRODUCT_NAME: Oid<'static> = oid!(1.3.6.1.4.1.3704.1.2);
const OID_BL_SPL: Oid<'static> = oid!(1.3.6.1.4.1.3704.1.3.1);
const OID_TEE_SPL: Oid<'static> = oid!(1.3.6.1.4.1.3704.1.3.2);
const OID_SNP_SPL: Oid<'static> = oid!(1.3.6.1.4.1.3704.1.3.3);
const OID_UCODE_SPL: Oid<'static> = oid!(1.3.6.1.4.1.3704.1.3.8);
const OID_FMC_SPL: Oid<'static> = oid!(1.3.6.1.4.1.3704.1.3.9);
const OID_HWID: Oid<'static> = oid!(1.3.6.1.4.1.3704.1.4);

/// Upper bound on cached chains; the cache is cleared when full (chains are few: one per
/// chip and TCB).
const CHAIN_CACHE_MAX: usize = 4096;

/// Verifies SNP-format reports. Holds a cache of verified chains keyed by the SHA-256 of the
/// exact certificate and CRL bytes, so a chip seen before costs one ECDSA verification.
#[derive(Debug)]
pub struct SnpVerifier {
    roots: SnpRoots,
    cache: Mutex<HashMap<[u8; 32], Arc<VerifiedChain>>>,
}

impl SnpVerifier {
    pub fn new(roots: SnpRoots) -> Self {
        SnpVerifier { roots, cache: Mutex::new(HashMap::new()) }
    }

    pub fn tee(&self) -> nacre_wire::Tee {
        if self.roots.is_sim() { nacre_wire::Tee::Sim } else { nacre_wire::Tee::Snp }
    }

    /// Authenticates `report` with `certs`: parse, chain, CRL, signature, TCB/hwID match.
    /// Time windows are returned in the claims and checked by the pipeline.
    pub fn authenticate(
        &self,
        report: &[u8],
        certs: &CertSet,
        allow_missing_crl: bool,
    ) -> Result<Claims, VerifyError> {
        let received = SnpReport::parse(report).map_err(MalformedError::from)?;
        let r = &received.report;
        if r.signing_key == SigningKey::None {
            return Err(ChainError::Unsigned.into());
        }
        let cpuid_product = match r.cpuid {
            Some(c) => Some(
                Product::from_cpuid(c.family, c.model)
                    .ok_or(ChainError::UnknownProduct { family: c.family, model: c.model })?,
            ),
            None => None,
        };
        let chain = self.chain(certs, cpuid_product, r.signing_key)?;
        if chain.crl == CrlStatus::Missing && !allow_missing_crl {
            return Err(ChainError::CrlMissing.into());
        }
        let product =
            match (cpuid_product, chain.product_from_root) {
                (Some(p), _) | (None, Some(p)) => p,
                (None, None) => chain.sim_product_name.as_deref().and_then(Product::from_name).ok_or(
                    ChainError::Missing { role: "product (v2 sim report needs the VCEK productName)" },
                )?,
            };
        if chain.key_kind != r.signing_key {
            return Err(ChainError::EndorsementKind {
                report: key_name(r.signing_key),
                cert: key_name(chain.key_kind),
            }
            .into());
        }
        chain
            .key
            .verify_sig(received.signed_bytes(), &received.signature_fixed())
            .map_err(|_| ChainError::ReportSignature { key: key_name(chain.key_kind) })?;
        self.claims(&received, product, &chain)
    }

    fn claims(
        &self,
        received: &ReceivedReport<'_>,
        product: Product,
        chain: &VerifiedChain,
    ) -> Result<Claims, VerifyError> {
        let r = &received.report;
        let layout = product.tcb_layout();
        let decode = |t: nacre_wire::snp::RawTcb| {
            t.decode(layout).map_err(|e| VerifyError::from(MalformedError::from(e)))
        };
        let reported_tcb = decode(r.reported_tcb)?;
        check_tcb_extension(&chain.tcb, &reported_tcb, product)?;
        if let Some(hwid) = &chain.hwid {
            check_hwid(hwid, &r.chip_id, product)?;
        }
        let mut warnings = Vec::new();
        if chain.crl == CrlStatus::Missing {
            warnings.push("no CRL supplied: revocation of the ASK/VCEK was not checked".to_owned());
        }
        if self.roots.is_sim() {
            warnings
                .push("simulated TEE: signed by an insecure test root, no hardware protection".to_owned());
        }
        Ok(Claims {
            tee: self.tee(),
            measurement: r.measurement,
            report_data: r.report_data,
            debug: r.debug_allowed(),
            validity: chain.validity.clone(),
            warnings,
            platform: PlatformClaims::Snp(Box::new(SnpClaims {
                product,
                reported_tcb,
                committed_tcb: decode(r.committed_tcb)?,
                current_tcb: decode(r.current_tcb)?,
                launch_tcb: decode(r.launch_tcb)?,
                crl_checked: chain.crl == CrlStatus::Checked,
                report: r.clone(),
            })),
        })
    }

    fn chain(
        &self,
        certs: &CertSet,
        product: Option<Product>,
        key: SigningKey,
    ) -> Result<Arc<VerifiedChain>, VerifyError> {
        let cache_key = chain_cache_key(certs, product, key);
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(&cache_key).cloned()) {
            return Ok(hit);
        }
        let chain = Arc::new(self.verify_chain(certs, product, key)?);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CHAIN_CACHE_MAX {
                cache.clear();
            }
            cache.insert(cache_key, chain.clone());
        }
        Ok(chain)
    }

    fn verify_chain(
        &self,
        set: &CertSet,
        product: Option<Product>,
        key: SigningKey,
    ) -> Result<VerifiedChain, VerifyError> {
        let parsed: Vec<X509Certificate<'_>> =
            set.certs.iter().map(|d| x509::parse_cert(d)).collect::<Result<_, _>>()?;
        let self_issued = |c: &X509Certificate<'_>| c.subject().as_raw() == c.issuer().as_raw();
        let pick = |role: &'static str,
                    f: &dyn Fn(&X509Certificate<'_>) -> bool|
         -> Result<usize, ChainError> {
            let found: Vec<usize> = parsed.iter().enumerate().filter(|(_, c)| f(c)).map(|(i, _)| i).collect();
            match found.as_slice() {
                [one] => Ok(*one),
                [] => Err(ChainError::Missing { role }),
                many => Err(ChainError::Ambiguous { role, count: many.len() }),
            }
        };
        let ek_role = match key {
            SigningKey::Vlek => "VLEK",
            _ => "VCEK",
        };
        let ark = &parsed[pick("ARK", &|c| c.is_ca() && self_issued(c))?];
        let inter_role = if key == SigningKey::Vlek { "ASVK" } else { "ASK" };
        let inter = &parsed[pick(inter_role, &|c| c.is_ca() && !self_issued(c))?];
        let ek = &parsed[pick(ek_role, &|c| !c.is_ca())?];
        if parsed.len() != 3 {
            return Err(ChainError::Ambiguous { role: "certificate set", count: parsed.len() }.into());
        }

        // Root: pinned per product (AMD) or the configured sim root.
        let spki = x509::spki_sha256(ark);
        let product_from_root = match &self.roots {
            SnpRoots::Amd => {
                let candidates: Vec<Product> = match product {
                    Some(p) => vec![p],
                    None => Product::ALL.to_vec(),
                };
                let found = candidates.into_iter().find(|p| ark_spki_sha256(*p) == spki);
                Some(found.ok_or_else(|| ChainError::UntrustedRoot {
                    spki_sha256: hex::encode(spki),
                    expected: product.map_or("AMD".to_owned(), |p| format!("AMD {}", p.name())),
                })?)
            }
            SnpRoots::InsecureSim { spki_sha256 } => {
                if *spki_sha256 != spki {
                    return Err(ChainError::UntrustedRoot {
                        spki_sha256: hex::encode(spki),
                        expected: "sim".into(),
                    }
                    .into());
                }
                None
            }
        };
        x509::verify_cert_signature(ark, ark, "ARK (self-signed)")?;
        x509::verify_cert_signature(inter, ark, if key == SigningKey::Vlek { "ASVK" } else { "ASK" })?;
        x509::verify_cert_signature(ek, inter, ek_role)?;

        // Endorsement key: kind from its extensions, not its name.
        let hwid = ek.extensions().iter().find(|e| e.oid == OID_HWID).map(|e| e.value.to_vec());
        let key_kind = if hwid.is_some() { SigningKey::Vcek } else { SigningKey::Vlek };
        if !x509::is_p384(ek.public_key()) {
            return Err(ChainError::EndorsementKeyType.into());
        }
        let public_key =
            ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &ek.public_key().subject_public_key.data)
                .map_err(|_| ChainError::EndorsementKeyType)?;

        let mut validity = vec![
            Validity::of("ARK", x509::validity(ark)),
            Validity::of(inter_role, x509::validity(inter)),
            Validity::of(ek_role, x509::validity(ek)),
        ];

        // CRL: the ARK's, and it must not list the intermediate or the endorsement key.
        let crl = match set.crls.as_slice() {
            [] => CrlStatus::Missing,
            [der] => {
                let crl = x509::parse_crl(der)?;
                x509::verify_crl_signature(&crl, ark)?;
                let next = crl.next_update().ok_or(ChainError::CrlNoNextUpdate)?;
                validity.push(Validity::of("CRL", (crl.last_update().timestamp(), next.timestamp())));
                for (what, cert) in [(inter_role, inter), (ek_role, ek)] {
                    if crl.iter_revoked_certificates().any(|r| r.serial() == &cert.serial) {
                        return Err(ChainError::Revoked { what, serial: cert.serial.to_str_radix(16) }.into());
                    }
                }
                CrlStatus::Checked
            }
            many => return Err(ChainError::Ambiguous { role: "CRL", count: many.len() }.into()),
        };

        Ok(VerifiedChain {
            product_from_root,
            sim_product_name: ek
                .extensions()
                .iter()
                .find(|e| e.oid == OID_PRODUCT_NAME)
                .and_then(|e| ia5(e.value)),
            key_kind,
            key: public_key,
            tcb: ExtTcb {
                bootloader: spl(ek, &OID_BL_SPL),
                tee: spl(ek, &OID_TEE_SPL),
                snp: spl(ek, &OID_SNP_SPL),
                microcode: spl(ek, &OID_UCODE_SPL),
                fmc: spl(ek, &OID_FMC_SPL),
            },
            hwid,
            validity,
            crl,
        })
    }
}

fn key_name(k: SigningKey) -> &'static str {
    match k {
        SigningKey::Vcek => "VCEK",
        SigningKey::Vlek => "VLEK",
        SigningKey::None => "no key",
    }
}

/// The chain cache's key: SHA-256 over the product and key-kind tag and the length-prefixed
/// certificate and CRL bytes exactly as supplied. Public so that benchmarks measure this code.
pub fn chain_cache_key(certs: &CertSet, product: Option<Product>, key: SigningKey) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let tag = [product.map_or(0, |p| p as u8 + 1), key as u8];
    ctx.update(&tag);
    for group in [&certs.certs, &certs.crls] {
        ctx.update(&(group.len() as u64).to_le_bytes());
        for der in group.iter() {
            ctx.update(&(der.len() as u64).to_le_bytes());
            ctx.update(der);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// An SPL extension: a DER INTEGER in 0..=255.
fn spl(cert: &X509Certificate<'_>, oid: &Oid<'_>) -> Option<u8> {
    let ext = cert.extensions().iter().find(|e| &e.oid == oid)?;
    spl_value(ext.value)
}

/// Minimal DER encodings only: `02 01 00..7f` or `02 02 00 80..ff`.
fn spl_value(v: &[u8]) -> Option<u8> {
    match v {
        [0x02, 0x01, v] if *v < 0x80 => Some(*v),
        [0x02, 0x02, 0x00, v] if *v >= 0x80 => Some(*v),
        _ => None,
    }
}

/// An IA5String extension value.
fn ia5(value: &[u8]) -> Option<String> {
    match value {
        [0x16, len, rest @ ..] if usize::from(*len) == rest.len() => String::from_utf8(rest.to_vec()).ok(),
        _ => None,
    }
}

fn check_tcb_extension(ext: &ExtTcb, reported: &TcbVersion, product: Product) -> Result<(), ChainError> {
    let mut pairs = vec![
        ("bootloader", ext.bootloader, reported.bootloader),
        ("tee", ext.tee, reported.tee),
        ("snp", ext.snp, reported.snp),
        ("microcode", ext.microcode, reported.microcode),
    ];
    if product == Product::Turin {
        pairs.push(("fmc", ext.fmc, reported.fmc));
    }
    for (component, cert, report) in pairs {
        let cert = cert.ok_or(ChainError::TcbExtensionMissing { component })?;
        if cert != report {
            return Err(ChainError::TcbExtension { component, cert, report });
        }
    }
    Ok(())
}

fn check_hwid(hwid: &[u8], chip_id: &[u8; 64], product: Product) -> Result<(), ChainError> {
    let n = product.hwid_len();
    let ok = hwid.len() == n && chip_id[..n] == *hwid && chip_id[n..].iter().all(|&b| b == 0);
    if ok {
        Ok(())
    } else {
        Err(ChainError::ChipId { hwid: hex::encode(hwid), chip_id: hex::encode(chip_id) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_from_cpuid() {
        assert_eq!(Product::from_cpuid(0x19, 0x01), Some(Product::Milan));
        assert_eq!(Product::from_cpuid(0x19, 0x11), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x19, 0xA0), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x1A, 0x02), Some(Product::Turin));
        assert_eq!(Product::from_cpuid(0x17, 0x31), None); // Rome: no SNP
        assert_eq!(Product::from_cpuid(0x19, 0x21), None); // Vermeer (client): no SNP
    }

    #[test]
    fn hwid_rules() {
        let mut chip = [0u8; 64];
        chip[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(check_hwid(&chip[..8], &chip, Product::Turin).is_ok());
        // Turin: bytes after the 8-byte hwID must be zero.
        let mut bad = chip;
        bad[63] = 1;
        assert!(check_hwid(&chip[..8], &bad, Product::Turin).is_err());
        // Milan: a 64-byte hwID, compared in full.
        let full = [9u8; 64];
        assert!(check_hwid(&full, &full, Product::Milan).is_ok());
        assert!(check_hwid(&full[..8], &full, Product::Milan).is_err());
    }

    #[test]
    fn spl_integers() {
        assert_eq!(spl_value(&[0x02, 0x01, 0x73]), Some(0x73));
        assert_eq!(spl_value(&[0x02, 0x02, 0x00, 0xdb]), Some(0xdb));
        assert_eq!(spl_value(&[0x02, 0x01, 0xdb]), None); // negative
        assert_eq!(spl_value(&[0x02, 0x02, 0x00, 0x10]), None); // non-minimal
        assert_eq!(spl_value(&[0x04, 0x01, 0x10]), None); // not an INTEGER
    }
}
