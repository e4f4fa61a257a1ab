//! The CPU engine on Gemma, Gemma 2 and Gemma 3 against llama.cpp's own logits.
//!
//! candle's Gemma computes otherwise than llama.cpp, so it cannot be the reference here:
//! the reference is llama.cpp itself, recorded once. Each test writes a small file of
//! random weights with a SentencePiece vocabulary of 512 tokens (every hook of the
//! generation present: post norms, per-head query/key norms, soft caps, windowed layers
//! with their own rotation), and compares the engine's logits at every position of a
//! prompt with those llama-cpp-python computed from the same file, as `llama_cpp.rs`
//! does for the other families (its records, `tests/data/llama-cpp/`, hold these too).

use std::path::Path;

use candle_core::Device;
use candle_core::quantized::QTensor;
use candle_core::quantized::gguf_file::{self, Value};
use llm_worker_rbee::model::{self, Engine};
use llm_worker_rbee::tokenizer::TextTokenizer;

use crate::cpu_engine::relative_difference;
use crate::families::{Noise, VOCAB, Writer};
use crate::llama_cpp::{Record, compare_with_record, sentencepiece};

const HIDDEN: usize = 128;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
/// Wider than `HIDDEN / HEADS`, as in Gemma (`attention.key_length`).
const HEAD_DIM: usize = 64;
const FFN: usize = 256;
const CONTEXT: u32 = 512;
/// Shorter than the prompt, so that windowed layers see less than global ones.
const WINDOW: u32 = 6;
/// The prompt whose logits are compared: llama.cpp's tokens of it (with BOS) are the
/// record's, and the worker's tokenizer must give the same.
const PROMPT: &str =
    "<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n";

/// Every position's logits may differ from llama.cpp's by this much of their spread.
/// Both engines round activations to 8 bits before each product (llama.cpp also keeps
/// keys and values in f16 and looks GELU up in an f16 table). Measured: at most 0.5%
/// (gemma), 1.6% (gemma2, gemma3), with the same argmax at every position; a float64
/// computation of the same graph without rounding (`bench/gemma_reference.py`) is as
/// far from either (0.5%, 1.9%, 1.6% from llama.cpp's). A missing window or soft cap
/// differs by 11% or more.
const TOLERANCE: f32 = 0.025;

const GENERATIONS: &[&str] = &["gemma", "gemma2", "gemma3"];

fn layers(arch: &str) -> usize {
    match arch {
        // Five windowed layers and one global, as Gemma 3's pattern has them.
        "gemma3" => 6,
        // Windowed, global, windowed, global.
        "gemma2" => 4,
        _ => 2,
    }
}

/// The vocabulary: Gemma's control tokens at Gemma's ids (llama.cpp ends a generation
/// at `<end_of_turn>` whatever its type; files mark it as a control token or a
/// user-defined one), the 256 byte tokens, then pieces.
fn vocabulary() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    sentencepiece(
        &[
            ("<pad>", 3),
            ("<eos>", 3),
            ("<bos>", 3),
            ("<unk>", 2),
            ("<start_of_turn>", 3),
            ("<end_of_turn>", 4),
        ],
        &["user", "model", "why", "the", "sky", "blue", "is", "hello"],
    )
}

/// Writes a random `arch` model (`gemma`, `gemma2`, `gemma3`) with `extra` metadata
/// under the architecture's prefix, replacing the default of the same key.
fn write_gemma(arch: &str, path: &Path, extra: &[(&str, Value)]) {
    let layers = layers(arch);
    let (q_dim, kv_dim) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let mut w = Writer {
        noise: Noise(0x2545_f491_4f6c_dd1d),
        tensors: Vec::new(),
    };
    w.matrix("token_embd.weight", VOCAB, HIDDEN);
    for layer in 0..layers {
        let name = |part: &str| format!("blk.{layer}.{part}");
        // Norm weights as the converter stores them: Gemma's `1 + w`.
        w.vector(&name("attn_norm.weight"), HIDDEN, 1.0, 0.1);
        w.matrix(&name("attn_q.weight"), q_dim, HIDDEN);
        w.matrix(&name("attn_k.weight"), kv_dim, HIDDEN);
        w.matrix(&name("attn_v.weight"), kv_dim, HIDDEN);
        if arch == "gemma3" {
            w.vector(&name("attn_q_norm.weight"), HEAD_DIM, 1.0, 0.2);
            w.vector(&name("attn_k_norm.weight"), HEAD_DIM, 1.0, 0.2);
        }
        w.matrix(&name("attn_output.weight"), HIDDEN, q_dim);
        if arch != "gemma" {
            w.vector(&name("post_attention_norm.weight"), HIDDEN, 1.0, 0.1);
        }
        w.vector(&name("ffn_norm.weight"), HIDDEN, 1.0, 0.1);
        w.matrix(&name("ffn_gate.weight"), FFN, HIDDEN);
        w.matrix(&name("ffn_up.weight"), FFN, HIDDEN);
        w.matrix(&name("ffn_down.weight"), HIDDEN, FFN);
        if arch != "gemma" {
            w.vector(&name("post_ffw_norm.weight"), HIDDEN, 1.0, 0.1);
        }
    }
    // The output is the embedding, as in every Gemma.
    w.vector("output_norm.weight", HIDDEN, 1.0, 0.1);

    let key = |name: &str| format!("{arch}.{name}");
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (key("context_length"), Value::U32(CONTEXT)),
        (key("embedding_length"), Value::U32(HIDDEN as u32)),
        (key("block_count"), Value::U32(layers as u32)),
        (key("feed_forward_length"), Value::U32(FFN as u32)),
        (key("attention.head_count"), Value::U32(HEADS as u32)),
        (key("attention.head_count_kv"), Value::U32(KV_HEADS as u32)),
        (key("attention.key_length"), Value::U32(HEAD_DIM as u32)),
        (key("attention.value_length"), Value::U32(HEAD_DIM as u32)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
    ];
    match arch {
        "gemma2" => metadata.extend([
            (key("rope.freq_base"), Value::F32(10_000.0)),
            (key("attention.sliding_window"), Value::U32(WINDOW)),
            // Smaller than Gemma 2's 50 and 30, so that the caps bend these scores.
            (key("attn_logit_softcapping"), Value::F32(2.0)),
            (key("final_logit_softcapping"), Value::F32(3.0)),
        ]),
        "gemma3" => metadata.extend([
            // Global layers: base 1e6 and linear scaling, as Gemma 3 4B and larger;
            // windowed layers rotate with base 10000 unscaled.
            (key("rope.freq_base"), Value::F32(1_000_000.0)),
            (key("rope.scaling.type"), Value::String("linear".into())),
            (key("rope.scaling.factor"), Value::F32(8.0)),
            (key("attention.sliding_window"), Value::U32(WINDOW)),
        ]),
        _ => metadata.push((key("rope.freq_base"), Value::F32(10_000.0))),
    }
    for (name, value) in extra {
        metadata.retain(|(k, _)| *k != key(name));
        metadata.push((key(name), value.clone()));
    }
    let (tokens, scores, types) = vocabulary();
    let array = |values: Vec<Value>| Value::Array(values);
    metadata.extend([
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens".into(),
            array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            array(scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(3)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)),
        ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)),
    ]);
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = w.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::fs::File::create(path).expect("create");
    gguf_file::write(&mut file, &metadata, &tensors).expect("write gguf");
}

/// Writes `arch`'s file, checks it is the one the record was made from and that the
/// worker tokenizes the prompt as llama.cpp did, and returns the worst difference.
fn check(arch: &str, extra: &[(&str, Value)]) -> f32 {
    let dir = tempfile::tempdir().expect("tempdir");
    let gguf = dir.path().join(format!("{arch}.gguf"));
    write_gemma(arch, &gguf, extra);
    let record = Record::of(arch);
    record.check_source(&gguf, PROMPT);
    assert!(
        record.tokens.len() > 2 * WINDOW as usize,
        "the prompt outgrows the window"
    );
    compare_with_record(&gguf, &record, false).0
}

#[test]
fn gemma_gives_llama_cpps_logits() {
    let worst = check("gemma", &[]);
    assert!(worst < TOLERANCE, "gemma: {worst} of the spread");
}

#[test]
fn gemma2_gives_llama_cpps_logits() {
    let worst = check("gemma2", &[]);
    assert!(worst < TOLERANCE, "gemma2: {worst} of the spread");
}

#[test]
fn gemma3_gives_llama_cpps_logits() {
    let worst = check("gemma3", &[]);
    assert!(worst < TOLERANCE, "gemma3: {worst} of the spread");
}

#[test]
fn gemma_ends_a_turn_at_end_of_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gguf = dir.path().join("gemma2.gguf");
    write_gemma("gemma2", &gguf, &[]);
    let mut file = std::fs::File::open(&gguf).expect("open");
    let content = gguf_file::Content::read(&mut file).expect("header");
    let tokenizer = TextTokenizer::from_gguf(&content.metadata, &gguf).expect("tokenizer");
    assert!(tokenizer.is_end_of_generation(1), "<eos>");
    assert!(tokenizer.is_end_of_generation(5), "<end_of_turn>");
    assert!(!tokenizer.is_end_of_generation(4), "<start_of_turn>");
    let ids = tokenizer.encode_prompt("hello").expect("encode");
    assert_eq!(ids.first(), Some(&2), "BOS first: {ids:?}");
}

/// The records can tell a missing hook: the same weights with a window wider than the
/// prompt, or without gemma2's soft caps, give logits far from llama.cpp's.
#[test]
fn a_missing_window_or_soft_cap_is_seen() {
    for (arch, change) in [
        ("gemma3", ("attention.sliding_window", Value::U32(1024))),
        ("gemma2", ("attention.sliding_window", Value::U32(1024))),
        ("gemma2", ("attn_logit_softcapping", Value::F32(1000.0))),
        ("gemma2", ("final_logit_softcapping", Value::F32(1000.0))),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let gguf = dir.path().join(format!("{arch}.gguf"));
        write_gemma(arch, &gguf, std::slice::from_ref(&change));
        let record = Record::of(arch);
        let loaded = model::load_with(&gguf, &Device::Cpu, Engine::Auto).expect("load");
        let mut model = loaded.model;
        let logits = model.forward(&record.tokens, 0).expect("prompt");
        let difference = relative_difference(&logits, record.logits.last().expect("row"));
        assert!(
            difference > 2.0 * TOLERANCE,
            "{arch} with {}: only {difference} from llama.cpp's",
            change.0
        );
    }
}

#[test]
fn candle_is_refused_gemma_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    for arch in GENERATIONS {
        let gguf = dir.path().join(format!("{arch}.gguf"));
        write_gemma(arch, &gguf, &[]);
        let error = model::load_with(&gguf, &Device::Cpu, Engine::Candle)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            error.contains("candle's Gemma models compute otherwise than llama.cpp"),
            "{error}"
        );
    }
}

/// Writes the files the records are made from into `dir`, each `NAME.gguf` with its
/// prompt in `NAME.txt` (for `llama_cpp::write_files_for_llama_cpp`).
pub(crate) fn write_files(dir: &Path) {
    for arch in GENERATIONS {
        write_gemma(arch, &dir.join(format!("{arch}.gguf")), &[]);
        std::fs::write(dir.join(format!("{arch}.txt")), PROMPT).expect("write prompt");
    }
}
