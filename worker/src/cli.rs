//! The worker's command line, turned into a [`WorkerConfig`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::WorkerConfig;
use crate::device::{DeviceSpec, GpuMatmul};
use crate::model::Engine;

/// The environment variable holding the worker token. A flag would show the secret
/// to every user of the machine through the process list.
pub const TOKEN_ENV: &str = "RBEE_WORKER_TOKEN";

/// Serve one GGUF model over HTTP+SSE and report to the queen.
#[derive(Debug, clap::Parser)]
#[command(name = "llm-worker-rbee", version)]
pub struct Args {
    /// This worker's id in the queen's registry.
    #[arg(long)]
    pub worker_id: String,
    /// The GGUF model file to load.
    #[arg(long)]
    pub model: PathBuf,
    /// The model as the operator named it (e.g. `org/repo:file.gguf`), reported to the
    /// queen; the file name when not given.
    #[arg(long)]
    pub model_id: Option<String>,
    /// The port to listen on; 0 picks a free one (the bound URL is printed on stdout).
    #[arg(long)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// The queen's base URL, e.g. http://10.0.0.1:8500.
    #[arg(long)]
    pub queen_url: String,
    /// The hive this worker runs on.
    #[arg(long, default_value = "")]
    pub hive_id: String,
    /// cpu, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 2.0)]
    pub heartbeat_interval: f64,
    /// Requests that may wait while every slot is busy; more get 503.
    #[arg(long, default_value_t = 8)]
    pub queue_capacity: usize,
    /// Requests generated at once, each in its own sequence slot with its own KV cache
    /// (the worker's CPU engine; candle runs one). Every step is one forward pass over
    /// all of them.
    #[arg(long, env = "RBEE_WORKER_PARALLEL", default_value_t = 4)]
    pub parallel: usize,
    /// KV-cache positions of all slots together, split evenly between them, each slot
    /// up to the model's context; by default every slot gets the model's context, at
    /// most 4096 positions.
    #[arg(long, env = "RBEE_WORKER_CTX_SIZE")]
    pub ctx_size: Option<usize>,
    /// Tokens one step may run: each generating slot's next token, then chunks of
    /// waiting prompts up to this many, so a long prompt delays the others' next token
    /// by one chunk at most.
    #[arg(long, default_value_t = 512)]
    pub batch_size: usize,
    /// The URL the queen should use to reach this worker, when the bound address is
    /// not it (e.g. when binding 0.0.0.0).
    #[arg(long)]
    pub advertise_url: Option<String>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "RBEE_LOG_JSON")]
    pub log_json: bool,
    /// Seconds in-flight requests may keep running after SIGTERM before they are cancelled.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// What computes tokens: `auto` (the worker's CPU engine where it handles the model
    /// on the CPU, with the fastest kernels the CPU runs; candle otherwise), `candle`, or
    /// the CPU engine with one kernel set: `portable` (no SIMD), `avx2`, `avx512` (with
    /// VNNI) or `neon`, where the CPU runs it.
    #[arg(long, env = "RBEE_WORKER_ENGINE", default_value = "auto")]
    pub engine: Engine,
    /// On a CUDA device, how quantized weights are multiplied: `dmmv` (dequantized
    /// inside the kernels, f32 activations), `q8` (candle's kernels with activations
    /// quantized to 8 bits), `f16` or `f32` (weights dequantized at load).
    #[arg(long, env = "RBEE_GPU_MATMUL", default_value = "dmmv")]
    pub gpu_matmul: GpuMatmul,
}

/// `llm-worker-rbee plan`: which engine the worker would run a model on, from its
/// header alone, printed as one JSON line (`{"engine":"cpu-avx512"}`, or
/// `{"refused":"…why…"}`); the hive's `model list` asks it for each model.
#[derive(Debug, clap::Parser)]
#[command(name = "llm-worker-rbee plan")]
pub struct PlanArgs {
    /// The GGUF model file.
    #[arg(long)]
    pub model: PathBuf,
    /// cpu, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// As the worker's `--engine`.
    #[arg(long, env = "RBEE_WORKER_ENGINE", default_value = "auto")]
    pub engine: Engine,
}

#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("--{name} must be a positive number of seconds, got {value}")]
    BadSeconds { name: &'static str, value: f64 },
    #[error("--queue-capacity must be at least 1")]
    ZeroQueue,
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error(
        "--ctx-size {ctx_size} leaves fewer than {MIN_SLOT_CONTEXT} positions to each of {parallel} slots"
    )]
    SmallContext { ctx_size: usize, parallel: usize },
}

/// The fewest positions a slot may have: a chat template alone takes dozens.
const MIN_SLOT_CONTEXT: usize = rbee_protocol::operation::MIN_SLOT_CONTEXT as usize;

fn seconds(name: &'static str, value: f64) -> Result<Duration, ArgsError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(ArgsError::BadSeconds { name, value })
}

impl Args {
    /// Validates the arguments and reads the worker token from the environment.
    pub fn into_config(self) -> Result<WorkerConfig, ArgsError> {
        if self.queue_capacity == 0 {
            return Err(ArgsError::ZeroQueue);
        }
        if self.parallel == 0 {
            return Err(ArgsError::Zero("parallel"));
        }
        if self.batch_size == 0 {
            return Err(ArgsError::Zero("batch-size"));
        }
        if let Some(ctx_size) = self.ctx_size
            && ctx_size / self.parallel < MIN_SLOT_CONTEXT
        {
            return Err(ArgsError::SmallContext {
                ctx_size,
                parallel: self.parallel,
            });
        }
        Ok(WorkerConfig {
            heartbeat_interval: seconds("heartbeat-interval", self.heartbeat_interval)?,
            drain_timeout: seconds("drain-timeout", self.drain_timeout)?,
            worker_id: self.worker_id,
            hive_id: self.hive_id,
            model: self.model,
            model_id: self.model_id,
            bind: self.bind,
            port: self.port,
            queen_url: self.queen_url,
            device: self.device,
            engine: self.engine,
            queue_capacity: self.queue_capacity,
            capacity: crate::model::Capacity {
                parallel: self.parallel,
                ctx_size: self.ctx_size,
            },
            batch_size: self.batch_size,
            advertise_url: self.advertise_url,
            token: std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
        })
    }
}
