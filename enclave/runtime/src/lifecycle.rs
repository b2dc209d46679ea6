//! The enclave's states, enforced by the type system: each state is a type, and the only way
//! to the next one is the transition that performs its check. A server that serves the model
//! can only be built from `KeyReleased`, which can only be built from `Attested`, which can
//! only be built from `Booted`.
//!
//! Booted → Attested → KeyReleased → Serving
//!
//! The states' fields are private to this module, so no other module can write a struct
//! literal of a later state: `Booted::new` and the transitions below are the only
//! constructors. (The crate is a binary, so a `compile_fail` doc test would not run; the
//! module boundary is the proof.) `KeyReleased::serve` hands its contents to the serving step
//! as [`ReleasedParts`], plain values that prove nothing, and `Serving` is made only there.

use crate::config::EnclaveConfig;

/// Configuration read from measured sources; nothing verified yet.
#[derive(Debug)]
pub struct Booted {
    config: EnclaveConfig,
}

/// The attester answered: this guest can produce evidence of its launch.
#[derive(Debug)]
pub struct Attested<A> {
    config: EnclaveConfig,
    attester: A,
}

/// The service released the data key to this guest's evidence, and the sealed model opened
/// under it with the digest the measured configuration names.
pub struct KeyReleased<A, M> {
    attester: A,
    model: M,
    /// The service's signed attestation result, shown to clients.
    attestation_result: Vec<u8>,
}

/// What serving is built from: [`KeyReleased`] taken apart by its only consumer.
#[derive(Debug)]
pub struct ReleasedParts<A, M> {
    pub attester: A,
    pub model: M,
    pub attestation_result: Vec<u8>,
}

/// The inference server is up.
#[derive(Debug)]
pub struct Serving<S> {
    server: S,
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
    /// tract failed. Its text can quote the model's constant tensors, so only the typed error
    /// (kind and code) is kept: this is printed on the console and shown by the health
    /// endpoint.
    #[error("model: {0}")]
    Model(nacre_model::ModelError),
    /// The model loaded but cannot be served as declared (e.g. a tensor that is not FP32).
    #[error("model: {0}")]
    Unservable(String),
    /// The owner's guard manifest does not parse, does not fit the model, or its self-tests
    /// fail on this model: it never serves.
    #[error("guard: {0}")]
    Guard(String),
}

impl Failure {
    /// A stable label for metrics: which stage failed (a refused model is its own stage).
    pub fn stage(&self) -> &'static str {
        match self {
            Failure::Attestation(_) => "attestation",
            Failure::KeyRelease(_) => "key_release",
            Failure::Unseal(_) => "unseal",
            Failure::Model(e) if e.kind() == nacre_model::ModelErrorKind::Refused => "model_refused",
            Failure::Model(_) => "model",
            Failure::Unservable(_) => "unservable",
            Failure::Guard(_) => "guard",
        }
    }
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
        Ok(KeyReleased { attester: self.attester, model, attestation_result })
    }
}

impl<A, M> KeyReleased<A, M> {
    pub fn serve<S>(
        self,
        start: impl FnOnce(ReleasedParts<A, M>) -> Result<S, Failure>,
    ) -> Result<Serving<S>, Failure> {
        let parts = ReleasedParts {
            attester: self.attester,
            model: self.model,
            attestation_result: self.attestation_result,
        };
        Ok(Serving { server: start(parts)? })
    }
}

impl<S> Serving<S> {
    pub fn into_server(self) -> S {
        self.server
    }
}

/// Retry delays after a failure: 1 s doubling to 5 min, never a tight loop.
pub fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_secs((1u64 << attempt.min(9)).min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 §6: the states are reached only through their transitions (the fields are
    /// private to this module, so elsewhere this walk is the only way to a `Serving`), and a
    /// failing check stops the walk there.
    #[test]
    fn lifecycle_states_are_built_only_by_their_transitions() {
        let config = crate::config::tests::good();
        let attested = Booted::new(config.clone()).attest(|_| Ok::<_, String>("attester")).unwrap();
        let released = attested
            .release_key(|c, a| {
                assert_eq!((c, *a), (&config, "attester"));
                Ok(("model", vec![1u8]))
            })
            .unwrap();
        let serving =
            released.serve(|parts| Ok((parts.attester, parts.model, parts.attestation_result))).unwrap();
        assert_eq!(serving.into_server(), ("attester", "model", vec![1u8]));

        let refused = Booted::new(config.clone()).attest(|_| Err::<(), _>("no device"));
        assert_eq!(refused.unwrap_err(), Failure::Attestation("no device".into()));
        let attested = Booted::new(config).attest(|_| Ok::<_, String>(())).unwrap();
        let denied =
            attested.release_key(|_, _| Err::<((), Vec<u8>), _>(Failure::KeyRelease("denied".into())));
        assert!(matches!(denied, Err(Failure::KeyRelease(_))));
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0).as_secs(), 1);
        assert_eq!(backoff(3).as_secs(), 8);
        assert_eq!(backoff(30).as_secs(), 300);
    }
}
