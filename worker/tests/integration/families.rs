//! The CPU engine on each model family it runs besides llama, against candle's model of
//! that family: small files with random weights, written here, with every hook of the
//! family present (qwen2's projection biases and NEOX rotation; qwen3's per-head query
//! and key norms and a head width other than `embedding / heads`; phi3's fused
//! projections).

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use llm_worker_rbee::model::{self, Engine};
use llm_worker_rbee::sampling::argmax;

use crate::cpu_engine::relative_difference;

const HIDDEN: usize = 256;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 512;
const LAYERS: usize = 2;
pub(crate) const VOCAB: usize = 512;
const CONTEXT: u32 = 256;
const PROMPT: &[u32] = &[3, 77, 141, 9, 300, 12, 451];
const DECODE_STEPS: usize = 4;

/// Deterministic normal-ish numbers (the sum of uniforms), so every run writes the same
/// file.
pub(crate) struct Noise(pub(crate) u64);

impl Noise {
    fn next(&mut self) -> f32 {
        let mut sum = 0.0;
        for _ in 0..4 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            sum += (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        }
        (sum - 2.0) * 1.7
    }

    fn values(&mut self, count: usize, mean: f32, scale: f32) -> Vec<f32> {
        (0..count).map(|_| mean + scale * self.next()).collect()
    }
}

pub(crate) struct Writer {
    pub(crate) noise: Noise,
    pub(crate) tensors: Vec<(String, QTensor)>,
}

impl Writer {
    pub(crate) fn matrix(&mut self, name: &str, rows: usize, cols: usize) {
        let scale = 1.0 / (cols as f32).sqrt();
        let values = self.noise.values(rows * cols, 0.0, scale);
        let tensor = Tensor::from_vec(values, (rows, cols), &Device::Cpu).expect("tensor");
        let q = QTensor::quantize(&tensor, GgmlDType::Q8_0).expect("quantize");
        self.tensors.push((name.to_owned(), q));
    }

    pub(crate) fn vector(&mut self, name: &str, len: usize, mean: f32, scale: f32) {
        let values = self.noise.values(len, mean, scale);
        let tensor = Tensor::from_vec(values, len, &Device::Cpu).expect("tensor");
        let q = QTensor::quantize(&tensor, GgmlDType::F32).expect("f32");
        self.tensors.push((name.to_owned(), q));
    }
}

/// Writes a random `arch` model to `path`: qwen3 with heads of 128 (4 × 128 = 512 query
/// width for an embedding of 256), the others with heads of 64. Every matrix width is a
/// multiple of 256, so K-quants hold them too.
fn write_model(arch: &str, path: &Path, extra: &[(&str, Value)]) {
    write_model_with(arch, path, extra, None);
}

/// [`write_model`] with llama3's `rope_freqs` tensor when given.
fn write_model_with(arch: &str, path: &Path, extra: &[(&str, Value)], rope_freqs: Option<&[f32]>) {
    let vectors: Vec<(&str, &[f32])> = rope_freqs
        .map(|f| ("rope_freqs.weight", f))
        .into_iter()
        .collect();
    write_model_of(arch, path, extra, &vectors, GgmlDType::Q8_0, &[]);
}

/// [`write_model`] with the f32 `vectors` given (rotary factors), the matrices in
/// `matrix_type` (requantized from Q8_0) and `global` metadata (a tokenizer's
/// `tokenizer.ggml.*` keys) as given. `extra` keys replace the writer's own.
pub(crate) fn write_model_of(
    arch: &str,
    path: &Path,
    extra: &[(&str, Value)],
    vectors: &[(&str, &[f32])],
    matrix_type: GgmlDType,
    global: &[(String, Value)],
) {
    let head_dim = if arch == "qwen3" { 128 } else { HIDDEN / HEADS };
    let (q_dim, kv_dim) = (HEADS * head_dim, KV_HEADS * head_dim);
    let mut w = Writer {
        noise: Noise(0x9e37_79b9_7f4a_7c15),
        tensors: Vec::new(),
    };
    w.matrix("token_embd.weight", VOCAB, HIDDEN);
    for layer in 0..LAYERS {
        let name = |part: &str| format!("blk.{layer}.{part}");
        w.vector(&name("attn_norm.weight"), HIDDEN, 1.0, 0.1);
        if arch == "phi3" {
            w.matrix(&name("attn_qkv.weight"), q_dim + 2 * kv_dim, HIDDEN);
        } else {
            w.matrix(&name("attn_q.weight"), q_dim, HIDDEN);
            w.matrix(&name("attn_k.weight"), kv_dim, HIDDEN);
            w.matrix(&name("attn_v.weight"), kv_dim, HIDDEN);
        }
        if arch == "qwen2" {
            w.vector(&name("attn_q.bias"), q_dim, 0.0, 0.3);
            w.vector(&name("attn_k.bias"), kv_dim, 0.0, 0.3);
            w.vector(&name("attn_v.bias"), kv_dim, 0.0, 0.3);
        }
        if arch == "qwen3" {
            w.vector(&name("attn_q_norm.weight"), head_dim, 1.0, 0.2);
            w.vector(&name("attn_k_norm.weight"), head_dim, 1.0, 0.2);
        }
        w.matrix(&name("attn_output.weight"), HIDDEN, q_dim);
        w.vector(&name("ffn_norm.weight"), HIDDEN, 1.0, 0.1);
        if arch == "phi3" {
            // Gate and up in one tensor, gate first.
            w.matrix(&name("ffn_up.weight"), 2 * FFN, HIDDEN);
        } else {
            w.matrix(&name("ffn_gate.weight"), FFN, HIDDEN);
            w.matrix(&name("ffn_up.weight"), FFN, HIDDEN);
        }
        w.matrix(&name("ffn_down.weight"), HIDDEN, FFN);
    }
    w.vector("output_norm.weight", HIDDEN, 1.0, 0.1);
    for (name, values) in vectors {
        let tensor = Tensor::from_vec(values.to_vec(), values.len(), &Device::Cpu).expect("tensor");
        let q = QTensor::quantize(&tensor, GgmlDType::F32).expect("f32");
        w.tensors.push((name.to_string(), q));
    }
    // qwen2 ties the output to the embedding, as its small models do.
    if arch != "qwen2" {
        w.matrix("output.weight", VOCAB, HIDDEN);
    }
    let key = |name: &str| format!("{arch}.{name}");
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        // candle's qwen3 computes in f16 unless the file says f32.
        ("general.dtype".into(), Value::U32(0)),
        (key("context_length"), Value::U32(CONTEXT)),
        (key("embedding_length"), Value::U32(HIDDEN as u32)),
        (key("block_count"), Value::U32(LAYERS as u32)),
        (key("feed_forward_length"), Value::U32(FFN as u32)),
        (key("attention.head_count"), Value::U32(HEADS as u32)),
        (key("attention.head_count_kv"), Value::U32(KV_HEADS as u32)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
        // candle's phi3 rotates with base 10000 whatever the file says.
        (
            key("rope.freq_base"),
            Value::F32(if arch == "phi3" {
                10_000.0
            } else {
                1_000_000.0
            }),
        ),
        (key("rope.dimension_count"), Value::U32(head_dim as u32)),
    ];
    if arch == "qwen3" {
        metadata.push((key("attention.key_length"), Value::U32(head_dim as u32)));
        metadata.push((key("attention.value_length"), Value::U32(head_dim as u32)));
    }
    for (name, value) in extra {
        metadata.retain(|(known, _)| *known != key(name));
        metadata.push((key(name), value.clone()));
    }
    metadata.extend(global.iter().cloned());
    for (_, tensor) in &mut w.tensors {
        if tensor.dtype() == GgmlDType::Q8_0 && matrix_type != GgmlDType::Q8_0 {
            let values = tensor.dequantize(&Device::Cpu).expect("dequantize");
            *tensor = QTensor::quantize(&values, matrix_type).expect("quantize");
        }
    }
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = w.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::fs::File::create(path).expect("create");
    gguf_file::write(&mut file, &metadata, &tensors).expect("write gguf");
}

/// The logits after the prompt and after each decode step, the steps' tokens chosen by
/// `leader` so that both engines see the same history.
fn run(path: &Path, engine: Engine, leader: Option<&[u32]>) -> (String, Vec<Vec<f32>>, Vec<u32>) {
    let loaded = model::load_with(path, &Device::Cpu, engine).expect("load");
    let mut model = loaded.model;
    let mut all = vec![model.forward(PROMPT, 0).expect("prompt")];
    let mut chosen = Vec::new();
    for step in 0..DECODE_STEPS {
        let token = leader.map_or_else(|| argmax(all.last().expect("logits")), |l| l[step]);
        chosen.push(token);
        all.push(
            model
                .forward(&[token], PROMPT.len() + step)
                .expect("decode"),
        );
    }
    (model.info.engine, all, chosen)
}

fn compare(arch: &str) {
    compare_of(arch, GgmlDType::Q8_0);
}

/// The CPU engine's logits against candle's on a random `arch` model whose matrices are
/// `matrix_type`.
fn compare_of(arch: &str, matrix_type: GgmlDType) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(format!("{arch}.gguf"));
    write_model_of(arch, &path, &[], &[], matrix_type, &[]);
    let (name, candle, steps) = run(&path, Engine::Candle, None);
    assert_eq!(name, "candle");
    let (name, ours, _) = run(&path, Engine::Auto, Some(&steps));
    assert!(name.starts_with("cpu-"), "{arch} runs on {name}");
    for (i, (ours, candle)) in ours.iter().zip(&candle).enumerate() {
        assert_eq!(ours.len(), VOCAB);
        let difference = relative_difference(ours, candle);
        eprintln!("{arch} step {i}: worst difference {difference:.4} of the range");
        // Both engines round activations to 8 bits before each product, in different
        // orders of addition: about 1% of the spread here. A wrong hook (no bias, the
        // other rotation, a missing norm) differed by 15% or more when tried.
        assert!(
            difference < 0.03,
            "{arch} step {i}: logits differ by {difference} of their range"
        );
        let mut sorted = candle.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let spread = sorted[0] - sorted[sorted.len() - 1];
        if (sorted[0] - sorted[1]) / spread > 0.03 {
            assert_eq!(argmax(ours), argmax(candle), "{arch} step {i}");
        }
    }
}

#[test]
fn qwen2_runs_on_the_cpu_engine_with_candles_logits() {
    compare("qwen2");
}

#[test]
fn qwen3_runs_on_the_cpu_engine_with_candles_logits() {
    compare("qwen3");
}

#[test]
fn phi3_runs_on_the_cpu_engine_with_candles_logits() {
    compare("phi3");
}

#[test]
fn llama_written_here_runs_on_the_cpu_engine_with_candles_logits() {
    compare("llama");
}

#[test]
fn every_weight_type_runs_on_the_cpu_engine_with_candles_logits() {
    // The types beside Q8_0 that GGUF files are shipped in; the kernels' own tests
    // cover each against the dequantised reference, this the engine reading them.
    for ty in [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::F16,
        GgmlDType::BF16,
        GgmlDType::F32,
    ] {
        eprintln!("{ty:?}");
        compare_of("llama", ty);
    }
}

#[test]
fn a_sliding_window_bounds_what_a_slot_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("phi3-window.gguf");
    write_model(
        "phi3",
        &path,
        &[("attention.sliding_window", Value::U32(64))],
    );
    let loaded = model::load_with(&path, &Device::Cpu, Engine::Auto).expect("load");
    assert!(loaded.model.info.engine.starts_with("cpu-"));
    // No position ever attends past the window: the context is the window.
    assert_eq!(loaded.model.info.context_length, 64);
}

#[test]
fn the_cpu_engine_reports_its_load_tensor_by_tensor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("qwen2.gguf");
    write_model("qwen2", &path, &[]);
    let mut seen = Vec::new();
    let loaded = model::load_reporting(
        &path,
        &Device::Cpu,
        Engine::Auto,
        model::Capacity::default(),
        &mut |done, total| seen.push((done, total)),
    )
    .expect("load");
    assert!(loaded.model.info.engine.starts_with("cpu-"));
    // Every tensor moves it on; it never goes back, and it ends at the whole.
    assert!(seen.len() > LAYERS * 9, "{} reports", seen.len());
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    let (done, total) = *seen.last().expect("a report");
    assert_eq!(done, total);
    assert!(seen[0].0 < total);
}

/// llama3's `rope_freqs`, the divisor of each frequency: from 1 for the fastest to 8
/// for the slowest, as Llama 3's rise from 1 to its scaling factor (there, only past a
/// wavelength these few positions never reach, so here from the first).
pub(crate) fn llama3_factors() -> Vec<f32> {
    let half = HIDDEN / HEADS / 2;
    (0..half)
        .map(|i| 1.0 + 7.0 * i as f32 / (half - 1) as f32)
        .collect()
}

/// The CPU engine's logits after `PROMPT` and each of its own greedy steps.
fn cpu_logits(path: &Path) -> Vec<Vec<f32>> {
    let (engine, logits, _) = run(path, Engine::Auto, None);
    assert!(engine.starts_with("cpu-"), "runs on {engine}");
    logits
}

#[test]
fn rotary_scaling_runs_on_the_cpu_engine_as_llama_cpp_defines_it() {
    // llama.cpp's angle is `pos · scale · base^(-2i/d) / factor_i`: llama3's
    // `rope_freqs` tensor gives the factors, linear scaling the scale (1 / factor).
    let dir = tempfile::tempdir().expect("tempdir");
    let at = |name: &str| dir.path().join(name);
    let half = HIDDEN / HEADS / 2;
    write_model("llama", &at("plain.gguf"), &[]);
    write_model_with("llama", &at("ones.gguf"), &[], Some(&vec![1.0; half]));
    write_model_with("llama", &at("twos.gguf"), &[], Some(&vec![2.0; half]));
    let linear = [
        ("rope.scaling.type", Value::String("linear".into())),
        ("rope.scaling.factor", Value::F32(2.0)),
    ];
    write_model("llama", &at("linear.gguf"), &linear);
    write_model_with("llama", &at("llama3.gguf"), &[], Some(&llama3_factors()));

    let plain = cpu_logits(&at("plain.gguf"));
    assert_eq!(
        cpu_logits(&at("ones.gguf")),
        plain,
        "factors of 1 change nothing"
    );
    // Halving every frequency either way is the same angle, exactly.
    let twos = cpu_logits(&at("twos.gguf"));
    assert_eq!(cpu_logits(&at("linear.gguf")), twos);
    assert!(
        relative_difference(&twos[1], &plain[1]) > 1e-3,
        "scaling is applied"
    );
    let llama3 = cpu_logits(&at("llama3.gguf"));
    assert!(
        relative_difference(&llama3[1], &plain[1]) > 1e-3,
        "rope_freqs is applied"
    );
}

#[test]
fn what_candle_would_get_wrong_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scaled = dir.path().join("scaled.gguf");
    write_model_with("llama", &scaled, &[], Some(&[2.0; HIDDEN / HEADS / 2]));
    let error = model::load_with(&scaled, &Device::Cpu, Engine::Candle)
        .err()
        .expect("candle refuses")
        .to_string();
    assert!(error.contains("rotary embedding is scaled"), "{error}");
    // candle's phi3 rotates whole heads; a file that rotates part of each (Phi-4-mini's
    // three quarters) runs on the CPU engine only.
    let partial = dir.path().join("partial.gguf");
    write_model(
        "phi3",
        &partial,
        &[(
            "rope.dimension_count",
            Value::U32((HIDDEN / HEADS / 2) as u32),
        )],
    );
    let error = model::load_with(&partial, &Device::Cpu, Engine::Candle)
        .err()
        .expect("candle refuses")
        .to_string();
    assert!(error.contains("rotates part of each head"), "{error}");
    let loaded = model::load_with(&partial, &Device::Cpu, Engine::Auto).expect("cpu engine");
    assert!(
        loaded.model.info.engine.starts_with("cpu-"),
        "{}",
        loaded.model.info.engine
    );
    // Scaling the CPU engine does not handle leaves no engine: refused, not run wrong.
    let unknown = dir.path().join("unknown-scaling.gguf");
    write_model(
        "llama",
        &unknown,
        &[("rope.scaling.type", Value::String("dynamic".into()))],
    );
    let error = model::load_with(&unknown, &Device::Cpu, Engine::Auto)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("no engine of this worker runs correctly"),
        "{error}"
    );
}
