//! Times the model alone, without HTTP or sampling: a prompt (71 tokens unless given),
//! then greedy decode steps, three times. Used for profiling (`perf record`) the CPU
//! engine. `RBEE_WORKER_ENGINE` picks the kernels as it does for the worker (`avx2`, ...).
//!
//!     cargo run --release -p llm-worker-rbee --example cpu_timing -- MODEL.gguf [STEPS [PROMPT]]

use std::time::Instant;

use llm_worker_rbee::sampling::argmax;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: cpu_timing MODEL.gguf [STEPS [PROMPT]]"))?;
    let steps: usize = args.next().map_or(Ok(128), |s| s.parse())?;
    let prompt_tokens: u32 = args.next().map_or(Ok(71), |s| s.parse())?;
    let engine = std::env::var("RBEE_WORKER_ENGINE").unwrap_or_else(|_| "auto".into());
    let engine = engine.parse()?;
    // One slot, as long as the prompt and its steps where that is more than a default
    // slot holds.
    let capacity = llm_worker_rbee::model::Capacity {
        parallel: 1,
        ctx_size: Some((prompt_tokens as usize + steps).max(4096)),
    };
    let loaded = llm_worker_rbee::model::load_for(
        path.as_ref(),
        &candle_core::Device::Cpu,
        engine,
        capacity,
    )?;
    let mut model = loaded.model;
    println!("engine {}", model.info.engine);
    let prompt: Vec<u32> = (0..prompt_tokens).map(|i| 100 + i * 37 % 20000).collect();
    for _ in 0..3 {
        let started = Instant::now();
        let mut token = argmax(&model.forward(&prompt, 0)?);
        let prompt_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        for step in 0..steps {
            token = argmax(&model.forward(&[token], prompt.len() + step)?);
        }
        let decode_s = started.elapsed().as_secs_f64();
        println!(
            "prompt {:.1} tok/s  decode {:.1} tok/s",
            prompt.len() as f64 / prompt_s,
            steps as f64 / decode_s
        );
    }
    Ok(())
}
