//! The verification document: what was checked before any input left, step by step — the same
//! for `nacre verify` (text or JSON), `nacre proxy` and the Python package's `nacre.verify`.

use nacre_verifier::{Claims, PlatformClaims};
use serde_json::{Value, json};

use crate::{AttestedSession, ClientError, ClientPolicy};

/// A step's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Passed,
    Failed,
    /// Not reached: an earlier step failed.
    NotRun,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::NotRun => "not run",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Step {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

/// A verification's outcome: every step, and on acceptance what the evidence showed.
#[derive(Clone, Debug)]
pub struct Verification {
    pub url: String,
    pub accepted: bool,
    pub steps: Vec<Step>,
    pub warnings: Vec<String>,
    /// The whole document as JSON (`verdict`, `steps`, and on acceptance the claims).
    pub document: Value,
}

/// Where a refusal happened, in the order the client checks.
const CONNECT: &str = "TCP and TLS 1.3 connection";
const CERTIFICATE: &str = "attested certificate";
const FRESH: &str = "fresh channel-bound attestation";
const GUARD: &str = "guard manifest";
const LOG: &str = "key release in the transparency log";

impl Verification {
    /// The document of a session that passed both attestations.
    pub fn accepted(url: &str, policy: &ClientPolicy, session: &AttestedSession) -> Self {
        let (peer, fresh) = (session.peer(), session.fresh());
        let c = peer.claims().get();
        let mut steps = Vec::new();
        let mut ok =
            |name: &'static str, detail: String| steps.push(Step { name, status: Status::Passed, detail });
        ok("TLS 1.3 handshake", "signed with the certificate's key".into());
        ok(
            "evidence signature chain",
            format!("{} ({})", c.tee, if policy.insecure_sim { "INSECURE sim root" } else { "vendor root" }),
        );
        ok("measurement allowed by policy", hex::encode(c.measurement));
        if !policy.reference_values.is_empty() {
            ok("from signed reference values", policy.reference_values.join(", "));
        }
        ok("debug disabled", format!("debug = {}", c.debug));
        if let PlatformClaims::Snp(s) = &c.platform {
            ok("TCB (reported)", tcb(&s.reported_tcb));
            ok("HOST_DATA", hex::encode(s.report.host_data));
        }
        ok("bound TLS key (SPKI SHA-256)", hex::encode(peer.spki_sha256()));
        ok("bound model identity (as the policy pins)", hex::encode(peer.model_identity()));
        let guard = nacre_atls::verify::guard_text(&peer.model().guard_digest);
        match policy.attestation.guard_digest() {
            Some(_) => ok("bound guard manifest (as the policy pins)", guard),
            None => ok("bound guard manifest (not pinned by the policy)", guard),
        }
        ok("bound release key (SHA-256)", nacre_atls::verify::release_text(&peer.model().release_key_digest));
        let (nb, na) = peer.validity();
        ok("certificate validity", format!("{nb} .. {na} (Unix seconds)"));
        ok(FRESH, "same guest, binds our nonce and this connection's TLS exporter".into());
        match session.guard() {
            Some(g) => ok(GUARD, Self::guard_summary(g)),
            None => ok(GUARD, "none (the enclave serves without a guard)".into()),
        }
        match (session.release(), &policy.log) {
            (Some(r), Some(req)) => ok(LOG, Self::release_summary(r, req)),
            _ => ok(LOG, "not required by the policy".into()),
        }
        let mut warnings: Vec<String> = c.warnings.iter().chain(&fresh.get().warnings).cloned().collect();
        warnings.dedup();
        let document = json!({
            "verdict": "accept",
            "url": url,
            "steps": steps_json(&steps),
            "warnings": warnings,
            "insecure_sim": policy.insecure_sim,
            "reference_values": policy.reference_values,
            "model_identity": hex::encode(peer.model_identity()),
            "guard_digest": hex::encode(peer.model().guard_digest),
            "release_key_digest": hex::encode(peer.model().release_key_digest),
            "tls_spki_sha256": hex::encode(peer.spki_sha256()),
            "certificate_sha256": hex::encode(peer.certificate_sha256()),
            "guard": session.guard().map(Self::guard_json),
            "release_log": session.release().map(Self::release_json),
            "certificate": claims_json(c),
            "fresh": claims_json(fresh.get()),
        });
        Verification { url: url.to_owned(), accepted: true, steps, warnings, document }
    }

    /// The logged release and the checkpoint it was proven under.
    fn release_summary(r: &nacre_tlog::VerifiedRelease, req: &nacre_tlog::LogRequirement) -> String {
        let witnesses: Vec<&str> = r.checkpoint.cosigned().keys().map(String::as_str).collect();
        format!(
            "leaf {} of {} in {} (key {} v{}, measurement {}), cosigned by {} of {} required: {}",
            r.index,
            r.checkpoint.size(),
            r.checkpoint.origin(),
            r.entry.key_id.as_deref().unwrap_or("?"),
            r.entry.key_version.unwrap_or_default(),
            r.entry.measurement.as_deref().unwrap_or("?"),
            witnesses.len(),
            req.min_cosigners,
            if witnesses.is_empty() { "none".to_owned() } else { witnesses.join(", ") }
        )
    }

    fn release_json(r: &nacre_tlog::VerifiedRelease) -> Value {
        json!({
            "index": r.index,
            "entry": serde_json::to_value(&r.entry).unwrap_or(Value::Null),
            "checkpoint": String::from_utf8_lossy(&r.checkpoint.to_bytes()),
            "cosigned_by": r.checkpoint.cosigned(),
        })
    }

    /// One line of what the guard does.
    fn guard_summary(g: &nacre_guard::Manifest) -> String {
        let d = g.document();
        let ood = match &d.input_guard.ood {
            Some(o) => format!("OOD {:?} past {:.3}", o.action, o.threshold),
            None => "no OOD check".into(),
        };
        let mut s = format!(
            "matches the attested digest; input {:?} ({} features, schema {:?}, {ood}), output {}",
            d.input.tensor,
            g.features(),
            d.input_guard.schema,
            d.output
        );
        if let Some(t) = &d.self_tests {
            s += &format!(", {} self-tests (expected from {})", t.vectors.len(), t.expected_from);
        }
        if let Some(b) = &d.budgets {
            s += &format!(", budget {} per {} s", b.queries, b.window_seconds);
        }
        if let Some(m) = &d.monitoring {
            s += &format!(", monitoring ε {}/window, {}/day", m.epsilon_per_window, m.epsilon_per_day);
        }
        s
    }

    fn guard_json(g: &nacre_guard::Manifest) -> Value {
        let d = g.document();
        json!({
            "input": d.input.tensor,
            "features": g.features(),
            "schema_action": d.input_guard.schema,
            "ood": d.input_guard.ood,
            "output": d.output,
            "self_tests": d.self_tests.as_ref().map(|t| json!({"count": t.vectors.len(), "expected_from": t.expected_from})),
            "budgets": d.budgets,
            "extraction": d.extraction.as_ref().map(|e| json!({"delta": e.delta, "history": e.history, "action": e.action})),
            "explanation": d.explanation.as_ref().map(|x| json!({"max_coalitions": x.max_coalitions, "deadline_ms": x.deadline_ms})),
            "monitoring": d.monitoring,
        })
    }

    /// The document of a refusal: the step that failed and why; the later steps not run.
    pub fn refused(url: &str, error: &ClientError) -> Self {
        let failed_at = match error {
            ClientError::Certificate(_) => 1,
            ClientError::Fresh(_) | ClientError::FreshTimeout(_) => 2,
            // The certificate passed and the connection broke before the fresh evidence came.
            ClientError::Status { .. } | ClientError::Http(_) | ClientError::Protocol(_) => 2,
            ClientError::Url(_) | ClientError::Connect { .. } | ClientError::Timeout => 0,
            ClientError::Guard(_) => 3,
            ClientError::Log(_) => 4,
        };
        let steps: Vec<Step> = [CONNECT, CERTIFICATE, FRESH, GUARD, LOG]
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let (status, detail) = match i.cmp(&failed_at) {
                    std::cmp::Ordering::Less => (Status::Passed, String::new()),
                    std::cmp::Ordering::Equal => (Status::Failed, error.to_string()),
                    std::cmp::Ordering::Greater => (Status::NotRun, String::new()),
                };
                Step { name, status, detail }
            })
            .collect();
        let document = json!({
            "verdict": "reject",
            "url": url,
            "reason": error.to_string(),
            "steps": steps_json(&steps),
        });
        Verification { url: url.to_owned(), accepted: false, steps, warnings: Vec::new(), document }
    }

    /// The reason of a refusal (the failed step's detail).
    pub fn reason(&self) -> Option<&str> {
        self.steps.iter().find(|s| s.status == Status::Failed).map(|s| s.detail.as_str())
    }
}

impl core::fmt::Display for Verification {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.accepted {
            writeln!(f, "Enclave {} — verified before any input was sent:", self.url)?;
        } else {
            writeln!(f, "Enclave {} — REFUSED, nothing was sent:", self.url)?;
        }
        for s in &self.steps {
            let mark = match s.status {
                Status::Passed => "✓",
                Status::Failed => "✗",
                Status::NotRun => "-",
            };
            let detail = if s.status == Status::NotRun { "not run" } else { s.detail.as_str() };
            writeln!(f, "  {mark} {:<34} {detail}", s.name)?;
        }
        for w in &self.warnings {
            writeln!(f, "  ! warning: {w}")?;
        }
        Ok(())
    }
}

fn steps_json(steps: &[Step]) -> Value {
    steps
        .iter()
        .map(|s| json!({"step": s.name, "status": s.status.as_str(), "detail": s.detail}))
        .collect::<Vec<_>>()
        .into()
}

fn tcb(t: &nacre_wire::snp::TcbVersion) -> String {
    format!("bootloader {} tee {} snp {} microcode {}", t.bootloader, t.tee, t.snp, t.microcode)
}

/// Claims as JSON (hex digests; the platform's own fields).
pub fn claims_json(c: &Claims) -> Value {
    let mut v = json!({
        "tee": c.tee.to_string(),
        "measurement": hex::encode(c.measurement),
        "report_data": hex::encode(c.report_data),
        "debug": c.debug,
        "warnings": c.warnings,
    });
    match &c.platform {
        PlatformClaims::Snp(s) => {
            v["host_data"] = hex::encode(s.report.host_data).into();
            v["chip_id"] = hex::encode(s.report.chip_id).into();
            v["reported_tcb"] = tcb(&s.reported_tcb).into();
            v["crl_checked"] = s.crl_checked.into();
        }
        PlatformClaims::Tdx(t) => {
            v["tcb_status"] = format!("{:?}", t.tcb_status).into();
            v["rtmr"] = t.td.rtmr.iter().map(hex::encode).collect::<Vec<_>>().into();
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal names the step it happened at and marks the later ones as not run.
    #[test]
    fn a_refusal_fails_the_step_it_happened_at() {
        let at = |e: ClientError| {
            let v = Verification::refused("https://x", &e);
            assert!(!v.accepted);
            assert_eq!(v.document["verdict"], "reject");
            let statuses: Vec<Status> = v.steps.iter().map(|s| s.status).collect();
            let failed = statuses.iter().position(|s| *s == Status::Failed).unwrap_or(usize::MAX);
            assert!(statuses[..failed].iter().all(|s| *s == Status::Passed), "{statuses:?}");
            assert!(statuses[failed + 1..].iter().all(|s| *s == Status::NotRun), "{statuses:?}");
            assert_eq!(v.reason(), Some(e.to_string().as_str()));
            v.steps[failed].name
        };
        assert_eq!(at(ClientError::Connect { addr: "x:1".into(), message: "refused".into() }), CONNECT);
        assert_eq!(at(ClientError::Timeout), CONNECT);
        assert_eq!(at(ClientError::Certificate(nacre_atls::AtlsError::Tls12Refused)), CERTIFICATE);
        assert_eq!(at(ClientError::FreshTimeout(std::time::Duration::from_secs(30))), FRESH);
        assert_eq!(at(ClientError::Status { status: 503, message: "busy".into() }), FRESH);
    }
}
