//! The Shapiro–Wilk W statistic (Royston's approximation, algorithm AS R94, as `scipy.stats.shapiro`
//! computes it) for the PRADA extraction detector of guard part 2: a client's series of minimum
//! distances between queries is close to normal for natural queries (W near 1) and not for the
//! synthetic ones extraction attacks make. W alone is compared with the manifest's `delta`, so no
//! p-value is computed.

/// Most values W is defined for here (Royston's approximation holds up to 5,000).
pub const MAX_N: usize = 5000;

/// The coefficients of W for one sample size: computing them costs a normal quantile per
/// value, so a caller that tests many series of one length (the PRADA detector, at its history
/// cap) keeps them.
#[derive(Clone, Debug)]
pub struct Coefficients {
    n: usize,
    /// a[i] pairs x(n−1−i) − x(i), for the lower half.
    a: Vec<f64>,
}

impl Coefficients {
    /// For samples of `n` values, 3 to [`MAX_N`].
    pub fn new(n: usize) -> Option<Self> {
        if !(3..=MAX_N).contains(&n) {
            return None;
        }
        if n == 3 {
            return Some(Coefficients { n, a: vec![std::f64::consts::FRAC_1_SQRT_2] });
        }
        let m = |i: usize| norm_ppf((i as f64 + 1.0 - 0.375) / (n as f64 + 0.25));
        let mm: f64 = (0..n).map(|i| m(i) * m(i)).sum();
        let u = 1.0 / (n as f64).sqrt();
        let poly = |c: [f64; 6]| c[0] + u * (c[1] + u * (c[2] + u * (c[3] + u * (c[4] + u * c[5]))));
        let (mn, mn1) = (m(n - 1), m(n - 2));
        let an = poly([mn / mm.sqrt(), 0.221157, -0.147981, -2.071190, 4.434685, -2.706056]);
        let (an1, phi, first) = if n > 5 {
            let an1 = poly([mn1 / mm.sqrt(), 0.042981, -0.293762, -1.752461, 5.682633, -3.582633]);
            (an1, (mm - 2.0 * mn * mn - 2.0 * mn1 * mn1) / (1.0 - 2.0 * an * an - 2.0 * an1 * an1), 2)
        } else {
            (0.0, (mm - 2.0 * mn * mn) / (1.0 - 2.0 * an * an), 1)
        };
        let a = (0..n / 2)
            .map(|i| match i {
                0 => an,
                1 if first == 2 => an1,
                _ => -m(i) / phi.sqrt(), // m(i) < 0 in the lower half: a of the upper mirror
            })
            .collect();
        Some(Coefficients { n, a })
    }

    /// The sample size these are for.
    pub fn n(&self) -> usize {
        self.n
    }

    /// W of `sorted` (ascending, of the size these were made for); `None` when every value is
    /// the same (W is then undefined) or one is not finite.
    pub fn w(&self, sorted: &[f64]) -> Option<f64> {
        let n = sorted.len();
        if n != self.n || sorted.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let ss: f64 = sorted.iter().map(|v| (v - mean) * (v - mean)).sum();
        if ss <= 0.0 || sorted[n - 1] - sorted[0] <= f64::EPSILON * sorted[n - 1].abs().max(1.0) {
            return None;
        }
        let numerator: f64 =
            self.a.iter().enumerate().map(|(i, a)| a * (sorted[n - 1 - i] - sorted[i])).sum();
        Some((numerator * numerator / ss).min(1.0))
    }
}

/// W of `x` (3 to [`MAX_N`] values, in any order); `None` outside that range or when every
/// value is the same (W is then undefined). `scratch` is reused between calls.
pub fn w(x: &[f64], scratch: &mut Vec<f64>) -> Option<f64> {
    let coefficients = Coefficients::new(x.len())?;
    scratch.clear();
    scratch.extend_from_slice(x);
    scratch.sort_by(f64::total_cmp);
    coefficients.w(scratch)
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
fn norm_ppf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    const LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quantiles_are_the_normal_ones() {
        for (p, z) in
            [(0.5, 0.0), (0.975, 1.959963984540054), (0.01, -2.326347874040841), (0.999, 3.090232306167813)]
        {
            assert!((norm_ppf(p) - z).abs() < 1e-8, "{p}: {}", norm_ppf(p));
        }
    }

    #[test]
    fn degenerate_series_have_no_w() {
        let mut s = Vec::new();
        assert_eq!(w(&[1.0, 2.0], &mut s), None);
        assert_eq!(w(&[3.0; 10], &mut s), None);
        assert_eq!(w(&[1.0, f64::NAN, 2.0], &mut s), None);
        assert_eq!(w(&vec![1.0; 5001], &mut s), None);
    }

    /// Golden values: `scipy.stats.shapiro(x).statistic`, scipy 1.14.1 (numpy 2.1.3, CPython
    /// 3.11), computed once on 2026-12-05 for the series below (the same formulas in Python).
    #[test]
    fn w_matches_scipy() {
        fn lin(n: usize) -> Vec<f64> {
            (0..n).map(|i| ((i * 7919) % 1000) as f64 / 10.0).collect()
        }
        fn cube(n: usize) -> Vec<f64> {
            (0..n).map(|i| (((i * 7919) % 1000) as f64 / 1000.0).powi(3)).collect()
        }
        fn normal(n: usize) -> Vec<f64> {
            let mut s: u64 = 12345;
            (0..n)
                .map(|_| {
                    let mut t = 0.0;
                    for _ in 0..12 {
                        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        t += (s >> 11) as f64 / (1u64 << 53) as f64;
                    }
                    t - 6.0
                })
                .collect()
        }
        let golden: [(&str, usize, f64); 30] = [
            ("lin", 3, 0.8155460464565336),
            ("lin", 4, 0.7708601804472401),
            ("lin", 5, 0.7798507256625131),
            ("lin", 6, 0.8172535001054162),
            ("lin", 7, 0.8672353858277376),
            ("lin", 11, 0.9803686847971588),
            ("lin", 20, 0.9488969857494868),
            ("lin", 50, 0.9526467640358666),
            ("lin", 200, 0.9524275655918067),
            ("lin", 1000, 0.9548090258354325),
            ("cube", 3, 0.9183649365026545),
            ("cube", 4, 0.9522888460574338),
            ("cube", 5, 0.98876245554244),
            ("cube", 6, 0.9958683835608922),
            ("cube", 7, 0.9781467510407615),
            ("cube", 11, 0.8586880182989867),
            ("cube", 20, 0.8787308364221692),
            ("cube", 50, 0.8157411768517182),
            ("cube", 200, 0.8226003778692011),
            ("cube", 1000, 0.8238827382894279),
            ("normal", 3, 0.9920478746142166),
            ("normal", 4, 0.8942758538649441),
            ("normal", 5, 0.914715167144286),
            ("normal", 6, 0.9150488943462066),
            ("normal", 7, 0.8951733011811196),
            ("normal", 11, 0.9535434569898488),
            ("normal", 20, 0.9719162642963987),
            ("normal", 50, 0.9768600683142844),
            ("normal", 200, 0.9940315990823461),
            ("normal", 1000, 0.9982584027864893),
        ];
        let mut s = Vec::new();
        for (name, n, want) in golden {
            let x = match name {
                "lin" => lin(n),
                "cube" => cube(n),
                _ => normal(n),
            };
            let got = w(&x, &mut s).unwrap();
            assert!((got - want).abs() < 1e-6, "{name} n={n}: {got} vs scipy {want}");
        }
    }
}
