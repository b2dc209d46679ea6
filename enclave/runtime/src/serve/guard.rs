//! The model guard while serving (the owner's manifest from the sealed header, checked and
//! self-tested at unsealing): every request's guarded input is checked against the schema and
//! scored for distance from the reference before the model runs, and every output is hardened
//! after it ran. Both REST and gRPC go through [`ServeGuard`]. Only findings a client's status
//! shows anyway (422 rejections, 429/403 refusals) are counted in the open metrics; findings
//! under `log` and `flag`, and every served row, go to the private monitor (nacre-guard's
//! `monitor`), which releases only noised windows to monitoring tokens.
//!
//! When the manifest sets budgets or extraction defence, every request is admitted per client
//! identity (its bearer token) before the model runs — charged its rows, refused while its
//! client is alarmed under `refuse`, paced under `throttle` — and its rows are observed by the
//! PRADA detector after (nacre-guard's `Defence`). An image without client tokens never serves
//! such a manifest: behind the host's NAT, every tokenless client is one address.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use nacre_guard::manifest::{Action, ExtractionAction, OutputPolicy};
use nacre_guard::monitor::{self, Monitor};
use nacre_guard::{Defence, InputGuard, Manifest, Observed, Refusal, Verdict};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::Reject;
use super::kserve::TensorSpec;
use crate::lifecycle::Failure;

/// Guard findings by kind and the action taken.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Finding {
    pub finding: &'static str,
    pub action: &'static str,
}

/// What a flagged request's response carries (its `parameters`).
#[derive(Clone, Debug, PartialEq)]
pub struct Flag {
    pub finding: &'static str,
    /// Whether the response says so (`flag`); under `log` only the private monitor counts it.
    pub respond: bool,
    /// The squared Mahalanobis distance, when the finding is about distribution.
    pub ood_score: Option<f64>,
}

impl Flag {
    /// As a KServe v2 response's `parameters`.
    pub fn parameters(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("nacre_guard".into(), self.finding.into());
        if let Some(score) = self.ood_score {
            m.insert("nacre_ood_score".into(), score.into());
        }
        m
    }
}

/// The guard of the served model.
#[derive(Debug)]
pub struct ServeGuard {
    /// The manifest as sealed (served at `GET /v1/guard`).
    bytes: Vec<u8>,
    manifest: Manifest,
    /// Position of the guarded input among the model's inputs.
    input: usize,
    /// Per output: its rows' width (the last dimension; 1 for a scalar row) when the policy
    /// rewrites it.
    classes: Vec<usize>,
    findings: Family<Finding, Counter>,
    /// Budgets and the extraction detector, per client, when the manifest sets them.
    defence: Option<Mutex<Defence>>,
    /// The private drift monitor, when the manifest sets `monitoring`.
    monitor: Option<Arc<Mutex<Monitor>>>,
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Log => "log",
        Action::Flag => "flag",
        Action::Reject => "reject",
    }
}

impl ServeGuard {
    /// For a model whose signature the manifest was checked against at unsealing. An output
    /// the policy cannot rewrite (not FP32, or of unknown row width) is refused here, so the
    /// model never serves unhardened.
    ///
    /// `clients` is the number of client identities (bearer tokens) the image accepts, and
    /// `memory` the bytes the extraction detector may hold for all of them (past it, the least
    /// recently seen client's history goes first).
    pub fn new(
        bytes: Vec<u8>,
        manifest: Manifest,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
        findings: Family<Finding, Counter>,
        clients: usize,
        memory: usize,
    ) -> Result<Self, Failure> {
        let doc = manifest.document();
        if Defence::needs_identity(doc) && clients == 0 {
            return Err(Failure::Guard(
                "the guard manifest keeps budgets or extraction defence per client, which needs client tokens; \
                 the image accepts none (inference_tokens_sha256)"
                    .into(),
            ));
        }
        let per_client = Defence::detector_bytes(doc, 1).max(1);
        let tracked = clients.min(memory / per_client).max(1);
        let defence = Defence::new(doc, tracked).map(Mutex::new);
        let input = inputs.iter().position(|i| i.name == doc.input.tensor).ok_or_else(|| {
            Failure::Guard(format!("the guarded input {:?} is not served", doc.input.tensor))
        })?;
        let mut classes = Vec::with_capacity(outputs.len());
        for o in outputs {
            let width = match o.shape.last() {
                Some(&n) if n > 0 && o.shape.len() >= 2 => n as usize,
                _ if o.shape.len() <= 1 => 1,
                _ => 0,
            };
            if doc.output != OutputPolicy::Full && (o.datatype != "FP32" || width == 0) {
                return Err(Failure::Guard(format!(
                    "the output policy ({}) cannot apply to output {:?} ({} {:?}): it needs FP32 rows of a fixed width",
                    doc.output, o.name, o.datatype, o.shape
                )));
            }
            classes.push(width.max(1));
        }
        let scores = outputs.first().is_some_and(|o| o.datatype == "FP32");
        let monitor = monitor::Spec::new(doc, scores).map(|spec| {
            // A window of N requests has a known size: calibrate its thresholds now, in the
            // background, rather than when the first window closes.
            if let nacre_guard::manifest::Window::Requests(n) = spec.config().window {
                let spec = spec.clone();
                let _ = std::thread::Builder::new()
                    .name("nacre-calibrate".into())
                    .spawn(move || spec.thresholds(n));
            }
            Arc::new(Mutex::new(Monitor::new(spec)))
        });
        Ok(ServeGuard { bytes, manifest, input, classes, findings, defence, monitor })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Checks the request's inputs (in the model's order). A finding whose action is `reject`
    /// refuses the request (422, counted in the metrics); `flag` and `log` return the finding
    /// (for the monitor), and under `flag` what the response says.
    pub(super) fn check(
        &self,
        inputs: &[nacre_model::Tensor],
        scratch: &mut Vec<f64>,
    ) -> Result<Option<Flag>, Reject> {
        let Some(nacre_model::TensorData::Fp32(data)) = inputs.get(self.input).map(|t| &t.data) else {
            // The parser has checked the datatype against the model's (FP32, checked at
            // unsealing): anything else is a bug, refused rather than let through.
            return Err(Reject::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the guarded input is not FP32",
            ));
        };
        let verdict = InputGuard::new(&self.manifest).check(data, scratch);
        let Verdict { violation, ood_score, out_of_distribution, action } = verdict;
        let Some(action) = action else { return Ok(None) };
        let finding = match violation {
            Some((_, v)) => v.code(),
            None if out_of_distribution => "out_of_distribution",
            None => return Ok(None),
        };
        match action {
            Action::Log | Action::Flag => {
                Ok(Some(Flag { finding, respond: action == Action::Flag, ood_score }))
            }
            Action::Reject => {
                self.findings.get_or_create(&Finding { finding, action: action_name(action) }).inc();
                let features = &self.manifest.document().input.features;
                let message = match violation {
                    Some((row, v)) => format!(
                        "row {row}, feature {:?}: {} (the model owner's guard refuses it)",
                        features.get(v.feature()).map_or("?", |f| f.name.as_str()),
                        v.code().replace('_', " ")
                    ),
                    None => "the input is out of the model's reference distribution (the model owner's guard refuses it)"
                        .into(),
                };
                Err(Reject::new(StatusCode::UNPROCESSABLE_ENTITY, "guard_rejected", message))
            }
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The guarded input's rows (FP32, checked by [`Self::check`]), or none.
    pub(super) fn rows<'a>(&self, inputs: &'a [nacre_model::Tensor]) -> &'a [f32] {
        match inputs.get(self.input).map(|t| &t.data) {
            Some(nacre_model::TensorData::Fp32(data)) => data,
            _ => &[],
        }
    }

    /// Whether admitted requests' rows are kept for [`Self::observe`].
    pub(super) fn observes(&self) -> bool {
        self.manifest.document().extraction.is_some() || self.monitor.is_some()
    }

    /// Counts a served request's rows, its outputs' top scores and its finding in the private
    /// monitor. A window this closes is noised and released off the request path.
    pub(super) fn monitor_request(
        &self,
        rows: &[f32],
        outputs: &[nacre_model::Tensor],
        found: Option<&Flag>,
        now_ms: u64,
    ) {
        let Some(m) = &self.monitor else { return };
        let scores = match outputs.first().map(|t| &t.data) {
            Some(nacre_model::TensorData::Fp32(v)) => v.as_slice(),
            _ => &[],
        };
        let finding = found.map(|f| {
            if f.finding == "out_of_distribution" {
                monitor::Finding::OutOfDistribution
            } else {
                monitor::Finding::Schema
            }
        });
        let width = self.classes.first().copied().unwrap_or(1);
        let closed =
            m.lock().unwrap_or_else(|p| p.into_inner()).observe(rows, scores, width, finding, now_ms);
        if let Some(closed) = closed {
            release(m.clone(), closed);
        }
    }

    /// The monitor's report of windows from `since` on, closing an overdue time window first.
    pub fn monitoring_report(&self, since: u64, now_ms: u64) -> Option<monitor::Report> {
        let m = self.monitor.as_ref()?;
        let mut guard = m.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(closed) = guard.tick(now_ms) {
            drop(guard);
            release(m.clone(), closed);
            guard = m.lock().unwrap_or_else(|p| p.into_inner());
        }
        Some(guard.report(since, now_ms))
    }

    /// Admits a request of `cost` model evaluations from `client` at `now_ms` (charging it),
    /// when the manifest keeps anything per client.
    pub(super) fn admit(&self, client: Option<&[u8; 32]>, cost: u64, now_ms: u64) -> Result<(), Reject> {
        let Some(defence) = &self.defence else { return Ok(()) };
        // Unreachable: an image without tokens never serves such a manifest (see `new`).
        let client = client.ok_or_else(|| {
            Reject::new(StatusCode::UNAUTHORIZED, "unauthorized", "a bearer token is required")
        })?;
        let refusal = defence.lock().unwrap_or_else(|p| p.into_inner()).admit(client, cost, now_ms);
        refusal.map_err(|r| self.refuse(r))
    }

    fn refuse(&self, r: Refusal) -> Reject {
        let (finding, action, status, reason) = match r {
            Refusal::OverBudget { .. } => {
                ("over_budget", "refuse", StatusCode::TOO_MANY_REQUESTS, "over_budget")
            }
            Refusal::Throttled { .. } => {
                ("extraction_alarm", "throttle", StatusCode::TOO_MANY_REQUESTS, "extraction_throttled")
            }
            Refusal::Refused => ("extraction_alarm", "refuse", StatusCode::FORBIDDEN, "extraction_refused"),
        };
        self.findings.get_or_create(&Finding { finding, action }).inc();
        Reject { retry_after: r.retry_after(), ..Reject::new(status, reason, r.to_string()) }
    }

    /// Records `rows` of `client`, answered with `outputs` (before hardening: the predicted
    /// class is the model's), in the extraction detector. An alarm this request raised under
    /// `refuse` refuses its answer too.
    pub(super) fn observe(
        &self,
        client: Option<&[u8; 32]>,
        rows: &[f32],
        outputs: &[nacre_model::Tensor],
        now_ms: u64,
    ) -> Result<(), Reject> {
        let (Some(defence), Some(client)) = (&self.defence, client) else { return Ok(()) };
        let Some(nacre_model::TensorData::Fp32(scores)) = outputs.first().map(|t| &t.data) else {
            return Ok(());
        };
        let width = self.classes.first().copied().unwrap_or(1).max(1);
        let classes: Vec<i64> = scores.chunks_exact(width).map(nacre_guard::prada::predicted_class).collect();
        let observed =
            defence.lock().unwrap_or_else(|p| p.into_inner()).observe(client, rows, &classes, now_ms);
        match observed {
            Observed::Alarm { raised: true, .. } => {
                let action = self.manifest.document().extraction.as_ref().map(|e| e.action);
                let refuse = action == Some(ExtractionAction::Refuse);
                let name = if refuse { "refuse" } else { "throttle" };
                self.findings
                    .get_or_create(&Finding { finding: "extraction_alarm_raised", action: name })
                    .inc();
                if refuse { Err(self.refuse(Refusal::Refused)) } else { Ok(()) }
            }
            _ => Ok(()),
        }
    }

    /// Applies the output policy to every output (in the model's order).
    pub fn harden(&self, outputs: &mut [nacre_model::Tensor]) {
        let policy = &self.manifest.document().output;
        if *policy == OutputPolicy::Full {
            return;
        }
        for (out, &classes) in outputs.iter_mut().zip(&self.classes) {
            if let nacre_model::TensorData::Fp32(v) = &mut out.data {
                nacre_guard::harden(policy, v, classes);
            }
        }
    }
}

/// Noises and publishes a closed window: on a blocking thread when serving (a first window of a
/// size calibrates its thresholds, a fraction of a second), inline elsewhere.
fn release(m: Arc<Mutex<Monitor>>, closed: monitor::Closed) {
    let work = move || {
        let record = closed.release(&mut monitor::noise::OsBits::new());
        m.lock().unwrap_or_else(|p| p.into_inner()).publish(record);
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => drop(h.spawn_blocking(work)),
        Err(_) => work(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A guard for `x: FP32[-1, 4] → y: FP32[-1, 2]`: features in [-10, 10], the identity
    /// covariance, OOD past a squared distance of 50 (`ood` action), output policy `output`.
    fn guard(ood: &str, output: serde_json::Value, y: &str) -> Result<ServeGuard, Failure> {
        let doc = serde_json::json!({
            "format": "nacre-guard-v1",
            "input": {"tensor": "x", "features": (0..4).map(|i| serde_json::json!({"name": format!("f{i}"), "min": -10.0, "max": 10.0})).collect::<Vec<_>>()},
            "reference": {
                "rows": 4,
                "histograms": vec![serde_json::json!({"edges": [0.0], "counts": [2, 2]}); 4],
                "mean": [0.0, 0.0, 0.0, 0.0],
                "covariance": (0..4).map(|i| (0..4).map(|j| if i == j { 1.0 } else { 0.0 }).collect::<Vec<f64>>()).collect::<Vec<_>>(),
            },
            "input_guard": {"schema": "reject", "ood": {"threshold": 50.0, "action": ood}},
            "output": output,
        });
        let bytes = serde_json::to_vec(&doc).unwrap();
        let manifest = Manifest::parse(&bytes).unwrap();
        let spec = |name: &str, datatype: &str, shape: Vec<i64>| TensorSpec {
            name: name.into(),
            datatype: datatype.into(),
            shape,
        };
        ServeGuard::new(
            bytes,
            manifest,
            &[spec("x", "FP32", vec![-1, 4])],
            &[spec("y", y, vec![-1, 2])],
            Family::default(),
            0,
            1 << 20,
        )
    }

    fn x(rows: &[[f32; 4]]) -> Vec<nacre_model::Tensor> {
        vec![nacre_model::Tensor {
            shape: vec![rows.len(), 4],
            data: nacre_model::TensorData::Fp32(rows.iter().flatten().copied().collect()),
        }]
    }

    fn count(g: &ServeGuard, finding: &'static str, action: &'static str) -> u64 {
        g.findings.get_or_create(&Finding { finding, action }).get()
    }

    #[test]
    fn requests_are_passed_flagged_or_rejected_as_the_manifest_says() {
        let g = guard("flag", serde_json::json!({"policy": "full"}), "FP32").unwrap();
        let mut s = Vec::new();
        assert_eq!(g.check(&x(&[[1.0, 2.0, -1.0, 0.5]]), &mut s).unwrap(), None);
        // In range, far from the reference (squared distance 4 × 81 = 324): flagged.
        let flag = g.check(&x(&[[1.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]]), &mut s).unwrap().unwrap();
        assert_eq!(flag.finding, "out_of_distribution");
        assert!((flag.ood_score.unwrap() - 324.0).abs() < 1e-6);
        assert_eq!(flag.parameters()["nacre_guard"], "out_of_distribution");
        // Out of range in row 1: refused before the model runs, with the feature's name.
        let r = g.check(&x(&[[0.0; 4], [0.0, 11.0, 0.0, 0.0]]), &mut s).unwrap_err();
        assert_eq!((r.status.as_u16(), r.reason), (422, "guard_rejected"));
        assert!(r.message.contains("row 1, feature \"f1\": above max"), "{}", r.message);
        let r = g.check(&x(&[[f32::NAN, 0.0, 0.0, 0.0]]), &mut s).unwrap_err();
        assert!(r.message.contains("not finite"), "{}", r.message);
        // Only the rejections (a 422 shows them anyway) are in the open metrics.
        assert_eq!(
            (
                count(&g, "out_of_distribution", "flag"),
                count(&g, "above_max", "reject"),
                count(&g, "not_finite", "reject")
            ),
            (0, 1, 1)
        );
        assert!(flag.respond);
        let g = guard("log", serde_json::json!({"policy": "full"}), "FP32").unwrap();
        let found = g.check(&x(&[[9.0; 4]]), &mut s).unwrap().unwrap();
        assert!(!found.respond);
        // OOD set to reject.
        let g = guard("reject", serde_json::json!({"policy": "full"}), "FP32").unwrap();
        let r = g.check(&x(&[[9.0; 4]]), &mut s).unwrap_err();
        assert!(r.message.contains("out of the model's reference distribution"), "{}", r.message);
    }

    #[test]
    fn outputs_are_hardened_and_unhardenable_outputs_never_serve() {
        let g = guard("log", serde_json::json!({"policy": "label"}), "FP32").unwrap();
        let mut out = vec![nacre_model::Tensor {
            shape: vec![2, 2],
            data: nacre_model::TensorData::Fp32(vec![0.2, 0.7, 3.0, -1.0]),
        }];
        g.harden(&mut out);
        assert_eq!(out[0].data, nacre_model::TensorData::Fp32(vec![0.0, 1.0, 1.0, 0.0]));
        assert!(matches!(
            guard("log", serde_json::json!({"policy": "label"}), "FP64"),
            Err(Failure::Guard(_))
        ));
        // Under the full policy any output type serves as it is.
        assert!(guard("log", serde_json::json!({"policy": "full"}), "FP64").is_ok());
    }
}
