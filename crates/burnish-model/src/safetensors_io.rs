//! Reading and writing Hugging Face safetensors checkpoints, single-file or sharded.
//!
//! Tensors are converted to f32 on the host as they are read (f32, f16 and bf16 files load);
//! the name -> file map of a sharded checkpoint comes from `model.safetensors.index.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

/// A host-side f32 tensor: its shape and its values in row-major order.
#[derive(Debug, Clone)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// The transpose of a matrix, laid out row-major, so that a parameter made from it is
    /// contiguous: a strided view would make the model a loaded record gives back take other
    /// kernel paths and round differently.
    pub(crate) fn transposed(&self) -> HostTensor {
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let mut values = Vec::with_capacity(self.values.len());
        for c in 0..cols {
            values.extend((0..rows).map(|r| self.values[r * cols + c]));
        }
        HostTensor {
            shape: vec![cols, rows],
            values,
        }
    }

    /// Columns `start..start + width` of a matrix, copied row-major.
    pub(crate) fn columns(&self, start: usize, width: usize) -> HostTensor {
        let cols = self.shape[1];
        let values = self
            .values
            .chunks(cols)
            .flat_map(|row| row[start..start + width].iter().copied())
            .collect();
        HostTensor {
            shape: vec![self.shape[0], width],
            values,
        }
    }

    /// Elements `start..start + width` of a vector.
    pub(crate) fn range(&self, start: usize, width: usize) -> HostTensor {
        HostTensor {
            shape: vec![width],
            values: self.values[start..start + width].to_vec(),
        }
    }
}

/// The safetensors files of one model folder, read into memory, with a name index.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
    index: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            let text = read_to_string(&index_path)?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|cause| ModelError::Json {
                    path: index_path.clone(),
                    cause,
                })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Safetensors {
                    path: index_path.clone(),
                    reason: "no `weight_map` object".into(),
                })?;
            let mut shards: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else {
            return Err(ModelError::Io {
                path: single,
                cause: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors nor model.safetensors.index.json in the model folder",
                ),
            });
        };
        Self::open_files(dir, names)
    }

    /// Opens one safetensors file (e.g. a PEFT `adapter_model.safetensors`).
    pub fn open_file(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::open_files(&dir, vec![path.to_path_buf()])
    }

    fn open_files(dir: &Path, names: Vec<PathBuf>) -> Result<Self> {
        let mut files = Vec::with_capacity(names.len());
        let mut index = HashMap::new();
        for path in names {
            let bytes = std::fs::read(&path).map_err(|cause| ModelError::Io {
                path: path.clone(),
                cause,
            })?;
            let parsed = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            for name in parsed.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((path, bytes));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            index,
        })
    }

    /// Whether the checkpoint holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Reads one tensor as f32 and checks its shape against `expected`.
    pub fn read(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let &file = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
            })?;
        let (path, bytes) = &self.files[file];
        let parsed = SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let view = parsed.tensor(name).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if view.shape() != expected {
            return Err(ModelError::Shape {
                file: path.clone(),
                name: name.to_string(),
                found: view.shape().to_vec(),
                expected: expected.to_vec(),
            });
        }
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::Safetensors {
                    path: path.clone(),
                    reason: format!(
                        "tensor `{name}` has dtype {other:?}; burnish reads F32, F16 and BF16"
                    ),
                });
            }
        };
        Ok(HostTensor {
            shape: expected.to_vec(),
            values,
        })
    }
}

/// Writes named f32 tensors to one safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[(String, HostTensor)]) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let raw = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), raw, t.shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, raw, shape)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), raw)
                .map(|view| (name.clone(), view))
                .map_err(|e| ModelError::Safetensors {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    safetensors::tensor::serialize_to_file(views, Some(metadata), path).map_err(|e| {
        ModelError::Safetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    // The crate writes a private temporary file and renames it, leaving mode 0600: a model
    // folder is for sharing (a serving user, a container), so it gets the usual 0644.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(
            |cause| ModelError::Io {
                path: path.to_path_buf(),
                cause,
            },
        )?;
    }
    Ok(())
}

fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|cause| ModelError::Io {
        path: path.to_path_buf(),
        cause,
    })
}
