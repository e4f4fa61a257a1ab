//! Runs generations on a dedicated thread, several at once: every step is one forward
//! pass over each generating slot's next token plus a chunk of a waiting prompt
//! (continuous batching), and each slot keeps its sequence's cache for the next
//! request that shares its prefix.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rbee_protocol::{ErrorCode, InferenceEvent, StopReason, TokenLogprob, TopLogprob, WorkerState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cpu::SequenceChunk;
use crate::model::Model;
use crate::sampling::{self, Sampler, SamplingParams};
use crate::slots::SlotPhase;
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
    /// Each token's log probability and this many alternatives, when asked.
    pub logprobs: Option<usize>,
    /// Closed when the client goes away, which cancels the job.
    pub events: mpsc::Sender<InferenceEvent>,
}

/// How the engine batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Tokens one step may run: every generating slot's next token, then chunks of
    /// waiting prompts up to this many in all.
    pub step_tokens: usize,
}

/// Starts the engine thread. It serves jobs in arrival order as slots free up until
/// `jobs` closes and every slot is done, and cancels every running job when `cancel`
/// fires.
pub fn spawn(
    model: Model,
    tokenizer: Arc<TextTokenizer>,
    status: Arc<WorkerStatus>,
    jobs: mpsc::Receiver<Job>,
    batching: Batching,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let count = model.slots();
            Engine {
                model,
                tokenizer,
                status,
                batching,
                cancel,
                slots: (0..count).map(|_| Slot::default()).collect(),
                admitted: VecDeque::new(),
                clock: 0,
            }
            .run(jobs);
        })
}

struct Engine {
    model: Model,
    tokenizer: Arc<TextTokenizer>,
    status: Arc<WorkerStatus>,
    batching: Batching,
    cancel: CancellationToken,
    slots: Vec<Slot>,
    /// Active slots in the order their requests arrived: prompts are run first come,
    /// first served.
    admitted: VecDeque<usize>,
    /// Counts admissions, to find the least recently used slot.
    clock: u64,
}

/// A sequence slot: its cache's tokens, and the request it serves, if any.
#[derive(Default)]
struct Slot {
    /// The tokens whose keys and values are in this slot's cache, in order. Kept after
    /// a request ends so that the next one sharing a prefix runs only the rest.
    cached: Vec<u32>,
    last_used: u64,
    active: Option<Generation>,
}

/// One request being served in a slot.
struct Generation {
    request_id: Option<String>,
    events: mpsc::Sender<InferenceEvent>,
    max_tokens: usize,
    sampler: Sampler,
    text: TextStream,
    /// Prompt and generated tokens; `history[slot.cached.len()..]` is still to run.
    history: Vec<u32>,
    prompt_tokens: u32,
    generated: u32,
    started: Instant,
    first_token_at: Option<Instant>,
    /// Alternatives per position when the request asked for log probabilities.
    logprobs: Option<usize>,
    /// Log probabilities of tokens whose text has not been sent yet.
    pending_logprobs: Vec<TokenLogprob>,
}

impl Generation {
    fn send(&self, event: InferenceEvent) -> bool {
        self.events.blocking_send(event).is_ok()
    }

    /// Sends text `t` up to output token `i` with the log probabilities not sent yet.
    fn send_text(&mut self, t: String, i: u32) -> bool {
        let lp = std::mem::take(&mut self.pending_logprobs);
        self.send(InferenceEvent::Token { t, i, lp })
    }
}

/// What one step decided for a slot after its logits were read.
enum Next {
    Continue,
    Stop(StopReason),
}

impl Engine {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut open = true;
        loop {
            // Admit waiting jobs into free slots; with nothing running, wait for one.
            while open && self.free_slot_exists() {
                let job = if self.admitted.is_empty() {
                    jobs.blocking_recv()
                } else {
                    match jobs.try_recv() {
                        Ok(job) => Some(job),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                    }
                };
                match job {
                    Some(job) => self.admit(job),
                    None => open = false,
                }
            }
            if self.admitted.is_empty() {
                if !open {
                    return;
                }
                continue;
            }
            self.step();
            if self.admitted.is_empty() && self.status.queue_depth() == 0 {
                self.status.set_state(WorkerState::Ready);
            }
        }
    }

    fn free_slot_exists(&self) -> bool {
        self.slots.iter().any(|s| s.active.is_none())
    }

    /// Starts `job` in the free slot whose cache shares the longest prefix with its
    /// prompt (the least recently used among equals), keeping that prefix's cache. When
    /// another slot, busy or not, holds a longer prefix (the system prompt every
    /// conversation starts with), its positions are copied into the chosen slot rather
    /// than run again.
    fn admit(&mut self, job: Job) {
        self.status.dequeued();
        if job.events.is_closed() {
            return;
        }
        // After the drain timeout, waiting jobs are refused rather than started.
        if self.cancel.is_cancelled() {
            let _ = job.events.blocking_send(InferenceEvent::Error {
                code: ErrorCode::ShuttingDown,
                message: "the worker is shutting down".into(),
            });
            return;
        }
        let reuse_allowed = self.model.chunked_prefill();
        let Some((index, mut shared)) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .map(|(i, s)| {
                let shared = if reuse_allowed {
                    common_prefix(&s.cached, &job.prompt)
                } else {
                    0
                };
                (i, shared, s.last_used)
            })
            .max_by_key(|&(_, shared, last_used)| (shared, std::cmp::Reverse(last_used)))
            .map(|(i, shared, _)| (i, shared))
        else {
            return;
        };
        let donor = self
            .slots
            .iter()
            .enumerate()
            .filter(|&(i, _)| reuse_allowed && i != index)
            .map(|(i, s)| (i, common_prefix(&s.cached, &job.prompt)))
            .max_by_key(|&(_, longer)| longer)
            .filter(|&(_, longer)| longer >= shared + MIN_COPIED_PREFIX);
        if let Some((donor, longer)) = donor {
            self.model.copy_prefix(donor, index, longer);
            self.slots[index].cached = self.slots[donor].cached[..longer].to_vec();
            tracing::debug!(slot = index, from = donor, tokens = longer, "prefix copied");
            shared = longer;
        }
        // At least the prompt's last token runs, for its logits.
        let reused = shared.min(job.prompt.len().saturating_sub(1));
        self.clock += 1;
        let prompt_tokens = job.prompt.len() as u32;
        let generation = Generation {
            request_id: job.request_id,
            events: job.events,
            max_tokens: job.max_tokens,
            sampler: Sampler::new(job.sampling),
            text: TextStream::new(job.stop),
            history: job.prompt,
            prompt_tokens,
            generated: 0,
            started: Instant::now(),
            first_token_at: None,
            logprobs: job.logprobs,
            pending_logprobs: Vec::new(),
        };
        if !generation.send(InferenceEvent::Started {
            request_id: generation.request_id.clone(),
            prompt_tokens,
        }) {
            return;
        }
        let slot = &mut self.slots[index];
        slot.cached.truncate(reused);
        slot.last_used = self.clock;
        self.status.slots().update(
            index,
            SlotPhase::Prompt,
            reused,
            generation.request_id.as_deref(),
        );
        self.status.reused_prompt_tokens(reused as u64);
        slot.active = Some(generation);
        self.admitted.push_back(index);
        self.status.set_state(WorkerState::Busy);
        tracing::debug!(slot = index, reused, prompt_tokens, "request admitted");
    }

    /// One forward pass over every active slot: the next token of each generating
    /// slot, then prompt chunks in arrival order within the step's token budget.
    fn step(&mut self) {
        // Requests whose client left, or cancelled by the drain timeout, end first.
        for index in self.admitted.clone() {
            let gone = self.slots[index]
                .active
                .as_ref()
                .is_some_and(|g| g.events.is_closed());
            if gone || self.cancel.is_cancelled() {
                self.finish(index, StopReason::Cancelled);
            }
        }
        if self.admitted.is_empty() {
            return;
        }

        let chunked = self.model.chunked_prefill();
        let decoding = self
            .admitted
            .iter()
            .filter(|&&i| self.pending(i) == 1)
            .count();
        let mut budget = self.batching.step_tokens.saturating_sub(decoding).max(1);
        // (slot, range of history to run)
        let mut plan: Vec<(usize, usize, usize)> = Vec::with_capacity(self.admitted.len());
        for &index in &self.admitted {
            let start = self.slots[index].cached.len();
            let pending = self.pending(index);
            let len = if pending <= 1 || !chunked {
                pending
            } else if budget == 0 {
                continue;
            } else {
                let len = pending.min(budget);
                budget -= len;
                len
            };
            plan.push((index, start, start + len));
        }
        let chunks: Vec<SequenceChunk> = plan
            .iter()
            .map(|&(index, start, end)| {
                let generation = self.slots[index].active.as_ref();
                let history = generation.map_or(&[][..], |g| &g.history[..]);
                SequenceChunk {
                    slot: index,
                    tokens: &history[start..end],
                    position: start,
                    logits: end == history.len(),
                }
            })
            .collect();
        let step_tokens: usize = chunks.iter().map(|c| c.tokens.len()).sum();
        let result = self.model.forward_batch(&chunks);
        drop(chunks);
        self.status.stepped(plan.len() as u64, step_tokens as u64);

        let mut logits = match result {
            Ok(logits) => logits.into_iter(),
            Err(e) => {
                tracing::error!(error = %e, "generation failed");
                for &(index, _, _) in &plan {
                    if let Some(g) = &self.slots[index].active {
                        g.send(InferenceEvent::Error {
                            code: ErrorCode::WorkerFailed,
                            message: format!("generation failed: {e}"),
                        });
                    }
                    // What the failed pass left in the cache is unknown.
                    self.slots[index].cached.clear();
                    self.end(index);
                }
                return;
            }
        };
        for (index, start, end) in plan {
            let slot = &mut self.slots[index];
            let Some(generation) = &slot.active else {
                continue;
            };
            slot.cached
                .extend_from_slice(&generation.history[start..end]);
            if end < generation.history.len() {
                self.status.slots().update(
                    index,
                    SlotPhase::Prompt,
                    end,
                    generation.request_id.as_deref(),
                );
                continue;
            }
            let Some(mut row) = logits.next() else {
                continue;
            };
            match self.sample(index, &mut row) {
                Next::Continue => {}
                Next::Stop(reason) => self.finish(index, reason),
            }
        }
    }

    /// Tokens of slot `index`'s history not yet in its cache.
    fn pending(&self, index: usize) -> usize {
        let slot = &self.slots[index];
        slot.active
            .as_ref()
            .map_or(0, |g| g.history.len() - slot.cached.len())
    }

    /// Picks slot `index`'s next token from its logits and streams its text.
    fn sample(&mut self, index: usize, logits: &mut [f32]) -> Next {
        let context = self.model.info.context_length;
        let slot = &mut self.slots[index];
        let Some(g) = slot.active.as_mut() else {
            return Next::Continue;
        };
        // Log probabilities come from the model's logits, before sampling changes them.
        let raw = g.logprobs.map(|top| (top, logits.to_vec()));
        let token = g.sampler.sample(logits, &g.history);
        g.first_token_at.get_or_insert_with(Instant::now);
        if self.tokenizer.is_end_of_generation(token) {
            return Next::Stop(StopReason::Eos);
        }
        // The end-of-generation token is not output, and has no entry, as with OpenAI.
        if let Some((top, raw)) = raw {
            let (logprob, best) = sampling::logprobs(&raw, token, top);
            let entry = |id: u32| {
                let bytes = self.tokenizer.token_bytes(id).to_vec();
                (String::from_utf8_lossy(&bytes).into_owned(), bytes)
            };
            let (text, bytes) = entry(token);
            g.pending_logprobs.push(TokenLogprob {
                token: text,
                logprob,
                bytes,
                top: best
                    .into_iter()
                    .map(|(id, logprob)| {
                        let (token, bytes) = entry(id);
                        TopLogprob {
                            token,
                            logprob,
                            bytes,
                        }
                    })
                    .collect(),
            });
        }
        let index_in_output = g.generated;
        g.generated += 1;
        self.status.add_tokens(1);
        g.history.push(token);
        match g.text.push(self.tokenizer.token_bytes(token)) {
            Piece::Text(t) => {
                if !t.is_empty() && !g.send_text(t, index_in_output) {
                    return Next::Stop(StopReason::Cancelled);
                }
            }
            Piece::Stopped(t) => {
                if !t.is_empty() {
                    g.send_text(t, index_in_output);
                }
                return Next::Stop(StopReason::Stop);
            }
        }
        if g.history.len() >= context {
            return Next::Stop(StopReason::Context);
        }
        if g.generated as usize >= g.max_tokens {
            return Next::Stop(StopReason::Length);
        }
        self.status.slots().update(
            index,
            SlotPhase::Generating,
            slot.cached.len(),
            g.request_id.as_deref(),
        );
        Next::Continue
    }

    /// Ends slot `index`'s request with `stop_reason`, sending the rest of its text and
    /// its statistics.
    fn finish(&mut self, index: usize, stop_reason: StopReason) {
        let generation = self.slots[index].active.take();
        // The slot is free and the request counted before the client hears the end, so
        // whatever it asks next (`/slots`, `/metrics`) already says so.
        self.end(index);
        if let Some(mut g) = generation {
            if matches!(
                stop_reason,
                StopReason::Eos | StopReason::Length | StopReason::Context
            ) {
                let rest = g.text.finish();
                if !rest.is_empty() || !g.pending_logprobs.is_empty() {
                    let i = g.generated.saturating_sub(1);
                    g.send_text(rest, i);
                }
            }
            let finished = Instant::now();
            let ttft_ms = g
                .first_token_at
                .map_or(0.0, |t| (t - g.started).as_secs_f64() * 1000.0);
            // Decode speed counts the tokens after the first, whose time is the prompt's.
            let tokens_per_s = match g.first_token_at {
                Some(first) if g.generated > 1 => {
                    f64::from(g.generated - 1) / (finished - first).as_secs_f64().max(1e-9)
                }
                _ => 0.0,
            };
            g.send(InferenceEvent::End {
                stop_reason,
                prompt_tokens: g.prompt_tokens,
                tokens: g.generated,
                ttft_ms,
                tokens_per_s,
            });
        }
    }

    /// Frees slot `index`, keeping its cache for a request that shares its prefix.
    fn end(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.active = None;
        self.admitted.retain(|&i| i != index);
        self.status
            .slots()
            .update(index, SlotPhase::Idle, slot.cached.len(), None);
        self.status.requests_done(1);
    }
}

/// The fewest tokens worth copying from another slot's cache: below this, running them
/// costs about as little.
const MIN_COPIED_PREFIX: usize = 4;

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefix_counts_equal_leading_tokens() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix(&[5], &[1]), 0);
    }
}
