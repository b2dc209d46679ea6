//! Output hardening: the manifest's output policy applied inside the enclave after inference,
//! so that only what the owner allows leaves (ART's `Rounded`, `HighConfidence` and
//! `ClassLabels` post-processors). Every policy keeps the output's shape and type, so clients
//! and the model's published metadata stay as they are: top-k zeroes all but the k largest
//! scores of each row, label-only sends each row as one-hot (a single score, a sigmoid, becomes
//! 0 or 1 at 0.5). Ties go to the lower class index and NaN ranks lowest, so the same scores
//! always give the same answer.

use crate::manifest::OutputPolicy;

/// Applies `policy` in place to `scores`: row-major rows of `classes` values (`classes` ≥ 1 and
/// dividing the length, as the caller has checked against the output's shape).
pub fn harden(policy: &OutputPolicy, scores: &mut [f32], classes: usize) {
    let classes = classes.max(1);
    match *policy {
        OutputPolicy::Full => {}
        OutputPolicy::Round { decimals } => {
            let scale = 10f64.powi(i32::from(decimals));
            for v in scores.iter_mut() {
                *v = ((f64::from(*v) * scale).round() / scale) as f32;
            }
        }
        OutputPolicy::TopK { k } => {
            let k = (k as usize).min(classes);
            let mut order: Vec<usize> = Vec::with_capacity(classes);
            for row in scores.chunks_exact_mut(classes) {
                order.clear();
                order.extend(0..classes);
                order.sort_by(|&a, &b| rank(row[b]).total_cmp(&rank(row[a])).then(a.cmp(&b)));
                for &c in &order[k..] {
                    row[c] = 0.0;
                }
            }
        }
        OutputPolicy::Label if classes == 1 => {
            for v in scores.iter_mut() {
                *v = if *v >= 0.5 { 1.0 } else { 0.0 };
            }
        }
        OutputPolicy::Label => {
            for row in scores.chunks_exact_mut(classes) {
                let mut best = 0;
                for (c, &v) in row.iter().enumerate() {
                    if rank(v) > rank(row[best]) {
                        best = c;
                    }
                }
                for (c, v) in row.iter_mut().enumerate() {
                    *v = if c == best { 1.0 } else { 0.0 };
                }
            }
        }
    }
}

/// NaN below every number.
fn rank(v: f32) -> f32 {
    if v.is_nan() { f32::NEG_INFINITY } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCORES: [f32; 6] = [0.1234567, 0.6, 0.2765433, 0.5, 0.5, f32::NAN];

    fn hardened(policy: OutputPolicy, scores: &[f32], classes: usize) -> Vec<f32> {
        let mut v = scores.to_vec();
        harden(&policy, &mut v, classes);
        v
    }

    #[test]
    fn each_policy_releases_only_what_it_says() {
        assert_eq!(hardened(OutputPolicy::Full, &SCORES[..3], 3), SCORES[..3].to_vec());
        assert_eq!(hardened(OutputPolicy::Round { decimals: 2 }, &SCORES[..3], 3), vec![0.12, 0.6, 0.28]);
        // Top-2 of each row; the NaN is never kept over a number.
        assert_eq!(
            hardened(OutputPolicy::TopK { k: 2 }, &SCORES, 3),
            vec![0.0, 0.6, 0.2765433, 0.5, 0.5, 0.0]
        );
        assert_eq!(hardened(OutputPolicy::TopK { k: 10 }, &SCORES[..3], 3), SCORES[..3].to_vec());
        // One-hot; ties to the lower index; NaN never wins; a single score is thresholded.
        assert_eq!(hardened(OutputPolicy::Label, &SCORES, 3), vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
        assert_eq!(hardened(OutputPolicy::Label, &[f32::NAN, 0.0], 2), vec![0.0, 1.0]);
        assert_eq!(hardened(OutputPolicy::Label, &[0.2, 0.5, 0.9], 1), vec![0.0, 1.0, 1.0]);
    }
}
