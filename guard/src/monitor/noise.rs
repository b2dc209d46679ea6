//! Exact discrete noise for released counts: the discrete Laplace and discrete Gaussian samplers
//! of Canonne, Kamath and Steinke ("The Discrete Gaussian for Differential Privacy", NeurIPS
//! 2020, algorithms 1–3). Integer and rational arithmetic only, so the released value is an
//! integer whose distribution is exactly the stated one: floating-point Laplace noise leaks the
//! true value through its low bits (Mironov, CCS 2012), and sampling it by inversion is not exact.
//!
//! The random bits come from the operating system ([`OsBits`], `getrandom`); tests use a seeded
//! stream ([`SplitMix`]).

/// A source of uniform 64-bit words.
pub trait Bits {
    fn next_u64(&mut self) -> u64;
}

/// Words from the operating system's generator, fetched 64 at a time.
pub struct OsBits {
    buf: [u64; 64],
    next: usize,
}

/// Never the buffered words: they are the next noise.
impl core::fmt::Debug for OsBits {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OsBits").finish_non_exhaustive()
    }
}

impl OsBits {
    pub fn new() -> Self {
        OsBits { buf: [0; 64], next: 64 }
    }
}

impl Default for OsBits {
    fn default() -> Self {
        Self::new()
    }
}

impl Bits for OsBits {
    fn next_u64(&mut self) -> u64 {
        if self.next == self.buf.len() {
            let mut bytes = [0u8; 512];
            // No randomness means no release: a silent fallback would be a weaker mechanism.
            #[allow(clippy::expect_used)]
            getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
            for (w, c) in self.buf.iter_mut().zip(bytes.chunks_exact(8)) {
                *w = u64::from_le_bytes(c.try_into().unwrap_or_default());
            }
            self.next = 0;
        }
        self.next += 1;
        self.buf[self.next - 1]
    }
}

/// SplitMix64: a seeded stream, for tests and for the reproducible calibration simulations
/// (never for released noise).
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl Bits for SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl SplitMix {
    /// Uniform in [0, 1) (53 bits).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Uniform in `[0, n)`, `n ≥ 1`, by rejection (no modulo bias).
fn below(bits: &mut impl Bits, n: u128) -> u128 {
    debug_assert!(n > 0);
    if n <= u128::from(u64::MAX) {
        let n = n as u64;
        let zone = n.wrapping_neg() % n; // 2^64 mod n: the biased low words
        loop {
            let r = bits.next_u64();
            if r >= zone {
                return u128::from(r % n);
            }
        }
    }
    let zone = n.wrapping_neg() % n;
    loop {
        let r = (u128::from(bits.next_u64()) << 64) | u128::from(bits.next_u64());
        if r >= zone {
            return r % n;
        }
    }
}

/// Bernoulli(num / den), `num ≤ den`.
fn bernoulli(bits: &mut impl Bits, num: u128, den: u128) -> bool {
    below(bits, den) < num
}

/// Bernoulli(exp(−num/den)) (CKS algorithm 1).
fn bernoulli_exp(bits: &mut impl Bits, num: u128, den: u128) -> bool {
    let mut num = num;
    // exp(−γ) = exp(−1)^⌊γ⌋ · exp(−(γ − ⌊γ⌋)).
    while num > den {
        if !bernoulli_exp(bits, 1, 1) {
            return false;
        }
        num -= den;
    }
    let mut k: u128 = 1;
    while bernoulli(bits, num, den * k) {
        k += 1;
    }
    k % 2 == 1
}

/// The discrete Laplace distribution of scale `num/den`, ∝ exp(−|x|·den/num) (CKS algorithm 2,
/// with t = num and s = den).
pub fn discrete_laplace(bits: &mut impl Bits, num: u128, den: u128) -> i64 {
    let (t, s) = (num, den);
    loop {
        let u = below(bits, t);
        if !bernoulli_exp(bits, u, t) {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp(bits, 1, 1) {
            v += 1;
        }
        let y = ((u + t * v) / s) as i64;
        let negative = bernoulli(bits, 1, 2);
        if negative && y == 0 {
            continue;
        }
        return if negative { -y } else { y };
    }
}

/// The discrete Gaussian ∝ exp(−x²/(2σ²)) with σ² = num/den (CKS algorithm 3).
pub fn discrete_gaussian(bits: &mut impl Bits, num: u128, den: u128) -> i64 {
    let t = integer_sqrt(num / den) + 1;
    loop {
        let y = discrete_laplace(bits, t, 1); // scale t
        // Accept with exp(−(|y| − σ²/t)² / (2σ²)) = exp(−(|y|·den·t − num)² / (2·num·den·t²)).
        let a = (u128::from(y.unsigned_abs()) * den * t).abs_diff(num);
        if bernoulli_exp(bits, a * a, 2 * num * den * t * t) {
            return y;
        }
    }
}

fn integer_sqrt(n: u128) -> u128 {
    let mut x = (n as f64).sqrt() as u128;
    while x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x
}

/// ε as a rational at this resolution, rounded down (less ε is more noise: never weaker).
pub const EPSILON_DENOMINATOR: u128 = 10_000;

/// The noise one window's counts get: its mechanism at ε for `sensitivity` (the counts one row
/// changes, each by 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Noise {
    /// Scale `num/den` = sensitivity / ε (L1): ε-differential privacy.
    Laplace { num: u128, den: u128 },
    /// σ² = sensitivity / ε² (L2² = sensitivity): ρ = ε²/2 zero-concentrated DP, the ρ that
    /// ε-DP itself implies, so the two mechanisms are accounted alike.
    Gaussian { num: u128, den: u128 },
}

impl Noise {
    pub fn new(mechanism: crate::manifest::Mechanism, epsilon: f64, sensitivity: u64) -> Self {
        let en = ((epsilon * EPSILON_DENOMINATOR as f64).floor() as u128).max(1);
        let k = u128::from(sensitivity.max(1));
        match mechanism {
            crate::manifest::Mechanism::DiscreteLaplace => {
                Noise::Laplace { num: k * EPSILON_DENOMINATOR, den: en }
            }
            crate::manifest::Mechanism::DiscreteGaussian => {
                Noise::Gaussian { num: k * EPSILON_DENOMINATOR * EPSILON_DENOMINATOR, den: en * en }
            }
        }
    }

    pub fn sample(&self, bits: &mut impl Bits) -> i64 {
        match *self {
            Noise::Laplace { num, den } => discrete_laplace(bits, num, den),
            Noise::Gaussian { num, den } => discrete_gaussian(bits, num, den),
        }
    }

    /// The Laplace scale b, or the Gaussian σ.
    pub fn scale(&self) -> f64 {
        match *self {
            Noise::Laplace { num, den } => num as f64 / den as f64,
            Noise::Gaussian { num, den } => (num as f64 / den as f64).sqrt(),
        }
    }

    /// The noise's standard deviation.
    pub fn std_dev(&self) -> f64 {
        match *self {
            // Var of the discrete Laplace with q = exp(−1/b): 2q/(1−q)².
            Noise::Laplace { .. } => {
                let q = (-1.0 / self.scale()).exp();
                (2.0 * q).sqrt() / (1.0 - q)
            }
            Noise::Gaussian { .. } => self.scale(),
        }
    }

    /// A fast draw of (nearly) the same distribution, for calibration simulations only: the
    /// difference of two geometric variables by inversion, or a rounded normal.
    pub fn simulate(&self, rng: &mut SplitMix) -> f64 {
        match *self {
            Noise::Laplace { .. } => {
                // Geometric on {0, 1, …} with P(k) ∝ q^k, q = exp(−1/b): ⌊ln U / ln q⌋.
                let ln_q = -1.0 / self.scale();
                let mut geo = || ((1.0 - rng.unit()).ln() / ln_q).floor();
                geo() - geo()
            }
            Noise::Gaussian { .. } => (normal(rng) * self.scale()).round(),
        }
    }
}

/// A standard normal (Box–Muller), for simulations.
pub fn normal(rng: &mut SplitMix) -> f64 {
    let u = 1.0 - rng.unit();
    let v = rng.unit();
    (-2.0 * u.ln()).sqrt() * (core::f64::consts::TAU * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(draws: &[i64]) -> (f64, f64) {
        let n = draws.len() as f64;
        let mean = draws.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = draws.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    #[test]
    fn discrete_laplace_has_its_stated_distribution() {
        // Scale 2 (2/1): P(0) = (1−q)/(1+q), q = e^{−1/2}; Var = 2q/(1−q)².
        let mut bits = SplitMix(7);
        let draws: Vec<i64> = (0..200_000).map(|_| discrete_laplace(&mut bits, 2, 1)).collect();
        let q = (-0.5f64).exp();
        let (mean, var) = moments(&draws);
        assert!(mean.abs() < 0.03, "mean {mean}");
        let want = 2.0 * q / (1.0 - q).powi(2);
        assert!((var - want).abs() / want < 0.02, "var {var} vs {want}");
        let p0 = draws.iter().filter(|&&x| x == 0).count() as f64 / draws.len() as f64;
        assert!((p0 - (1.0 - q) / (1.0 + q)).abs() < 0.005, "P(0) {p0}");
        // Symmetric: P(1) = P(−1) = P(0)·q.
        let p1 = draws.iter().filter(|&&x| x == 1).count() as f64 / draws.len() as f64;
        let m1 = draws.iter().filter(|&&x| x == -1).count() as f64 / draws.len() as f64;
        assert!((p1 - p0 * q).abs() < 0.005 && (m1 - p0 * q).abs() < 0.005, "{p1} {m1}");
    }

    #[test]
    fn discrete_gaussian_has_its_stated_variance() {
        // σ² = 9/4: the discrete Gaussian's variance is within 1e-6 of σ² for σ ≥ 1.
        let mut bits = SplitMix(11);
        let draws: Vec<i64> = (0..200_000).map(|_| discrete_gaussian(&mut bits, 9, 4)).collect();
        let (mean, var) = moments(&draws);
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 2.25).abs() < 0.05, "var {var}");
    }

    #[test]
    fn noise_follows_epsilon_and_sensitivity() {
        use crate::manifest::Mechanism;
        let n = Noise::new(Mechanism::DiscreteLaplace, 1.0, 32);
        assert_eq!(n.scale(), 32.0);
        let g = Noise::new(Mechanism::DiscreteGaussian, 0.5, 32);
        assert!((g.scale() - (32f64).sqrt() / 0.5).abs() < 1e-9);
        // ε is rounded down (more noise), never up.
        assert!(Noise::new(Mechanism::DiscreteLaplace, 0.123_456, 1).scale() >= 1.0 / 0.123_456);
        let mut bits = SplitMix(3);
        let draws: Vec<i64> = (0..50_000).map(|_| n.sample(&mut bits)).collect();
        let (_, var) = moments(&draws);
        let want = n.std_dev().powi(2);
        assert!((var - want).abs() / want < 0.05, "{var} vs {want}");
        let mut rng = SplitMix(5);
        let sim: Vec<i64> = (0..50_000).map(|_| n.simulate(&mut rng) as i64).collect();
        let (_, sv) = moments(&sim);
        assert!((sv - want).abs() / want < 0.05, "simulated {sv} vs {want}");
    }

    #[test]
    fn os_bits_differ() {
        let mut a = OsBits::new();
        let words: Vec<u64> = (0..130).map(|_| a.next_u64()).collect();
        let mut sorted = words.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), words.len());
    }
}
