//! The reference statistics of `nacre guard fit`, in two passes over the training rows:
//! 1. mean and covariance (Welford's co-moments, numerically stable in one pass), each
//!    feature's range, and a uniform reservoir sample of rows;
//! 2. each feature's histogram over edges at the sample's quantiles.
//!
//! The out-of-distribution threshold is the sample's squared Mahalanobis distance at a stated
//! quantile (so the false-positive rate on training-like data is known by construction), not a
//! χ² value that assumes normal features.

use crate::linalg::{CovarianceError, Mahalanobis};
use crate::manifest::Histogram;

/// Why the rows cannot be fitted.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FitError {
    #[error("row {row}, feature {feature}: {value} is not finite")]
    NotFinite { row: u64, feature: usize, value: f32 },
    #[error("{0} rows: at least 2 are needed")]
    TooFew(u64),
    #[error("the covariance cannot be used even with a ridge: {0}")]
    Covariance(#[from] CovarianceError),
}

/// Pass 1.
#[derive(Clone, Debug)]
pub struct Moments {
    d: usize,
    n: u64,
    mean: Vec<f64>,
    /// Σ (x−mean)(x−mean)ᵀ, row-major.
    comoment: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    sample: Vec<Vec<f32>>,
    capacity: usize,
    rng: u64,
    delta: Vec<f64>,
}

/// What pass 1 found.
#[derive(Clone, Debug, PartialEq)]
pub struct Fitted {
    pub rows: u64,
    pub mean: Vec<f64>,
    pub covariance: Vec<Vec<f64>>,
    /// The ridge added to the diagonal to make the covariance usable (0 when none was needed).
    pub ridge: f64,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    pub sample: Vec<Vec<f32>>,
}

impl Moments {
    /// `d` features, a reservoir of `sample` rows drawn with a fixed `seed` (the same data gives
    /// the same manifest).
    pub fn new(d: usize, sample: usize, seed: u64) -> Self {
        Moments {
            d,
            n: 0,
            mean: vec![0.0; d],
            comoment: vec![0.0; d * d],
            min: vec![f64::INFINITY; d],
            max: vec![f64::NEG_INFINITY; d],
            sample: Vec::with_capacity(sample.min(1 << 16)),
            capacity: sample,
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
            delta: vec![0.0; d],
        }
    }

    fn next(&mut self) -> u64 {
        // SplitMix64: a deterministic, well-mixed stream for the reservoir.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn push(&mut self, row: &[f32]) -> Result<(), FitError> {
        if let Some((feature, &value)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(FitError::NotFinite { row: self.n + 1, feature, value });
        }
        self.n += 1;
        let n = self.n as f64;
        for (i, &x) in row.iter().enumerate() {
            let x = f64::from(x);
            self.delta[i] = x - self.mean[i];
            self.mean[i] += self.delta[i] / n;
            self.min[i] = self.min[i].min(x);
            self.max[i] = self.max[i].max(x);
        }
        // C += (n−1)/n · δδᵀ, with δ taken against the previous mean.
        let w = (n - 1.0) / n;
        for i in 0..self.d {
            let di = self.delta[i] * w;
            for j in i..self.d {
                self.comoment[i * self.d + j] += di * self.delta[j];
            }
        }
        if self.sample.len() < self.capacity {
            self.sample.push(row.to_vec());
        } else {
            let k = self.next() % self.n;
            if (k as usize) < self.capacity {
                self.sample[k as usize] = row.to_vec();
            }
        }
        Ok(())
    }

    /// The sample covariance (n−1), with the smallest ridge (a multiple of the mean variance,
    /// from 1e-9 up) that makes it positive definite: a constant or duplicated feature would
    /// otherwise make the distance undefined.
    pub fn finish(self) -> Result<Fitted, FitError> {
        if self.n < 2 {
            return Err(FitError::TooFew(self.n));
        }
        let d = self.d;
        // The co-moments fill the upper triangle; the lower one mirrors it.
        let mut cov: Vec<Vec<f64>> = (0..d)
            .map(|i| (0..d).map(|j| self.comoment[i.min(j) * d + i.max(j)] / (self.n - 1) as f64).collect())
            .collect();
        let scale = (0..d).map(|i| cov[i][i]).sum::<f64>() / d as f64;
        let scale = if scale > 0.0 { scale } else { 1.0 };
        let mut ridge = 0.0;
        let mut last = None;
        for step in [0.0, 1e-9, 1e-6, 1e-3, 1e-1] {
            let mut c = cov.clone();
            for (i, row) in c.iter_mut().enumerate() {
                row[i] += step * scale;
            }
            match Mahalanobis::new(&self.mean, &c) {
                Ok(_) => {
                    ridge = step * scale;
                    cov = c;
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e.into());
        }
        Ok(Fitted {
            rows: self.n,
            mean: self.mean,
            covariance: cov,
            ridge,
            min: self.min,
            max: self.max,
            sample: self.sample,
        })
    }
}

impl Fitted {
    /// Edges at the sample's `bins`-quantiles for feature `f` (fewer when values repeat: edges
    /// increase strictly). At least one edge, so that the histogram has two bins.
    pub fn edges(&self, f: usize, bins: usize) -> Vec<f64> {
        let mut col: Vec<f64> = self.sample.iter().map(|r| f64::from(r[f])).collect();
        col.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = Vec::with_capacity(bins);
        for q in 1..bins.max(2) {
            let at = (q * col.len()) / bins.max(2);
            let e = col[at.min(col.len() - 1)];
            if edges.last().is_none_or(|&l| e > l) {
                edges.push(e);
            }
        }
        edges
    }

    /// The squared distance at quantile `q` of the sample: the threshold that flags a `1 − q`
    /// share of training-like rows.
    pub fn ood_threshold(&self, q: f64) -> Result<f64, FitError> {
        let m = Mahalanobis::new(&self.mean, &self.covariance)?;
        let mut scratch = Vec::new();
        let mut d2: Vec<f64> = self.sample.iter().map(|r| m.squared(r, &mut scratch)).collect();
        d2.sort_by(f64::total_cmp);
        let at = ((d2.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
        Ok(d2[at].max(f64::MIN_POSITIVE))
    }
}

/// Pass 2: counts per bin for every feature.
#[derive(Clone, Debug)]
pub struct Counts {
    pub histograms: Vec<Histogram>,
}

impl Counts {
    pub fn new(edges: Vec<Vec<f64>>) -> Self {
        Counts {
            histograms: edges
                .into_iter()
                .map(|edges| Histogram { counts: vec![0; edges.len() + 1], edges })
                .collect(),
        }
    }

    pub fn push(&mut self, row: &[f32]) {
        for (h, &x) in self.histograms.iter_mut().zip(row) {
            // Bin i holds [edges[i−1], edges[i]): the count of edges ≤ x.
            let bin = h.edges.partition_point(|&e| e <= f64::from(x));
            h.counts[bin] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn moments_match_the_two_pass_formulas_and_bins_cover_every_row() {
        let rows: Vec<[f32; 2]> =
            (0..1000).map(|i| [(i % 10) as f32, ((i * 7) % 13) as f32 * 0.5 + 100.0]).collect();
        let mut m = Moments::new(2, 10_000, 1);
        for r in &rows {
            m.push(r).unwrap();
        }
        let f = m.finish().unwrap();
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..2).map(|j| rows.iter().map(|r| f64::from(r[j])).sum::<f64>() / n).collect();
        for j in 0..2 {
            assert!((f.mean[j] - mean[j]).abs() < 1e-9);
            for k in 0..2 {
                let c = rows
                    .iter()
                    .map(|r| (f64::from(r[j]) - mean[j]) * (f64::from(r[k]) - mean[k]))
                    .sum::<f64>()
                    / (n - 1.0);
                assert!((f.covariance[j][k] - c).abs() < 1e-9, "{j},{k}");
            }
        }
        assert_eq!((f.ridge, f.min[0], f.max[0]), (0.0, 0.0, 9.0));
        let edges = f.edges(0, 10);
        assert_eq!(edges, (1..10).map(f64::from).collect::<Vec<_>>());
        let mut counts = Counts::new(vec![edges, f.edges(1, 4)]);
        for r in &rows {
            counts.push(r);
        }
        assert_eq!(counts.histograms[0].counts, vec![100; 10]);
        assert_eq!(counts.histograms[1].counts.iter().sum::<u64>(), 1000);
        // About 1 % of training rows lie beyond the 99th-percentile threshold.
        let t = f.ood_threshold(0.99).unwrap();
        let m = Mahalanobis::new(&f.mean, &f.covariance).unwrap();
        let beyond = rows.iter().filter(|r| m.squared(&r[..], &mut Vec::new()) > t).count();
        assert!(beyond <= 20, "{beyond}");
    }

    #[test]
    fn a_constant_feature_gets_a_ridge_and_bad_rows_are_refused() {
        let mut m = Moments::new(2, 100, 1);
        for i in 0..50 {
            m.push(&[i as f32, 3.0]).unwrap();
        }
        let f = m.finish().unwrap();
        assert!(f.ridge > 0.0);
        assert!(Mahalanobis::new(&f.mean, &f.covariance).is_ok());
        let mut m = Moments::new(2, 100, 1);
        m.push(&[1.0, 2.0]).unwrap();
        assert!(matches!(m.push(&[f32::NAN, 2.0]), Err(FitError::NotFinite { row: 2, feature: 0, .. })));
        assert!(matches!(m.push(&[1.0, f32::INFINITY]), Err(FitError::NotFinite { row: 2, feature: 1, .. })));
        assert_eq!(m.finish().map(|_| ()), Err(FitError::TooFew(1)));
    }
}
