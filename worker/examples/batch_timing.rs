//! Times batched decode steps without HTTP or sampling: `B` sequences of a 32-token
//! prompt each, then greedy steps that run one token of every sequence in one forward
//! pass, for B = 1, 2, 4, 8 and 16. Shows what continuous batching gains per step.
//! `RBEE_WORKER_ENGINE` picks the kernels as it does for the worker (`avx2`, ...).
//!
//!     cargo run --release -p llm-worker-rbee --example batch_timing -- MODEL.gguf [STEPS [B...]]

use std::time::Instant;

use llm_worker_rbee::cpu::SequenceChunk;
use llm_worker_rbee::model::{Capacity, Engine, load_for};
use llm_worker_rbee::sampling::argmax;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: batch_timing MODEL.gguf [STEPS]"))?;
    let steps: usize = args.next().map_or(Ok(32), |s| s.parse())?;
    let mut batches = args.map(|b| b.parse()).collect::<Result<Vec<usize>, _>>()?;
    if batches.is_empty() {
        batches = vec![1, 2, 4, 8, 16];
    }
    let capacity = Capacity {
        parallel: 16,
        ctx_size: Some(16 * 512),
    };
    let engine: Engine = std::env::var("RBEE_WORKER_ENGINE")
        .unwrap_or_else(|_| "auto".into())
        .parse()?;
    let loaded = load_for(path.as_ref(), &candle_core::Device::Cpu, engine, capacity)?;
    let mut model = loaded.model;
    println!("engine {}", model.info.engine);
    for batch in batches {
        let prompts: Vec<Vec<u32>> = (0..batch)
            .map(|s| (0..32).map(|i| 100 + (i * 37 + s * 11) as u32).collect())
            .collect();
        let chunks: Vec<SequenceChunk> = prompts
            .iter()
            .enumerate()
            .map(|(slot, tokens)| SequenceChunk {
                slot,
                tokens,
                position: 0,
                logits: true,
            })
            .collect();
        let mut next: Vec<u32> = model
            .forward_batch(&chunks)?
            .iter()
            .map(|l| argmax(l))
            .collect();
        let started = Instant::now();
        for step in 0..steps {
            let tokens = next.clone();
            let chunks: Vec<SequenceChunk> = tokens
                .iter()
                .enumerate()
                .map(|(slot, token)| SequenceChunk {
                    slot,
                    tokens: std::slice::from_ref(token),
                    position: 32 + step,
                    logits: true,
                })
                .collect();
            next = model
                .forward_batch(&chunks)?
                .iter()
                .map(|l| argmax(l))
                .collect();
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{batch:>2} sequences: {:.1} ms a step, {:.1} tok/s in all",
            seconds * 1000.0 / steps as f64,
            (batch * steps) as f64 / seconds
        );
    }
    Ok(())
}
