//! Shared test helpers: the backend under test (flex by default, wgpu with the `wgpu` feature),
//! tensors in the widest float type it supports, the golden file, and tolerance checks.
#![allow(dead_code)]

use std::cell::Cell;

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

/// The autodiff backend the tests run on.
#[cfg(not(feature = "wgpu"))]
pub type B = burn::backend::Autodiff<burn::backend::Flex>;
/// The autodiff backend the tests run on.
#[cfg(feature = "wgpu")]
pub type B = burn::backend::Autodiff<burn::backend::Wgpu>;

/// The device the tests run on.
pub fn device() -> burn::tensor::Device<B> {
    Default::default()
}

thread_local! {
    /// A per-test override of the float type (tests run on their own threads).
    static FORCED_DTYPE: Cell<Option<DType>> = const { Cell::new(None) };
}

/// Makes this test thread build its tensors in `dtype` (e.g. f32, what training uses).
pub fn force_dtype(dtype: DType) {
    FORCED_DTYPE.with(|forced| forced.set(Some(dtype)));
}

/// The float type of the test tensors: f64 where the backend has it (flex does), else f32,
/// unless [`force_dtype`] chose one.
pub fn dtype() -> DType {
    FORCED_DTYPE.with(Cell::get).unwrap_or_else(|| {
        if B::supports_dtype(&device(), DType::F64) {
            DType::F64
        } else {
            DType::F32
        }
    })
}

/// Relative tolerance of the golden comparisons.
pub const RELATIVE: f64 = 1e-5;

/// Absolute floor under the relative tolerance, for values at or near 0 (e.g. hinge gradients,
/// a SimPO gradient of 1e-28): 1e-12 in f64; f32 rounding of inputs near 30 is already ~1e-6.
pub fn absolute_floor() -> f64 {
    if dtype() == DType::F64 { 1e-12 } else { 1e-6 }
}

/// A `[n]` tensor in the test dtype.
pub fn t1(values: &[f64]) -> Tensor<B, 1> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len()]),
        (&device(), dtype()),
    )
}

/// A `[rows, cols]` tensor in the test dtype.
pub fn t2(values: &[f64], rows: usize, cols: usize) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [rows, cols]),
        (&device(), dtype()),
    )
}

/// A tensor of the autodiff backend read back as f64.
pub fn values_ad<const D: usize>(tensor: &Tensor<B, D>) -> Vec<f64> {
    tensor.clone().into_data().iter::<f64>().collect()
}

/// The gradient of `loss` with respect to each of `inputs` (all must require grad), as f64; an
/// input the loss does not depend on has no gradient in burn, read here as zeros.
pub fn gradients<const D: usize>(loss: &Tensor<B, 1>, inputs: &[&Tensor<B, D>]) -> Vec<Vec<f64>> {
    let grads = loss.backward();
    inputs
        .iter()
        .map(|t| {
            t.grad(&grads)
                .map(|g| g.into_data().iter::<f64>().collect())
                .unwrap_or_else(|| vec![0.0; t.shape().num_elements()])
        })
        .collect()
}

/// The golden file copied from the shared fixtures.
pub fn golden() -> serde_json::Value {
    let text = include_str!("../fixtures/golden.json");
    serde_json::from_str(text).expect("golden.json parses")
}

/// A JSON array of numbers as f64.
pub fn floats(value: &serde_json::Value) -> Vec<f64> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

/// Compares `actual` with `expected` within [`RELATIVE`] (floored); returns the max abs error.
/// Panics with the first value out of tolerance.
pub fn assert_close(what: &str, actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let mut max_abs = 0.0f64;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (a - e).abs();
        let tol = RELATIVE * e.abs().max(absolute_floor() / RELATIVE);
        assert!(
            a.is_finite() && err <= tol,
            "{what}[{i}]: got {a:e}, expected {e:e} (abs error {err:e} > tolerance {tol:e})"
        );
        max_abs = max_abs.max(err);
    }
    max_abs
}

/// Whether every value is finite.
pub fn all_finite(values: &[f64]) -> bool {
    values.iter().all(|v| v.is_finite())
}
