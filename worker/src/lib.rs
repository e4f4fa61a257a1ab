//! llm-worker-rbee: loads one GGUF model with candle, serves inference over HTTP+SSE
//! and heartbeats to the queen. It knows nothing of SSH, hives' inventories or other
//! workers.

pub mod chat;
pub mod cli;
pub mod cpu;
pub mod device;
mod engine;
mod heartbeat;
pub mod model;
pub mod sampling;
mod server;
mod slots;
mod status;
pub mod text_stream;
pub mod tokenizer;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use candle_core::Device;
use rbee_protocol::{WorkerLine, WorkerState};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::chat::{ChatTemplate, ChatTemplateError};
use crate::device::{DeviceError, DeviceSpec};
use crate::heartbeat::{Heartbeat, Identity};
use crate::model::LoadError;
use crate::server::{AppState, ServedModel};
use crate::status::WorkerStatus;
use crate::tokenizer::{TextTokenizer, TokenizerError};

/// Everything the worker needs to run, already validated.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub worker_id: String,
    pub hive_id: String,
    pub model: PathBuf,
    /// The model as the operator named it; reported in heartbeats.
    pub model_id: Option<String>,
    pub bind: IpAddr,
    pub port: u16,
    pub queen_url: String,
    pub device: DeviceSpec,
    pub engine: model::Engine,
    pub heartbeat_interval: Duration,
    pub queue_capacity: usize,
    /// Sequence slots and the context they share (the CPU engine; candle has one).
    pub capacity: model::Capacity,
    /// Tokens one engine step may run, prompt chunks included.
    pub batch_size: usize,
    pub advertise_url: Option<String>,
    pub drain_timeout: Duration,
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot build the tokenizer of {path}: {source}")]
    Tokenizer {
        path: PathBuf,
        source: TokenizerError,
    },
    #[error("cannot use the chat template of {path}: {source}")]
    ChatTemplate {
        path: PathBuf,
        source: ChatTemplateError,
    },
    #[error("cannot start the engine thread: {0}")]
    Engine(std::io::Error),
    #[error("the model loader crashed")]
    LoaderCrashed,
}

/// Runs the worker until `shutdown` completes: listens, heartbeats, loads the model,
/// serves it, then drains in-flight requests and sends a final `stopping` heartbeat.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let device = device::open(config.device)?;
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WorkerError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| WorkerError::Bind { addr, source })?;
    let url = config.advertise_url.clone().unwrap_or_else(|| {
        let host = if bound.ip().is_unspecified() {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), bound.port())
        } else {
            bound
        };
        format!("http://{host}")
    });
    // A spawner reads this line to learn the port when it passed `--port 0`.
    println!(
        "{}",
        WorkerLine::Listening {
            url: url.clone(),
            worker_id: config.worker_id.clone(),
        }
        .to_line()
    );
    tracing::info!(%url, model = %config.model.display(), device = %config.device, "worker listening");

    let status = Arc::new(WorkerStatus::default());
    let served: Arc<OnceLock<ServedModel>> = Arc::new(OnceLock::new());
    let model_name = config.model.file_name().map_or_else(
        || config.model.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );

    let heartbeat_stop = CancellationToken::new();
    let (first_sent, first_sent_rx) = oneshot::channel();
    let heartbeat = Heartbeat {
        queen_url: config.queen_url.clone(),
        identity: Identity {
            worker_id: config.worker_id.clone(),
            hive_id: config.hive_id.clone(),
            model: config
                .model_id
                .clone()
                .unwrap_or_else(|| model_name.clone()),
            model_file: model_name,
            device: config.device.to_string(),
            url,
        },
        interval: config.heartbeat_interval,
        token: config.token.clone(),
    };
    let heartbeat_task =
        tokio::spawn(heartbeat.run(status.clone(), heartbeat_stop.clone(), first_sent));

    let stop_accepting = CancellationToken::new();
    let app = server::router(AppState {
        worker_id: config.worker_id.clone().into(),
        device: config.device.to_string().into(),
        status: status.clone(),
        model: served.clone(),
        token: config.token.clone().map(Into::into),
    });
    // Tokens are small writes: without TCP_NODELAY the queen's delayed ACK would hold
    // some back by up to 40 ms (Nagle).
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
    });
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop_accepting.clone().cancelled_owned())
            .into_future(),
    );

    // The queen hears `loading` before the (possibly long) load starts; a queen that is
    // down delays the load by one heartbeat timeout at most.
    let _ = first_sent_rx.await;
    let cancel_generation = CancellationToken::new();
    let path = config.model.clone();
    let engine = config.engine;
    let capacity = config.capacity;
    let progress_status = status.clone();
    let loading = tokio::task::spawn_blocking(move || {
        load(&path, &device, engine, capacity, &mut |done, total| {
            progress_status.set_load_progress(done, total)
        })
    });
    let mut shutdown = std::pin::pin!(shutdown);

    // A SIGTERM during a long load stops the worker without waiting for the load.
    let loaded = tokio::select! {
        loaded = loading => Some(loaded),
        () = &mut shutdown => None,
    };
    let outcome = match loaded {
        None => Ok(()),
        Some(Err(_)) => Err(WorkerError::LoaderCrashed),
        Some(Ok(Err(e))) => Err(e),
        Some(Ok(Ok(loaded))) => {
            let started = serve(loaded, &config, &status, &served, cancel_generation.clone());
            if started.is_ok() {
                shutdown.await;
            }
            started
        }
    };

    tracing::info!("shutting down: no new requests, draining in-flight ones");
    status.set_state(WorkerState::Draining);
    stop_accepting.cancel();
    if tokio::time::timeout(config.drain_timeout, &mut server)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout passed; cancelling in-flight requests");
        cancel_generation.cancel();
        let _ = server.await;
    }
    status.set_state(WorkerState::Stopping);
    heartbeat_stop.cancel();
    let _ = heartbeat_task.await;
    outcome
}

/// A model with its tokenizer and chat template, ready to serve.
struct Loaded {
    model: model::Model,
    tokenizer: TextTokenizer,
    template: Option<ChatTemplate>,
}

fn load(
    path: &Path,
    device: &Device,
    engine: model::Engine,
    capacity: model::Capacity,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Loaded, WorkerError> {
    // The tokenizer is built on a thread of its own while the weights load (on one
    // thread): deriving a SentencePiece vocabulary's merges takes a few hundred
    // milliseconds for Gemma's 262,144 tokens.
    let metadata = model::read_metadata(path)?;
    let (gguf, tokenizer) = std::thread::scope(|scope| {
        let tokenizer = scope.spawn(|| TextTokenizer::from_gguf(&metadata, path));
        let gguf = model::load_reporting(path, device, engine, capacity, progress);
        let tokenizer = tokenizer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (gguf, tokenizer)
    });
    let gguf = gguf?;
    let tokenizer = tokenizer.map_err(|source| WorkerError::Tokenizer {
        path: path.to_owned(),
        source,
    })?;
    let token_text = |id: Option<u32>| {
        id.and_then(|id| tokenizer.token_text(id))
            .unwrap_or_default()
            .to_owned()
    };
    let template = match gguf
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
    {
        Some(source) => Some(
            ChatTemplate::new(
                source.clone(),
                token_text(tokenizer.bos_id),
                token_text(tokenizer.eos_id),
            )
            .map_err(|source| WorkerError::ChatTemplate {
                path: path.to_owned(),
                source,
            })?,
        ),
        None => None,
    };
    Ok(Loaded {
        model: gguf.model,
        tokenizer,
        template,
    })
}

/// Starts the engine on a loaded model and opens the inference route.
fn serve(
    loaded: Loaded,
    config: &WorkerConfig,
    status: &Arc<WorkerStatus>,
    served: &OnceLock<ServedModel>,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let info = loaded.model.info.clone();
    let tokenizer = Arc::new(loaded.tokenizer);
    let (jobs, queue) = mpsc::channel(config.queue_capacity);
    status.slots().open(info.slots);
    engine::spawn(
        loaded.model,
        tokenizer.clone(),
        status.clone(),
        queue,
        engine::Batching {
            step_tokens: config.batch_size,
        },
        cancel,
    )
    .map_err(WorkerError::Engine)?;
    let load_ms = info.load_time.as_secs_f64() * 1000.0;
    let _ = served.set(ServedModel {
        info: info.clone(),
        tokenizer,
        template: loaded.template,
        jobs,
    });
    status.set_engine(&info.engine);
    status.set_state(WorkerState::Ready);
    tracing::info!(model = %info.name, architecture = %info.architecture, engine = %info.engine, slots = info.slots, context = info.context_length, load_ms, "model ready");
    println!(
        "{}",
        WorkerLine::Ready {
            load_ms,
            model: info.name.clone(),
            engine: info.engine.clone(),
            slots: info.slots as u32,
        }
        .to_line()
    );
    Ok(())
}
