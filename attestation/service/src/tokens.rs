//! Admin API bearer tokens. The configuration holds only SHA-256 digests of the tokens; a
//! presented token is hashed and compared with every configured digest in constant time.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

/// Ordered by what a role may do: each may do all that the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads `/metrics` only: a scraper's token (Prometheus), which cannot read the audit log.
    Metrics,
    /// Reads keys (never key material), the audit log and the metrics.
    Auditor,
    /// Manages keys and policies; reads all an auditor reads.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Metrics => "metrics",
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds the token; recorded as the actor in the audit log.
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

impl core::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TokenEntry {{ name: {:?}, role: {:?} }}", self.name, self.role)
    }
}

/// Whom a request authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

#[derive(Debug)]
pub struct Tokens {
    entries: Vec<(String, Role, [u8; 32])>,
}

impl Tokens {
    pub fn new(entries: &[TokenEntry]) -> Result<Self, String> {
        let mut out = Vec::new();
        for e in entries {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&e.sha256, &mut digest)
                .map_err(|_| format!("token {:?}: sha256 must be 64 hex digits", e.name))?;
            out.push((e.name.clone(), e.role, digest));
        }
        Ok(Tokens { entries: out })
    }

    /// The principal for `token`, checking every entry so timing does not reveal which matched.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let presented = digest::digest(&digest::SHA256, token.as_bytes());
        let mut found = None;
        for (name, role, want) in &self.entries {
            let diff = want.iter().zip(presented.as_ref()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(Principal { name: name.clone(), role: *role });
            }
        }
        found
    }
}

/// A new random token (256 bits, hex) and its digest for the configuration.
pub fn generate() -> Result<(String, String), String> {
    let mut raw = [0u8; 32];
    SystemRandom::new().fill(&mut raw).map_err(|_| "random number generator failed".to_owned())?;
    let token = format!("nacre_{}", hex::encode(raw));
    let digest = hex::encode(digest::digest(&digest::SHA256, token.as_bytes()));
    Ok((token, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_by_digest_only() {
        let (admin, admin_hash) = generate().unwrap();
        let (auditor, auditor_hash) = generate().unwrap();
        let tokens = Tokens::new(&[
            TokenEntry { name: "ops".into(), role: Role::Admin, sha256: admin_hash },
            TokenEntry { name: "audit".into(), role: Role::Auditor, sha256: auditor_hash.clone() },
        ])
        .unwrap();
        assert_eq!(tokens.authenticate(&admin).unwrap().role, Role::Admin);
        assert_eq!(
            tokens.authenticate(&auditor).unwrap(),
            Principal { name: "audit".into(), role: Role::Auditor }
        );
        assert_eq!(tokens.authenticate(&auditor_hash), None, "the digest is not the token");
        assert_eq!(tokens.authenticate(""), None);
        assert!(
            Tokens::new(&[TokenEntry { name: "x".into(), role: Role::Admin, sha256: "zz".into() }]).is_err()
        );
    }
}
