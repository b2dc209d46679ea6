//! The simulated secure processor's key hierarchy and report signer.
//!
//! A [`SimCa`] is an ARK → ASK (or ASVK) → VCEK (or VLEK) chain of real X.509 certificates,
//! shaped like AMD's: CA flags, the AMD TCB and hwID extensions on the endorsement key, and a
//! CRL signed by the ARK. Keys are ECDSA P-384 throughout. It signs SNP-format reports that go
//! through exactly the same parser and verifier as hardware reports.
//!
//! Nothing here is trusted by default: a verifier accepts these reports only when told to trust
//! this ARK through an option named insecure. The signer doubles as the test signer: build a
//! report from [`SimCa::report_template`], change one field, [`SimCa::sign`] it.
#![forbid(unsafe_code)]

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use nacre_wire::snp::{
    FwVersion, Product, REPORT_LEN, SIG_ALGO_ECDSA_P384_SHA384, SigningKey, SnpReport, TcbVersion,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension, DistinguishedName,
    DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384, RevokedCertParams,
    SerialNumber,
};
use time::OffsetDateTime;

/// Why the simulated CA could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("signing key rejected")]
    Key,
    #[error("signing failed")]
    Sign,
    #[error("report encoding: {0}")]
    Wire(#[from] nacre_wire::WireError),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {what}")]
    Format { path: String, what: String },
}

/// Serial numbers of the simulated hierarchy (fixed, so tests can revoke them by value).
pub const ARK_SERIAL: u8 = 1;
pub const ASK_SERIAL: u8 = 2;
pub const EK_SERIAL: u8 = 3;

/// What the simulated chip looks like.
#[derive(Clone, Debug)]
pub struct SimParams {
    pub product: Product,
    pub key: SigningKey,
    /// CHIP_ID the VCEK's hwID will carry (Turin: first 8 bytes, rest zero).
    pub chip_id: [u8; 64],
    /// The TCB the endorsement key is issued for (= REPORTED_TCB of its reports).
    pub tcb: TcbVersion,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl SimParams {
    /// A Milan-shaped VCEK chain valid for ten years from `now`, with an obviously fake chip id.
    pub fn new(now: OffsetDateTime) -> Self {
        let mut chip_id = [0u8; 64];
        chip_id[..16].copy_from_slice(b"NACRE-SIM-CHIP!!");
        SimParams {
            product: Product::Milan,
            key: SigningKey::Vcek,
            chip_id,
            tcb: TcbVersion { fmc: 0, bootloader: 4, tee: 0, snp: 22, microcode: 213 },
            not_before: now - time::Duration::days(1),
            not_after: now + time::Duration::days(3650),
        }
    }
}

/// One issued certificate and its key.
#[derive(Debug)]
struct Issued {
    der: Vec<u8>,
    key: KeyPair,
    params: CertificateParams,
}

/// A simulated ARK → ASK/ASVK → VCEK/VLEK hierarchy with its CRL.
#[derive(Debug)]
pub struct SimCa {
    params: SimParams,
    ark: Issued,
    ask: Issued,
    ek: Issued,
    crl: Vec<u8>,
    signer: EcdsaKeyPair,
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationalUnitName, "Nacre simulated TEE (INSECURE)");
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(cn: &str, serial: u8, p: &SimParams) -> Result<CertificateParams, SimError> {
    let mut c = CertificateParams::new(Vec::<String>::new())?;
    c.distinguished_name = name(cn);
    c.serial_number = Some(SerialNumber::from(vec![serial]));
    c.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    c.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    c.not_before = p.not_before;
    c.not_after = p.not_after;
    c.key_identifier_method = KeyIdMethod::Sha256;
    Ok(c)
}

/// DER INTEGER for an SPL value (minimal encoding).
fn der_u8(v: u8) -> Vec<u8> {
    if v < 0x80 { vec![0x02, 0x01, v] } else { vec![0x02, 0x02, 0x00, v] }
}

fn amd_ext(arc: &[u64], content: Vec<u8>) -> CustomExtension {
    let mut oid = vec![1, 3, 6, 1, 4, 1, 3704, 1];
    oid.extend_from_slice(arc);
    CustomExtension::from_oid_content(&oid, content)
}

impl SimCa {
    /// Generates a fresh hierarchy.
    pub fn generate(params: SimParams) -> Result<Self, SimError> {
        let product = params.product.name();
        let ark_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let ark_params = ca_params(&format!("ARK-{product}"), ARK_SERIAL, &params)?;
        let ark_cert = ark_params.self_signed(&ark_key)?;
        let ark = Issued { der: ark_cert.der().to_vec(), key: ark_key, params: ark_params };

        let vlek = params.key == SigningKey::Vlek;
        let ask_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let ask_cn = if vlek { format!("SEV-VLEK-{product}") } else { format!("SEV-{product}") };
        let ask_params = ca_params(&ask_cn, ASK_SERIAL, &params)?;
        let ask_cert = ask_params.signed_by(&ask_key, &Issuer::from_params(&ark.params, &ark.key))?;
        let ask = Issued { der: ask_cert.der().to_vec(), key: ask_key, params: ask_params };

        let ek = Self::endorse(&ask, &params)?;
        let crl = crl(&ark, &[], params.not_before, params.not_after)?;
        let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, ek.key.serialized_der())
            .map_err(|_| SimError::Key)?;
        Ok(SimCa { params, ark, ask, ek, crl, signer })
    }

    fn endorse(ask: &Issued, p: &SimParams) -> Result<Issued, SimError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let mut c = CertificateParams::new(Vec::<String>::new())?;
        let vlek = p.key == SigningKey::Vlek;
        c.distinguished_name = name(if vlek { "SEV-VLEK" } else { "SEV-VCEK" });
        c.serial_number = Some(SerialNumber::from(vec![EK_SERIAL]));
        c.is_ca = IsCa::ExplicitNoCa;
        c.not_before = p.not_before;
        c.not_after = p.not_after;
        let product = p.product.name().as_bytes();
        let mut product_name = vec![0x16, product.len() as u8];
        product_name.extend_from_slice(product);
        c.custom_extensions = vec![
            amd_ext(&[1], der_u8(1)),
            amd_ext(&[2], product_name),
            amd_ext(&[3, 1], der_u8(p.tcb.bootloader)),
            amd_ext(&[3, 2], der_u8(p.tcb.tee)),
            amd_ext(&[3, 3], der_u8(p.tcb.snp)),
            amd_ext(&[3, 8], der_u8(p.tcb.microcode)),
        ];
        if p.product == Product::Turin {
            c.custom_extensions.push(amd_ext(&[3, 9], der_u8(p.tcb.fmc)));
        }
        if vlek {
            c.custom_extensions.push(amd_ext(&[5], b"\x16\x0bnacre-sim-csp".to_vec()));
        } else {
            c.custom_extensions.push(amd_ext(&[4], p.chip_id[..p.product.hwid_len()].to_vec()));
        }
        let cert = c.signed_by(&key, &Issuer::from_params(&ask.params, &ask.key))?;
        Ok(Issued { der: cert.der().to_vec(), key, params: c })
    }

    pub fn params(&self) -> &SimParams {
        &self.params
    }
    pub fn ark_der(&self) -> &[u8] {
        &self.ark.der
    }
    pub fn ask_der(&self) -> &[u8] {
        &self.ask.der
    }
    pub fn endorsement_der(&self) -> &[u8] {
        &self.ek.der
    }
    pub fn crl_der(&self) -> &[u8] {
        &self.crl
    }

    /// ARK, ASK/ASVK and VCEK/VLEK, DER.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        vec![self.ark.der.clone(), self.ask.der.clone(), self.ek.der.clone()]
    }

    /// A CRL from this ARK that revokes `serials`, valid over `[this_update, next_update]`.
    pub fn crl_revoking(
        &self,
        serials: &[u8],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, SimError> {
        crl(&self.ark, serials, this_update, next_update)
    }

    /// A second endorsement key from the same ASK with other parameters (another chip, another
    /// TCB, another validity) and its signer: for tests of mismatched endorsements.
    pub fn endorse_other(&self, params: &SimParams) -> Result<(Vec<u8>, SimSigner), SimError> {
        let ek = Self::endorse(&self.ask, params)?;
        let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, ek.key.serialized_der())
            .map_err(|_| SimError::Key)?;
        Ok((ek.der, SimSigner { key: signer, chip: None }))
    }

    /// A report that verifies against this hierarchy: version 3, the product's CPUID, the
    /// endorsed TCB everywhere, the chip id, debug off, VMPL 0. Tests change one field.
    pub fn report_template(&self) -> SnpReport {
        report_template(&self.chip())
    }

    /// What the endorsement key certifies.
    pub fn chip(&self) -> SimChip {
        SimChip {
            product: self.params.product,
            key: self.params.key,
            chip_id: self.params.chip_id,
            tcb: self.params.tcb,
        }
    }

    /// Signs `report` with the endorsement key (the signature fields are overwritten).
    pub fn sign(&self, report: &SnpReport) -> Result<[u8; REPORT_LEN], SimError> {
        sign_with(&self.signer, report)
    }

    /// Re-signs raw report bytes as they are, including bytes no valid report has (reserved
    /// fields, unknown versions): for tests that must reach the parser with a good signature.
    pub fn sign_raw(&self, bytes: &mut [u8; REPORT_LEN]) -> Result<(), SimError> {
        sign_in_place(&self.signer, bytes)
    }

    /// Writes the public chain, the CRL and the private keys (mode 0600) to `dir`:
    /// `ark.pem`, `ask.pem` or `asvk.pem`, `vcek.pem` or `vlek.pem`, `crl.pem`, `*.key`.
    pub fn write_to(&self, dir: &Path) -> Result<(), SimError> {
        let io = |path: &Path, error| SimError::Io { path: path.display().to_string(), error };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let vlek = self.params.key == SigningKey::Vlek;
        let (inter, ek) = if vlek { ("asvk", "vlek") } else { ("ask", "vcek") };
        let files: [(String, String, bool); 7] = [
            ("ark.pem".into(), pem("CERTIFICATE", &self.ark.der), false),
            (format!("{inter}.pem"), pem("CERTIFICATE", &self.ask.der), false),
            (format!("{ek}.pem"), pem("CERTIFICATE", &self.ek.der), false),
            ("crl.pem".into(), pem("X509 CRL", &self.crl), false),
            ("ark.key".into(), self.ark.key.serialize_pem(), true),
            (format!("{inter}.key"), self.ask.key.serialize_pem(), true),
            (format!("{ek}.key"), self.ek.key.serialize_pem(), true),
        ];
        for (file, body, secret) in files {
            let path = dir.join(file);
            write_file(&path, body.as_bytes(), secret).map_err(|e| io(&path, e))?;
        }
        let path = dir.join("sim.toml");
        let chip = ChipFile::from(&self.chip());
        let text = toml::to_string(&chip)
            .map_err(|e| SimError::Format { path: path.display().to_string(), what: e.to_string() })?;
        write_file(&path, text.as_bytes(), false).map_err(|e| io(&path, e))
    }
}

/// `sim.toml`: what the endorsement key certifies, so a signer loaded from disk can build
/// reports that match it.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChipFile {
    product: Product,
    vlek: bool,
    chip_id: String,
    tcb: TcbVersion,
}

impl From<&SimChip> for ChipFile {
    fn from(c: &SimChip) -> Self {
        ChipFile {
            product: c.product,
            vlek: c.key == SigningKey::Vlek,
            chip_id: hex::encode(c.chip_id),
            tcb: c.tcb,
        }
    }
}

/// Signs reports with one endorsement key.
#[derive(Debug)]
pub struct SimSigner {
    key: EcdsaKeyPair,
    chip: Option<SimChip>,
}

impl SimSigner {
    /// Loads the VCEK or VLEK private key written by [`SimCa::write_to`].
    pub fn load(dir: &Path) -> Result<Self, SimError> {
        let path =
            ["vcek.key", "vlek.key"].iter().map(|f| dir.join(f)).find(|p| p.exists()).ok_or_else(|| {
                SimError::Format { path: dir.display().to_string(), what: "no vcek.key or vlek.key".into() }
            })?;
        let text = std::fs::read_to_string(&path)
            .map_err(|error| SimError::Io { path: path.display().to_string(), error })?;
        let kp = KeyPair::from_pem(&text)
            .map_err(|e| SimError::Format { path: path.display().to_string(), what: e.to_string() })?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, kp.serialized_der())
            .map_err(|_| SimError::Key)?;
        let path = dir.join("sim.toml");
        let format = |what: String| SimError::Format { path: path.display().to_string(), what };
        let text = std::fs::read_to_string(&path)
            .map_err(|error| SimError::Io { path: path.display().to_string(), error })?;
        let file: ChipFile = toml::from_str(&text).map_err(|e| format(e.to_string()))?;
        let mut chip_id = [0u8; 64];
        hex::decode_to_slice(&file.chip_id, &mut chip_id).map_err(|e| format(format!("chip_id: {e}")))?;
        let key_kind = if file.vlek { SigningKey::Vlek } else { SigningKey::Vcek };
        Ok(SimSigner {
            key,
            chip: Some(SimChip { product: file.product, key: key_kind, chip_id, tcb: file.tcb }),
        })
    }

    /// What the loaded endorsement key certifies (None for keys made by `endorse_other`).
    pub fn chip(&self) -> Option<&SimChip> {
        self.chip.as_ref()
    }

    pub fn sign(&self, report: &SnpReport) -> Result<[u8; REPORT_LEN], SimError> {
        sign_with(&self.key, report)
    }
}

fn sign_with(key: &EcdsaKeyPair, report: &SnpReport) -> Result<[u8; REPORT_LEN], SimError> {
    let mut bytes = [0u8; REPORT_LEN];
    report.encode_signed_into(&mut bytes)?;
    sign_in_place(key, &mut bytes)?;
    Ok(bytes)
}

/// Signs bytes `0x000..0x2A0` and writes R and S little-endian into their 72-byte fields.
fn sign_in_place(key: &EcdsaKeyPair, bytes: &mut [u8; REPORT_LEN]) -> Result<(), SimError> {
    let signed_len = nacre_wire::snp::SIGNED_LEN;
    let sig = key.sign(&SystemRandom::new(), &bytes[..signed_len]).map_err(|_| SimError::Sign)?;
    let sig = sig.as_ref();
    if sig.len() != 96 {
        return Err(SimError::Sign);
    }
    for (i, part) in sig.chunks(48).enumerate() {
        let at = signed_len + 72 * i;
        for (j, b) in part.iter().rev().enumerate() {
            bytes[at + j] = *b;
        }
    }
    Ok(())
}

fn crl(
    ark: &Issued,
    serials: &[u8],
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<Vec<u8>, SimError> {
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from(vec![1]),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(vec![*s]),
                revocation_time: this_update,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(&Issuer::from_params(&ark.params, &ark.key))?.der().to_vec())
}

fn pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der))
}

fn write_file(path: &Path, body: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(body)
}

/// What a simulated endorsement key certifies; written to `sim.toml` beside the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimChip {
    pub product: Product,
    pub key: SigningKey,
    pub chip_id: [u8; 64],
    pub tcb: TcbVersion,
}

/// A report that verifies against `chip`'s hierarchy (see [`SimCa::report_template`]).
pub fn report_template(p: &SimChip) -> SnpReport {
    let tcb = p.tcb.encode(p.product.tcb_layout());
    let fw = FwVersion { major: 1, minor: 55, build: 1 };
    // CHIP_ID carries the hwID (Turin: 8 bytes) followed by zeros; VLEK reports mask it.
    let mut chip_id = [0u8; 64];
    if p.key == SigningKey::Vcek {
        let n = p.product.hwid_len();
        chip_id[..n].copy_from_slice(&p.chip_id[..n]);
    }
    SnpReport {
        version: 3,
        guest_svn: 1,
        policy: 0x3_0000, // SMT allowed, bit 17 (must be one); ABI 0.0; no debug
        family_id: [0; 16],
        image_id: [0; 16],
        vmpl: 0,
        sig_algo: SIG_ALGO_ECDSA_P384_SHA384,
        current_tcb: tcb,
        platform_info: 0x1,
        author_key_en: false,
        mask_chip_key: false,
        signing_key: p.key,
        report_data: [0; 64],
        measurement: [0; 48],
        host_data: [0; 32],
        id_key_digest: [0; 48],
        author_key_digest: [0; 48],
        report_id: [0x5A; 32],
        report_id_ma: [0xFF; 32],
        reported_tcb: tcb,
        cpuid: Some(p.product.cpuid()),
        chip_id,
        committed_tcb: tcb,
        current_version: fw,
        committed_version: fw,
        launch_tcb: tcb,
        launch_mit_vector: None,
        current_mit_vector: None,
        sig_r: [0; 48],
        sig_s: [0; 48],
    }
}
