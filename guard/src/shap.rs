//! KernelSHAP (Lundberg & Lee, NeurIPS 2017) inside the enclave (guard part 2): Shapley values
//! of one input row, with the missing features' values taken from the manifest's background
//! rows, estimated by a weighted linear regression over feature coalitions.
//!
//! The coalitions follow the scheme the `shap` package's `KernelExplainer` uses (so that the
//! two agree exactly when every coalition fits in the cap): subset sizes are enumerated whole,
//! smallest and largest first, while the cap covers them at their Shapley-kernel weight; the
//! rest of the cap is sampled by that kernel, each sample paired with its complement, repeats
//! adding weight instead of evaluations. The regression eliminates one feature's value through
//! the efficiency constraint, so attributions always sum to f(x) − E[f(background)].
//! Features whose value equals every background row's get 0 and take no part, as in `shap`.
//!
//! The model is the caller's: a closure evaluating a batch of rows. The sampling is seeded by
//! the caller, so one input always gets one explanation.

/// What an explanation says, per model output value (`outputs` of them per row).
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// E[f(background)], per output.
    pub base: Vec<f64>,
    /// f(x), per output.
    pub value: Vec<f64>,
    /// Per output, one attribution per feature.
    pub attributions: Vec<Vec<f64>>,
    /// Model evaluations (rows) spent.
    pub evaluations: u64,
    /// Coalitions evaluated, and whether they were all of them (the values are then exact).
    pub coalitions: usize,
    pub exact: bool,
}

/// Why an explanation failed.
#[derive(Debug, thiserror::Error)]
pub enum ShapError<E> {
    #[error("the input has {got} features, the background {want}")]
    Features { got: usize, want: usize },
    #[error("the model returned {got} values for {rows} rows")]
    Outputs { got: usize, rows: usize },
    /// The caller's evaluation failed (or its deadline passed).
    #[error(transparent)]
    Model(E),
}

/// The coalitions one explanation evaluates: masks over the varying features, with weights.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Indices of the features that vary against the background.
    varying: Vec<usize>,
    masks: Vec<Vec<bool>>,
    weights: Vec<f64>,
    exact: bool,
    background_rows: usize,
}

impl Plan {
    /// Coalitions for `x` against `background` (rows of `x.len()` features), at most
    /// `max_coalitions`, sampled from `seed` past what can be enumerated.
    pub fn new(x: &[f32], background: &[Vec<f64>], max_coalitions: usize, seed: u64) -> Self {
        let varying: Vec<usize> = (0..x.len())
            .filter(|&j| {
                background.iter().any(|b| {
                    let (a, b) = (f64::from(x[j]), b[j]);
                    // numpy.isclose's default tolerances, as `shap` compares.
                    (a - b).abs() > 1e-8 + 1e-5 * b.abs()
                })
            })
            .collect();
        let m = varying.len();
        let mut plan = Plan {
            varying,
            masks: Vec::new(),
            weights: Vec::new(),
            exact: true,
            background_rows: background.len(),
        };
        if m < 2 {
            return plan;
        }
        // The Shapley kernel's weight of each subset size, a size and its complement's together.
        // Sizes s and m − s are one entry (s ≤ ⌈(m−1)/2⌉); `paired` of them have two sides.
        let sizes = (m - 1).div_ceil(2);
        let paired = (m - 1) / 2;
        let mut kernel: Vec<f64> =
            (1..=sizes).map(|s| (m as f64 - 1.0) / (s as f64 * (m - s) as f64)).collect();
        for w in kernel.iter_mut().take(paired) {
            *w *= 2.0;
        }
        let total: f64 = kernel.iter().sum();
        kernel.iter_mut().for_each(|w| *w /= total);

        let mut left = max_coalitions as f64;
        let mut remaining = kernel.clone();
        let mut full = 0;
        for s in 1..=sizes {
            let mut subsets = binomial(m, s);
            if s <= paired {
                subsets *= 2.0;
            }
            if left * remaining[s - 1] / subsets < 1.0 - 1e-8 {
                break;
            }
            full += 1;
            left -= subsets;
            if remaining[s - 1] < 1.0 {
                let r = 1.0 - remaining[s - 1];
                remaining.iter_mut().for_each(|w| *w /= r);
            }
            let mut w = kernel[s - 1] / binomial(m, s);
            if s <= paired {
                w /= 2.0;
            }
            for_each_combination(m, s, |chosen| {
                let mask: Vec<bool> = (0..m).map(|j| chosen.contains(&j)).collect();
                let complement: Vec<bool> = mask.iter().map(|b| !b).collect();
                plan.masks.push(mask);
                plan.weights.push(w);
                if s <= paired {
                    plan.masks.push(complement);
                    plan.weights.push(w);
                }
            });
        }
        if full == sizes {
            return plan;
        }
        plan.exact = false;
        let fixed = plan.masks.len();
        let mut samples_left = max_coalitions.saturating_sub(fixed);
        let mut dist: Vec<f64> = kernel.clone();
        for w in dist.iter_mut().take(paired) {
            *w /= 2.0;
        }
        let dist = &dist[full..];
        let dist_total: f64 = dist.iter().sum();
        let mut rng = SplitMix(seed);
        let mut seen = std::collections::HashMap::<Vec<bool>, usize>::new();
        let mut draws = 4 * samples_left;
        let mut order: Vec<usize> = (0..m).collect();
        while samples_left > 0 && draws > 0 {
            draws -= 1;
            let mut u = rng.unit() * dist_total;
            let mut k = 0;
            while k + 1 < dist.len() && u >= dist[k] {
                u -= dist[k];
                k += 1;
            }
            let s = k + full + 1;
            // The first `s` of a random permutation (partial Fisher–Yates).
            for i in 0..s {
                let j = i + (rng.next() % (m - i) as u64) as usize;
                order.swap(i, j);
            }
            let mut mask = vec![false; m];
            order[..s].iter().for_each(|&j| mask[j] = true);
            let at = match seen.get(&mask) {
                Some(&at) => {
                    plan.weights[at] += 1.0;
                    Some(at)
                }
                None => {
                    seen.insert(mask.clone(), plan.masks.len());
                    plan.masks.push(mask.clone());
                    plan.weights.push(1.0);
                    samples_left -= 1;
                    None
                }
            };
            if samples_left > 0 && s <= paired {
                match at {
                    Some(at) => plan.weights[at + 1] += 1.0,
                    None => {
                        plan.masks.push(mask.iter().map(|b| !b).collect());
                        plan.weights.push(1.0);
                        samples_left -= 1;
                    }
                }
            }
        }
        // The sampled weights share what the enumerated sizes left of the kernel.
        let left_weight: f64 = kernel[full..].iter().sum();
        let sampled: f64 = plan.weights[fixed..].iter().sum();
        if sampled > 0.0 {
            plan.weights[fixed..].iter_mut().for_each(|w| *w *= left_weight / sampled);
        }
        plan
    }

    /// Model evaluations (rows) the explanation costs: x once, the background once (the base
    /// value), and the background once per coalition.
    pub fn evaluations(&self) -> u64 {
        1 + self.background_rows as u64 * (1 + self.masks.len() as u64)
    }

    pub fn coalitions(&self) -> usize {
        self.masks.len()
    }

    /// Evaluates the plan with `eval` (rows of `x.len()` features in, `outputs` values per row
    /// out), at most `chunk_rows` rows per call.
    pub fn explain<E>(
        &self,
        x: &[f32],
        background: &[Vec<f64>],
        chunk_rows: usize,
        mut eval: impl FnMut(&[f32], usize) -> Result<Vec<f32>, E>,
    ) -> Result<Explanation, ShapError<E>> {
        let d = x.len();
        if let Some(b) = background.iter().find(|b| b.len() != d) {
            return Err(ShapError::Features { got: d, want: b.len() });
        }
        let n = background.len();
        // Every evaluation in pieces of at most `chunk_rows` rows (1 for a model without a
        // batch dimension).
        let chunk_rows = chunk_rows.max(1);
        let mut run = |rows: &[f32]| -> Result<Vec<f32>, ShapError<E>> {
            let mut out = Vec::new();
            for piece in rows.chunks(chunk_rows * d.max(1)) {
                let count = piece.len() / d.max(1);
                let got = eval(piece, count).map_err(ShapError::Model)?;
                if count == 0 || got.is_empty() || got.len() % count != 0 {
                    return Err(ShapError::Outputs { got: got.len(), rows: count });
                }
                out.extend(got);
            }
            Ok(out)
        };
        let value: Vec<f64> = run(x)?.into_iter().map(f64::from).collect();
        let k = value.len();
        let bg: Vec<f32> = background.iter().flatten().map(|&v| v as f32).collect();
        let base = mean_rows(&run(&bg)?, n, k)?;
        let mut attributions = vec![vec![0.0; d]; k];
        let evaluations = self.evaluations();
        let done = |attributions| Explanation {
            base: base.clone(),
            value: value.clone(),
            attributions,
            evaluations,
            coalitions: self.masks.len(),
            exact: self.exact,
        };
        match self.varying.len() {
            0 => return Ok(done(attributions)),
            1 => {
                for (o, a) in attributions.iter_mut().enumerate() {
                    a[self.varying[0]] = value[o] - base[o];
                }
                return Ok(done(attributions));
            }
            _ => {}
        }
        // E[f] per coalition: the background with the coalition's features from x.
        let per_chunk = (chunk_rows / n.max(1)).max(1);
        let mut ey = Vec::with_capacity(self.masks.len() * k);
        let mut rows = Vec::with_capacity(per_chunk * n * d);
        for masks in self.masks.chunks(per_chunk) {
            rows.clear();
            for mask in masks {
                let start = rows.len();
                rows.extend_from_slice(&bg);
                for r in 0..n {
                    for (&on, &j) in mask.iter().zip(&self.varying) {
                        if on {
                            rows[start + r * d + j] = x[j];
                        }
                    }
                }
            }
            let out = run(&rows)?;
            if out.len() != masks.len() * n * k {
                return Err(ShapError::Outputs { got: out.len(), rows: masks.len() * n });
            }
            for c in out.chunks_exact(n * k) {
                ey.extend(mean_rows(c, n, k)?);
            }
        }
        // Weighted least squares with Σφ = f(x) − base: the last varying feature is eliminated.
        let m = self.varying.len();
        let last = m - 1;
        for o in 0..k {
            let total = value[o] - base[o];
            let mut ata = vec![vec![0.0; last]; last];
            let mut atb = vec![0.0; last];
            for (c, mask) in self.masks.iter().enumerate() {
                let z_last = f64::from(u8::from(mask[last]));
                let y = ey[c * k + o] - base[o] - z_last * total;
                let row: Vec<f64> = (0..last).map(|j| f64::from(u8::from(mask[j])) - z_last).collect();
                let w = self.weights[c];
                for i in 0..last {
                    if row[i] == 0.0 {
                        continue;
                    }
                    atb[i] += w * row[i] * y;
                    for j in 0..last {
                        ata[i][j] += w * row[i] * row[j];
                    }
                }
            }
            let phi = solve(ata, atb);
            let a = &mut attributions[o];
            for (j, &p) in phi.iter().enumerate() {
                a[self.varying[j]] = p;
            }
            a[self.varying[last]] = total - phi.iter().sum::<f64>();
        }
        Ok(done(attributions))
    }
}

fn mean_rows<E>(out: &[f32], n: usize, k: usize) -> Result<Vec<f64>, ShapError<E>> {
    if out.len() != n * k {
        return Err(ShapError::Outputs { got: out.len(), rows: n });
    }
    let mut mean = vec![0.0; k];
    for row in out.chunks_exact(k) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    Ok(mean)
}

/// `a x = b` by Gaussian elimination with partial pivoting; a singular direction (a feature no
/// coalition separated) gets 0.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    let scale = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    let mut singular = vec![false; n];
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap_or(col);
        if a[pivot][col].abs() <= 1e-12 * scale {
            singular[col] = true;
            continue;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (k, row) in lower.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            if f != 0.0 {
                for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * p;
                }
                b[col + 1 + k] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        if singular[i] {
            continue;
        }
        let s: f64 = (i + 1..n).map(|j| a[i][j] * x[j]).sum();
        x[i] = (b[i] - s) / a[i][i];
    }
    x
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Calls `f` with each `k`-subset of `0..n` in lexicographic order (as `itertools.combinations`).
fn for_each_combination(n: usize, k: usize, mut f: impl FnMut(&[usize])) {
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        f(&idx);
        let Some(i) = (0..k).rev().find(|&i| idx[i] != i + n - k) else { return };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

/// SplitMix64: small, seedable, good enough to sample coalitions (not a secret).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A nonlinear model of 4 features with two outputs.
    fn model(rows: &[f32], count: usize) -> Result<Vec<f32>, std::convert::Infallible> {
        Ok(rows
            .chunks_exact(rows.len() / count)
            .flat_map(|r| [r[0] * r[1] + r[2].sin() - 0.5 * r[3], (r[0] - r[3]).tanh() * r[2]])
            .collect())
    }

    /// Exact Shapley values by the definition: every coalition, weighted |S|!(m−|S|−1)!/m!.
    #[allow(clippy::needless_range_loop)] // the definition's indices, as written
    fn brute_force(x: &[f32], bg: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let d = x.len();
        let v = |set: u32| -> Vec<f64> {
            let rows: Vec<f32> = bg
                .iter()
                .flat_map(|b| (0..d).map(move |j| if set >> j & 1 == 1 { x[j] } else { b[j] as f32 }))
                .collect();
            let out = model(&rows, bg.len()).unwrap();
            (0..2)
                .map(|o| out.iter().skip(o).step_by(2).map(|&v| f64::from(v)).sum::<f64>() / bg.len() as f64)
                .collect()
        };
        let fact = |n: u32| (1..=n).product::<u32>() as f64;
        let mut phi = vec![vec![0.0; d]; 2];
        for j in 0..d {
            for set in 0..(1u32 << d) {
                if set >> j & 1 == 1 {
                    continue;
                }
                let s = set.count_ones();
                let w = fact(s) * fact(d as u32 - s - 1) / fact(d as u32);
                let (with, without) = (v(set | 1 << j), v(set));
                for o in 0..2 {
                    phi[o][j] += w * (with[o] - without[o]);
                }
            }
        }
        phi
    }

    fn background() -> Vec<Vec<f64>> {
        vec![vec![0.1, -0.3, 0.5, 1.0], vec![-0.7, 0.2, 0.0, 0.4], vec![0.3, 0.9, -1.2, -0.2]]
    }

    #[test]
    fn all_coalitions_give_the_exact_shapley_values() {
        let x = [1.5f32, -0.5, 0.8, 2.0];
        let bg = background();
        let plan = Plan::new(&x, &bg, 2048, 7);
        assert!(plan.exact);
        assert_eq!(plan.coalitions(), 14); // 2⁴ − 2
        assert_eq!(plan.evaluations(), 1 + 3 * 15);
        let e = plan.explain(&x, &bg, 7, model).unwrap();
        // A model without a batch dimension: one row per run, the same explanation.
        assert_eq!(plan.explain(&x, &bg, 1, model).unwrap(), e);
        let want = brute_force(&x, &bg);
        for o in 0..2 {
            for j in 0..4 {
                assert!(
                    (e.attributions[o][j] - want[o][j]).abs() < 1e-5,
                    "{o} {j}: {:?} vs {want:?}",
                    e.attributions
                );
            }
            let sum: f64 = e.attributions[o].iter().sum();
            assert!((sum - (e.value[o] - e.base[o])).abs() < 1e-9);
        }
    }

    #[test]
    fn sampling_keeps_additivity_and_approaches_the_exact_values() {
        // 12 features: 4,094 coalitions, capped at 600.
        let d = 12;
        let x: Vec<f32> = (0..d).map(|j| (j as f32 * 0.37).sin() * 2.0).collect();
        let bg: Vec<Vec<f64>> =
            (0..4).map(|r| (0..d).map(|j| ((r * d + j) as f64 * 0.61).cos()).collect()).collect();
        let linear = |rows: &[f32], count: usize| -> Result<Vec<f32>, std::convert::Infallible> {
            Ok(rows
                .chunks_exact(rows.len() / count)
                .map(|r| r.iter().enumerate().map(|(j, v)| (j as f32 + 1.0) * v).sum())
                .collect())
        };
        let plan = Plan::new(&x, &bg, 600, 1);
        assert!(!plan.exact && plan.coalitions() <= 600);
        let e = plan.explain(&x, &bg, 1000, linear).unwrap();
        let sum: f64 = e.attributions[0].iter().sum();
        assert!((sum - (e.value[0] - e.base[0])).abs() < 1e-6);
        // A linear model's Shapley values: w_j (x_j − E[b_j]), which the regression recovers.
        for j in 0..d {
            let mean = bg.iter().map(|b| b[j]).sum::<f64>() / bg.len() as f64;
            let want = (j as f64 + 1.0) * (f64::from(x[j]) - mean);
            assert!((e.attributions[0][j] - want).abs() < 1e-3, "{j}: {} vs {want}", e.attributions[0][j]);
        }
        // One seed, one explanation.
        assert_eq!(Plan::new(&x, &bg, 600, 1).explain(&x, &bg, 1000, linear).unwrap(), e);
    }

    #[test]
    fn features_equal_to_the_background_get_nothing() {
        let bg = vec![vec![1.0, 2.0, 3.0, 4.0]];
        let x = [1.0f32, 5.0, 3.0, 4.0];
        let e = Plan::new(&x, &bg, 100, 0).explain(&x, &bg, 100, model).unwrap();
        assert_eq!(e.coalitions, 0);
        assert_eq!(e.attributions[0][0], 0.0);
        assert!((e.attributions[0][1] - (e.value[0] - e.base[0])).abs() < 1e-12);
    }
}
