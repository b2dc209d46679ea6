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
//! A policy that pins no measurement for any TEE would release to any guest on genuine
//! hardware; it is refused when set.

use nacre_verifier::{Appraiser, Policy};
use serde::Deserialize;
use time::OffsetDateTime;
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
    appraisal: toml::Table,
}

#[derive(Debug)]
pub struct ReleasePolicy {
    pub allowed_versions: Vec<u32>,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub appraiser: Appraiser,
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
        let appraisal =
            Policy::from_toml(&raw.appraisal.to_string()).map_err(|e| format!("[appraisal]: {e}"))?;
        let pinned = appraisal.snp.measurements.as_ref().is_some_and(|m| !m.is_empty())
            || appraisal.sim.measurements.as_ref().is_some_and(|m| !m.is_empty())
            || appraisal.tdx.mrtd.as_ref().is_some_and(|m| !m.is_empty());
        if !pinned {
            return Err("[appraisal] pins no measurement (snp/sim `measurements` or tdx `mrtd`): \
                        it would release the key to any guest"
                .into());
        }
        let not_before = instant("not_before", &raw.not_before)?;
        let not_after = instant("not_after", &raw.not_after)?;
        if let (Some(a), Some(b)) = (not_before, not_after)
            && a > b
        {
            return Err("not_before is after not_after".into());
        }
        Ok(ReleasePolicy {
            allowed_versions: raw.allowed_versions,
            not_before,
            not_after,
            appraiser: Appraiser::new(appraisal),
        })
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
            "allowed_versions = [1]\nnot_before = \"2026-01-01T00:00:00Z\"\n\
             [appraisal.sim]\nmeasurements = [\"{M}\"]\n"
        ))
        .unwrap();
        assert!(!p.in_window(1_767_225_599));
        assert!(p.in_window(1_767_225_600));
        assert!(p.version_allowed(1, 3) && p.version_allowed(3, 3) && !p.version_allowed(2, 3));
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
             [appraisal.sim]\nmeasurements = [\"{M}\"]\n"
        );
        assert!(ReleasePolicy::parse(&inverted).is_err());
    }
}
