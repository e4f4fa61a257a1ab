//! Every kernel against the dequantize-then-f32 reference, for every weight type.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::Kernels;
use super::matrix::QMatrix;
use super::quant::{self, Q8Block, QK, QuantType, Scales, dequantize_row, quantize_row};

const COLS: usize = 512;
const ROWS: usize = 8;

fn ggml(ty: QuantType) -> GgmlDType {
    match ty {
        QuantType::Q4_0 => GgmlDType::Q4_0,
        QuantType::Q4_1 => GgmlDType::Q4_1,
        QuantType::Q5_0 => GgmlDType::Q5_0,
        QuantType::Q5_1 => GgmlDType::Q5_1,
        QuantType::Q8_0 => GgmlDType::Q8_0,
        QuantType::Q4K => GgmlDType::Q4K,
        QuantType::Q5K => GgmlDType::Q5K,
        QuantType::Q6K => GgmlDType::Q6K,
        QuantType::F16 => GgmlDType::F16,
        QuantType::BF16 => GgmlDType::BF16,
        QuantType::F32 => GgmlDType::F32,
    }
}

/// Deterministic values with a spread of signs and magnitudes.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 2.0
        })
        .collect()
}

/// Weights of type `ty` quantized by candle (GGML's reference layout) and candle's own
/// dequantisation of them.
fn quantized(ty: QuantType) -> (Vec<u8>, Vec<f32>) {
    let w = Tensor::from_vec(values(ROWS * COLS, 7), (ROWS, COLS), &Device::Cpu).expect("tensor");
    let q = QTensor::quantize(&w, ggml(ty)).expect("quantize");
    let bytes = q.data().expect("bytes").into_owned();
    let reference = q
        .dequantize(&Device::Cpu)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("dequantize");
    (bytes, reference)
}

/// Every kernel set this CPU runs, the portable one included.
fn kernels() -> Vec<Kernels> {
    Kernels::supported()
}

#[test]
fn dequantisation_matches_ggml_for_every_type() {
    for ty in QuantType::ALL {
        let (bytes, reference) = quantized(ty);
        let mut ours = vec![0.0; ROWS * COLS];
        dequantize_row(ty, &bytes, &mut ours);
        assert_eq!(ours, reference, "{ty:?}");
    }
}

#[test]
fn every_kernel_matches_the_dequantized_reference_for_every_type() {
    let x = values(COLS, 11);
    for ty in QuantType::ALL {
        // K-quants' products read activations under one scale a super-block, as the
        // engine quantizes them.
        let scales = if ty.is_k_quant() {
            Scales::PerSuperBlock
        } else {
            Scales::PerBlock
        };
        let mut blocks = vec![Q8Block::default(); COLS / QK];
        quantize_row(&x, &mut blocks, scales);
        let x_rounded: Vec<f32> = blocks
            .iter()
            .flat_map(|b| b.qs.iter().map(move |q| b.d * f32::from(*q)))
            .collect();
        let (bytes, w) = quantized(ty);
        let row_bytes = ty.row_bytes(COLS).expect("whole blocks");
        let sets = kernels();
        if ty == QuantType::Q4_1 {
            let names: Vec<_> = sets.iter().map(|k| k.name()).collect();
            eprintln!("kernel sets: {}", names.join(", "));
        }
        for kernels in sets {
            // The multi-row kernels, over all rows at once, give the same as one by one.
            let mut together = vec![0.0; ROWS];
            kernels.dot_rows(ty, &bytes, row_bytes, &blocks, &mut together);
            for r in 0..ROWS {
                let row = &bytes[r * row_bytes..(r + 1) * row_bytes];
                let w = &w[r * COLS..(r + 1) * COLS];
                let got = kernels.dot(ty, row, &blocks);
                assert!(
                    (together[r] - got).abs() <= 1e-5 * got.abs().max(1.0),
                    "{ty:?} {} row {r}: {} together, {got} alone",
                    kernels.name(),
                    together[r]
                );
                // Against the quantized activations only float rounding may differ.
                let exact: f64 = w
                    .iter()
                    .zip(&x_rounded)
                    .map(|(a, b)| f64::from(a * b))
                    .sum();
                let magnitude: f64 = w
                    .iter()
                    .zip(&x_rounded)
                    .map(|(a, b)| f64::from((a * b).abs()))
                    .sum();
                assert!(
                    (f64::from(got) - exact).abs() <= 1e-5 * magnitude + 1e-6,
                    "{ty:?} {} row {r}: {got} vs {exact}",
                    kernels.name()
                );
                // Against f32 activations the error stays within Q8's half-step rounding.
                let reference: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
                let bound: f32 = w
                    .chunks_exact(QK)
                    .zip(&blocks)
                    .map(|(w, b)| b.d / 2.0 * w.iter().map(|v| v.abs()).sum::<f32>())
                    .sum();
                assert!(
                    (got - reference).abs() <= bound * 1.001 + 1e-4,
                    "{ty:?} {} row {r}: {got} vs f32 {reference} (bound {bound})",
                    kernels.name()
                );
            }
        }
    }
}

#[test]
fn batched_and_single_token_products_agree() {
    // Every type, with token counts and row counts that leave partial tiles, on every
    // kernel set: a prompt's products equal one token's bit for bit.
    for ty in QuantType::ALL {
        let (bytes, _) = quantized(ty);
        let row_bytes = ty.row_bytes(COLS).expect("whole blocks");
        for rows in [ROWS, ROWS - 1] {
            let matrix =
                QMatrix::new(ty, rows, COLS, bytes[..rows * row_bytes].to_vec()).expect("matrix");
            for tokens in [2, 3, 4, 5, 7, 9, 16, 19, 40] {
                let x = values(tokens * COLS, 5);
                // Scratch longer than the tokens, as the engine's is.
                let mut blocks = vec![Q8Block::default(); (tokens + 2) * COLS / QK];
                for (row, out) in x.chunks_exact(COLS).zip(blocks.chunks_exact_mut(COLS / QK)) {
                    quantize_row(row, out, matrix.scales());
                }
                for kernels in kernels() {
                    let mut batched = vec![0.0; tokens * rows];
                    let mut scratch = vec![0.0; tokens * rows];
                    matrix.matmul(kernels, &blocks, tokens, &mut batched, &mut scratch);
                    for t in 0..tokens {
                        let mut single = vec![0.0; rows];
                        let act = &blocks[t * COLS / QK..(t + 1) * COLS / QK];
                        matrix.matmul(kernels, act, 1, &mut single, &mut scratch);
                        assert_eq!(
                            single,
                            batched[t * rows..(t + 1) * rows],
                            "{ty:?} {} rows {rows} tokens {tokens} token {t}",
                            kernels.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn activation_rounding_is_rounds_half_away_from_zero() {
    // Every value a quarter step apart over the whole range, ties included, and the
    // neighbours of the ties.
    let mut y = -127.0f32;
    while y <= 127.0 {
        for v in [
            y,
            f32::from_bits(y.to_bits() + 1),
            f32::from_bits(y.to_bits().max(1) - 1),
        ] {
            if v.abs() <= 127.0 {
                assert_eq!(quant::round_to_i8(v), v.round() as i8, "{v}");
            }
        }
        y += 0.25;
    }
}

#[test]
fn half_precision_scales_decode_exactly() {
    for (bits, value) in [
        (0x3c00u16, 1.0f32),
        (0xc000, -2.0),
        (0x0001, 5.960_464_5e-8),
        (0x7bff, 65504.0),
        (0x0000, 0.0),
    ] {
        assert_eq!(quant::f16_to_f32(bits), value, "{bits:#x}");
    }
}

#[test]
fn kernel_sets_sharing_an_order_agree_bit_for_bit() {
    // AVX-512 shares AVX2's kernel bodies and NEON the portable floating-point code, and
    // integer sums are exact: each pair gives the same bits, for one token and a prompt.
    let mut compared = 0;
    for (fast, reference) in [("avx512", "avx2"), ("neon", "portable")] {
        let (Some(fast), Some(reference)) = (Kernels::named(fast), Kernels::named(reference))
        else {
            continue;
        };
        for ty in QuantType::ALL {
            let (bytes, _) = quantized(ty);
            let matrix = QMatrix::new(ty, ROWS, COLS, bytes).expect("matrix");
            for tokens in [1, 4, 5] {
                let x = values(tokens * COLS, 3);
                let mut blocks = vec![Q8Block::default(); tokens * COLS / QK];
                for (row, out) in x.chunks_exact(COLS).zip(blocks.chunks_exact_mut(COLS / QK)) {
                    quantize_row(row, out, matrix.scales());
                }
                let run = |kernels| {
                    let mut out = vec![0.0; tokens * ROWS];
                    let mut scratch = vec![0.0; tokens * ROWS];
                    matrix.matmul(kernels, &blocks, tokens, &mut out, &mut scratch);
                    out
                };
                assert_eq!(
                    run(fast),
                    run(reference),
                    "{ty:?} {} against {}, {tokens} tokens",
                    fast.name(),
                    reference.name()
                );
            }
        }
        compared += 1;
    }
    eprintln!("kernel set pairs compared: {compared}");
}

#[test]
fn the_kernel_sets_a_run_expects_are_detected() {
    // The emulated runs (scripts/test.sh under Bochs, scripts/aarch64-check.sh under
    // QEMU) name the sets their CPU must offer, so a guest that lost a feature fails
    // instead of quietly testing fewer sets.
    let Ok(expected) = std::env::var("RBEE_EXPECT_KERNELS") else {
        return;
    };
    let supported: Vec<_> = Kernels::supported().iter().map(|k| k.name()).collect();
    for name in expected.split(',') {
        assert!(
            supported.contains(&name),
            "expected the {name} kernels, the CPU runs {supported:?}"
        );
    }
}

#[test]
fn every_kernel_set_quantizes_activations_as_the_portable_code() {
    // Random rows at several magnitudes, a zero block, exact halves of the step and the
    // extremes of a block, where rounding and the scale are decided.
    let mut x: Vec<f32> = [1.0f32, 1e-3, 40.0]
        .iter()
        .flat_map(|scale| values(4 * QK, 11).into_iter().map(move |v| v * scale))
        .collect();
    x.extend([0.0; QK]);
    x.extend((0..QK).map(|i| (i as f32 - 16.0) + 0.5));
    x.extend((0..QK).map(|i| if i % 2 == 0 { 127.0 } else { -63.5 }));
    // Whole super-blocks: one more block, tiny beside the extremes before it.
    x.extend(values(QK, 12).into_iter().map(|v| v * 1e-2));
    let blocks = x.len() / QK;
    for scales in [Scales::PerBlock, Scales::PerSuperBlock] {
        let mut reference = vec![Q8Block::default(); blocks];
        quantize_row(&x, &mut reference, scales);
        assert!(scales.hold_for(&reference));
        for kernels in kernels() {
            let mut ours = vec![Q8Block::default(); blocks];
            kernels.quantize_row(&x, &mut ours, scales);
            for (b, (ours, reference)) in ours.iter().zip(&reference).enumerate() {
                let name = kernels.name();
                assert_eq!(ours.qs, reference.qs, "{name} {scales:?} block {b}");
                assert_eq!(
                    (ours.d.to_bits(), ours.s.to_bits()),
                    (reference.d.to_bits(), reference.s.to_bits()),
                    "{name} {scales:?} block {b}"
                );
            }
        }
    }
}

#[test]
fn super_block_scales_are_the_largest_magnitude_of_256_values() {
    let x: Vec<f32> = values(2 * 256, 7)
        .into_iter()
        .enumerate()
        .map(|(i, v)| if i == 300 { -50.0 } else { v })
        .collect();
    let mut blocks = vec![Q8Block::default(); 16];
    quantize_row(&x, &mut blocks, Scales::PerSuperBlock);
    let amax = |values: &[f32]| values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (span, blocks) in x.chunks_exact(256).zip(blocks.chunks_exact(8)) {
        for block in blocks {
            assert_eq!(block.d, amax(span) / 127.0);
        }
    }
    assert_eq!(blocks[9].qs[300 - 288], -127);
    assert!(!Scales::PerSuperBlock.hold_for(&{
        let mut per_block = blocks.clone();
        quantize_row(&x, &mut per_block, Scales::PerBlock);
        per_block
    }));
}

#[test]
#[should_panic(expected = "needs PerSuperBlock")]
fn a_k_quant_product_refuses_activations_with_a_scale_a_block() {
    let (matrix, _) = both_layouts(QuantType::Q4K, 16);
    let x = values(COLS, 3);
    let mut blocks = vec![Q8Block::default(); COLS / QK];
    quantize_row(&x, &mut blocks, Scales::PerBlock);
    let mut out = vec![0.0; 16];
    let mut scratch = out.clone();
    matrix.matmul(Kernels::Portable, &blocks, 1, &mut out, &mut scratch);
}

/// A matrix of `ty` (one of [`INTERLEAVED`]) of `rows` rows (a multiple of 16, up to
/// 48) in both layouts.
fn both_layouts(ty: QuantType, rows: usize) -> (QMatrix, QMatrix) {
    (plain(ty, rows), plain(ty, rows).interleaved())
}

/// [`both_layouts`]' matrix in GGML's layout.
fn plain(ty: QuantType, rows: usize) -> QMatrix {
    let w = Tensor::from_vec(values(48 * COLS, 13), (48, COLS), &Device::Cpu).expect("tensor");
    let q = QTensor::quantize(&w, ggml(ty)).expect("quantize");
    let bytes = q.data().expect("bytes").into_owned();
    let row_bytes = ty.row_bytes(COLS).expect("whole blocks");
    QMatrix::new(ty, rows, COLS, bytes[..rows * row_bytes].to_vec()).expect("matrix")
}

/// The types AVX-512 reads interleaved.
const INTERLEAVED: [QuantType; 5] = [
    QuantType::Q8_0,
    QuantType::Q4_0,
    QuantType::Q5_0,
    QuantType::Q4K,
    QuantType::Q6K,
];

#[test]
fn interleaved_rows_read_back_as_they_were() {
    for ty in INTERLEAVED {
        let (plain, interleaved) = both_layouts(ty, 32);
        for r in 0..32 {
            let (mut a, mut b) = (vec![0.0; COLS], vec![0.0; COLS]);
            plain.dequantize_row(r, &mut a);
            interleaved.dequantize_row(r, &mut b);
            assert_eq!(a, b, "{ty:?} row {r}");
        }
    }
}

#[test]
fn interleaving_a_group_a_task_gives_what_one_task_gives() {
    for ty in INTERLEAVED {
        let (_, whole) = both_layouts(ty, 48);
        let split = plain(ty, 48).interleaved_by(1);
        for r in 0..48 {
            let (mut a, mut b) = (vec![0.0; COLS], vec![0.0; COLS]);
            whole.dequantize_row(r, &mut a);
            split.dequantize_row(r, &mut b);
            assert_eq!(a, b, "{ty:?} row {r}");
        }
    }
}

#[test]
fn interleaved_products_agree_on_every_set_alone_and_batched() {
    // Every kernel set gives the portable code's bits over interleaved rows, a token
    // alone the same as batched with others (odd counts leave partial tiles and a lone
    // group), and the results stay within Q8 rounding of the row-major layout's.
    for (ty, rows) in INTERLEAVED.into_iter().flat_map(|ty| [(ty, 16), (ty, 48)]) {
        let (plain, interleaved) = both_layouts(ty, rows);
        let tokens = 19;
        let x = values(tokens * COLS, 17);
        let mut blocks = vec![Q8Block::default(); tokens * COLS / QK];
        for (row, out) in x.chunks_exact(COLS).zip(blocks.chunks_exact_mut(COLS / QK)) {
            quantize_row(row, out, plain.scales());
        }
        let run = |matrix: &QMatrix, kernels, first: usize, count: usize| {
            let mut out = vec![0.0; count * rows];
            let mut scratch = vec![0.0; count * rows];
            let x = &blocks[first * COLS / QK..(first + count) * COLS / QK];
            matrix.matmul(kernels, x, count, &mut out, &mut scratch);
            out
        };
        let reference = run(&interleaved, Kernels::Portable, 0, tokens);
        let row_major = run(&plain, Kernels::Portable, 0, tokens);
        for (a, b) in reference.iter().zip(&row_major) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{ty:?}: {a} vs {b}"
            );
        }
        for kernels in kernels() {
            for count in [1, 2, 3, 8, 9, 19] {
                let got = run(&interleaved, kernels, 0, count);
                assert_eq!(
                    got,
                    reference[..count * rows],
                    "{} {ty:?} rows {rows} tokens {count}",
                    kernels.name()
                );
            }
            for t in 0..tokens {
                assert_eq!(
                    run(&interleaved, kernels, t, 1),
                    reference[t * rows..(t + 1) * rows],
                    "{} {ty:?} rows {rows} token {t} alone",
                    kernels.name()
                );
            }
        }
    }
}

#[test]
fn a_stack_interleaves_the_parts_that_can_be_and_reads_the_others_as_they_are() {
    // Q4_K_M files stack a Q6_K value projection under Q4_K queries and keys (Q5_K_M
    // files a Q6_K one under Q5_K ones): the stack's products equal each part's own, bit
    // for bit, a token alone and batched.
    let parts = [
        (QuantType::Q4K, 32),
        (QuantType::Q5K, 16),
        (QuantType::Q6K, 16),
        (QuantType::Q8_0, 16),
        (QuantType::Q5_0, 16),
        (QuantType::Q4_1, 16),
    ];
    let matrix = |(ty, rows): (QuantType, usize), seed| {
        let w = Tensor::from_vec(values(rows * COLS, seed), (rows, COLS), &Device::Cpu)
            .expect("tensor");
        let q = QTensor::quantize(&w, ggml(ty)).expect("quantize");
        QMatrix::new(ty, rows, COLS, q.data().expect("bytes").into_owned()).expect("matrix")
    };
    let alone: Vec<QMatrix> = (0..parts.len())
        .map(|i| matrix(parts[i], 40 + i as u32).interleaved())
        .collect();
    let stack = QMatrix::stack(
        (0..parts.len())
            .map(|i| matrix(parts[i], 40 + i as u32))
            .collect(),
    )
    .expect("one width")
    .interleaved();
    let rows: usize = parts.iter().map(|p| p.1).sum();
    let tokens = 11;
    let x = values(tokens * COLS, 23);
    let mut blocks = vec![Q8Block::default(); tokens * COLS / QK];
    for (row, out) in x.chunks_exact(COLS).zip(blocks.chunks_exact_mut(COLS / QK)) {
        quantize_row(row, out, stack.scales());
    }
    for kernels in kernels() {
        for count in [1, 2, 9, 11] {
            let x = &blocks[..count * COLS / QK];
            let mut got = vec![0.0; count * rows];
            let mut scratch = vec![0.0; count * rows];
            stack.matmul(kernels, x, count, &mut got, &mut scratch);
            let mut first = 0;
            for part in &alone {
                let mut want = vec![0.0; count * part.rows()];
                let mut scratch = want.clone();
                part.matmul(kernels, x, count, &mut want, &mut scratch);
                for t in 0..count {
                    assert_eq!(
                        got[t * rows + first..][..part.rows()],
                        want[t * part.rows()..][..part.rows()],
                        "{} tokens {count}, rows from {first}",
                        kernels.name()
                    );
                }
                first += part.rows();
            }
        }
    }
}

#[test]
fn attention_over_several_queries_gives_each_its_own_scores_and_sums_bit_for_bit() {
    // The group kernels read each cached position (halves) once for several queries
    // (the query heads of a key head, side by side, or one head's rows of a prompt, a
    // row apart); each query's scores and sums must be what its own position-by-position
    // products of the halves as floats (`dot_f32`, `axpy` into zeros) give, on every set, for every tile shape (1 to 11
    // queries: the tiles of at most eight and their remainders), head widths that
    // leave a remainder of the wide tiles (72, 80), and runs of positions that do.
    for kernels in kernels() {
        for (queries, hd, positions, apart) in [
            (1, 80, 37, 1),
            (2, 72, 70, 1),
            (3, 96, 33, 3),
            (4, 128, 5, 1),
            (7, 64, 100, 1),
            (8, 64, 41, 5),
            (11, 80, 9, 2),
        ] {
            let apart = hd * apart;
            let query = values((queries - 1) * apart + hd, 1);
            let cache: Vec<u16> = values(positions * hd, 2)
                .into_iter()
                .map(|v| half::f16::from_f32(v).to_bits())
                .collect();
            let floats: Vec<f32> = cache.iter().map(|&h| quant::f16_to_f32(h)).collect();
            let mut scores = vec![0.0; queries * positions];
            kernels.group_dots(&query, queries, apart, hd, &cache, &mut scores);
            let mut sums = vec![f32::NAN; (queries - 1) * apart + hd];
            kernels.group_sums(&scores, &cache, &mut sums, queries, apart, hd);
            for g in 0..queries {
                let mut sum = vec![0.0; hd];
                for j in 0..positions {
                    let key = &floats[j * hd..][..hd];
                    let score = scores[g * positions + j];
                    assert_eq!(
                        score.to_bits(),
                        kernels.dot_f32(&query[g * apart..][..hd], key).to_bits(),
                        "{} score of query {g} of {queries}, position {j}",
                        kernels.name()
                    );
                    kernels.axpy(score, key, &mut sum);
                }
                assert_eq!(
                    sums[g * apart..][..hd]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>(),
                    sum.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{} sums of query {g} of {queries} ({hd} wide, {positions} positions)",
                    kernels.name()
                );
            }
        }
    }
}
