//! Runs generations one at a time on a dedicated thread, streaming events back.

use std::sync::Arc;
use std::time::Instant;

use rbee_protocol::{ErrorCode, InferenceEvent, StopReason, WorkerState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::Model;
use crate::sampling::{Sampler, SamplingParams};
use crate::status::WorkerStatus;
use crate::text_stream::{Piece, TextStream};
use crate::tokenizer::TextTokenizer;

/// One accepted inference request, tokenized and validated.
pub struct Job {
    pub request_id: Option<String>,
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Closed when the client goes away, which cancels the job.
    pub events: mpsc::Sender<InferenceEvent>,
}

/// Starts the engine thread. It runs jobs in arrival order until `jobs` closes, and
/// cancels the running job when `cancel` fires.
pub fn spawn(
    mut model: Model,
    tokenizer: Arc<TextTokenizer>,
    status: Arc<WorkerStatus>,
    mut jobs: mpsc::Receiver<Job>,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            while let Some(job) = jobs.blocking_recv() {
                status.dequeued();
                if job.events.is_closed() {
                    continue;
                }
                // After the drain timeout, waiting jobs are refused rather than started.
                if cancel.is_cancelled() {
                    let _ = job.events.blocking_send(InferenceEvent::Error {
                        code: ErrorCode::ShuttingDown,
                        message: "the worker is shutting down".into(),
                    });
                    continue;
                }
                status.set_state(WorkerState::Busy);
                run(&mut model, &tokenizer, &status, job, &cancel);
                if status.queue_depth() == 0 {
                    status.set_state(WorkerState::Ready);
                }
            }
        })
}

/// Generates one job's tokens, counting each in `status` as it is made.
fn run(
    model: &mut Model,
    tokenizer: &TextTokenizer,
    status: &WorkerStatus,
    job: Job,
    cancel: &CancellationToken,
) {
    let started = Instant::now();
    let events = job.events;
    let send = |event: InferenceEvent| events.blocking_send(event).is_ok();
    let prompt_tokens = job.prompt.len() as u32;
    if !send(InferenceEvent::Started {
        request_id: job.request_id.clone(),
        prompt_tokens,
    }) {
        return;
    }

    let mut sampler = Sampler::new(job.sampling);
    let mut text = TextStream::new(job.stop);
    let mut history = job.prompt;
    let mut generated: u32 = 0;
    let mut first_token_at = None;
    let mut logits = match model.forward(&history, 0) {
        Ok(logits) => logits,
        Err(e) => {
            send(generation_error(&e));
            return;
        }
    };

    let stop_reason = loop {
        if cancel.is_cancelled() || events.is_closed() {
            break StopReason::Cancelled;
        }
        let token = sampler.sample(&mut logits, &history);
        first_token_at.get_or_insert_with(Instant::now);
        if tokenizer.is_end_of_generation(token) {
            break StopReason::Eos;
        }
        let index = generated;
        generated += 1;
        status.add_tokens(1);
        history.push(token);
        match text.push(tokenizer.token_bytes(token)) {
            Piece::Text(t) => {
                if !t.is_empty() && !send(InferenceEvent::Token { t, i: index }) {
                    break StopReason::Cancelled;
                }
            }
            Piece::Stopped(t) => {
                if !t.is_empty() {
                    send(InferenceEvent::Token { t, i: index });
                }
                break StopReason::Stop;
            }
        }
        if generated as usize >= job.max_tokens {
            break StopReason::Length;
        }
        logits = match model.forward(&[token], history.len() - 1) {
            Ok(logits) => logits,
            Err(e) => {
                send(generation_error(&e));
                return;
            }
        };
    };

    if matches!(stop_reason, StopReason::Eos | StopReason::Length) {
        let rest = text.finish();
        if !rest.is_empty() {
            send(InferenceEvent::Token {
                t: rest,
                i: generated.saturating_sub(1),
            });
        }
    }
    let finished = Instant::now();
    let ttft_ms = first_token_at.map_or(0.0, |t| (t - started).as_secs_f64() * 1000.0);
    // Decode speed counts the tokens after the first, whose time is the prompt's.
    let tokens_per_s = match first_token_at {
        Some(first) if generated > 1 => {
            f64::from(generated - 1) / (finished - first).as_secs_f64().max(1e-9)
        }
        _ => 0.0,
    };
    send(InferenceEvent::End {
        stop_reason,
        prompt_tokens,
        tokens: generated,
        ttft_ms,
        tokens_per_s,
    });
}

fn generation_error(e: &crate::model::ForwardError) -> InferenceEvent {
    tracing::error!(error = %e, "generation failed");
    InferenceEvent::Error {
        code: ErrorCode::WorkerFailed,
        message: format!("generation failed: {e}"),
    }
}
