//! The SEV-SNP `ATTESTATION_REPORT` (AMD SEV-SNP Firmware ABI Specification, rev. 1.58,
//! Table 23), versions 2, 3 and 5.
//!
//! [`SnpReport::parse`] is strict: it rejects unknown versions, any length but 1184 bytes,
//! non-zero reserved fields and bits, and signatures whose unused high bytes are set. It keeps
//! the received bytes so that the signature is checked over exactly what arrived
//! ([`SnpReport::signed_bytes`]), never over a re-encoding. [`SnpReport::encode`] is its
//! inverse; the fuzz/property tests check `parse(encode(r)) == r` and
//! `encode(parse(b)) == b`.

use crate::error::WireError;

/// Size of an `ATTESTATION_REPORT`.
pub const REPORT_LEN: usize = 0x4A0;
/// The signature covers bytes `0x000..0x2A0`.
pub const SIGNED_LEN: usize = 0x2A0;
/// `SIGNATURE_ALGO` value for ECDSA P-384 with SHA-384, the only one defined.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

/// The versions this parser knows. Version 4 was never issued to guests; anything newer may
/// have repurposed reserved bytes, so it is rejected rather than half-understood.
pub const SUPPORTED_VERSIONS: [u32; 3] = [2, 3, 5];

/// Guest policy bits (ABI Table 9). Bits 63:26 are reserved and must be zero; bit 17 must be one.
pub mod policy_bits {
    pub const SMT: u64 = 1 << 16;
    pub const RESERVED_MUST_BE_ONE: u64 = 1 << 17;
    pub const MIGRATE_MA: u64 = 1 << 18;
    pub const DEBUG: u64 = 1 << 19;
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    pub const CXL_ALLOW: u64 = 1 << 21;
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    pub const RAPL_DIS: u64 = 1 << 23;
    pub const CIPHERTEXT_HIDING: u64 = 1 << 24;
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;
    pub const RESERVED_MASK: u64 = !((1 << 26) - 1);
}

/// Which key signed the report (`KEY_INFO.SIGNING_KEY`, bits 4:2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key: per chip and TCB, carries the chip's hwID.
    Vcek,
    /// Versioned Loaded Endorsement Key: per cloud provider, no hwID.
    Vlek,
    /// The report is unsigned (SIGNING_KEY = 7); never acceptable.
    None,
}

/// AMD EPYC generations with SEV-SNP, each with its own ARK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// Identifies the product from the report's CPUID fields (ABI: family = extended family +
    /// base family, model = extended model << 4 | base model). Never from names.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Product> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            // Genoa, and Bergamo/Siena (0xA0..=0xAF), which share Genoa's ARK.
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Product::Genoa),
            // Turin and Turin dense.
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }

    pub fn tcb_layout(self) -> TcbLayout {
        match self {
            Product::Milan | Product::Genoa => TcbLayout::PreTurin,
            Product::Turin => TcbLayout::Turin,
        }
    }

    /// Turin VCEKs carry an 8-byte hwID; CHIP_ID holds it followed by zeros.
    pub fn hwid_len(self) -> usize {
        match self {
            Product::Turin => 8,
            Product::Milan | Product::Genoa => 64,
        }
    }

    /// A representative CPUID (family, model, stepping), as the simulated TEE reports it.
    pub fn cpuid(self) -> Cpuid {
        match self {
            Product::Milan => Cpuid { family: 0x19, model: 0x01, stepping: 0x01 },
            Product::Genoa => Cpuid { family: 0x19, model: 0x11, stepping: 0x01 },
            Product::Turin => Cpuid { family: 0x1A, model: 0x02, stepping: 0x01 },
        }
    }

    /// Exact product name (as a simulated VCEK's `productName` carries it; sim reports of
    /// version 2 have no CPUID, and a sim root is not pinned per product).
    pub fn from_name(name: &str) -> Option<Product> {
        Product::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The raw 64-bit TCB_VERSION. Its byte layout depends on the CPU generation (Turin moved the
/// fields and added FMC), so it is only decoded once the product is known; see
/// [`RawTcb::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RawTcb(pub u64);

/// The TCB layout of a CPU generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcbLayout {
    /// Milan and Genoa: `[bootloader, tee, 0, 0, 0, 0, snp, microcode]`.
    PreTurin,
    /// Turin and later: `[fmc, bootloader, tee, snp, 0, 0, 0, microcode]`.
    Turin,
}

/// A decoded TCB_VERSION.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcbVersion {
    /// Firmware boot loader SVN (Turin+ only; zero before).
    #[serde(default)]
    pub fmc: u8,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

/// An SNP TCB floor. Milan, Genoa and Turin number their firmware and microcode independently
/// (and only Turin has FMC), so a fleet of several products needs one floor per product:
///
/// ```toml
/// [snp.min_tcb.genoa]
/// bootloader = 10
/// tee = 0
/// snp = 23
/// microcode = 84
/// ```
///
/// or, for one product, `min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum TcbFloor {
    /// Per product; a product without an entry has no floor (its evidence is refused).
    PerProduct(ProductFloors),
    /// The same floor for every product.
    Every(TcbVersion),
}

/// [`TcbFloor::PerProduct`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductFloors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milan: Option<TcbVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genoa: Option<TcbVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turin: Option<TcbVersion>,
}

impl TcbFloor {
    /// The floor for evidence from `product`, if the policy sets one.
    pub fn for_product(&self, product: Product) -> Option<&TcbVersion> {
        match self {
            TcbFloor::Every(floor) => Some(floor),
            TcbFloor::PerProduct(p) => match product {
                Product::Milan => p.milan.as_ref(),
                Product::Genoa => p.genoa.as_ref(),
                Product::Turin => p.turin.as_ref(),
            },
        }
    }

    /// Whether it names a floor for any product.
    pub fn is_set(&self) -> bool {
        match self {
            TcbFloor::Every(_) => true,
            TcbFloor::PerProduct(p) => p.milan.is_some() || p.genoa.is_some() || p.turin.is_some(),
        }
    }

    /// The stricter of two floors: per product, each component at the higher of the two; a
    /// product floored by only one of them keeps that floor. (A policy's own floor and the one
    /// its reference values carry both apply; neither can lower the other.)
    pub fn stricter(&self, other: &TcbFloor) -> TcbFloor {
        if let (TcbFloor::Every(a), TcbFloor::Every(b)) = (self, other) {
            return TcbFloor::Every(a.max_each(b));
        }
        let pick = |product| match (self.for_product(product), other.for_product(product)) {
            (Some(a), Some(b)) => Some(a.max_each(b)),
            (a, b) => a.or(b).copied(),
        };
        TcbFloor::PerProduct(ProductFloors {
            milan: pick(Product::Milan),
            genoa: pick(Product::Genoa),
            turin: pick(Product::Turin),
        })
    }
}

impl TcbVersion {
    /// Each component at the higher of the two.
    pub fn max_each(&self, other: &TcbVersion) -> TcbVersion {
        TcbVersion {
            fmc: self.fmc.max(other.fmc),
            bootloader: self.bootloader.max(other.bootloader),
            tee: self.tee.max(other.tee),
            snp: self.snp.max(other.snp),
            microcode: self.microcode.max(other.microcode),
        }
    }
}

impl RawTcb {
    /// Decodes per generation; the reserved bytes of the layout must be zero.
    pub fn decode(self, layout: TcbLayout) -> Result<TcbVersion, WireError> {
        let b = self.0.to_le_bytes();
        let (tcb, reserved) = match layout {
            TcbLayout::PreTurin => {
                (TcbVersion { fmc: 0, bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] }, &b[2..6])
            }
            TcbLayout::Turin => {
                (TcbVersion { fmc: b[0], bootloader: b[1], tee: b[2], snp: b[3], microcode: b[7] }, &b[4..7])
            }
        };
        if reserved.iter().any(|&x| x != 0) {
            return Err(WireError::ReservedNonZero { field: "TCB_VERSION", offset: 0 });
        }
        Ok(tcb)
    }
}

impl TcbVersion {
    /// The inverse of [`RawTcb::decode`].
    pub fn encode(&self, layout: TcbLayout) -> RawTcb {
        let b = match layout {
            TcbLayout::PreTurin => [self.bootloader, self.tee, 0, 0, 0, 0, self.snp, self.microcode],
            TcbLayout::Turin => [self.fmc, self.bootloader, self.tee, self.snp, 0, 0, 0, self.microcode],
        };
        RawTcb(u64::from_le_bytes(b))
    }

    /// True when every component is at least the floor's.
    pub fn meets(&self, floor: &TcbVersion) -> bool {
        self.fmc >= floor.fmc
            && self.bootloader >= floor.bootloader
            && self.tee >= floor.tee
            && self.snp >= floor.snp
            && self.microcode >= floor.microcode
    }
}

/// CPUID family/model/stepping reported from version 3 on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cpuid {
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
}

/// Firmware version triple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FwVersion {
    pub major: u8,
    pub minor: u8,
    pub build: u8,
}

/// A parsed attestation report. Every field of the signed region is kept, so that
/// [`SnpReport::encode`] reproduces the received bytes exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpReport {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: u64,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub vmpl: u32,
    pub sig_algo: u32,
    pub current_tcb: RawTcb,
    pub platform_info: u64,
    /// `AUTHOR_KEY_EN` (bit 0 of KEY_INFO).
    pub author_key_en: bool,
    /// `MASK_CHIP_KEY` (bit 1 of KEY_INFO).
    pub mask_chip_key: bool,
    pub signing_key: SigningKey,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub report_id_ma: [u8; 32],
    pub reported_tcb: RawTcb,
    /// Present from version 3 on.
    pub cpuid: Option<Cpuid>,
    pub chip_id: [u8; 64],
    pub committed_tcb: RawTcb,
    pub current_version: FwVersion,
    pub committed_version: FwVersion,
    pub launch_tcb: RawTcb,
    /// Present from version 5 on.
    pub launch_mit_vector: Option<u64>,
    /// Present from version 5 on.
    pub current_mit_vector: Option<u64>,
    /// Signature R, big-endian (the report stores it little-endian in 72 bytes).
    pub sig_r: [u8; 48],
    /// Signature S, big-endian.
    pub sig_s: [u8; 48],
}

/// A report together with the exact bytes it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedReport<'a> {
    pub report: SnpReport,
    raw: &'a [u8; REPORT_LEN],
}

impl<'a> ReceivedReport<'a> {
    /// The bytes the signature covers, exactly as received.
    pub fn signed_bytes(&self) -> &'a [u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// The whole report as received.
    pub fn raw(&self) -> &'a [u8; REPORT_LEN] {
        self.raw
    }

    /// The signature as fixed-width `r || s`, big-endian (P-384: 96 bytes).
    pub fn signature_fixed(&self) -> [u8; 96] {
        let mut out = [0u8; 96];
        out[..48].copy_from_slice(&self.report.sig_r);
        out[48..].copy_from_slice(&self.report.sig_s);
        out
    }
}

/// Reads fixed-offset fields; every read is within the 1184-byte array, checked at compile
/// time by the const offsets below.
struct Fields<'a>(&'a [u8; REPORT_LEN]);

impl Fields<'_> {
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.0[off..off + N]);
        out
    }
    fn u32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.arr(off))
    }
    fn u64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.arr(off))
    }
    fn zero(&self, field: &'static str, range: core::ops::Range<usize>) -> Result<(), WireError> {
        match self.0[range.clone()].iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(WireError::ReservedNonZero { field, offset: range.start + i }),
        }
    }
}

// Offsets from ABI Table 23.
mod off {
    pub const VERSION: usize = 0x000;
    pub const GUEST_SVN: usize = 0x004;
    pub const POLICY: usize = 0x008;
    pub const FAMILY_ID: usize = 0x010;
    pub const IMAGE_ID: usize = 0x020;
    pub const VMPL: usize = 0x030;
    pub const SIG_ALGO: usize = 0x034;
    pub const CURRENT_TCB: usize = 0x038;
    pub const PLATFORM_INFO: usize = 0x040;
    pub const KEY_INFO: usize = 0x048;
    pub const RESERVED_04C: usize = 0x04C;
    pub const REPORT_DATA: usize = 0x050;
    pub const MEASUREMENT: usize = 0x090;
    pub const HOST_DATA: usize = 0x0C0;
    pub const ID_KEY_DIGEST: usize = 0x0E0;
    pub const AUTHOR_KEY_DIGEST: usize = 0x110;
    pub const REPORT_ID: usize = 0x140;
    pub const REPORT_ID_MA: usize = 0x160;
    pub const REPORTED_TCB: usize = 0x180;
    pub const CPUID_FAM: usize = 0x188;
    pub const CPUID_MOD: usize = 0x189;
    pub const CPUID_STEP: usize = 0x18A;
    pub const RESERVED_18B: usize = 0x18B;
    pub const CHIP_ID: usize = 0x1A0;
    pub const COMMITTED_TCB: usize = 0x1E0;
    pub const CURRENT_VERSION: usize = 0x1E8;
    pub const COMMITTED_VERSION: usize = 0x1EC;
    pub const LAUNCH_TCB: usize = 0x1F0;
    pub const LAUNCH_MIT: usize = 0x1F8;
    pub const CURRENT_MIT: usize = 0x200;
    pub const RESERVED_208: usize = 0x208;
    pub const SIGNATURE: usize = 0x2A0;
    /// R and S are 72-byte little-endian fields; P-384 uses the low 48 bytes.
    pub const SIG_COMPONENT: usize = 72;
    pub const SIG_RESERVED: usize = SIGNATURE + 2 * SIG_COMPONENT;
}

const _: () = assert!(off::SIG_RESERVED + 368 == REPORT_LEN);
const _: () = assert!(off::RESERVED_208 + 152 == SIGNED_LEN);

/// KEY_INFO bits 31:5 are reserved.
const KEY_INFO_RESERVED: u32 = !0x1F;
/// PLATFORM_INFO bits defined up to ABI 1.58: SMT_EN, TSME_EN, ECC_EN, RAPL_DIS,
/// CIPHERTEXT_HIDING_EN, ALIAS_CHECK_COMPLETE, (bit 6) SEV-TIO_EN. Others are reserved.
const PLATFORM_INFO_RESERVED: u64 = !0x7F;

impl SnpReport {
    /// Parses exactly [`REPORT_LEN`] bytes, strictly.
    pub fn parse(bytes: &[u8]) -> Result<ReceivedReport<'_>, WireError> {
        let raw: &[u8; REPORT_LEN] = bytes.try_into().map_err(|_| WireError::Length {
            what: "SNP report",
            expected: REPORT_LEN,
            actual: bytes.len(),
        })?;
        let f = Fields(raw);
        let version = f.u32(off::VERSION);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(WireError::UnsupportedVersion { what: "SNP report", version });
        }
        let policy = f.u64(off::POLICY);
        if policy & policy_bits::RESERVED_MASK != 0 {
            return Err(WireError::ReservedBits { field: "POLICY", value: policy });
        }
        if policy & policy_bits::RESERVED_MUST_BE_ONE == 0 {
            return Err(WireError::ReservedBits { field: "POLICY (bit 17 must be 1)", value: policy });
        }
        let vmpl = f.u32(off::VMPL);
        if vmpl > 3 {
            return Err(WireError::OutOfRange { field: "VMPL", value: u64::from(vmpl) });
        }
        let sig_algo = f.u32(off::SIG_ALGO);
        if sig_algo != SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(WireError::OutOfRange { field: "SIGNATURE_ALGO", value: u64::from(sig_algo) });
        }
        let platform_info = f.u64(off::PLATFORM_INFO);
        if platform_info & PLATFORM_INFO_RESERVED != 0 {
            return Err(WireError::ReservedBits { field: "PLATFORM_INFO", value: platform_info });
        }
        let key_info = f.u32(off::KEY_INFO);
        if key_info & KEY_INFO_RESERVED != 0 {
            return Err(WireError::ReservedBits { field: "KEY_INFO", value: u64::from(key_info) });
        }
        let signing_key = match (key_info >> 2) & 0x7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            other => {
                return Err(WireError::OutOfRange { field: "KEY_INFO.SIGNING_KEY", value: u64::from(other) });
            }
        };
        f.zero("reserved 0x04C", off::RESERVED_04C..off::REPORT_DATA)?;

        let cpuid = if version >= 3 {
            f.zero("reserved 0x18B", off::RESERVED_18B..off::CHIP_ID)?;
            Some(Cpuid {
                family: raw[off::CPUID_FAM],
                model: raw[off::CPUID_MOD],
                stepping: raw[off::CPUID_STEP],
            })
        } else {
            f.zero("reserved 0x188", off::CPUID_FAM..off::CHIP_ID)?;
            None
        };
        f.zero("reserved 0x1EB", off::CURRENT_VERSION + 3..off::CURRENT_VERSION + 4)?;
        f.zero("reserved 0x1EF", off::COMMITTED_VERSION + 3..off::COMMITTED_VERSION + 4)?;
        let (launch_mit_vector, current_mit_vector) = if version >= 5 {
            f.zero("reserved 0x208", off::RESERVED_208..off::SIGNATURE)?;
            (Some(f.u64(off::LAUNCH_MIT)), Some(f.u64(off::CURRENT_MIT)))
        } else {
            f.zero("reserved 0x1F8", off::LAUNCH_MIT..off::SIGNATURE)?;
            (None, None)
        };

        let sig_r = sig_component(&f, off::SIGNATURE, "SIGNATURE.R")?;
        let sig_s = sig_component(&f, off::SIGNATURE + off::SIG_COMPONENT, "SIGNATURE.S")?;
        f.zero("SIGNATURE reserved", off::SIG_RESERVED..REPORT_LEN)?;

        let fw = |o: usize| FwVersion { build: raw[o], minor: raw[o + 1], major: raw[o + 2] };
        let report = SnpReport {
            version,
            guest_svn: f.u32(off::GUEST_SVN),
            policy,
            family_id: f.arr(off::FAMILY_ID),
            image_id: f.arr(off::IMAGE_ID),
            vmpl,
            sig_algo,
            current_tcb: RawTcb(f.u64(off::CURRENT_TCB)),
            platform_info,
            author_key_en: key_info & 1 != 0,
            mask_chip_key: key_info & 2 != 0,
            signing_key,
            report_data: f.arr(off::REPORT_DATA),
            measurement: f.arr(off::MEASUREMENT),
            host_data: f.arr(off::HOST_DATA),
            id_key_digest: f.arr(off::ID_KEY_DIGEST),
            author_key_digest: f.arr(off::AUTHOR_KEY_DIGEST),
            report_id: f.arr(off::REPORT_ID),
            report_id_ma: f.arr(off::REPORT_ID_MA),
            reported_tcb: RawTcb(f.u64(off::REPORTED_TCB)),
            cpuid,
            chip_id: f.arr(off::CHIP_ID),
            committed_tcb: RawTcb(f.u64(off::COMMITTED_TCB)),
            current_version: fw(off::CURRENT_VERSION),
            committed_version: fw(off::COMMITTED_VERSION),
            launch_tcb: RawTcb(f.u64(off::LAUNCH_TCB)),
            launch_mit_vector,
            current_mit_vector,
            sig_r,
            sig_s,
        };
        Ok(ReceivedReport { report, raw })
    }

    /// Encodes the report. Fields that the version does not have (`cpuid` before 3, the
    /// mitigation vectors before 5) must be `None`; reserved areas are written as zero.
    pub fn encode(&self) -> Result<[u8; REPORT_LEN], WireError> {
        let mut b = [0u8; REPORT_LEN];
        self.encode_signed_into(&mut b)?;
        write_sig_component(&mut b, off::SIGNATURE, &self.sig_r);
        write_sig_component(&mut b, off::SIGNATURE + off::SIG_COMPONENT, &self.sig_s);
        Ok(b)
    }

    /// Writes the signed region `0x000..0x2A0` (what a signer signs).
    pub fn encode_signed_into(&self, b: &mut [u8; REPORT_LEN]) -> Result<(), WireError> {
        let has_cpuid = self.version >= 3;
        let has_mit = self.version >= 5;
        if self.cpuid.is_some() != has_cpuid
            || self.launch_mit_vector.is_some() != has_mit
            || self.current_mit_vector.is_some() != has_mit
        {
            return Err(WireError::Inconsistent { what: "optional fields do not match the report version" });
        }
        let mut put = |o: usize, v: &[u8]| b[o..o + v.len()].copy_from_slice(v);
        put(off::VERSION, &self.version.to_le_bytes());
        put(off::GUEST_SVN, &self.guest_svn.to_le_bytes());
        put(off::POLICY, &self.policy.to_le_bytes());
        put(off::FAMILY_ID, &self.family_id);
        put(off::IMAGE_ID, &self.image_id);
        put(off::VMPL, &self.vmpl.to_le_bytes());
        put(off::SIG_ALGO, &self.sig_algo.to_le_bytes());
        put(off::CURRENT_TCB, &self.current_tcb.0.to_le_bytes());
        put(off::PLATFORM_INFO, &self.platform_info.to_le_bytes());
        let key = match self.signing_key {
            SigningKey::Vcek => 0u32,
            SigningKey::Vlek => 1,
            SigningKey::None => 7,
        };
        let key_info = u32::from(self.author_key_en) | (u32::from(self.mask_chip_key) << 1) | (key << 2);
        put(off::KEY_INFO, &key_info.to_le_bytes());
        put(off::REPORT_DATA, &self.report_data);
        put(off::MEASUREMENT, &self.measurement);
        put(off::HOST_DATA, &self.host_data);
        put(off::ID_KEY_DIGEST, &self.id_key_digest);
        put(off::AUTHOR_KEY_DIGEST, &self.author_key_digest);
        put(off::REPORT_ID, &self.report_id);
        put(off::REPORT_ID_MA, &self.report_id_ma);
        put(off::REPORTED_TCB, &self.reported_tcb.0.to_le_bytes());
        if let Some(c) = self.cpuid {
            put(off::CPUID_FAM, &[c.family, c.model, c.stepping]);
        }
        put(off::CHIP_ID, &self.chip_id);
        put(off::COMMITTED_TCB, &self.committed_tcb.0.to_le_bytes());
        let fw = |v: FwVersion| [v.build, v.minor, v.major];
        put(off::CURRENT_VERSION, &fw(self.current_version));
        put(off::COMMITTED_VERSION, &fw(self.committed_version));
        put(off::LAUNCH_TCB, &self.launch_tcb.0.to_le_bytes());
        if let (Some(l), Some(c)) = (self.launch_mit_vector, self.current_mit_vector) {
            put(off::LAUNCH_MIT, &l.to_le_bytes());
            put(off::CURRENT_MIT, &c.to_le_bytes());
        }
        Ok(())
    }

    /// True when the guest policy allows debugging (and so host access to guest memory).
    pub fn debug_allowed(&self) -> bool {
        self.policy & policy_bits::DEBUG != 0
    }
}

fn sig_component(f: &Fields<'_>, at: usize, field: &'static str) -> Result<[u8; 48], WireError> {
    // Little-endian in the report; bytes 48..72 must be zero for P-384.
    f.zero(field, at + 48..at + off::SIG_COMPONENT)?;
    let mut be: [u8; 48] = f.arr(at);
    be.reverse();
    Ok(be)
}

fn write_sig_component(b: &mut [u8; REPORT_LEN], at: usize, be: &[u8; 48]) {
    let mut le = *be;
    le.reverse();
    b[at..at + 48].copy_from_slice(&le);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stricter_floor_never_lowers_either() {
        let tcb = |bootloader, microcode| TcbVersion { fmc: 0, bootloader, tee: 0, snp: 8, microcode };
        let every = TcbFloor::Every(tcb(3, 200));
        let genoa = TcbFloor::PerProduct(ProductFloors { genoa: Some(tcb(10, 84)), ..Default::default() });
        for merged in [every.stricter(&genoa), genoa.stricter(&every)] {
            assert_eq!(merged.for_product(Product::Genoa), Some(&tcb(10, 200)));
            assert_eq!(merged.for_product(Product::Milan), Some(&tcb(3, 200)));
        }
        let milan = TcbFloor::PerProduct(ProductFloors { milan: Some(tcb(1, 1)), ..Default::default() });
        let merged = genoa.stricter(&milan);
        assert_eq!(merged.for_product(Product::Genoa), Some(&tcb(10, 84)));
        assert_eq!(merged.for_product(Product::Milan), Some(&tcb(1, 1)));
        assert_eq!(merged.for_product(Product::Turin), None);
        assert_eq!(every.stricter(&TcbFloor::Every(tcb(4, 1))), TcbFloor::Every(tcb(4, 200)));
    }

    fn sample(version: u32) -> SnpReport {
        SnpReport {
            version,
            guest_svn: 7,
            policy: 0x30000,
            family_id: [1; 16],
            image_id: [2; 16],
            vmpl: 0,
            sig_algo: 1,
            current_tcb: RawTcb(0x7308_0000_0000_0003),
            platform_info: 1,
            author_key_en: false,
            mask_chip_key: false,
            signing_key: SigningKey::Vcek,
            report_data: [3; 64],
            measurement: [4; 48],
            host_data: [5; 32],
            id_key_digest: [6; 48],
            author_key_digest: [7; 48],
            report_id: [8; 32],
            report_id_ma: [9; 32],
            reported_tcb: RawTcb(0x7308_0000_0000_0003),
            cpuid: (version >= 3).then_some(Cpuid { family: 0x19, model: 1, stepping: 1 }),
            chip_id: [10; 64],
            committed_tcb: RawTcb(0x7308_0000_0000_0003),
            current_version: FwVersion { major: 1, minor: 55, build: 3 },
            committed_version: FwVersion { major: 1, minor: 55, build: 3 },
            launch_tcb: RawTcb(0x7308_0000_0000_0003),
            launch_mit_vector: (version >= 5).then_some(11),
            current_mit_vector: (version >= 5).then_some(12),
            sig_r: [13; 48],
            sig_s: [14; 48],
        }
    }

    #[test]
    fn round_trips_each_version() {
        for v in SUPPORTED_VERSIONS {
            let r = sample(v);
            let bytes = r.encode().unwrap();
            let parsed = SnpReport::parse(&bytes).unwrap();
            assert_eq!(parsed.report, r);
            assert_eq!(parsed.raw(), &bytes);
        }
    }

    #[test]
    fn rejects_unknown_versions_and_lengths() {
        let mut b = sample(3).encode().unwrap();
        for v in [0u32, 1, 4, 6, 0xFFFF_FFFF] {
            b[0..4].copy_from_slice(&v.to_le_bytes());
            assert!(
                matches!(SnpReport::parse(&b), Err(WireError::UnsupportedVersion { version, .. }) if version == v)
            );
        }
        let b = sample(3).encode().unwrap();
        assert!(matches!(SnpReport::parse(&b[..REPORT_LEN - 1]), Err(WireError::Length { .. })));
        let mut long = b.to_vec();
        long.push(0);
        assert!(matches!(SnpReport::parse(&long), Err(WireError::Length { .. })));
    }

    #[test]
    fn rejects_each_reserved_byte() {
        // Every byte of every reserved area, per version.
        for v in SUPPORTED_VERSIONS {
            let good = sample(v).encode().unwrap();
            let mut reserved: Vec<usize> = (0x04C..0x050).chain([0x1EB, 0x1EF]).collect();
            reserved.extend(if v >= 3 { 0x18B..0x1A0 } else { 0x188..0x1A0 });
            reserved.extend(if v >= 5 { 0x208..0x2A0 } else { 0x1F8..0x2A0 });
            reserved.extend(
                (0x2A0 + 48..0x2A0 + 72).chain(0x2A0 + 72 + 48..0x2A0 + 144).chain(0x2A0 + 144..REPORT_LEN),
            );
            for i in reserved {
                let mut b = good;
                b[i] = 0x80;
                assert!(SnpReport::parse(&b).is_err(), "v{v}: reserved byte {i:#x} accepted");
            }
        }
    }

    #[test]
    fn rejects_reserved_bits() {
        let good = sample(5).encode().unwrap();
        let cases: [(usize, u8); 6] = [
            (0x008 + 3, 0x04), // POLICY bit 26
            (0x008 + 7, 0x80), // POLICY bit 63
            (0x040 + 1, 0x01), // PLATFORM_INFO bit 8
            (0x048, 0x20),     // KEY_INFO bit 5
            (0x030, 0x04),     // VMPL 4
            (0x034, 0x02),     // SIGNATURE_ALGO 3
        ];
        for (i, bit) in cases {
            let mut b = good;
            b[i] |= bit;
            assert!(SnpReport::parse(&b).is_err(), "byte {i:#x} bit {bit:#x} accepted");
        }
        let mut b = good;
        b[0x008 + 2] &= !0x02; // POLICY bit 17 cleared
        assert!(SnpReport::parse(&b).is_err());
        let mut b = good;
        b[0x048] = 2 << 2; // SIGNING_KEY 2 is undefined
        assert!(SnpReport::parse(&b).is_err());
    }

    #[test]
    fn tcb_layouts() {
        // Values from the real vectors (../shared/vectors/README.md).
        let milan = RawTcb(0x7308_0000_0000_0003).decode(TcbLayout::PreTurin).unwrap();
        assert_eq!(milan, TcbVersion { fmc: 0, bootloader: 3, tee: 0, snp: 8, microcode: 115 });
        let turin = RawTcb(0x4700_0000_0200_0100).decode(TcbLayout::Turin).unwrap();
        assert_eq!(turin, TcbVersion { fmc: 0, bootloader: 1, tee: 0, snp: 2, microcode: 71 });
        assert_eq!(turin.encode(TcbLayout::Turin), RawTcb(0x4700_0000_0200_0100));
        assert!(RawTcb(0x7308_0000_0000_0003).decode(TcbLayout::Turin).is_err());
    }
}
