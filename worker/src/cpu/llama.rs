//! A llama-architecture transformer on the CPU: quantized weights, f32 activations
//! quantized to Q8 blocks before each matrix product, and an f32 KV cache.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Content;
use rayon::prelude::*;

use super::matrix::QMatrix;
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

#[derive(Debug, Clone, Copy)]
struct Config {
    dim: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
    eps: f32,
    /// Positions of one sequence slot's KV cache: the context of one sequence.
    max_positions: usize,
}

impl Config {
    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Query, key and value projections stacked: one pass computes all three.
    qkv: QMatrix,
    attn_out: QMatrix,
    ffn_norm: Vec<f32>,
    /// Gate and up projections stacked.
    gate_up: QMatrix,
    down: QMatrix,
}

/// One sequence slot's keys and values, per layer, for positions `0..max_positions`.
struct KvCache {
    layers: Vec<LayerCache>,
}

struct LayerCache {
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl KvCache {
    fn new(c: &Config, layers: usize) -> KvCache {
        let len = c.max_positions * c.kv_dim();
        KvCache {
            layers: (0..layers)
                // Zeroed allocations are mapped lazily: unused positions cost no memory.
                .map(|_| LayerCache {
                    keys: vec![0.0; len],
                    values: vec![0.0; len],
                })
                .collect(),
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
    scores: Vec<f32>,
    projected: Vec<f32>,
    gate_up: Vec<f32>,
    hidden: Vec<f32>,
    transposed: Vec<f32>,
    /// Rows of logits, one per chunk that asked for them.
    logit_rows: usize,
    logits: Vec<f32>,
}

/// A llama model loaded for the CPU engine, with one KV cache per sequence slot and
/// its threads.
pub struct CpuLlama {
    config: Config,
    kernels: Kernels,
    embedding: QMatrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// `None` when the output projection is the embedding (tied weights).
    output: Option<QMatrix>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    caches: Vec<KvCache>,
    scratch: Scratch,
    /// Shared so that a forward pass can run inside it while borrowing the model.
    pool: Arc<rayon::ThreadPool>,
}

impl CpuLlama {
    /// Whether every matrix of this llama file has a type the engine handles; when not,
    /// the caller runs the model with candle instead.
    pub fn supports(content: &Content) -> bool {
        let arch_ok = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .is_some_and(|a| a == "llama")
            && !content.metadata.contains_key("llama.expert_count");
        arch_ok
            && content.tensor_infos.iter().all(|(name, info)| {
                let is_norm = name.ends_with("_norm.weight");
                if is_norm {
                    info.ggml_dtype == GgmlDType::F32
                } else if name.ends_with(".weight") {
                    QuantType::from_ggml(info.ggml_dtype).is_some()
                } else {
                    // Rotary tables and other extras change the model: leave it to candle.
                    false
                }
            })
    }

    /// Reads the weights of a llama GGUF file, with `slots` sequence slots whose KV
    /// caches hold `max_positions` positions each.
    pub fn load<R: Read + Seek>(
        content: &Content,
        reader: &mut R,
        max_positions: usize,
        slots: usize,
        kernels: Kernels,
    ) -> Result<CpuLlama, CpuLoadError> {
        if content.metadata.contains_key("llama.expert_count") {
            return Err(CpuLoadError::Unsupported("mixture-of-experts layers"));
        }
        let number = |key: &str| {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_u32().ok())
                .map(|n| n as usize)
                .ok_or_else(|| CpuLoadError::Metadata(key.to_owned()))
        };
        let heads = number("llama.attention.head_count")?;
        let dim = number("llama.embedding_length")?;
        let layers = number("llama.block_count")?;
        let config = Config {
            dim,
            heads,
            kv_heads: number("llama.attention.head_count_kv")?,
            head_dim: number("llama.rope.dimension_count")?,
            ffn: number("llama.feed_forward_length")?,
            eps: content
                .metadata
                .get("llama.attention.layer_norm_rms_epsilon")
                .and_then(|v| v.to_f32().ok())
                .ok_or_else(|| {
                    CpuLoadError::Metadata("llama.attention.layer_norm_rms_epsilon".into())
                })?,
            max_positions,
        };
        let freq_base = content
            .metadata
            .get("llama.rope.freq_base")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(10000.0);
        if config.heads == 0
            || config.kv_heads == 0
            || !config.heads.is_multiple_of(config.kv_heads)
            || config.head_dim * config.heads != dim
            || !config.head_dim.is_multiple_of(2)
        {
            return Err(CpuLoadError::Unsupported(
                "an attention shape other than llama's",
            ));
        }

        let mut tensors = TensorReader { content, reader };
        let embedding = tensors.matrix("token_embd.weight", None, dim)?;
        let vocab = embedding.rows();
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let name = |part: &str| format!("blk.{i}.{part}.weight");
            let qkv = vec![
                tensors.matrix(&name("attn_q"), Some(dim), dim)?,
                tensors.matrix(&name("attn_k"), Some(config.kv_dim()), dim)?,
                tensors.matrix(&name("attn_v"), Some(config.kv_dim()), dim)?,
            ];
            let gate_up = vec![
                tensors.matrix(&name("ffn_gate"), Some(config.ffn), dim)?,
                tensors.matrix(&name("ffn_up"), Some(config.ffn), dim)?,
            ];
            blocks.push(Layer {
                attn_norm: tensors.vector(&name("attn_norm"), dim)?,
                qkv: QMatrix::stack(qkv).ok_or(CpuLoadError::Unsupported("mismatched widths"))?,
                attn_out: tensors.matrix(&name("attn_output"), Some(dim), dim)?,
                ffn_norm: tensors.vector(&name("ffn_norm"), dim)?,
                gate_up: QMatrix::stack(gate_up)
                    .ok_or(CpuLoadError::Unsupported("mismatched widths"))?,
                down: tensors.matrix(&name("ffn_down"), Some(dim), config.ffn)?,
            });
        }
        let output = if content.tensor_infos.contains_key("output.weight") {
            Some(tensors.matrix("output.weight", Some(vocab), dim)?)
        } else {
            None
        };
        let output_norm = tensors.vector("output_norm.weight", dim)?;
        let (cos, sin) = rope_tables(config.head_dim, freq_base, max_positions);
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
            cos,
            sin,
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
        let end = len.min(self.config.max_positions) * self.config.kv_dim();
        let (source, target) = if from < to {
            let (left, right) = self.caches.split_at_mut(to);
            (&left[from], &mut right[0])
        } else {
            let (left, right) = self.caches.split_at_mut(from);
            (&right[0], &mut left[to])
        };
        for (source, target) in source.layers.iter().zip(&mut target.layers) {
            target.keys[..end].copy_from_slice(&source.keys[..end]);
            target.values[..end].copy_from_slice(&source.values[..end]);
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
        pool.install(|| self.run(&tokens, &spans, &wanted));
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
            spans.len(),
            wanted.len(),
            self.layers.first().map_or(0, |l| l.qkv.rows()),
            vocab,
        );
        let kernels = self.kernels;
        let (dim, kv_dim, hd) = (c.dim, c.kv_dim(), c.head_dim);
        let qkv_width = dim + 2 * kv_dim;

        for (t, &token) in tokens.iter().enumerate() {
            self.embedding
                .dequantize_row(token as usize, &mut s.x[t * dim..(t + 1) * dim]);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm_rows(&s.x[..n * dim], &layer.attn_norm, c.eps, &mut s.normed);
            quantize_rows(kernels, &s.normed[..n * dim], dim, &mut s.quantized);
            layer
                .qkv
                .matmul(kernels, &s.quantized, n, &mut s.qkv, &mut s.transposed);
            for span in spans {
                let cache = &mut self.caches[span.slot].layers[l];
                for t in 0..span.len {
                    let pos = span.position + t;
                    let row = &mut s.qkv[(span.first + t) * qkv_width..][..qkv_width];
                    let (q, kv) = row.split_at_mut(dim);
                    let (k, v) = kv.split_at_mut(kv_dim);
                    let half = hd / 2;
                    let (cos, sin) = (
                        &self.cos[pos * half..(pos + 1) * half],
                        &self.sin[pos * half..(pos + 1) * half],
                    );
                    for head in q.chunks_exact_mut(hd).chain(k.chunks_exact_mut(hd)) {
                        rope(head, cos, sin);
                    }
                    cache.keys[pos * kv_dim..(pos + 1) * kv_dim].copy_from_slice(k);
                    cache.values[pos * kv_dim..(pos + 1) * kv_dim].copy_from_slice(v);
                }
            }
            attention(kernels, &c, &self.caches, l, spans, s, n);
            quantize_rows(kernels, &s.attention[..n * dim], dim, &mut s.quantized);
            layer.attn_out.matmul(
                kernels,
                &s.quantized,
                n,
                &mut s.projected,
                &mut s.transposed,
            );
            add(&mut s.x[..n * dim], &s.projected[..n * dim]);

            rms_norm_rows(&s.x[..n * dim], &layer.ffn_norm, c.eps, &mut s.normed);
            quantize_rows(kernels, &s.normed[..n * dim], dim, &mut s.quantized);
            layer
                .gate_up
                .matmul(kernels, &s.quantized, n, &mut s.gate_up, &mut s.transposed);
            for t in 0..n {
                let row = &s.gate_up[t * 2 * c.ffn..(t + 1) * 2 * c.ffn];
                let (gate, up) = row.split_at(c.ffn);
                for ((h, g), u) in s.hidden[t * c.ffn..(t + 1) * c.ffn]
                    .iter_mut()
                    .zip(gate)
                    .zip(up)
                {
                    *h = g / (1.0 + (-g).exp()) * u;
                }
            }
            quantize_rows(kernels, &s.hidden[..n * c.ffn], c.ffn, &mut s.quantized);
            layer.down.matmul(
                kernels,
                &s.quantized,
                n,
                &mut s.projected,
                &mut s.transposed,
            );
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
        quantize_rows(kernels, &s.normed[..m * dim], dim, &mut s.quantized);
        let output = self.output.as_ref().unwrap_or(&self.embedding);
        output.matmul(kernels, &s.quantized, m, &mut s.logits, &mut s.transposed);
    }
}

impl Scratch {
    /// Sizes the buffers for `tokens` rows in `chunks` chunks with `logit_rows` rows of
    /// logits; they only grow.
    fn reserve(
        &mut self,
        c: &Config,
        tokens: usize,
        chunks: usize,
        logit_rows: usize,
        qkv_width: usize,
        vocab: usize,
    ) {
        let scores = chunks * c.heads * c.max_positions;
        if self.scores.len() < scores {
            self.scores = vec![0.0; scores];
        }
        if self.tokens >= tokens && self.logit_rows >= logit_rows && !self.logits.is_empty() {
            return;
        }
        let n = tokens.max(self.tokens);
        let m = logit_rows.max(self.logit_rows).max(1);
        self.tokens = n;
        self.logit_rows = m;
        let widest = c.dim.max(c.ffn);
        self.x = vec![0.0; n * c.dim];
        self.normed = vec![0.0; n * c.dim];
        self.quantized = vec![Q8Block::default(); n * widest / QK];
        self.qkv = vec![0.0; n * qkv_width];
        self.attention = vec![0.0; n * c.dim];
        self.by_head = vec![0.0; n * c.dim];
        self.projected = vec![0.0; n * c.dim];
        self.gate_up = vec![0.0; n * 2 * c.ffn];
        self.hidden = vec![0.0; n * c.ffn];
        self.transposed = vec![0.0; (n * qkv_width.max(2 * c.ffn)).max(m * vocab)];
        self.logits = vec![0.0; m * vocab];
    }
}

/// Causal attention of every chunk's tokens over its own sequence's cache, one
/// (chunk, head) pair per task; the result goes to `scratch.attention` as `n` rows of
/// `dim`.
fn attention(
    kernels: Kernels,
    c: &Config,
    caches: &[KvCache],
    layer: usize,
    spans: &[Span],
    s: &mut Scratch,
    n: usize,
) {
    let (dim, kv_dim, hd) = (c.dim, c.kv_dim(), c.head_dim);
    let qkv_width = dim + 2 * kv_dim;
    let group = c.heads / c.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let qkv = &s.qkv;
    // `by_head` holds each chunk's rows head by head: chunk i's head h is the
    // `len × hd` block at `(first · dim) + h · len · hd`.
    let mut tasks = Vec::with_capacity(spans.len() * c.heads);
    let mut rest = &mut s.by_head[..n * dim];
    for span in spans {
        let (mine, after) = rest.split_at_mut(span.len * dim);
        rest = after;
        for (head, out) in mine.chunks_exact_mut(span.len * hd).enumerate() {
            tasks.push((*span, head, out));
        }
    }
    tasks
        .into_par_iter()
        .zip(s.scores.par_chunks_mut(c.max_positions))
        .for_each(|((span, head, out), scores)| {
            let cache = &caches[span.slot].layers[layer];
            let kv_offset = (head / group) * hd;
            for t in 0..span.len {
                let q = &qkv[(span.first + t) * qkv_width + head * hd..][..hd];
                let seen = span.position + t + 1;
                let scores = &mut scores[..seen];
                for (j, score) in scores.iter_mut().enumerate() {
                    let k = &cache.keys[j * kv_dim + kv_offset..][..hd];
                    *score = kernels.dot_f32(q, k) * scale;
                }
                softmax(scores);
                let out = &mut out[t * hd..(t + 1) * hd];
                out.fill(0.0);
                for (j, &w) in scores.iter().enumerate() {
                    let v = &cache.values[j * kv_dim + kv_offset..][..hd];
                    kernels.axpy(w, v, out);
                }
            }
        });
    for span in spans {
        let base = span.first * dim;
        for head in 0..c.heads {
            for t in 0..span.len {
                s.attention[(span.first + t) * dim + head * hd..][..hd]
                    .copy_from_slice(&s.by_head[base + head * span.len * hd + t * hd..][..hd]);
            }
        }
    }
}

fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
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

fn quantize_rows(kernels: Kernels, x: &[f32], width: usize, out: &mut [Q8Block]) {
    for (row, blocks) in x.chunks_exact(width).zip(out.chunks_exact_mut(width / QK)) {
        kernels.quantize_row(row, blocks);
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

/// Rotates consecutive pairs of one head, as GGUF llama weights expect.
fn rope(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, c), s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * c - b * s;
        pair[1] = a * s + b * c;
    }
}

fn rope_tables(head_dim: usize, base: f32, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for pos in 0..positions {
        for i in 0..half {
            let freq = 1.0 / base.powf((2 * i) as f32 / head_dim as f32);
            let angle = pos as f32 * freq;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Reads tensors of one GGUF file by name.
struct TensorReader<'a, R> {
    content: &'a Content,
    reader: &'a mut R,
}

impl<R: Read + Seek> TensorReader<'_, R> {
    fn bytes(&mut self, name: &str, len: usize) -> Result<Vec<u8>, CpuLoadError> {
        let info = &self.content.tensor_infos[name];
        let read_error = |source| CpuLoadError::Read {
            name: name.to_owned(),
            source,
        };
        let start = self.content.tensor_data_offset + info.offset;
        self.reader
            .seek(SeekFrom::Start(start))
            .map_err(read_error)?;
        let mut data = vec![0; len];
        self.reader.read_exact(&mut data).map_err(read_error)?;
        Ok(data)
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
        let data = self.bytes(name, file_rows * row_bytes)?;
        QMatrix::new(ty, file_rows, cols, data).ok_or_else(shape_error)
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
