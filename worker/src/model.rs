//! Loads a quantized GGUF file into the model its `general.architecture` names: the
//! worker's own CPU engine for llama files it handles on the CPU, candle otherwise.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cpu::{CpuLlama, Kernels, SequenceChunk};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{
    quantized_llama, quantized_phi3, quantized_qwen2, quantized_qwen3,
};

/// The architectures, as `general.architecture` spells them, that this worker can run.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "llama", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3",
];

/// The architectures candle's models run here (where it runs them right; see
/// [`candle_would_be_wrong`]): the arms of `load_reporting`'s match.
const CANDLE_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "phi3"];

/// candle's quantized llama precomputes rotary tables for this many positions only, so
/// a longer context advertised by the file cannot be used.
const LLAMA_MAX_POSITIONS: usize = quantized_llama::MAX_SEQ_LEN;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open model file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a readable GGUF file: {source}")]
    Corrupt {
        path: PathBuf,
        source: rbee_gguf::HeaderError,
    },
    #[error("{path} is not a readable GGUF file: {source}")]
    NotGguf {
        path: PathBuf,
        source: Box<candle_core::Error>,
    },
    #[error("{path} is truncated: its tensors need {needed} bytes but the file has only {actual}")]
    Truncated {
        path: PathBuf,
        needed: u64,
        actual: u64,
    },
    #[error("{path} has no `general.architecture` metadata, so its model type is unknown")]
    MissingArchitecture { path: PathBuf },
    #[error(
        "{path} holds a `{architecture}` model, which this worker cannot run (supported: {})",
        SUPPORTED_ARCHITECTURES.join(", ")
    )]
    UnsupportedArchitecture { path: PathBuf, architecture: String },
    #[error("cannot build the {architecture} model from {path}: {source}")]
    CpuWeights {
        path: PathBuf,
        architecture: String,
        source: crate::cpu::CpuLoadError,
    },
    #[error(
        "{path} holds a `{architecture}` model that no engine of this worker runs correctly: \
         {reason}; llama.cpp runs it"
    )]
    NoCorrectEngine {
        path: PathBuf,
        architecture: String,
        reason: &'static str,
    },
    #[error("cannot build the {architecture} model from {path}: {source}")]
    Weights {
        path: PathBuf,
        architecture: String,
        source: Box<candle_core::Error>,
    },
}

/// Why candle's model of `architecture` would compute something else than the file
/// means, where it would: no output beats fluent wrong output.
fn candle_would_be_wrong(architecture: &str, content: &gguf_file::Content) -> Option<&'static str> {
    if matches!(architecture, "gemma" | "gemma2" | "gemma3") {
        // candle's Gemma models continued prompts otherwise than llama.cpp; only the
        // CPU engine runs these files.
        return Some(
            "candle's Gemma models compute otherwise than llama.cpp, and the worker's CPU \
             engine runs Gemma only on `--device cpu`, where it handles every tensor's type",
        );
    }
    let scaled = content
        .metadata
        .get(&format!("{architecture}.rope.scaling.type"))
        .and_then(|v| v.to_string().ok())
        .is_some_and(|kind| kind != "none");
    if scaled
        || content
            .tensor_infos
            .keys()
            .any(|name| name.starts_with("rope_"))
    {
        return Some("its rotary embedding is scaled, which candle's models ignore");
    }
    let number = |name: &str| {
        content
            .metadata
            .get(&format!("{architecture}.{name}"))
            .and_then(|v| v.to_u32().ok())
    };
    let head = number("attention.key_length")
        .or_else(|| Some(number("embedding_length")? / number("attention.head_count")?.max(1)));
    if let (Some(rotated), Some(head)) = (number("rope.dimension_count"), head)
        && rotated != head
    {
        return Some("it rotates part of each head, which candle's models do not");
    }
    None
}

/// What the worker reports about its model in `/ready` and its heartbeats.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// The file name without directories, as the queen matches models by it.
    pub name: String,
    pub path: PathBuf,
    pub architecture: String,
    /// Prompt plus generated tokens of one request may not exceed this: the context of
    /// one sequence slot.
    pub context_length: usize,
    /// Sequences generated at once, each in its own slot (1 on candle).
    pub slots: usize,
    pub file_bytes: u64,
    /// What computes the tokens: `cpu-` and the kernel set (`cpu-avx2`, `cpu-portable`,
    /// ...) or `candle`.
    pub engine: String,
    #[serde(serialize_with = "serialize_millis")]
    pub load_time: Duration,
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

enum Weights {
    Cpu(Box<CpuLlama>),
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
}

/// Which code computes the tokens.
#[derive(Debug, Clone, Copy)]
pub enum Engine {
    /// The worker's CPU engine where it handles the device, architecture and weight
    /// types, with the fastest kernels the CPU runs; candle otherwise.
    Auto,
    /// candle, always.
    Candle,
    /// The CPU engine with the given kernels, candle where it does not apply.
    Cpu(Kernels),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown engine `{name}` (expected auto, candle, or a kernel set this CPU runs: {})",
    .runs.join(", ")
)]
pub struct UnknownEngine {
    name: String,
    runs: Vec<&'static str>,
}

impl std::str::FromStr for Engine {
    type Err = UnknownEngine;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Engine::Auto),
            "candle" => Ok(Engine::Candle),
            _ => Kernels::named(s)
                .map(Engine::Cpu)
                .ok_or_else(|| UnknownEngine {
                    name: s.to_owned(),
                    runs: Kernels::supported().iter().map(|k| k.name()).collect(),
                }),
        }
    }
}

/// Why a forward pass failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Cpu(#[from] crate::cpu::ForwardError),
    #[error("candle runs one sequence at a time, not {0}")]
    OneSequence(usize),
}

/// A slot's positions when no `ctx_size` is asked for (the file's context if shorter):
/// a bound on the memory a default worker takes, whatever context its file allows.
const DEFAULT_SLOT_CONTEXT: usize = 4096;

/// How many sequences a model is loaded to run at once, and the context they share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Sequence slots, each with its own KV cache (candle always has one).
    pub parallel: usize,
    /// Positions of all slots together, split evenly between them, up to the file's
    /// context a slot; `None` gives every slot [`DEFAULT_SLOT_CONTEXT`] positions at
    /// most.
    pub ctx_size: Option<usize>,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            parallel: 1,
            ctx_size: None,
        }
    }
}

impl Capacity {
    /// The positions of one slot for a model whose file allows `file_context`, on an
    /// engine that holds at most `engine_max` a sequence.
    fn slot_context(self, file_context: usize, slots: usize, engine_max: usize) -> usize {
        let cap = file_context.min(engine_max);
        self.ctx_size
            .map_or(cap.min(DEFAULT_SLOT_CONTEXT), |total| {
                (total / slots.max(1)).min(cap)
            })
    }
}

/// A loaded model with its KV caches, one per sequence slot. Not shareable: one
/// thread runs its forward passes.
pub struct Model {
    weights: Weights,
    device: Device,
    pub info: ModelInfo,
}

/// A loaded model and the GGUF metadata the tokenizer and chat template are built from.
pub struct LoadedGguf {
    pub model: Model,
    pub metadata: HashMap<String, Value>,
}

impl Model {
    /// Runs `tokens` at positions `position..` of slot 0 and returns the logits of the
    /// last one. Position 0 starts a new sequence.
    pub fn forward(&mut self, tokens: &[u32], position: usize) -> Result<Vec<f32>, ForwardError> {
        let chunk = SequenceChunk {
            slot: 0,
            tokens,
            position,
            logits: true,
        };
        Ok(self.forward_batch(&[chunk])?.pop().unwrap_or_default())
    }

    /// Runs several sequences' chunks in one pass and returns the logits of those that
    /// ask for them, in order. candle runs one chunk of slot 0 at a time, and its whole
    /// prompt at once (see [`Model::chunked_prefill`]).
    pub fn forward_batch(
        &mut self,
        chunks: &[SequenceChunk],
    ) -> Result<Vec<Vec<f32>>, ForwardError> {
        if let Weights::Cpu(m) = &mut self.weights {
            return Ok(m.forward_batch(chunks)?);
        }
        let [chunk] = chunks else {
            return Err(ForwardError::OneSequence(chunks.len()));
        };
        let (tokens, position) = (chunk.tokens, chunk.position);
        let input = || Tensor::new(tokens, &self.device)?.unsqueeze(0);
        let logits = match &mut self.weights {
            Weights::Cpu(_) => unreachable!("handled above"),
            Weights::Llama(m) => m.forward(&input()?, position)?,
            Weights::Qwen2(m) => m.forward(&input()?, position)?,
            Weights::Qwen3(m) => {
                if position == 0 {
                    m.clear_kv_cache();
                }
                m.forward(&input()?, position)?
            }
            Weights::Phi3(m) => m.forward(&input()?, position)?,
        };
        Ok(vec![logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?])
    }

    /// Sequence slots: the CPU engine's from [`Capacity`], 1 on candle.
    pub fn slots(&self) -> usize {
        match &self.weights {
            Weights::Cpu(m) => m.slots(),
            _ => 1,
        }
    }

    /// Copies positions `0..len` of slot `from`'s cache into slot `to`'s (see
    /// [`Model::chunked_prefill`]: only where caches may be continued).
    pub fn copy_prefix(&mut self, from: usize, to: usize, len: usize) {
        if let Weights::Cpu(m) = &mut self.weights {
            m.copy_prefix(from, to, len);
        }
    }

    /// Whether a slot's cache may be continued from any position: a prompt may then run
    /// in chunks, and a new request may keep the cached prefix it shares with the last
    /// one. candle's models replace their cache at position 0 and take a prompt whole.
    pub fn chunked_prefill(&self) -> bool {
        matches!(self.weights, Weights::Cpu(_))
    }
}

/// Reads `path`, checks it is a complete GGUF file of a supported architecture, and
/// builds its weights on `device`.
pub fn load(path: &Path, device: &Device) -> Result<LoadedGguf, LoadError> {
    load_with(path, device, Engine::Auto)
}

/// [`load`] with the choice of engine made by the caller.
pub fn load_with(path: &Path, device: &Device, engine: Engine) -> Result<LoadedGguf, LoadError> {
    load_for(path, device, engine, Capacity::default())
}

/// The file's metadata alone, the file checked as [`load`] checks it: for what is
/// built from the metadata (the tokenizer) while the weights load.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, Value>, LoadError> {
    Ok(read_header(path)?.content.metadata)
}

/// [`load_with`] for `capacity.parallel` sequences at once where the engine allows.
pub fn load_for(
    path: &Path,
    device: &Device,
    engine: Engine,
    capacity: Capacity,
) -> Result<LoadedGguf, LoadError> {
    load_reporting(path, device, engine, capacity, &mut |_, _| {})
}

/// [`load_for`], telling `progress` how many bytes of the weights are read of how many
/// as the load goes (the CPU engine reads tensor by tensor; candle's models say so
/// once, at the end).
pub fn load_reporting(
    path: &Path,
    device: &Device,
    engine: Engine,
    capacity: Capacity,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<LoadedGguf, LoadError> {
    let started = Instant::now();
    let Header {
        mut reader,
        content,
        file_bytes,
        data_len,
        architecture,
    } = read_header(path)?;
    let context_key = format!("{architecture}.context_length");
    let file_context = content
        .metadata
        .get(&context_key)
        .and_then(|v| v.to_u32().ok())
        .map_or(2048, |n| n as usize);
    let metadata = content.metadata.clone();

    let weights_error = |source| LoadError::Weights {
        path: path.to_owned(),
        architecture: architecture.clone(),
        source: Box::new(source),
    };
    let cpu_kernels = choose_engine(path, &content, &architecture, device.is_cpu(), engine)?;
    let (weights, context_length) = match architecture.as_str() {
        // Set only where the CPU engine runs this file (`CpuLlama::supports`).
        _ if cpu_kernels.is_some() => {
            let slots = capacity.parallel.max(1);
            let context_length = capacity.slot_context(file_context, slots, usize::MAX);
            let kernels = cpu_kernels.unwrap_or(Kernels::Portable);
            let model = CpuLlama::load(
                &content,
                map_weights(path, reader.get_ref())?,
                context_length,
                slots,
                kernels,
                progress,
            )
            .map_err(|source| LoadError::CpuWeights {
                path: path.to_owned(),
                architecture: architecture.clone(),
                source,
            })?;
            // The engine may hold fewer positions (a sliding window).
            let context_length = model.slot_context();
            (Weights::Cpu(Box::new(model)), context_length)
        }
        "llama" => (
            Weights::Llama(
                quantized_llama::ModelWeights::from_gguf(content, &mut reader, device)
                    .map_err(weights_error)?,
            ),
            capacity.slot_context(file_context, 1, LLAMA_MAX_POSITIONS),
        ),
        "qwen2" => (
            Weights::Qwen2(
                quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, device)
                    .map_err(weights_error)?,
            ),
            file_context,
        ),
        "qwen3" => (
            Weights::Qwen3(
                quantized_qwen3::ModelWeights::from_gguf(content, &mut reader, device)
                    .map_err(weights_error)?,
            ),
            file_context,
        ),
        "phi3" => (
            Weights::Phi3(
                quantized_phi3::ModelWeights::from_gguf(false, content, &mut reader, device)
                    .map_err(weights_error)?,
            ),
            file_context,
        ),
        _ => {
            return Err(LoadError::UnsupportedArchitecture {
                path: path.to_owned(),
                architecture,
            });
        }
    };

    progress(data_len, data_len);
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (engine, slots) = match &weights {
        Weights::Cpu(m) => (format!("cpu-{}", m.kernels().name()), m.slots()),
        _ => ("candle".to_owned(), 1),
    };
    // candle's other models size their caches as they go; a smaller `ctx_size` still
    // bounds what a request may use.
    let context_length = capacity
        .ctx_size
        .map_or(context_length, |total| context_length.min(total));
    let info = ModelInfo {
        name,
        engine,
        path: path.to_owned(),
        architecture,
        context_length,
        slots,
        file_bytes,
        load_time: started.elapsed(),
    };
    Ok(LoadedGguf {
        model: Model {
            weights,
            device: device.clone(),
            info,
        },
        metadata,
    })
}

/// `file` mapped for the CPU engine, which reads the rows it keeps in GGML's layout in
/// place (as llama.cpp does) and interleaves the others from the mapping, so that no
/// weight is copied twice.
fn map_weights(path: &Path, file: &File) -> Result<crate::cpu::FileBytes, LoadError> {
    // SAFETY: the mapping is read-only and no one changes the file while it is mapped:
    // the hive writes models under a temporary name and renames them into place, so a
    // file the worker has open is never rewritten. (A file truncated by another program
    // would fault on access, as llama.cpp's mapping would.)
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|source| LoadError::Open {
        path: path.to_owned(),
        source,
    })?;
    Ok(std::sync::Arc::new(map))
}

/// A GGUF file's header, read and checked: where loading and planning both start.
struct Header {
    reader: BufReader<File>,
    content: gguf_file::Content,
    file_bytes: u64,
    /// Bytes from the start of the tensor data to the end of the last tensor.
    data_len: u64,
    architecture: String,
}

fn read_header(path: &Path) -> Result<Header, LoadError> {
    let open_error = |source| LoadError::Open {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(open_error)?;
    let file_bytes = file.metadata().map_err(open_error)?.len();
    let mut reader = BufReader::new(file);
    rbee_gguf::check(&mut reader, file_bytes).map_err(|source| LoadError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    let content = gguf_file::Content::read(&mut reader).map_err(|source| LoadError::NotGguf {
        path: path.to_owned(),
        source: Box::new(source),
    })?;

    // candle reads tensors lazily and would fail deep inside a model constructor with a
    // bare I/O error; checking the extent up front names the real problem.
    let data_len = tensor_data_len(&content);
    let needed = content.tensor_data_offset.saturating_add(data_len);
    if needed > file_bytes {
        return Err(LoadError::Truncated {
            path: path.to_owned(),
            needed,
            actual: file_bytes,
        });
    }

    let architecture = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| LoadError::MissingArchitecture {
            path: path.to_owned(),
        })?;
    Ok(Header {
        reader,
        content,
        file_bytes,
        data_len,
        architecture,
    })
}

/// The CPU engine's kernels where it runs the file (`cpu`: the device is the CPU), or
/// `None` for candle; an error where no engine would compute what the file means.
fn choose_engine(
    path: &Path,
    content: &gguf_file::Content,
    architecture: &str,
    cpu: bool,
    engine: Engine,
) -> Result<Option<Kernels>, LoadError> {
    let cpu_kernels = match engine {
        Engine::Auto => Some(Kernels::detect()),
        Engine::Candle => None,
        Engine::Cpu(kernels) => Some(kernels),
    }
    .filter(|_| cpu && CpuLlama::supports(content));
    if cpu_kernels.is_none()
        && let Some(reason) = candle_would_be_wrong(architecture, content)
    {
        return Err(LoadError::NoCorrectEngine {
            path: path.to_owned(),
            architecture: architecture.to_owned(),
            reason,
        });
    }
    Ok(cpu_kernels)
}

/// The engine [`load_with`] would run the file on (`cpu-avx512`, `candle`, …), or why
/// it would refuse it, from the header alone: `model list` shows it without loading.
pub fn plan(path: &Path, cpu: bool, engine: Engine) -> Result<String, LoadError> {
    let header = read_header(path)?;
    match choose_engine(path, &header.content, &header.architecture, cpu, engine)? {
        Some(kernels) => Ok(format!("cpu-{}", kernels.name())),
        None if CANDLE_ARCHITECTURES.contains(&header.architecture.as_str()) => {
            Ok("candle".to_owned())
        }
        None => Err(LoadError::UnsupportedArchitecture {
            path: path.to_owned(),
            architecture: header.architecture,
        }),
    }
}

/// The number of bytes from the start of the tensor data to the end of its last tensor.
fn tensor_data_len(content: &gguf_file::Content) -> u64 {
    content
        .tensor_infos
        .values()
        .map(|info| {
            let blocks = (info.shape.elem_count() / info.ggml_dtype.block_size()) as u64;
            // The header check bounds element counts, but offsets are unchecked input.
            info.offset
                .saturating_add(blocks.saturating_mul(info.ggml_dtype.type_size() as u64))
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};

    /// Writes a GGUF file with one small tensor and the given architecture.
    fn write_gguf(dir: &Path, architecture: &str) -> PathBuf {
        let path = dir.join(format!("{architecture}.gguf"));
        let mut file = File::create(&path).expect("create test gguf");
        let tensor = Tensor::zeros((4, 32), DType::F32, &Device::Cpu).expect("tensor");
        let qtensor = QTensor::quantize(&tensor, GgmlDType::Q8_0).expect("quantize");
        let arch = Value::String(architecture.to_owned());
        gguf_file::write(
            &mut file,
            &[("general.architecture", &arch)],
            &[("token_embd.weight", &qtensor)],
        )
        .expect("write gguf");
        path
    }

    #[test]
    fn a_slot_takes_the_asked_context_up_to_the_files() {
        let default = Capacity::default();
        let asked = |ctx_size, parallel| Capacity {
            parallel,
            ctx_size: Some(ctx_size),
        };
        // Without a size, a slot holds the file's context up to 4,096 positions.
        assert_eq!(default.slot_context(32768, 1, usize::MAX), 4096);
        assert_eq!(default.slot_context(2048, 1, usize::MAX), 2048);
        // Asked for, the context is split between the slots, each up to the file's.
        assert_eq!(asked(65536, 4).slot_context(32768, 4, usize::MAX), 16384);
        assert_eq!(asked(200_000, 1).slot_context(32768, 1, usize::MAX), 32768);
        // candle's llama holds 4,096 whatever is asked.
        assert_eq!(
            asked(65536, 1).slot_context(32768, 1, LLAMA_MAX_POSITIONS),
            4096
        );
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_gguf(dir.path(), "mamba");
        let err = load(&path, &Device::Cpu).err().expect("must fail");
        assert!(
            matches!(err, LoadError::UnsupportedArchitecture { .. }),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("mamba") && message.contains("mamba.gguf"),
            "{message}"
        );
    }

    #[test]
    fn truncated_file_is_reported_with_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_gguf(dir.path(), "llama");
        let len = std::fs::metadata(&path).expect("stat").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        // The one tensor holds 136 bytes; cutting 100 leaves the header whole.
        file.set_len(len - 100).expect("truncate");
        let err = load(&path, &Device::Cpu).err().expect("must fail");
        assert!(matches!(err, LoadError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn garbage_is_not_gguf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("garbage.gguf");
        std::fs::write(&path, b"this is not a model at all").expect("write");
        let err = load(&path, &Device::Cpu).err().expect("must fail");
        assert!(matches!(err, LoadError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn engine_names_parse() {
        assert!(matches!("auto".parse(), Ok(Engine::Auto)));
        assert!(matches!("candle".parse(), Ok(Engine::Candle)));
        assert!(matches!(
            "portable".parse(),
            Ok(Engine::Cpu(Kernels::Portable))
        ));
        let err = "fast".parse::<Engine>().expect_err("unknown name");
        assert!(err.to_string().contains("fast"), "{err}");
        assert!(err.to_string().contains("portable"), "{err}");
        for kernels in Kernels::supported() {
            let Ok(Engine::Cpu(parsed)) = kernels.name().parse() else {
                panic!("{} does not parse", kernels.name());
            };
            assert_eq!(parsed.name(), kernels.name());
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load(Path::new("/nonexistent/model.gguf"), &Device::Cpu)
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");
    }
}
