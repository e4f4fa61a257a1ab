//! A quantized weight matrix kept in GGML's blocks, and its product with activations.

use std::sync::Arc;

use rayon::prelude::*;

use super::interleaved;
use super::quant::{self, Q8Block, QK, QuantType, Scales};
use super::{Kernels, Prepared};

/// A `rows × cols` matrix of quantized rows. It may stack matrices of different types
/// (the query, key and value projections of a layer, say) so that one parallel pass
/// computes all of them.
#[derive(Debug)]
pub struct QMatrix {
    parts: Vec<Part>,
    rows: usize,
    cols: usize,
}

/// A whole file's bytes shared by the matrices read from it (the GGUF file, mapped).
pub type FileBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Where a part's bytes are: its own (interleaved rows, or rows a caller gave), or the
/// file's, so that rows kept in GGML's layout are never copied.
enum Bytes {
    Owned(Vec<u8>),
    Shared(FileBytes),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Owned(bytes) => bytes,
            Bytes::Shared(file) => (**file).as_ref(),
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bytes::Owned(bytes) => write!(f, "{} bytes", bytes.len()),
            Bytes::Shared(file) => write!(f, "a file of {} bytes", (**file).as_ref().len()),
        }
    }
}

#[derive(Debug)]
struct Part {
    ty: QuantType,
    first_row: usize,
    rows: usize,
    row_bytes: usize,
    /// The rows' bytes from `start` on: GGML's layout, or Q8_0, Q4_0, Q5_0, Q4_K or Q6_K
    /// rows interleaved ([`interleaved`], `row_bytes` a row then), which start on a
    /// cache line.
    data: Bytes,
    start: usize,
    interleaved: bool,
}

impl Part {
    fn bytes(&self) -> &[u8] {
        &self.data.as_slice()[self.start..self.start + self.rows * self.row_bytes]
    }
}

/// Rows per task when many tokens share a pass: the tiles take the tokens a chunk at a
/// time, and each chunk in cache serves every row of the task (64 rows of 8192 Q8_0
/// weights are 557 KB, in L2), while a layer's products still make several tasks a
/// thread.
const ROWS_PER_BATCH_TASK: usize = 64;
/// Up to this many tokens (a decode step of several sequences, say) the tokens'
/// activations are small enough to stay in cache beside larger row chunks, and tasks
/// as small as a prompt's would cost more to schedule than they compute.
const FEW_TOKENS: usize = 32;

/// Rows of one task for a product with `tokens` tokens: a prompt's small chunks, or for
/// a few tokens about four tasks a thread, as one token's product has.
fn rows_per_task(rows: usize, tokens: usize) -> usize {
    if tokens > FEW_TOKENS {
        return ROWS_PER_BATCH_TASK;
    }
    let per_thread = rows.div_ceil(rayon::current_num_threads() * 4);
    per_thread
        .next_multiple_of(ROWS_PER_BATCH_TASK)
        .max(ROWS_PER_BATCH_TASK)
}

thread_local! {
    /// The prepared activations of the products this thread starts, kept so that a
    /// step allocates only on its first.
    static PREPARED: std::cell::RefCell<Prepared> = std::cell::RefCell::default();
    /// A task's row-major results of a part an interleaved matrix keeps in GGML's
    /// layout, before they are put token-major.
    static ROW_MAJOR: std::cell::RefCell<Vec<f32>> = std::cell::RefCell::default();
}

impl QMatrix {
    /// A matrix over `data`, or `None` when `data` is not `rows` whole rows of `cols`.
    pub fn new(ty: QuantType, rows: usize, cols: usize, data: Vec<u8>) -> Option<QMatrix> {
        if data.len() != rows.checked_mul(ty.row_bytes(cols)?)? {
            return None;
        }
        QMatrix::over(ty, rows, cols, Bytes::Owned(data), 0)
    }

    /// A matrix over `rows` rows of `cols` from byte `start` of `file`, read in place,
    /// or `None` when they are not whole rows inside it.
    pub fn in_file(
        ty: QuantType,
        rows: usize,
        cols: usize,
        file: FileBytes,
        start: usize,
    ) -> Option<QMatrix> {
        QMatrix::over(ty, rows, cols, Bytes::Shared(file), start)
    }

    fn over(ty: QuantType, rows: usize, cols: usize, data: Bytes, start: usize) -> Option<QMatrix> {
        let row_bytes = ty.row_bytes(cols)?;
        let end = rows.checked_mul(row_bytes)?.checked_add(start)?;
        (cols.is_multiple_of(QK) && end <= data.as_slice().len()).then(|| QMatrix {
            parts: vec![Part {
                ty,
                first_row: 0,
                rows,
                row_bytes,
                data,
                start,
                interleaved: false,
            }],
            rows,
            cols,
        })
    }

    /// This matrix in the layout `kernels` read fastest: Q8_0, Q4_0, Q5_0, Q4_K and Q6_K
    /// rows interleaved ([`interleaved`]) for AVX2 and AVX-512 where whole groups of a
    /// part can be, as it is otherwise.
    pub fn arranged_for(self, kernels: Kernels) -> QMatrix {
        if kernels.interleaves() {
            self.interleaved()
        } else {
            self
        }
    }

    /// This matrix with its Q8_0, Q4_0, Q5_0, Q4_K and Q6_K parts interleaved, where
    /// whole groups of rows and whole pairs of blocks allow (the others stay as they
    /// are, and are read by their own kernels part by part); as it is otherwise, and wholly as it is
    /// unless every part is whole groups of rows, so that tasks split on groups.
    pub(super) fn interleaved(self) -> QMatrix {
        self.interleaved_by(POPULATED)
    }

    /// [`interleaved`](Self::interleaved), each task writing about `task_bytes`.
    pub(super) fn interleaved_by(mut self, task_bytes: usize) -> QMatrix {
        let blocks = self.cols / QK;
        let fits = |p: &Part| !p.interleaved && interleaved::fits(p.ty, p.rows, blocks);
        if !self.parts.iter().any(fits)
            || !self
                .parts
                .iter()
                .all(|p| p.rows.is_multiple_of(interleaved::ROWS))
        {
            return self;
        }
        for part in self.parts.iter_mut().filter(|p| fits(p)) {
            let row_bytes = interleaved::row_bytes(part.ty, blocks);
            let len = part.rows * row_bytes;
            // Groups start on a cache line, so that the kernels' loads are aligned.
            let mut data = vec![0u8; len + 63];
            let start = data.as_ptr().align_offset(64);
            // Whole groups a task, on every thread: a model's loading waits for this.
            // Each task's pages are faulted in with one call first: a fault for each
            // 4 KiB page was a third of a Q8_0 file's loading.
            let ty = part.ty;
            let groups = (task_bytes / (interleaved::ROWS * row_bytes)).max(1);
            part.bytes()
                .par_chunks(groups * interleaved::ROWS * part.row_bytes)
                .zip(
                    data[start..start + len].par_chunks_mut(groups * interleaved::ROWS * row_bytes),
                )
                .for_each(|(rows, out)| {
                    populate(out);
                    interleaved::interleave(ty, rows, blocks, out);
                });
            part.data = Bytes::Owned(data);
            part.start = start;
            part.row_bytes = row_bytes;
            part.interleaved = true;
        }
        self
    }

    /// The rows of `matrices`, one after another; `None` unless all have the same width.
    pub fn stack(matrices: Vec<QMatrix>) -> Option<QMatrix> {
        let cols = matrices.first()?.cols;
        let mut parts = Vec::new();
        let mut rows = 0;
        for matrix in matrices {
            if matrix.cols != cols {
                return None;
            }
            for mut part in matrix.parts {
                part.first_row = rows;
                rows += part.rows;
                parts.push(part);
            }
        }
        Some(QMatrix { parts, rows, cols })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// How the activations of this matrix's products are quantized: under one scale
    /// a super-block where any part is a K-quant (whose interleaved Q4_K products add
    /// a super-block's groups in integers, and which GGML multiplies by Q8_K
    /// activations too), a scale a block otherwise. Every other part's kernels read
    /// either.
    pub fn scales(&self) -> Scales {
        if self.parts.iter().any(|p| p.ty.is_k_quant()) {
            Scales::PerSuperBlock
        } else {
            Scales::PerBlock
        }
    }

    /// The part holding row `r`.
    fn part(&self, r: usize) -> &Part {
        self.parts
            .iter()
            .find(|p| r < p.first_row + p.rows)
            .unwrap_or_else(|| panic!("row {r} of a {}-row matrix", self.rows))
    }

    /// The type and bytes of row `r` (in GGML's layout).
    fn row(&self, r: usize) -> (QuantType, &[u8]) {
        let part = self.part(r);
        let at = (r - part.first_row) * part.row_bytes;
        (part.ty, &part.bytes()[at..at + part.row_bytes])
    }

    /// Rows `first..` times `tokens` tokens' activations into `out` (`out[i * tokens + t]`
    /// for row `first + i`), part by part; `prepared` is what
    /// [`Kernels::prepare_floats`] made of `x`, or empty.
    fn dot_range(
        &self,
        kernels: Kernels,
        mut first: usize,
        x: &[Q8Block],
        tokens: usize,
        prepared: &Prepared,
        mut out: &mut [f32],
    ) {
        for part in &self.parts {
            let end = part.first_row + part.rows;
            if out.is_empty() {
                break;
            }
            if first >= end {
                continue;
            }
            let rows = (end - first).min(out.len() / tokens);
            let (now, rest) = out.split_at_mut(rows * tokens);
            let at = (first - part.first_row) * part.row_bytes;
            let bytes = &part.bytes()[at..at + rows * part.row_bytes];
            kernels.dot_rows_tokens(part.ty, bytes, part.row_bytes, x, tokens, prepared, now);
            first += rows;
            out = rest;
        }
    }

    /// Rows `first..` of an interleaved matrix times `tokens` tokens' activations into
    /// `out`, token-major for these rows (`out[t * count + i]` for row `first + i`),
    /// part by part.
    fn dot_range_interleaved(
        &self,
        kernels: Kernels,
        first: usize,
        x: &[Q8Block],
        tokens: usize,
        prepared: &Prepared,
        out: &mut [f32],
    ) {
        let count = out.len() / tokens;
        let mut row = first;
        for part in &self.parts {
            let end = part.first_row + part.rows;
            if row >= first + count {
                break;
            }
            if row >= end {
                continue;
            }
            // Tasks and parts split rows on groups: whole groups, whole rows of bytes.
            debug_assert!((row - part.first_row).is_multiple_of(interleaved::ROWS));
            let rows = (end - row).min(first + count - row);
            let at = (row - part.first_row) * part.row_bytes;
            let bytes = &part.bytes()[at..at + rows * part.row_bytes];
            let out = &mut out[row - first..];
            if part.interleaved {
                kernels.dot_interleaved(part.ty, bytes, x, tokens, prepared, out, count);
            } else if tokens == 1 {
                kernels.dot_rows(part.ty, bytes, part.row_bytes, x, &mut out[..rows]);
            } else {
                // A part kept in GGML's layout: its kernels' row-major results, turned
                // token-major.
                ROW_MAJOR.with_borrow_mut(|values| {
                    values.resize(rows * tokens, 0.0);
                    kernels.dot_rows_tokens(
                        part.ty,
                        bytes,
                        part.row_bytes,
                        x,
                        tokens,
                        prepared,
                        values,
                    );
                    for (i, row) in values.chunks_exact(tokens).enumerate() {
                        for (t, &value) in row.iter().enumerate() {
                            out[t * count + i] = value;
                        }
                    }
                });
            }
            row += rows;
        }
    }

    /// Row `r` as f32 (`out` is `cols` long).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let part = self.part(r);
        if part.interleaved {
            let (group, lane) = (
                (r - part.first_row) / interleaved::ROWS,
                r % interleaved::ROWS,
            );
            let group_bytes = interleaved::ROWS * part.row_bytes;
            let group = &part.bytes()[group * group_bytes..(group + 1) * group_bytes];
            let row = interleaved::row(part.ty, group, lane, self.cols / QK);
            return quant::dequantize_row(part.ty, &row, out);
        }
        let (ty, bytes) = self.row(r);
        quant::dequantize_row(ty, bytes, out);
    }

    /// `out[t * rows + r] = row r · token t` for the `tokens` activation rows in `x`
    /// (each `cols / 32` blocks, quantized as [`QMatrix::scales`] says). `transposed`
    /// is scratch of the same size as `out`. Rows are split across the current rayon
    /// pool, so callers run it inside theirs.
    pub fn matmul(
        &self,
        kernels: Kernels,
        x: &[Q8Block],
        tokens: usize,
        out: &mut [f32],
        transposed: &mut [f32],
    ) {
        let blocks = self.cols / QK;
        let out = &mut out[..tokens * self.rows];
        // `x` may be scratch longer than these tokens' blocks.
        let x = &x[..tokens * blocks];
        // A comparison a block: nothing beside the product.
        assert!(
            self.scales().hold_for(x),
            "activations quantized with a scale a block for a matrix that needs {:?}",
            self.scales()
        );
        // Any part interleaved: tasks split on groups.
        let interleaved = self.parts.iter().any(|p| p.interleaved);
        if interleaved {
            return self.matmul_interleaved(kernels, x, tokens, out, transposed);
        }
        if tokens == 1 {
            // About four tasks a thread.
            let per_task = self.rows.div_ceil(rayon::current_num_threads() * 4).max(16);
            let none = Prepared::default();
            out.par_chunks_mut(per_task)
                .enumerate()
                .for_each(|(task, values)| {
                    self.dot_range(kernels, task * per_task, x, 1, &none, values);
                });
            return;
        }
        let per_task = rows_per_task(self.rows, tokens);
        // Row-major results per row chunk, so each task writes one contiguous slice.
        let transposed = &mut transposed[..tokens * self.rows];
        PREPARED.with_borrow_mut(|prepared| {
            // Float rows' tiles read the tokens' values as floats, made once here.
            if self.parts.iter().any(|p| p.ty.is_float()) {
                kernels.prepare_floats(x, prepared);
            } else {
                prepared.floats.clear();
            }
            let prepared = &*prepared;
            transposed
                .par_chunks_mut(per_task * tokens)
                .enumerate()
                .for_each(|(task, values)| {
                    self.dot_range(kernels, task * per_task, x, tokens, prepared, values);
                });
        });
        // Back to token-major, one token per task: done on one thread this took 6% of a
        // prompt's time.
        let transposed = &*transposed;
        out.par_chunks_mut(self.rows)
            .enumerate()
            .for_each(|(t, values)| {
                for (r, value) in values.iter_mut().enumerate() {
                    *value = transposed[r * tokens + t];
                }
            });
    }

    /// [`QMatrix::matmul`] of an interleaved matrix. Each task writes its rows
    /// token-major into its own chunk of `scratch`, so that putting the tokens' rows
    /// together is a copy of whole runs of rows, not a transposition.
    fn matmul_interleaved(
        &self,
        kernels: Kernels,
        x: &[Q8Block],
        tokens: usize,
        out: &mut [f32],
        scratch: &mut [f32],
    ) {
        PREPARED.with_borrow_mut(|prepared| {
            // Parts kept in GGML's layout may be float rows, whose tiles read floats.
            if tokens > 1 && self.parts.iter().any(|p| p.ty.is_float()) {
                kernels.prepare_floats(x, prepared);
            } else {
                prepared.floats.clear();
            }
            kernels.prepare(x, prepared);
            let prepared = &*prepared;
            if tokens == 1 {
                // Whole groups to a task (two, for its kernel's pairs).
                let per_task = self
                    .rows
                    .div_ceil(rayon::current_num_threads() * 4)
                    .next_multiple_of(2 * interleaved::ROWS);
                out.par_chunks_mut(per_task)
                    .enumerate()
                    .for_each(|(task, values)| {
                        self.dot_range_interleaved(
                            kernels,
                            task * per_task,
                            x,
                            1,
                            prepared,
                            values,
                        );
                    });
                return;
            }
            let per_task = rows_per_task(self.rows, tokens);
            let scratch = &mut scratch[..tokens * self.rows];
            scratch
                .par_chunks_mut(per_task * tokens)
                .enumerate()
                .for_each(|(task, values)| {
                    self.dot_range_interleaved(
                        kernels,
                        task * per_task,
                        x,
                        tokens,
                        prepared,
                        values,
                    );
                });
            let scratch = &*scratch;
            out.par_chunks_mut(self.rows)
                .enumerate()
                .for_each(|(t, values)| {
                    for (task, chunk) in scratch.chunks(per_task * tokens).enumerate() {
                        let count = chunk.len() / tokens;
                        values[task * per_task..task * per_task + count]
                            .copy_from_slice(&chunk[t * count..(t + 1) * count]);
                    }
                });
        });
    }
}

/// About how many bytes of interleaved rows one task writes.
const POPULATED: usize = 1 << 20;

/// The pages under `bytes`, about to be written, made present with one call
/// (`MADV_POPULATE_WRITE`, Linux 5.14) rather than one fault each; where the kernel
/// refuses (an older kernel), the writes fault them in as before.
fn populate(bytes: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        // The kernel's page size (4 KiB on x86-64; 16 or 64 KiB on some arm64 kernels).
        // SAFETY: sysconf reads a constant of the system.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&page| page > 0)
            .unwrap_or(4096);
        let first = bytes.as_ptr().align_offset(page);
        if first < bytes.len() {
            let span = (bytes.len() - first) / page * page;
            // SAFETY: the range lies within `bytes`, which this thread holds mutably;
            // populating pages changes no byte of them.
            unsafe {
                libc::madvise(
                    bytes.as_mut_ptr().add(first).cast(),
                    span,
                    libc::MADV_POPULATE_WRITE,
                )
            };
        }
    }
}
