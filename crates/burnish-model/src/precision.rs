//! The precision a model computes its matrix products in: the run setting `[train] precision`.
//!
//! `Bf16` is mixed precision as PyTorch's autocast and TRL's default: the inputs of every matrix
//! product of the linear layers and the output head (forward, and both products of their
//! backward) are rounded to bfloat16 and multiplied with f32 accumulation; weights, gradients,
//! optimizer state, norms, softmax, log-sum-exp and losses stay f32. `Fp32` is the exact mode
//! the parity and equivalence tests use.

use serde::{Deserialize, Serialize};

/// How the matrix products of the linear layers and the output head are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    Fp32,
    /// bf16 inputs, f32 accumulation and output; the rest in f32.
    Bf16,
}

impl Precision {
    /// The name used in configs and logs (`"fp32"`, `"bf16"`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }

    /// What a run on the CPU uses when the config does not say: bf16 where the CPU multiplies
    /// bf16 natively (AMX or AVX512-BF16), as TRL's default `bf16=True` does there; fp32
    /// elsewhere, where bf16 would only add rounding.
    pub fn cpu_default() -> Self {
        if cpu_bf16_kernel().is_some() {
            Precision::Bf16
        } else {
            Precision::Fp32
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!(
                "unknown precision `{other}` (expected fp32 or bf16)"
            )),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The native bf16 matrix unit of this CPU, by name (`"AMX"`, `"AVX512-BF16"`), or `None`.
pub fn cpu_bf16_kernel() -> Option<&'static str> {
    #[cfg(feature = "flex")]
    {
        use crate::ops::bf16_matmul::Bf16Kernel;
        match Bf16Kernel::best() {
            Bf16Kernel::Amx => Some("AMX"),
            Bf16Kernel::Avx512Bf16 => Some("AVX512-BF16"),
            Bf16Kernel::Portable => None,
        }
    }
    #[cfg(not(feature = "flex"))]
    None
}
