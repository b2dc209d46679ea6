//! Key release and unsealing: the sealed header names the key version; the attestation
//! service releases that version's data key to this guest's evidence (through the client
//! library: challenge → evidence with the `nacre/v1/key-release` binding → release → HPKE
//! unwrap → signed result checked); the model is opened from the virtio disk into one
//! wiped-on-drop buffer; tract loads it; the buffer and the key are wiped.
//!
//! The disk is the host's: its header is only a hint for which version to ask for. What is
//! trusted is what `open` returns after every chunk authenticated under the released key and
//! the identity was recomputed from the plaintext, and that must name the key, model and
//! identity of the measured configuration. A publisher's signature bundle in the header must
//! state that same model (its signer was checked by the service at registration).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use nacre_attestation_client::Client;
use nacre_sealed::{AwsLcGcm, DataKey, FileRange, Header};

use crate::attest::Attester;
use crate::config::EnclaveConfig;
use crate::lifecycle::Failure;

pub struct Unlocked {
    pub header: Header,
    pub model: nacre_model::Model,
    /// The service's COSE_Sign1 attestation result.
    pub attestation_result: Vec<u8>,
    /// SHA-256 of the HPKE public key this guest sent with its key-release request.
    pub release_key_digest: [u8; 32],
    /// The owner's guard manifest from the sealed header, checked against the model and
    /// self-tested on it.
    pub guard: Option<nacre_guard::Manifest>,
    /// The release's leaf in the service's transparency log, with its proof.
    pub log: Option<nacre_protocol::messages::ReleaseLog>,
}

/// `stage` is told when the key is released and when the model is unsealed (cold-start
/// breakdown on the console).
pub fn unlock(
    config: &EnclaveConfig,
    attester: &mut dyn Attester,
    stage: &dyn Fn(&str),
) -> Result<Unlocked, Failure> {
    let unseal = |m: String| Failure::Unseal(m);
    let device = &config.sealed_device;
    let mut disk = File::open(device).map_err(|e| unseal(format!("{}: {e}", device.display())))?;
    let (hint, header_bytes) =
        Header::read(&mut disk).map_err(|e| unseal(format!("{}: {e}", device.display())))?;
    let sealed_len = header_bytes.len() as u64 + hint.body_len();
    check_padding(&mut disk, sealed_len).map_err(|e| unseal(format!("{}: {e}", device.display())))?;
    if hint.key_id != config.key_id {
        return Err(unseal(format!(
            "the disk holds a model sealed under key {:?}; this image serves {:?}",
            hint.key_id, config.key_id
        )));
    }
    let ca = std::fs::read(&config.service_ca)
        .map_err(|e| Failure::KeyRelease(format!("{}: {e}", config.service_ca.display())))?;
    let client = Client::new(&config.service_url, &ca).map_err(|e| Failure::KeyRelease(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::KeyRelease(e.to_string()))?;
    let released = rt
        .block_on(async {
            let result_key = client.result_key().await?;
            client
                .fetch_key(&config.key_id, hint.key_version, &result_key, |rd| {
                    let evidence = attester.attest(&rd).map_err(|e| e.to_string());
                    async move { evidence }
                })
                .await
        })
        .map_err(|e| Failure::KeyRelease(e.to_string()))?;
    stage("key-released");
    // The released key is copied once, from its `Zeroizing` into the `DataKey`'s own
    // `Zeroizing`, by reference: no by-value `[u8; 32]` temporary is left on the stack. Both
    // copies are wiped when dropped, on the error paths too (`?` drops them as well).
    let cipher = {
        let key = DataKey::copy_from(&released.data_key);
        drop(released.data_key);
        AwsLcGcm::new(&key).map_err(|e| unseal(e.to_string()))?
    };
    let disk = File::open(device).map_err(|e| unseal(format!("{}: {e}", device.display())))?;
    // A block device ends on a sector boundary: read exactly the sealed length, a shard per core.
    let opened = nacre_sealed::open(
        &FileRange::new(&disk, 0, sealed_len),
        &cipher,
        config.max_model_bytes,
        nacre_sealed::workers::available(),
    )
    .map_err(|e| unseal(e.to_string()))?;
    drop(cipher);
    stage("unsealed");
    let header = &opened.header;
    if header.key_id != config.key_id
        || header.model_name != config.model_name
        || header.model_identity != config.model_identity()
    {
        return Err(unseal(format!(
            "the sealed model is {} (key {}, identity {}), not the {} (key {}, identity {}) this image serves",
            header.model_name,
            header.key_id,
            hex::encode(header.model_identity),
            config.model_name,
            config.key_id,
            config.model_identity
        )));
    }
    if let Some(bundle) = &header.signature_bundle {
        crate::signature::check_subject(bundle, &opened).map_err(|e| unseal(e.to_string()))?;
    }
    // The typed error only: tract's text can quote the model's constant tensors.
    let model = nacre_model::Model::load(opened.plaintext.as_slice()).map_err(Failure::Model)?;
    let header = opened.header.clone();
    drop(opened); // wiped: tract holds its own copy of the weights
    let guard = match &header.guard_manifest {
        Some(bytes) => {
            let manifest = nacre_guard::Manifest::parse(bytes).map_err(|e| Failure::Guard(e.to_string()))?;
            let ran =
                nacre_model::guarded::check(&model, &manifest).map_err(|e| Failure::Guard(e.to_string()))?;
            stage(&format!("guard ({ran} self-tests passed)"));
            Some(manifest)
        }
        None => None,
    };
    Ok(Unlocked {
        header,
        model,
        attestation_result: released.attestation_result,
        release_key_digest: released.release_key_digest,
        guard,
        log: released.log,
    })
}

/// Largest padding after the sealed stream: a block device rounds its size up to a sector.
const SECTOR: u64 = 512;

/// The disk may hold the sealed stream followed by less than a sector of zeros (a virtio disk
/// of a file whose length is not a multiple of 512); anything else after it is refused. The
/// length comes from the unauthenticated header, which is safe: `open` authenticates every
/// chunk and the final-chunk flag, so a header that lies about the length fails there.
fn check_padding(disk: &mut File, sealed_len: u64) -> Result<(), String> {
    let end = disk.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
    if end < sealed_len {
        // Truncated: `open` names the chunk.
        disk.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        return Ok(());
    }
    if end - sealed_len >= SECTOR {
        return Err(format!("{} bytes after the sealed model", end - sealed_len));
    }
    let mut tail = Vec::with_capacity(SECTOR as usize);
    disk.seek(SeekFrom::Start(sealed_len)).map_err(|e| e.to_string())?;
    disk.by_ref().take(SECTOR).read_to_end(&mut tail).map_err(|e| e.to_string())?;
    if tail.iter().any(|&b| b != 0) {
        return Err("non-zero bytes after the sealed model".into());
    }
    disk.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    Ok(())
}
