//! The in-toto Statement v1 with the OMS v1.0 predicate, read into a [`Manifest`].
//!
//! Called only on a payload whose signature has verified. Checks, in order: the statement and
//! predicate types (refused as "not a model signature" by name), the strict shape, the hash and
//! method (refused as unsupported by name), one file, the shard layout, and finally that the
//! subject digest is SHA-256 over the resource digests.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::bundle::decode_hex32;
use crate::error::{Inconsistency, SignatureError, Unsupported};
use crate::manifest::Manifest;

const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
const PREDICATE_TYPE_LEGACY: &str = "https://model_signing/Digests/v0.1";

/// Shard sizes must be exact integers in JSON; some model-signing versions write them as floats
/// (`1048576.0`), which are exact below 2^53.
const MAX_SHARD_SIZE: u64 = 1 << 53;

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "_type")]
    statement_type: Option<String>,
    #[serde(rename = "predicateType")]
    predicate_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatement {
    #[serde(rename = "_type")]
    _statement_type: String,
    subject: Vec<RawSubject>,
    #[serde(rename = "predicateType")]
    _predicate_type: String,
    predicate: RawPredicate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    name: String,
    digest: RawDigestSet,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigestSet {
    sha256: String,
}

/// OMS v1.0 says verifiers ignore predicate fields other than these two (room for model cards
/// and the like), so unknown fields are allowed here and only here.
#[derive(Deserialize)]
struct RawPredicate {
    serialization: RawSerialization,
    resources: Vec<RawResource>,
}

/// Unknown fields are refused: a new serialization parameter could change what the digests
/// mean.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSerialization {
    method: String,
    hash_type: String,
    shard_size: Option<serde_json::Number>,
    #[allow(dead_code)] // a directory-walk setting; one regular file is the same either way
    allow_symlinks: bool,
    #[allow(dead_code)] // ditto: paths skipped while walking a directory
    #[serde(default)]
    ignore_paths: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    name: String,
    algorithm: String,
    digest: String,
}

/// Reads a verified payload. Returns the manifest (the subject digest was checked against it).
pub(crate) fn parse(payload: &[u8]) -> Result<Manifest, SignatureError> {
    let header: Header =
        serde_json::from_slice(payload).map_err(|e| SignatureError::parse("statement", e))?;
    let statement_type = header.statement_type.unwrap_or_default();
    if statement_type != STATEMENT_TYPE {
        return Err(SignatureError::NotAModelSignature {
            found: format!("statement type {statement_type:?}"),
        });
    }
    match header.predicate_type.as_deref() {
        Some(PREDICATE_TYPE) => {}
        Some(PREDICATE_TYPE_LEGACY) => {
            return Err(SignatureError::UnsupportedScheme(Unsupported::LegacyPredicate));
        }
        other => {
            return Err(SignatureError::NotAModelSignature {
                found: format!("predicate type {:?}", other.unwrap_or_default()),
            });
        }
    }
    let raw: RawStatement =
        serde_json::from_slice(payload).map_err(|e| SignatureError::parse("statement", e))?;

    let [subject] = raw.subject.as_slice() else {
        return Err(inconsistent(Inconsistency::SubjectCount(raw.subject.len())));
    };
    let subject_digest = decode_hex32("subject digest", &subject.digest.sha256)?;
    let serialization = &raw.predicate.serialization;
    if serialization.hash_type != "sha256" {
        return Err(SignatureError::UnsupportedScheme(Unsupported::HashType(
            serialization.hash_type.clone(),
        )));
    }
    let resources = &raw.predicate.resources;
    let manifest = match serialization.method.as_str() {
        "files" => files(subject.name.clone(), serialization, resources)?,
        "shards" => shards(subject.name.clone(), serialization, resources)?,
        other => {
            return Err(SignatureError::UnsupportedScheme(Unsupported::SerializationMethod(
                other.to_owned(),
            )));
        }
    };
    if manifest.subject_digest() != subject_digest {
        return Err(inconsistent(Inconsistency::SubjectDigest));
    }
    Ok(manifest)
}

fn files(
    name: String,
    serialization: &RawSerialization,
    resources: &[RawResource],
) -> Result<Manifest, SignatureError> {
    if serialization.shard_size.is_some() {
        return Err(inconsistent(Inconsistency::MethodField("shard_size")));
    }
    let resource = match resources {
        [] => return Err(inconsistent(Inconsistency::NoResources)),
        [one] => one,
        many => return Err(SignatureError::MultipleFiles { files: many.len() }),
    };
    check_algorithm(0, &resource.algorithm, "sha256")?;
    Ok(Manifest::WholeFile {
        name,
        path: resource.name.clone(),
        sha256: decode_hex32("resource digest", &resource.digest)?,
    })
}

fn shards(
    name: String,
    serialization: &RawSerialization,
    resources: &[RawResource],
) -> Result<Manifest, SignatureError> {
    let shard_size = serialization
        .shard_size
        .as_ref()
        .and_then(integral)
        .filter(|s| (1..=MAX_SHARD_SIZE).contains(s))
        .ok_or(inconsistent(Inconsistency::ShardSizeValue))?;
    let algorithm = format!("sha256-sharded-{shard_size}");

    let parsed = resources.iter().map(|r| shard_name(&r.name)).collect::<Result<Vec<_>, _>>()?;
    let paths: BTreeSet<&str> = parsed.iter().map(|(path, _, _)| *path).collect();
    let path = match paths.len() {
        0 => return Err(inconsistent(Inconsistency::NoResources)),
        1 => parsed[0].0,
        files => return Err(SignatureError::MultipleFiles { files }),
    };

    let mut digests = Vec::with_capacity(resources.len());
    let mut expected_start = 0u64;
    let last = resources.len() - 1;
    for (index, (resource, &(_, start, end))) in resources.iter().zip(&parsed).enumerate() {
        check_algorithm(index, &resource.algorithm, &algorithm)?;
        if start != expected_start || end <= start {
            return Err(inconsistent(Inconsistency::ShardLayout { index }));
        }
        let len = end - start;
        if len > shard_size || (index != last && len != shard_size) {
            return Err(inconsistent(Inconsistency::ShardSize { index }));
        }
        digests.push(decode_hex32("resource digest", &resource.digest)?);
        expected_start = end;
    }
    Ok(Manifest::Shards { name, path: path.to_owned(), shard_size, total_len: expected_start, digests })
}

/// A JSON number that is a non-negative integer, written as one (`1048576`) or as an integral
/// float (`1048576.0`); never a fraction, a negative, or a float too large to be exact.
fn integral(n: &serde_json::Number) -> Option<u64> {
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    // `as` saturates, and the range check above refuses anything at or past 2^53.
    (f.fract() == 0.0 && f >= 0.0 && f <= MAX_SHARD_SIZE as f64).then_some(f as u64)
}

/// `path:start:end`, split as model-signing splits it (exactly three `:`-separated parts), with
/// offsets in canonical decimal so that one manifest has one spelling.
fn shard_name(name: &str) -> Result<(&str, u64, u64), SignatureError> {
    let bad = || SignatureError::parse("shard name", format!("{name:?} is not path:start:end"));
    let mut parts = name.split(':');
    let (Some(path), Some(start), Some(end), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let offset = |s: &str| -> Result<u64, SignatureError> {
        let canonical =
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
        if !canonical {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    Ok((path, offset(start)?, offset(end)?))
}

fn check_algorithm(index: usize, found: &str, expected: &str) -> Result<(), SignatureError> {
    if found == expected {
        Ok(())
    } else {
        Err(inconsistent(Inconsistency::ResourceAlgorithm {
            index,
            found: found.to_owned(),
            expected: expected.to_owned(),
        }))
    }
}

fn inconsistent(why: Inconsistency) -> SignatureError {
    SignatureError::ManifestInconsistent(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_sizes_must_be_integral() {
        let n = |s: &str| serde_json::from_str::<serde_json::Number>(s).ok();
        assert_eq!(n("1048576").as_ref().and_then(integral), Some(1_048_576));
        assert_eq!(n("1048576.0").as_ref().and_then(integral), Some(1_048_576));
        assert_eq!(n("1e9").as_ref().and_then(integral), Some(1_000_000_000));
        assert_eq!(n("1048576.5").as_ref().and_then(integral), None);
        assert_eq!(n("-1").as_ref().and_then(integral), None);
        assert_eq!(n("1e300").as_ref().and_then(integral), None);
    }

    #[test]
    fn shard_names_are_canonical() {
        assert_eq!(shard_name(".:0:10").ok(), Some((".", 0, 10)));
        assert_eq!(shard_name("a/b.onnx:10:20").ok(), Some(("a/b.onnx", 10, 20)));
        for bad in [".:00:10", ".:0:+10", ".:0", ".:0:1:2", ".::1", ".:0:1x", ".:0:99999999999999999999"] {
            assert!(shard_name(bad).is_err(), "{bad}");
        }
    }
}
