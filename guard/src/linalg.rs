//! The little linear algebra the input guard needs: a Cholesky factor of the reference
//! covariance, checked once when the manifest is read, and the squared Mahalanobis distance it
//! gives per request (one forward substitution, O(d²), no allocation).

/// The lower-triangular `L` with `L·Lᵀ = Σ`, row-major, and the mean it is centred on.
#[derive(Clone, Debug, PartialEq)]
pub struct Mahalanobis {
    dim: usize,
    mean: Vec<f64>,
    lower: Vec<f64>,
}

/// Why a covariance matrix cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CovarianceError {
    #[error("the covariance is {rows}×{cols}, the mean has {dim} entries")]
    Shape { dim: usize, rows: usize, cols: usize },
    #[error("the covariance is not symmetric at ({row}, {col})")]
    NotSymmetric { row: usize, col: usize },
    #[error(
        "the covariance is not positive definite (pivot {pivot}): a constant or duplicated feature needs a ridge on the diagonal (`nacre guard fit` adds one)"
    )]
    NotPositiveDefinite { pivot: usize },
    #[error("the mean or covariance holds a value that is not finite")]
    NotFinite,
}

impl Mahalanobis {
    /// Factors `covariance` (row-major, `mean.len()` square). Symmetry is checked to a relative
    /// 1e-9 of the larger entry: the owner's tools write the same float twice, so anything
    /// more is a different matrix.
    pub fn new(mean: &[f64], covariance: &[Vec<f64>]) -> Result<Self, CovarianceError> {
        let dim = mean.len();
        if covariance.len() != dim || covariance.iter().any(|r| r.len() != dim) {
            let cols = covariance.iter().map(Vec::len).find(|&c| c != dim).unwrap_or(dim);
            return Err(CovarianceError::Shape { dim, rows: covariance.len(), cols });
        }
        if mean.iter().chain(covariance.iter().flatten()).any(|v| !v.is_finite()) {
            return Err(CovarianceError::NotFinite);
        }
        for (i, row) in covariance.iter().enumerate() {
            for (j, &a) in row.iter().enumerate().skip(i + 1) {
                let b = covariance[j][i];
                if (a - b).abs() > 1e-9 * a.abs().max(b.abs()) {
                    return Err(CovarianceError::NotSymmetric { row: i, col: j });
                }
            }
        }
        let mut lower = vec![0.0; dim * dim];
        for i in 0..dim {
            for j in 0..=i {
                let dot: f64 = (0..j).map(|k| lower[i * dim + k] * lower[j * dim + k]).sum();
                let v = covariance[i][j] - dot;
                if i == j {
                    // A pivot this small relative to the variance is a singular matrix in
                    // floating point: its inverse would turn rounding into huge distances.
                    if !v.is_finite() || v <= covariance[i][i].abs() * 1e-12 {
                        return Err(CovarianceError::NotPositiveDefinite { pivot: i });
                    }
                    lower[i * dim + i] = v.sqrt();
                } else {
                    lower[i * dim + j] = v / lower[j * dim + j];
                }
            }
        }
        Ok(Mahalanobis { dim, mean: mean.to_vec(), lower })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The squared distance `(x−μ)ᵀ Σ⁻¹ (x−μ)` of a row of `dim` features, by solving
    /// `L·z = x−μ` in `scratch` (resized to `dim`) and summing `z²`.
    pub fn squared(&self, x: &[f32], scratch: &mut Vec<f64>) -> f64 {
        debug_assert_eq!(x.len(), self.dim);
        scratch.clear();
        let mut sum = 0.0;
        for (i, (&xi, mean)) in x.iter().zip(&self.mean).enumerate() {
            let row = &self.lower[i * self.dim..i * self.dim + i];
            let dot: f64 = row.iter().zip(scratch.iter()).map(|(l, z)| l * z).sum();
            let z = (f64::from(xi) - mean - dot) / self.lower[i * self.dim + i];
            scratch.push(z);
            sum += z * z;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn distance_is_the_quadratic_form_of_the_inverse() {
        // Σ = [[4, 2], [2, 3]]: Σ⁻¹ = [[3, -2], [-2, 4]] / 8.
        let m = Mahalanobis::new(&[1.0, -1.0], &[vec![4.0, 2.0], vec![2.0, 3.0]]).unwrap();
        let mut s = Vec::new();
        let (dx, dy) = (2.0, 1.0); // x = (3, 0)
        let expected = (3.0 * dx * dx - 4.0 * dx * dy + 4.0 * dy * dy) / 8.0;
        assert!((m.squared(&[3.0, 0.0], &mut s) - expected).abs() < 1e-12);
        assert_eq!(m.squared(&[1.0, -1.0], &mut s), 0.0);
    }

    #[test]
    fn unusable_matrices_are_refused_with_the_reason() {
        let m = |mean: &[f64], c: &[Vec<f64>]| Mahalanobis::new(mean, c).unwrap_err();
        assert!(matches!(m(&[0.0; 2], &[vec![1.0, 0.0]]), CovarianceError::Shape { .. }));
        assert!(matches!(
            m(&[0.0; 2], &[vec![1.0, 0.5], vec![0.4, 1.0]]),
            CovarianceError::NotSymmetric { .. }
        ));
        // A constant second feature, and two identical features.
        assert!(matches!(
            m(&[0.0; 2], &[vec![1.0, 0.0], vec![0.0, 0.0]]),
            CovarianceError::NotPositiveDefinite { pivot: 1 }
        ));
        assert!(matches!(
            m(&[0.0; 2], &[vec![2.0, 2.0], vec![2.0, 2.0]]),
            CovarianceError::NotPositiveDefinite { pivot: 1 }
        ));
        assert!(matches!(m(&[f64::NAN, 0.0], &[vec![1.0, 0.0], vec![0.0, 1.0]]), CovarianceError::NotFinite));
    }
}
