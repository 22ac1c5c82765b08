//! The bf16 matrix product of the CPU kernels: f32 matrices in, each element rounded to bf16
//! (round to nearest even), products accumulated in f32, f32 out — what PyTorch's autocast does
//! on a CPU.
//!
//! Three kernels, picked at run time ([`Bf16Kernel::best`]):
//! - **AMX** (Intel Sapphire Rapids and later): 2x2 tiles of 16x16 f32 accumulators per 32x32
//!   block of the output, `tdpbf16ps` over 32-wide slices of `k`. The tile instructions are
//!   written as inline assembly (Rust's AMX intrinsics are unstable), and Linux hands out the
//!   tile state only after `arch_prctl(ARCH_REQ_XCOMP_PERM)`, asked once per process.
//! - **AVX512-BF16** (also AMD Zen 4 and later): `vdpbf16ps` on 8x32 register blocks.
//! - **Portable**: the inputs rounded to bf16 and multiplied by the f32 kernel. A product of two
//!   bf16 values is exact in f32, so this equals the others up to the order of the f32 sums.
//!
//! AMX and AVX512-BF16 share one packing: the left matrix as bf16 rows padded to a multiple of
//! 32 in both dimensions, the right one in the "VNNI" layout the instructions read, pairs of
//! consecutive `k` interleaved per column (`[k/2][n][2]`), padded the same way with zeros.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::bf16_blocks::{BlockKernel, amx, avx512};
use super::cpu_matmul::{Matrix, f32_matmul_into};

/// Rows and columns of the output block one kernel call computes, and the `k` step.
pub(crate) const BLOCK: usize = 32;
/// Output blocks down the rows that one rayon task computes against one column block: the
/// task's share of the packed left matrix (256 rows) then stays in the core's L2 cache.
const BLOCKS_PER_TASK: usize = 8;

/// A bf16 matrix-product kernel of this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// Intel's Advanced Matrix Extensions (`amx_bf16`).
    Amx,
    /// AVX-512's bf16 dot products (`avx512_bf16`).
    Avx512Bf16,
    /// bf16 rounding, then the f32 kernel: any CPU.
    Portable,
}

impl Bf16Kernel {
    /// The fastest kernel this CPU runs (detected once).
    pub fn best() -> Self {
        static BEST: OnceLock<Bf16Kernel> = OnceLock::new();
        *BEST.get_or_init(|| Self::available()[0])
    }

    /// Every kernel this CPU runs, fastest first; `Portable` always.
    pub fn available() -> Vec<Self> {
        let mut kernels = Vec::new();
        if amx_available() {
            kernels.push(Bf16Kernel::Amx);
        }
        if avx512_bf16_available() {
            kernels.push(Bf16Kernel::Avx512Bf16);
        }
        kernels.push(Bf16Kernel::Portable);
        kernels
    }
}

/// Whether the CPU has AMX tiles with bf16 and the kernel let this process use them.
fn amx_available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        static AMX: OnceLock<bool> = OnceLock::new();
        *AMX.get_or_init(|| {
            use std::arch::x86_64::{__cpuid, __cpuid_count};
            // Leaf 7 is read only when the CPU reports it.
            let leaf7 = __cpuid(0).eax >= 7 && (__cpuid_count(7, 0).edx >> 22) & 0b101 == 0b101;
            if !leaf7 {
                return false;
            }
            /// `arch_prctl` request for permission to use an extended state component.
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            /// The state component of the AMX tile data.
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a request about this process's own permissions; it touches no memory.
            unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                ) == 0
            }
        })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

fn avx512_bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x` rounded to the nearest bf16 (ties to even), as its bits; NaN stays NaN.
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        ((bits >> 16) as u16) | 0x0040
    } else {
        rounded as u16
    }
}

/// `x` rounded to bf16 and back.
#[inline(always)]
pub(crate) fn round_bf16(x: f32) -> f32 {
    f32::from_bits((to_bf16(x) as u32) << 16)
}

/// `dst[i] = to_bf16(src[i])`.
#[inline(always)]
fn convert_body(src: &[f32], dst: &mut [u16]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = to_bf16(x);
    }
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Runs `$body` compiled for AVX-512 when the CPU has it (the packing loops then convert 16
/// values per instruction), else for the baseline.
macro_rules! with_avx512 {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
            {
                // SAFETY: the CPU has the features the variant was compiled for.
                unsafe { avx512(|| $body) }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}

/// The left matrix `[m, k]` as bf16 rows of `k_pad` (zero padded), `m_pad` of them, into
/// `out`.
fn pack_lhs(a: Matrix, m_pad: usize, k_pad: usize, out: &mut Vec<u16>) {
    let (m, k) = (a.rows, a.cols);
    out.clear();
    out.resize(m_pad * k_pad, 0);
    out.par_chunks_mut(16 * k_pad)
        .enumerate()
        .for_each(|(group, chunk)| {
            let i0 = group * 16;
            let rows = 16.min(m.saturating_sub(i0));
            if rows == 0 {
                return;
            }
            with_avx512!(pack_lhs_group(a, i0, rows, k, k_pad, chunk))
        });
}

/// Rows `i0..i0 + rows` (at most 16) of the left matrix into `chunk` (`rows x k_pad`).
#[inline(always)]
fn pack_lhs_group(a: Matrix, i0: usize, rows: usize, k: usize, k_pad: usize, chunk: &mut [u16]) {
    if a.col_stride == 1 {
        for r in 0..rows {
            let start = (i0 + r) * a.row_stride;
            convert_body(
                &a.data[start..start + k],
                &mut chunk[r * k_pad..r * k_pad + k],
            );
        }
    } else if a.row_stride == 1 {
        // A transposed view: the group's 16 values of each `k` lie together in memory. 32 of
        // them at a time are converted into a small tile, then written out row by row.
        let mut tile = [[0u16; 16]; 32];
        for j0 in (0..k).step_by(32) {
            let width = 32.min(k - j0);
            for (jj, tile_row) in tile.iter_mut().enumerate().take(width) {
                let start = (j0 + jj) * a.col_stride + i0;
                convert_body(&a.data[start..start + rows], &mut tile_row[..rows]);
            }
            for r in 0..rows {
                let dst = &mut chunk[r * k_pad + j0..r * k_pad + j0 + width];
                for (d, tile_row) in dst.iter_mut().zip(&tile) {
                    *d = tile_row[r];
                }
            }
        }
    } else {
        for r in 0..rows {
            for j in 0..k {
                chunk[r * k_pad + j] = to_bf16(a.at(i0 + r, j));
            }
        }
    }
}

/// Pairs of `k` per rayon task of [`pack_rhs`].
const PAIRS: usize = 16;

/// The right matrix `[k, n]` in the VNNI layout `[k_pad / 2][n_pad][2]` (zero padded), into
/// `out`.
fn pack_rhs(b: Matrix, k_pad: usize, n_pad: usize, out: &mut Vec<u16>) {
    let k = b.rows;
    out.clear();
    out.resize(k_pad * n_pad, 0);
    out.par_chunks_mut(PAIRS * 2 * n_pad)
        .enumerate()
        .for_each(|(task, chunk)| {
            let k0 = 2 * task * PAIRS;
            let k_end = k.min(k0 + chunk.len() / n_pad);
            if k0 < k_end {
                with_avx512!(pack_rhs_pairs(b, k0, k_end, n_pad, chunk))
            }
        });
}

/// Rows `k0..k_end` (at most `2 * PAIRS`, `k0` even) of the right matrix into `chunk`, pairs
/// of rows interleaved.
#[inline(always)]
fn pack_rhs_pairs(b: Matrix, k0: usize, k_end: usize, n_pad: usize, chunk: &mut [u16]) {
    let n = b.cols;
    if b.col_stride == 1 {
        for kk in (k0..k_end).step_by(2) {
            let p = (kk - k0) / 2;
            let first = &b.data[kk * b.row_stride..kk * b.row_stride + n];
            let out_row = &mut chunk[p * 2 * n_pad..p * 2 * n_pad + 2 * n];
            if kk + 1 < k_end {
                let second = &b.data[(kk + 1) * b.row_stride..(kk + 1) * b.row_stride + n];
                for ((pair, &x), &y) in out_row.chunks_exact_mut(2).zip(first).zip(second) {
                    pair[0] = to_bf16(x);
                    pair[1] = to_bf16(y);
                }
            } else {
                for (pair, &x) in out_row.chunks_exact_mut(2).zip(first) {
                    pair[0] = to_bf16(x);
                }
            }
        }
    } else if b.row_stride == 1 {
        // Columns contiguous in memory (a transposed weight): each column's run of `k` values
        // is converted into a small tile, then written out pair-row by pair-row.
        let len = k_end - k0;
        let mut tile = [[0u16; 2 * PAIRS]; 16];
        for j0 in (0..n).step_by(16) {
            let width = 16.min(n - j0);
            for (jj, tile_row) in tile.iter_mut().enumerate().take(width) {
                let start = (j0 + jj) * b.col_stride + k0;
                convert_body(&b.data[start..start + len], &mut tile_row[..len]);
                tile_row[len..].fill(0);
            }
            for p in 0..len.div_ceil(2) {
                let dst = &mut chunk[(p * n_pad + j0) * 2..(p * n_pad + j0 + width) * 2];
                for (pair, tile_row) in dst.chunks_exact_mut(2).zip(&tile) {
                    pair[0] = tile_row[2 * p];
                    pair[1] = tile_row[2 * p + 1];
                }
            }
        }
    } else {
        for kk in k0..k_end {
            for j in 0..n {
                chunk[(((kk - k0) / 2) * n_pad + j) * 2 + kk % 2] = to_bf16(b.at(kk, j));
            }
        }
    }
}

thread_local! {
    /// Packing buffers this thread has finished with, kept so that the next products reuse
    /// mapped memory instead of faulting in fresh pages.
    static SPARE: std::cell::RefCell<Vec<Vec<u16>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare buffers kept per thread: the two operands of a product and one prepared operand.
const SPARES: usize = 3;

fn take_buffer() -> Vec<u16> {
    SPARE.with(|spare| spare.borrow_mut().pop().unwrap_or_default())
}

fn give_back(buffer: Vec<u16>) {
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARES {
            spare.push(buffer);
        }
    });
}

/// The right operand of bf16 products, converted once for any number of left operands (the
/// output head multiplies every chunk of positions by the same weight).
pub(crate) enum PackedRhs {
    /// Rounded to bf16 values in f32, for the portable kernel: `[k, n]` row-major.
    Rounded { data: Vec<f32>, k: usize, n: usize },
    /// In the VNNI layout of the AMX and AVX512-BF16 kernels, for `kernel`.
    Vnni {
        kernel: BlockKernel,
        data: Vec<u16>,
        k: usize,
        n: usize,
        k_pad: usize,
        n_pad: usize,
    },
}

impl PackedRhs {
    /// `rhs [k, n]` prepared for `kernel`.
    pub fn new(rhs: Matrix, kernel: Bf16Kernel) -> Self {
        let (k, n) = (rhs.rows, rhs.cols);
        // An empty operand has nothing to pack (and would make the packing's chunks empty).
        let block_kernel = match kernel {
            _ if k == 0 || n == 0 => None,
            Bf16Kernel::Amx => Some(BlockKernel::Amx),
            Bf16Kernel::Avx512Bf16 => Some(BlockKernel::Avx512Bf16),
            Bf16Kernel::Portable => None,
        };
        let Some(block_kernel) = block_kernel else {
            return PackedRhs::Rounded {
                data: rounded(rhs),
                k,
                n,
            };
        };
        let (k_pad, n_pad) = (round_up(k, BLOCK), round_up(n, BLOCK));
        let mut data = take_buffer();
        pack_rhs(rhs, k_pad, n_pad, &mut data);
        PackedRhs::Vnni {
            kernel: block_kernel,
            data,
            k,
            n,
            k_pad,
            n_pad,
        }
    }

    fn shape(&self) -> (usize, usize) {
        match *self {
            PackedRhs::Rounded { k, n, .. } | PackedRhs::Vnni { k, n, .. } => (k, n),
        }
    }
}

impl Drop for PackedRhs {
    fn drop(&mut self) {
        if let PackedRhs::Vnni { data, .. } = self {
            give_back(std::mem::take(data));
        }
    }
}

/// A matrix's elements rounded to bf16, row-major.
fn rounded(a: Matrix) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.rows * a.cols);
    for i in 0..a.rows {
        out.extend((0..a.cols).map(|j| round_bf16(a.at(i, j))));
    }
    out
}

/// `dst = lhs @ rhs` (or `+=` when `accumulate`) with bf16 inputs and f32 accumulation, `dst`
/// row-major `[lhs.rows, rhs.cols]`, on all cores, with `kernel` (which must be available).
pub(crate) fn matmul_into(
    dst: &mut [f32],
    lhs: Matrix,
    rhs: Matrix,
    accumulate: bool,
    kernel: Bf16Kernel,
) {
    matmul_packed(dst, lhs, &PackedRhs::new(rhs, kernel), accumulate);
}

/// [`matmul_into`] with the right operand already prepared (for the kernel it names).
pub(crate) fn matmul_packed(dst: &mut [f32], lhs: Matrix, rhs: &PackedRhs, accumulate: bool) {
    let (k, n) = rhs.shape();
    let m = lhs.rows;
    assert!(lhs.cols == k && dst.len() >= m * n && lhs.in_bounds());
    if m == 0 || n == 0 {
        return;
    }
    match rhs {
        PackedRhs::Rounded { data, .. } => {
            let a = rounded(lhs);
            f32_matmul_into(
                dst,
                Matrix::row_major(&a, m, k),
                Matrix::row_major(data, k, n),
                accumulate,
            );
        }
        PackedRhs::Vnni {
            kernel,
            data,
            k_pad,
            n_pad,
            ..
        } => {
            let mut a = take_buffer();
            pack_lhs(lhs, round_up(m, BLOCK), *k_pad, &mut a);
            packed_product(dst, &a, data, [m, n, *k_pad, *n_pad], accumulate, *kernel);
            give_back(a);
        }
    }
}

/// A pointer to the output that rayon tasks share; each writes its own blocks only.
#[derive(Clone, Copy)]
struct Output(*mut f32);
// SAFETY: the tasks write disjoint blocks of the output (see `matmul_into`).
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

/// The product of the packed operands into `dst` (`[m, n]`), one rayon task per column block
/// and run of row blocks.
fn packed_product(
    dst: &mut [f32],
    a: &[u16],
    b: &[u16],
    [m, n, k_pad, n_pad]: [usize; 4],
    accumulate: bool,
    kernel: BlockKernel,
) {
    let m_pad = a.len() / k_pad;
    let (row_blocks, col_blocks) = (m_pad / BLOCK, n_pad / BLOCK);
    let row_tasks = row_blocks.div_ceil(BLOCKS_PER_TASK);
    let out = Output(dst.as_mut_ptr());
    (0..col_blocks * row_tasks)
        .into_par_iter()
        .for_each(|task| {
            let (col_block, row_task) = (task / row_tasks, task % row_tasks);
            let j0 = col_block * BLOCK;
            let mut tile = [0.0f32; BLOCK * BLOCK];
            let first = row_task * BLOCKS_PER_TASK;
            let blocks = first..row_blocks.min(first + BLOCKS_PER_TASK);
            let b_panel = &b[j0 * 2..];
            // SAFETY (both arms): the kernels read `BLOCK` packed rows of `a` from `i0` and the
            // `BLOCK`-column panel of `b` from `j0` over `k_pad`, all inside the padded buffers,
            // and write the 32x32 `tile`; the CPU has the instructions (`kernel` is available).
            match kernel {
                BlockKernel::Amx => unsafe {
                    amx::configure();
                    for block in blocks {
                        let i0 = block * BLOCK;
                        amx::block(&a[i0 * k_pad..], b_panel, k_pad, n_pad, &mut tile);
                        write_block(&tile, out, n, i0, j0, m, accumulate);
                    }
                    amx::release();
                },
                BlockKernel::Avx512Bf16 => unsafe {
                    for block in blocks {
                        let i0 = block * BLOCK;
                        avx512::block(&a[i0 * k_pad..], b_panel, k_pad, n_pad, &mut tile);
                        write_block(&tile, out, n, i0, j0, m, accumulate);
                    }
                },
            }
        });
}

/// Copies (or adds) the part of a 32x32 `tile` at `(i0, j0)` that lies inside the `[m, n]`
/// output.
fn write_block(
    tile: &[f32; BLOCK * BLOCK],
    out: Output,
    n: usize,
    i0: usize,
    j0: usize,
    m: usize,
    accumulate: bool,
) {
    let rows = BLOCK.min(m - i0);
    let cols = BLOCK.min(n - j0);
    for r in 0..rows {
        // SAFETY: row `i0 + r < m`, columns `j0..j0 + cols <= n`: inside `dst` (`m * n`), and
        // only this task writes this block.
        let row = unsafe { std::slice::from_raw_parts_mut(out.0.add((i0 + r) * n + j0), cols) };
        let src = &tile[r * BLOCK..r * BLOCK + cols];
        if accumulate {
            for (d, s) in row.iter_mut().zip(src) {
                *d += s;
            }
        } else {
            row.copy_from_slice(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values of both signs and several magnitudes.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 20_001) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    /// The product of the bf16-rounded inputs in f64, and the sum of |terms| per element (the
    /// scale of f32 accumulation error).
    fn reference(a: Matrix, b: Matrix) -> (Vec<f64>, Vec<f64>) {
        let (m, n, k) = (a.rows, b.cols, a.cols);
        let mut want = vec![0.0f64; m * n];
        let mut scale = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let t = round_bf16(a.at(i, p)) as f64 * round_bf16(b.at(p, j)) as f64;
                    want[i * n + j] += t;
                    scale[i * n + j] += t.abs();
                }
            }
        }
        (want, scale)
    }

    #[test]
    fn rounding_matches_half() {
        for x in values(10_000, 3).into_iter().map(|x| x * 1e3).chain([
            0.0,
            -0.0,
            1.0 + f32::EPSILON,
            f32::MAX,
            f32::INFINITY,
            f32::MIN_POSITIVE,
        ]) {
            assert_eq!(to_bf16(x), half::bf16::from_f32(x).to_bits(), "{x}");
        }
        assert!(round_bf16(f32::NAN).is_nan());
    }

    /// Every kernel this CPU runs equals the f64 product of the bf16-rounded inputs within f32
    /// accumulation error, on shapes that are not multiples of the block, on transposed views,
    /// and when accumulating into the output.
    #[test]
    fn every_kernel_equals_the_rounded_reference() {
        let kernels = Bf16Kernel::available();
        eprintln!("bf16 kernels on this CPU: {kernels:?}");
        for &(m, k, n) in &[
            (37, 45, 70),
            (1, 576, 33),
            (64, 32, 32),
            (130, 200, 3),
            (5, 0, 7),
            (4, 9, 0),
        ] {
            let a_data = values(m * k, 1);
            let b_data = values(k * n, 2);
            // Row-major and transposed views of the same matrices.
            let a_t: Vec<f32> = (0..k * m).map(|x| a_data[(x % m) * k + x / m]).collect();
            let b_t: Vec<f32> = (0..n * k).map(|x| b_data[(x % k) * n + x / k]).collect();
            let views = [
                (
                    Matrix::row_major(&a_data, m, k),
                    Matrix::row_major(&b_data, k, n),
                ),
                (
                    Matrix::row_major(&a_t, k, m).t(),
                    Matrix::row_major(&b_t, n, k).t(),
                ),
            ];
            for (a, b) in views {
                let (want, scale) = reference(a, b);
                for &kernel in &kernels {
                    let mut got = vec![0.5f32; m * n];
                    matmul_into(&mut got, a, b, true, kernel);
                    for i in 0..m * n {
                        let err = (got[i] as f64 - 0.5 - want[i]).abs();
                        assert!(
                            err <= 1e-6 * (scale[i] + 1.0),
                            "{kernel:?} {m}x{k}x{n} at {i}: {} vs {}",
                            got[i] - 0.5,
                            want[i]
                        );
                    }
                }
            }
        }
    }
}
