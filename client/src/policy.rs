//! The client's policy file: what an enclave must prove before any input leaves.
//!
//! ```toml
//! # The model identity (docs/sealed-format.md; `nacre seal` and `nacre model digest` print it).
//! # `model_digest` is accepted as its old name; a version-1 model's identity is its SHA-256.
//! model_identity = "<64 hex digits>"
//! # Optional: require exactly this guard manifest (its SHA-256; all zeros: none at all).
//! # guard_digest = "<64 hex digits>"
//! # Optional: require some guard manifest, and at least this output hardening (full,
//! # round:N, top-k:K, label; fewer decimals and a smaller k are harder). The client fetches
//! # the manifest from the enclave and checks it against the attested digest either way.
//! # require_guard = true
//! # min_output = "round:3"
//! # min_ood_action = "flag"     # the guard must check for out-of-distribution inputs, and
//! #                             # at least flag them (log < flag < reject)
//! # max_monitoring_epsilon_per_day = 1.0   # the guard's private monitor, if it has one, may
//! #                             # release at most this ε a day about the inputs (docs/monitoring.md)
//!
//! # Signed reference values (`nacre image build`): their measurements are allowed, per TEE.
//! # Paths are relative to this file. `signer` is the Ed25519 public key the client trusts.
//! [[reference_values]]
//! document = "image/reference-values.json"
//! signature = "image/reference-values.sig"
//! signer = "<64 hex digits>"
//!
//! # Endorsements cache for SNP/TDX (optional; evidence may carry its own chain).
//! # collateral_dir = "collateral"
//! # Development only: accept simulated-TEE evidence signed under this root (PEM or DER).
//! # insecure_sim_root = "sim/ark.pem"
//!
//! # Optional: the enclave's key release must be in the attestation service's transparency
//! # log, under a checkpoint cosigned by at least `min_witnesses` (default: all) of these
//! # witnesses, naming the release key bound in the enclave's TLS evidence
//! # (docs/transparency-log.md).
//! # [log]
//! # key = "<the log's vkey>"
//! # witnesses = ["<a witness's vkey>", …]
//! # min_witnesses = 2
//!
//! # The appraisal, in the verifier's policy format: TCB floors, debug, VMPL, explicit
//! # measurements, chip allow-list, TDX TCB status, …
//! [appraisal.snp]
//! min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
//! ```
//!
//! Only pinned measurements are accepted: a TEE with no measurement from the reference values
//! or `[appraisal]` accepts none (an unset list does not mean "any" here). A policy that pins
//! nothing at all is refused, and so is one that pins a TEE in part: TDX MRTD without RTMR0–2
//! (TDX entries of signed reference values, which carry MRTD alone, are not applied), SNP
//! measurements without a TCB floor (`min_tcb`). Sim entries apply only with `insecure_sim_root`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nacre_atls::AttestationPolicy;
use nacre_protocol::reference::ReferenceValues;
use nacre_verifier::collateral::{CollateralSource, FileCache};
use nacre_verifier::{Appraiser, EvidenceVerifier, Policy, SnpRoots};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    #[serde(default)]
    model_identity: Option<String>,
    /// The name before sealed format v2.
    #[serde(default)]
    model_digest: Option<String>,
    #[serde(default)]
    guard_digest: Option<String>,
    #[serde(default)]
    require_guard: bool,
    #[serde(default)]
    min_output: Option<String>,
    #[serde(default)]
    min_ood_action: Option<nacre_guard::manifest::Action>,
    #[serde(default)]
    max_monitoring_epsilon_per_day: Option<f64>,
    #[serde(default)]
    reference_values: Vec<ReferenceToml>,
    #[serde(default)]
    collateral_dir: Option<PathBuf>,
    #[serde(default)]
    insecure_sim_root: Option<PathBuf>,
    #[serde(default)]
    appraisal: Option<toml::Table>,
    #[serde(default)]
    log: Option<LogToml>,
}

/// `[log]`: require the enclave's key release to be in the service's transparency log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogToml {
    /// The log's checkpoint verifier key (`nacre attestation init` prints it).
    key: String,
    /// Witnesses' cosignature verifier keys.
    #[serde(default)]
    witnesses: Vec<String>,
    /// How many of `witnesses` must have cosigned. Default: all of them.
    #[serde(default)]
    min_witnesses: Option<usize>,
    /// How far a cosignature's time may run ahead of this clock. Default 300 s.
    #[serde(default = "default_skew")]
    max_clock_skew_secs: u64,
}

fn default_skew() -> u64 {
    300
}

impl LogToml {
    fn requirement(&self) -> Result<nacre_tlog::LogRequirement, String> {
        let log = nacre_tlog::NoteKey::parse(self.key.trim()).map_err(|e| format!("[log] key: {e}"))?;
        if log.kind() != nacre_tlog::KeyKind::Checkpoint {
            return Err("[log] key: not a checkpoint (log) key".into());
        }
        let mut witnesses = Vec::new();
        for w in &self.witnesses {
            let key = nacre_tlog::NoteKey::parse(w.trim()).map_err(|e| format!("[log] witnesses: {e}"))?;
            if key.kind() != nacre_tlog::KeyKind::Cosignature {
                return Err(format!("[log] witnesses: {} is not a cosignature key", key.name()));
            }
            if witnesses.iter().any(|k: &nacre_tlog::NoteKey| k.name() == key.name()) {
                return Err(format!("[log] witnesses: {} is listed twice", key.name()));
            }
            witnesses.push(key);
        }
        let min_cosigners = self.min_witnesses.unwrap_or(witnesses.len());
        if min_cosigners > witnesses.len() {
            return Err(format!(
                "[log] min_witnesses = {min_cosigners} with {} witnesses listed: nothing could pass",
                witnesses.len()
            ));
        }
        Ok(nacre_tlog::LogRequirement {
            log,
            witnesses,
            min_cosigners,
            max_clock_skew_s: self.max_clock_skew_secs,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceToml {
    document: PathBuf,
    signature: PathBuf,
    signer: String,
}

#[derive(Debug, thiserror::Error)]
#[error("client policy {path}: {message}")]
pub struct PolicyError {
    pub path: String,
    pub message: String,
}

/// A loaded client policy, and what it was built from (for `nacre verify` to show).
#[derive(Clone, Debug)]
pub struct ClientPolicy {
    pub attestation: AttestationPolicy,
    /// Names of the signed reference values applied.
    pub reference_values: Vec<String>,
    /// Whether simulated-TEE evidence is accepted.
    pub insecure_sim: bool,
    /// Whether the enclave must run a guard manifest (implied by `min_output`).
    pub require_guard: bool,
    /// The least output hardening the guard must apply.
    pub min_output: Option<nacre_guard::manifest::OutputPolicy>,
    /// The least the guard must do with an out-of-distribution input.
    pub min_ood_action: Option<nacre_guard::manifest::Action>,
    /// The most ε a day the guard's private monitor may spend on the inputs (none: any).
    pub max_monitoring_epsilon_per_day: Option<f64>,
    /// `[log]`: the enclave's key release must be in this log, cosigned as required.
    pub log: Option<nacre_tlog::LogRequirement>,
}

impl ClientPolicy {
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let fail = |message: String| PolicyError { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(fail)
    }

    /// Parses a policy whose relative paths are relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let raw: PolicyToml = toml::from_str(text).map_err(|e| e.to_string())?;
        let (name, identity) = match (&raw.model_identity, &raw.model_digest) {
            (Some(i), None) => ("model_identity", i),
            (None, Some(d)) => ("model_digest", d),
            (Some(_), Some(_)) => {
                return Err("model_identity and model_digest (its old name) are both set: keep one".into());
            }
            (None, None) => return Err("model_identity is missing".into()),
        };
        let hex32 = |name: &str, text: &str| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(text, &mut out).map(|()| out).map_err(|_| format!("{name}: 64 hex digits"))
        };
        let model_identity = hex32(name, identity)?;
        let guard_digest = raw.guard_digest.as_deref().map(|g| hex32("guard_digest", g)).transpose()?;
        let min_output = raw
            .min_output
            .as_deref()
            .map(|m| m.parse().map_err(|e| format!("min_output: {e}")))
            .transpose()?;
        if raw.max_monitoring_epsilon_per_day.is_some_and(|e| !(e.is_finite() && e >= 0.0)) {
            return Err("max_monitoring_epsilon_per_day: a finite number ≥ 0".into());
        }
        let require_guard = raw.require_guard || min_output.is_some() || raw.min_ood_action.is_some();
        if require_guard && guard_digest == Some([0; 32]) {
            return Err(
                "require_guard or min_output with an all-zero guard_digest (no guard): nothing could pass"
                    .into(),
            );
        }
        let read = |p: &Path| {
            let p = base.join(p);
            std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
        };
        let mut appraisal = match &raw.appraisal {
            Some(table) => Policy::from_toml(&table.to_string()).map_err(|e| format!("[appraisal]: {e}"))?,
            None => Policy::default(),
        };
        // A partial pin (TDX MRTD without RTMR0–2, SNP without a TCB floor) is refused outright.
        appraisal.check_pinning().map_err(|e| format!("[appraisal]: {e}"))?;
        // Only what is pinned is allowed: an unset list would accept any measurement of its TEE.
        appraisal.close_unpinned();
        let mut names = Vec::new();
        for r in &raw.reference_values {
            let mut signer = [0u8; 32];
            hex::decode_to_slice(&r.signer, &mut signer)
                .map_err(|_| "reference_values.signer: 64 hex digits".to_owned())?;
            let values = ReferenceValues::verify(&read(&r.document)?, &read(&r.signature)?, &[signer])
                .map_err(|e| format!("{}: {e}", r.document.display()))?;
            // Sim entries apply only with the explicit insecure sim root; TDX entries only as
            // whole launches (v2), never as an MRTD alone.
            appraisal
                .apply_reference_values(&values, raw.insecure_sim_root.is_some())
                .map_err(|e| format!("{}: {e}", r.document.display()))?;
            names.push(values.name);
        }
        // Reference values may have added SNP measurements: they need a floor too.
        appraisal.check_pinning().map_err(|e| format!("{e} (set [appraisal.snp] min_tcb)"))?;
        if !appraisal.pins_a_measurement() {
            return Err("no measurement is pinned (no reference_values, none in [appraisal]): \
                        the policy would accept any guest"
                .into());
        }
        let collateral = raw
            .collateral_dir
            .as_ref()
            .map(|d| Arc::new(FileCache::new(base.join(d))) as Arc<dyn CollateralSource>);
        let mut verifier = EvidenceVerifier::new(collateral);
        if let Some(root) = &raw.insecure_sim_root {
            let bytes = read(root)?;
            let der = pem_or_der(&bytes);
            verifier = verifier
                .with_sim(SnpRoots::insecure_sim(&der).map_err(|e| format!("insecure_sim_root: {e}"))?);
        }
        Ok(ClientPolicy {
            attestation: AttestationPolicy::new(verifier, Appraiser::new(appraisal), model_identity)
                .with_guard_digest(guard_digest),
            reference_values: names,
            insecure_sim: raw.insecure_sim_root.is_some(),
            require_guard,
            min_output,
            min_ood_action: raw.min_ood_action,
            max_monitoring_epsilon_per_day: raw.max_monitoring_epsilon_per_day,
            log: raw.log.as_ref().map(LogToml::requirement).transpose()?,
        })
    }
}

impl ClientPolicy {
    /// This policy with the `[log]` table `text` (replacing any): for tests and tools that add
    /// a log requirement to a loaded policy.
    pub fn with_log_toml(mut self, text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Only {
            log: LogToml,
        }
        let only: Only = toml::from_str(text).map_err(|e| e.to_string())?;
        self.log = Some(only.log.requirement()?);
        Ok(self)
    }
}

fn pem_or_der(bytes: &[u8]) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    match CertificateDer::from_pem_slice(bytes) {
        Ok(der) => der.to_vec(),
        Err(_) => bytes.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DIGEST: &str =
        "model_identity = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";

    fn m(byte: &str) -> String {
        format!("\"{}\"", byte.repeat(48))
    }

    /// Issue 16: `model_identity`, or its old name `model_digest` (a v1 model's SHA-256 is its
    /// identity), never both; an optional guard pin.
    #[test]
    fn model_identity_under_either_name_and_a_guard_pin() {
        let snp = format!(
            "[appraisal.snp]\nmeasurements = [{}]\nmin_tcb = {{ bootloader = 3, tee = 0, snp = 8, microcode = 115 }}\n",
            m("aa")
        );
        let ab = "ab".repeat(32);
        for key in ["model_identity", "model_digest"] {
            let p = ClientPolicy::parse(&format!("{key} = \"{ab}\"\n{snp}"), Path::new(".")).unwrap();
            assert_eq!(p.attestation.model_identity(), &[0xab; 32]);
            assert_eq!(p.attestation.guard_digest(), None);
        }
        let both = format!("model_identity = \"{ab}\"\nmodel_digest = \"{ab}\"\n{snp}");
        assert!(ClientPolicy::parse(&both, Path::new(".")).unwrap_err().contains("both"));
        assert!(ClientPolicy::parse(&snp, Path::new(".")).unwrap_err().contains("model_identity is missing"));
        let short = format!("model_identity = \"abab\"\n{snp}");
        assert!(ClientPolicy::parse(&short, Path::new(".")).unwrap_err().contains("64 hex"));
        let guard = format!("model_identity = \"{ab}\"\nguard_digest = \"{}\"\n{snp}", "cd".repeat(32));
        let p = ClientPolicy::parse(&guard, Path::new(".")).unwrap();
        assert_eq!(p.attestation.guard_digest(), Some(&[0xcd; 32]));
    }

    /// Issue 12 §1, issue 13: a client never accepts TDX on the firmware measurement alone; a
    /// TDX launch is the whole boot chain.
    #[test]
    fn client_refuses_tdx_mrtd_without_rtmr0_2() {
        let e =
            ClientPolicy::parse(&format!("{DIGEST}[appraisal.tdx]\nmrtd = [{}]\n", m("aa")), Path::new("."))
                .unwrap_err();
        assert!(e.contains("mrtd"), "{e}");
        let partial =
            format!("{DIGEST}[[appraisal.tdx.launches]]\nmrtd = {0}\nrtmr0 = {0}\nrtmr1 = {0}\n", m("aa"));
        assert!(ClientPolicy::parse(&partial, Path::new(".")).unwrap_err().contains("rtmr2"));
        let whole = format!(
            "{DIGEST}[[appraisal.tdx.launches]]\nmrtd = {0}\nrtmr0 = {0}\nrtmr1 = {0}\nrtmr2 = {0}\n",
            m("aa")
        );
        assert!(ClientPolicy::parse(&whole, Path::new(".")).is_ok());
    }

    /// Issue 12 §3: a client policy that allows SNP has a TCB floor.
    #[test]
    fn client_refuses_snp_without_a_tcb_floor() {
        let e = ClientPolicy::parse(
            &format!("{DIGEST}[appraisal.snp]\nmeasurements = [{}]\n", m("aa")),
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.contains("TCB floor"), "{e}");
        let floored = format!(
            "{DIGEST}[appraisal.snp]\nmeasurements = [{}]\nmin_tcb = {{ bootloader = 3, tee = 0, snp = 8, microcode = 115 }}\n",
            m("aa")
        );
        assert!(ClientPolicy::parse(&floored, Path::new(".")).is_ok());
    }
}
