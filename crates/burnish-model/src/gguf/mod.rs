//! GGUF files, the format llama.cpp and Ollama ship models in: read one as a [`CausalLm`] with
//! its tokenizer, and write a trained model back as one.
//!
//! A GGUF file is a header, typed metadata (architecture hyper-parameters, the tokenizer, the
//! chat template) and tensors, each stored in ggml dimension order (fastest-varying first) and
//! possibly quantized. Loading dequantizes every tensor to f32 and maps llama.cpp's names and
//! layouts onto transformers' (see `names.rs`), so the rest of burnish sees exactly what a
//! Hugging Face folder of the same model would give. The container is parsed here rather than
//! with `ggus` so that every malformed file is one error naming the file and what is wrong, and
//! because the block formats come with it (`quant.rs`; `ggml-quants` 0.1 leaves the K-quants
//! unimplemented).
//!
//! [`CausalLm`]: crate::CausalLm

mod names;
pub(crate) mod quant;
mod tokenizer;
mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::safetensors_io::HostTensor;

pub(crate) use names::{GgufSource, config_from_gguf};
pub use quant::GgmlType;
pub use tokenizer::GgufTokenizer;
pub use write::{
    GgufDtype, tokenizer_metadata_for, tokenizer_metadata_from_files, tokenizer_metadata_from_gguf,
    tokenizer_metadata_from_hf,
};

/// The 4 bytes every GGUF file starts with.
const MAGIC: &[u8; 4] = b"GGUF";
/// The only GGUF version burnish reads and writes (llama.cpp's since 2023).
const VERSION: u32 = 3;
/// Tensor data alignment when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: usize = 32;

/// A metadata value, with the width it is stored in (llama.cpp checks the types of the keys it
/// reads, so a copied value must keep its own).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f32`.
    F32(f32),
    /// `f64`.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array: the GGUF type id of its elements, and the elements.
    Array(u32, Vec<MetaValue>),
}

impl MetaValue {
    /// The value as a non-negative integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if the value is an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(_, items) => Some(items),
            _ => None,
        }
    }

    /// The GGUF type id this value is stored with.
    pub fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::Str(_) => 8,
            MetaValue::Array(..) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }
}

/// One tensor's entry in the file's tensor table.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// llama.cpp's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order (fastest-varying first): a `[out, in]` matrix is `[in, out]`.
    pub dims: Vec<usize>,
    /// Storage type.
    pub ty: GgmlType,
    /// Byte offset of the data from the start of the data section.
    pub offset: usize,
    /// Number of elements.
    pub count: usize,
}

impl TensorInfo {
    /// The shape in row-major (PyTorch) order: the ggml dimensions reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A GGUF file read into memory: its metadata and tensor table, tensors dequantized on demand.
pub struct GgufFile {
    path: PathBuf,
    bytes: Vec<u8>,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_start: usize,
}

/// Whether `path` names a GGUF file (by its `.gguf` extension, or by its first four bytes).
pub fn is_gguf(path: &Path) -> bool {
    if !path.is_file() {
        return false;
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return true;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == MAGIC
}

impl GgufFile {
    /// Reads and validates a GGUF file: magic, version 3, metadata, and a tensor table whose
    /// types burnish can dequantize and whose data lies within the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|cause| ModelError::Io {
            path: path.clone(),
            cause,
        })?;
        Self::parse(path, bytes)
    }

    /// Parses a GGUF file already in memory; `path` only names it in errors.
    pub fn parse(path: PathBuf, bytes: Vec<u8>) -> Result<Self> {
        let mut cursor = Cursor {
            bytes: &bytes,
            pos: 0,
        };
        let fail = |reason: String| ModelError::Gguf {
            path: path.clone(),
            reason,
        };
        let magic = cursor.take(4, "the magic number").map_err(&fail)?;
        if magic != MAGIC {
            return Err(fail(format!(
                "not a GGUF file (it starts with {magic:02x?}, a GGUF file with the bytes \"GGUF\")"
            )));
        }
        let version = cursor.u32("the version").map_err(&fail)?;
        if version != VERSION {
            return Err(fail(format!(
                "GGUF version {version}; burnish reads version {VERSION} (convert older files with llama.cpp's current tools)"
            )));
        }
        let tensor_count = cursor.u64("the tensor count").map_err(&fail)?;
        let kv_count = cursor.u64("the metadata count").map_err(&fail)?;
        let mut metadata = Vec::new();
        let mut meta_index = HashMap::new();
        for i in 0..kv_count {
            let key = cursor.string(&format!("metadata key {i}")).map_err(&fail)?;
            let ty = cursor.u32(&format!("the type of `{key}`")).map_err(&fail)?;
            let value = cursor.value(ty, &key, 0).map_err(&fail)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(fail(format!("metadata key `{key}` appears twice")));
            }
            metadata.push((key, value));
        }
        let alignment = match metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .map(|(_, v)| v)
        {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => {
                    return Err(fail(format!(
                        "general.alignment {v:?} is not a power of two"
                    )));
                }
            },
        };
        let mut tensors = Vec::new();
        let mut tensor_index = HashMap::new();
        for i in 0..tensor_count {
            let name = cursor
                .string(&format!("the name of tensor {i}"))
                .map_err(&fail)?;
            let what = |field: &str| format!("the {field} of tensor `{name}`");
            let n_dims = cursor.u32(&what("rank")).map_err(&fail)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(fail(format!(
                    "tensor `{name}` has {n_dims} dimensions (ggml allows 1 to 4)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = cursor.u64(&what("dimensions")).map_err(&fail)?;
                dims.push(usize::try_from(d).map_err(|_| {
                    fail(format!("tensor `{name}` has a dimension of {d} elements"))
                })?);
            }
            let ty = GgmlType::from_id(cursor.u32(&what("type")).map_err(&fail)?);
            let offset = cursor.u64(&what("offset")).map_err(&fail)?;
            let count = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| fail(format!("tensor `{name}` is too large: {dims:?}")))?;
            let offset = usize::try_from(offset)
                .map_err(|_| fail(format!("tensor `{name}` has offset {offset}")))?;
            if offset % alignment != 0 {
                return Err(fail(format!(
                    "tensor `{name}` starts at offset {offset}, not a multiple of the alignment {alignment}"
                )));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(fail(format!("tensor `{name}` appears twice")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                count,
            });
        }
        let data_start = cursor.pos.div_ceil(alignment) * alignment;
        let file = GgufFile {
            path: path.clone(),
            bytes,
            metadata,
            meta_index,
            tensors,
            tensor_index,
            data_start,
        };
        for info in &file.tensors {
            file.tensor_bytes(info)?;
        }
        Ok(file)
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value by key.
    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Every metadata entry, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// A tensor's table entry by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.meta("general.architecture")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| self.error("no string `general.architecture` in the metadata"))
    }

    /// An error about this file.
    pub(crate) fn error(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Gguf {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8]> {
        let len = info.ty.byte_len(info.count).map_err(|reason| {
            self.error(format!(
                "tensor `{}` ({:?} elements): {reason}",
                info.name, info.dims
            ))
        })?;
        let start = self.data_start.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.bytes.len() => Ok(&self.bytes[start..end]),
            _ => Err(self.error(format!(
                "truncated: tensor `{}` needs {len} bytes at offset {} of the data section, but the file ends {} bytes into it",
                info.name,
                info.offset,
                self.bytes.len().saturating_sub(self.data_start)
            ))),
        }
    }

    /// A tensor dequantized to f32, shaped row-major (PyTorch order).
    pub fn read_f32(&self, name: &str) -> Result<HostTensor> {
        let info = self
            .tensor(name)
            .ok_or_else(|| self.error(format!("missing tensor `{name}`")))?;
        let bytes = self.tensor_bytes(info)?;
        let values = quant::dequantize(info.ty, bytes, info.count)
            .map_err(|reason| self.error(format!("tensor `{name}`: {reason}")))?;
        Ok(HostTensor {
            shape: info.shape(),
            values,
        })
    }
}

/// A bounds-checked reader over the file's bytes; every error names what it was reading.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// Nesting limit for metadata arrays (llama.cpp writes arrays of scalars or strings only).
const MAX_DEPTH: usize = 2;

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let out = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            None => Err(format!(
                "truncated: reading {what} at byte {} needs {n} bytes, but the file has {}",
                self.pos,
                self.bytes.len()
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let len = self.u64(what)?;
        let len = usize::try_from(len).map_err(|_| format!("{what}: length {len}"))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn value(
        &mut self,
        ty: u32,
        key: &str,
        depth: usize,
    ) -> std::result::Result<MetaValue, String> {
        let what = format!("the value of `{key}`");
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(&what)?[0]),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(&what)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => MetaValue::U32(self.u32(&what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(format!("`{key}` holds the boolean byte {b}")),
            },
            8 => MetaValue::Str(self.string(&what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("`{key}` nests arrays more than {MAX_DEPTH} deep"));
                }
                let item_ty = self.u32(&what)?;
                let len = self.u64(&what)?;
                // Every element takes at least one byte: a length beyond the bytes left is a
                // corrupt file, refused before any allocation.
                let left = (self.bytes.len() - self.pos) as u64;
                if len > left {
                    return Err(format!(
                        "truncated: `{key}` claims {len} elements but {left} bytes are left"
                    ));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                MetaValue::Array(item_ty, items)
            }
            10 => MetaValue::U64(self.u64(&what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            other => return Err(format!("`{key}` has the unknown metadata type {other}")),
        })
    }
}
