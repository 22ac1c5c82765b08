//! GGML tensor types: dequantization of GGUF tensor data to f32, and the f16/f32 encoders that
//! GGUF export needs.
//!
//! Written here, in plain Rust, because the crate that offers it (`ggml-quants` 0.1.0) leaves
//! Q4_K, Q5_K and Q6_K dequantization as `todo!()`, and because the alternatives bind ggml's C.
//! Block layouts and arithmetic follow ggml-common.h / ggml-quants.c, with each product taken in
//! the order ggml (and gguf-py) takes it, so results match gguf-py's `dequantize` bit for bit;
//! the tests check that against vectors gguf-py made (`tests/fixtures/gguf_quants/`).

use half::{bf16, f16};

/// Elements in a K-quant super-block (ggml's `QK_K`).
const QK_K: usize = 256;

/// A ggml tensor type, by its GGUF id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, 32 per block, one f16 scale.
    Q4_0,
    /// 4-bit, 32 per block, f16 scale and minimum.
    Q4_1,
    /// 5-bit, 32 per block, one f16 scale.
    Q5_0,
    /// 5-bit, 32 per block, f16 scale and minimum.
    Q5_1,
    /// 8-bit, 32 per block, one f16 scale.
    Q8_0,
    /// 8-bit, 32 per block, f16 scale and sum: llama.cpp's activation type, never dequantized.
    Q8_1,
    /// 2-bit K-quant, 256 per super-block.
    Q2K,
    /// 3-bit K-quant, 256 per super-block.
    Q3K,
    /// 4-bit K-quant, 256 per super-block.
    Q4K,
    /// 5-bit K-quant, 256 per super-block.
    Q5K,
    /// 6-bit K-quant, 256 per super-block.
    Q6K,
    /// 8-bit K-quant with an f32 scale, 256 per super-block (llama.cpp's dot-product type).
    Q8K,
    /// bfloat16.
    BF16,
    /// Any other id (IQ*, integer, F64, ...): named, but not dequantized.
    Other(u32),
}

/// ggml's names for the ids that have no variant of their own, as gguf-py 0.19 lists them.
fn other_name(id: u32) -> Option<&'static str> {
    Some(match id {
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        40 => "NVFP4",
        41 => "Q1_0",
        _ => return None,
    })
}

/// The types `dequantize` reads, in the order error messages list them.
const SUPPORTED: [GgmlType; 14] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
];

impl GgmlType {
    /// The type with GGUF id `id`; ids without a variant become `Other(id)`.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            30 => Self::BF16,
            other => Self::Other(other),
        }
    }

    /// The GGUF id of this type.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
            Self::BF16 => 30,
            Self::Other(id) => id,
        }
    }

    /// llama.cpp's name for the type ("Q4_K", "F16", "IQ2_XXS"), or "type N" for an unknown id.
    pub fn name(self) -> String {
        let known = match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q8_1 => "Q8_1",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::Q8K => "Q8_K",
            Self::BF16 => "BF16",
            Self::Other(id) => match other_name(id) {
                Some(name) => name,
                None => return format!("type {id}"),
            },
        };
        known.to_string()
    }

    /// (elements per block, bytes per block), None for types we cannot dequantize.
    pub fn block(self) -> Option<(usize, usize)> {
        Some(match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 2 + 16),
            Self::Q4_1 => (32, 2 + 2 + 16),
            Self::Q5_0 => (32, 2 + 4 + 16),
            Self::Q5_1 => (32, 2 + 2 + 4 + 16),
            Self::Q8_0 => (32, 2 + 32),
            Self::Q2K => (QK_K, QK_K / 16 + QK_K / 4 + 2 + 2),
            Self::Q3K => (QK_K, QK_K / 8 + QK_K / 4 + 12 + 2),
            Self::Q4K => (QK_K, 2 + 2 + 12 + QK_K / 2),
            Self::Q5K => (QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2),
            Self::Q6K => (QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2),
            Self::Q8K => (QK_K, 4 + QK_K + 2 * QK_K / 16),
            // Q8_1 is never stored as a weight and ggml has no dequantizer for it (gguf-py even
            // disagrees with ggml on its block size), so it is refused like the IQ types.
            Self::Q8_1 | Self::Other(_) => return None,
        })
    }

    /// Bytes that `count` elements occupy; an error for a partial block or an unsupported type.
    pub fn byte_len(self, count: usize) -> Result<usize, String> {
        let (elems, bytes) = self.block().ok_or_else(|| self.unsupported())?;
        if !count.is_multiple_of(elems) {
            return Err(format!(
                "{} stores {elems} elements per block, and {count} elements is not a multiple of {elems}",
                self.name()
            ));
        }
        (count / elems).checked_mul(bytes).ok_or_else(|| {
            format!(
                "{count} elements of {} overflow the address space",
                self.name()
            )
        })
    }

    /// The error for a type `block` refuses, listing what is supported.
    fn unsupported(self) -> String {
        let supported: Vec<String> = SUPPORTED.iter().map(|t| t.name()).collect();
        let what = match (self, other_name(self.id())) {
            (Self::Other(id), None) => format!("tensor type id {id} (unknown to ggml)"),
            _ => format!("tensor type {} (id {})", self.name(), self.id()),
        };
        format!(
            "{what} is not supported; supported: {}",
            supported.join(", ")
        )
    }
}

/// Dequantizes `count` elements stored as `ty` in `bytes` (exactly byte_len(count) bytes) to f32.
pub fn dequantize(ty: GgmlType, bytes: &[u8], count: usize) -> Result<Vec<f32>, String> {
    let expected = ty.byte_len(count)?;
    if bytes.len() != expected {
        return Err(format!(
            "{count} elements of {} take {expected} bytes, but the tensor data has {}",
            ty.name(),
            bytes.len()
        ));
    }
    let Some((elems, size)) = ty.block() else {
        return Err(ty.unsupported());
    };
    let mut out = vec![0.0f32; count];
    match ty {
        GgmlType::F32 => for_blocks(bytes, &mut out, size, elems, |b, y| {
            y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }),
        GgmlType::F16 => for_blocks(bytes, &mut out, size, elems, |b, y| y[0] = read_f16(b, 0)),
        GgmlType::BF16 => for_blocks(bytes, &mut out, size, elems, |b, y| {
            y[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
        }),
        GgmlType::Q4_0 => for_blocks(bytes, &mut out, size, elems, q4_0),
        GgmlType::Q4_1 => for_blocks(bytes, &mut out, size, elems, q4_1),
        GgmlType::Q5_0 => for_blocks(bytes, &mut out, size, elems, q5_0),
        GgmlType::Q5_1 => for_blocks(bytes, &mut out, size, elems, q5_1),
        GgmlType::Q8_0 => for_blocks(bytes, &mut out, size, elems, q8_0),
        GgmlType::Q2K => for_blocks(bytes, &mut out, size, elems, q2_k),
        GgmlType::Q3K => for_blocks(bytes, &mut out, size, elems, q3_k),
        GgmlType::Q4K => for_blocks(bytes, &mut out, size, elems, q4_k),
        GgmlType::Q5K => for_blocks(bytes, &mut out, size, elems, q5_k),
        GgmlType::Q6K => for_blocks(bytes, &mut out, size, elems, q6_k),
        GgmlType::Q8K => for_blocks(bytes, &mut out, size, elems, q8_k),
        // `block` has already refused these.
        GgmlType::Q8_1 | GgmlType::Other(_) => return Err(ty.unsupported()),
    }
    Ok(out)
}

/// Encodes f32 values as F16 little-endian bytes (for GGUF export), rounding to nearest even.
pub fn encode_f16(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

/// Encodes f32 values as F32 little-endian bytes (for GGUF export).
pub fn encode_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Elements per rayon task: large enough to amortise the task, small enough to spread a tensor.
#[cfg(feature = "flex")]
const TASK_ELEMS: usize = 1 << 16;

/// Calls `f(block bytes, block output)` for every block. The caller has checked that `bytes`
/// holds exactly `out.len() / block_elems` blocks, so every slice `f` sees has its full length.
fn for_blocks<F>(bytes: &[u8], out: &mut [f32], block_bytes: usize, block_elems: usize, f: F)
where
    F: Fn(&[u8], &mut [f32]) + Sync,
{
    let run = |b: &[u8], y: &mut [f32]| {
        for (b, y) in b
            .chunks_exact(block_bytes)
            .zip(y.chunks_exact_mut(block_elems))
        {
            f(b, y);
        }
    };
    #[cfg(feature = "flex")]
    {
        use rayon::prelude::*;
        let blocks_per_task = (TASK_ELEMS / block_elems).max(1);
        bytes
            .par_chunks(blocks_per_task * block_bytes)
            .zip(out.par_chunks_mut(blocks_per_task * block_elems))
            .for_each(|(b, y)| run(b, y));
    }
    #[cfg(not(feature = "flex"))]
    run(bytes, out);
}

/// The little-endian f16 at `at`, widened (exactly) to f32.
fn read_f16(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// The 4-bit value of element `j` (0..32) of a 32-element block's 16 nibble bytes: elements
/// 0..16 are the low nibbles, 16..32 the high ones (not interleaved).
fn nibble32(qs: &[u8], j: usize) -> u8 {
    (qs[j % 16] >> (4 * (j / 16))) & 0x0F
}

/// Q4_0: `d * (q - 8)`.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    for (j, y) in y.iter_mut().enumerate() {
        *y = d * (nibble32(&b[2..18], j) as i32 - 8) as f32;
    }
}

/// Q4_1: `d * q + m`.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (read_f16(b, 0), read_f16(b, 2));
    for (j, y) in y.iter_mut().enumerate() {
        *y = d * nibble32(&b[4..20], j) as f32 + m;
    }
}

/// The fifth bits of a Q5 block: bit `j` of a little-endian u32 is element `j`'s.
fn high_bits(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Q5_0: `d * (q - 16)`.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    let qh = high_bits(b, 2);
    for (j, y) in y.iter_mut().enumerate() {
        let q = nibble32(&b[6..22], j) as u32 | (((qh >> j) & 1) << 4);
        *y = d * (q as i32 - 16) as f32;
    }
}

/// Q5_1: `d * q + m`.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (read_f16(b, 0), read_f16(b, 2));
    let qh = high_bits(b, 4);
    for (j, y) in y.iter_mut().enumerate() {
        let q = nibble32(&b[8..24], j) as u32 | (((qh >> j) & 1) << 4);
        *y = d * q as f32 + m;
    }
}

/// Q8_0: `d * q`, q a signed byte.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = read_f16(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = d * q as i8 as f32;
    }
}

/// The 2-bit value of element `j` (0..256) of a super-block's 64 quant bytes: each 128-element
/// half reads 32 bytes four times, at bit shifts 0, 2, 4 and 6.
fn crumb(qs: &[u8], j: usize) -> u8 {
    let (half, shift, l) = (j / 128, (j % 128) / 32, j % 32);
    (qs[half * 32 + l] >> (2 * shift)) & 3
}

/// Q2_K: `(d * scale) * q - (dmin * min)`, a 4-bit scale and min for each 16 elements.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (read_f16(b, 80), read_f16(b, 82));
    for (s, y) in y.chunks_exact_mut(16).enumerate() {
        let dl = d * (scales[s] & 0x0F) as f32;
        let ml = dmin * (scales[s] >> 4) as f32;
        for (l, y) in y.iter_mut().enumerate() {
            *y = dl * crumb(qs, s * 16 + l) as f32 - ml;
        }
    }
}

/// Q3_K: `(d * (scale - 32)) * (q - 4 * !hbit)`, a 6-bit scale for each 16 elements.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = read_f16(b, 108);
    for (s, y) in y.chunks_exact_mut(16).enumerate() {
        // The 16 six-bit scales: low four bits in the first 8 bytes (low nibbles first), high two
        // bits in the last 4 bytes (at shifts 0, 2, 4, 6 in turn).
        let low = (sc[s % 8] >> (4 * (s / 8))) & 0x0F;
        let high = (sc[8 + s % 4] >> (2 * (s / 4))) & 0x03;
        let dl = d * ((low | (high << 4)) as i32 - 32) as f32;
        for (l, y) in y.iter_mut().enumerate() {
            let j = s * 16 + l;
            // A set high bit means no offset; a clear one subtracts 4 (ggml's convention).
            let hbit = (hmask[j % 32] >> (j / 32)) & 1;
            let q = crumb(qs, j) as i32 - if hbit == 1 { 0 } else { 4 };
            *y = dl * q as f32;
        }
    }
}

/// The 6-bit scale and min of sub-block `s` (0..8) of Q4_K/Q5_K's 12 packed bytes (ggml's
/// `get_scale_min_k4`).
fn scale_min_k4(sc: &[u8], s: usize) -> (u8, u8) {
    if s < 4 {
        (sc[s] & 0x3F, sc[s + 4] & 0x3F)
    } else {
        (
            (sc[s + 4] & 0x0F) | ((sc[s - 4] >> 6) << 4),
            (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4),
        )
    }
}

/// Q4_K: `(d * scale) * q - (dmin * min)`, a 6-bit scale and min for each 32 elements.
fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (read_f16(b, 0), read_f16(b, 2));
    let (sc, qs) = (&b[4..16], &b[16..144]);
    for (s, y) in y.chunks_exact_mut(32).enumerate() {
        let (scale, min) = scale_min_k4(sc, s);
        let (d1, m1) = (d * scale as f32, dmin * min as f32);
        // Sub-blocks 2k and 2k+1 share 32 bytes: low nibbles, then high nibbles.
        let bytes = &qs[(s / 2) * 32..(s / 2) * 32 + 32];
        let shift = 4 * (s % 2);
        for (y, &q) in y.iter_mut().zip(bytes) {
            *y = d1 * ((q >> shift) & 0x0F) as f32 - m1;
        }
    }
}

/// Q5_K: Q4_K with a fifth bit per element, bit `s` of `qh[l]` for sub-block `s`.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (read_f16(b, 0), read_f16(b, 2));
    let (sc, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (s, y) in y.chunks_exact_mut(32).enumerate() {
        let (scale, min) = scale_min_k4(sc, s);
        let (d1, m1) = (d * scale as f32, dmin * min as f32);
        let bytes = &qs[(s / 2) * 32..(s / 2) * 32 + 32];
        let shift = 4 * (s % 2);
        for (l, (y, &q)) in y.iter_mut().zip(bytes).enumerate() {
            let q = ((q >> shift) & 0x0F) | (((qh[l] >> s) & 1) << 4);
            *y = d1 * q as f32 - m1;
        }
    }
}

/// Q6_K: `(d * scale) * (q - 32)`, a signed 8-bit scale for each 16 elements.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = read_f16(b, 208);
    for (j, y) in y.iter_mut().enumerate() {
        // Each 128-element half: low four bits from 64 bytes of ql (low nibbles for its first
        // 64 elements, high for the rest), high two bits from 32 bytes of qh at shifts 0..6.
        let (half, r) = (j / 128, j % 128);
        let low = (ql[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
        let high = (qh[half * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (low | (high << 4)) as i32 - 32;
        *y = d * scales[j / 16] as i8 as f32 * q as f32;
    }
}

/// Q8_K: `d * q` with an f32 `d`; the trailing block sums are only for dot products.
fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (y, &q) in y.iter_mut().zip(&b[4..4 + QK_K]) {
        *y = d * q as i8 as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One case of `tests/fixtures/gguf_quants/vectors.json`.
    struct Case {
        ty: String,
        id: Option<u32>,
        count: usize,
        source: String,
        data: Vec<u8>,
        expected: Vec<u8>,
    }

    fn hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
            .collect()
    }

    fn cases() -> Vec<Case> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gguf_quants/vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("read vectors.json");
        let json: serde_json::Value = serde_json::from_str(&text).expect("parse vectors.json");
        let field = |c: &serde_json::Value, k: &str| c[k].as_str().unwrap_or_default().to_string();
        json["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .map(|c| Case {
                ty: field(c, "type"),
                id: c["id"].as_u64().map(|id| id as u32),
                count: c["count"].as_u64().unwrap_or(0) as usize,
                source: field(c, "source"),
                data: hex(c["data"].as_str().or(c["input"].as_str()).expect("data")),
                expected: hex(c["expected"].as_str().expect("expected")),
            })
            .collect()
    }

    fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// Bit-for-bit equal, except that any NaN equals any NaN (payloads are not ggml's contract).
    fn same_f32(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn dequantize_matches_gguf_py_for_every_supported_type() {
        let cases = cases();
        let mut seen = Vec::new();
        for case in cases.iter().filter(|c| c.id.is_some()) {
            let ty = GgmlType::from_id(case.id.unwrap());
            assert_eq!(ty.name(), case.ty, "id {:?}", case.id);
            let got = dequantize(ty, &case.data, case.count)
                .unwrap_or_else(|e| panic!("{} ({}): {e}", case.ty, case.source));
            let want = f32s(&case.expected);
            assert_eq!(got.len(), want.len(), "{} ({})", case.ty, case.source);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    same_f32(g, w),
                    "{} ({}): element {i} is {g:e}, gguf-py gives {w:e}",
                    case.ty,
                    case.source
                );
            }
            seen.push(ty);
        }
        for ty in SUPPORTED {
            assert!(seen.contains(&ty), "no fixture case for {}", ty.name());
        }
    }

    #[test]
    fn encode_f16_matches_numpy_rounding() {
        let case = cases()
            .into_iter()
            .find(|c| c.ty == "encode_f16")
            .expect("encode_f16 case");
        let got = encode_f16(&f32s(&case.data));
        assert_eq!(got.len(), case.expected.len());
        assert_eq!(got, case.expected, "f16 bytes differ from gguf-py's");
    }

    #[test]
    fn encoders_round_trip_through_dequantize() {
        let values = [0.0f32, -0.0, 1.5, -2.25, 65504.0, f32::INFINITY, 1e-7];
        let back = dequantize(GgmlType::F32, &encode_f32(&values), values.len()).unwrap();
        assert!(
            values
                .iter()
                .zip(&back)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        let back = dequantize(GgmlType::F16, &encode_f16(&values), values.len()).unwrap();
        let want: Vec<f32> = values.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        assert_eq!(back, want);
        assert!(
            encode_f16(&[f32::NAN]).len() == 2
                && dequantize(GgmlType::F16, &encode_f16(&[f32::NAN]), 1).unwrap()[0].is_nan()
        );
    }

    #[test]
    fn ids_names_and_block_sizes_agree_with_ggml() {
        let table = [
            (GgmlType::F32, 0, "F32", Some((1, 4))),
            (GgmlType::F16, 1, "F16", Some((1, 2))),
            (GgmlType::Q4_0, 2, "Q4_0", Some((32, 18))),
            (GgmlType::Q4_1, 3, "Q4_1", Some((32, 20))),
            (GgmlType::Q5_0, 6, "Q5_0", Some((32, 22))),
            (GgmlType::Q5_1, 7, "Q5_1", Some((32, 24))),
            (GgmlType::Q8_0, 8, "Q8_0", Some((32, 34))),
            (GgmlType::Q8_1, 9, "Q8_1", None),
            (GgmlType::Q2K, 10, "Q2_K", Some((256, 84))),
            (GgmlType::Q3K, 11, "Q3_K", Some((256, 110))),
            (GgmlType::Q4K, 12, "Q4_K", Some((256, 144))),
            (GgmlType::Q5K, 13, "Q5_K", Some((256, 176))),
            (GgmlType::Q6K, 14, "Q6_K", Some((256, 210))),
            (GgmlType::Q8K, 15, "Q8_K", Some((256, 292))),
            (GgmlType::BF16, 30, "BF16", Some((1, 2))),
            (GgmlType::Other(16), 16, "IQ2_XXS", None),
            (GgmlType::Other(4), 4, "type 4", None),
            (GgmlType::Other(12345), 12345, "type 12345", None),
        ];
        for (ty, id, name, block) in table {
            assert_eq!(GgmlType::from_id(id), ty);
            assert_eq!(ty.id(), id);
            assert_eq!(ty.name(), name);
            assert_eq!(ty.block(), block, "{name}");
        }
    }

    #[test]
    fn unsupported_types_are_errors_naming_the_type() {
        let err = dequantize(GgmlType::from_id(16), &[0; 66], 256).unwrap_err();
        assert!(
            err.starts_with(
                "tensor type IQ2_XXS (id 16) is not supported; supported: F32, F16, BF16, Q4_0"
            ),
            "{err}"
        );
        let err = GgmlType::Other(999).byte_len(256).unwrap_err();
        assert!(
            err.starts_with("tensor type id 999 (unknown to ggml) is not supported"),
            "{err}"
        );
        let err = dequantize(GgmlType::Q8_1, &[0; 36], 32).unwrap_err();
        assert!(err.contains("Q8_1 (id 9) is not supported"), "{err}");
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert_eq!(GgmlType::Q4K.byte_len(512), Ok(288));
        assert_eq!(GgmlType::F16.byte_len(0), Ok(0));
        assert_eq!(dequantize(GgmlType::Q6K, &[], 0), Ok(vec![]));
        let err = GgmlType::Q4K.byte_len(100).unwrap_err();
        assert!(
            err.contains("Q4_K stores 256 elements per block") && err.contains("100"),
            "{err}"
        );
        let err = dequantize(GgmlType::Q4_0, &[0; 19], 32).unwrap_err();
        assert_eq!(
            err,
            "32 elements of Q4_0 take 18 bytes, but the tensor data has 19"
        );
        assert!(dequantize(GgmlType::Q6K, &[0; 209], 256).is_err());
        assert!(dequantize(GgmlType::F32, &[0; 4], 2).is_err());
        assert!(dequantize(GgmlType::Q8_0, &[0; 34], 33).is_err());
        assert!(GgmlType::F32.byte_len(usize::MAX).is_err());
    }

    #[test]
    fn tensors_spanning_many_tasks_decode_block_by_block() {
        // Larger than one rayon task, so the split into tasks must keep blocks whole and in order.
        let case = cases()
            .into_iter()
            .find(|c| c.ty == "Q5_K")
            .expect("Q5_K case");
        let repeats = 300;
        let bytes = case.data.repeat(repeats);
        let got = dequantize(GgmlType::Q5K, &bytes, case.count * repeats).unwrap();
        let want = f32s(&case.expected).repeat(repeats);
        assert!(got.iter().zip(&want).all(|(g, w)| same_f32(*g, *w)));
    }

    #[test]
    fn every_type_survives_arbitrary_bytes() {
        // No panic on any content: NaN/inf scales just give NaN/inf values.
        let bytes: Vec<u8> = (0..292 * 3).map(|i| (i * 151 + 7) as u8).collect();
        for ty in SUPPORTED {
            let (elems, block_bytes) = ty.block().unwrap();
            let out = dequantize(ty, &bytes[..3 * block_bytes], 3 * elems).unwrap();
            assert_eq!(out.len(), 3 * elems);
        }
    }
}
