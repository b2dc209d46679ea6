//! The enclave's states, enforced by the type system: each state is a type, and the only way
//! to the next one is the transition that performs its check. A server that serves the model
//! can only be built from `KeyReleased`, which can only be built from `Attested`, which can
//! only be built from `Booted`.
//!
//! Booted → Attested → KeyReleased → Serving

use crate::config::EnclaveConfig;

/// Configuration read from measured sources; nothing verified yet.
#[derive(Debug)]
pub struct Booted {
    pub config: EnclaveConfig,
}

/// The attester answered: this guest can produce evidence of its launch.
#[derive(Debug)]
pub struct Attested<A> {
    pub config: EnclaveConfig,
    pub attester: A,
}

/// The service released the data key to this guest's evidence, and the sealed model opened
/// under it with the digest the measured configuration names.
pub struct KeyReleased<A, M> {
    pub config: EnclaveConfig,
    pub attester: A,
    pub model: M,
    /// The service's signed attestation result, shown to clients.
    pub attestation_result: Vec<u8>,
}

/// The inference server is up.
pub struct Serving<S> {
    pub server: S,
}

/// Why the enclave stopped short of serving; logged on the console and shown by the health
/// endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("attestation: {0}")]
    Attestation(String),
    #[error("key release: {0}")]
    KeyRelease(String),
    #[error("unsealing: {0}")]
    Unseal(String),
    #[error("model: {0}")]
    Model(String),
}

impl Booted {
    pub fn new(config: EnclaveConfig) -> Self {
        Booted { config }
    }

    /// Opens the attester and proves it works with one self-check report.
    pub fn attest<A, E: std::fmt::Display>(
        self,
        open: impl FnOnce(&EnclaveConfig) -> Result<A, E>,
    ) -> Result<Attested<A>, Failure> {
        let attester = open(&self.config).map_err(|e| Failure::Attestation(e.to_string()))?;
        Ok(Attested { config: self.config, attester })
    }
}

impl<A> Attested<A> {
    /// Fetches the key and opens the model with it (`release` does both, so the key never
    /// leaves that call); returns the loaded model and the signed result.
    pub fn release_key<M>(
        mut self,
        release: impl FnOnce(&EnclaveConfig, &mut A) -> Result<(M, Vec<u8>), Failure>,
    ) -> Result<KeyReleased<A, M>, Failure> {
        let (model, attestation_result) = release(&self.config, &mut self.attester)?;
        Ok(KeyReleased { config: self.config, attester: self.attester, model, attestation_result })
    }
}

impl<A, M> KeyReleased<A, M> {
    pub fn serve<S>(self, start: impl FnOnce(Self) -> Result<S, Failure>) -> Result<Serving<S>, Failure> {
        Ok(Serving { server: start(self)? })
    }
}

/// Retry delays after a failure: 1 s doubling to 5 min, never a tight loop.
pub fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_secs((1u64 << attempt.min(9)).min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0).as_secs(), 1);
        assert_eq!(backoff(3).as_secs(), 8);
        assert_eq!(backoff(30).as_secs(), 300);
    }
}
