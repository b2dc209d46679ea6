//! The appraisal policy, read from TOML. Unknown keys are errors (a typo must never loosen a
//! security policy), and every default fails closed: debug forbidden, TDX TCB UpToDate only,
//! a CRL required. See the README for the format with examples.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::claims::TdxTcbStatus;
use crate::error::ConfigError;
use nacre_wire::Tee;
use nacre_wire::snp::TcbVersion;

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
    /// Floor for REPORTED_TCB, COMMITTED_TCB and LAUNCH_TCB, per component.
    pub min_tcb: TcbVersion,
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
            min_tcb: TcbVersion::default(),
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
    /// Allowed MRTDs; absent = any (warned), empty = none.
    pub mrtd: Option<Vec<Hex<48>>>,
    pub rtmr0: Option<Hex<48>>,
    pub rtmr1: Option<Hex<48>>,
    pub rtmr2: Option<Hex<48>>,
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

impl Default for TdxPolicy {
    fn default() -> Self {
        TdxPolicy {
            mrtd: None,
            rtmr0: None,
            rtmr1: None,
            rtmr2: None,
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

    /// Adds `measurement` to `tee`'s allow-list (SNP/sim `measurements`, TDX `mrtd`), creating
    /// the list if the policy had none. (Signed reference values are applied this way, by the
    /// attestation service and by clients.)
    pub fn allow_measurement(&mut self, tee: Tee, measurement: [u8; 48]) {
        let list = match tee {
            Tee::Sim => &mut self.sim.measurements,
            Tee::Snp => &mut self.snp.measurements,
            Tee::Tdx => &mut self.tdx.mrtd,
        };
        let list = list.get_or_insert_with(Vec::new);
        if !list.contains(&Hex(measurement)) {
            list.push(Hex(measurement));
        }
    }

    /// Turns every unset allow-list into an empty one (nothing allowed). A policy that pins a
    /// measurement for one TEE must not leave another TEE open to any measurement: a
    /// sim-only policy would otherwise accept any guest on real hardware.
    pub fn close_unpinned(&mut self) {
        for list in [&mut self.snp.measurements, &mut self.sim.measurements, &mut self.tdx.mrtd] {
            list.get_or_insert_with(Vec::new);
        }
    }

    /// Whether any TEE's allow-list names at least one measurement.
    pub fn pins_a_measurement(&self) -> bool {
        let some = |l: &Option<Vec<Hex<48>>>| l.as_ref().is_some_and(|m| !m.is_empty());
        some(&self.snp.measurements) || some(&self.sim.measurements) || some(&self.tdx.mrtd)
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
        if self.tdx.mrtd.is_none() {
            out.push("tdx.mrtd not set: any MRTD is accepted".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
[tdx]
allowed_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
rejected_advisories = ["INTEL-SA-00837"]
"#;
        let p = Policy::from_toml(text).unwrap();
        assert_eq!(p.snp.max_vmpl, 0);
        assert_eq!(p.snp.min_tcb.microcode, 115);
        assert_eq!(p.snp.min_abi, Some(AbiVersion { major: 1, minor: 51 }));
        assert_eq!(Policy::from_toml(&p.to_toml().unwrap()).unwrap(), p);
    }
}
