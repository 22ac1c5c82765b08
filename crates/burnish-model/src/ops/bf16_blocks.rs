//! The block kernels of the bf16 product (`bf16_matmul.rs`): each computes one 32x32 block of
//! the output from the packed operands (the left one as bf16 rows, the right one in the VNNI
//! layout), with AMX tiles or AVX512-BF16 registers. On other architectures both names run one
//! portable scalar body, so the dispatch needs no unreachable arm (and is never chosen there:
//! `Bf16Kernel::available` offers neither).

use super::bf16_matmul::BLOCK;

/// A block kernel of this CPU, for operands in the packed layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKernel {
    /// AMX tiles.
    Amx,
    /// AVX512-BF16 registers.
    Avx512Bf16,
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx {
    //! The AMX block kernel: tiles 0-3 accumulate the four 16x16 quarters of the 32x32 output
    //! block, tiles 4-5 hold 16 rows x 32 `k` of the left matrix, tiles 6-7 16 pairs of `k` x
    //! 16 columns of the right one.

    use std::arch::asm;

    use super::BLOCK;

    /// The tile configuration `ldtilecfg` reads (palette 1): 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    /// Configures tiles 0-7 as 16 rows of 64 bytes on this thread.
    ///
    /// # Safety
    /// The CPU has AMX and the process has been granted the tile state.
    pub unsafe fn configure() {
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            config.bytes_per_row[t] = 64;
            config.rows[t] = 16;
        }
        // SAFETY: the caller guarantees AMX; the config is a valid palette-1 layout.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly)) };
    }

    /// Releases this thread's tile state.
    ///
    /// # Safety
    /// As [`configure`].
    pub unsafe fn release() {
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// `tile = a[0..32, ..] @ b[.., 0..32]` over the packed buffers.
    ///
    /// # Safety
    /// Tiles configured by [`configure`] on this thread; `a` holds 32 rows of `k_pad`, `b` the
    /// VNNI panel (`k_pad / 2` rows of stride `2 * n_pad`, 32 columns from its start).
    pub unsafe fn block(
        a: &[u16],
        b: &[u16],
        k_pad: usize,
        n_pad: usize,
        tile: &mut [f32; BLOCK * BLOCK],
    ) {
        debug_assert!(a.len() >= 31 * k_pad + k_pad && b.len() >= (k_pad / 2 - 1) * 2 * n_pad + 64);
        let (a, b) = (a.as_ptr(), b.as_ptr());
        let a_stride = k_pad * 2;
        let b_stride = n_pad * 4;
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for kk in (0..k_pad).step_by(BLOCK) {
                let a0 = a.add(kk);
                let a1 = a.add(16 * k_pad + kk);
                let b0 = b.add(kk * n_pad);
                let b1 = b0.add(32);
                asm!(
                    "tileloadd tmm4, [{a0} + {sa} * 1]",
                    "tileloadd tmm5, [{a1} + {sa} * 1]",
                    "tileloadd tmm6, [{b0} + {sb} * 1]",
                    "tileloadd tmm7, [{b1} + {sb} * 1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0,
                    a1 = in(reg) a1,
                    b0 = in(reg) b0,
                    b1 = in(reg) b1,
                    sa = in(reg) a_stride,
                    sb = in(reg) b_stride,
                    options(nostack, readonly)
                );
            }
            let c = tile.as_mut_ptr();
            asm!(
                "tilestored [{c0} + {s} * 1], tmm0",
                "tilestored [{c1} + {s} * 1], tmm1",
                "tilestored [{c2} + {s} * 1], tmm2",
                "tilestored [{c3} + {s} * 1], tmm3",
                c0 = in(reg) c,
                c1 = in(reg) c.add(16),
                c2 = in(reg) c.add(16 * BLOCK),
                c3 = in(reg) c.add(16 * BLOCK + 16),
                s = in(reg) BLOCK * 4,
                options(nostack)
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    //! The AVX512-BF16 block kernel: 8 rows x 32 columns of the output in 16 registers, each
    //! `vdpbf16ps` adding one pair of `k` for 16 columns.

    use std::arch::x86_64::*;

    use super::BLOCK;

    /// Rows of the register block.
    const ROWS: usize = 8;

    /// `tile = a[0..32, ..] @ b[.., 0..32]` over the packed buffers.
    ///
    /// # Safety
    /// The CPU has AVX512F and AVX512-BF16; the buffers as for the AMX kernel.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn block(
        a: &[u16],
        b: &[u16],
        k_pad: usize,
        n_pad: usize,
        tile: &mut [f32; BLOCK * BLOCK],
    ) {
        debug_assert!(a.len() >= BLOCK * k_pad && b.len() >= (k_pad / 2 - 1) * 2 * n_pad + 64);
        let (a, b) = (a.as_ptr(), b.as_ptr());
        for r0 in (0..BLOCK).step_by(ROWS) {
            let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
            for p in 0..k_pad / 2 {
                // SAFETY: inside the packed buffers (see the caller).
                unsafe {
                    let row = b.add(p * 2 * n_pad);
                    let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(row.cast()));
                    let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(row.add(32).cast()));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let pair = a
                            .add((r0 + r) * k_pad + 2 * p)
                            .cast::<i32>()
                            .read_unaligned();
                        let pair: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                        acc[0] = _mm512_dpbf16_ps(acc[0], pair, b0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], pair, b1);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let out = tile[(r0 + r) * BLOCK..].as_mut_ptr();
                // SAFETY: 32 floats of row `r0 + r` of the tile.
                unsafe {
                    _mm512_storeu_ps(out, acc[0]);
                    _mm512_storeu_ps(out.add(16), acc[1]);
                }
            }
        }
    }
}

/// The block product in plain Rust, for architectures without the x86 kernels.
#[cfg(not(target_arch = "x86_64"))]
fn scalar_block(a: &[u16], b: &[u16], k_pad: usize, n_pad: usize, tile: &mut [f32; BLOCK * BLOCK]) {
    let f = |bits: u16| f32::from_bits((bits as u32) << 16);
    for (r, row) in tile.chunks_exact_mut(BLOCK).enumerate() {
        for (c, out) in row.iter_mut().enumerate() {
            *out = (0..k_pad)
                .map(|kk| f(a[r * k_pad + kk]) * f(b[(kk / 2) * 2 * n_pad + 2 * c + kk % 2]))
                .sum();
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) mod amx {
    use super::BLOCK;

    pub unsafe fn configure() {}
    pub unsafe fn release() {}
    pub unsafe fn block(
        a: &[u16],
        b: &[u16],
        k_pad: usize,
        n_pad: usize,
        tile: &mut [f32; BLOCK * BLOCK],
    ) {
        super::scalar_block(a, b, k_pad, n_pad, tile)
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) mod avx512 {
    use super::BLOCK;

    pub unsafe fn block(
        a: &[u16],
        b: &[u16],
        k_pad: usize,
        n_pad: usize,
        tile: &mut [f32; BLOCK * BLOCK],
    ) {
        super::scalar_block(a, b, k_pad, n_pad, tile)
    }
}
