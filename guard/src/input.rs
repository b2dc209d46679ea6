//! The per-request input guard: each row of the model's input checked against the manifest's
//! schema (finite, in range, an allowed value) and scored by its squared Mahalanobis distance
//! from the reference; what happens then is the manifest's action. No allocation per request
//! beyond the caller's scratch buffer.

use crate::manifest::{Action, Manifest};

/// The first schema violation in a row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Violation {
    NotFinite { feature: usize },
    BelowMin { feature: usize, value: f32, min: f64 },
    AboveMax { feature: usize, value: f32, max: f64 },
    NotAllowed { feature: usize, value: f32 },
}

impl Violation {
    pub fn feature(&self) -> usize {
        match *self {
            Violation::NotFinite { feature }
            | Violation::BelowMin { feature, .. }
            | Violation::AboveMax { feature, .. }
            | Violation::NotAllowed { feature, .. } => feature,
        }
    }

    /// A stable code for metrics and responses.
    pub fn code(&self) -> &'static str {
        match self {
            Violation::NotFinite { .. } => "not_finite",
            Violation::BelowMin { .. } => "below_min",
            Violation::AboveMax { .. } => "above_max",
            Violation::NotAllowed { .. } => "not_allowed",
        }
    }
}

/// What the guard found in a request (all its rows).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Verdict {
    /// The first violation, and its row.
    pub violation: Option<(usize, Violation)>,
    /// The largest squared distance of any row, when the manifest has an OOD check and every
    /// row was within the schema (a distance over out-of-range values says nothing more).
    pub ood_score: Option<f64>,
    /// Whether that score is past the threshold.
    pub out_of_distribution: bool,
    /// The strictest action the findings call for; `None` when there are none.
    pub action: Option<Action>,
}

/// The guard of one manifest.
#[derive(Debug)]
pub struct InputGuard<'m> {
    manifest: &'m Manifest,
}

impl<'m> InputGuard<'m> {
    pub fn new(manifest: &'m Manifest) -> Self {
        InputGuard { manifest }
    }

    /// Checks `data`, rows of the manifest's feature count (the caller has checked that the
    /// input tensor is `[rows, features]` or `[features]`). `scratch` is reused between calls.
    pub fn check(&self, data: &[f32], scratch: &mut Vec<f64>) -> Verdict {
        let doc = self.manifest.document();
        let d = self.manifest.features();
        let mut verdict = Verdict::default();
        for (r, row) in data.chunks_exact(d).enumerate() {
            if let Some(v) = violation(doc, row) {
                verdict.violation = Some((r, v));
                verdict.action = Some(doc.input_guard.schema);
                return verdict;
            }
        }
        if let Some(ood) = &doc.input_guard.ood {
            let worst = data
                .chunks_exact(d)
                .map(|row| self.manifest.mahalanobis().squared(row, scratch))
                .fold(0.0f64, f64::max);
            verdict.ood_score = Some(worst);
            if worst > ood.threshold {
                verdict.out_of_distribution = true;
                verdict.action = Some(ood.action);
            }
        }
        verdict
    }
}

fn violation(doc: &crate::manifest::Document, row: &[f32]) -> Option<Violation> {
    for (feature, (&value, f)) in row.iter().zip(&doc.input.features).enumerate() {
        if !value.is_finite() {
            return Some(Violation::NotFinite { feature });
        }
        let v = f64::from(value);
        if let Some(min) = f.min
            && v < min
        {
            return Some(Violation::BelowMin { feature, value, min });
        }
        if let Some(max) = f.max
            && v > max
        {
            return Some(Violation::AboveMax { feature, value, max });
        }
        if let Some(allowed) = &f.allowed
            && !allowed.contains(&v)
        {
            return Some(Violation::NotAllowed { feature, value });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::manifest::tests::sample;

    #[test]
    fn schema_then_distance_decide_the_action() {
        let m = Manifest::from_document(sample()).unwrap();
        let g = InputGuard::new(&m);
        let mut s = Vec::new();
        // At the mean: in distribution, nothing to do.
        let ok = g.check(&[5.0, 1.0, 5.0, 0.0], &mut s);
        assert_eq!((ok.violation, ok.action, ok.out_of_distribution), (None, None, false));
        assert!(ok.ood_score.unwrap() < 20.0);
        // Row 1 breaks the schema in each way; the manifest rejects.
        for (row, expected) in [
            ([-1.0, 1.0], Violation::BelowMin { feature: 0, value: -1.0, min: 0.0 }),
            ([2e6, 1.0], Violation::AboveMax { feature: 0, value: 2e6, max: 1e6 }),
            ([5.0, 1.5], Violation::NotAllowed { feature: 1, value: 1.5 }),
            ([f32::NAN, 1.0], Violation::NotFinite { feature: 0 }),
        ] {
            let v = g.check(&[5.0, 1.0, row[0], row[1]], &mut s);
            assert_eq!(v.violation, Some((1, expected)), "{row:?}");
            assert_eq!(v.action, Some(Action::Reject));
        }
        // In range but far from the reference: flagged, as the manifest says.
        let far = g.check(&[900_000.0, 2.0], &mut s);
        assert!(far.out_of_distribution && far.violation.is_none());
        assert_eq!(far.action, Some(Action::Flag));
    }
}
