//! The CPU kernels' matrix product: one entry point, [`matmul_into`], for the fused ops of this
//! folder, in the model's [`Precision`]. fp32 runs the `gemm` crate (the one burn's flex uses,
//! multithreaded); bf16 runs the bf16 kernels of `bf16_matmul.rs` (AMX, AVX512-BF16, or bf16
//! rounding in front of the f32 product), all with f32 accumulation and output.

use crate::precision::Precision;

use super::bf16_matmul::{self, Bf16Kernel, PackedRhs};

/// A view of a 2-D f32 matrix in memory, any non-negative strides.
#[derive(Clone, Copy)]
pub(crate) struct Matrix<'a> {
    /// The elements, from the first one the view names.
    pub data: &'a [f32],
    /// Rows of the view.
    pub rows: usize,
    /// Columns of the view.
    pub cols: usize,
    /// Elements between consecutive rows.
    pub row_stride: usize,
    /// Elements between consecutive columns.
    pub col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// A 2-D flex tensor of f32 with non-negative strides, or `None` for anything else.
    pub fn of(t: &'a burn::backend::flex::FlexTensor) -> Option<Self> {
        let layout = t.layout();
        let (shape, strides) = (layout.shape(), layout.strides());
        if t.dtype() != burn::tensor::DType::F32
            || shape.num_dims() != 2
            || strides.iter().any(|&s| s < 0)
        {
            return None;
        }
        let matrix = Matrix {
            data: &t.storage::<f32>()[layout.start_offset()..],
            rows: shape[0],
            cols: shape[1],
            row_stride: strides[0] as usize,
            col_stride: strides[1] as usize,
        };
        matrix.in_bounds().then_some(matrix)
    }

    /// A row-major `rows x cols` buffer.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Matrix {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// Rows `start..start + len`.
    pub fn rows(self, start: usize, len: usize) -> Self {
        Matrix {
            data: &self.data[start * self.row_stride..],
            rows: len,
            ..self
        }
    }

    /// The transpose (a view: strides swapped).
    pub fn t(self) -> Self {
        Matrix {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Element `(i, j)`.
    #[inline(always)]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// Whether every element the view names lies inside its slice.
    pub fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst = lhs @ rhs` (or `dst += lhs @ rhs` when `accumulate`), `dst` row-major
/// `[lhs.rows, rhs.cols]`, on all cores, in `precision`.
pub(crate) fn matmul_into(
    dst: &mut [f32],
    lhs: Matrix,
    rhs: Matrix,
    accumulate: bool,
    precision: Precision,
) {
    match precision {
        // A product of a few rows (a decoding step) would spend as long converting the right
        // operand to bf16 as multiplying: it runs in f32, which is exact where bf16 rounds.
        Precision::Bf16 if lhs.rows >= MIN_BF16_ROWS => {
            bf16_matmul::matmul_into(dst, lhs, rhs, accumulate, Bf16Kernel::best())
        }
        _ => f32_matmul_into(dst, lhs, rhs, accumulate),
    }
}

/// Fewest rows of the left operand for which a bf16 product converts its operands (see
/// [`matmul_into`]).
const MIN_BF16_ROWS: usize = 16;

/// A right operand prepared once for several products in one precision (bf16 converts and
/// packs it once).
pub(crate) enum PreparedRhs<'a> {
    /// fp32: the matrix as it is.
    F32(Matrix<'a>),
    /// bf16: converted for this CPU's kernel.
    Bf16(PackedRhs),
}

impl<'a> PreparedRhs<'a> {
    /// `rhs` prepared for products in `precision`.
    pub fn new(rhs: Matrix<'a>, precision: Precision) -> Self {
        match precision {
            Precision::Fp32 => PreparedRhs::F32(rhs),
            Precision::Bf16 => PreparedRhs::Bf16(PackedRhs::new(rhs, Bf16Kernel::best())),
        }
    }

    /// `dst = lhs @ self` (or `+=` when `accumulate`), as [`matmul_into`].
    pub fn multiply(&self, dst: &mut [f32], lhs: Matrix, accumulate: bool) {
        match self {
            PreparedRhs::F32(rhs) => f32_matmul_into(dst, lhs, *rhs, accumulate),
            PreparedRhs::Bf16(rhs) => bf16_matmul::matmul_packed(dst, lhs, rhs, accumulate),
        }
    }
}

/// [`matmul_into`] in f32, with the `gemm` crate.
pub(crate) fn f32_matmul_into(dst: &mut [f32], lhs: Matrix, rhs: Matrix, accumulate: bool) {
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    assert!(rhs.rows == k && dst.len() >= m * n && lhs.in_bounds() && rhs.in_bounds());
    // SAFETY: the asserts above keep every access of the three views inside their slices, and
    // `dst` is a distinct, mutable buffer.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}
