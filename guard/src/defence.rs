//! Extraction defence per client (guard part 2): the manifest's query budget per window, and
//! the PRADA detector's alarm turned into the manifest's action. Clients are bearer-token
//! identities ([`ClientId`]); the enclave lets only valid tokens reach this, so the table of
//! budgets holds at most one entry per configured token. Time is the caller's (Unix
//! milliseconds), so that tests and the enclave's clock agree.
//!
//! A request is admitted first ([`Defence::admit`]: refused while alarmed under `refuse`, once
//! per `throttle_seconds` while alarmed under `throttle`, then charged its model evaluations
//! against the window's budget), and observed after the model ran ([`Defence::observe`]: its
//! rows join the client's PRADA history under their predicted class).

use std::collections::HashMap;

use crate::manifest::{Budgets, Document, Extraction, ExtractionAction};
use crate::prada::{ClientId, Detector, Prada};

/// Why a client's request is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The window's budget is spent (or the request alone costs more than a whole window).
    #[error(
        "query budget spent: {used} of {budget} model evaluations used in this window, this request needs {cost}; the next window starts in {reset_in_secs} s"
    )]
    OverBudget { used: u64, budget: u64, cost: u64, reset_in_secs: u64 },
    /// Alarmed under `throttle`: one request per interval.
    #[error("this client's queries look like model extraction: throttled, retry in {retry_in_secs} s")]
    Throttled { retry_in_secs: u64 },
    /// Alarmed under `refuse`: no more answers for this token while the enclave runs.
    #[error("this client's queries look like model extraction: refused")]
    Refused,
}

impl Refusal {
    /// Seconds until a retry can succeed (`Retry-After`), when one can.
    pub fn retry_after(&self) -> Option<u64> {
        match *self {
            Refusal::OverBudget { reset_in_secs, .. } => Some(reset_in_secs.max(1)),
            Refusal::Throttled { retry_in_secs } => Some(retry_in_secs.max(1)),
            Refusal::Refused => None,
        }
    }
}

/// What observing a request's rows concluded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observed {
    /// No alarm (or no detector).
    Clear,
    /// The detector's alarm, with the lowest W among the rows; `raised` when this request
    /// started it.
    Alarm { w: f64, raised: bool },
}

#[derive(Debug, Default)]
struct ClientState {
    /// The budget window this client last spent in, and how much of it.
    window: u64,
    used: u64,
    /// Alarmed: the earliest time (ms) its next request is admitted (`u64::MAX` under refuse).
    alarmed_until_next: Option<u64>,
}

/// The defence of one served model.
#[derive(Debug)]
pub struct Defence {
    budgets: Option<Budgets>,
    extraction: Option<Extraction>,
    detector: Option<Detector>,
    clients: HashMap<ClientId, ClientState>,
}

impl Defence {
    /// The manifest's budgets and extraction settings; the detector tracks at most
    /// `max_clients` histories (the least recently seen go first).
    pub fn new(doc: &Document, max_clients: usize) -> Option<Self> {
        if !Self::needs_identity(doc) {
            return None;
        }
        Some(Defence {
            budgets: doc.budgets.clone(),
            extraction: doc.extraction.clone(),
            detector: doc.extraction.as_ref().map(|e| Detector::new(e, max_clients)),
            clients: HashMap::new(),
        })
    }

    /// Whether the manifest keeps anything per client, which needs client identities (tokens):
    /// behind the host's NAT every tokenless client is one address.
    pub fn needs_identity(doc: &Document) -> bool {
        doc.budgets.is_some() || doc.extraction.is_some()
    }

    /// The detector's memory at most, bytes, for `max_clients` histories of `features`.
    pub fn detector_bytes(doc: &Document, max_clients: usize) -> usize {
        doc.extraction.as_ref().map_or(0, |e| {
            Detector::bytes_per_client(e, doc.input.features.len()).saturating_mul(max_clients)
        })
    }

    /// Admits a request of `cost` model evaluations from `client` at `now_ms`, charging it.
    pub fn admit(&mut self, client: &ClientId, cost: u64, now_ms: u64) -> Result<(), Refusal> {
        let state = self.clients.entry(*client).or_default();
        if let Some(next) = state.alarmed_until_next {
            if next == u64::MAX {
                return Err(Refusal::Refused);
            }
            if now_ms < next {
                return Err(Refusal::Throttled { retry_in_secs: (next - now_ms).div_ceil(1000) });
            }
        }
        if let Some(b) = &self.budgets {
            let window_ms = b.window_seconds * 1000;
            let window = now_ms / window_ms;
            if state.window != window {
                state.window = window;
                state.used = 0;
            }
            if state.used.saturating_add(cost) > b.queries {
                let reset_in_secs = ((window + 1) * window_ms - now_ms).div_ceil(1000);
                return Err(Refusal::OverBudget { used: state.used, budget: b.queries, cost, reset_in_secs });
            }
            state.used += cost;
        }
        if let (Some(next), Some(e)) = (&mut state.alarmed_until_next, &self.extraction) {
            *next = now_ms.saturating_add(u64::from(e.throttle_seconds) * 1000);
        }
        Ok(())
    }

    /// Records the rows `client` was answered for (`features` values each, row-major) with
    /// their predicted classes, and applies the manifest's action on an alarm.
    pub fn observe(&mut self, client: &ClientId, rows: &[f32], classes: &[i64], now_ms: u64) -> Observed {
        let (Some(detector), Some(e)) = (&mut self.detector, &self.extraction) else {
            return Observed::Clear;
        };
        let features = if classes.is_empty() { 0 } else { rows.len() / classes.len() };
        let mut lowest = None::<f64>;
        let mut normal = false;
        for (row, &class) in rows.chunks_exact(features.max(1)).zip(classes) {
            match detector.observe(client, row, class) {
                Prada::Alarm { w } => lowest = Some(lowest.map_or(w, |l| l.min(w))),
                Prada::Normal { .. } => normal = true,
                Prada::Warming { .. } => {}
            }
        }
        let state = self.clients.entry(*client).or_default();
        match lowest {
            Some(w) => {
                let raised = state.alarmed_until_next.is_none();
                if raised {
                    state.alarmed_until_next = Some(match e.action {
                        ExtractionAction::Refuse => u64::MAX,
                        ExtractionAction::Throttle => {
                            now_ms.saturating_add(u64::from(e.throttle_seconds) * 1000)
                        }
                    });
                }
                Observed::Alarm { w, raised }
            }
            None => {
                // Under throttle, a series that looks natural again lifts the alarm.
                if normal && state.alarmed_until_next.is_some_and(|n| n != u64::MAX) {
                    state.alarmed_until_next = None;
                }
                Observed::Clear
            }
        }
    }

    /// The action on alarm, when the manifest has a detector.
    pub fn action(&self) -> Option<ExtractionAction> {
        self.extraction.as_ref().map(|e| e.action)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::manifest::Manifest;

    fn doc(budgets: Option<(u64, u64)>, action: Option<&str>) -> Document {
        let mut d = serde_json::json!({
            "format": "nacre-guard-v1",
            "input": {"tensor": "x", "features": [{"name": "a"}, {"name": "b"}]},
            "reference": {"rows": 4, "histograms": [{"edges": [0.0], "counts": [2, 2]}, {"edges": [0.0], "counts": [2, 2]}],
                          "mean": [0.0, 0.0], "covariance": [[1.0, 0.0], [0.0, 1.0]]},
            "input_guard": {"schema": "reject"},
            "output": {"policy": "full"},
        });
        if let Some((q, w)) = budgets {
            d["budgets"] = serde_json::json!({"queries": q, "window_seconds": w});
        }
        if let Some(a) = action {
            d["extraction"] = serde_json::json!({"delta": 0.9, "history": 50, "min_queries": 10, "action": a, "throttle_seconds": 5});
        }
        Manifest::parse(&serde_json::to_vec(&d).unwrap()).unwrap().document().clone()
    }

    const A: ClientId = [1; 32];
    const B: ClientId = [2; 32];

    #[test]
    fn budgets_refuse_with_the_time_to_the_next_window() {
        assert!(Defence::new(&doc(None, None), 10).is_none());
        let mut d = Defence::new(&doc(Some((10, 60)), None), 10).unwrap();
        let t = 999_999_980_500; // 20.5 s into a 60 s window (60,000 ms × 16,666,666 + 20,500)
        d.admit(&A, 7, t).unwrap();
        d.admit(&A, 3, t + 1).unwrap();
        let r = d.admit(&A, 1, t + 2).unwrap_err();
        assert_eq!(r, Refusal::OverBudget { used: 10, budget: 10, cost: 1, reset_in_secs: 40 });
        assert_eq!(r.retry_after(), Some(40));
        // Another client has its own budget; a request dearer than a whole window never passes.
        d.admit(&B, 10, t).unwrap();
        assert!(matches!(d.admit(&B, 11, t + 60_000), Err(Refusal::OverBudget { cost: 11, .. })));
        // The next window: spent again from zero.
        d.admit(&A, 10, t + 40_000).unwrap();
    }

    #[test]
    fn an_alarm_throttles_or_refuses_that_client_only() {
        for action in ["throttle", "refuse"] {
            let mut d = Defence::new(&doc(None, Some(action)), 10).unwrap();
            let t = 5_000_000;
            // A walk along one axis: equal distances, W undefined, alarm once the series is long.
            let mut raised = None;
            for i in 0..20 {
                d.admit(&A, 1, t).unwrap();
                let row = [i as f32 * 0.5, 0.0];
                if let Observed::Alarm { raised: true, .. } = d.observe(&A, &row, &[1], t) {
                    raised = Some(i);
                    break;
                }
            }
            assert_eq!(raised, Some(10), "{action}");
            d.admit(&B, 1, t).unwrap();
            match action {
                "refuse" => {
                    assert_eq!(d.admit(&A, 1, t + 3_600_000), Err(Refusal::Refused));
                }
                _ => {
                    assert_eq!(d.admit(&A, 1, t + 1000), Err(Refusal::Throttled { retry_in_secs: 4 }));
                    d.admit(&A, 1, t + 5000).unwrap();
                    // Once through, the next waits a whole interval again.
                    assert_eq!(d.admit(&A, 1, t + 5001), Err(Refusal::Throttled { retry_in_secs: 5 }));
                }
            }
        }
    }
}
