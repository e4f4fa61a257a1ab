//! Whether a model fits a device: the memory a worker will need, estimated from the
//! GGUF file before anything loads it, against the device's free memory now.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use rbee_gguf::Summary;
use rbee_protocol::{DeviceInfo, DeviceKind, ErrorCode};

use crate::error::AgentError;

/// The context a slot of the worker's CPU engine gets without `--ctx-size` at most (the
/// worker's `DEFAULT_SLOT_CONTEXT`), and a llama model on candle at most whatever is
/// asked (candle's `quantized_llama::MAX_SEQ_LEN`); candle's other architectures get
/// their file's context.
const LLAMA_MAX_POSITIONS: u64 = 4096;
/// The worker's context when a file names none.
const DEFAULT_CONTEXT: u64 = 2048;
/// Bytes of a cached key or value: the CPU engine keeps IEEE halves, candle f32.
const CPU_ENGINE_KV_BYTES: u64 = 2;
const CANDLE_KV_BYTES: u64 = 4;
/// A CUDA context, cuBLAS's workspace and the kernels' modules.
const GPU_OVERHEAD: u64 = 512 << 20;
/// The worker's own code, tokenizer and buffers on the CPU.
const CPU_OVERHEAD: u64 = 128 << 20;
/// Sequence slots of a worker on the CPU when `RBEE_WORKER_PARALLEL` does not say
/// (the worker's `--parallel` default). Each slot has a cache for the whole context.
const DEFAULT_CPU_SLOTS: u64 = 4;

/// What a worker for one model will hold in its device's memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeed {
    /// The quantised weights, as large as they are in the file.
    pub weights: u64,
    /// The token embedding, which candle's models dequantise to f32.
    pub embedding: u64,
    /// Keys and values for every position of the worker's context, in each of its
    /// sequence slots.
    pub kv_cache: u64,
    /// The runtime: a CUDA context on a GPU, the process itself on the CPU. On a GPU it
    /// includes an f32 copy of the largest matrix (the output projection, the token
    /// embedding's shape): the worker's default `--gpu-matmul dmmv` dequantises each
    /// matrix for a prompt's product.
    pub overhead: u64,
}

impl MemoryNeed {
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.embedding)
            .saturating_add(self.kv_cache)
            .saturating_add(self.overhead)
    }
}

/// Estimates the need of a model of `file_bytes` whose header says `summary`, on a
/// device of `kind`, for a worker with `cpu_slots` sequence slots on the CPU and its
/// `--ctx-size`, if given (the worker's CPU engine runs its families with one cache per
/// slot, `ctx_size` split between them, each up to the file's context; candle has one).
pub fn estimate(
    file_bytes: u64,
    summary: &Summary,
    kind: DeviceKind,
    cpu_slots: u64,
    ctx_size: Option<u64>,
) -> MemoryNeed {
    let file_context = summary.context_length.unwrap_or(DEFAULT_CONTEXT);
    let llama = summary.architecture.as_deref() == Some("llama");
    let cpu_engine = runs_on_cpu_engine(summary) && kind == DeviceKind::Cpu;
    let (slots, slot_context, bytes) = if cpu_engine {
        let slots = cpu_slots.max(1);
        let context = match ctx_size {
            Some(total) => (total / slots).min(file_context),
            None => file_context.min(LLAMA_MAX_POSITIONS),
        };
        (slots, context, CPU_ENGINE_KV_BYTES)
    } else if llama {
        (1, file_context.min(LLAMA_MAX_POSITIONS), CANDLE_KV_BYTES)
    } else {
        (1, file_context, CANDLE_KV_BYTES)
    };
    let kv_cache = match kv_values_per_position(summary) {
        Some(values) => values
            .saturating_mul(bytes)
            .saturating_mul(slot_context)
            .saturating_mul(slots),
        // A header without the attention shape: allow a quarter of the weights, what
        // the cache of a small model at a few thousand positions comes to.
        None => file_bytes / 4,
    };
    let embedding = summary
        .token_embedding_elements
        .unwrap_or(0)
        .saturating_mul(4);
    MemoryNeed {
        weights: file_bytes,
        embedding,
        kv_cache,
        overhead: match kind {
            DeviceKind::Cpu => CPU_OVERHEAD,
            DeviceKind::Cuda | DeviceKind::Metal => GPU_OVERHEAD.saturating_add(embedding),
        },
    }
}

/// Whether the worker's CPU engine runs this architecture (with one cache per slot)
/// when the device is the CPU: the families of its `Family::of`.
fn runs_on_cpu_engine(summary: &Summary) -> bool {
    matches!(
        summary.architecture.as_deref(),
        Some("llama" | "qwen2" | "qwen3" | "phi3" | "gemma" | "gemma2" | "gemma3")
    )
}

/// Keys and values of one position across every layer:
/// `2 × layers × kv_heads × head width` values (the width `embedding / heads` unless
/// the file gives `key_length`).
fn kv_values_per_position(summary: &Summary) -> Option<u64> {
    let layers = summary.block_count?;
    let heads = summary.head_count.filter(|&heads| heads > 0)?;
    let kv_heads = summary.head_count_kv.unwrap_or(heads);
    let head_dim = match summary.key_length {
        Some(width) => width,
        None => summary.embedding_length? / heads,
    };
    2u64.checked_mul(layers)?
        .checked_mul(kv_heads)?
        .checked_mul(head_dim)
}

/// Reads the model's header and refuses, with a hint, a device whose free memory is
/// smaller than the estimated need.
/// `parallel` and `ctx_size` are the worker's `--parallel` and `--ctx-size`, when given.
pub fn check(
    model_path: &Path,
    device: &DeviceInfo,
    hive: &str,
    parallel: Option<u32>,
    ctx_size: Option<u32>,
) -> Result<MemoryNeed, AgentError> {
    let file = File::open(model_path).map_err(|e| AgentError::io("open", model_path, e))?;
    let file_bytes = file
        .metadata()
        .map_err(|e| AgentError::io("read the size of", model_path, e))?
        .len();
    let summary = rbee_gguf::summarize(&mut BufReader::new(file), file_bytes).map_err(|e| {
        AgentError::refused(
            ErrorCode::BadRequest,
            format!("{} is not a usable GGUF file: {e}", model_path.display()),
            "download or push the model again",
        )
    })?;
    let slots = parallel.map_or_else(cpu_slots, u64::from);
    let need = estimate(
        file_bytes,
        &summary,
        device.kind,
        slots,
        ctx_size.map(u64::from),
    );
    refuse_unless_fits(&need, device, hive)?;
    Ok(need)
}

/// The worker's sequence slots on the CPU: its `RBEE_WORKER_PARALLEL`, which it inherits
/// from the agent, or its default.
fn cpu_slots() -> u64 {
    std::env::var("RBEE_WORKER_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CPU_SLOTS)
}

/// The refusal when `need` is larger than what `device` has free.
pub fn refuse_unless_fits(
    need: &MemoryNeed,
    device: &DeviceInfo,
    hive: &str,
) -> Result<(), AgentError> {
    if need.total() <= device.memory_free {
        return Ok(());
    }
    let name = device.worker_device();
    Err(AgentError::refused(
        ErrorCode::InsufficientMemory,
        format!(
            "the model needs ~{} ({} weights, {} embedding, {} context cache, {} runtime); {name} on {hive} has {} free of {}",
            gib(need.total()),
            gib(need.weights),
            gib(need.embedding),
            gib(need.kv_cache),
            gib(need.overhead),
            gib(device.memory_free),
            gib(device.memory_total),
        ),
        "pick another device or hive, stop a worker that holds this one, or use a smaller quantisation of the model",
    ))
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// The shape of SmolLM2-135M, the test model: 30 layers, 9 heads, 3 of them for
    /// keys and values, hidden size 576, 8192 positions, a 49152 × 576 embedding.
    fn smollm2() -> Summary {
        Summary {
            architecture: Some("llama".to_owned()),
            context_length: Some(8192),
            block_count: Some(30),
            embedding_length: Some(576),
            head_count: Some(9),
            head_count_kv: Some(3),
            token_embedding_elements: Some(49152 * 576),
            ..Summary::default()
        }
    }

    fn device(kind: DeviceKind, free: u64) -> DeviceInfo {
        DeviceInfo {
            id: "GPU-0".to_owned(),
            kind,
            index: 0,
            name: "test device".to_owned(),
            memory_total: free.max(GIB),
            memory_free: free,
            compute_capability: None,
            driver: None,
            cores: None,
        }
    }

    #[test]
    fn the_estimate_adds_weights_embedding_cache_and_runtime() {
        let need = estimate(98_362_432, &smollm2(), DeviceKind::Cuda, 1, None);
        assert_eq!(need.weights, 98_362_432);
        assert_eq!(need.embedding, 49152 * 576 * 4);
        // 2 × 30 layers × 3 kv heads × 64 per head × 4 bytes (candle's f32), for the
        // 4096 positions candle gives a llama model (not the file's 8192).
        assert_eq!(need.kv_cache, 2 * 30 * 3 * 64 * 4 * 4096);
        // Asked for more, candle's llama still holds 4096.
        let asked = estimate(98_362_432, &smollm2(), DeviceKind::Cuda, 1, Some(8192));
        assert_eq!(asked.kv_cache, need.kv_cache);
        // A GPU also holds the output projection dequantised for a prompt's product.
        assert_eq!(need.overhead, GPU_OVERHEAD + 49152 * 576 * 4);
        let cpu = estimate(98_362_432, &smollm2(), DeviceKind::Cpu, 4, None);
        assert_eq!(cpu.overhead, CPU_OVERHEAD);
        // On the CPU every one of the worker's slots has a cache of its own, in halves.
        assert_eq!(cpu.kv_cache, 4 * 2 * 30 * 3 * 64 * 2 * 4096);
        // A context asked for is split between the slots, each up to the file's 8192.
        let asked = estimate(98_362_432, &smollm2(), DeviceKind::Cpu, 4, Some(65536));
        assert_eq!(asked.kv_cache, 4 * 2 * 30 * 3 * 64 * 2 * 8192);
        let asked = estimate(98_362_432, &smollm2(), DeviceKind::Cpu, 1, Some(6000));
        assert_eq!(asked.kv_cache, 2 * 30 * 3 * 64 * 2 * 6000);
    }

    #[test]
    fn other_architectures_keep_their_whole_context() {
        let qwen = Summary {
            architecture: Some("qwen2".to_owned()),
            context_length: Some(32768),
            block_count: Some(28),
            embedding_length: Some(3584),
            head_count: Some(28),
            head_count_kv: Some(4),
            ..Summary::default()
        };
        let need = estimate(4 * GIB, &qwen, DeviceKind::Cuda, 1, None);
        assert_eq!(need.kv_cache, 2 * 28 * 4 * 128 * 4 * 32768);
        // On the CPU the engine runs it: a cache per slot, each of at most 4096
        // positions.
        let cpu = estimate(4 * GIB, &qwen, DeviceKind::Cpu, 2, None);
        assert_eq!(cpu.kv_cache, 2 * 2 * 28 * 4 * 128 * 2 * 4096);
        // qwen3's heads are as wide as its key_length says, not embedding / heads.
        let qwen3 = Summary {
            architecture: Some("qwen3".to_owned()),
            embedding_length: Some(1024),
            head_count: Some(16),
            head_count_kv: Some(8),
            key_length: Some(128),
            ..qwen
        };
        let cpu = estimate(GIB, &qwen3, DeviceKind::Cpu, 1, None);
        assert_eq!(cpu.kv_cache, 2 * 28 * 8 * 128 * 2 * 4096);
        // Gemma runs on the CPU engine too: slots of 4096 positions, not its file's
        // 131,072 (Gemma 3 4B's shape: 34 layers, 4 kv heads of 256).
        let gemma3 = Summary {
            architecture: Some("gemma3".to_owned()),
            context_length: Some(131_072),
            block_count: Some(34),
            embedding_length: Some(2560),
            head_count: Some(8),
            head_count_kv: Some(4),
            key_length: Some(256),
            ..Summary::default()
        };
        let cpu = estimate(3 * GIB, &gemma3, DeviceKind::Cpu, 4, None);
        assert_eq!(cpu.kv_cache, 4 * 2 * 34 * 4 * 256 * 2 * 4096);
    }

    #[test]
    fn a_header_without_the_attention_shape_still_gets_a_cache_allowance() {
        let bare = Summary {
            architecture: Some("llama".to_owned()),
            ..Summary::default()
        };
        let need = estimate(8 * GIB, &bare, DeviceKind::Cuda, 1, None);
        assert_eq!(need.kv_cache, 2 * GIB);
        assert_eq!(need.embedding, 0);
        // No head count: no division by zero, the same allowance.
        let zero_heads = Summary {
            block_count: Some(4),
            embedding_length: Some(64),
            head_count: Some(0),
            ..bare
        };
        assert_eq!(
            estimate(8 * GIB, &zero_heads, DeviceKind::Cuda, 1, None).kv_cache,
            2 * GIB
        );
    }

    #[test]
    fn a_device_fits_when_its_free_memory_covers_the_whole_need() {
        let need = estimate(98_362_432, &smollm2(), DeviceKind::Cuda, 1, None);
        let total = need.total();
        for (free, fits) in [
            (total, true),
            (total + 1, true),
            (total - 1, false),
            (0, false),
        ] {
            let outcome = refuse_unless_fits(&need, &device(DeviceKind::Cuda, free), "h1");
            assert_eq!(outcome.is_ok(), fits, "free {free} for a need of {total}");
        }
    }

    #[test]
    fn the_refusal_names_need_device_free_memory_and_what_to_do() {
        let need = MemoryNeed {
            weights: 4 * GIB,
            embedding: GIB / 2,
            kv_cache: GIB,
            overhead: GPU_OVERHEAD,
        };
        let error = refuse_unless_fits(&need, &device(DeviceKind::Cuda, 3 * GIB), "gpu-a")
            .expect_err("does not fit");
        let detail = match error {
            AgentError::Refused(detail) => detail,
            other => panic!("a refusal, not {other:?}"),
        };
        assert_eq!(detail.code, ErrorCode::InsufficientMemory);
        assert!(
            detail.message.starts_with("the model needs ~6.0 GiB")
                && detail.message.contains("cuda:0 on gpu-a has 3.0 GiB free"),
            "{}",
            detail.message
        );
        let hint = detail.hint.unwrap_or_default();
        assert!(
            hint.contains("another device or hive") && hint.contains("smaller quantisation"),
            "{hint}"
        );
    }
}
