//! The appraisal policy, read from TOML. Unknown keys are errors (a typo must never loosen a
//! security policy), and every default fails closed: debug forbidden, TDX TCB UpToDate only,
//! a CRL required. See the README for the format with examples.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::claims::TdxTcbStatus;
use crate::error::ConfigError;
use nacre_protocol::reference::{Applicable, ReferenceError, ReferenceValues};
use nacre_wire::Tee;
pub use nacre_wire::snp::{ProductFloors, TcbFloor};

/// A fixed-length byte string written as hex in policy files.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<const N: usize> core::fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|e| {
            serde::de::Error::custom(format!("expected {} hex digits ({N} bytes): {e}", 2 * N))
        })?;
        Ok(Hex(out))
    }
}

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

/// The whole policy. Sections apply per TEE; `sim` has the same fields as `snp`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Accept SNP/sim evidence without the ARK's CRL (revocation unchecked). Warned at start
    /// and on every acceptance.
    #[serde(default)]
    pub insecure_allow_missing_crl: bool,
    #[serde(default)]
    pub snp: SnpPolicy,
    #[serde(default)]
    pub sim: SnpPolicy,
    #[serde(default)]
    pub tdx: TdxPolicy,
}

/// SEV-SNP (and sim) appraisal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnpPolicy {
    /// Allowed launch measurements; absent = any (warned), empty = none.
    pub measurements: Option<Vec<Hex<48>>>,
    /// Accept guests whose policy allows debugging (the host can read their memory).
    pub allow_debug: bool,
    /// Highest VMPL the report may come from. 0: the guest owns VMPL0; 1 (default): a guest OS
    /// under an SVSM or paravisor at VMPL0.
    pub max_vmpl: u32,
    /// Accept guests that allow a migration agent.
    pub allow_migration_agent: bool,
    /// Accept guests that allow SMT.
    pub allow_smt: bool,
    /// Require the SINGLE_SOCKET policy bit.
    pub require_single_socket: bool,
    /// Minimum ABI version the guest policy demands (`major.minor`), e.g. "1.51".
    pub min_abi: Option<AbiVersion>,
    /// Floor for REPORTED_TCB, COMMITTED_TCB and LAUNCH_TCB, per component: one for every
    /// product, or one per product. Required on SNP once a measurement is pinned (firmware with a
    /// published attestation-key compromise must not pass); optional on sim (no firmware).
    pub min_tcb: Option<TcbFloor>,
    /// Minimum GUEST_SVN.
    pub min_guest_svn: u32,
    /// Exact HOST_DATA.
    pub host_data: Option<Hex<32>>,
    /// Allowed ID key digests (when the launch used an ID block).
    pub id_key_digests: Option<Vec<Hex<48>>>,
    /// Allowed author key digests.
    pub author_key_digests: Option<Vec<Hex<48>>>,
    /// Allowed CHIP_IDs.
    pub chip_ids: Option<Vec<Hex<64>>>,
}

impl Default for SnpPolicy {
    fn default() -> Self {
        SnpPolicy {
            measurements: None,
            allow_debug: false,
            max_vmpl: 1,
            allow_migration_agent: false,
            allow_smt: true,
            require_single_socket: false,
            min_abi: None,
            min_tcb: None,
            min_guest_svn: 0,
            host_data: None,
            id_key_digests: None,
            author_key_digests: None,
            chip_ids: None,
        }
    }
}

/// `major.minor` of the SNP firmware ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AbiVersion {
    pub major: u8,
    pub minor: u8,
}

impl<'de> Deserialize<'de> for AbiVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("ABI version {s:?}: expected MAJOR.MINOR"));
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        Ok(AbiVersion { major: major.parse().map_err(|_| bad())?, minor: minor.parse().map_err(|_| bad())? })
    }
}

impl Serialize for AbiVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}.{}", self.major, self.minor))
    }
}

/// Intel TDX appraisal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdxPolicy {
    /// Allowed launches, each a whole boot chain; absent = any (warned), empty = none. There is
    /// no way to pin MRTD alone: it covers the firmware only, and a host could boot the pinned
    /// firmware with its own kernel and initrd.
    pub launches: Option<Vec<TdxLaunch>>,
    /// RTMR3 is extended at run time by the guest itself; pin it when the guest uses it.
    pub rtmr3: Option<Hex<48>>,
    pub mrconfigid: Option<Hex<48>>,
    pub mrowner: Option<Hex<48>>,
    pub mrownerconfig: Option<Hex<48>>,
    /// Exact XFAM.
    pub xfam: Option<Hex<8>>,
    /// Accept debug TDs (the host can read their memory).
    pub allow_debug: bool,
    /// TCB statuses to accept; default UpToDate only.
    pub allowed_tcb_statuses: Vec<TdxTcbStatus>,
    /// Advisory IDs (e.g. "INTEL-SA-00837") that reject a quote even when its status is allowed.
    pub rejected_advisories: Vec<String>,
}

/// One allowed TDX launch: the firmware (MRTD), its configuration (RTMR0: TD HOB, CFV, EFI
/// variables, QEMU's ACPI tables), the kernel (RTMR1) and the command line and initrd (RTMR2),
/// all for one launch shape (firmware, memory size, vCPUs, QEMU version). A TD matches when all
/// four registers equal one entry's.
///
/// ```toml
/// [[tdx.launches]]
/// shape = "2048 MiB, 1 vCPU, QEMU 10.1.0"
/// mrtd = "…"
/// rtmr0 = "…"
/// rtmr1 = "…"
/// rtmr2 = "…"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxLaunch {
    /// What the values hold for, for people (error messages name it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shape: String,
    pub mrtd: Hex<48>,
    pub rtmr0: Hex<48>,
    pub rtmr1: Hex<48>,
    pub rtmr2: Hex<48>,
}

impl TdxLaunch {
    /// The registers as (name, value) pairs, in order.
    pub fn registers(&self) -> [(&'static str, &[u8; 48]); 4] {
        [("mrtd", &self.mrtd.0), ("rtmr0", &self.rtmr0.0), ("rtmr1", &self.rtmr1.0), ("rtmr2", &self.rtmr2.0)]
    }
}

impl Default for TdxPolicy {
    fn default() -> Self {
        TdxPolicy {
            launches: None,
            rtmr3: None,
            mrconfigid: None,
            mrowner: None,
            mrownerconfig: None,
            xfam: None,
            allow_debug: false,
            allowed_tcb_statuses: vec![TdxTcbStatus::UpToDate],
            rejected_advisories: Vec::new(),
        }
    }
}

impl Policy {
    /// Parses a TOML policy.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Policy(e.to_string()))
    }

    /// Renders the policy as TOML (round-trips through [`Policy::from_toml`]).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Policy(e.to_string()))
    }

    /// Adds what a signed reference-values document allows (see
    /// [`ReferenceValues::applicable`]): SNP and sim measurements to their allow-lists, TDX
    /// launches to `tdx.launches`, and its SNP floor, merged with the policy's own so that
    /// neither lowers the other. Lists are created where the policy had none. Sim entries only
    /// when `with_sim`; TDX entries of v1 documents never.
    pub fn apply_reference_values(
        &mut self,
        values: &ReferenceValues,
        with_sim: bool,
    ) -> Result<(), ReferenceError> {
        for entry in values.applicable(with_sim)? {
            match entry {
                Applicable::Measurement { tee, value } => {
                    let list = if tee == Tee::Sim { &mut self.sim } else { &mut self.snp }
                        .measurements
                        .get_or_insert_with(Vec::new);
                    if !list.contains(&Hex(value)) {
                        list.push(Hex(value));
                    }
                }
                Applicable::TdxLaunch { shape, mrtd, rtmr: [rtmr0, rtmr1, rtmr2] } => {
                    let launch = TdxLaunch {
                        shape,
                        mrtd: Hex(mrtd),
                        rtmr0: Hex(rtmr0),
                        rtmr1: Hex(rtmr1),
                        rtmr2: Hex(rtmr2),
                    };
                    let list = self.tdx.launches.get_or_insert_with(Vec::new);
                    if !list.iter().any(|l| l.registers() == launch.registers()) {
                        list.push(launch);
                    }
                }
            }
        }
        if let Some(floor) = &values.snp_min_tcb {
            let merged = match &self.snp.min_tcb {
                Some(own) => own.stricter(floor),
                None => floor.clone(),
            };
            self.snp.min_tcb = Some(merged);
        }
        Ok(())
    }

    /// Turns every unset allow-list into an empty one (nothing allowed). A policy that pins a
    /// measurement for one TEE must not leave another TEE open to any measurement: a
    /// sim-only policy would otherwise accept any guest on real hardware.
    pub fn close_unpinned(&mut self) {
        self.snp.measurements.get_or_insert_with(Vec::new);
        self.sim.measurements.get_or_insert_with(Vec::new);
        self.tdx.launches.get_or_insert_with(Vec::new);
    }

    /// Whether any TEE's allow-list names at least one measurement (a TDX launch is a whole
    /// boot chain).
    pub fn pins_a_measurement(&self) -> bool {
        let some = |l: &Option<Vec<Hex<48>>>| l.as_ref().is_some_and(|m| !m.is_empty());
        some(&self.snp.measurements)
            || some(&self.sim.measurements)
            || self.tdx.launches.as_ref().is_some_and(|l| !l.is_empty())
    }

    /// Refuses a policy that pins a TEE only in part: SNP measurements without a TCB floor
    /// (firmware with a published attestation-key compromise would pass). (A TDX launch cannot
    /// be pinned in part: every entry names MRTD and RTMR0–2.) Services and clients call it when
    /// a policy is set; the pipeline enforces the same rule per appraisal.
    pub fn check_pinning(&self) -> Result<(), ConfigError> {
        let some = |l: &Option<Vec<Hex<48>>>| l.as_ref().is_some_and(|m| !m.is_empty());
        if some(&self.snp.measurements) && !self.snp.min_tcb.as_ref().is_some_and(TcbFloor::is_set) {
            return Err(ConfigError::NoTcbFloor);
        }
        Ok(())
    }

    /// The SNP-format section for `tee` (SNP or sim).
    pub fn snp_section(&self, tee: Tee) -> &SnpPolicy {
        if tee == Tee::Sim { &self.sim } else { &self.snp }
    }

    /// Warnings a service must log at start-up for every dangerous setting. (An unpinned
    /// measurement is reported per appraisal, in the claims' warnings.)
    pub fn dangers(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.insecure_allow_missing_crl {
            out.push(
                "insecure_allow_missing_crl: SEV-SNP revocation is not checked when no CRL is supplied"
                    .into(),
            );
        }
        for (name, s) in [("snp", &self.snp), ("sim", &self.sim)] {
            if s.allow_debug {
                out.push(format!(
                    "{name}.allow_debug: debug guests (host can read guest memory) are accepted"
                ));
            }
            if s.measurements.is_none() {
                out.push(format!("{name}.measurements not set: any launch measurement is accepted"));
            }
        }
        if self.tdx.allow_debug {
            out.push("tdx.allow_debug: debug TDs (host can read TD memory) are accepted".into());
        }
        if self.tdx.launches.is_none() {
            out.push("tdx.launches not set: any TD boot chain is accepted".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_protocol::reference::{Expected, ImageDigests};
    use nacre_wire::snp::Product;

    #[test]
    fn defaults_fail_closed() {
        let p = Policy::from_toml("").unwrap();
        assert!(!p.insecure_allow_missing_crl);
        assert!(!p.snp.allow_debug && !p.sim.allow_debug && !p.tdx.allow_debug);
        assert_eq!(p.tdx.allowed_tcb_statuses, vec![TdxTcbStatus::UpToDate]);
        assert_eq!(p, Policy::default());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_hex() {
        assert!(Policy::from_toml("allow_missing_crl = true").is_err());
        assert!(Policy::from_toml("[snp]\nallow_debugg = true").is_err());
        assert!(Policy::from_toml("[snp]\nmeasurements = [\"00\"]").is_err());
        assert!(Policy::from_toml("[snp]\nhost_data = \"zz\"").is_err());
        assert!(Policy::from_toml("[tdx]\nallowed_tcb_statuses = [\"Fine\"]").is_err());
        assert!(Policy::from_toml("[snp]\nmin_abi = \"1\"").is_err());
        assert!(
            Policy::from_toml("[snp.min_tcb.rome]\nbootloader = 1\ntee = 0\nsnp = 1\nmicrocode = 1").is_err()
        );
        assert!(Policy::from_toml("[snp.min_tcb]\nbootloader = 1").is_err(), "a floor names every component");
    }

    const M: &str = "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"";

    /// Issue 12 §1, issue 13: MRTD cannot be pinned alone; a launch names all four registers.
    #[test]
    fn tdx_mrtd_alone_pins_nothing() {
        let old = Policy::from_toml(&format!("[tdx]\nmrtd = [{M}]\nrtmr0 = {M}\nrtmr1 = {M}\nrtmr2 = {M}"));
        assert!(old.unwrap_err().to_string().contains("unknown field `mrtd`"));
        let partial = Policy::from_toml(&format!("[[tdx.launches]]\nmrtd = {M}\nrtmr0 = {M}\nrtmr1 = {M}"));
        assert!(partial.unwrap_err().to_string().contains("missing field `rtmr2`"));
        let whole = Policy::from_toml(&format!(
            "[[tdx.launches]]\nmrtd = {M}\nrtmr0 = {M}\nrtmr1 = {M}\nrtmr2 = {M}"
        ))
        .unwrap();
        assert!(whole.pins_a_measurement());
        assert_eq!(whole.check_pinning(), Ok(()));
        assert_eq!(Policy::from_toml(&whole.to_toml().unwrap()).unwrap(), whole);
    }

    fn reference(measurements: Vec<Expected>, floor: Option<&str>) -> ReferenceValues {
        ReferenceValues {
            format: nacre_protocol::reference::FORMAT.into(),
            name: "img".into(),
            image: ImageDigests {
                vmlinuz_sha256: "a".repeat(64),
                initrd_sha256: "b".repeat(64),
                cmdline: String::new(),
                sbom_sha256: None,
            },
            measurements,
            snp_min_tcb: floor.map(|f| serde_json::from_str(f).unwrap()),
        }
    }

    /// Issue 13: applying reference values adds SNP/sim measurements and whole TDX launches,
    /// once each, and raises the SNP floor without lowering the policy's own.
    #[test]
    fn reference_values_add_launches_and_raise_the_floor() {
        let tdx = Expected {
            tee: "tdx".into(),
            measurement: "1".repeat(96),
            firmware_sha256: "d".repeat(64),
            vcpus: Some(2),
            memory_mib: Some(4096),
            qemu_version: Some("10.1.0".into()),
            rtmr0: Some("2".repeat(96)),
            rtmr1: Some("3".repeat(96)),
            rtmr2: Some("4".repeat(96)),
            ..Default::default()
        };
        let snp = Expected {
            tee: "snp".into(),
            measurement: "5".repeat(96),
            firmware_sha256: "d".repeat(64),
            ..Default::default()
        };
        let doc = reference(
            vec![tdx.clone(), snp],
            Some(r#"{"genoa":{"bootloader":10,"tee":0,"snp":23,"microcode":84}}"#),
        );
        let mut p =
            Policy::from_toml("[snp.min_tcb.genoa]\nbootloader = 9\ntee = 1\nsnp = 23\nmicrocode = 80")
                .unwrap();
        p.apply_reference_values(&doc, false).unwrap();
        p.apply_reference_values(&doc, false).unwrap();
        let launches = p.tdx.launches.as_ref().unwrap();
        assert_eq!(launches.len(), 1);
        assert_eq!(launches[0].rtmr2, Hex([0x44; 48]));
        assert_eq!(launches[0].shape, "tdx firmware dddddddddddddddd, 4096 MiB, 2 vCPU, QEMU 10.1.0");
        assert_eq!(p.snp.measurements, Some(vec![Hex([0x55; 48])]));
        let genoa = *p.snp.min_tcb.as_ref().unwrap().for_product(Product::Genoa).unwrap();
        assert_eq!((genoa.bootloader, genoa.tee, genoa.microcode), (10, 1, 84));
        assert_eq!(p.check_pinning(), Ok(()));
        // A v1 document's TDX entry applies nothing.
        let mut v1 = reference(
            vec![Expected {
                rtmr0: None,
                rtmr1: None,
                rtmr2: None,
                memory_mib: None,
                qemu_version: None,
                ..tdx
            }],
            None,
        );
        v1.format = nacre_protocol::reference::FORMAT_V1.into();
        let mut p = Policy::default();
        p.apply_reference_values(&v1, false).unwrap();
        assert_eq!(p.tdx.launches, None);
    }

    #[test]
    fn snp_without_tcb_floor_is_refused() {
        let bare = Policy::from_toml(&format!("[snp]\nmeasurements = [{M}]")).unwrap();
        assert_eq!(bare.check_pinning(), Err(ConfigError::NoTcbFloor));
        let empty = Policy::from_toml(&format!("[snp]\nmeasurements = [{M}]\n[snp.min_tcb]\n")).unwrap();
        assert_eq!(
            empty.check_pinning(),
            Err(ConfigError::NoTcbFloor),
            "an empty per-product table is no floor"
        );
        let floored = Policy::from_toml(&format!(
            "[snp]\nmeasurements = [{M}]\nmin_tcb = {{ bootloader = 3, tee = 0, snp = 8, microcode = 115 }}"
        ))
        .unwrap();
        assert_eq!(floored.check_pinning(), Ok(()));
        // Sim has no firmware to compromise: no floor needed.
        let sim = Policy::from_toml(&format!("[sim]\nmeasurements = [{M}]")).unwrap();
        assert_eq!(sim.check_pinning(), Ok(()));
    }

    #[test]
    fn full_example_round_trips() {
        let text = r#"
insecure_allow_missing_crl = true
[snp]
measurements = ["7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"]
max_vmpl = 0
min_abi = "1.51"
min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
[sim.min_tcb.turin]
fmc = 1
bootloader = 1
tee = 0
snp = 2
microcode = 71
[tdx]
allowed_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
rejected_advisories = ["INTEL-SA-00837"]
"#;
        let p = Policy::from_toml(text).unwrap();
        assert_eq!(p.snp.max_vmpl, 0);
        let milan = p.snp.min_tcb.as_ref().and_then(|f| f.for_product(Product::Milan));
        assert_eq!(milan.map(|t| t.microcode), Some(115));
        let sim = p.sim.min_tcb.as_ref().unwrap();
        assert_eq!(sim.for_product(Product::Turin).map(|t| t.fmc), Some(1));
        assert_eq!(sim.for_product(Product::Genoa), None, "a product without an entry has no floor");
        assert_eq!(p.snp.min_abi, Some(AbiVersion { major: 1, minor: 51 }));
        assert_eq!(Policy::from_toml(&p.to_toml().unwrap()).unwrap(), p);
    }
}
