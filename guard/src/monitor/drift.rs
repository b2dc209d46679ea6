//! Drift of a window's histogram from the reference's — PSI, Kolmogorov–Smirnov (from the binned
//! CDFs) and Hellinger — and their alarm thresholds, calibrated by simulation to the manifest's
//! false-alarm rate for the window's size and noise: at small windows and under DP noise the
//! usual constants (PSI 0.1/0.25, Hellinger 0.15) alarm on every window
//! (docs/monitoring.md).

use serde::{Deserialize, Serialize};

use super::noise::{Noise, SplitMix, normal};

/// A proportion floor, so that an empty bin does not make PSI infinite (Evidently's choice).
const FLOOR: f64 = 1e-4;

/// One window's distances from the reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Distances {
    pub psi: f64,
    pub ks: f64,
    pub hellinger: f64,
}

impl Distances {
    fn get(&self, m: usize) -> f64 {
        [self.psi, self.ks, self.hellinger][m]
    }
}

/// Proportions of `counts`, negative (noised) counts taken as 0; all zero for an empty window.
pub fn proportions(counts: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().map(|c| c.max(0.0)).sum();
    if total <= 0.0 {
        return vec![0.0; counts.len()];
    }
    counts.iter().map(|c| c.max(0.0) / total).collect()
}

/// The distances of proportions `q` from the reference's `p` (same bins).
pub fn distances(p: &[f64], q: &[f64]) -> Distances {
    let (mut psi, mut ks, mut bc) = (0.0, 0.0f64, 0.0);
    let (mut cp, mut cq) = (0.0, 0.0);
    for (&a, &b) in p.iter().zip(q) {
        let (fa, fb) = (a.max(FLOOR), b.max(FLOOR));
        psi += (fb - fa) * (fb / fa).ln();
        cp += a;
        cq += b;
        ks = ks.max((cp - cq).abs());
        bc += (a * b).sqrt();
    }
    Distances { psi, ks, hellinger: (1.0 - bc).max(0.0).sqrt() }
}

/// Per-feature alarm thresholds for one window size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// The window size (rows) they hold for.
    pub rows: u64,
    /// Per feature: PSI, KS and Hellinger thresholds.
    pub features: Vec<Distances>,
}

impl Thresholds {
    /// Whether `d` (feature `f`) passes any threshold.
    pub fn drifted(&self, f: usize, d: &Distances) -> bool {
        self.features.get(f).is_some_and(|t| d.psi > t.psi || d.ks > t.ks || d.hellinger > t.hellinger)
    }
}

/// Simulated windows per calibration: the tail quantile rests on ≥ 20 exceedances at the
/// smallest false-alarm rate the enclave sees in practice (1 %, split over three metrics).
pub const SIMULATIONS: usize = 6_000;

/// Thresholds at which a window of `rows` drawn from the reference distribution, noised as
/// released, alarms on any feature with probability `alpha` at most.
///
/// Each simulated window draws the true distribution as a bootstrap of the reference (it was
/// fitted from `reference_rows`, not known exactly), then the window from it, then the noise,
/// exactly as a release computes its distances. A window's statistic per metric is the largest
/// over features of the distance divided by that feature's mean null distance; its
/// (1 − α/3) quantile, times each feature's mean, is that feature's threshold (the union over
/// the three metrics then alarms at α at most). Features are drawn independently: correlated
/// features only make the maximum's tail lighter, so the rate holds (conservatively).
/// Deterministic (seeded): anyone can recompute the thresholds a release states.
pub fn calibrate(
    reference: &[Vec<f64>],
    reference_rows: u64,
    rows: u64,
    noise: &Noise,
    alpha: f64,
    simulations: usize,
) -> Thresholds {
    let mut rng = SplitMix(0x6e61_6372_655f_6d6f ^ rows);
    let d = reference.len();
    let mut sims = vec![[0.0f64; 3]; simulations * d];
    let mut truth = Vec::new();
    let mut window = Vec::new();
    for s in 0..simulations {
        for (f, p) in reference.iter().enumerate() {
            multinomial(&mut rng, reference_rows.max(1), p, &mut truth);
            let total: f64 = truth.iter().sum::<f64>().max(1.0);
            truth.iter_mut().for_each(|c| *c /= total);
            multinomial(&mut rng, rows, &truth, &mut window);
            window.iter_mut().for_each(|c| *c += noise.simulate(&mut rng));
            let dist = distances(p, &proportions(&window));
            sims[s * d + f] = [dist.psi, dist.ks, dist.hellinger];
        }
    }
    let mut means = vec![[0.0f64; 3]; d];
    for s in 0..simulations {
        for f in 0..d {
            for m in 0..3 {
                means[f][m] += sims[s * d + f][m] / simulations as f64;
            }
        }
    }
    let q = 1.0 - alpha / 3.0;
    let mut features = vec![Distances::default(); d];
    for m in 0..3 {
        let mut stat: Vec<f64> = (0..simulations)
            .map(|s| {
                (0..d).map(|f| sims[s * d + f][m] / means[f][m].max(f64::MIN_POSITIVE)).fold(0.0, f64::max)
            })
            .collect();
        stat.sort_unstable_by(f64::total_cmp);
        let at = ((q * simulations as f64).ceil() as usize).clamp(1, simulations) - 1;
        let t = stat[at];
        for f in 0..d {
            let v = t * means[f][m];
            match m {
                0 => features[f].psi = v,
                1 => features[f].ks = v,
                _ => features[f].hellinger = v,
            }
        }
    }
    debug_assert!(features.iter().all(|t| (0..3).all(|m| t.get(m).is_finite())));
    Thresholds { rows, features }
}

/// Multinomial(n, p) counts into `out` by conditional binomials (normal approximation where
/// the count's variance is large, exact inversion otherwise): for simulations only.
fn multinomial(rng: &mut SplitMix, n: u64, p: &[f64], out: &mut Vec<f64>) {
    out.clear();
    let (mut left, mut mass) = (n, 1.0f64);
    for (i, &pi) in p.iter().enumerate() {
        if i + 1 == p.len() {
            out.push(left as f64);
            break;
        }
        let c = if mass <= 0.0 || left == 0 { 0 } else { binomial(rng, left, (pi / mass).clamp(0.0, 1.0)) };
        out.push(c as f64);
        left -= c;
        mass -= pi;
    }
}

fn binomial(rng: &mut SplitMix, n: u64, p: f64) -> u64 {
    let (mean, var) = (n as f64 * p, n as f64 * p * (1.0 - p));
    if var > 25.0 {
        return (mean + normal(rng) * var.sqrt()).round().clamp(0.0, n as f64) as u64;
    }
    // Small mean on either side: invert the CDF from the nearer end.
    let (q, flip) = if p > 0.5 { (1.0 - p, true) } else { (p, false) };
    let mut k = 0u64;
    let mut prob = (1.0 - q).powf(n as f64);
    let mut cdf = prob;
    let u = rng.unit();
    while u > cdf && k < n {
        prob *= (n - k) as f64 / (k + 1) as f64 * q / (1.0 - q);
        k += 1;
        cdf += prob;
    }
    if flip { n - k } else { k }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Mechanism;

    #[test]
    fn distances_match_their_definitions() {
        let p = [0.25, 0.25, 0.5];
        let q = [0.5, 0.25, 0.25];
        let d = distances(&p, &q);
        let psi = 0.25 * (2.0f64).ln() + (-0.25) * (0.5f64).ln();
        assert!((d.psi - psi).abs() < 1e-12);
        assert!((d.ks - 0.25).abs() < 1e-12);
        let bc = (0.125f64).sqrt() + 0.25 + (0.125f64).sqrt();
        assert!((d.hellinger - (1.0 - bc).sqrt()).abs() < 1e-12);
        assert_eq!(distances(&p, &p), Distances { psi: 0.0, ks: 0.0, hellinger: 0.0 });
        // Noised counts below 0 count as 0.
        assert_eq!(proportions(&[-3.0, 1.0, 3.0]), vec![0.0, 0.25, 0.75]);
    }

    fn bins(n: usize) -> Vec<f64> {
        // A discretised normal-ish shape.
        let w: Vec<f64> = (0..n).map(|i| (-((i as f64 - n as f64 / 2.0) / 2.5).powi(2)).exp()).collect();
        let s: f64 = w.iter().sum();
        w.iter().map(|x| x / s).collect()
    }

    #[test]
    fn thresholds_hold_their_false_alarm_rate_and_shrink_with_the_window() {
        let reference: Vec<Vec<f64>> = (0..4).map(|_| bins(10)).collect();
        let noise = Noise::new(Mechanism::DiscreteLaplace, 1.0, 6);
        let small = calibrate(&reference, 20_000, 1_000, &noise, 0.05, 2_000);
        let large = calibrate(&reference, 20_000, 20_000, &noise, 0.05, 2_000);
        assert!(large.features[0].psi < small.features[0].psi / 4.0, "{large:?} vs {small:?}");
        // A fresh null run (another seed, the same procedure) alarms at about α.
        let mut rng = SplitMix(99);
        let (mut alarms, runs) = (0, 2_000);
        let mut truth = Vec::new();
        let mut window = Vec::new();
        for _ in 0..runs {
            let mut any = false;
            for (f, p) in reference.iter().enumerate() {
                multinomial(&mut rng, 20_000, p, &mut truth);
                truth.iter_mut().for_each(|c| *c /= 20_000.0);
                multinomial(&mut rng, 1_000, &truth, &mut window);
                window.iter_mut().for_each(|c| *c += noise.simulate(&mut rng));
                any |= small.drifted(f, &distances(p, &proportions(&window)));
            }
            alarms += usize::from(any);
        }
        let rate = alarms as f64 / runs as f64;
        assert!((0.01..=0.075).contains(&rate), "false alarms {rate}");
    }

    #[test]
    fn binomials_have_their_mean() {
        let mut rng = SplitMix(1);
        for (n, p) in [(10u64, 0.3), (10_000, 0.001), (10_000, 0.999), (100_000, 0.4)] {
            let mean = (0..4000).map(|_| binomial(&mut rng, n, p) as f64).sum::<f64>() / 4000.0;
            let sd = (n as f64 * p * (1.0 - p) / 4000.0).sqrt();
            assert!((mean - n as f64 * p).abs() < 5.0 * sd + 1e-9, "{n} {p}: {mean}");
        }
    }
}
