//! The worker's CPU engine against candle's path, and its portable kernels against the
//! SIMD ones, on the real model.

use candle_core::Device;
use llm_worker_rbee::cpu::Kernels;
use llm_worker_rbee::model::{self, Engine};
use llm_worker_rbee::sampling::argmax;

use crate::support::model_path;

/// "The capital of France is" in the test model's vocabulary, after BOS.
const PROMPT: &[u32] = &[1, 504, 3575, 282, 4649, 314];
const DECODE_STEPS: usize = 3;

/// The logits after the prompt and after each of a few greedy steps, the steps chosen by
/// `leader` so that every engine sees the same history.
fn run(engine: Engine, leader: Option<&[u32]>) -> (String, Vec<Vec<f32>>, Vec<u32>) {
    let loaded = model::load_with(&model_path(), &Device::Cpu, engine).expect("load");
    let mut model = loaded.model;
    let mut all = vec![model.forward(PROMPT, 0).expect("prompt")];
    let mut chosen = Vec::new();
    for step in 0..DECODE_STEPS {
        let last = all.last().expect("logits");
        let token = leader.map_or_else(|| argmax(last), |l| l[step]);
        chosen.push(token);
        let logits = model
            .forward(&[token], PROMPT.len() + step)
            .expect("decode");
        all.push(logits);
    }
    (model.info.engine, all, chosen)
}

/// Largest difference relative to the spread of the reference logits.
///
/// Engines that differ only in the order of float additions still drift apart by a few
/// percent of that spread: a last-bit difference can flip the rounding of one value when
/// an activation row is quantized to 8 bits, and the flip is as large as the row's
/// largest value / 127. A wrong kernel gives differences of the order of the spread.
pub(crate) fn relative_difference(a: &[f32], b: &[f32]) -> f32 {
    let (lo, hi) = b
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let worst = a
        .iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    worst / (hi - lo)
}

#[test]
fn the_cpu_engine_gives_candles_logits() {
    let (name, candle, steps) = run(Engine::Candle, None);
    assert_eq!(name, "candle");
    let (name, ours, _) = run(Engine::Auto, Some(&steps));
    assert!(
        name.starts_with("cpu-"),
        "the test model runs on the CPU engine, not {name}"
    );
    for (i, (ours, candle)) in ours.iter().zip(&candle).enumerate() {
        assert_eq!(
            argmax(ours),
            argmax(candle),
            "step {i}: the greedy token differs"
        );
        let difference = relative_difference(ours, candle);
        assert!(
            difference < 0.06,
            "step {i}: logits differ by {difference} of their range"
        );
    }
}

#[test]
fn the_portable_fallback_gives_the_same_logits() {
    let (_, fast, steps) = run(Engine::Auto, None);
    let (portable, slow, _) = run(Engine::Cpu(Kernels::Portable), Some(&steps));
    assert_eq!(portable, "cpu-portable");
    for (i, (fast, slow)) in fast.iter().zip(&slow).enumerate() {
        assert_eq!(argmax(fast), argmax(slow), "step {i}");
        let difference = relative_difference(fast, slow);
        assert!(
            difference < 0.06,
            "step {i}: logits differ by {difference} of their range"
        );
    }
}
