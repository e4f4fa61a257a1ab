//! Picks the next token from the logits: penalties, top-k, top-p, min-p, temperature.

/// Sampling settings, with llama.cpp's defaults for the fields a request leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 (or below) is greedy: always the most likely token, fully deterministic.
    pub temperature: f64,
    /// 0 keeps every token.
    pub top_k: usize,
    pub top_p: f64,
    pub min_p: f64,
    /// 1.0 is off. Applied to the last `repeat_last_n` tokens, prompt included.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

/// A seeded sampler: the same seed and logits give the same tokens.
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = SplitMix64(params.seed);
        Sampler {
            params,
            rng,
            candidates: Vec::new(),
        }
    }

    /// Chooses the next token. `logits` is modified (penalties are applied in place);
    /// `history` is every token so far, prompt included.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_repeat_penalty(logits, history);
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }

        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(logits.iter().enumerate().map(|(id, &l)| (id as u32, l)));
        let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        let top_k = self.params.top_k;
        if top_k > 0 && top_k < candidates.len() {
            candidates.select_nth_unstable_by(top_k - 1, by_logit_desc);
            candidates.truncate(top_k);
        }
        candidates.sort_unstable_by(by_logit_desc);

        // top-p and min-p judge the untempered distribution, as llama.cpp's chain does.
        let probs = softmax(candidates.iter().map(|c| c.1), 1.0);
        let mut keep = candidates.len();
        if self.params.top_p < 1.0 {
            let mut cumulative = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cumulative += p;
                if cumulative >= self.params.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if self.params.min_p > 0.0 {
            let threshold = probs[0] * self.params.min_p;
            keep = keep.min(probs.iter().take_while(|&&p| p >= threshold).count().max(1));
        }
        candidates.truncate(keep.max(1));

        let probs = softmax(candidates.iter().map(|c| c.1), self.params.temperature);
        let mut target = self.rng.next_f64();
        for (candidate, p) in candidates.iter().zip(&probs) {
            target -= p;
            if target <= 0.0 {
                return candidate.0;
            }
        }
        candidates.last().map_or(0, |c| c.0)
    }

    fn apply_repeat_penalty(&self, logits: &mut [f32], history: &[u32]) {
        let penalty = self.params.repeat_penalty;
        if penalty == 1.0 || self.params.repeat_last_n == 0 {
            return;
        }
        let start = history.len().saturating_sub(self.params.repeat_last_n);
        let mut seen = history[start..].to_vec();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if let Some(logit) = logits.get_mut(id as usize) {
                *logit = if *logit > 0.0 {
                    *logit / penalty
                } else {
                    *logit * penalty
                };
            }
        }
    }
}

/// What OpenAI's `logprobs` report of one position, from the model's logits before
/// any sampling filter: `token`'s log probability and the `top` most likely tokens
/// with theirs, most likely first (ties: the lower id).
pub fn logprobs(logits: &[f32], token: u32, top: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_sum = max + sum.ln() as f32;
    let logprob = |id: u32| logits[id as usize] - log_sum;
    let mut best: Vec<u32> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (id, &l) in logits.iter().enumerate() {
            if best.len() == top && l <= logits[best[top - 1] as usize] {
                continue;
            }
            let at = best.partition_point(|&b| logits[b as usize] >= l);
            best.insert(at, id as u32);
            best.truncate(top);
        }
    }
    (
        logprob(token),
        best.into_iter().map(|id| (id, logprob(id))).collect(),
    )
}

/// The index of the largest logit; the first one wins a tie.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn softmax(logits: impl Iterator<Item = f32> + Clone, temperature: f64) -> Vec<f64> {
    let max = logits.clone().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits
        .map(|l| ((l as f64 - max) / temperature).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// A small, fast PRNG; statistical quality is ample for sampling and it keeps seeded
/// runs reproducible across platforms without another dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64) -> SamplingParams {
        SamplingParams {
            temperature,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn logprobs_are_the_log_softmax_with_the_best_first() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5];
        let (chosen, top) = logprobs(&logits, 4, 3);
        let total: f32 = logits
            .iter()
            .map(|&l| logprobs(&logits, 0, 0).0 - logits[0] + l)
            .map(f32::exp)
            .sum();
        assert!((total - 1.0).abs() < 1e-5, "probabilities sum to {total}");
        let exact = 0.5 - logits.iter().map(|&l| l.exp()).sum::<f32>().ln();
        assert!((chosen - exact).abs() < 1e-5, "{chosen} vs {exact}");
        let ids: Vec<u32> = top.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 3, 0], "ties keep the lower id first");
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(logprobs(&logits, 1, 0).1.is_empty());
        assert_eq!(logprobs(&logits, 1, 9).1.len(), logits.len());
    }

    #[test]
    fn zero_temperature_is_argmax() {
        let mut sampler = Sampler::new(params(0.0));
        assert_eq!(sampler.sample(&mut [0.1, 3.0, 2.9, -1.0], &[]), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits = [1.0f32, 1.1, 0.9, 1.05, 0.95];
        let run = |seed| {
            let mut sampler = Sampler::new(SamplingParams {
                seed,
                temperature: 1.0,
                min_p: 0.0,
                ..SamplingParams::default()
            });
            (0..20)
                .map(|_| sampler.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut sampler = Sampler::new(SamplingParams {
            top_k: 1,
            temperature: 5.0,
            ..SamplingParams::default()
        });
        for _ in 0..10 {
            assert_eq!(sampler.sample(&mut [0.0, 0.5, 0.4], &[]), 1);
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let mut sampler = Sampler::new(SamplingParams {
            min_p: 0.5,
            top_k: 0,
            top_p: 1.0,
            temperature: 1.0,
            ..SamplingParams::default()
        });
        for _ in 0..50 {
            assert_eq!(sampler.sample(&mut [10.0, 0.0, 0.0], &[]), 0);
        }
    }

    #[test]
    fn repeat_penalty_changes_the_greedy_choice() {
        let mut sampler = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            ..params(0.0)
        });
        assert_eq!(sampler.sample(&mut [3.0, 2.0], &[0]), 1);
    }
}
