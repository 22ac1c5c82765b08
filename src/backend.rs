//! Picking the backend at run time: `--device cpu|wgpu|cuda` on the command line, or the cargo
//! feature an example was built with.
//!
//! Model code is generic over `B: ModelBackend` (burn's `Backend` plus burnish's fused ops); a job says what to run for any backend and
//! [`dispatch`] monomorphises it for the one asked for. A backend that was not compiled in is a
//! clear error naming the cargo feature to enable.

use std::fmt;
use std::str::FromStr;

use burnish_model::{ModelAutodiffBackend, ModelBackend, Precision};

/// Where tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The CPU, through burn's flex backend.
    #[default]
    Cpu,
    /// Any GPU (Vulkan, Metal, DX12) through wgpu; also a CPU through Mesa's lavapipe.
    Wgpu,
    /// An NVIDIA GPU through CUDA.
    Cuda,
}

impl DeviceKind {
    /// The precision a run on this device uses when the user does not choose: bf16 on a CPU
    /// that multiplies bf16 natively (as TRL's default `bf16=True`), fp32 elsewhere (the GPU
    /// backends' bf16 path has not been measured on a GPU yet).
    pub fn default_precision(self) -> Precision {
        match self {
            DeviceKind::Cpu => Precision::cpu_default(),
            DeviceKind::Wgpu | DeviceKind::Cuda => Precision::Fp32,
        }
    }

    /// One line saying which precision a run uses and why, for the run's first lines.
    pub fn describe_precision(self, precision: Precision, chosen: bool) -> String {
        let why = if chosen {
            "as configured".to_string()
        } else {
            match (self, burnish_model::precision::cpu_bf16_kernel()) {
                (DeviceKind::Cpu, Some(unit)) => format!("default: this CPU has {unit}"),
                (DeviceKind::Cpu, None) => "default: this CPU has no native bf16".to_string(),
                _ => "default on GPUs for now".to_string(),
            }
        };
        format!("precision: {precision} ({why})")
    }
}

impl FromStr for DeviceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown device {other:?} (expected cpu, wgpu or cuda)"
            )),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

impl DeviceKind {
    /// The device the cargo features of this build prefer: cuda, then wgpu, then cpu.
    pub fn from_features() -> Self {
        if cfg!(feature = "cuda") {
            Self::Cuda
        } else if cfg!(feature = "wgpu") {
            Self::Wgpu
        } else {
            Self::Cpu
        }
    }
}

/// Work that runs on any backend (inference: no gradients).
pub trait Job {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `B`.
    fn run<B: ModelBackend>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

/// Work that needs gradients: it runs on `Autodiff<B>` of the chosen backend.
pub trait TrainJob {
    /// What the job returns.
    type Output;
    /// Runs the job on autodiff backend `B`.
    fn run<B: ModelAutodiffBackend>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

fn not_built(kind: DeviceKind) -> anyhow::Error {
    let feature = match kind {
        DeviceKind::Cpu => "flex",
        DeviceKind::Wgpu => "wgpu",
        DeviceKind::Cuda => "cuda",
    };
    anyhow::anyhow!(
        "this build of burnish has no {kind} backend; rebuild with `--features {feature}`"
    )
}

/// Runs an inference job on the backend `kind` names.
pub fn dispatch<J: Job>(kind: DeviceKind, job: J) -> anyhow::Result<J::Output> {
    match kind {
        #[cfg(feature = "flex")]
        DeviceKind::Cpu => job.run::<burn::backend::Flex>(Default::default()),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => job.run::<burn::backend::Wgpu>(Default::default()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => job.run::<burn::backend::Cuda>(Default::default()),
        #[allow(unreachable_patterns)]
        other => Err(not_built(other)),
    }
}

/// Runs a training job on `Autodiff` of the backend `kind` names.
pub fn dispatch_train<J: TrainJob>(kind: DeviceKind, job: J) -> anyhow::Result<J::Output> {
    use burn::backend::Autodiff;
    match kind {
        #[cfg(feature = "flex")]
        DeviceKind::Cpu => job.run::<Autodiff<burn::backend::Flex>>(Default::default()),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => job.run::<Autodiff<burn::backend::Wgpu>>(Default::default()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => job.run::<Autodiff<burn::backend::Cuda>>(Default::default()),
        #[allow(unreachable_patterns)]
        other => Err(not_built(other)),
    }
}
