//! Where endorsements come from. Verification never fetches on the hot path: a
//! [`CollateralSource`] hands over what a cache holds, and the cache is filled offline (or by a
//! rate-limited fetcher run out of band). Everything a source returns is untrusted and goes
//! through the same chain checks as evidence-supplied certificates.

use std::path::{Path, PathBuf};

use dcap_qvl::QuoteCollateralV3;
use nacre_wire::snp::{SigningKey, SnpReport};

use crate::error::ConfigError;
use crate::tdx::collateral_from_json;
use crate::x509::CertSet;
use nacre_wire::snp::Product;

/// Supplies endorsements for evidence that arrives without them.
pub trait CollateralSource: Send + Sync {
    /// The ARK, ASK or ASVK, VCEK or VLEK, and the ARK's CRL (when cached) for `report`.
    fn snp_certs(&self, product: Product, report: &SnpReport) -> Result<CertSet, ConfigError>;
    /// TCB Info, QE Identity, CRLs and issuer chains for a TDX platform (by FMSPC).
    fn tdx_collateral(&self, fmspc: &[u8; 6]) -> Result<QuoteCollateralV3, ConfigError>;
    /// The ARK's CRL for `product` alone (None: none cached), to weigh against a CRL the
    /// evidence brought: the newer of the two is used, whichever brought it. A source that
    /// caches CRLs must answer here, or a host could keep an older CRL in play.
    fn snp_crl(&self, product: Product) -> Result<Option<Vec<u8>>, ConfigError>;
}

/// A directory cache:
///
/// ```text
/// DIR/snp/<Milan|Genoa|Turin>/ark.pem  ask.pem  asvk.pem  crl.pem
/// DIR/snp/<product>/vcek/<CHIP_ID hex>-<REPORTED_TCB hex>.der
/// DIR/snp/<product>/vlek/<REPORTED_TCB hex>.der
/// DIR/tdx/<FMSPC hex, upper case>.json      (QuoteCollateralV3 JSON)
/// ```
#[derive(Clone, Debug)]
pub struct FileCache {
    root: PathBuf,
}

impl FileCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileCache { root: root.into() }
    }

    /// Where the VCEK or VLEK for `report` is cached.
    pub fn endorsement_path(&self, product: Product, report: &SnpReport) -> PathBuf {
        let dir = self.root.join("snp").join(product.name());
        let tcb = format!("{:016x}", report.reported_tcb.0);
        match report.signing_key {
            SigningKey::Vlek => dir.join("vlek").join(format!("{tcb}.der")),
            _ => dir.join("vcek").join(format!("{}-{tcb}.der", hex::encode(report.chip_id))),
        }
    }

    fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(path).map_err(|e| ConfigError::Collateral(format!("{}: {e}", path.display())))
    }
}

impl CollateralSource for FileCache {
    fn snp_certs(&self, product: Product, report: &SnpReport) -> Result<CertSet, ConfigError> {
        let dir = self.root.join("snp").join(product.name());
        let intermediate = if report.signing_key == SigningKey::Vlek { "asvk.pem" } else { "ask.pem" };
        let mut set = CertSet::default();
        for path in [dir.join("ark.pem"), dir.join(intermediate), self.endorsement_path(product, report)] {
            set.add(&Self::read(&path)?)
                .map_err(|e| ConfigError::Collateral(format!("{}: {e}", path.display())))?;
        }
        let crl = dir.join("crl.pem");
        if crl.exists() {
            set.add(&Self::read(&crl)?)
                .map_err(|e| ConfigError::Collateral(format!("{}: {e}", crl.display())))?;
        }
        Ok(set)
    }

    fn snp_crl(&self, product: Product) -> Result<Option<Vec<u8>>, ConfigError> {
        let path = self.root.join("snp").join(product.name()).join("crl.pem");
        if !path.exists() {
            return Ok(None);
        }
        let mut set = CertSet::default();
        set.add(&Self::read(&path)?)
            .map_err(|e| ConfigError::Collateral(format!("{}: {e}", path.display())))?;
        match (set.crls.pop(), set.certs.is_empty() && set.crls.is_empty()) {
            (Some(crl), true) => Ok(Some(crl)),
            _ => Err(ConfigError::Collateral(format!("{}: not exactly one CRL", path.display()))),
        }
    }

    fn tdx_collateral(&self, fmspc: &[u8; 6]) -> Result<QuoteCollateralV3, ConfigError> {
        let path = self.root.join("tdx").join(format!("{}.json", hex::encode_upper(fmspc)));
        collateral_from_json(&Self::read(&path)?)
            .map_err(|e| ConfigError::Collateral(format!("{}: {e}", path.display())))
    }
}
