//! How fast one token's product streams a matrix too large for the caches, against a
//! plain sum over as many bytes on the same threads: how much of the memory's speed a
//! kernel reaches when decode waits on memory.
//!
//!     RBEE_WORKER_ENGINE=avx2 cargo run -p llm-worker-rbee --example kernel_bandwidth -- \
//!         [TYPE [ROWS [COLS [REPEATS]]]]
//!
//! TYPE is one of q4_0, q5_0, q8_0, q4_k, q6_k (q4_k unless given); the pool takes
//! `RAYON_NUM_THREADS` threads.

use std::time::Instant;

use llm_worker_rbee::cpu::quant::{Q8Block, QuantType, quantize_row};
use llm_worker_rbee::cpu::{Kernels, QMatrix};
use rayon::prelude::*;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let ty = match args.next().as_deref().unwrap_or("q4_k") {
        "q4_0" => QuantType::Q4_0,
        "q5_0" => QuantType::Q5_0,
        "q8_0" => QuantType::Q8_0,
        "q4_k" => QuantType::Q4K,
        "q6_k" => QuantType::Q6K,
        other => anyhow::bail!("unknown type {other}: q4_0, q5_0, q8_0, q4_k or q6_k"),
    };
    let rows: usize = args.next().map_or(Ok(16384), |s| s.parse())?;
    let cols: usize = args.next().map_or(Ok(8192), |s| s.parse())?;
    let repeats: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let engine = std::env::var("RBEE_WORKER_ENGINE").unwrap_or_else(|_| "avx2".into());
    let kernels = Kernels::named(&engine)
        .ok_or_else(|| anyhow::anyhow!("this CPU does not run kernels {engine}"))?;

    let row_bytes = ty
        .row_bytes(cols)
        .ok_or_else(|| anyhow::anyhow!("{cols} columns are not whole blocks"))?;
    let mut data = vec![0u8; rows * row_bytes];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in &mut data {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    // Every block's f16 scales small and finite (their bytes lead each block).
    let block_bytes = ty.block_bytes();
    for block in data.chunks_exact_mut(block_bytes) {
        match ty {
            QuantType::Q6K => block[block_bytes - 2..].copy_from_slice(&0x1c00u16.to_le_bytes()),
            QuantType::Q4K => {
                block[..2].copy_from_slice(&0x1c00u16.to_le_bytes());
                block[2..4].copy_from_slice(&0x1c00u16.to_le_bytes());
            }
            _ => block[..2].copy_from_slice(&0x1c00u16.to_le_bytes()),
        }
    }
    let bytes = data.len();
    let matrix = QMatrix::new(ty, rows, cols, data)
        .ok_or_else(|| anyhow::anyhow!("not a matrix"))?
        .arranged_for(kernels);
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0)
        .collect();
    let mut q = vec![Q8Block::default(); cols / 32];
    quantize_row(&x, &mut q, matrix.scales());
    let mut out = vec![0f32; rows];
    let mut scratch = vec![0f32; rows];
    let plain = vec![1u64; bytes / 8];

    let pool = rayon::ThreadPoolBuilder::new().build()?;
    println!(
        "{} threads, kernels {}, {ty:?} {rows}×{cols}: {:.1} MB in GGML's layout",
        pool.current_num_threads(),
        kernels.name(),
        bytes as f64 / 1e6
    );
    pool.install(|| {
        for round in 0..3 {
            let started = Instant::now();
            for _ in 0..repeats {
                matrix.matmul(kernels, &q, 1, &mut out, &mut scratch);
            }
            let product = started.elapsed().as_secs_f64() / repeats as f64;
            let started = Instant::now();
            let mut total = 0u64;
            for _ in 0..repeats {
                total = total.wrapping_add(
                    plain
                        .par_chunks(plain.len().div_ceil(64))
                        .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
                        .sum::<u64>(),
                );
            }
            let sum = started.elapsed().as_secs_f64() / repeats as f64;
            println!(
                "round {round}: product {:.2} ms, {:.1} GB/s of GGML bytes; plain sum {:.1} GB/s ({total:x}, {})",
                product * 1e3,
                bytes as f64 / product / 1e9,
                bytes as f64 / sum / 1e9,
                out[rows / 2],
            );
        }
    });
    Ok(())
}
