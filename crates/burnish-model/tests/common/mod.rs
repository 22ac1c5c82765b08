//! Shared test support: the backend under test and the fixtures.
//!
//! The same tests run on flex (default) and on wgpu (`--features wgpu`, Mesa's software Vulkan
//! in CI), so they are written once against the `TestBackend` alias.

#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Int, Tensor, TensorData};
use safetensors::SafeTensors;

#[cfg(not(feature = "wgpu"))]
pub type TestBackend = burn::backend::Flex;
#[cfg(feature = "wgpu")]
pub type TestBackend = burn::backend::Wgpu;

pub type Device = <TestBackend as burn::tensor::backend::BackendTypes>::Device;

pub fn device() -> Device {
    #[cfg(feature = "wgpu")]
    {
        burn::backend::wgpu::WgpuDevice::Cpu
    }
    #[cfg(not(feature = "wgpu"))]
    {
        Default::default()
    }
}

/// The largest difference two runs of the same weights may show in their logits on this
/// backend: none on flex, whose kernels are fixed; float noise on wgpu, whose autotune may run
/// the first call of a shape on another kernel than the later ones.
pub const SAME_WEIGHTS_LOGIT_TOLERANCE: f32 = if cfg!(feature = "wgpu") { 1e-5 } else { 0.0 };

/// Every float parameter of a model, in visiting order, as host values.
pub fn parameters<M: burn::module::Module<TestBackend>>(model: &M) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor<TestBackend> for Collect {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<Tensor<TestBackend, D>>,
        ) {
            self.0
                .push(param.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

pub const FAMILIES: [&str; 7] = [
    "gpt2",
    "llama",
    "llama-sharded",
    "qwen2",
    "llama3-rope",
    "mistral",
    "qwen3",
];

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

/// What transformers computed for a fixture's [3, 16] batch.
pub struct Expected {
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub logits: Vec<f32>,
    pub batch: usize,
    pub seq: usize,
    pub vocab: usize,
}

pub fn expected(name: &str) -> Expected {
    expected_at(&fixture(name).join("expected.safetensors"))
}

/// What transformers computed, from an `expected.safetensors` file; a missing attention mask
/// means no padding.
pub fn expected_at(path: &std::path::Path) -> Expected {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ints = |n: &str| -> Vec<i64> {
        st.tensor(n)
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let logits = st.tensor("logits").unwrap();
    let shape = logits.shape().to_vec();
    let input_ids = ints("input_ids");
    let attention_mask = if st.names().contains(&"attention_mask") {
        ints("attention_mask")
    } else {
        vec![1; input_ids.len()]
    };
    Expected {
        input_ids,
        attention_mask,
        logits: logits
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        batch: shape[0],
        seq: shape[1],
        vocab: shape[2],
    }
}

pub fn ints(values: Vec<i64>, shape: [usize; 2]) -> Tensor<TestBackend, 2, Int> {
    Tensor::from_data(TensorData::new(values, shape), &device())
}

pub fn to_vec<const D: usize>(t: Tensor<TestBackend, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
