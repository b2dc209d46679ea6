//! A key's release policy (TOML), set by the key's owner through the admin API:
//!
//! ```toml
//! # Versions releasable besides the current one (default: none — only the current version).
//! allowed_versions = [1]
//! # Release window, RFC 3339 (default: unbounded).
//! not_before = "2026-01-01T00:00:00Z"
//! not_after = "2027-01-01T00:00:00Z"
//!
//! # The appraisal policy: the attestation core's policy format (`nacre evidence verify
//! # --policy`): allowed measurements per TEE, TCB floors, chip allow-list, debug, VMPL, ...
//! [appraisal.sim]
//! measurements = ["<96 hex digits>"]
//! ```
//!
//! A policy can also name imported reference values (signed by a trusted image signer):
//!
//! ```toml
//! reference_values = ["fraud-guest"]
//! ```
//!
//! Their measurements are added, per TEE, to the appraisal's allow-lists (`sim` →
//! `[appraisal.sim] measurements`, `snp` → `[appraisal.snp] measurements`, `tdx` →
//! `[appraisal.tdx] mrtd`). In such a policy an allow-list that is neither set explicitly nor
//! given by a reference allows nothing (never "any"). The service resolves the names at every
//! release from its database ([`ReleasePolicy::resolve`]), so a re-import takes effect at once.
//!
//! A policy that pins no measurement for any TEE (explicitly or through reference values)
//! would release to any guest on genuine hardware; it is refused when set. So is one that pins
//! a TEE only in part ([`Policy::check_pinning`]): a TDX MRTD without RTMR0–2, SNP measurements
//! without a TCB floor.
//!
//! Simulated-TEE evidence gives no confidentiality (the host plays the secure processor), so it
//! unlocks a key only when the key's own policy opts in by name:
//!
//! ```toml
//! insecure_sim = true
//! ```
//!
//! Without it, `[appraisal.sim]` measurements are refused when the policy is set, and the sim
//! entries of named reference values (which `nacre image build` always writes) are ignored: a
//! service that trusts the sim root for development never releases a production key to a
//! forged sim report.
//!
//! A policy can require that the model be signed by one of a list of publishers (issue 16;
//! format and checks in [`crate::signers`]):
//!
//! ```toml
//! [[signers]]
//! public_key_pem = """
//! -----BEGIN PUBLIC KEY-----
//! ...
//! -----END PUBLIC KEY-----
//! """
//! ```

use nacre_protocol::reference::{ReferenceValues, check_name};
use nacre_verifier::{Appraiser, Policy};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::signers::{PolicySigner, SignerToml};
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleasePolicyToml {
    #[serde(default)]
    allowed_versions: Vec<u32>,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    not_after: Option<String>,
    #[serde(default)]
    reference_values: Vec<String>,
    #[serde(default)]
    insecure_sim: bool,
    #[serde(default)]
    appraisal: toml::Table,
    #[serde(default)]
    signers: Vec<SignerToml>,
}

#[derive(Debug)]
pub struct ReleasePolicy {
    pub allowed_versions: Vec<u32>,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    /// Names of imported reference values whose measurements the appraisal also allows.
    pub reference_values: Vec<String>,
    /// The key may be released to simulated-TEE evidence (`insecure_sim = true`).
    pub insecure_sim: bool,
    /// The appraisal under the explicit `[appraisal]` table alone. When `reference_values` is
    /// not empty its unset allow-lists are closed (empty), and releases appraise under
    /// [`ReleasePolicy::resolve`] instead.
    pub appraiser: Appraiser,
    /// Publishers one of whom must have signed the released version's model (none: no
    /// signature is required).
    pub signers: Vec<PolicySigner>,
}

fn instant(field: &str, text: &Option<String>) -> Result<Option<i64>, String> {
    text.as_deref()
        .map(|t| {
            OffsetDateTime::parse(t, &Rfc3339)
                .map(|d| d.unix_timestamp())
                .map_err(|e| format!("{field}: {t:?} is not RFC 3339: {e}"))
        })
        .transpose()
}

impl ReleasePolicy {
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: ReleasePolicyToml = toml::from_str(text).map_err(|e| format!("release policy: {e}"))?;
        let mut appraisal =
            Policy::from_toml(&raw.appraisal.to_string()).map_err(|e| format!("[appraisal]: {e}"))?;
        appraisal.check_pinning().map_err(|e| format!("[appraisal]: {e}"))?;
        if !raw.insecure_sim && appraisal.sim.measurements.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err("[appraisal.sim] pins measurements but the policy does not set `insecure_sim = true`: \
                        simulated-TEE evidence gives no confidentiality and unlocks a key only by explicit opt-in"
                .into());
        }
        // Pinning one TEE closes the others (an unset list would accept any measurement).
        let pinned = appraisal.pins_a_measurement();
        appraisal.close_unpinned();
        if !pinned && raw.reference_values.is_empty() {
            return Err(
                "[appraisal] pins no measurement (snp/sim `measurements` or `[[tdx.launches]]`) and \
                        `reference_values` names none: it would release the key to any guest"
                    .into(),
            );
        }
        let mut reference_values: Vec<String> = Vec::with_capacity(raw.reference_values.len());
        for name in raw.reference_values {
            check_name(&name).map_err(|e| format!("reference_values: {e}"))?;
            if reference_values.contains(&name) {
                return Err(format!("reference_values: {name:?} is named twice"));
            }
            reference_values.push(name);
        }
        if !reference_values.is_empty() {
            // Fail closed: a TEE neither pinned here nor by a reference allows no measurement.
            appraisal.sim.measurements.get_or_insert_with(Vec::new);
            appraisal.snp.measurements.get_or_insert_with(Vec::new);
            appraisal.tdx.launches.get_or_insert_with(Vec::new);
        }
        let not_before = instant("not_before", &raw.not_before)?;
        let not_after = instant("not_after", &raw.not_after)?;
        if let (Some(a), Some(b)) = (not_before, not_after)
            && a > b
        {
            return Err("not_before is after not_after".into());
        }
        let signers = crate::signers::parse(raw.signers)?;
        Ok(ReleasePolicy {
            signers,
            allowed_versions: raw.allowed_versions,
            not_before,
            not_after,
            reference_values,
            insecure_sim: raw.insecure_sim,
            appraiser: Appraiser::new(appraisal),
        })
    }

    /// The appraiser of this policy with what `references` allow (the documents its
    /// `reference_values` name, as stored now) added: SNP measurements and floors, whole TDX
    /// launches of v2 documents, sim entries only when the policy opts into sim
    /// ([`Policy::apply_reference_values`]).
    pub fn resolve(&self, references: &[&ReferenceValues]) -> Result<Appraiser, String> {
        let mut policy = self.appraiser.policy().clone();
        for r in references {
            policy.apply_reference_values(r, self.insecure_sim).map_err(|e| e.to_string())?;
        }
        Ok(Appraiser::new(policy))
    }

    pub fn in_window(&self, now: i64) -> bool {
        self.not_before.is_none_or(|t| now >= t) && self.not_after.is_none_or(|t| now <= t)
    }

    /// A version is releasable when it is current or listed.
    pub fn version_allowed(&self, version: u32, current: u32) -> bool {
        version == current || self.allowed_versions.contains(&version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str =
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn parses_windows_versions_and_appraisal() {
        let p = ReleasePolicy::parse(&format!(
            "allowed_versions = [1]\nnot_before = \"2026-01-01T00:00:00Z\"\ninsecure_sim = true\n\
             [appraisal.sim]\nmeasurements = [\"{M}\"]\n"
        ))
        .unwrap();
        assert!(!p.in_window(1_767_225_599));
        assert!(p.in_window(1_767_225_600));
        assert!(p.version_allowed(1, 3) && p.version_allowed(3, 3) && !p.version_allowed(2, 3));
    }

    fn reference(name: &str, measurements: &[(&str, &str)]) -> ReferenceValues {
        use nacre_protocol::reference::{Expected, FORMAT, ImageDigests};
        ReferenceValues {
            format: FORMAT.into(),
            name: name.into(),
            image: ImageDigests {
                vmlinuz_sha256: "1".repeat(64),
                initrd_sha256: "2".repeat(64),
                cmdline: String::new(),
                sbom_sha256: None,
            },
            measurements: measurements
                .iter()
                .map(|(tee, m)| Expected {
                    tee: (*tee).into(),
                    measurement: (*m).into(),
                    firmware_sha256: "3".repeat(64),
                    ..Default::default()
                })
                .collect(),
            snp_min_tcb: None,
        }
    }

    #[test]
    fn reference_values_pin_and_merge_per_tee_failing_closed() {
        let b = "b".repeat(96);
        let c = "c".repeat(96);
        // Naming reference values counts as pinned; unset lists are closed, not "any".
        let p = ReleasePolicy::parse("reference_values = [\"img\"]\ninsecure_sim = true\n").unwrap();
        assert_eq!(p.reference_values, ["img"]);
        let base = p.appraiser.policy();
        assert_eq!(base.sim.measurements, Some(vec![]));
        assert_eq!(base.snp.measurements, Some(vec![]));
        assert_eq!(base.tdx.launches, Some(vec![]));
        let mut img = reference("img", &[("sim", &b), ("tdx", &c), ("sim", &b)]);
        img.format = nacre_protocol::reference::FORMAT_V1.into();
        let resolved = p.resolve(&[&img]).unwrap();
        let policy = resolved.policy();
        assert_eq!(policy.sim.measurements.as_deref().map(<[_]>::len), Some(1), "deduplicated");
        assert_eq!(hex::encode(policy.sim.measurements.as_ref().unwrap()[0].0), b);
        assert_eq!(policy.tdx.launches, Some(vec![]), "a v1 TDX entry (MRTD alone) is never applied: {c}");
        assert_eq!(policy.snp.measurements, Some(vec![]), "SNP allows nothing");
        // Explicit measurements stay; references add to them.
        let p = ReleasePolicy::parse(&format!(
            "reference_values = [\"img\"]\ninsecure_sim = true\n[appraisal.sim]\nmeasurements = [\"{M}\"]\n"
        ))
        .unwrap();
        let resolved = p.resolve(&[&img]).unwrap();
        assert_eq!(resolved.policy().sim.measurements.as_deref().map(<[_]>::len), Some(2));
        // Bad names, duplicates, an empty list with nothing pinned.
        for bad in
            ["reference_values = [\"a b\"]", "reference_values = [\"x\", \"x\"]", "reference_values = []"]
        {
            assert!(ReleasePolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pinning_one_tee_closes_the_others() {
        let p = ReleasePolicy::parse(&format!(
            "insecure_sim = true\n[appraisal.sim]\nmeasurements = [\"{}\"]\n",
            "ab".repeat(48)
        ))
        .unwrap();
        let policy = p.appraiser.policy();
        assert_eq!(policy.snp.measurements, Some(vec![]), "SNP must not be open to any measurement");
        assert_eq!(policy.tdx.launches, Some(vec![]));
        assert_eq!(policy.sim.measurements.as_ref().map(Vec::len), Some(1));
    }

    /// Issue 12 §2: `nacre image build` always writes a sim entry. Without `insecure_sim` it
    /// adds nothing to the key's appraisal, and explicit sim measurements are refused.
    #[test]
    fn reference_sim_entry_needs_the_keys_sim_opt_in() {
        let b = "b".repeat(96);
        let img = reference("img", &[("sim", &b)]);
        let p = ReleasePolicy::parse("reference_values = [\"img\"]\n").unwrap();
        assert_eq!(p.resolve(&[&img]).unwrap().policy().sim.measurements, Some(vec![]), "sim stays closed");
        let p = ReleasePolicy::parse("reference_values = [\"img\"]\ninsecure_sim = true\n").unwrap();
        assert_eq!(p.resolve(&[&img]).unwrap().policy().sim.measurements.as_ref().map(Vec::len), Some(1));
        let e = ReleasePolicy::parse(&format!("[appraisal.sim]\nmeasurements = [\"{M}\"]\n")).unwrap_err();
        assert!(e.contains("insecure_sim"), "{e}");
    }

    /// Issue 12 §1 and §3, issue 13, at policy set: a TDX MRTD without RTMR0–2 cannot even be
    /// written, and SNP measurements without a TCB floor are refused with the reason; a whole
    /// TDX launch is accepted.
    #[test]
    fn partial_pins_are_refused_when_set() {
        let e = ReleasePolicy::parse(&format!("[appraisal.tdx]\nmrtd = [\"{M}\"]\n")).unwrap_err();
        assert!(e.contains("unknown field `mrtd`"), "{e}");
        let e = ReleasePolicy::parse(&format!(
            "[[appraisal.tdx.launches]]\nmrtd = \"{M}\"\nrtmr0 = \"{M}\"\nrtmr1 = \"{M}\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("rtmr2"), "{e}");
        assert!(
            ReleasePolicy::parse(&format!(
                "[[appraisal.tdx.launches]]\nmrtd = \"{M}\"\nrtmr0 = \"{M}\"\nrtmr1 = \"{M}\"\nrtmr2 = \"{M}\"\n"
            ))
            .is_ok()
        );
        let e = ReleasePolicy::parse(&format!("[appraisal.snp]\nmeasurements = [\"{M}\"]\n")).unwrap_err();
        assert!(e.contains("TCB floor"), "{e}");
        assert!(
            ReleasePolicy::parse(&format!(
                "[appraisal.snp]\nmeasurements = [\"{M}\"]\nmin_tcb = {{ bootloader = 3, tee = 0, snp = 8, microcode = 115 }}\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn refuses_unpinned_unknown_and_inverted() {
        assert!(ReleasePolicy::parse("[appraisal]\n").unwrap_err().contains("pins no measurement"));
        assert!(
            ReleasePolicy::parse(&format!("typo = 1\n[appraisal.sim]\nmeasurements = [\"{M}\"]\n")).is_err()
        );
        assert!(
            ReleasePolicy::parse(&format!("[appraisal.sim]\nmeasurments = [\"{M}\"]\n"))
                .unwrap_err()
                .contains("appraisal")
        );
        let inverted = format!(
            "not_before = \"2027-01-01T00:00:00Z\"\nnot_after = \"2026-01-01T00:00:00Z\"\n\
             insecure_sim = true\n[appraisal.sim]\nmeasurements = [\"{M}\"]\n"
        );
        assert!(ReleasePolicy::parse(&inverted).is_err());
    }
}
