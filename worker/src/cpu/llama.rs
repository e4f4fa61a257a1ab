//! A llama-style transformer on the CPU: quantized weights, f32 activations
//! quantized to Q8 blocks before each matrix product, and an f32 KV cache.
//!
//! One transformer serves every family built like llama; what differs is read from the
//! file's metadata into a [`Family`] and applied as small hooks: the rotary layout
//! (llama's consecutive pairs or the NEOX halves of qwen2/qwen3), biases on the query,
//! key and value projections (qwen2), a per-head RMS norm of queries and keys before
//! the rotation (qwen3 and gemma3), a head width other than `embedding / heads` (qwen3,
//! gemma), and gemma's changes to the block ([`Gemma`]): a scaled embedding, GELU,
//! norms after attention and after the feed-forward network, soft-capped attention
//! scores and logits, and layers that attend over a sliding window with their own
//! rotary base. The rotation turns the leading `rope.dimension_count` dimensions of
//! each head (Phi-4-mini's three quarters; all of it elsewhere), each frequency divided
//! by llama3's `rope_freqs` or phi3's longrope factors where the file has them.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, Value};
use rayon::prelude::*;

use super::matrix::{FileBytes, QMatrix};
use super::quant::{Q8Block, QK, QuantType};
use super::{Kernels, thread_count};

#[derive(Debug, thiserror::Error)]
pub enum CpuLoadError {
    #[error("metadata `{0}` is missing or not a number")]
    Metadata(String),
    #[error("tensor `{0}` is missing")]
    MissingTensor(String),
    #[error("tensor `{name}` has type {dtype:?}, which the CPU engine does not handle")]
    UnsupportedType { name: String, dtype: GgmlDType },
    #[error("tensor `{name}` has shape {shape:?}, expected {expected:?}")]
    Shape {
        name: String,
        shape: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("the model has {0}, which the CPU engine does not handle")]
    Unsupported(&'static str),
    #[error("cannot read tensor `{name}`: {source}")]
    Read {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot start the CPU engine's threads: {0}")]
    Threads(#[from] rayon::ThreadPoolBuildError),
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("positions {start}..{end} exceed the context of {max} tokens")]
    ContextFull {
        start: usize,
        end: usize,
        max: usize,
    },
    #[error("sequence slot {slot} does not exist (the model has {slots})")]
    NoSlot { slot: usize, slots: usize },
    #[error("token id {0} is outside the vocabulary")]
    UnknownToken(u32),
}

/// How the two halves of each rotated pair are laid out in a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rope {
    /// Consecutive pairs `(2i, 2i+1)`, as GGUF llama weights are permuted for.
    Pairs,
    /// The first half against the second, `(i, i + d/2)` (ggml's NEOX mode).
    Halves,
}

/// What one architecture changes in the shared transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Family {
    rope: Rope,
    /// `attn_q.bias`, `attn_k.bias` and `attn_v.bias` follow the projections.
    qkv_bias: bool,
    /// `attn_q_norm` and `attn_k_norm` normalise each head before the rotation.
    qk_norm: bool,
    /// One `attn_qkv` tensor for the three projections and one `ffn_up` for gate and
    /// up, stacked as the engine stacks them (phi3).
    fused: bool,
    /// Gemma's block, when the file is one of its generations.
    gemma: Option<Gemma>,
}

/// The generations of Gemma, as llama.cpp builds them (`src/models/gemma*.cpp`). All
/// scale the embedding by `sqrt(embedding)`, gate the feed-forward network with GELU
/// (tanh approximation), rotate NEOX halves and tie the output to the embedding; the
/// converter stores every norm weight with Gemma's `+ 1` already added, so the norms
/// are plain RMS norms here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gemma {
    /// Gemma: nothing more.
    One,
    /// Gemma 2: norms after attention and after the feed-forward network, attention
    /// scores and logits soft-capped (50 and 30 unless the file says otherwise), and
    /// every other layer, the first among them, attending over a window of 4096
    /// positions unless the file says otherwise.
    Two,
    /// Gemma 3: Gemma 2's post norms, qwen3's per-head query and key norms, a final
    /// soft cap only where the file sets one, and, where the file sets a window, five
    /// windowed layers to one global, the windowed ones rotating with base 10000
    /// unscaled.
    Three,
}

impl Family {
    /// The family of an architecture as `general.architecture` names it; `None` for
    /// those the engine does not run.
    fn of(architecture: &str) -> Option<Family> {
        let family = |rope, qkv_bias, qk_norm, fused, gemma| {
            Some(Family {
                rope,
                qkv_bias,
                qk_norm,
                fused,
                gemma,
            })
        };
        match architecture {
            "llama" => family(Rope::Pairs, false, false, false, None),
            "qwen2" => family(Rope::Halves, true, false, false, None),
            "qwen3" => family(Rope::Halves, false, true, false, None),
            "phi3" => family(Rope::Halves, false, false, true, None),
            "gemma" => family(Rope::Halves, false, false, false, Some(Gemma::One)),
            "gemma2" => family(Rope::Halves, false, false, false, Some(Gemma::Two)),
            "gemma3" => family(Rope::Halves, false, true, false, Some(Gemma::Three)),
            _ => None,
        }
    }

    /// Gemma 2 and 3 normalise the attention's and the feed-forward network's outputs
    /// before adding them to the residual stream.
    fn post_norms(self) -> bool {
        matches!(self.gemma, Some(Gemma::Two | Gemma::Three))
    }
}

/// The feed-forward network's gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Silu,
    /// GELU's tanh approximation with ggml's constants, in f32 (ggml's CPU backend
    /// looks it up by the input rounded to f16, a difference well below the rounding
    /// of activations to 8 bits).
    Gelu,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    dim: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// The leading dimensions of each query and key head that rotate (the rest pass
    /// through): `rope.dimension_count`, the whole head unless the file says less.
    rope_dims: usize,
    /// What the rotation's cosines and sines are multiplied by, as llama.cpp's rope
    /// scales them by its attention factor (`rope.scaling.attn_factor`, phi3's longrope
    /// files; 1 elsewhere).
    rope_magnitude: f32,
    /// The tensor of divisors the rotation's frequencies take ([`rope_factors`]).
    rope_factors: Option<&'static str>,
    ffn: usize,
    eps: f32,
    /// Positions of one sequence slot's KV cache: the context of one sequence.
    max_positions: usize,
    family: Family,
    /// What each token's embedding is multiplied by (gemma's `sqrt(embedding)`).
    embedding_scale: Option<f32>,
    activation: Activation,
    /// What each query-key product is multiplied by before the softmax.
    query_scale: f32,
    /// Attention scores become `cap · tanh(score / cap)` (gemma2).
    attention_cap: Option<f32>,
    /// Logits become `cap · tanh(logit / cap)` (gemma2, some gemma3).
    output_cap: Option<f32>,
}

/// How one layer attends: over every earlier position or the last `window` only, and
/// with which rotation.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LayerAttention {
    window: Option<usize>,
    rope: RopeScaling,
}

impl Config {
    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// The width of all query heads together (the embedding's, except in qwen3).
    fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    fn qkv_width(&self) -> usize {
        self.q_dim() + 2 * self.kv_dim()
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Query, key and value projections stacked: one pass computes all three.
    qkv: QMatrix,
    /// The biases of the three projections, stacked as they are (qwen2).
    qkv_bias: Option<Vec<f32>>,
    /// Per-head RMS norm weights of queries and keys (qwen3).
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    attn_out: QMatrix,
    /// Norms of the attention's and the feed-forward network's outputs (gemma2/3).
    attn_post_norm: Option<Vec<f32>>,
    ffn_post_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    /// Gate and up projections stacked.
    gate_up: QMatrix,
    down: QMatrix,
    /// Attends over the last this many positions only (a sliding-window layer).
    window: Option<usize>,
    /// Which of the model's rotary tables this layer rotates with.
    rope_table: usize,
}

/// One sequence slot's keys and values, per layer, for positions `0..max_positions`.
struct KvCache {
    layers: Vec<LayerCache>,
}

/// One layer's keys and values, key head by key head: a head's positions follow one
/// another, so attention reads a head's run of positions as one stream (not a head's
/// slice of every position's row, a page apart in a model with many key heads). They
/// are kept as IEEE halves, rounded to nearest as llama.cpp's default f16 cache
/// rounds them: a decode step at a long context reads the whole cache, and in f32 it
/// was half again as many bytes as the weights in Qwen3 0.6B's shape at 2,800 tokens.
struct LayerCache {
    keys: Vec<u16>,
    values: Vec<u16>,
    positions: usize,
    head_dim: usize,
}

impl KvCache {
    fn new(c: &Config, layers: usize) -> KvCache {
        let len = c.max_positions * c.kv_dim();
        KvCache {
            layers: (0..layers)
                // Zeroed allocations are mapped lazily: unused positions cost no memory.
                .map(|_| LayerCache {
                    keys: vec![0; len],
                    values: vec![0; len],
                    positions: c.max_positions,
                    head_dim: c.head_dim,
                })
                .collect(),
        }
    }
}

impl LayerCache {
    /// Keeps position `pos`'s keys and values (every key head's, one after another).
    fn store(&mut self, pos: usize, keys: &[f32], values: &[f32]) {
        let hd = self.head_dim;
        for (head, (k, v)) in keys
            .chunks_exact(hd)
            .zip(values.chunks_exact(hd))
            .enumerate()
        {
            let at = (head * self.positions + pos) * hd;
            for (cached, &x) in self.keys[at..at + hd].iter_mut().zip(k) {
                *cached = half::f16::from_f32(x).to_bits();
            }
            for (cached, &x) in self.values[at..at + hd].iter_mut().zip(v) {
                *cached = half::f16::from_f32(x).to_bits();
            }
        }
    }

    /// Key head `head`'s keys and values from position `first` on, each position's
    /// `head_dim` floats right after the one before.
    fn head(&self, head: usize, first: usize) -> (&[u16], &[u16]) {
        let run = (head * self.positions + first) * self.head_dim
            ..(head + 1) * self.positions * self.head_dim;
        (&self.keys[run.clone()], &self.values[run])
    }

    /// Positions `0..len` of `source`'s keys and values, copied.
    fn copy_prefix(&mut self, source: &LayerCache, len: usize) {
        let floats = len.min(self.positions) * self.head_dim;
        for start in (0..self.keys.len()).step_by(self.positions * self.head_dim) {
            let run = start..start + floats;
            self.keys[run.clone()].copy_from_slice(&source.keys[run.clone()]);
            self.values[run.clone()].copy_from_slice(&source.values[run]);
        }
    }
}

/// Tokens of one sequence to run in a batched forward pass: `tokens` go to positions
/// `position..` of slot `slot`'s cache, whose positions before `position` hold the
/// sequence's earlier tokens. `logits` asks for the logits of the last token.
#[derive(Debug, Clone, Copy)]
pub struct SequenceChunk<'a> {
    pub slot: usize,
    pub tokens: &'a [u32],
    pub position: usize,
    pub logits: bool,
}

/// Where one chunk's tokens sit among the batch's rows.
#[derive(Debug, Clone, Copy)]
struct Span {
    slot: usize,
    position: usize,
    /// The chunk's first row in the batch.
    first: usize,
    len: usize,
}

/// Buffers sized for the longest batch of tokens seen so far, reused by every call.
#[derive(Default)]
struct Scratch {
    tokens: usize,
    x: Vec<f32>,
    normed: Vec<f32>,
    quantized: Vec<Q8Block>,
    qkv: Vec<f32>,
    attention: Vec<f32>,
    by_head: Vec<f32>,
    projected: Vec<f32>,
    gate_up: Vec<f32>,
    hidden: Vec<f32>,
    transposed: Vec<f32>,
    /// Rows of logits, one per chunk that asked for them.
    logit_rows: usize,
    logits: Vec<f32>,
}

/// A model loaded for the CPU engine, with one KV cache per sequence slot and its
/// threads.
pub struct CpuLlama {
    config: Config,
    kernels: Kernels,
    embedding: QMatrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// `None` when the output projection is the embedding (tied weights).
    output: Option<QMatrix>,
    /// One rotary table per distinct rotation among the layers (gemma3's windowed and
    /// global layers rotate differently).
    rope_tables: Vec<RopeTable>,
    caches: Vec<KvCache>,
    scratch: Scratch,
    /// Shared so that a forward pass can run inside it while borrowing the model.
    pool: Arc<rayon::ThreadPool>,
}

impl CpuLlama {
    /// Whether the engine runs this file: one of its architectures, without experts,
    /// and every matrix of a type it handles; when not, the caller runs the model with
    /// candle instead.
    pub fn supports(content: &Content) -> bool {
        read_config(content, 1).is_ok()
            && content.tensor_infos.iter().all(|(name, info)| {
                let is_norm = name.ends_with("_norm.weight");
                if [ROPE_FREQS, LONGROPE_LONG, LONGROPE_SHORT].contains(&name.as_str()) {
                    // Rotary scaling, one factor per frequency: llama3's, or phi3's
                    // longrope pair.
                    info.ggml_dtype == GgmlDType::F32
                } else if name.starts_with("rope_") {
                    false
                } else if is_norm || name.ends_with(".bias") {
                    info.ggml_dtype == GgmlDType::F32
                } else if name.ends_with(".weight") {
                    QuantType::from_ggml(info.ggml_dtype).is_some()
                } else {
                    false
                }
            })
    }

    /// Reads the weights of a GGUF file of a family the engine runs, with `slots`
    /// sequence slots whose KV caches hold `max_positions` positions each (fewer when
    /// the model's sliding window is shorter).
    pub fn load(
        content: &Content,
        file: FileBytes,
        max_positions: usize,
        slots: usize,
        kernels: Kernels,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CpuLlama, CpuLoadError> {
        let (config, attention) = read_config(content, max_positions)?;
        let (dim, layers, head_dim, family) =
            (config.dim, config.layers, config.head_dim, config.family);

        let total = content
            .tensor_infos
            .values()
            .map(|info| {
                (info.shape.elem_count() / info.ggml_dtype.block_size()) as u64
                    * info.ggml_dtype.type_size() as u64
            })
            .sum();
        let mut tensors = TensorReader {
            content,
            file,
            read: 0,
            total,
            progress,
        };
        let embedding = tensors
            .matrix("token_embd.weight", None, dim)?
            .arranged_for(kernels);
        let vocab = embedding.rows();
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let name = |part: &str| format!("blk.{i}.{part}.weight");
            let qkv = if family.fused {
                vec![tensors.matrix(&name("attn_qkv"), Some(config.qkv_width()), dim)?]
            } else {
                vec![
                    tensors.matrix(&name("attn_q"), Some(config.q_dim()), dim)?,
                    tensors.matrix(&name("attn_k"), Some(config.kv_dim()), dim)?,
                    tensors.matrix(&name("attn_v"), Some(config.kv_dim()), dim)?,
                ]
            };
            let bias = |part: &str| format!("blk.{i}.{part}.bias");
            let qkv_bias = if family.qkv_bias {
                let mut stacked = tensors.vector(&bias("attn_q"), config.q_dim())?;
                stacked.extend(tensors.vector(&bias("attn_k"), config.kv_dim())?);
                stacked.extend(tensors.vector(&bias("attn_v"), config.kv_dim())?);
                Some(stacked)
            } else {
                None
            };
            let (q_norm, k_norm) = if family.qk_norm {
                (
                    Some(tensors.vector(&name("attn_q_norm"), head_dim)?),
                    Some(tensors.vector(&name("attn_k_norm"), head_dim)?),
                )
            } else {
                (None, None)
            };
            let gate_up = if family.fused {
                vec![tensors.matrix(&name("ffn_up"), Some(2 * config.ffn), dim)?]
            } else {
                vec![
                    tensors.matrix(&name("ffn_gate"), Some(config.ffn), dim)?,
                    tensors.matrix(&name("ffn_up"), Some(config.ffn), dim)?,
                ]
            };
            let (attn_post_norm, ffn_post_norm) = if family.post_norms() {
                (
                    Some(tensors.vector(&name("post_attention_norm"), dim)?),
                    Some(tensors.vector(&name("post_ffw_norm"), dim)?),
                )
            } else {
                (None, None)
            };
            blocks.push(Layer {
                attn_norm: tensors.vector(&name("attn_norm"), dim)?,
                qkv: QMatrix::stack(qkv)
                    .ok_or(CpuLoadError::Unsupported("mismatched widths"))?
                    .arranged_for(kernels),
                qkv_bias,
                q_norm,
                k_norm,
                attn_out: tensors
                    .matrix(&name("attn_output"), Some(dim), config.q_dim())?
                    .arranged_for(kernels),
                attn_post_norm,
                ffn_post_norm,
                ffn_norm: tensors.vector(&name("ffn_norm"), dim)?,
                gate_up: QMatrix::stack(gate_up)
                    .ok_or(CpuLoadError::Unsupported("mismatched widths"))?
                    .arranged_for(kernels),
                down: tensors
                    .matrix(&name("ffn_down"), Some(dim), config.ffn)?
                    .arranged_for(kernels),
                window: None,
                rope_table: 0,
            });
        }
        let factors = match config.rope_factors {
            Some(name) => Some(tensors.vector(name, config.rope_dims / 2)?),
            None => None,
        };
        let mut rope_tables: Vec<RopeTable> = Vec::new();
        for (block, attention) in blocks.iter_mut().zip(&attention) {
            block.window = attention.window;
            block.rope_table = match rope_tables.iter().position(|t| t.rope == attention.rope) {
                Some(known) => known,
                None => {
                    rope_tables.push(RopeTable::new(
                        config.rope_dims,
                        attention.rope,
                        factors.as_deref(),
                        config.rope_magnitude,
                        config.max_positions,
                    ));
                    rope_tables.len() - 1
                }
            };
        }
        let output = if content.tensor_infos.contains_key("output.weight") {
            Some(
                tensors
                    .matrix("output.weight", Some(vocab), dim)?
                    .arranged_for(kernels),
            )
        } else {
            None
        };
        let output_norm = tensors.vector("output_norm.weight", dim)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(thread_count())
            .thread_name(|i| format!("cpu-engine-{i}"))
            .build()?;
        let pool = Arc::new(pool);
        let caches = (0..slots.max(1))
            .map(|_| KvCache::new(&config, layers))
            .collect();
        Ok(CpuLlama {
            config,
            kernels,
            embedding,
            layers: blocks,
            output_norm,
            output,
            rope_tables,
            caches,
            scratch: Scratch::default(),
            pool,
        })
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The number of sequence slots, each with its own KV cache.
    pub fn slots(&self) -> usize {
        self.caches.len()
    }

    /// The positions one slot holds: the longest sequence it can run.
    pub fn slot_context(&self) -> usize {
        self.config.max_positions
    }

    /// Copies positions `0..len` of slot `from`'s cache into slot `to`'s: what running
    /// the same tokens there would compute, bit for bit (a position's keys and values
    /// depend only on the tokens up to it), for a fraction of the time.
    pub fn copy_prefix(&mut self, from: usize, to: usize, len: usize) {
        let slots = self.caches.len();
        assert!(
            from < slots && to < slots && from != to,
            "slots {from} → {to} of {slots}"
        );
        let (source, target) = if from < to {
            let (left, right) = self.caches.split_at_mut(to);
            (&left[from], &mut right[0])
        } else {
            let (left, right) = self.caches.split_at_mut(from);
            (&right[0], &mut left[to])
        };
        for (source, target) in source.layers.iter().zip(&mut target.layers) {
            target.copy_prefix(source, len);
        }
    }

    /// Runs every chunk in one pass: the matrix products take the tokens of all chunks
    /// as columns, attention stays within each chunk's sequence. Returns the logits of
    /// the chunks that asked for them, in order. A token's results do not depend on the
    /// other chunks in the batch: every product equals the one-token product bit for
    /// bit, and each sequence reads only its own cache.
    pub fn forward_batch(
        &mut self,
        chunks: &[SequenceChunk],
    ) -> Result<Vec<Vec<f32>>, ForwardError> {
        let mut spans = Vec::with_capacity(chunks.len());
        let mut rows = 0;
        for chunk in chunks {
            if chunk.slot >= self.caches.len() {
                return Err(ForwardError::NoSlot {
                    slot: chunk.slot,
                    slots: self.caches.len(),
                });
            }
            let end = chunk.position + chunk.tokens.len();
            if end > self.config.max_positions {
                return Err(ForwardError::ContextFull {
                    start: chunk.position,
                    end,
                    max: self.config.max_positions,
                });
            }
            if let Some(&bad) = chunk
                .tokens
                .iter()
                .find(|&&t| t as usize >= self.embedding.rows())
            {
                return Err(ForwardError::UnknownToken(bad));
            }
            spans.push(Span {
                slot: chunk.slot,
                position: chunk.position,
                first: rows,
                len: chunk.tokens.len(),
            });
            rows += chunk.tokens.len();
        }
        let tokens: Vec<u32> = chunks.iter().flat_map(|c| c.tokens).copied().collect();
        let wanted: Vec<usize> = chunks
            .iter()
            .zip(&spans)
            .filter(|(c, s)| c.logits && s.len > 0)
            .map(|(_, s)| s.first + s.len - 1)
            .collect();
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let pool = Arc::clone(&self.pool);
        pool.install(|| with_others_awake(|| self.run(&tokens, &spans, &wanted)));
        let vocab = self.embedding.rows();
        Ok(self.scratch.logits[..wanted.len() * vocab]
            .chunks_exact(vocab)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Runs `tokens` (the chunks' tokens one after another, placed by `spans`) and leaves
    /// the logits of the rows in `wanted` in `scratch.logits`.
    fn run(&mut self, tokens: &[u32], spans: &[Span], wanted: &[usize]) {
        let c = self.config;
        let n = tokens.len();
        let vocab = self.embedding.rows();
        let s = &mut self.scratch;
        s.reserve(
            &c,
            n,
            wanted.len(),
            self.layers.first().map_or(0, |l| l.qkv.rows()),
            vocab,
        );
        let kernels = self.kernels;
        let (dim, kv_dim, hd) = (c.dim, c.kv_dim(), c.head_dim);
        let (q_dim, qkv_width) = (c.q_dim(), c.qkv_width());

        for (t, &token) in tokens.iter().enumerate() {
            let row = &mut s.x[t * dim..(t + 1) * dim];
            self.embedding.dequantize_row(token as usize, row);
            if let Some(scale) = c.embedding_scale {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm_rows(&s.x[..n * dim], &layer.attn_norm, c.eps, &mut s.normed);
            quantize_rows(kernels, &layer.qkv, &s.normed[..n * dim], &mut s.quantized);
            layer
                .qkv
                .matmul(kernels, &s.quantized, n, &mut s.qkv, &mut s.transposed);
            if let Some(bias) = &layer.qkv_bias {
                for row in s.qkv[..n * qkv_width].chunks_exact_mut(qkv_width) {
                    add(row, bias);
                }
            }
            for span in spans {
                let cache = &mut self.caches[span.slot].layers[l];
                for t in 0..span.len {
                    let pos = span.position + t;
                    let row = &mut s.qkv[(span.first + t) * qkv_width..][..qkv_width];
                    let (q, kv) = row.split_at_mut(q_dim);
                    let (k, v) = kv.split_at_mut(kv_dim);
                    let (rotated, half) = (c.rope_dims, c.rope_dims / 2);
                    let table = &self.rope_tables[layer.rope_table];
                    let (cos, sin) = (
                        &table.cos[pos * half..(pos + 1) * half],
                        &table.sin[pos * half..(pos + 1) * half],
                    );
                    if let (Some(q_norm), Some(k_norm)) = (&layer.q_norm, &layer.k_norm) {
                        rms_norm_in_place(q, q_norm, c.eps);
                        rms_norm_in_place(k, k_norm, c.eps);
                    }
                    for head in q.chunks_exact_mut(hd).chain(k.chunks_exact_mut(hd)) {
                        let head = &mut head[..rotated];
                        match c.family.rope {
                            Rope::Pairs => rope_pairs(head, cos, sin),
                            Rope::Halves => rope_halves(head, cos, sin),
                        }
                    }
                    cache.store(pos, k, v);
                }
            }
            attention(kernels, &c, &self.caches, l, layer.window, spans, s, n);
            quantize_rows(
                kernels,
                &layer.attn_out,
                &s.attention[..n * q_dim],
                &mut s.quantized,
            );
            layer.attn_out.matmul(
                kernels,
                &s.quantized,
                n,
                &mut s.projected,
                &mut s.transposed,
            );
            if let Some(norm) = &layer.attn_post_norm {
                rms_norm_in_place(&mut s.projected[..n * dim], norm, c.eps);
            }
            add(&mut s.x[..n * dim], &s.projected[..n * dim]);

            rms_norm_rows(&s.x[..n * dim], &layer.ffn_norm, c.eps, &mut s.normed);
            quantize_rows(
                kernels,
                &layer.gate_up,
                &s.normed[..n * dim],
                &mut s.quantized,
            );
            layer
                .gate_up
                .matmul(kernels, &s.quantized, n, &mut s.gate_up, &mut s.transposed);
            gated(
                c.activation,
                c.ffn,
                &s.gate_up[..n * 2 * c.ffn],
                &mut s.hidden[..n * c.ffn],
            );
            quantize_rows(
                kernels,
                &layer.down,
                &s.hidden[..n * c.ffn],
                &mut s.quantized,
            );
            layer.down.matmul(
                kernels,
                &s.quantized,
                n,
                &mut s.projected,
                &mut s.transposed,
            );
            if let Some(norm) = &layer.ffn_post_norm {
                rms_norm_in_place(&mut s.projected[..n * dim], norm, c.eps);
            }
            add(&mut s.x[..n * dim], &s.projected[..n * dim]);
        }

        // Only the wanted rows' logits are computed, all in one product.
        let m = wanted.len();
        if m == 0 {
            return;
        }
        for (i, &row) in wanted.iter().enumerate() {
            rms_norm_rows(
                &s.x[row * dim..(row + 1) * dim],
                &self.output_norm,
                c.eps,
                &mut s.normed[i * dim..(i + 1) * dim],
            );
        }
        let output = self.output.as_ref().unwrap_or(&self.embedding);
        quantize_rows(kernels, output, &s.normed[..m * dim], &mut s.quantized);
        output.matmul(kernels, &s.quantized, m, &mut s.logits, &mut s.transposed);
        if let Some(cap) = c.output_cap {
            soft_cap(&mut s.logits[..m * vocab], cap);
        }
    }
}

/// The shape and hooks of a file the engine runs, with how each layer attends; an
/// error says why the engine does not run it (then candle does, where it can).
fn read_config(
    content: &Content,
    max_positions: usize,
) -> Result<(Config, Vec<LayerAttention>), CpuLoadError> {
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| CpuLoadError::Metadata("general.architecture".into()))?;
    let family = Family::of(&arch).ok_or(CpuLoadError::Unsupported(
        "an architecture the engine does not run",
    ))?;
    if content
        .metadata
        .contains_key(&format!("{arch}.expert_count"))
    {
        return Err(CpuLoadError::Unsupported("mixture-of-experts layers"));
    }
    let key = |name: &str| format!("{arch}.{name}");
    let optional = |name: &str| {
        content
            .metadata
            .get(&key(name))
            .and_then(|v| v.to_u32().ok())
            .map(|n| n as usize)
    };
    let number = |name: &str| optional(name).ok_or_else(|| CpuLoadError::Metadata(key(name)));
    let float = |name: &str| {
        content
            .metadata
            .get(&key(name))
            .and_then(|v| v.to_f32().ok())
    };
    let heads = number("attention.head_count")?;
    let dim = number("embedding_length")?;
    let layers = number("block_count")?;
    let head_dim = optional("attention.key_length").unwrap_or(dim.checked_div(heads).unwrap_or(0));
    let window = optional("attention.sliding_window").filter(|&w| w > 0);
    // Outside gemma a sliding window covers every layer: each slot holds no more than
    // the window, so no position ever attends beyond it. Gemma's global layers see
    // the whole context, so its slots keep every position.
    let max_positions = match (family.gemma, window) {
        (None, Some(w)) => max_positions.min(w),
        _ => max_positions,
    };
    let kind = content
        .metadata
        .get(&key("rope.scaling.type"))
        .and_then(|v| v.to_string().ok())
        .map_or("none", String::as_str);
    // As llama.cpp reads them: linear scaling divides positions by the factor; llama3's
    // is the `rope_freqs` tensor alone (its metadata only describes how it was made);
    // YaRN divides them too, but only in the frequencies it interpolates.
    let factor = || match float("rope.scaling.factor") {
        Some(factor) if factor > 0.0 => 1.0 / factor,
        _ => 1.0,
    };
    let base = float("rope.freq_base").unwrap_or(10000.0);
    let rope_dims = optional("rope.dimension_count").unwrap_or(head_dim);
    let original_context =
        optional("rope.scaling.original_context_length").or(optional("context_length"));
    let (position_scale, yarn) = match kind {
        // longrope's factors are tensors ([`rope_factors`]) and its magnitude a key of
        // its own; phi3's files leave the kind out.
        "none" | "llama3" | "longrope" | "su" => (1.0, None),
        "linear" => (factor(), None),
        "yarn" => {
            let original = original_context.ok_or(CpuLoadError::Unsupported(
                "YaRN rotary scaling without the context it was trained on \
                 (`rope.scaling.original_context_length`)",
            ))?;
            (factor(), Some(Yarn::new(rope_dims, original, base)))
        }
        _ => {
            return Err(CpuLoadError::Unsupported(
                "a rotary scaling of an unknown kind",
            ));
        }
    };
    let rope = RopeScaling {
        base,
        position_scale,
        yarn,
    };
    let mut config = Config {
        dim,
        layers,
        heads,
        kv_heads: number("attention.head_count_kv")?,
        head_dim,
        rope_dims,
        rope_magnitude: float("rope.scaling.attn_factor").unwrap_or(1.0),
        rope_factors: rope_factors(content, max_positions, original_context),
        ffn: number("feed_forward_length")?,
        eps: float("attention.layer_norm_rms_epsilon")
            .ok_or_else(|| CpuLoadError::Metadata(key("attention.layer_norm_rms_epsilon")))?,
        max_positions,
        family,
        embedding_scale: None,
        activation: Activation::Silu,
        query_scale: 1.0 / (head_dim as f32).sqrt(),
        attention_cap: None,
        output_cap: None,
    };
    let mut attention = vec![LayerAttention { window: None, rope }; layers];
    if let Some(gemma) = family.gemma {
        config.embedding_scale = Some((dim as f32).sqrt());
        config.activation = Activation::Gelu;
        // llama.cpp (after gemma_pytorch) scales queries by the embedding per head
        // rather than the head width in the 27B models, which it knows by their depth.
        let large = match gemma {
            Gemma::One => false,
            Gemma::Two => layers == 46,
            Gemma::Three => layers == 62,
        };
        if large {
            config.query_scale = 1.0 / ((dim / heads.max(1)) as f32).sqrt();
        }
        let cap =
            |name: &str, default: Option<f32>| float(name).or(default).filter(|&cap| cap > 0.0);
        // Windowed layers: llama.cpp's `sliding_window_pattern` (one flag per layer, or
        // a period whose last layer is global), with each generation's defaults.
        let mut windowed = |window: Option<usize>, period: usize| -> Result<(), CpuLoadError> {
            let Some(window) = window else {
                return Ok(());
            };
            let flags = sliding_window_flags(
                content,
                &key("attention.sliding_window_pattern"),
                layers,
                period,
            )?;
            let base = float("rope.freq_base_swa");
            for (layer, windowed) in attention.iter_mut().zip(flags) {
                if windowed {
                    layer.window = Some(window);
                    layer.rope = match gemma {
                        Gemma::Three => RopeScaling {
                            base: base.unwrap_or(10000.0),
                            position_scale: 1.0,
                            yarn: None,
                        },
                        _ => RopeScaling {
                            base: base.unwrap_or(rope.base),
                            ..rope
                        },
                    };
                }
            }
            Ok(())
        };
        match gemma {
            Gemma::One => {}
            Gemma::Two => {
                config.attention_cap = cap("attn_logit_softcapping", Some(50.0));
                config.output_cap = cap("final_logit_softcapping", Some(30.0));
                windowed(window.or(Some(4096)), 2)?;
            }
            Gemma::Three => {
                config.output_cap = cap("final_logit_softcapping", None);
                windowed(window, 6)?;
            }
        }
    }
    if config.heads == 0
        || config.kv_heads == 0
        || !config.heads.is_multiple_of(config.kv_heads)
        || !config.head_dim.is_multiple_of(2)
        || config.head_dim == 0
        || !dim.is_multiple_of(QK)
        || !config.q_dim().is_multiple_of(QK)
    {
        return Err(CpuLoadError::Unsupported(
            "an attention shape the engine does not handle",
        ));
    }
    if optional("attention.value_length").is_some_and(|v| v != head_dim) {
        return Err(CpuLoadError::Unsupported(
            "values of another width than keys",
        ));
    }
    if config.rope_dims == 0 || config.rope_dims > head_dim || !config.rope_dims.is_multiple_of(2) {
        return Err(CpuLoadError::Unsupported(
            "a rotary embedding wider than a head, or of an odd width",
        ));
    }
    Ok((config, attention))
}

/// Which layers attend over the sliding window, as llama.cpp reads
/// `sliding_window_pattern`: one flag per layer, or a period `n` in which every layer
/// but the last of each `n` is windowed (`n = 0`: all of them), `period` when absent.
fn sliding_window_flags(
    content: &Content,
    key: &str,
    layers: usize,
    period: usize,
) -> Result<Vec<bool>, CpuLoadError> {
    let period = match content.metadata.get(key) {
        None => period,
        Some(Value::Array(flags)) => {
            let flags: Option<Vec<bool>> = flags.iter().map(|f| f.to_bool().ok()).collect();
            return flags
                .filter(|f| f.len() == layers)
                .ok_or_else(|| CpuLoadError::Metadata(key.to_owned()));
        }
        Some(value) => value
            .to_u32()
            .map_err(|_| CpuLoadError::Metadata(key.to_owned()))? as usize,
    };
    Ok((0..layers)
        .map(|layer| period == 0 || layer % period < period - 1)
        .collect())
}

/// The tensor of llama3's rotary scaling: a divisor of each frequency.
const ROPE_FREQS: &str = "rope_freqs.weight";
/// phi3's longrope divisors, for a context longer than the one the model was trained
/// on first (`rope.scaling.original_context_length`) and for one within it.
const LONGROPE_LONG: &str = "rope_factors_long.weight";
const LONGROPE_SHORT: &str = "rope_factors_short.weight";

/// The tensor of divisors the rotation's frequencies take, if the file has any: llama3's
/// `rope_freqs`, or longrope's long factors where a slot's `positions` are more than
/// the `original` context and its short factors otherwise, as llama.cpp chooses them
/// (by its context per sequence).
fn rope_factors(
    content: &Content,
    positions: usize,
    original: Option<usize>,
) -> Option<&'static str> {
    let has = |name: &str| content.tensor_infos.contains_key(name);
    if has(ROPE_FREQS) {
        Some(ROPE_FREQS)
    } else if !has(LONGROPE_LONG) && !has(LONGROPE_SHORT) {
        None
    } else if positions > original.unwrap_or(usize::MAX) {
        Some(LONGROPE_LONG)
    } else {
        Some(LONGROPE_SHORT)
    }
}

/// How the rotation's angles are made from positions.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RopeScaling {
    base: f32,
    /// Linear scaling's and YaRN's `1 / factor` (1 without).
    position_scale: f32,
    yarn: Option<Yarn>,
}

/// YaRN's frequencies, as ggml's rope takes them: those before `low` keep their angles
/// (extrapolated), those after `high` have them divided by the factor (interpolated),
/// and those between mix the two along a ramp; every cosine and sine is multiplied by
/// `1 + 0.1 ln factor`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Yarn {
    low: f32,
    high: f32,
}

impl Yarn {
    /// ggml's defaults, which llama.cpp keeps for every family the engine runs: the
    /// frequencies that turn more than 32 times over the `original` context keep their
    /// angles, those that turn less than once are interpolated.
    const BETA_FAST: f32 = 32.0;
    const BETA_SLOW: f32 = 1.0;

    /// The ramp of `rotated` dimensions with frequency base `base`, as
    /// `ggml_rope_yarn_corr_dims` computes it.
    fn new(rotated: usize, original: usize, base: f32) -> Yarn {
        let dimension = |turns: f32| {
            rotated as f32 * (original as f32 / (turns * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * base.ln())
        };
        Yarn {
            low: dimension(Self::BETA_FAST).floor().max(0.0),
            high: dimension(Self::BETA_SLOW)
                .ceil()
                .min(rotated.saturating_sub(1) as f32),
        }
    }

    /// How much frequency `i` keeps of its own angle: 1 up to `low`, 0 from `high`.
    fn kept(self, i: usize) -> f32 {
        let y = (i as f32 - self.low) / (self.high - self.low).max(0.001);
        1.0 - y.clamp(0.0, 1.0)
    }
}

impl Scratch {
    /// Sizes the buffers for `tokens` rows with `logit_rows` rows of logits; they only
    /// grow.
    fn reserve(
        &mut self,
        c: &Config,
        tokens: usize,
        logit_rows: usize,
        qkv_width: usize,
        vocab: usize,
    ) {
        if self.tokens >= tokens && self.logit_rows >= logit_rows && !self.logits.is_empty() {
            return;
        }
        let n = tokens.max(self.tokens);
        let m = logit_rows.max(self.logit_rows).max(1);
        self.tokens = n;
        self.logit_rows = m;
        let widest = c.dim.max(c.ffn).max(c.q_dim());
        self.x = vec![0.0; n * c.dim];
        self.normed = vec![0.0; n * c.dim];
        self.quantized = vec![Q8Block::default(); n * widest / QK];
        self.qkv = vec![0.0; n * qkv_width];
        self.attention = vec![0.0; n * c.q_dim()];
        self.by_head = vec![0.0; n * c.q_dim()];
        self.projected = vec![0.0; n * c.dim];
        self.gate_up = vec![0.0; n * 2 * c.ffn];
        self.hidden = vec![0.0; n * c.ffn];
        self.transposed = vec![0.0; (n * qkv_width.max(2 * c.ffn)).max(m * vocab)];
        self.logits = vec![0.0; m * vocab];
    }
}

/// Rows of a chunk that one attention task takes: small enough that a long prompt's
/// tasks keep every thread busy as the causal mask makes later rows cost more.
const ATTENTION_ROWS: usize = 16;

/// Rows of a prompt that attention scores against each key at once, head by head,
/// where a task has fewer query heads than that (sharing a key between four queries
/// keeps the kernels' tiles at their best shape; measured against eight on phi3's
/// and llama's shapes at 2,800 tokens, BENCHMARKS.md).
const TILE_ROWS: usize = 4;

thread_local! {
    /// One attention task's scores, a row of the longest context seen per query head
    /// it takes; kept by each pool thread so that no task allocates.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Causal attention of every chunk's tokens over its own sequence's cache; the result
/// goes to `scratch.attention` as `n` rows of `q_dim`.
///
/// A task takes some rows of one chunk and some of the query heads that share a key
/// head: every key and value it reads serves all of those heads (seven in Qwen2.5
/// 0.5B), instead of being read again for each. A key head's heads are split only as
/// far as it takes to give every thread a task ([`heads_per_task`]).
#[allow(clippy::too_many_arguments)]
fn attention(
    kernels: Kernels,
    c: &Config,
    caches: &[KvCache],
    layer: usize,
    window: Option<usize>,
    spans: &[Span],
    s: &mut Scratch,
    n: usize,
) {
    let (q_dim, hd) = (c.q_dim(), c.head_dim);
    let qkv_width = c.qkv_width();
    let group = c.heads / c.kv_heads;
    let per_task = heads_per_task(
        group,
        spans.len() * c.kv_heads,
        rayon::current_num_threads(),
    );
    // `(first head, heads)` of each piece of the query heads a task takes.
    let pieces: Vec<(usize, usize)> = (0..c.kv_heads)
        .flat_map(|kv| {
            (0..group)
                .step_by(per_task)
                .map(move |h| (kv * group + h, per_task.min(group - h)))
        })
        .collect();
    let scale = c.query_scale;
    let qkv = &s.qkv;
    // `by_head` holds each chunk's rows piece by piece: a piece's block is the chunk's
    // `len` rows of its heads, one after another.
    let mut tasks = Vec::new();
    let mut rest = &mut s.by_head[..n * q_dim];
    for span in spans {
        for &(head, heads) in &pieces {
            let (mine, after) = rest.split_at_mut(span.len * heads * hd);
            rest = after;
            for (i, out) in mine.chunks_mut(ATTENTION_ROWS * heads * hd).enumerate() {
                tasks.push((*span, head, heads, i * ATTENTION_ROWS, out));
            }
        }
    }
    // A row's scores become its weights: scaled, capped where the family caps them,
    // and through softmax.
    let weigh = |scores: &mut [f32]| {
        for score in scores.iter_mut() {
            *score *= scale;
        }
        if let Some(cap) = c.attention_cap {
            soft_cap(scores, cap);
        }
        softmax(scores);
    };
    // As llama.cpp masks a window of `w`: position `p` sees `p - w + 1..=p`, so a row
    // that has seen `seen` positions attends to `first(seen)..seen`.
    let first = |seen: usize| window.map_or(0, |w| seen.saturating_sub(w));
    tasks
        .into_par_iter()
        .for_each(|(span, head, heads, row, out)| {
            let cache = &caches[span.slot].layers[layer];
            let rows = out.len() / (heads * hd);
            let query = |t: usize, h: usize| (span.first + t) * qkv_width + (head + h) * hd;
            SCORES.with_borrow_mut(|scores| {
                if rows.min(TILE_ROWS) <= heads {
                    // Row by row, all of the task's heads at once.
                    for (t, out) in (row..).zip(out.chunks_exact_mut(heads * hd)) {
                        let seen = span.position + t + 1;
                        let len = seen - first(seen);
                        scores.resize(scores.len().max(heads * len), 0.0);
                        let scores = &mut scores[..heads * len];
                        let (keys, values) = cache.head(head / group, first(seen));
                        let queries = &qkv[query(t, 0)..][..heads * hd];
                        kernels.group_dots(queries, heads, hd, hd, keys, scores);
                        scores.chunks_exact_mut(len).for_each(weigh);
                        kernels.group_sums(scores, values, out, heads, hd, hd);
                    }
                    return;
                }
                // Head by head, up to `TILE_ROWS` rows at once: a prompt's rows share
                // their keys but for the last few, which the later rows see and the
                // earlier ones are masked from. Every row is scored against the block's
                // whole run, and a masked position weighs exactly 0: with a finite value it
                // adds a zero, which leaves any sum as it was.
                for h in 0..heads {
                    for block in (0..rows).step_by(TILE_ROWS) {
                        let count = (rows - block).min(TILE_ROWS);
                        let seen = span.position + row + block + 1;
                        let start = first(seen);
                        let run = seen + count - 1 - start;
                        scores.resize(scores.len().max(count * run), 0.0);
                        let scores = &mut scores[..count * run];
                        let (keys, values) = cache.head(head / group, start);
                        let queries = &qkv[query(row + block, h)..];
                        kernels.group_dots(queries, count, qkv_width, hd, keys, scores);
                        for (i, scores) in scores.chunks_exact_mut(run).enumerate() {
                            let seen = seen + i;
                            let (masked, rest) = scores.split_at_mut(first(seen) - start);
                            let (seen_here, after) = rest.split_at_mut(seen - first(seen));
                            masked.fill(0.0);
                            after.fill(0.0);
                            weigh(seen_here);
                        }
                        let stride = heads * hd;
                        let out = &mut out[block * stride + h * hd..];
                        kernels.group_sums(scores, values, out, count, stride, hd);
                    }
                }
            });
        });
    let mut block = 0;
    for span in spans {
        for &(head, heads) in &pieces {
            let width = heads * hd;
            for t in 0..span.len {
                s.attention[(span.first + t) * q_dim + head * hd..][..width]
                    .copy_from_slice(&s.by_head[block + t * width..][..width]);
            }
            block += span.len * width;
        }
    }
}

/// Query heads of a group of `group` (those sharing a key head) that one attention task
/// takes, with `units` (chunk, key head) pairs to share among `threads`: the whole
/// group where that gives every thread work, else the fewest heads that do, so that
/// each key is read for as many heads at once as the threads allow.
fn heads_per_task(group: usize, units: usize, threads: usize) -> usize {
    let pieces = threads.div_ceil(units).clamp(1, group);
    group.div_ceil(pieces)
}

/// `pass` on this pool thread, the pool's other threads kept awake until it ends
/// ([`keep_awake`]). A keeping-awake job this thread takes back itself (its own
/// queue's last job) ends at once, as it must: the pass is beneath it.
fn with_others_awake(pass: impl FnOnce() + Send) {
    let (owner, done) = (rayon::current_thread_index(), AtomicBool::new(false));
    rayon::scope(|scope| {
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(|_| {
                if rayon::current_thread_index() != owner {
                    keep_awake(&done);
                }
            });
        }
        let _done = SetOnDrop(&done);
        pass();
    });
}

/// Until `done`, this pool thread runs the pool's work as it comes, never going to
/// sleep between: a pass forks on every thread a few hundred times, and waking a
/// sleeping thread on another core took 25 µs a time on a virtual machine here
/// (`perf bench sched pipe`). Between pieces of work it
/// yields to the operating system, so that other processes still get the core.
fn keep_awake(done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::thread::yield_now();
        }
    }
}

/// Sets its flag when dropped: a pass that panics still lets [`keep_awake`] end.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Each token's `activation(gate) · up` (`gate_up` a token's `ffn` gates, then its ups)
/// into `hidden`, a token a task on every thread.
fn gated(activation: Activation, ffn: usize, gate_up: &[f32], hidden: &mut [f32]) {
    let token = |(hidden, row): (&mut [f32], &[f32])| {
        let (gate, up) = row.split_at(ffn);
        for ((h, g), u) in hidden.iter_mut().zip(gate).zip(up) {
            *h = match activation {
                Activation::Silu => g / (1.0 + exp(-g)),
                Activation::Gelu => gelu(*g),
            } * u;
        }
    };
    hidden
        .par_chunks_mut(ffn)
        .zip(gate_up.par_chunks(2 * ffn))
        .for_each(token);
}

/// Softmax in place. The maximum and the sum are taken in eight lanes, combined in a
/// fixed order, so that their loops vectorise and every build still gets the same
/// bits: taken a value at a time, each was one chain of dependent operations (the
/// softmax was 12% of an 8,000-token prompt's time in Qwen3's shape; the lanes took
/// 4% off the prompt).
fn softmax(x: &mut [f32]) {
    const LANES: usize = 8;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let (chunks, rest) = x.as_chunks::<LANES>();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v);
        }
    }
    let max = lanes
        .iter()
        .chain(rest)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sums = [0.0f32; LANES];
    let (chunks, rest) = x.as_chunks_mut::<LANES>();
    for chunk in chunks {
        for (sum, v) in sums.iter_mut().zip(chunk) {
            *v = exp(*v - max);
            *sum += *v;
        }
    }
    for v in rest.iter_mut() {
        *v = exp(*v - max);
    }
    let sum: f32 = sums.iter().chain(&*rest).sum();
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// `e^x` within two units in the last place of the exact value, in `f32` arithmetic alone: the
/// loops over it vectorise (a libm call a value was a twentieth of a prompt's time),
/// and every build and kernel set gets the same bits. `x` is first clamped to
/// `-87..=88`, where `e^x` is a normal number (so `e^x` of a large `x` is about
/// `1.6e38`, not infinity; of a very negative one, `1.6e-38`, not 0).
///
/// `x = n ln 2 + r` with `n` an integer and `|r| ≤ ln 2 / 2` (`ln 2` in two parts, so
/// that `r` is exact), `e^r` by a polynomial of degree 7, and `2^n` made in the
/// exponent's bits.
#[inline]
fn exp(x: f32) -> f32 {
    // Adding `1.5 · 2^23` rounds to an integer, which the sum's low bits then hold.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // `n + 127` in the exponent's bits (wrapping, that no overflow check stops the
    // loops vectorising: `n` is within -126..=127).
    let two_to_n = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127)
        << 23;
    e_r * f32::from_bits(two_to_n)
}

/// `cap · tanh(x / cap)`, in ggml's order: scale by the reciprocal, tanh, scale back.
fn soft_cap(x: &mut [f32], cap: f32) {
    let inverse = 1.0 / cap;
    for v in x {
        *v = (*v * inverse).tanh() * cap;
    }
}

/// GELU's tanh approximation, with ggml's constants.
fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044_715;
    // `(1 + tanh u) / 2` is `1 - 1 / (1 + e^2u)`: one exponential, where libm's
    // `tanhf` costs two functions' time; right at both ends ([`exp`] at its largest
    // gives 1, at its smallest 0).
    let u = SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x);
    x * (1.0 - 1.0 / (1.0 + exp(2.0 * u)))
}

fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    for (row, out) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean_square = row.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let inv = 1.0 / (mean_square + eps).sqrt();
        for ((o, v), w) in out.iter_mut().zip(row).zip(weight) {
            *o = v * inv * w;
        }
    }
}

/// Rows of activations `x`, quantized into `out` as `matrix`'s products read them.
fn quantize_rows(kernels: Kernels, matrix: &QMatrix, x: &[f32], out: &mut [Q8Block]) {
    let width = matrix.cols();
    for (row, blocks) in x.chunks_exact(width).zip(out.chunks_exact_mut(width / QK)) {
        kernels.quantize_row(row, blocks, matrix.scales());
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

/// RMS-normalises each `weight.len()`-wide piece of `x` in place (qwen3's per-head
/// norms of queries and keys).
fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let width = weight.len();
    for piece in x.chunks_exact_mut(width) {
        let mean_square = piece.iter().map(|v| v * v).sum::<f32>() / width as f32;
        let inv = 1.0 / (mean_square + eps).sqrt();
        for (v, w) in piece.iter_mut().zip(weight) {
            *v = *v * inv * w;
        }
    }
}

/// Rotates consecutive pairs of one head, as GGUF llama weights expect.
fn rope_pairs(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, c), s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * c - b * s;
        pair[1] = a * s + b * c;
    }
}

/// Rotates element `i` of a head's first half with element `i` of its second half
/// (ggml's NEOX layout, used by qwen2 and qwen3).
fn rope_halves(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let (first, second) = head.split_at_mut(head.len() / 2);
    for (((a, b), c), s) in first.iter_mut().zip(second.iter_mut()).zip(cos).zip(sin) {
        let (x, y) = (*a, *b);
        *a = x * c - y * s;
        *b = x * s + y * c;
    }
}

/// The rotation's cosines and sines for every position and frequency.
struct RopeTable {
    rope: RopeScaling,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// Angle `pos · scale · base^(-2i/d) / factor_i` over the `d` rotated dimensions,
    /// cosines and sines times `magnitude`, as llama.cpp's rope with frequency factors
    /// and an attention factor; with YaRN, the unscaled angle where frequency `i` is
    /// kept ([`Yarn`]).
    fn new(
        rotated: usize,
        rope: RopeScaling,
        factors: Option<&[f32]>,
        magnitude: f32,
        positions: usize,
    ) -> RopeTable {
        let half = rotated / 2;
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        let magnitude = match rope.yarn {
            Some(_) => magnitude * (1.0 + 0.1 * (1.0 / rope.position_scale).ln()),
            None => magnitude,
        };
        for pos in 0..positions {
            for i in 0..half {
                let factor = factors.map_or(1.0, |f| f[i]);
                let freq = 1.0 / rope.base.powf((2 * i) as f32 / rotated as f32) / factor;
                let unscaled = pos as f32 * freq;
                let scaled = unscaled * rope.position_scale;
                let angle = match rope.yarn {
                    Some(yarn) => {
                        let kept = yarn.kept(i);
                        scaled * (1.0 - kept) + unscaled * kept
                    }
                    None => scaled,
                };
                cos.push(angle.cos() * magnitude);
                sin.push(angle.sin() * magnitude);
            }
        }
        RopeTable { rope, cos, sin }
    }
}

/// Reads tensors of one GGUF file by name, telling `progress` the bytes read so far of
/// all the tensors' bytes. Matrices stay in the file's bytes (mapped) until a kernel set
/// wants them interleaved.
struct TensorReader<'a> {
    content: &'a Content,
    file: FileBytes,
    read: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl TensorReader<'_> {
    /// Where tensor `name`'s `len` bytes start in the file, counted as read.
    fn start(&mut self, name: &str, len: usize) -> Result<usize, CpuLoadError> {
        let info = &self.content.tensor_infos[name];
        let start = self.content.tensor_data_offset + info.offset;
        let file_len = (*self.file).as_ref().len() as u64;
        if start.saturating_add(len as u64) > file_len {
            return Err(CpuLoadError::Read {
                name: name.to_owned(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        self.read += len as u64;
        (self.progress)(self.read.min(self.total), self.total);
        Ok(start as usize)
    }

    fn bytes(&mut self, name: &str, len: usize) -> Result<&[u8], CpuLoadError> {
        let start = self.start(name, len)?;
        Ok(&(*self.file).as_ref()[start..start + len])
    }

    /// A `rows × cols` matrix (`rows` from the file when `None`).
    fn matrix(
        &mut self,
        name: &str,
        rows: Option<usize>,
        cols: usize,
    ) -> Result<QMatrix, CpuLoadError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| CpuLoadError::MissingTensor(name.to_owned()))?;
        let dims = info.shape.dims().to_vec();
        let file_rows = dims.first().copied().unwrap_or(0);
        let expected = vec![rows.unwrap_or(file_rows), cols];
        if dims != expected {
            return Err(CpuLoadError::Shape {
                name: name.to_owned(),
                shape: dims,
                expected,
            });
        }
        let ty = QuantType::from_ggml(info.ggml_dtype).ok_or(CpuLoadError::UnsupportedType {
            name: name.to_owned(),
            dtype: info.ggml_dtype,
        })?;
        let shape_error = || CpuLoadError::Shape {
            name: name.to_owned(),
            shape: dims.clone(),
            expected: expected.clone(),
        };
        let row_bytes = ty.row_bytes(cols).ok_or_else(shape_error)?;
        let start = self.start(name, file_rows * row_bytes)?;
        QMatrix::in_file(ty, file_rows, cols, self.file.clone(), start).ok_or_else(shape_error)
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>, CpuLoadError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| CpuLoadError::MissingTensor(name.to_owned()))?;
        if info.ggml_dtype != GgmlDType::F32 {
            return Err(CpuLoadError::UnsupportedType {
                name: name.to_owned(),
                dtype: info.ggml_dtype,
            });
        }
        if info.shape.elem_count() != len {
            return Err(CpuLoadError::Shape {
                name: name.to_owned(),
                shape: info.shape.dims().to_vec(),
                expected: vec![len],
            });
        }
        let bytes = self.bytes(name, len * 4)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};

    use super::*;

    /// Metadata of a small `arch` file with `layers` layers and `extra` keys (under the
    /// architecture's prefix).
    fn content(arch: &str, layers: u32, extra: &[(&str, Value)]) -> Content {
        let key = |name: &str| format!("{arch}.{name}");
        let mut metadata: HashMap<String, Value> = [
            (
                "general.architecture".to_owned(),
                Value::String(arch.into()),
            ),
            (key("embedding_length"), Value::U32(512)),
            (key("block_count"), Value::U32(layers)),
            (key("feed_forward_length"), Value::U32(1024)),
            (key("attention.head_count"), Value::U32(4)),
            (key("attention.head_count_kv"), Value::U32(2)),
            (key("attention.key_length"), Value::U32(256)),
            (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
            (key("rope.freq_base"), Value::F32(1_000_000.0)),
        ]
        .into_iter()
        .collect();
        for (name, value) in extra {
            metadata.insert(key(name), value.clone());
        }
        Content {
            magic: VersionedMagic::GgufV3,
            metadata,
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    fn windows(attention: &[LayerAttention]) -> Vec<Option<usize>> {
        attention.iter().map(|a| a.window).collect()
    }

    #[test]
    fn exp_is_within_two_units_in_the_last_place_over_its_range() {
        let mut worst = 0.0f64;
        for i in 0..=1_750_000 {
            let x = -87.0 + i as f32 * 1e-4;
            let exact = f64::from(x).exp();
            let ours = f64::from(exp(x));
            // One unit in the last place of an f32 near `exact`.
            let ulp = f64::from(f32::EPSILON) * 2f64.powi(exact.log2().floor() as i32);
            worst = worst.max((ours - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "{worst} units in the last place");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(1000.0).is_finite() && exp(-1000.0) > 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn gemma2_windows_every_other_layer_from_the_first() {
        let (config, attention) = read_config(&content("gemma2", 4, &[]), 8192).expect("config");
        // Gemma 2's window when the file names none, and its caps.
        let w = Some(4096);
        assert_eq!(windows(&attention), [w, None, w, None]);
        assert_eq!(config.attention_cap, Some(50.0));
        assert_eq!(config.output_cap, Some(30.0));
        // Windowed layers rotate as the global ones when the file says nothing else.
        assert!(attention.iter().all(|a| a.rope == attention[1].rope));
        // Global layers see the whole context.
        assert_eq!(config.max_positions, 8192);
    }

    #[test]
    fn yarn_ramps_between_the_frequencies_ggml_names() {
        // Qwen3's long-context files: a head of 128, base 10^6, 32,768 positions first.
        let extra = [
            ("rope.scaling.type", Value::String("yarn".into())),
            ("rope.scaling.factor", Value::F32(4.0)),
            ("rope.scaling.original_context_length", Value::U32(32768)),
            ("attention.key_length", Value::U32(128)),
        ];
        let (_, attention) = read_config(&content("qwen3", 2, &extra), 4096).expect("config");
        let rope = attention[0].rope;
        assert_eq!(rope.position_scale, 0.25);
        // 128 · ln(32768 / (β · 2π)) / (2 · ln 10^6) for β = 32 and 1: 23.6 and 39.7.
        let yarn = rope.yarn.expect("yarn");
        assert_eq!((yarn.low, yarn.high), (23.0, 40.0));
        assert_eq!(
            (yarn.kept(23), yarn.kept(40), yarn.kept(63)),
            (1.0, 0.0, 0.0)
        );
        assert!((yarn.kept(31) - 0.5294).abs() < 1e-4, "{}", yarn.kept(31));
        // Without the context it was trained on, there is no ramp to draw.
        let error = read_config(&content("qwen3", 2, &extra[..2]), 4096)
            .expect_err("refused")
            .to_string();
        assert!(error.contains("original_context_length"), "{error}");
    }

    #[test]
    fn gemma3_windows_five_layers_in_six_with_their_own_rotation() {
        let extra = [
            ("attention.sliding_window", Value::U32(512)),
            ("rope.scaling.type", Value::String("linear".into())),
            ("rope.scaling.factor", Value::F32(8.0)),
        ];
        let (config, attention) = read_config(&content("gemma3", 7, &extra), 4096).expect("config");
        let w = Some(512);
        assert_eq!(windows(&attention), [w, w, w, w, w, None, w]);
        let local = RopeScaling {
            base: 10000.0,
            position_scale: 1.0,
            yarn: None,
        };
        let global = RopeScaling {
            base: 1_000_000.0,
            position_scale: 0.125,
            yarn: None,
        };
        assert_eq!(attention[0].rope, local);
        assert_eq!(attention[5].rope, global);
        assert_eq!(config.attention_cap, None);
        assert_eq!(config.output_cap, None, "only where the file sets one");
        // Without a window every layer is global.
        let (_, attention) = read_config(&content("gemma3", 7, &[]), 4096).expect("config");
        assert_eq!(windows(&attention), [None; 7]);
    }

    #[test]
    fn a_window_pattern_in_the_file_overrides_the_default() {
        let flags = Value::Array([true, false, false].map(Value::Bool).to_vec());
        let extra = [
            ("attention.sliding_window", Value::U32(16)),
            ("attention.sliding_window_pattern", flags),
        ];
        let (_, attention) = read_config(&content("gemma3", 3, &extra), 64).expect("config");
        assert_eq!(windows(&attention), [Some(16), None, None]);
        let extra = [
            ("attention.sliding_window", Value::U32(16)),
            ("attention.sliding_window_pattern", Value::U32(3)),
        ];
        let (_, attention) = read_config(&content("gemma2", 4, &extra), 64).expect("config");
        assert_eq!(windows(&attention), [Some(16), Some(16), None, Some(16)]);
        // One flag per layer or none: a wrong count names the key.
        let short = Value::Array(vec![Value::Bool(true)]);
        let extra = [
            ("attention.sliding_window", Value::U32(16)),
            ("attention.sliding_window_pattern", short),
        ];
        let error = read_config(&content("gemma3", 3, &extra), 64).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("gemma3.attention.sliding_window_pattern"),
            "{error}"
        );
    }

    #[test]
    fn gemma_scales_queries_by_the_head_width_except_in_the_27b_models() {
        let (config, _) = read_config(&content("gemma2", 4, &[]), 64).expect("config");
        assert_eq!(config.query_scale, 1.0 / 256f32.sqrt());
        // Gemma 2 27B (46 layers) and Gemma 3 27B (62): embedding / heads = 128.
        for (arch, layers) in [("gemma2", 46), ("gemma3", 62)] {
            let (config, _) = read_config(&content(arch, layers, &[]), 64).expect("config");
            assert_eq!(config.query_scale, 1.0 / 128f32.sqrt(), "{arch}");
        }
        let (config, _) = read_config(&content("gemma3", 62, &[]), 64).expect("config");
        assert_eq!(config.embedding_scale, Some(512f32.sqrt()));
        assert_eq!(config.activation, Activation::Gelu);
    }

    #[test]
    fn a_missing_key_is_named() {
        let mut gemma = content("gemma2", 4, &[]);
        gemma.metadata.remove("gemma2.attention.head_count_kv");
        let error = read_config(&gemma, 64).expect_err("refused");
        assert!(
            error.to_string().contains("gemma2.attention.head_count_kv"),
            "{error}"
        );
    }

    #[test]
    fn soft_caps_bend_large_values_only() {
        let mut x = [0.1, -0.1, 100.0, -100.0];
        soft_cap(&mut x, 30.0);
        assert!((x[0] - 0.1).abs() < 1e-5 && (x[1] + 0.1).abs() < 1e-5);
        assert!(x[2] < 30.0 && x[2] > 29.0 && x[3] > -30.0);
        // GELU's tanh approximation at a few points (ggml's `ggml_gelu_f32`).
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu(-3.0) + 0.003_637).abs() < 1e-5);
    }
}
