//! Row kernels over contiguous `f32` slices for the CPU ops, written so that the compiler
//! vectorises them: fixed-width lanes for the reductions and an `exp` made of a rounding, a
//! polynomial and an exponent shift instead of one libm call per element.
//!
//! Each kernel is compiled twice on x86-64, once for AVX-512 and once for the baseline, and the
//! widest the CPU has is picked at run time (the detection is cached by std).

/// Lanes of the reductions: one AVX-512 register of f32.
const LANES: usize = 16;

/// `exp(x)` to about 1 ulp for `x <= 88`, flushed to 0 below -87 (so masked scores of -1e9 give
/// exactly 0, without libm's slow underflow path): `2^k * p(r)` with `x = k ln 2 + r`,
/// `|r| <= ln 2 / 2`, `p` the degree-7 Taylor polynomial.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let underflow = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + 0.5).floor();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((k as i32 + 127) as u32) << 23);
    if underflow { 0.0 } else { p * scale }
}

/// `tanh(x) = 1 - 2 / (exp(2x) + 1)`, through [`exp`]; absolute error ~1e-7.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

#[inline(always)]
fn max_body(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = m.max(x);
        }
    }
    let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in rest {
        max = max.max(x);
    }
    max
}

#[inline(always)]
fn sum_exp_body(row: &[f32], shift: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (s, &x) in lanes.iter_mut().zip(chunk) {
            *s += exp(x - shift);
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for &x in rest {
        sum += exp(x - shift);
    }
    sum
}

#[inline(always)]
fn log_sum_exp_body(row: &[f32]) -> f32 {
    let max = max_body(row);
    if !max.is_finite() {
        return max;
    }
    max + sum_exp_body(row, max).ln()
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let max = max_body(row);
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in chunks.by_ref() {
        for (s, x) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *x = exp(*x - max);
            *s += *x;
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    let scale = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= scale;
    }
}

#[inline(always)]
fn scaled_neg_softmax_body(row: &mut [f32], lse: f32, scale: f32) {
    for x in row.iter_mut() {
        *x = -scale * exp(*x - lse);
    }
}

#[inline(always)]
fn map_body<F: Fn(f32) -> f32>(src: &[f32], dst: &mut [f32], f: &F) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = f(x);
    }
}

#[inline(always)]
fn zip_map_body<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], dst: &mut [f32], f: &F) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = f(x, y);
    }
}

/// Defines `pub fn $name` that runs `$body` compiled for AVX-512 or AVX2 + FMA when the CPU has
/// them (the compiler vectorises the body with those instructions), else for the baseline.
macro_rules! widest {
    ($(#[$doc:meta])* fn $name:ident[$($gen:tt)*]($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:ident) => {
        $(#[$doc])*
        pub fn $name<$($gen)*>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                unsafe fn avx512<$($gen)*>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$($gen)*>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                // SAFETY: each variant runs only where the CPU has the features it was compiled
                // for (std caches the detection).
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512dq")
                {
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

widest! {
    /// `dst[i] = f(src[i])`, vectorised with the widest instructions the CPU has.
    fn map_slice[F: Fn(f32) -> f32](src: &[f32], dst: &mut [f32], f: &F) => map_body
}

widest! {
    /// `dst[i] = f(a[i], b[i])`, vectorised as [`map_slice`].
    fn zip_map_slice[F: Fn(f32, f32) -> f32](a: &[f32], b: &[f32], dst: &mut [f32], f: &F) => zip_map_body
}

widest! {
    /// `log(sum(exp(row)))`, computed stably around the row's maximum.
    fn log_sum_exp[](row: &[f32]) -> f32 => log_sum_exp_body
}

widest! {
    /// In place: the softmax of `row` (stable: shifted by the row's maximum).
    fn softmax_in_place[](row: &mut [f32]) => softmax_body
}

widest! {
    /// In place: `row[j] = -scale * exp(row[j] - lse)`, i.e. minus the scaled softmax given the
    /// row's log-sum-exp.
    fn scaled_neg_softmax[](row: &mut [f32], lse: f32, scale: f32) => scaled_neg_softmax_body
}

/// Elements per rayon task of the element-wise maps: large enough to amortise the task.
#[cfg(feature = "flex")]
const MAP_CHUNK: usize = 1 << 15;

/// A flex tensor's elements as contiguous f32 (copied only when it is a strided view), or
/// `None` for another float type. The kernels read it with `as_slice`, which is then `Some`.
#[cfg(feature = "flex")]
pub(crate) fn contiguous_f32(
    t: &burn::backend::flex::FlexTensor,
) -> Option<burn::backend::flex::FlexTensor> {
    (t.dtype() == burn::tensor::DType::F32).then(|| t.to_contiguous())
}

/// `f` applied to every element of a flex tensor, on all cores; `None` unless it is f32.
#[cfg(feature = "flex")]
pub fn map_f32<F: Fn(f32) -> f32 + Sync>(
    x: &burn::backend::flex::FlexTensor,
    f: F,
) -> Option<burn::backend::flex::FlexTensor> {
    use rayon::prelude::*;
    let x = contiguous_f32(x)?;
    let src = x.as_slice::<f32>()?;
    let mut out = vec![0.0f32; src.len()];
    out.par_chunks_mut(MAP_CHUNK)
        .zip(src.par_chunks(MAP_CHUNK))
        .for_each(|(d, s)| map_slice(s, d, &f));
    let shape = x.layout().shape().clone();
    Some(burn::backend::flex::FlexTensor::from_data(
        burn::tensor::TensorData::new(out, shape),
    ))
}

/// `f` applied element-wise to two flex tensors of one shape, on all cores; `None` unless both
/// are f32.
#[cfg(feature = "flex")]
pub fn zip_map_f32<F: Fn(f32, f32) -> f32 + Sync>(
    a: &burn::backend::flex::FlexTensor,
    b: &burn::backend::flex::FlexTensor,
    f: F,
) -> Option<burn::backend::flex::FlexTensor> {
    use rayon::prelude::*;
    let (a, b) = (contiguous_f32(a)?, contiguous_f32(b)?);
    let (sa, sb) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
    if sa.len() != sb.len() {
        return None;
    }
    let mut out = vec![0.0f32; sa.len()];
    out.par_chunks_mut(MAP_CHUNK)
        .zip(sa.par_chunks(MAP_CHUNK).zip(sb.par_chunks(MAP_CHUNK)))
        .for_each(|(d, (x, y))| zip_map_slice(x, y, d, &f));
    let shape = a.layout().shape().clone();
    Some(burn::backend::flex::FlexTensor::from_data(
        burn::tensor::TensorData::new(out, shape),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_float_precision() {
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }

    #[test]
    fn log_sum_exp_matches_the_plain_formula() {
        let row: Vec<f32> = (0..1003)
            .map(|i| ((i * 37) % 101) as f32 * 0.3 - 15.0)
            .collect();
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let want = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        assert!((log_sum_exp(&row) as f64 - want).abs() < 1e-5);
        let mut probs = row.clone();
        scaled_neg_softmax(&mut probs, want as f32, 2.0);
        let total: f64 = probs.iter().map(|&p| p as f64).sum();
        assert!((total + 2.0).abs() < 1e-5, "softmax sums to {total}");
    }
}
