//! The CPU engine on Gemma, Gemma 2 and Gemma 3 against llama.cpp's own logits.
//!
//! candle's Gemma computes otherwise than llama.cpp, so it cannot be the reference here:
//! the reference is llama.cpp itself, recorded once. Each test writes a small file of
//! random weights with a SentencePiece vocabulary of 512 tokens (every hook of the
//! generation present: post norms, per-head query/key norms, soft caps, windowed layers
//! with their own rotation), and compares the engine's logits at every position of a
//! prompt with those llama-cpp-python computed from the same file, committed in
//! `tests/data/gemma/`. `scripts/record-gemma-logits.sh` writes the files with this
//! module's ignored test and records them again; each record holds a hash of the file it
//! came from, so a change to the writer without a new record fails here.

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::QTensor;
use candle_core::quantized::gguf_file::{self, Value};
use llm_worker_rbee::model::{self, Engine};
use llm_worker_rbee::sampling::argmax;
use llm_worker_rbee::tokenizer::TextTokenizer;

use crate::cpu_engine::relative_difference;
use crate::families::{Noise, Writer};

const HIDDEN: usize = 128;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
/// Wider than `HIDDEN / HEADS`, as in Gemma (`attention.key_length`).
const HEAD_DIM: usize = 64;
const FFN: usize = 256;
const VOCAB: usize = 512;
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

/// The vocabulary: Gemma's control tokens at Gemma's ids, the 256 byte tokens, then
/// pieces (letters, a few words with every prefix, letter pairs) scored so that longer
/// pieces merge first.
fn vocabulary() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>"]
        .map(String::from)
        .to_vec();
    let mut types = vec![3, 3, 3, 2];
    // llama.cpp ends a generation at `<end_of_turn>` whatever its type; files mark it
    // as a control token or a user-defined one.
    tokens.push("<start_of_turn>".into());
    types.push(3);
    tokens.push("<end_of_turn>".into());
    types.push(4);
    for byte in 0..=255u8 {
        tokens.push(format!("<0x{byte:02X}>"));
        types.push(6);
    }
    let room = VOCAB - tokens.len();
    let mut pieces: Vec<String> = Vec::with_capacity(room);
    let mut add = |piece: String| {
        if pieces.len() < room && !pieces.contains(&piece) {
            pieces.push(piece);
        }
    };
    add("\u{2581}".into());
    for c in 'a'..='z' {
        add(c.to_string());
        add(format!("\u{2581}{c}"));
    }
    for word in ["user", "model", "why", "the", "sky", "blue", "is", "hello"] {
        for spaced in [word.to_owned(), format!("\u{2581}{word}")] {
            let chars: Vec<char> = spaced.chars().collect();
            for end in 2..=chars.len() {
                add(chars[..end].iter().collect());
            }
        }
    }
    for a in 'a'..='z' {
        for b in 'a'..='z' {
            add(format!("{a}{b}"));
        }
    }
    let mut scores = vec![0.0; tokens.len()];
    for piece in pieces {
        scores.push(piece.chars().count() as f32 - tokens.len() as f32 / VOCAB as f32);
        tokens.push(piece);
        types.push(1);
    }
    assert_eq!(tokens.len(), VOCAB);
    (tokens, scores, types)
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

/// FNV-1a, 64 bits: which file a record was made from (`bench/llama_cpp_logits.py`
/// computes the same).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// llama.cpp's tokens of a prompt and its logits at every one of them, as
/// `bench/llama_cpp_logits.py` writes them: `RBEELGT1`, the file's FNV-1a (u64), the
/// token count and vocabulary (u32 each), the tokens (u32), then the logits row by row
/// (f32), all little-endian.
struct Record {
    file_hash: u64,
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

impl Record {
    fn read(path: &Path) -> Record {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/record-gemma-logits.sh)", path.display()));
        assert_eq!(
            &bytes[..8],
            b"RBEELGT1",
            "{} is not a record",
            path.display()
        );
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let file_hash = u64::from_le_bytes(bytes[8..16].try_into().expect("8"));
        let (count, vocab) = (u32_at(16) as usize, u32_at(20) as usize);
        let tokens: Vec<u32> = (0..count).map(|i| u32_at(24 + 4 * i)).collect();
        let start = 24 + 4 * count;
        assert_eq!(bytes.len(), start + 4 * count * vocab, "{}", path.display());
        let logits = bytes[start..]
            .chunks_exact(4 * vocab)
            .map(|row| {
                row.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
                    .collect()
            })
            .collect();
        Record {
            file_hash,
            tokens,
            logits,
        }
    }
}

fn record_path(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/gemma")
        .join(format!("{arch}.logits"))
}

/// The worst difference (of the spread) between the engine's logits and the record's,
/// over every position, checking the argmax at each, or with `near_ties` only where
/// the record's best two logits are more than `TOLERANCE` of the spread apart. The
/// prompt runs token by token, then again as one chunk (the last position's logits).
fn compare_with_record(gguf: &Path, record: &Record, near_ties: bool) -> f32 {
    let loaded = model::load_with(gguf, &Device::Cpu, Engine::Auto).expect("load");
    assert!(
        loaded.model.info.engine.starts_with("cpu-"),
        "runs on {}",
        loaded.model.info.engine
    );
    let mut model = loaded.model;
    let mut worst: f32 = 0.0;
    for (position, (&token, expected)) in record.tokens.iter().zip(&record.logits).enumerate() {
        let ours = model.forward(&[token], position).expect("forward");
        assert_eq!(ours.len(), expected.len());
        let difference = relative_difference(&ours, expected);
        eprintln!(
            "{}: position {position}: worst difference {difference:.5} of the spread",
            gguf.display()
        );
        worst = worst.max(difference);
        if near_ties && top_two_gap(expected) <= TOLERANCE {
            continue;
        }
        assert_eq!(
            argmax(&ours),
            argmax(expected),
            "{}: position {position}",
            gguf.display()
        );
    }
    let whole = model.forward(&record.tokens, 0).expect("prompt");
    let last = record.logits.last().expect("a position");
    worst = worst.max(relative_difference(&whole, last));
    if !near_ties || top_two_gap(last) > TOLERANCE {
        assert_eq!(argmax(&whole), argmax(last));
    }
    worst
}

/// How far apart the two largest logits are, as a share of the spread.
fn top_two_gap(logits: &[f32]) -> f32 {
    let mut sorted = logits.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    (sorted[0] - sorted[1]) / (sorted[0] - sorted[sorted.len() - 1])
}

/// Writes `arch`'s file, checks it is the one the record was made from and that the
/// worker tokenizes the prompt as llama.cpp did, and returns the worst difference.
fn check(arch: &str, extra: &[(&str, Value)]) -> f32 {
    let dir = tempfile::tempdir().expect("tempdir");
    let gguf = dir.path().join(format!("{arch}.gguf"));
    write_gemma(arch, &gguf, extra);
    let record = Record::read(&record_path(arch));
    if extra.is_empty() {
        let hash = fnv1a(&std::fs::read(&gguf).expect("read back"));
        assert_eq!(
            hash, record.file_hash,
            "{arch}: the record was made from another file; run scripts/record-gemma-logits.sh"
        );
    }
    let mut file = std::fs::File::open(&gguf).expect("open");
    let content = gguf_file::Content::read(&mut file).expect("header");
    let tokenizer = TextTokenizer::from_gguf(&content.metadata, &gguf).expect("tokenizer");
    assert_eq!(
        tokenizer.encode_prompt(PROMPT).expect("encode"),
        record.tokens,
        "{arch}: llama.cpp's tokens of the prompt"
    );
    assert!(
        record.tokens.len() > 2 * WINDOW as usize,
        "the prompt outgrows the window"
    );
    compare_with_record(&gguf, &record, false)
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
        let record = Record::read(&record_path(arch));
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

/// Writes the files the records are made from into `$RBEE_GEMMA_FILES`, with the
/// prompt beside them; `scripts/record-gemma-logits.sh` runs it.
#[test]
#[ignore = "writes the files for scripts/record-gemma-logits.sh"]
fn write_files_for_llama_cpp() {
    let dir = PathBuf::from(std::env::var("RBEE_GEMMA_FILES").expect("RBEE_GEMMA_FILES"));
    std::fs::create_dir_all(&dir).expect("create");
    for arch in GENERATIONS {
        write_gemma(arch, &dir.join(format!("{arch}.gguf")), &[]);
    }
    std::fs::write(dir.join("prompt.txt"), PROMPT).expect("write prompt");
}

/// Compares any file with a record made from it: `RBEE_LLAMA_CPP_CHECK=FILE.gguf:RECORD`
/// (`bench/llama_cpp_logits.py FILE.gguf PROMPT.txt RECORD` makes the record). Deep
/// models of random weights give nearly flat logits, whose best two llama.cpp itself
/// swaps against an unrounded computation, so near ties are not held to one argmax.
#[test]
#[ignore = "compares a file named in RBEE_LLAMA_CPP_CHECK with llama.cpp's record of it"]
fn a_named_file_gives_llama_cpps_logits() {
    let check = std::env::var("RBEE_LLAMA_CPP_CHECK").expect("RBEE_LLAMA_CPP_CHECK");
    let (gguf, record) = check.rsplit_once(':').expect("FILE.gguf:RECORD");
    let record = Record::read(Path::new(record));
    let worst = compare_with_record(Path::new(gguf), &record, true);
    eprintln!("{gguf}: worst difference {worst:.5} of the spread");
    assert!(worst < TOLERANCE, "{worst}");
}
